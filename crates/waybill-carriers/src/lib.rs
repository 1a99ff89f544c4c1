//! Carrier profiles: each courier's or tracking platform's wire format described as data, so
//! adding a courier is writing a TOML file, not code.
//!
//! A profile says how to **verify** a webhook (HMAC-SHA256 over the raw body, Stripe-style
//! timestamped signatures, a static token, or nothing), how to **map** a payload to canonical
//! [`waybill_core::TrackingEvent`]s (JSON paths, checkpoint arrays, time zones, a status table),
//! and how to **poll** the carrier's tracking API. The format is documented in
//! `docs/carrier-profiles.md`; the built-ins are in `profiles/`.
//!
//! ```text
//! UnverifiedRequest ──CarrierProfile::verify──▶ VerifiedRequest ──map_webhook──▶ Mapped
//! PollSpec::build_request ──(worker sends it)──▶ body ──map_poll_response──▶ Mapped
//! ```
//!
//! **Invariant:** this crate is pure: no runtime, no network, no database. Its only IO is
//! reading profile files when asked to. It never panics on input and never puts a secret,
//! signature or payload value into an error message.

#![warn(missing_docs)]

mod body;
mod error;
mod event;
mod fields;
mod json;
mod keys;
mod mapping;
mod path;
mod poll;
mod profile;
mod registry;
mod scheme;
mod status_map;
mod template;
mod time;
mod transform;
mod verify;

pub use error::{MapError, ProfileError, VerifyError};
pub use json::MAX_DEPTH as MAX_JSON_DEPTH;
pub use keys::{KeyError, KeySet, PublicKey};
pub use mapping::{Mapped, RejectedEvent};
pub use poll::{PollRequest, PollSpec};
pub use profile::CarrierProfile;
pub use registry::ProfileRegistry;
pub use verify::{Credentials, UnverifiedRequest, VerifiedRequest};

/// Entry points for fuzzing the parsers of untrusted text: bodies, times, templates, filters.
/// Not part of the stable API.
#[doc(hidden)]
pub mod fuzzing {
    use serde_json::Value;

    /// Reads a form body into the document model.
    pub fn parse_form(body: &[u8]) -> Result<Value, crate::MapError> {
        crate::body::parse_form(body)
    }

    /// Reads an XML body into the document model.
    pub fn parse_xml(body: &[u8]) -> Result<Value, crate::MapError> {
        crate::body::parse_xml(body)
    }

    /// Parses a strftime-style format and reads `value` with it (and the built-in formats) in
    /// `zone`; `Err` for a bad format or zone, `Ok(None)` when the value does not parse.
    pub fn parse_time(format: &str, zone: &str, value: &str) -> Result<Option<i64>, String> {
        let custom = crate::time::CustomFormat::parse(format)?;
        let zone = crate::time::Zone::parse(zone)?;
        let spec =
            crate::time::TimeSpec::with_formats(vec![crate::time::TimeFormat::Custom(custom)]);
        Ok(spec
            .parse_in(&Value::String(value.to_owned()), Some(&zone))
            .ok()
            .map(|(time, _)| time.timestamp()))
    }

    /// Parses a signed-content template and renders it over `body`.
    pub fn render_template(template: &str, body: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let template = crate::template::SignedTemplate::parse(template)?;
        let headers = http::HeaderMap::new();
        Ok(template.render(&crate::template::TemplateValues {
            body,
            timestamp: Some("1"),
            id: Some("id"),
            secret: Some(b"secret"),
            url: Some("https://example.test/hook?a=1"),
            headers: &headers,
        }))
    }

    /// Parses a JWKS document.
    pub fn parse_jwks(body: &[u8]) -> Result<usize, crate::KeyError> {
        crate::KeySet::from_jwks(body).map(|(set, _)| set.len())
    }
}
