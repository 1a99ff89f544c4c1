//! Paths into a JSON payload, as written in profile files.
//!
//! A path is a scope sigil followed by an RFC 6901 JSON pointer:
//!
//! * `$/msg/tracking_number`: from the *document* (the body after envelope unwrapping);
//! * `@/checkpoint_time`: from the *current event element* (one checkpoint, or the object the
//!   profile names as the current event);
//! * `^/leg_code`, `^^/carrier`: from the *ancestors* of the event element, when events sit in
//!   nested arrays (`^` is the element of the enclosing array, `^^` the one above it, …);
//! * `$` or `@` alone: the document or element itself.
//!
//! Poll response item paths and event array levels may also use `*` as a whole segment to mean
//! "every member".

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Which value a path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `$`: the (unwrapped) document.
    Document,
    /// `@`: the event element being mapped.
    Event,
    /// `^` (1), `^^` (2), …: an enclosing array element of the event element.
    Ancestor(usize),
}

/// One enclosing element of an event in nested arrays, with its concrete path.
pub(crate) type Frame<'v> = (&'v Value, String);

/// Where a value was found (`$/events/3/time`), for error messages. Mapping a valid document
/// never names it, so a resolved path keeps its two parts and is formatted only when an error
/// is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Concrete<'v> {
    /// A pointer below the concrete path of its scope's root (`$`, `$/events/3`).
    Below {
        /// The root's concrete path.
        base: &'v str,
        /// The RFC 6901 pointer from there.
        pointer: &'v str,
    },
    /// A field's fixed value.
    Fixed,
    /// The paths a join took its parts from (`join($/a, $/b)`).
    Join(Vec<Concrete<'v>>),
}

impl fmt::Display for Concrete<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Concrete::Below { base, pointer } => write!(f, "{base}{pointer}"),
            Concrete::Fixed => f.write_str("a fixed value"),
            Concrete::Join(parts) => {
                f.write_str("join(")?;
                for (index, part) in parts.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{part}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A validated `$…` or `@…` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonPath {
    scope: Scope,
    /// The RFC 6901 pointer after the sigil (empty for the scope root).
    pointer: String,
    /// The pointer's reference tokens, unescaped once when the profile is loaded, so that
    /// walking a path allocates nothing per token (`serde_json::Value::pointer` unescapes
    /// every token into a new string on every call). The concrete path it returns for error
    /// messages is a [`Concrete`], formatted only by an error.
    tokens: Vec<String>,
}

/// The values a path can be resolved against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scopes<'v> {
    /// The document (`$`).
    pub document: &'v Value,
    /// The event element (`@`) and its concrete path from the document root, if any.
    pub event: Option<(&'v Value, &'v str)>,
    /// The enclosing elements of the event element, nearest first (`^`, `^^`, …).
    pub ancestors: &'v [Frame<'v>],
}

