//! The pipeline suite's app: the standard courier sources (`waybill_e2e::sources`) and a 64 KiB
//! body limit, built by `waybill_e2e::TestApp::builder`.

pub use waybill_e2e::sign::hmac_hex;
pub use waybill_e2e::sources::*;
pub use waybill_e2e::{AppBuilder, TestApp};

/// API keys are not required here (the tenancy suite covers them); small body and pool.
const PIPELINE: &str = r#"
auth = { mode = "none" }
[database]
max_connections = 4
[ingress]
body_limit_bytes = 65536
"#;

/// The pipeline suite's builder: add components or configuration, then `start()`.
pub fn app() -> AppBuilder {
    TestApp::builder().couriers().config(PIPELINE)
}

pub async fn spawn_app() -> TestApp {
    app().start().await
}
