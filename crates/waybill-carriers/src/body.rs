//! Request bodies other than JSON, read into the same document model (a `serde_json::Value`), so
//! paths, filters and fields work the same whatever the carrier sends:
//!
//! * **form** (`application/x-www-form-urlencoded`): an object of strings; a key that repeats
//!   becomes an array of its values in order. With `json_field`, that field's value is parsed as
//!   JSON and is the document (Slack-style `payload={…}`).
//! * **XML**: the root element becomes `{"<root>": …}`. An element with neither attributes nor
//!   child elements is its text; otherwise an object with `@name` for each attribute, one key
//!   per child element name (an array when the name repeats), and `#text` for its own text when
//!   it has any. Namespace prefixes are dropped (local names). A DTD is refused (no entity
//!   expansion), and nesting is capped like JSON's.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::MapError;
use crate::json::MAX_DEPTH;

/// The `[mapping.body]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BodySpec {
    /// How the body is written.
    #[serde(default)]
    pub format: BodyFormat,
    /// Form bodies only: the field whose value is a JSON document (the document then is that).
    #[serde(default)]
    pub json_field: Option<String>,
}

/// The encodings a body can have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BodyFormat {
    /// JSON (the default).
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// XML.
    Xml,
}

/// The most XML nodes read from one body (a cap on memory, far above any tracking payload).
const MAX_XML_NODES: u32 = 200_000;

impl BodySpec {
    /// The load-time check.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.json_field.is_some() && self.format != BodyFormat::Form {
            return Err((
                "mapping.body.json_field",
                "only form bodies have fields holding JSON".to_owned(),
            ));
        }
        Ok(())
    }

    /// Reads a body into a document.
    pub fn parse(&self, body: &[u8]) -> Result<Value, MapError> {
        match self.format {
            BodyFormat::Json => crate::json::parse(body),
            BodyFormat::Form => {
                let form = parse_form(body)?;
                match &self.json_field {
                    None => Ok(form),
                    Some(field) => match form.get(field) {
                        Some(Value::String(text)) => crate::json::parse(text.as_bytes()),
                        Some(_) => Err(MapError::WrongType {
                            field: "form field holding JSON",
                            path: format!("form field `{field}`"),
                            expected: "one value",
                            found: "a repeated field",
                        }),
                        None => Err(MapError::MissingField {
                            field: "form field holding JSON",
                            path: format!("form field `{field}`"),
                        }),
                    },
                }
            }
            BodyFormat::Xml => parse_xml(body),
        }
    }
}

fn utf8(body: &[u8]) -> Result<&str, MapError> {
    std::str::from_utf8(body).map_err(|error| MapError::InvalidUtf8 {
        valid_up_to: error.valid_up_to(),
    })
}

/// Parses a form body; see the module documentation.
pub(crate) fn parse_form(body: &[u8]) -> Result<Value, MapError> {
    utf8(body)?;
    let mut object = Map::new();
    for (key, value) in form_urlencoded::parse(body) {
        insert_repeated(&mut object, &key, Value::String(value.into_owned()));
    }
    Ok(Value::Object(object))
}

/// Inserts `value` under `name`; a name that repeats holds an array of its values, in order.
fn insert_repeated(object: &mut Map<String, Value>, name: &str, value: Value) {
    match object.get_mut(name) {
        None => {
            object.insert(name.to_owned(), value);
        }
        Some(Value::Array(values)) => values.push(value),
        Some(first) => {
            let first = first.take();
            object.insert(name.to_owned(), Value::Array(vec![first, value]));
        }
    }
}

