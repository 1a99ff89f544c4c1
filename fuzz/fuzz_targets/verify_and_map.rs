//! Arbitrary bytes as a webhook body and as a poll response, through every built-in profile:
//! sign (so verification passes and the mapper is reached), verify, map. Any panic is a bug.
#![no_main]

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use waybill_carriers::{ProfileRegistry, UnverifiedRequest};
use waybill_core::TrackingNumber;

static REGISTRY: LazyLock<ProfileRegistry> = LazyLock::new(ProfileRegistry::builtin);
const SECRET: &str = "fuzz-secret";

fuzz_target!(|body: &[u8]| {
    let now = DateTime::<Utc>::from_timestamp(1_764_288_000, 0).unwrap_or_default();
    let polled = TrackingNumber::parse("0000000000000000").ok();
    for name in REGISTRY.names() {
        let Some(profile) = REGISTRY.get(name) else { continue };
        let mut headers = HeaderMap::new();
        if let Some((header, value)) = profile.sign(body, SECRET, now) {
            if let (Ok(header), Ok(value)) =
                (HeaderName::from_bytes(header.as_bytes()), HeaderValue::from_str(&value))
            {
                headers.insert(header, value);
            }
        }
        let request = UnverifiedRequest { headers: &headers, body };
        if let Ok(verified) = profile.verify(request, &[SECRET.to_owned()], now) {
            if let Err(error) = profile.map_webhook(&verified, now) {
                assert!(!error.to_string().contains('\n'));
            }
        }
        if let Some(polled) = &polled {
            let _ = profile.map_poll_response(body, polled, now);
        }
    }
});
