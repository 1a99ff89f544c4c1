//! Text transforms of a field candidate and the value filters of `when`/`ignore`: small,
//! declarative steps over the text a path found, so a profile can cut a code out of a sentence
//! or skip a ping without code.
//!
//! Regular expressions are `regex-lite`: matching is linear in the input, so a hostile payload
//! cannot make a pattern backtrack for seconds.

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::json::scalar_text;
use crate::path::{JsonPath, Scopes};

/// The largest compiled pattern accepted (bytes of program); a profile is not a place for more.
const MAX_PATTERN_SIZE: usize = 1 << 16;

/// A regular expression from a profile file, checked when the profile loads.
#[derive(Clone)]
pub(crate) struct Pattern(pub regex_lite::Regex);

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.0.as_str())
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        regex_lite::RegexBuilder::new(text)
            .size_limit(MAX_PATTERN_SIZE)
            .build()
            .map(Pattern)
            .map_err(|error| format!("`{text}` is not a valid regular expression: {error}"))
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Pattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Upper or lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Case {
    Upper,
    Lower,
}

/// The transforms of one field candidate, applied in this order: `capture`, `replace`,
/// `split`/`pick`, `case`. A step that finds nothing (no match, no such piece) means the
/// candidate has no value, so the next candidate is tried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Transforms {
    /// Keep the first capture group of the first match (the whole match without groups).
    pub capture: Option<Pattern>,
    /// Replace every match with the replacement (`$1` names a group).
    pub replace: Option<(Pattern, String)>,
    /// Split on this text and keep piece `pick` (0-based; negative counts from the end).
    pub split: Option<(String, i64)>,
    /// Change the case.
    pub case: Option<Case>,
}

impl Transforms {
    /// Whether there is any step at all.
    pub fn is_empty(&self) -> bool {
        self.capture.is_none()
            && self.replace.is_none()
            && self.split.is_none()
            && self.case.is_none()
    }

    /// Applies the steps; `None` when a step finds nothing or the result is blank.
    pub fn apply(&self, text: &str) -> Option<String> {
        let mut text = text.to_owned();
        if let Some(Pattern(pattern)) = &self.capture {
            let captures = pattern.captures(&text)?;
            let kept = captures.get(1).or_else(|| captures.get(0))?;
            text = kept.as_str().to_owned();
        }
        if let Some((Pattern(pattern), replacement)) = &self.replace {
            text = pattern
                .replace_all(&text, replacement.as_str())
                .into_owned();
        }
        if let Some((separator, pick)) = &self.split {
            let pieces: Vec<&str> = text.split(separator.as_str()).collect();
            let index = if *pick < 0 {
                pieces
                    .len()
                    .checked_sub(usize::try_from(pick.unsigned_abs()).ok()?)?
            } else {
                usize::try_from(*pick).ok()?
            };
            text = (*pieces.get(index)?).to_owned();
        }
        match self.case {
            Some(Case::Upper) => text = text.to_uppercase(),
            Some(Case::Lower) => text = text.to_lowercase(),
            None => {}
        }
        let trimmed = text.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }
}

/// One `when`/`ignore` condition: a path and exactly one test of its value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Filter {
    /// Where the value is (`$` for payload filters; `@`, `^` or `$` for event filters).
    pub path: JsonPath,
    /// The value's text equals this.
    #[serde(default)]
    pub equals: Option<String>,
    /// The value's text is one of these.
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<String>>,
    /// The value's text matches this regular expression (anywhere; anchor with `^…$`).
    #[serde(default)]
    pub matches: Option<Pattern>,
    /// The value is present and not null (`true`) or absent or null (`false`).
    #[serde(default)]
    pub present: Option<bool>,
}

impl Filter {
    /// The load-time check: exactly one test.
    pub fn check(&self) -> Result<(), String> {
        let tests = [
            self.equals.is_some(),
            self.one_of.is_some(),
            self.matches.is_some(),
            self.present.is_some(),
        ];
        if tests.iter().filter(|t| **t).count() != 1 {
            return Err(format!(
                "the filter on `{}` needs exactly one of `equals`, `in`, `matches` or `present`",
                self.path
            ));
        }
        Ok(())
    }

