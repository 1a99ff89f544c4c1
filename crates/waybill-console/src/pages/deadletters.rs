//! Dead letters: the messages of `waybill.dead` with reason and age, one shown with its payload
//! (secret-looking fields blanked), replay of one or a selection, purge after a confirmation.
//! The same operations as `waybill deadletters` (`waybill_bus::dead::admin`).

use axum::extract::{Query, State};
use chrono::Utc;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use waybill_bus::dead::admin::{DeadLetterQueue, DeadLetterSummary, Selection};
use waybill_config::ExposeSecret;

use crate::auth::{AdminForm, CheckedForm, Viewer, csrf_field};
use crate::error::PageError;
use crate::view::Heading::{Num, Text};
use crate::{BASE, Console, shell, view};

/// How many dead letters a page lists.
const PAGE_SIZE: usize = 100;
const CONNECTION_NAME: &str = "waybill-console-deadletters";
/// Field names whose values are never shown (in headers, envelopes and courier payloads).
const SECRET_WORDS: [&str; 7] = [
    "secret",
    "signature",
    "token",
    "password",
    "authorization",
    "api_key",
    "apikey",
];

/// `GET /console/deadletters`.
pub(crate) async fn list(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Markup, PageError> {
    let (letters, total) = letters(&console, &viewer).await?;
    Ok(listing(&viewer, &letters, total, None))
}

async fn letters(
    console: &Console,
    viewer: &Viewer,
) -> Result<(Vec<DeadLetterSummary>, u64), PageError> {
    let scope = viewer.tenant_scope();
    let in_scope = |letter: &DeadLetterSummary| {
        scope
            .as_ref()
            .is_none_or(|tenant| letter.tenant.as_deref() == Some(tenant.as_str()))
    };
    Ok(queue(console).list(PAGE_SIZE, in_scope).await?)
}

/// The dead-letter queue, reached as [`CONNECTION_NAME`].
fn queue(console: &Console) -> DeadLetterQueue<'_> {
    DeadLetterQueue {
        url: console.settings().bus.url.expose_secret(),
        topology: &console.parts().topology,
        connection_name: CONNECTION_NAME,
    }
}

/// The dead letters an admin's form selects (`id` repeated): at least one.
fn selected(form: &CheckedForm) -> Result<Vec<String>, PageError> {
    let ids = form.all("id");
    if ids.is_empty() {
        return Err(PageError::BadRequest(
            "select at least one dead letter".into(),
        ));
    }
    Ok(ids)
}

fn listing(
    viewer: &Viewer,
    letters: &[DeadLetterSummary],
    total: u64,
    notice: Option<&str>,
) -> Markup {
    let now = Utc::now();
    shell::page(
        viewer,
        "/deadletters",
        "Dead letters",
        html! {
            @if let Some(text) = notice { (view::notice(text)) }
            p { (letters.len()) " shown of " (total) " in the dead-letter queue." }
            @if letters.is_empty() { p class="muted" { "Nothing has died. " } } @else {
                form method="post" action={(BASE) "/deadletters/replay"} id="letters" {
                    (csrf_field(viewer))
                    (view::table("Dead letters", html! {
                        thead { tr {
                            @if viewer.can_act() { th scope="col" { "Select" } }
                            (view::headings(&[Text("Id"), Text("Reason"), Text("Age"), Num("Size"), Text("Queue"), Text("Tenant")]))
                        } }
                        tbody {
                            @for letter in letters {
                                tr {
                                    @if viewer.can_act() {
                                        td { input type="checkbox" name="id" value=(letter.id) aria-label={"Select " (letter.id)}; }
                                    }
                                    td { a href={(BASE) "/deadletters/show?id=" (urlencode(&letter.id))} { code { (letter.id) } } }
                                    td class="break" { (letter.reason.as_deref().unwrap_or("—")) }
                                    td { @match letter.received_at { Some(at) => { (view::relative(at, now)) }, None => { "—" } } }
                                    td class="num" { (view::thousands(letter.size as u64)) }
                                    td { (letter.original_queue.as_deref().unwrap_or("—")) }
                                    td { (letter.tenant.as_deref().unwrap_or("—")) }
                                }
                            }
                        }
                    }))
                    @if viewer.can_act() {
                        p class="actions" {
                            button type="submit" { "Replay selected" } " "
                            button type="submit" class="danger" formaction={(BASE) "/deadletters/purge"} { "Purge selected…" }
                        }
                    }
                }
            }
        },
    )
}

/// The `?id=` of a dead letter's page.
#[derive(Deserialize)]
pub(crate) struct ShowQuery {
    id: String,
}

