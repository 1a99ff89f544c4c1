//! Field specifications: where a profile finds one value (a tracking number, a status, a
//! location) in a payload, with fallbacks.
//!
//! In a profile file a field is any of:
//!
//! ```toml
//! courier = "$/msg/slug"                           # one path
//! courier = ["@/slug", "$/msg/slug"]               # the first that has a value wins
//! carrier = { fixed = "aftership" }                # a constant
//! location = { join = ["@/city", "@/state"], separator = ", " }   # non-empty parts, joined
//! location = ["@/location", { join = ["@/city", "@/country_iso3"] }]
//! status = { path = "@/text", capture = "^Code (\\w+)", case = "upper" }   # transforms
//! ```
//!
//! "Has a value" means the path exists and is not `null`; for optional text fields an empty or
//! all-white-space string also counts as no value, so the next candidate is tried.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::MapError;
use crate::json::{scalar_text, wrong_type};
use crate::path::{Concrete, JsonPath, Scopes};
use crate::transform::{Case, Pattern, Transforms};

/// One candidate source of a field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A path into the document or event element.
    Path(JsonPath),
    /// A constant.
    Fixed(String),
    /// The text of several paths, empty ones skipped, joined with a separator.
    Join {
        paths: Vec<JsonPath>,
        separator: String,
    },
    /// Another source's text, transformed (see [`Transforms`]).
    Transformed(Box<Source>, Transforms),
}

/// An ordered list of candidate sources; the first with a value wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldSpec(pub Vec<Source>);

/// A value found for a field, with the concrete path it came from (for error messages).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Found<'v> {
    /// A JSON value at a path.
    Json(&'v Value, Concrete<'v>),
    /// Text from a fixed value, a join or a transform.
    Text(String, Concrete<'v>),
}

impl FieldSpec {
    /// A field with one fixed value.
    pub fn fixed(value: &str) -> FieldSpec {
        FieldSpec(vec![Source::Fixed(value.to_owned())])
    }

    /// The paths as written, for "looked at …" messages.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(Source::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The first candidate with a value. `skip_empty` makes empty strings fall through.
    pub fn find<'v>(&'v self, scopes: Scopes<'v>, skip_empty: bool) -> Option<Found<'v>> {
        self.0
            .iter()
            .find_map(|source| source.find(scopes, skip_empty))
    }
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Path(path) => path.to_string(),
            Source::Fixed(_) => "a fixed value".to_owned(),
            Source::Join { paths, .. } => {
                let parts: Vec<String> = paths.iter().map(ToString::to_string).collect();
                format!("join({})", parts.join(", "))
            }
            Source::Transformed(inner, _) => format!("{} (transformed)", inner.describe()),
        }
    }

    fn find<'v>(&'v self, scopes: Scopes<'v>, skip_empty: bool) -> Option<Found<'v>> {
        match self {
            Source::Transformed(inner, transforms) => {
                match inner.find(scopes, skip_empty)? {
                    Found::Json(value, path) => match scalar_text(value) {
                        Some(text) => transforms.apply(&text).map(|text| Found::Text(text, path)),
                        // Not text: keep it, so the caller reports the wrong type.
                        None => Some(Found::Json(value, path)),
                    },
                    Found::Text(text, path) => {
                        transforms.apply(&text).map(|text| Found::Text(text, path))
                    }
                }
            }
            Source::Path(path) => {
                let (value, concrete) = path.resolve(scopes)?;
                match value {
                    Value::Null => None,
                    Value::String(text) if skip_empty && text.trim().is_empty() => None,
                    _ => Some(Found::Json(value, concrete)),
                }
            }
            Source::Fixed(text) => Some(Found::Text(text.clone(), Concrete::Fixed)),
            Source::Join { paths, separator } => {
                let mut parts = Vec::new();
                let mut used = Vec::new();
                for path in paths {
                    let Some((value, concrete)) = path.resolve(scopes) else {
                        continue;
                    };
                    if let Some(text) = scalar_text(value) {
                        let text = text.trim().to_owned();
                        if !text.is_empty() {
                            used.push(concrete);
                            parts.push(text);
                        }
                    }
                }
                // Every path that contributed is named, so an error points at all of them.
                let path = match used.len() {
                    0 => return None,
                    1 => used.remove(0),
                    _ => Concrete::Join(used),
                };
                Some(Found::Text(parts.join(separator), path))
            }
        }
    }
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldSpecVisitor)
    }
}

const EXPECTING: &str =
    "a path like \"$/a/b\", a table { fixed = … } or { join = [...] }, or a list of those";

struct FieldSpecVisitor;

