//! The schedule across replicas and across days: several workers never poll a slot twice, and
//! a shipment without a scan for N days expires (with a clock moved by the test).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use waybill_worker::poll::ManualClock;

use super::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_never_poll_the_same_slot_twice() {
    let courier = starshipit_courier().await;
    let unthrottled = "[polling.sources.ssi]\nrate_limit_per_second = 1000";
    let app = spawn_ssi_app(3, &courier, "poll_only", unthrottled).await;
    let shipments: Vec<String> = (0..300).map(|n| format!("REPL{n:08}")).collect();
    for chunk in shipments.chunks(100) {
        let body: Vec<_> = chunk
            .iter()
            .map(|tn| json!({"source": "ssi", "tracking_number": tn}))
            .collect();
        app.register_ok(&json!(body)).await;
    }
    eventually(
        Duration::from_secs(60),
        "the expected poll outcome",
        async || {
            let polled: i64 = sqlx::query_scalar(
            "select count(*) from shipments where last_polled_at is not null and poll_slot is null",
        )
        .fetch_one(app.db.store().pool())
        .await
        .unwrap();
            (polled == 300).then_some(())
        },
    )
    .await;
    // Give any duplicate a chance to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = per_tracking_number(&courier.requests());
    assert_eq!(counts.len(), 300);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "polled more than once: {twice:?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shipment_without_a_scan_for_n_days_expires_through_the_normal_merge() {
    let courier = FakeCourier::start(|_, _| Answer::status(404)).await;
    // The workers' own schedulers are off: the test drives one with its own clock.
    let registered_at = Utc::now();
    let clock = Arc::new(ManualClock::new(registered_at));
    let mut app = TestApp::builder()
        .config("[ingress]\nbody_limit_bytes = 262144")
        .config(&starshipit_source("ssi", &courier.url, "poll_only"))
        .config(&polling_toml(""))
        .config("[polling]\nexpire_after_days = 30")
        .scheduler(clock.clone())
        .start()
        .await;
    let mut scheduler = app.scheduler.take().expect("a scheduler");
    let tn = "IDLE00000001";
    app.register_ok(&json!({"source": "ssi", "tracking_number": tn}))
        .await;
    app.wait_for_shipment_within("starshipit", tn, Duration::from_secs(10), |_| true)
        .await;
    let report = scheduler.tick().await.unwrap();
    assert_eq!(report.adopted, 1);

    // 29 days later: still polled (a job is published, nobody consumes it here).
    clock.set(registered_at + chrono::Duration::days(29));
    let report = scheduler.tick().await.unwrap();
    assert_eq!(
        (report.claimed, report.published, report.expired),
        (1, 1, 0)
    );

    // After 30 days without any scan (the lease of that claim run out): expired.
    clock.set(registered_at + chrono::Duration::days(31));
    let report = scheduler.tick().await.unwrap();
    assert_eq!((report.claimed, report.expired), (1, 1));
    let shipment = app
        .wait_for_shipment_within("starshipit", tn, Duration::from_secs(5), |s| {
            s["status"] == "Expired"
        })
        .await;
    let history = shipment["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["origin"], "system");
    assert_eq!(history[0]["raw_status"]["code"], "waybill.expired");
    let outbox: i64 = sqlx::query_scalar(
        "select count(*) from outbox where tracking_number = $1 and new_status = 'Expired'",
    )
    .bind(tn)
    .fetch_one(app.db.store().pool())
    .await
    .unwrap();
    assert_eq!(outbox, 1, "downstream hears of it like any change");
    let schedule = app.schedule("starshipit", tn).await;
    assert_eq!(
        (schedule.state, schedule.next_poll_at),
        (Some(waybill_store::polling::PollState::Done), None)
    );
    // Nothing is due any more, however far the clock goes.
    clock.set(registered_at + chrono::Duration::days(400));
    assert_eq!(scheduler.tick().await.unwrap().claimed, 0);
    app.shutdown().await;
}