/// `GET /console/deadletters/show?id=…`.
pub(crate) async fn show(
    State(console): State<Console>,
    viewer: Viewer,
    Query(query): Query<ShowQuery>,
) -> Result<Markup, PageError> {
    let found = queue(&console).show(&query.id).await?;
    let scope = viewer.tenant_scope();
    let detail = found
        .filter(|d| {
            scope
                .as_ref()
                .is_none_or(|t| d.summary.tenant.as_deref() == Some(t.as_str()))
        })
        .ok_or(PageError::NotFound(
            "no such dead letter for this key (it may have been replayed)",
        ))?;
    let s = &detail.summary;
    let headers: Vec<&(String, String)> = detail
        .headers
        .iter()
        .filter(|(name, _)| !is_secret(name))
        .collect();
    Ok(shell::page(
        &viewer,
        "/deadletters",
        "Dead letter",
        html! {
            dl class="facts" {
                dt { "Id" } dd { code { (s.id) } }
                dt { "Reason" } dd { (s.reason.as_deref().unwrap_or("—")) }
                dt { "Received" } dd { (view::time(s.received_at)) }
                dt { "Size" } dd { (s.size) " bytes" }
                dt { "Queue" } dd { (s.original_queue.as_deref().unwrap_or("—")) }
                dt { "First published to" } dd { (s.original_exchange.as_deref().unwrap_or("—")) " / " (s.original_routing_key.as_deref().unwrap_or("—")) }
                @if let Some(count) = s.death_count { dt { "Deaths" } dd { (count) } }
                @if let Some(tenant) = &s.tenant { dt { "Tenant" } dd { (tenant) } }
            }
            h2 { "Headers" }
            (view::table("Headers", html! {
                tbody { @for (name, value) in headers { tr { th scope="row" { (name) } td class="break" { (value) } } } }
            }))
            h2 { "Payload" }
            p class="hint" { "It carries personal data. Fields named like secrets, tokens or signatures are blanked." }
            details { summary { "Show the payload" } pre { (redacted_body(&detail.body)) } }
            @if viewer.can_act() {
                form method="post" action={(BASE) "/deadletters/replay"} class="inline" {
                    (csrf_field(&viewer))
                    input type="hidden" name="id" value=(s.id);
                    button type="submit" { "Replay" }
                }
                " "
                form method="post" action={(BASE) "/deadletters/purge"} class="inline" {
                    (csrf_field(&viewer))
                    input type="hidden" name="id" value=(s.id);
                    button type="submit" class="danger" { "Purge…" }
                }
            }
        },
    ))
}

/// `POST /console/deadletters/replay` (`id` repeated): publish back, then remove.
pub(crate) async fn replay(
    State(console): State<Console>,
    AdminForm(form): AdminForm,
) -> Result<Markup, PageError> {
    let ids = selected(&form)?;
    let report = queue(&console)
        .replay(&console.parts().publisher, &Selection::Ids(ids))
        .await?;
    tracing::info!(key.id = %form.viewer.session.key_id, replayed = report.replayed.len(), failed = report.failed.len(), "console: dead letters replayed");
    let mut text = format!("{} replayed.", report.replayed.len());
    for (id, why) in &report.failed {
        text.push_str(&format!(" Not replayed {id}: {why}."));
    }
    let (letters, total) = letters(&console, &form.viewer).await?;
    Ok(listing(&form.viewer, &letters, total, Some(&text)))
}

/// `POST /console/deadletters/purge` (`id` repeated): a confirmation page, then with
/// `confirm=yes` the removal.
pub(crate) async fn purge(
    State(console): State<Console>,
    AdminForm(form): AdminForm,
) -> Result<Markup, PageError> {
    let ids = selected(&form)?;
    if form.get("confirm") != Some("yes") {
        return Ok(shell::page(
            &form.viewer,
            "/deadletters",
            "Purge dead letters?",
            html! {
                p { "These " (ids.len()) " dead letter(s) will be removed for good; they cannot be replayed afterwards:" }
                ul { @for id in &ids { li { code { (id) } } } }
                form method="post" action={(BASE) "/deadletters/purge"} class="inline" {
                    (csrf_field(&form.viewer))
                    input type="hidden" name="confirm" value="yes";
                    @for id in &ids { input type="hidden" name="id" value=(id); }
                    button type="submit" class="danger" { "Purge " (ids.len()) " for good" }
                }
                " " a href={(BASE) "/deadletters"} { "Cancel" }
            },
        ));
    }
    let removed = queue(&console).purge(&Selection::Ids(ids)).await?;
    tracing::info!(key.id = %form.viewer.session.key_id, purged = removed.len(), "console: dead letters purged");
    let (letters, total) = letters(&console, &form.viewer).await?;
    Ok(listing(
        &form.viewer,
        &letters,
        total,
        Some(&format!("{} purged.", removed.len())),
    ))
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| name.contains(word))
}

/// The body for people: JSON pretty-printed with secret-looking fields blanked (also inside a
/// webhook envelope's `raw_body`, which holds the courier's JSON as a string); anything else as
/// lossy text.
pub(crate) fn redacted_body(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => {
            redact(&mut value);
            serde_json::to_string_pretty(&value).unwrap_or_default()
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if is_secret(key) {
                    *field = Value::String("(hidden)".into());
                } else if key == "raw_body"
                    && let Value::String(text) = field
                    && let Ok(mut inner) = serde_json::from_str::<Value>(text)
                {
                    redact(&mut inner);
                    *field = inner;
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Percent-encodes a query value (ids may hold `:`).
fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_are_blanked_also_inside_the_raw_body() {
        let body = br#"{"type":"WebhookV1","tenant":"acme","raw_body":"{\"api_key\":\"k-123\",\"tracking\":\"T1\",\"nested\":{\"Signature\":\"abc\"}}","auth_token":"t"}"#;
        let shown = redacted_body(body);
        assert!(!shown.contains("k-123") && !shown.contains("abc") && !shown.contains("\"t\""));
        assert!(shown.contains("T1") && shown.contains("(hidden)"));
        assert_eq!(redacted_body(b"not json"), "not json");
        assert!(is_secret("X-Starshipit-Signature") && !is_secret("traceparent"));
        assert_eq!(urlencode("sha256:ab"), "sha256%3Aab");
    }
}
