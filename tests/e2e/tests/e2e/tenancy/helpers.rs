//! The tenancy suite's app: API keys required (`[auth] mode = "keys"`, a one-second refresh),
//! two tenants' sources, and every log line of the test process captured
//! (`waybill_e2e::logs`) so tests can prove what never appears in it.

use waybill_core::access::Scope;
pub use waybill_e2e::TestApp;
pub use waybill_e2e::logs::captured as captured_logs;
use waybill_e2e::sources::{DIRECT_SECRET, direct_source};

/// The key-set refresh interval the tests run with, and the documented bound on revocation
/// that follows from it (one refresh plus one publish; see docs/security.md).
pub const REFRESH_SECS: u64 = 1;

pub async fn spawn_app() -> TestApp {
    TestApp::builder()
        .capture_logs()
        .config(&format!(
            "[auth]\nmode = \"keys\"\nrefresh_secs = {REFRESH_SECS}\nmax_snapshot_age_secs = {}\n\
             [database]\nmax_connections = 4",
            REFRESH_SECS * 3
        ))
        .config(&direct_source("acme-direct", "acme"))
        .config(&direct_source("globex-direct", "globex"))
        .start()
        .await
}

/// The keys the tests ask for: a tenant and a scope.
pub const ACME_READ: (&str, Scope) = ("acme", Scope::ShipmentsRead);
pub const ACME_WRITE: (&str, Scope) = ("acme", Scope::ShipmentsWrite);
pub const GLOBEX_READ: (&str, Scope) = ("globex", Scope::ShipmentsRead);

/// The app, and a key for each `(tenant, scope)` that its worker already knows.
pub async fn spawn_app_with_keys<const N: usize>(
    keys: [(&str, Scope); N],
) -> (TestApp, [String; N]) {
    let app = spawn_app().await;
    let keys = app.create_known_keys(keys).await;
    (app, keys)
}

/// `Waybill-Signature: t=…,v1=…` for a body, with the sources' secret.
pub fn sign_direct(body: &[u8]) -> String {
    waybill_e2e::sign::waybill_signature(DIRECT_SECRET, body)
}

/// One event in Waybill's own format, of carrier `acme-post`, with an order number.
pub fn direct_event(
    tracking_number: &str,
    status: &str,
    occurred_at: &str,
    location: &str,
    order_number: &str,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "carrier": "acme-post",
        "tracking_number": tracking_number,
        "status": status,
        "raw_status": status,
        "occurred_at": occurred_at,
        "location": location,
        "order_number": order_number,
    }))
    .expect("serialisable")
}
