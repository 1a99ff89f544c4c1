//! Standard Webhooks signing (the specification at <https://www.standardwebhooks.com>): the
//! `whsec_` secret format and the `v1` HMAC-SHA256 signature over `"<id>.<timestamp>.<body>"`.
//!
//! Only signing lives here; receivers verify. Tests verify with an independent implementation
//! (the `standardwebhooks` crate), never with this one.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;

/// The header carrying the message id, the same on every attempt and replay.
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header carrying the attempt's time, in whole seconds since the Unix epoch.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the signatures, space-delimited (`v1,<base64>`).
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// A symmetric signing key, read from its `whsec_<base64>` form. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

/// A string that is not a usable `whsec_` secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is `whsec_` followed by the base64 of 24 to 64 random bytes")]
pub struct InvalidSecret;

impl WebhookSecret {
    /// The prefix of the serialised form.
    pub const PREFIX: &'static str = "whsec_";
    /// Fewest key bytes accepted.
    pub const MIN_BYTES: usize = 24;
    /// Most key bytes accepted.
    pub const MAX_BYTES: usize = 64;
    /// Key bytes of a generated secret.
    pub const GENERATED_BYTES: usize = 32;

    /// A new random secret in its serialised form (`whsec_` + base64 of 32 random bytes).
    pub fn generate() -> String {
        let mut key = [0u8; Self::GENERATED_BYTES];
        rand::rng().fill(&mut key[..]);
        format!("{}{}", Self::PREFIX, STANDARD.encode(key))
    }

    /// Reads a serialised secret.
    pub fn parse(text: &str) -> Result<WebhookSecret, InvalidSecret> {
        let encoded = text
            .trim()
            .strip_prefix(Self::PREFIX)
            .ok_or(InvalidSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| InvalidSecret)?;
        if !(Self::MIN_BYTES..=Self::MAX_BYTES).contains(&key.len()) {
            return Err(InvalidSecret);
        }
        Ok(WebhookSecret { key })
    }

    /// The `v1` signature of one attempt: base64 of HMAC-SHA256 over
    /// `"<webhook_id>.<timestamp>.<body>"`.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC accepts keys of any length");
        mac.update(webhook_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        STANDARD.encode(mac.finalize().into_bytes())
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The `webhook-signature` value: one `v1,<base64>` per secret (the current one first, then
/// one still valid after a rotation), separated by spaces.
pub fn signature_header(
    webhook_id: &str,
    timestamp: i64,
    body: &[u8],
    secrets: &[WebhookSecret],
) -> String {
    secrets
        .iter()
        .map(|secret| format!("v1,{}", secret.sign(webhook_id, timestamp, body)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_test_vector_signs_as_published() {
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            signature_header(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                body,
                &[secret]
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn rotation_signs_with_every_secret_in_order() {
        let new = WebhookSecret::parse(&WebhookSecret::generate()).unwrap();
        let old = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let header = signature_header("msg_1", 7, b"{}", &[new.clone(), old.clone()]);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            [
                format!("v1,{}", new.sign("msg_1", 7, b"{}")),
                format!("v1,{}", old.sign("msg_1", 7, b"{}"))
            ]
        );
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        let generated = WebhookSecret::generate();
        assert!(generated.starts_with("whsec_"));
        let secret = WebhookSecret::parse(&generated).unwrap();
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
        for bad in [
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_",
            "whsec_not base64!",
            "whsec_c2hvcnQ=",
        ] {
            assert_eq!(WebhookSecret::parse(bad), Err(InvalidSecret), "{bad}");
        }
    }
}
