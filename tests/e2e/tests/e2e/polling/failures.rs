//! Couriers that push back: 429 with `Retry-After`, a courier that is down while another keeps
//! flowing, refused credentials, and answers that cannot be mapped.

use std::time::Duration;

use serde_json::json;
use waybill_config::ExposeSecret;

use super::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_honoured_for_its_retry_after_and_is_not_a_failure() {
    let courier = FakeCourier::start(|uri, earlier| {
        if earlier == 0 {
            Answer {
                retry_after: Some("3".to_owned()),
                ..Answer::status(429)
            }
        } else {
            Answer::ok(starshipit_poll(&tracking_number_in(uri)))
        }
    })
    .await;
    let app = spawn_ssi_app(1, &courier, "poll_only", "").await;
    let tn = "RL0000000001";
    app.register_ok(&json!({"source": "ssi", "tracking_number": tn}))
        .await;
    let first = eventually(
        Duration::from_secs(15),
        "the expected poll outcome",
        async || courier.requests().first().cloned(),
    )
    .await;
    // Rescheduled for the Retry-After, without counting a failure.
    let schedule = app
        .wait_for_schedule("starshipit", tn, Duration::from_secs(5), |schedule| {
            schedule.slot.is_none()
        })
        .await;
    assert_eq!(schedule.poll_failures, 0);
    app.wait_for_shipment_within("starshipit", tn, Duration::from_secs(20), |s| {
        s["status"] == "InTransit"
    })
    .await;
    let requests = courier.requests();
    assert_eq!(requests.len(), 2, "one refused, one answered");
    let waited = requests[1].at.duration_since(first.at);
    assert!(waited >= Duration::from_secs(3), "retried after {waited:?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_courier_that_is_down_is_retried_with_backoff_while_others_keep_flowing() {
    let healthy = starshipit_courier().await;
    let down = FakeCourier::start(|_, _| Answer::status(503)).await;
    let app = spawn_poll_only_app(&[("up", &healthy), ("down", &down)]).await;
    let mut registrations = vec![json!({"source": "down", "tracking_number": "DOWN00000001"})];
    for n in 0..5 {
        registrations.push(json!({"source": "up", "tracking_number": format!("UP000000000{n}")}));
    }
    app.register_ok(&json!(registrations)).await;

    for n in 0..5 {
        app.wait_for_shipment_within(
            "starshipit",
            &format!("UP000000000{n}"),
            Duration::from_secs(20),
            |s| s["status"] == "InTransit",
        )
        .await;
    }
    // Back-off of 1 s, 2 s, 4 s (each between half and all of it): a few attempts, not a storm.
    let schedule = app
        .wait_for_schedule(
            "starshipit",
            "DOWN00000001",
            Duration::from_secs(20),
            |schedule| schedule.poll_failures >= 3,
        )
        .await;
    let attempts = down.requests();
    assert!(
        (3..=5).contains(&attempts.len()),
        "{} attempts for {} failures",
        attempts.len(),
        schedule.poll_failures
    );
    for pair in attempts.windows(2) {
        assert!(pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(450));
    }
    // It comes back: the next attempt succeeds and the failures are forgotten.
    down.respond(|uri, _| Answer::ok(starshipit_poll(&tracking_number_in(uri))));
    app.wait_for_shipment_within("starshipit", "DOWN00000001", Duration::from_secs(20), |s| {
        s["status"] == "InTransit"
    })
    .await;
    let schedule = app
        .wait_for_schedule(
            "starshipit",
            "DOWN00000001",
            Duration::from_secs(5),
            |schedule| schedule.poll_failures == 0,
        )
        .await;
    assert!(schedule.next_poll_at.is_some());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_pause_the_account_and_bad_answers_are_dead_lettered() {
    let refusing = FakeCourier::start(|_, _| Answer::status(401)).await;
    let garbled = FakeCourier::start(|_, _| Answer::ok(b"<html>maintenance</html>".to_vec())).await;
    let app = spawn_poll_only_app(&[("refusing", &refusing), ("garbled", &garbled)]).await;
    let mut registrations = Vec::new();
    for n in 0..3 {
        registrations
            .push(json!({"source": "refusing", "tracking_number": format!("AUTH0000000{n}")}));
    }
    registrations.push(json!({"source": "garbled", "tracking_number": "GARBLED00001"}));
    app.register_ok(&json!(registrations)).await;

    // The first 401 pauses the account: the other shipments are put off without a request.
    eventually(
        Duration::from_secs(20),
        "the expected poll outcome",
        async || {
            let mut done = 0;
            for n in 0..3 {
                let Some(schedule) = app
                    .maybe_schedule("starshipit", &format!("AUTH0000000{n}"))
                    .await
                else {
                    continue;
                };
                if schedule.slot.is_none()
                    && schedule
                        .next_poll_at
                        .is_some_and(|at| at > chrono::Utc::now() + chrono::Duration::minutes(30))
                {
                    done += 1;
                }
            }
            (done == 3).then_some(())
        },
    )
    .await;
    // Requests already in flight when the first 401 came back (at most the bucket's burst of
    // 2 for Starshipit) may still go out; nothing after that.
    let sent = refusing.requests().len();
    assert!(
        (1..=2).contains(&sent),
        "{sent} requests with refused credentials"
    );
    // Time must pass to show that no further request goes out.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        refusing.requests().len(),
        sent,
        "no hammering with refused credentials"
    );

    // An answer that cannot be mapped goes to the dead letters with its reason.
    let dead_queue = app.topology().dead_queue();
    eventually(
        Duration::from_secs(20),
        "the expected poll outcome",
        async || (app.queue_depth(&dead_queue).await >= 1).then_some(()),
    )
    .await;
    let connection =
        waybill_bus::BusConnection::connect(app.settings.bus.url.expose_secret(), "test-dead")
            .await
            .unwrap();
    let dead = waybill_bus::dead::DeadLetters::open(&connection, &app.topology())
        .await
        .unwrap();
    let message = dead.get().await.unwrap().expect("a dead letter");
    let reason = message.reason.clone().unwrap_or_default();
    assert!(reason.contains("could not be mapped"), "{reason}");
    assert_eq!(message.original_queue, Some(app.topology().polls_queue()));
    dead.close().await;
    let _ = connection.close().await;
    let schedule = app.schedule("starshipit", "GARBLED00001").await;
    assert!(schedule.poll_failures >= 1);
    app.shutdown().await;
}
