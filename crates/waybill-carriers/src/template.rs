//! The signed-content template of a composed verification scheme: what exactly the carrier
//! signs, written as text with placeholders.
//!
//! `{body}` (the raw body bytes), `{timestamp}`, `{id}`, `{secret}`, `{url}` (the request URL as
//! received), `{header:Name}` (a request header's value), `{query:name}` (a query parameter,
//! decoded); `{{` and `}}` are literal braces. Examples: `{body}` (most HMACs),
//! `{timestamp}.{body}` (Stripe), `{id}.{timestamp}.{body}` (Standard Webhooks),
//! `v0:{timestamp}:{body}` (Slack), `{body}/{secret}` (a plain digest over body and secret).

use http::{HeaderMap, HeaderName};

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    Literal(Vec<u8>),
    Body,
    Timestamp,
    Id,
    Secret,
    Url,
    Header(HeaderName),
    Query(String),
}

/// A checked template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedTemplate {
    pub parts: Vec<Part>,
}

/// What a template is filled with for one request and one secret.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TemplateValues<'a> {
    pub body: &'a [u8],
    pub timestamp: Option<&'a str>,
    pub id: Option<&'a str>,
    pub secret: Option<&'a [u8]>,
    pub url: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// The longest template accepted; real ones are a few dozen characters.
const MAX_TEMPLATE_LEN: usize = 1024;

impl SignedTemplate {
    /// The body alone: what most carriers sign.
    pub fn body() -> SignedTemplate {
        SignedTemplate {
            parts: vec![Part::Body],
        }
    }

    /// Parses a template; the error names the problem and the character offset.
    pub fn parse(text: &str) -> Result<SignedTemplate, String> {
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(format!("a template is at most {MAX_TEMPLATE_LEN} bytes"));
        }
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            let offset = text.len() - rest.len();
            if rest.starts_with("{{") || rest.starts_with("}}") {
                literal.push(rest.as_bytes()[0]);
                rest = &rest[2..];
            } else if c == '{' {
                let Some(end) = rest.find('}') else {
                    return Err(format!("`{{` at offset {offset} is never closed"));
                };
                let name = &rest[1..end];
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(
                    placeholder(name).map_err(|reason| format!("{reason} (offset {offset})"))?,
                );
                rest = &rest[end + 1..];
            } else if c == '}' {
                return Err(format!(
                    "`}}` at offset {offset} closes nothing (write `}}}}` for a literal one)"
                ));
            } else {
                let mut buffer = [0; 4];
                literal.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if parts.is_empty() {
            return Err("a template cannot be empty".to_owned());
        }
        Ok(SignedTemplate { parts })
    }

    /// Whether the template has this placeholder.
    pub fn uses(&self, wanted: &Part) -> bool {
        self.parts.iter().any(|part| part == wanted)
    }

    /// The signed bytes; `None` when a placeholder has no value in this request.
    pub fn render(&self, values: &TemplateValues<'_>) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(values.body.len() + 64);
        for part in &self.parts {
            match part {
                Part::Literal(bytes) => out.extend_from_slice(bytes),
                Part::Body => out.extend_from_slice(values.body),
                Part::Timestamp => out.extend_from_slice(values.timestamp?.as_bytes()),
                Part::Id => out.extend_from_slice(values.id?.as_bytes()),
                Part::Secret => out.extend_from_slice(values.secret?),
                Part::Url => out.extend_from_slice(values.url?.as_bytes()),
                Part::Header(name) => out.extend_from_slice(values.headers.get(name)?.as_bytes()),
                Part::Query(name) => {
                    let query = values.url?.split_once('?')?.1;
                    let (_, value) =
                        form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name)?;
                    out.extend_from_slice(value.as_bytes());
                }
            }
        }
        Some(out)
    }
}

fn placeholder(name: &str) -> Result<Part, String> {
    Ok(match name {
        "body" => Part::Body,
        "timestamp" => Part::Timestamp,
        "id" => Part::Id,
        "secret" => Part::Secret,
        "url" => Part::Url,
        _ => {
            if let Some(header) = name.strip_prefix("header:") {
                Part::Header(
                    HeaderName::from_bytes(header.as_bytes())
                        .map_err(|_| format!("`{header}` is not a valid HTTP header name"))?,
                )
            } else if let Some(query) = name.strip_prefix("query:").filter(|q| !q.is_empty()) {
                Part::Query(query.to_owned())
            } else {
                return Err(format!(
                    "unknown placeholder `{{{name}}}`: expected {{body}}, {{timestamp}}, {{id}}, {{secret}}, {{url}}, {{header:Name}} or {{query:name}}"
                ));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn renders_every_placeholder() {
        let template = SignedTemplate::parse(
            "v0:{timestamp}:{id}|{header:X-Path}|{query:sig_v}|{{x}}|{body}/{secret}|{url}",
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-path", HeaderValue::from_static("/hook"));
        let values = TemplateValues {
            body: b"{}",
            timestamp: Some("17"),
            id: Some("msg_1"),
            secret: Some(b"s3"),
            url: Some("https://h/p?sig_v=2&x=1"),
            headers: &headers,
        };
        assert_eq!(
            String::from_utf8(template.render(&values).unwrap()).unwrap(),
            "v0:17:msg_1|/hook|2|{x}|{}/s3|https://h/p?sig_v=2&x=1"
        );
        let without_id = TemplateValues { id: None, ..values };
        assert_eq!(template.render(&without_id), None);
    }

    #[test]
    fn rejects_malformed_templates() {
        for bad in [
            "",
            "{body",
            "body}",
            "{nope}",
            "{header:bad name}",
            "{query:}",
        ] {
            assert!(SignedTemplate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            SignedTemplate::parse("{body}").unwrap(),
            SignedTemplate::body()
        );
    }
}