impl<'v> Scopes<'v> {
    /// Only the document: no event element, no ancestors.
    pub fn document(document: &'v Value) -> Scopes<'v> {
        Scopes {
            document,
            event: None,
            ancestors: &[],
        }
    }
}

/// The deepest ancestor a path may name (`^` repeated this many times).
pub(crate) const MAX_ANCESTORS: usize = 8;

impl JsonPath {
    /// Parses `$/a/b` or `@/a/b`. `allow_wildcard` permits `*` segments (poll items and event
    /// array levels only).
    pub fn parse(text: &str, allow_wildcard: bool) -> Result<JsonPath, String> {
        let carets = text.bytes().take_while(|b| *b == b'^').count();
        let (scope, pointer) = match text.chars().next() {
            Some('$') => (Scope::Document, &text[1..]),
            Some('@') => (Scope::Event, &text[1..]),
            Some('^') if carets <= MAX_ANCESTORS => (Scope::Ancestor(carets), &text[carets..]),
            Some('^') => {
                return Err(format!(
                    "path `{text}`: at most {MAX_ANCESTORS} `^` (ancestor levels)"
                ));
            }
            _ => {
                return Err(format!(
                    "path `{text}` must start with `$` (document), `@` (event element) or `^` (an enclosing element)"
                ));
            }
        };
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!(
                "path `{text}`: after `$`/`@` comes a JSON pointer starting with `/`"
            ));
        }
        // A `~` must be followed by 0 or 1 (RFC 6901 escapes); anything else is a typo.
        let bytes = pointer.as_bytes();
        for (index, byte) in bytes.iter().enumerate() {
            if *byte == b'~' && !matches!(bytes.get(index + 1), Some(b'0' | b'1')) {
                return Err(format!("path `{text}`: `~` must be followed by 0 or 1"));
            }
        }
        if !allow_wildcard && pointer.split('/').any(|segment| segment == "*") {
            return Err(format!(
                "path `{text}`: `*` is only allowed in poll response item paths and `mapping.events.array`"
            ));
        }
        Ok(JsonPath {
            scope,
            pointer: pointer.to_owned(),
            tokens: tokens(pointer),
        })
    }

    /// `$`: the whole document.
    pub fn document_root() -> JsonPath {
        JsonPath {
            scope: Scope::Document,
            pointer: String::new(),
            tokens: Vec::new(),
        }
    }

    /// Which value the path starts from.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Resolves the path; `None` when it leads nowhere (or to `@` without an event element).
    /// The second value is the concrete path, for error messages, formatted only if one names
    /// it.
    pub fn resolve<'v>(&'v self, scopes: Scopes<'v>) -> Option<(&'v Value, Concrete<'v>)> {
        let (root, base) = match self.scope {
            Scope::Document => (scopes.document, "$"),
            Scope::Event => {
                let (element, base) = scopes.event?;
                (element, base)
            }
            Scope::Ancestor(level) => {
                let (element, base) = scopes.ancestors.get(level.checked_sub(1)?)?;
                (*element, base.as_str())
            }
        };
        let mut value = root;
        for token in &self.tokens {
            value = child(value, token)?;
        }
        Some((
            value,
            Concrete::Below {
                base,
                pointer: &self.pointer,
            },
        ))
    }

    /// Every value the path matches, expanding `*` segments over array elements and object
    /// members (in document order for arrays, key order for objects). Non-wildcard paths
    /// match at most one value. Scope is ignored: item paths are always document paths.
    pub fn resolve_all<'v>(&self, root: &'v Value) -> Vec<&'v Value> {
        self.resolve_all_from(root, "$")
            .into_iter()
            .map(|(value, _)| value)
            .collect()
    }

    /// [`JsonPath::resolve_all`] from `root`, whose concrete path is `base`, with the concrete
    /// path of each match (`$/data/origin_info/trackinfo`), for error messages.
    pub fn resolve_all_from<'v>(&self, root: &'v Value, base: &str) -> Vec<(&'v Value, String)> {
        let mut current = vec![(root, base.to_owned())];
        // Each token with its segment as written, for the concrete paths.
        let segments = self.pointer.get(1..).unwrap_or_default().split('/');
        for (token, segment) in self.tokens.iter().zip(segments) {
            let mut next = Vec::new();
            for (value, path) in current {
                if segment == "*" {
                    match value {
                        Value::Array(items) => next.extend(
                            items
                                .iter()
                                .enumerate()
                                .map(|(index, item)| (item, format!("{path}/{index}"))),
                        ),
                        Value::Object(members) => {
                            next.extend(members.iter().map(|(key, member)| {
                                let escaped = key.replace('~', "~0").replace('/', "~1");
                                (member, format!("{path}/{escaped}"))
                            }));
                        }
                        _ => {}
                    }
                } else if let Some(child) = child(value, token) {
                    next.push((child, format!("{path}/{segment}")));
                }
            }
            current = next;
        }
        current
    }

    /// The pointer part, without the sigil.
    pub fn pointer(&self) -> &str {
        &self.pointer
    }
}

/// The unescaped reference tokens of an RFC 6901 pointer (`/a~1b/0` is `["a/b", "0"]`).
fn tokens(pointer: &str) -> Vec<String> {
    match pointer.strip_prefix('/') {
        Some(rest) => rest
            .split('/')
            .map(|token| token.replace("~1", "/").replace("~0", "~"))
            .collect(),
        None => Vec::new(),
    }
}

/// The member or element `token` names in `value` (one step of an RFC 6901 pointer).
fn child<'v>(value: &'v Value, token: &str) -> Option<&'v Value> {
    match value {
        Value::Object(members) => members.get(token),
        Value::Array(items) => items.get(array_index(token)?),
        _ => None,
    }
}

/// An array index token as RFC 6901 (and `serde_json::Value::pointer`) reads it: digits, without
/// a leading `+` or a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scope {
            Scope::Document => write!(f, "${}", self.pointer),
            Scope::Event => write!(f, "@{}", self.pointer),
            Scope::Ancestor(level) => write!(f, "{}{}", "^".repeat(level), self.pointer),
        }
    }
}

impl<'de> Deserialize<'de> for JsonPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        JsonPath::parse(&text, false).map_err(serde::de::Error::custom)
    }
}

/// A document-scoped path that may contain `*` (poll response items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ItemsPath(pub JsonPath);

impl<'de> Deserialize<'de> for ItemsPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let path = JsonPath::parse(&text, true).map_err(serde::de::Error::custom)?;
        if path.scope() != Scope::Document {
            return Err(serde::de::Error::custom(format!(
                "path `{text}` must start with `$`: poll items are found in the response document"
            )));
        }
        Ok(ItemsPath(path))
    }
}

/// A document-scoped path (envelopes, event arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DocumentPath(pub JsonPath);