/// Parses an XML body; see the module documentation.
pub(crate) fn parse_xml(body: &[u8]) -> Result<Value, MapError> {
    let text = utf8(body)?;
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_XML_NODES,
        ..roxmltree::ParsingOptions::default()
    };
    let document = roxmltree::Document::parse_with_options(text, options).map_err(|error| {
        let position = error.pos();
        let reason = error.to_string();
        // roxmltree appends " at L:C"; the position is reported in fields.
        let reason = match reason.rfind(" at ") {
            Some(index) => reason[..index].to_owned(),
            None => reason,
        };
        MapError::InvalidXml {
            reason,
            line: position.row as usize,
            column: position.col as usize,
        }
    })?;
    let root = document.root_element();
    let mut object = Map::new();
    object.insert(root.tag_name().name().to_owned(), element_value(root, 1)?);
    Ok(Value::Object(object))
}

fn element_value(node: roxmltree::Node<'_, '_>, depth: usize) -> Result<Value, MapError> {
    if depth >= MAX_DEPTH {
        let position = node.document().text_pos_at(node.range().start);
        return Err(MapError::TooDeep {
            max: MAX_DEPTH,
            line: position.row as usize,
            column: position.col as usize,
        });
    }
    let children: Vec<_> = node.children().filter(|child| child.is_element()).collect();
    let own_text: String = node
        .children()
        .filter(|child| child.is_text())
        .filter_map(|child| child.text())
        .collect();
    let own_text = own_text.trim();
    if children.is_empty() && node.attributes().len() == 0 {
        return Ok(Value::String(own_text.to_owned()));
    }
    let mut object = Map::new();
    for attribute in node.attributes() {
        object.insert(
            format!("@{}", attribute.name()),
            Value::String(attribute.value().to_owned()),
        );
    }
    for child in children {
        let value = element_value(child, depth + 1)?;
        insert_repeated(&mut object, child.tag_name().name(), value);
    }
    if !own_text.is_empty() {
        object.insert("#text".to_owned(), Value::String(own_text.to_owned()));
    }
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn forms_become_objects_and_repeats_arrays() {
        let value = parse_form(b"tracking=AB%201&status=Delivered&tag=a&tag=b&tag=c").unwrap();
        assert_eq!(
            value,
            json!({"tracking": "AB 1", "status": "Delivered", "tag": ["a", "b", "c"]})
        );
        assert!(matches!(
            parse_form(b"a=\xff"),
            Err(MapError::InvalidUtf8 { .. })
        ));
        let spec = BodySpec {
            format: BodyFormat::Form,
            json_field: Some("payload".to_owned()),
        };
        assert_eq!(
            spec.parse(b"payload=%7B%22a%22%3A1%7D").unwrap(),
            json!({"a": 1})
        );
        assert!(matches!(
            spec.parse(b"other=1"),
            Err(MapError::MissingField { .. })
        ));
    }

    #[test]
    fn xml_maps_to_the_document_model() {
        let xml = br#"<?xml version="1.0"?>
<ns:TrackResponse xmlns:ns="urn:x"><Shipment id="7">
  <Number>1Z999</Number>
  <Activity><Code>DL</Code><Date>20240314</Date></Activity>
  <Activity><Code>IT</Code><Date>20240313</Date></Activity>
  <Note lang="en">left at door</Note>
</Shipment></ns:TrackResponse>"#;
        assert_eq!(
            parse_xml(xml).unwrap(),
            json!({"TrackResponse": {"Shipment": {
                "@id": "7",
                "Number": "1Z999",
                "Activity": [{"Code": "DL", "Date": "20240314"}, {"Code": "IT", "Date": "20240313"}],
                "Note": {"@lang": "en", "#text": "left at door"}
            }}})
        );
    }

    #[test]
    fn hostile_xml_is_a_clean_error() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><a>&lol2;</a>"#;
        assert!(matches!(parse_xml(bomb), Err(MapError::InvalidXml { .. })));
        assert!(matches!(
            parse_xml(b"<a><b></a>"),
            Err(MapError::InvalidXml { line: 1, .. })
        ));
        let deep = format!("{}{}", "<a>".repeat(200), "</a>".repeat(200));
        assert!(matches!(
            parse_xml(deep.as_bytes()),
            Err(MapError::TooDeep { .. })
        ));
        assert!(matches!(parse_xml(b""), Err(MapError::InvalidXml { .. })));
    }
}
