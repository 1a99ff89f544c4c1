//! The standard sources of a test app, their secrets, and signing as each courier does; the
//! carriers crate's fixtures; bodies in Waybill's own format.

use std::path::PathBuf;

use crate::sign::{hmac_base64, hmac_hex, waybill_signature};

pub const STARSHIPIT_SECRET: &str = "test-starshipit-secret";
pub const CLICKPOST_KEY: &str = "test-clickpost-key";
pub const AFTERSHIP_SECRET: &str = "test-aftership-secret";
pub const EASYPOST_SECRET: &str = "test-easypost-secret";
/// The secret of every source in Waybill's own format (profile `waybill`).
pub const DIRECT_SECRET: &str = "test-direct-secret";

/// `[[sources]]` for each built-in courier profile, `direct` (Waybill's own format) and
/// `registered-only` (the same, registration required).
pub fn couriers_toml() -> String {
    let sources = [
        ("starshipit", "starshipit", STARSHIPIT_SECRET),
        ("clickpost", "clickpost", CLICKPOST_KEY),
        ("aftership", "aftership", AFTERSHIP_SECRET),
        ("easypost", "easypost", EASYPOST_SECRET),
        ("direct", "waybill", DIRECT_SECRET),
    ];
    let mut toml = String::new();
    for (id, profile, secret) in sources {
        toml.push_str(&format!(
            "[[sources]]\nid = \"{id}\"\nprofile = \"{profile}\"\nsecrets = [\"{secret}\"]\n"
        ));
    }
    toml.push_str(&format!(
        "[[sources]]\nid = \"registered-only\"\nprofile = \"waybill\"\nsecrets = [\"{DIRECT_SECRET}\"]\nrequire_registration = true\n"
    ));
    toml
}

/// `[[sources]]` for a source in Waybill's own format, of `tenant`, signed with
/// [`DIRECT_SECRET`].
pub fn direct_source(id: &str, tenant: &str) -> String {
    format!(
        r#"
        [[sources]]
        id = "{id}"
        profile = "waybill"
        tenant = "{tenant}"
        secrets = ["{DIRECT_SECRET}"]
        "#
    )
}

/// The headers the courier behind `source` signs `body` with (independently of Waybill's
/// verifier): the built-in couriers by their source ids, any other source in Waybill's own
/// format with [`DIRECT_SECRET`].
pub fn sign(source: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    match source {
        "starshipit" => vec![("x-starshipit-signature", hmac_hex(STARSHIPIT_SECRET, body))],
        "clickpost" => vec![("webhook_key", CLICKPOST_KEY.to_owned())],
        "aftership" => vec![("aftership-hmac-sha256", hmac_base64(AFTERSHIP_SECRET, body))],
        "easypost" => vec![(
            "x-hmac-signature",
            format!("hmac-sha256-hex={}", hmac_hex(EASYPOST_SECRET, body)),
        )],
        _ => vec![("waybill-signature", waybill_signature(DIRECT_SECRET, body))],
    }
}

/// A fixture shipped with the carriers crate.
pub fn fixture(carrier: &str, name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(carrier).join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// The carriers crate's fixtures.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crates/waybill-carriers/tests/fixtures")
}

/// One event in Waybill's own format.
pub fn event(
    carrier: &str,
    tracking_number: &str,
    status: &str,
    occurred_at: &str,
) -> serde_json::Value {
    serde_json::json!({
        "carrier": carrier,
        "tracking_number": tracking_number,
        "status": status,
        "raw_status": status,
        "occurred_at": occurred_at,
        "location": "SYDNEY",
    })
}

/// A body in Waybill's own format: one event of carrier `acme` at `location`.
pub fn direct_event(
    tracking_number: &str,
    status: &str,
    occurred_at: &str,
    location: &str,
) -> Vec<u8> {
    let mut event = event("acme", tracking_number, status, occurred_at);
    event["location"] = location.into();
    serde_json::to_vec(&event).expect("serialisable")
}

/// `[[sources]]` for a starshipit account polled at `url`, in `mode`.
pub fn starshipit_source(id: &str, url: &str, mode: &str) -> String {
    starshipit_source_with(id, url, mode, STARSHIPIT_SECRET, ("ssi-key", "ssi-sub"))
}

/// [`starshipit_source`] with its own webhook secret and API credentials (the API key and the
/// subscription key).
pub fn starshipit_source_with(
    id: &str,
    url: &str,
    mode: &str,
    secret: &str,
    (api_key, subscription_key): (&str, &str),
) -> String {
    format!(
        r#"
        [[sources]]
        id = "{id}"
        profile = "starshipit"
        secrets = ["{secret}"]
        mode = "{mode}"
        credentials = {{ api_key = "{api_key}", subscription_key = "{subscription_key}" }}
        poll_base_url = "{url}"
        "#
    )
}

/// The starshipit poll fixture, for another tracking number.
pub fn starshipit_poll(tracking_number: &str) -> Vec<u8> {
    String::from_utf8(fixture("starshipit", "poll-track.json"))
        .expect("UTF-8")
        .replace("T01234567890", tracking_number)
        .into_bytes()
}

/// The tracking number in a starshipit poll URL (`...?tracking_number=X`).
pub fn tracking_number_in(uri: &str) -> String {
    uri.split("tracking_number=")
        .nth(1)
        .unwrap_or("")
        .split('&')
        .next()
        .unwrap_or("")
        .to_owned()
}

/// The base polling configuration: fast ticks, no jitter, one-second back-off, nothing
/// expires; `extra_polling` is added to `[polling]`.
pub fn polling_toml(extra_polling: &str) -> String {
    format!(
        r#"
        [polling]
        tick_ms = 100
        first_poll_jitter_secs = 0
        jitter = 0.0
        backoff_base_secs = 1
        backoff_max_secs = 4
        expire_after_days = 36500
        lease_secs = 60
        max_rate_wait_ms = 200
        request_timeout_ms = 2000
        {extra_polling}
        "#
    )
}
