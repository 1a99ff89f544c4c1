//! Bad input and hostile callers, against the real binaries (child processes, as in the fault
//! suite): the ingress fuzzed end to end, replays, stale signatures, a courier over its rate
//! limit, slow callers, poison messages and the dead-letter commands, and a grep of a full run's
//! debug logs for secrets and personal data.
//!
//! The binaries must be built first, so these tests are `#[ignore]`d in a plain `cargo test`
//! and run by `scripts/test.sh` after `cargo build --bins`:
//!
//! ```sh
//! cargo build --bins && cargo test -p waybill-e2e --test e2e -- --ignored --nocapture hostile::
//! WAYBILL_FUZZ_COUNT=100000 cargo test -p waybill-e2e --test e2e -- --ignored hostile::fuzz
//! ```

mod abuse;
mod deadletters;
mod fuzz;
mod logs;

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use waybill_config::ExposeSecret;

use waybill_e2e::stack::{SECRETS, Stack};

/// Extra sources of the hostile stack: a rate-limited one and an unlimited neighbour.
pub const EXTRA_SOURCES: &str = r#"
[[sources]]
id = "noisy"
profile = "waybill"
secrets = ["hostile-noisy-secret-31f0"]
rate_limit_per_second = 5
[[sources]]
id = "quiet"
profile = "waybill"
secrets = ["hostile-quiet-secret-a77b"]
"#;

/// Every secret configured in the hostile stack.
pub fn all_secrets() -> Vec<&'static str> {
    let mut secrets: Vec<&str> = SECRETS.iter().map(|(_, _, secret)| *secret).collect();
    secrets.extend(["hostile-noisy-secret-31f0", "hostile-quiet-secret-a77b"]);
    secrets
}

/// The secret and profile of a source of the hostile stack.
pub fn source(id: &str) -> (&'static str, &'static str) {
    match id {
        "noisy" => ("waybill", "hostile-noisy-secret-31f0"),
        "quiet" => ("waybill", "hostile-quiet-secret-a77b"),
        _ => SECRETS
            .iter()
            .find(|(source, _, _)| *source == id)
            .map_or_else(
                || panic!("no source {id}"),
                |(_, profile, secret)| (*profile, *secret),
            ),
    }
}

/// The signature header the courier behind `source_id` attaches to `body` now.
pub fn signature(stack: &Stack, source_id: &str, body: &[u8]) -> Option<(String, String)> {
    let (profile, secret) = source(source_id);
    let profiles = stack.settings.profiles().expect("profiles load");
    profiles
        .get(profile)
        .expect("the profile exists")
        .sign(body, secret, Utc::now())
}

/// Posts `body` to `source_id`, signed (or not).
pub async fn post(
    http: &reqwest::Client,
    stack: &Stack,
    source_id: &str,
    body: &[u8],
    signed: bool,
) -> reqwest::Result<reqwest::Response> {
    let mut request = http
        .post(format!("{}/v1/webhooks/{source_id}", stack.ingress_url()))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if signed && let Some((name, value)) = signature(stack, source_id, body) {
        request = request.header(name, value);
    }
    request.send().await
}

/// A body in Waybill's own format, one event.
pub fn direct_event(tracking_number: &str, status: &str, location: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "carrier": "acme",
        "tracking_number": tracking_number,
        "status": status,
        "raw_status": status,
        "occurred_at": Utc::now().to_rfc3339(),
        "location": location,
    }))
    .expect("serialisable")
}

/// A unique suffix for tracking numbers.
pub fn unique() -> String {
    format!("{:010}", rand::random::<u32>())
}

/// A hostile stack: ingress and one worker, the extra sources, logs at `log_level`.
pub async fn hostile_stack(label: &str, log_level: &str) -> Stack {
    let mut stack = Stack::create_with(label, 1, log_level, EXTRA_SOURCES)
        .await
        .expect("create the stack");
    stack.start_all().await.expect("start the stack");
    stack
}

/// A connection to the stack's broker, named `name`.
pub async fn bus_connection(stack: &Stack, name: &str) -> waybill_bus::BusConnection {
    waybill_bus::BusConnection::connect(stack.settings.bus.url.expose_secret(), name)
        .await
        .expect("broker")
}

/// A publisher on the stack's broker, named `name`, ready to publish; cancel the token and close
/// it when done.
pub async fn ready_publisher(
    stack: &Stack,
    topology: &waybill_bus::Topology,
    name: &str,
) -> (waybill_bus::Publisher, CancellationToken) {
    let stop = CancellationToken::new();
    let publisher = waybill_bus::Publisher::start(
        waybill_bus::PublisherConfig::new(
            stack.settings.bus.url.expose_secret(),
            name,
            topology.clone(),
        ),
        stop.clone(),
    )
    .await
    .expect("publisher");
    assert!(
        publisher.wait_ready(Duration::from_secs(10)).await,
        "publisher ready"
    );
    (publisher, stop)
}