    /// Whether the value at the path passes the test. A missing value passes only
    /// `present = false`.
    pub fn holds(&self, scopes: Scopes<'_>) -> bool {
        let value = self
            .path
            .resolve(scopes)
            .map(|(value, _)| value)
            .filter(|value| !value.is_null());
        if let Some(wanted) = self.present {
            return value.is_some() == wanted;
        }
        let Some(text) = value.and_then(filter_text) else {
            return false;
        };
        let text = text.trim();
        if let Some(equals) = &self.equals {
            return text == equals;
        }
        if let Some(list) = &self.one_of {
            return list.iter().any(|item| item == text);
        }
        if let Some(Pattern(pattern)) = &self.matches {
            return pattern.is_match(text);
        }
        false
    }
}

/// The text a filter compares: strings, numbers and booleans (`true`/`false`).
fn filter_text(value: &Value) -> Option<String> {
    match value {
        Value::Bool(flag) => Some(flag.to_string()),
        other => scalar_text(other),
    }
}

/// `when` (all must hold) and `ignore` (none may hold) lists, as read from a profile's
/// `[[mapping.when]]`/`[[mapping.ignore]]` or `[[mapping.events.when]]`/`…ignore` tables.
#[derive(Debug, Clone)]
pub(crate) struct Filters<'a> {
    pub when: &'a [Filter],
    pub ignore: &'a [Filter],
}

impl Filters<'_> {
    /// Whether the scope passes: every `when` holds and no `ignore` does.
    pub fn pass(&self, scopes: Scopes<'_>) -> bool {
        self.when.iter().all(|filter| filter.holds(scopes))
            && !self.ignore.iter().any(|filter| filter.holds(scopes))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pattern(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    #[test]
    fn steps_apply_in_order() {
        let transforms = Transforms {
            capture: Some(pattern(r"Code: (\w+-\w+)")),
            replace: Some((pattern("-"), "_".to_owned())),
            split: Some(("_".to_owned(), -1)),
            case: Some(Case::Lower),
        };
        assert_eq!(
            transforms.apply("Status Code: EX-REFUSED (see notes)"),
            Some("refused".to_owned())
        );
        assert_eq!(transforms.apply("no code here"), None);
        let pick = Transforms {
            split: Some((",".to_owned(), 3)),
            ..Transforms::default()
        };
        assert_eq!(pick.apply("a,b"), None);
        let negative = Transforms {
            split: Some((",".to_owned(), -3)),
            ..Transforms::default()
        };
        assert_eq!(negative.apply("a,b"), None);
        assert_eq!(negative.apply("a,b,c"), Some("a".to_owned()));
    }

    #[test]
    fn filters_test_values() {
        let document = json!({"event": "ping", "n": 3, "ok": true, "gone": null});
        let scopes = Scopes::document(&document);
        let filter = |toml_text: &str| {
            let filter: Filter = toml::from_str(toml_text).unwrap();
            filter.check().unwrap();
            filter.holds(scopes)
        };
        assert!(filter(
            r#"path = "$/event"
equals = "ping""#
        ));
        assert!(filter(
            r#"path = "$/event"
in = ["ping", "test"]"#
        ));
        assert!(filter(
            r#"path = "$/n"
matches = "^[0-9]+$""#
        ));
        assert!(filter(
            r#"path = "$/ok"
equals = "true""#
        ));
        assert!(filter(
            r#"path = "$/gone"
present = false"#
        ));
        assert!(!filter(
            r#"path = "$/missing"
equals = "x""#
        ));
        let two: Filter = toml::from_str(
            r#"path = "$/a"
equals = "x"
present = true"#,
        )
        .unwrap();
        assert!(two.check().is_err());
        assert!(Pattern::parse("(unclosed").is_err());
    }
}
