//! The bare page shell and small rendering helpers; a leaf (no session, no viewer). Every value
//! goes through maud's `(…)`, which escapes it: carrier text, tenant names and reasons are data,
//! never markup.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use crate::BASE;

/// The `<head>` of every page.
pub(crate) fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx must not inject a style element or evaluate code: the CSP forbids both.
            meta name="htmx-config"
                content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
            title { (title) " · Waybill console" }
            link rel="stylesheet" href={(BASE) "/assets/console.css"};
            script src={(BASE) "/assets/htmx.min.js"} defer {}
        }
    }
}

/// A page outside the session: sign-in and errors.
pub(crate) fn bare_page(title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main id="main" class="narrow" { (content) }
            }
        }
    }
}

/// A table in a region that scrolls sideways on narrow screens (the page itself never does);
/// focusable so keyboard users can scroll it.
pub(crate) fn table(label: &str, content: Markup) -> Markup {
    html! {
        div class="table-wrap" role="region" aria-label=(label) tabindex="0" {
            table { (content) }
        }
    }
}

/// A column heading: a `Num` column holds numbers and is right-aligned.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Heading<'a> {
    /// A column of text.
    Text(&'a str),
    /// A column of numbers.
    Num(&'a str),
}

/// A table's column headings, in order (the cells of its header row).
pub(crate) fn headings(columns: &[Heading<'_>]) -> Markup {
    html! {
        @for column in columns {
            @match column {
                Heading::Text(name) => th scope="col" { (name) },
                Heading::Num(name) => th scope="col" class="num" { (name) },
            }
        }
    }
}

/// A table's header row: its column headings, then an "Action" column when the viewer may act.
pub(crate) fn header_row(columns: &[Heading<'_>], action: bool) -> Markup {
    html! {
        thead { tr {
            (headings(columns))
            @if action { th scope="col" { "Action" } }
        } }
    }
}

/// A time as UTC with its age: `2026-11-02 08:31:00Z (3 min ago)`.
pub(crate) fn time(at: Option<DateTime<Utc>>) -> Markup {
    match at {
        None => html! { span class="muted" { "—" } },
        Some(at) => html! {
            time datetime=(at.to_rfc3339()) {
                (at.format("%Y-%m-%d %H:%M:%SZ")) " "
                span class="muted" { "(" (relative(at, Utc::now())) ")" }
            }
        },
    }
}

/// `3 min ago`, `in 2 h`, `just now`.
pub(crate) fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let magnitude = seconds.unsigned_abs();
    let amount = match magnitude {
        0..=9 => return "just now".to_owned(),
        10..=119 => format!("{magnitude} s"),
        120..=7_199 => format!("{} min", magnitude / 60),
        7_200..=172_799 => format!("{} h", magnitude / 3_600),
        _ => format!("{} days", magnitude / 86_400),
    };
    if seconds >= 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

/// A count that may have been capped: `10,000+` at the cap.
pub(crate) fn capped(count: u64, cap: u64) -> String {
    if count >= cap {
        format!("{}+", thousands(cap))
    } else {
        thousands(count)
    }
}

/// `12,345`.
pub(crate) fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A notice at the top of a page (after an action).
pub(crate) fn notice(text: &str) -> Markup {
    html! { p class="notice" role="status" { (text) } }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn numbers_and_ages_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(capped(10_000, 10_000), "10,000+");
        assert_eq!(capped(12, 10_000), "12");
        let now = Utc.with_ymd_and_hms(2026, 11, 2, 12, 0, 0).unwrap();
        assert_eq!(relative(now, now), "just now");
        assert_eq!(
            relative(now - chrono::Duration::seconds(30), now),
            "30 s ago"
        );
        assert_eq!(
            relative(now - chrono::Duration::minutes(5), now),
            "5 min ago"
        );
        assert_eq!(relative(now + chrono::Duration::hours(3), now), "in 3 h");
        assert_eq!(relative(now - chrono::Duration::days(4), now), "4 days ago");
    }

    #[test]
    fn headings_mark_numeric_columns() {
        let rendered = headings(&[Heading::Text("Queue"), Heading::Num("Ready")]).into_string();
        assert_eq!(
            rendered,
            r#"<th scope="col">Queue</th><th scope="col" class="num">Ready</th>"#
        );
    }

    #[test]
    fn carrier_text_is_escaped() {
        let hostile = r#""><img src=x onerror=alert(1)><script>alert(2)</script>"#;
        let rendered = notice(hostile).into_string();
        assert!(!rendered.contains("<script>") && !rendered.contains("<img"));
        assert!(rendered.contains("&lt;script&gt;") && rendered.contains("&quot;&gt;&lt;img"));
    }
}
