//! The polling suite's app, built by `waybill_e2e::TestApp::builder`, and the courier stand-ins
//! (`waybill_e2e::FakeCourier`) answering for each courier's tracking API.

use std::collections::HashMap;

pub use waybill_e2e::sources::{
    fixture, polling_toml, starshipit_poll, starshipit_source, tracking_number_in,
};
pub use waybill_e2e::{Answer, FakeCourier, Received, TestApp, eventually};

/// Options for [`spawn_app_with`].
pub struct AppOptions {
    pub workers: usize,
    /// Sources and `[polling]` settings (TOML merged over the configuration).
    pub extra_toml: String,
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    TestApp::builder()
        .config("[ingress]\nbody_limit_bytes = 262144")
        .workers(options.workers)
        .config(&options.extra_toml)
        .start()
        .await
}

/// Counts requests per tracking number.
pub fn per_tracking_number(seen: &[Received]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in seen {
        *counts.entry(tracking_number_in(&request.uri)).or_insert(0) += 1;
    }
    counts
}