impl<'de> Visitor<'de> for FieldSpecVisitor {
    type Value = FieldSpec;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(EXPECTING)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<FieldSpec, E> {
        JsonPath::parse(text, false)
            .map(|path| FieldSpec(vec![Source::Path(path)]))
            .map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FieldSpec, A::Error> {
        let mut sources = Vec::new();
        while let Some(SourceItem(source)) = seq.next_element()? {
            sources.push(source);
        }
        if sources.is_empty() {
            return Err(de::Error::custom("a field needs at least one candidate"));
        }
        Ok(FieldSpec(sources))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
        source_from_map(map).map(|source| FieldSpec(vec![source]))
    }
}

/// One element of a candidate list: a path string or a table.
struct SourceItem(Source);

impl<'de> Deserialize<'de> for SourceItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = SourceItem;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter
                    .write_str("a path like \"$/a/b\" or a table { fixed = … } or { join = [...] }")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<SourceItem, E> {
                JsonPath::parse(text, false)
                    .map(|path| SourceItem(Source::Path(path)))
                    .map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SourceItem, A::Error> {
                source_from_map(map).map(SourceItem)
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceTable {
    path: Option<JsonPath>,
    fixed: Option<String>,
    join: Option<Vec<JsonPath>>,
    separator: Option<String>,
    capture: Option<Pattern>,
    replace: Option<(Pattern, String)>,
    split: Option<String>,
    pick: Option<i64>,
    case: Option<Case>,
}

fn source_from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Source, A::Error> {
    let mut table = SourceTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
    if table.pick.is_some() && table.split.is_none() {
        return Err(de::Error::custom("`pick` needs `split`"));
    }
    let transforms = Transforms {
        capture: table.capture.take(),
        replace: table.replace.take(),
        split: table
            .split
            .take()
            .map(|separator| (separator, table.pick.unwrap_or(0))),
        case: table.case.take(),
    };
    if transforms
        .split
        .as_ref()
        .is_some_and(|(separator, _)| separator.is_empty())
    {
        return Err(de::Error::custom("`split` needs a non-empty separator"));
    }
    let source = plain_source(table)?;
    Ok(if transforms.is_empty() {
        source
    } else {
        Source::Transformed(Box::new(source), transforms)
    })
}

fn plain_source<E: de::Error>(table: SourceTable) -> Result<Source, E> {
    match table {
        SourceTable {
            path: Some(path),
            fixed: None,
            join: None,
            separator: None,
            ..
        } => Ok(Source::Path(path)),
        SourceTable {
            path: None,
            fixed: Some(fixed),
            join: None,
            separator: None,
            ..
        } => Ok(Source::Fixed(fixed)),
        SourceTable {
            path: None,
            fixed: None,
            join: Some(paths),
            separator,
            ..
        } if !paths.is_empty() => Ok(Source::Join {
            paths,
            separator: separator.unwrap_or_else(|| ", ".to_owned()),
        }),
        _ => Err(de::Error::custom(
            "a field table has exactly one of `path`, `fixed` or a non-empty `join` (with an optional `separator`), and optional transforms `capture`, `replace`, `split`/`pick`, `case`",
        )),
    }
}

pub(crate) fn text_and_path<'v>(
    found: Found<'v>,
    field: &'static str,
) -> Result<(String, Concrete<'v>), MapError> {
    match found {
        Found::Json(value, path) => match scalar_text(value) {
            Some(text) => Ok((text, path)),
            None => Err(wrong_type(
                field,
                &path.to_string(),
                "a string or a number",
                value,
            )),
        },
        Found::Text(text, path) => Ok((text, path)),
    }
}

pub(crate) fn optional_text(
    spec: &FieldSpec,
    scopes: Scopes<'_>,
    field: &'static str,
) -> Result<Option<String>, MapError> {
    match spec.find(scopes, true) {
        Some(found) => text_and_path(found, field).map(|(text, _)| Some(text.trim().to_owned())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What was found, with its concrete path as an error message would name it; text (from a
    /// fixed value, a join or a transform) as a JSON string prefixed `text: `.
    fn shown(found: Option<Found<'_>>) -> Option<(Value, String)> {
        found.map(|found| match found {
            Found::Json(value, path) => (value.clone(), path.to_string()),
            Found::Text(text, path) => (Value::String(format!("text: {text}")), path.to_string()),
        })
    }

    #[derive(Deserialize)]
    struct Holder {
        field: FieldSpec,
    }

    fn spec(toml_text: &str) -> Result<FieldSpec, String> {
        toml::from_str::<Holder>(toml_text)
            .map(|h| h.field)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_spelling_parses() {
        assert_eq!(spec(r#"field = "$/a""#).unwrap().0.len(), 1);
        assert_eq!(
            spec(r#"field = ["@/a", "$/b", { fixed = "x" }]"#)
                .unwrap()
                .0
                .len(),
            3
        );
        let join = spec(r#"field = { join = ["@/a", "@/b"] }"#).unwrap();
        assert!(matches!(&join.0[0], Source::Join { separator, .. } if separator == ", "));
        for bad in [
            r#"field = "a/b""#,
            r#"field = []"#,
            r#"field = { fixed = "x", path = "$/a" }"#,
            r#"field = { join = [] }"#,
            r#"field = { nonsense = 1 }"#,
            r#"field = 3"#,
        ] {
            assert!(spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn first_value_wins_and_empties_fall_through() {
        let document =
            json!({"a": null, "b": " ", "c": "x", "city": "ORLANDO", "state": null, "zip": 32809});
        let scopes = Scopes::document(&document);
        let field = spec(r#"field = ["$/a", "$/b", "$/c"]"#).unwrap();
        assert_eq!(
            shown(field.find(scopes, true)),
            Some((json!("x"), "$/c".into()))
        );
        assert_eq!(
            shown(field.find(scopes, false)),
            Some((json!(" "), "$/b".into()))
        );
        let join =
            spec(r#"field = { join = ["$/city", "$/state", "$/zip"], separator = " " }"#).unwrap();
        assert_eq!(
            shown(join.find(scopes, true)),
            Some((json!("text: ORLANDO 32809"), "join($/city, $/zip)".into()))
        );
        let transformed =
            spec(r#"field = { path = "$/c", replace = ["x", "y"], case = "upper" }"#).unwrap();
        assert_eq!(
            shown(transformed.find(scopes, true)),
            Some((json!("text: Y"), "$/c".into()))
        );
        assert!(spec(r#"field = { path = "$/c", pick = 1 }"#).is_err());
        assert!(spec(r#"field = { path = "$/c", capture = "(" }"#).is_err());
        let none = spec(r#"field = { join = ["$/state", "$/missing"] }"#).unwrap();
        assert_eq!(none.find(scopes, true), None);
    }
}
