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

/// A courier whose tracking API answers every poll with a Starshipit history of the tracking
/// number asked for.
pub async fn starshipit_courier() -> FakeCourier {
    FakeCourier::start(|uri, _| Answer::ok(starshipit_poll(&tracking_number_in(uri)))).await
}

/// The app with `workers` workers and one Starshipit source, `ssi`, in `mode`, whose tracking API
/// is `courier`; `polling` is merged into the `[polling]` settings.
pub async fn spawn_ssi_app(
    workers: usize,
    courier: &FakeCourier,
    mode: &str,
    polling: &str,
) -> TestApp {
    spawn_app_with(AppOptions {
        workers,
        extra_toml: starshipit_source("ssi", &courier.url, mode) + &polling_toml(polling),
    })
    .await
}

/// The app with one worker and a poll-only Starshipit source for each `(id, courier)`.
pub async fn spawn_poll_only_app(sources: &[(&str, &FakeCourier)]) -> TestApp {
    let mut extra_toml = String::new();
    for (id, courier) in sources {
        extra_toml += &starshipit_source(id, &courier.url, "poll_only");
    }
    spawn_app_with(AppOptions {
        workers: 1,
        extra_toml: extra_toml + &polling_toml(""),
    })
    .await
}

/// Posts the captured real Starshipit webhook to the source `ssi`, which must accept it.
pub async fn post_captured_webhook(app: &TestApp) {
    let webhook = fixture("starshipit", "captured-real.json");
    assert_eq!(app.post_starshipit("ssi", &webhook).await.status(), 200);
}

/// Counts requests per tracking number.
pub fn per_tracking_number(seen: &[Received]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in seen {
        *counts.entry(tracking_number_in(&request.uri)).or_insert(0) += 1;
    }
    counts
}
