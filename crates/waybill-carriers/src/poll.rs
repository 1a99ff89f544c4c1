//! Polling a carrier's tracking API: the request to send (built from templates and the
//! source's credentials) and where the shipments are in the response. This module builds
//! requests; it never sends them (the worker owns HTTP).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use http::HeaderName;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use waybill_core::TrackingNumber;

use crate::error::MapError;
use crate::path::{DocumentPath, ItemsPath, JsonPath};

/// How to poll one carrier: a `GET` (or other method) built from templates.
///
/// Templates use `{name}` for a variable and `{name?}` for one that may be missing (it becomes
/// empty). `{base_url}` and `{tracking_number}` are always there; every other name comes from
/// the credentials map given to [`PollSpec::build_request`] (API keys, but also per-shipment
/// hints such as ClickPost's `cp_id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollSpec {
    #[serde(default = "default_method")]
    method: Method,
    url: Template,
    #[serde(default)]
    default_base_url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<HeaderNameText, Template>,
    #[serde(default)]
    basic_auth: Option<BasicAuth>,
    #[serde(default)]
    rate_limit_per_second: Option<f64>,
    #[serde(default)]
    pub(crate) response: ResponseSpec,
}

/// A request ready to send. Its `Debug` hides the query string and header values, which hold
/// credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct PollRequest {
    /// The HTTP method, upper-case.
    pub method: String,
    /// The absolute URL, variables substituted and percent-encoded.
    pub url: String,
    /// Header names and values, credentials substituted.
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for PollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("PollRequest")
            .field("method", &self.method)
            .field("url", &self.url_without_query())
            .field("headers", &names)
            .finish_non_exhaustive()
    }
}

impl PollRequest {
    /// The URL without its query string: safe to log (ClickPost puts its key in the query).
    pub fn url_without_query(&self) -> &str {
        self.url.split('?').next().unwrap_or(&self.url)
    }
}

/// Where shipments are in a poll response. Each item becomes one document mapped by the
/// profile's `[mapping]`, optionally placed at `wrap` so that the webhook's paths fit it
/// (AfterShip's API returns the tracking object that its webhooks carry under `msg`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResponseSpec {
    /// Path to the items; `*` segments expand arrays and objects. Default: the whole response.
    #[serde(default = "whole_document")]
    pub items: ItemsPath,
    /// Where to place each item in a synthetic document; default: the item is the document.
    #[serde(default)]
    pub wrap: Option<DocumentPath>,
}

impl Default for ResponseSpec {
    fn default() -> Self {
        ResponseSpec {
            items: whole_document(),
            wrap: None,
        }
    }
}

fn whole_document() -> ItemsPath {
    ItemsPath(JsonPath::document_root())
}

impl ResponseSpec {
    /// The documents of a parsed response.
    pub fn documents(&self, response: &Value) -> Vec<Value> {
        self.items
            .0
            .resolve_all(response)
            .into_iter()
            .map(|item| match &self.wrap {
                None => item.clone(),
                Some(DocumentPath(wrap)) => wrap_at(wrap.pointer(), item.clone()),
            })
            .collect()
    }
}

fn wrap_at(pointer: &str, item: Value) -> Value {
    if pointer.is_empty() {
        return item;
    }
    pointer[1..].split('/').rev().fold(item, |inner, segment| {
        let key = segment.replace("~1", "/").replace("~0", "~");
        let mut object = Map::new();
        object.insert(key, inner);
        Value::Object(object)
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuth {
    username: Template,
    #[serde(default)]
    password: Option<Template>,
}

fn default_method() -> Method {
    Method("GET".to_owned())
}

#[derive(Debug, Clone)]
struct Method(String);

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_uppercase().as_str() {
            method @ ("GET" | "POST") => Ok(Method(method.to_owned())),
            _ => Err(serde::de::Error::custom(format!(
                "method `{text}` is not GET or POST"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct HeaderNameText(String);

impl<'de> Deserialize<'de> for HeaderNameText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        HeaderName::from_bytes(text.as_bytes()).map_err(|_| {
            serde::de::Error::custom(format!("`{text}` is not a valid HTTP header name"))
        })?;
        Ok(HeaderNameText(text))
    }
}

/// A parsed `{variable}` template.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Variable { name: String, optional: bool },
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!("template `{text}` has a `}}` without `{{`"));
            }
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("template `{text}` has an unclosed `{{`"))?;
            let inner = &rest[open + 1..open + close];
            let (name, optional) = match inner.strip_suffix('?') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "template `{text}`: `{{{inner}}}` is not a variable name"
                ));
            }
            pieces.push(Piece::Variable {
                name: name.to_owned(),
                optional,
            });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok(Template(pieces))
    }

    fn render(&self, variables: &Variables<'_>, encode: bool) -> Result<String, MapError> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Variable { name, optional } => {
                    let value = match variables.get(name) {
                        Some(value) => value,
                        None if *optional => continue,
                        None => return Err(MapError::MissingCredential { name: name.clone() }),
                    };
                    // The base URL is a URL already; everything else is data inside one.
                    if encode && name != "base_url" {
                        percent_encode(value, &mut out);
                    } else {
                        if value.chars().any(char::is_control) {
                            return Err(MapError::InvalidCredential { name: name.clone() });
                        }
                        out.push_str(value);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Template::parse(&text).map_err(serde::de::Error::custom)
    }
}