impl<'de> Deserialize<'de> for DocumentPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = JsonPath::deserialize(deserializer)?;
        if path.scope() != Scope::Document {
            return Err(serde::de::Error::custom(format!(
                "path `{path}` must start with `$`: there is no event element here"
            )));
        }
        Ok(DocumentPath(path))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A resolved value with its concrete path as an error message would name it.
    fn shown<'v>(resolved: Option<(&'v Value, Concrete<'_>)>) -> (&'v Value, String) {
        let (value, concrete) = resolved.expect("the path resolves");
        (value, concrete.to_string())
    }

    #[test]
    fn paths_resolve_as_json_pointers_do() {
        let document = json!({
            "a/b": {"m~n": [10, 11, {"deep": true}]},
            "list": ["x", "y"],
            "": {"": "empty keys"},
            "n": 5
        });
        for pointer in [
            "",
            "/a~1b",
            "/a~1b/m~0n",
            "/a~1b/m~0n/2/deep",
            "/a~1b/m~0n/02",
            "/a~1b/m~0n/+1",
            "/a~1b/m~0n/1",
            "/list/1",
            "/list/2",
            "/list/-",
            "/missing",
            "/n/0",
            "/",
            "//",
            "/a~1b/m~0n/2/deep/more",
        ] {
            let path = JsonPath::parse(&format!("${pointer}"), false).unwrap();
            assert_eq!(
                path.resolve(Scopes::document(&document))
                    .map(|(value, _)| value),
                document.pointer(pointer),
                "{pointer}"
            );
            let all = path.resolve_all(&document);
            assert_eq!(all.first().copied(), document.pointer(pointer), "{pointer}");
            assert!(all.len() <= 1, "{pointer}");
        }
    }

    #[test]
    fn parses_and_resolves_both_scopes() {
        let document = json!({"msg": {"a/b": 1, "list": [{"t": "x"}]}});
        let element = &document["msg"]["list"][0];
        let scopes = Scopes {
            document: &document,
            event: Some((element, "$/msg/list/0")),
            ancestors: &[],
        };
        let path = JsonPath::parse("$/msg/a~1b", false).unwrap();
        assert_eq!(
            shown(path.resolve(scopes)),
            (&json!(1), "$/msg/a~1b".to_owned())
        );
        let path = JsonPath::parse("@/t", false).unwrap();
        assert_eq!(
            shown(path.resolve(scopes)),
            (&json!("x"), "$/msg/list/0/t".to_owned())
        );
        let no_event = Scopes::document(&document);
        assert!(path.resolve(no_event).is_none());
        assert_eq!(
            JsonPath::parse("$", false)
                .unwrap()
                .resolve(no_event)
                .unwrap()
                .0,
            &document
        );
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "msg/a",
            "/msg",
            "$msg",
            "$/a~2",
            "$/a~",
            "",
            "$/*/x",
            "^^^^^^^^^/a",
            "^a",
        ] {
            assert!(JsonPath::parse(bad, false).is_err(), "{bad}");
        }
        assert!(JsonPath::parse("$/*/x", true).is_ok());
    }

    #[test]
    fn ancestors_resolve_nearest_first() {
        let document = json!({"legs": [{"code": "DHL", "events": [{"s": 1}]}]});
        let leg = &document["legs"][0];
        let frames = [(leg, "$/legs/0".to_owned()), (&document, "$".to_owned())];
        let scopes = Scopes {
            document: &document,
            event: Some((&leg["events"][0], "$/legs/0/events/0")),
            ancestors: &frames,
        };
        let parent = JsonPath::parse("^/code", false).unwrap();
        assert_eq!(
            shown(parent.resolve(scopes)),
            (&json!("DHL"), "$/legs/0/code".to_owned())
        );
        assert_eq!(parent.to_string(), "^/code");
        assert!(
            JsonPath::parse("^^^/code", false)
                .unwrap()
                .resolve(scopes)
                .is_none()
        );
    }

    #[test]
    fn wildcards_expand_arrays_and_objects() {
        let document = json!({"result": {"A1": {"scans": [1, 2]}, "B2": {"scans": [3]}}});
        let path = JsonPath::parse("$/result/*/scans/*", true).unwrap();
        assert_eq!(
            path.resolve_all(&document),
            vec![&json!(1), &json!(2), &json!(3)]
        );
        let path = JsonPath::parse("$/nothing/*", true).unwrap();
        assert!(path.resolve_all(&document).is_empty());
    }

    #[test]
    fn wildcard_matches_carry_their_concrete_paths() {
        let document = json!({"data": {
            "origin_info": {"trackinfo": [1]},
            "destination_info": {"trackinfo": [2]},
            "id": 5,
            "a/b": {"trackinfo": []}
        }});
        let path = JsonPath::parse("$/data/*/trackinfo", true).unwrap();
        let mut matches: Vec<(String, Value)> = path
            .resolve_all_from(&document, "$")
            .into_iter()
            .map(|(value, concrete)| (concrete, value.clone()))
            .collect();
        matches.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            matches,
            [
                ("$/data/a~1b/trackinfo".to_owned(), json!([])),
                ("$/data/destination_info/trackinfo".to_owned(), json!([2])),
                ("$/data/origin_info/trackinfo".to_owned(), json!([1])),
            ]
        );
        // From an element: the element's concrete path is the base.
        let path = JsonPath::parse("@/trackinfo/*", true).unwrap();
        let element = &document["data"]["origin_info"];
        assert_eq!(
            path.resolve_all_from(element, "$/data/origin_info"),
            [(&json!(1), "$/data/origin_info/trackinfo/0".to_owned())]
        );
    }
}
