//! The signatures couriers put on their webhooks, computed independently of Waybill's verifier.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

fn hmac_sha256(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// HMAC-SHA256 of `body`, hex.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret, body))
}

/// HMAC-SHA256 of `body`, standard base64.
pub fn hmac_base64(secret: &str, body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_sha256(secret, body))
}

/// A `Waybill-Signature` header value (`t=<now>,v1=<hex of HMAC("<now>.<body>")>`), the
/// scheme of Waybill's own webhook format.
pub fn waybill_signature(secret: &str, body: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut signed = format!("{now}.").into_bytes();
    signed.extend_from_slice(body);
    format!("t={now},v1={}", hmac_hex(secret, &signed))
}