struct Variables<'a> {
    base_url: &'a str,
    tracking_number: &'a str,
    credentials: &'a BTreeMap<String, String>,
}

impl Variables<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "base_url" => Some(self.base_url),
            "tracking_number" => Some(self.tracking_number),
            _ => self.credentials.get(name).map(String::as_str),
        }
    }
}

/// RFC 3986: everything but unreserved characters is escaped, so a value can never add a
/// query parameter or a path segment.
fn percent_encode(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

impl PollSpec {
    /// Builds the request for one tracking number. `base_url` overrides the profile's default
    /// (tests point it at a local server); `credentials` fills the other template variables.
    pub fn build_request(
        &self,
        base_url: Option<&str>,
        tracking_number: &TrackingNumber,
        credentials: &BTreeMap<String, String>,
    ) -> Result<PollRequest, MapError> {
        let base_url = base_url
            .or(self.default_base_url.as_deref())
            .ok_or_else(|| MapError::MissingCredential {
                name: "base_url".to_owned(),
            })?;
        if !(base_url.starts_with("http://") || base_url.starts_with("https://"))
            || base_url
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(MapError::InvalidBaseUrl);
        }
        let variables = Variables {
            base_url: base_url.trim_end_matches('/'),
            tracking_number: tracking_number.as_str(),
            credentials,
        };
        let url = self.url.render(&variables, true)?;
        let mut headers = Vec::new();
        for (HeaderNameText(name), template) in &self.headers {
            headers.push((name.clone(), template.render(&variables, false)?));
        }
        if let Some(auth) = &self.basic_auth {
            let username = auth.username.render(&variables, false)?;
            let password = match &auth.password {
                Some(template) => template.render(&variables, false)?,
                None => String::new(),
            };
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            headers.push(("Authorization".to_owned(), format!("Basic {token}")));
        }
        Ok(PollRequest {
            method: self.method.0.clone(),
            url,
            headers,
        })
    }

    /// The production base URL, used when the caller gives none.
    pub fn default_base_url(&self) -> Option<&str> {
        self.default_base_url.as_deref()
    }

    /// The carrier's documented or prudent request rate, for the worker's rate limiter.
    pub fn rate_limit_per_second(&self) -> Option<f64> {
        self.rate_limit_per_second
    }

    /// Every variable the templates use beyond `base_url` and `tracking_number`, with whether
    /// it is required: what a source must configure.
    pub fn credential_names(&self) -> Vec<(String, bool)> {
        let mut names: BTreeMap<String, bool> = BTreeMap::new();
        let templates = std::iter::once(&self.url)
            .chain(self.headers.values())
            .chain(
                self.basic_auth
                    .iter()
                    .flat_map(|auth| std::iter::once(&auth.username).chain(auth.password.iter())),
            );
        for template in templates {
            for piece in &template.0 {
                if let Piece::Variable { name, optional } = piece
                    && name != "base_url"
                    && name != "tracking_number"
                {
                    *names.entry(name.clone()).or_insert(false) |= !optional;
                }
            }
        }
        names.into_iter().collect()
    }

    /// Checks what serde cannot: a positive rate and an absolute default base URL.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(rate) = self.rate_limit_per_second
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err((
                "poll.rate_limit_per_second",
                "must be a positive number".to_owned(),
            ));
        }
        if let Some(base) = &self.default_base_url
            && !(base.starts_with("http://") || base.starts_with("https://"))
        {
            return Err((
                "poll.default_base_url",
                "must start with http:// or https://".to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn templates_parse_and_reject_garbage() {
        let template = Template::parse("{base_url}/x?a={api_key}&b={cp_id?}").unwrap();
        assert_eq!(template.0.len(), 5);
        for bad in ["{unclosed", "a}b", "{}", "{bad name}", "{a-b}"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_percent_encoded_in_urls_only() {
        let template = Template::parse("{base_url}/t?k={api_key}&c={cp_id?}").unwrap();
        let credentials = BTreeMap::from([("api_key".to_owned(), "a&b=c d/é".to_owned())]);
        let variables = Variables {
            base_url: "http://127.0.0.1:9",
            tracking_number: "X",
            credentials: &credentials,
        };
        assert_eq!(
            template.render(&variables, true).unwrap(),
            "http://127.0.0.1:9/t?k=a%26b%3Dc%20d%2F%C3%A9&c="
        );
        let header = Template::parse("{api_key}").unwrap();
        assert_eq!(header.render(&variables, false).unwrap(), "a&b=c d/é");
        let evil = BTreeMap::from([("api_key".to_owned(), "x\r\nInjected: 1".to_owned())]);
        let variables = Variables {
            credentials: &evil,
            ..variables
        };
        assert!(matches!(
            header.render(&variables, false),
            Err(MapError::InvalidCredential { .. })
        ));
        let missing = Template::parse("{nope}").unwrap();
        assert!(matches!(
            missing.render(&variables, false),
            Err(MapError::MissingCredential { .. })
        ));
    }

    #[test]
    fn response_items_are_wrapped() {
        let response = json!({"data": {"trackings": [{"a": 1}, {"a": 2}]}});
        let spec: ResponseSpec =
            toml::from_str("items = \"$/data/trackings/*\"\nwrap = \"$/msg\"").unwrap();
        assert_eq!(
            spec.documents(&response),
            vec![json!({"msg": {"a": 1}}), json!({"msg": {"a": 2}})]
        );
        assert_eq!(ResponseSpec::default().documents(&response), vec![response]);
    }
}
