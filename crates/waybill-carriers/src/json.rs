//! A strict JSON reader: `serde_json::Value` out, but with a nesting cap and duplicate keys
//! rejected. Plain `serde_json::from_slice` silently keeps the last of two equal keys, and other
//! parsers keep the first, so a body with duplicates can mean one thing to the carrier's signer
//! and another to us; rejecting it costs one map lookup per key, which we do anyway to insert.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::MapError;

/// The deepest nesting of arrays and objects accepted (the root object is level 1).
pub const MAX_DEPTH: usize = 64;

/// Which of our own rules stopped the parse; serde's error type only carries a message, so the
/// visitor records the precise reason here and [`parse`] turns it into the right variant.
#[derive(Default)]
struct Violation(RefCell<Option<Rule>>);

enum Rule {
    TooDeep,
    DuplicateKey(String),
}

/// Parses `body` as one JSON document under the rules above.
pub fn parse(body: &[u8]) -> Result<Value, MapError> {
    let text = std::str::from_utf8(body).map_err(|error| MapError::InvalidUtf8 {
        valid_up_to: error.valid_up_to(),
    })?;
    let violation = Violation::default();
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = ValueSeed {
        depth: 0,
        violation: &violation,
    };
    let result = seed.deserialize(&mut deserializer).and_then(|value| {
        deserializer.end()?;
        Ok(value)
    });
    result.map_err(|error| {
        let (line, column) = (error.line(), error.column());
        match violation.0.borrow_mut().take() {
            Some(Rule::TooDeep) => MapError::TooDeep {
                max: MAX_DEPTH,
                line,
                column,
            },
            Some(Rule::DuplicateKey(key)) => MapError::DuplicateKey { key, line, column },
            None => MapError::InvalidJson {
                reason: reason_without_position(&error),
                line,
                column,
            },
        }
    })
}

/// serde_json appends " at line L column C"; we report those as fields, so strip them.
fn reason_without_position(error: &serde_json::Error) -> String {
    let full = error.to_string();
    match full.rfind(" at line ") {
        Some(index) => full[..index].to_owned(),
        None => full,
    }
}

struct ValueSeed<'v> {
    depth: usize,
    violation: &'v Violation,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    fn nested(&self) -> Result<ValueSeed<'_>, Rule> {
        if self.depth >= MAX_DEPTH {
            return Err(Rule::TooDeep);
        }
        Ok(ValueSeed {
            depth: self.depth + 1,
            violation: self.violation,
        })
    }

    fn fail<E: de::Error>(&self, rule: Rule) -> E {
        let message = match &rule {
            Rule::TooDeep => "nesting too deep",
            Rule::DuplicateKey(_) => "duplicate key",
        };
        *self.violation.0.borrow_mut() = Some(rule);
        E::custom(message)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // serde_json never produces NaN or infinities; `from_f64` would turn them into null.
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested().map_err(|rule| self.fail(rule))?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ValueSeed {
            depth: inner.depth,
            violation: inner.violation,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested().map_err(|rule| self.fail(rule))?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                // Cut and with control characters blanked: the key goes into a one-line message.
                let shown: String = key
                    .chars()
                    .take(64)
                    .map(|c| if c.is_control() { '?' } else { c })
                    .collect();
                return Err(self.fail(Rule::DuplicateKey(shown)));
            }
            let value = map.next_value_seed(ValueSeed {
                depth: inner.depth,
                violation: inner.violation,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The JSON type name used in error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The text of a string or number; `None` for other types.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

pub(crate) fn wrong_type(
    field: &'static str,
    path: &str,
    expected: &'static str,
    found: &Value,
) -> MapError {
    MapError::WrongType {
        field,
        path: path.to_owned(),
        expected,
        found: type_name(found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json() {
        let value = parse(br#"{"a":[1,2.5,"x",null,true],"b":{"c":-1}}"#).unwrap();
        assert_eq!(value["b"]["c"], -1);
    }

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        let error = parse(br#"{"a":{"k":1,"k":2}}"#).unwrap_err();
        assert!(
            matches!(error, MapError::DuplicateKey { ref key, .. } if key == "k"),
            "{error}"
        );
        let error = parse(br#"{"a\nb":1,"a\nb":2}"#).unwrap_err();
        assert!(matches!(error, MapError::DuplicateKey { .. }), "{error}");
        assert!(!error.to_string().contains('\n'), "{error}");
    }

    #[test]
    fn caps_nesting() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(MapError::TooDeep { .. })
        ));
        // Far beyond serde_json's own limit of 128: still our error, never a stack overflow.
        let very_deep = "{\"a\":".repeat(10_000);
        assert!(matches!(
            parse(very_deep.as_bytes()),
            Err(MapError::TooDeep { .. })
        ));
    }

    #[test]
    fn reports_utf8_and_syntax_errors_with_positions() {
        assert_eq!(
            parse(b"{\"a\":\"\xff\"}"),
            Err(MapError::InvalidUtf8 { valid_up_to: 6 })
        );
        let error = parse(b"{\"a\":1").unwrap_err();
        assert!(
            matches!(error, MapError::InvalidJson { line: 1, .. }),
            "{error}"
        );
        assert!(!error.to_string().contains("at line 1 column"), "{error}");
        assert!(matches!(parse(b"{} x"), Err(MapError::InvalidJson { .. })));
        assert!(matches!(parse(b"1e999"), Err(MapError::InvalidJson { .. })));
        assert!(matches!(parse(b""), Err(MapError::InvalidJson { .. })));
    }
}
