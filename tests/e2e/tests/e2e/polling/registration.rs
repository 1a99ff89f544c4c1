//! `POST /v1/shipments`: validation answers 400 with the reason and publishes nothing;
//! registering twice is harmless; registration applies parked events.

use std::time::Duration;

use serde_json::json;

use super::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_registrations_get_400_with_the_reason_and_nothing_is_queued() {
    let app = spawn_app_with(AppOptions {
        workers: 0,
        extra_toml: starshipit_source("ssi", "http://127.0.0.1:9", "hybrid")
            + &starshipit_source("ssi-2", "http://127.0.0.1:9", "webhook_only")
                .replace("ssi-key", "other-key")
            + r#"
            [[sources]]
            id = "other-tenant"
            profile = "aftership"
            tenant = "globex"
            "#
            + &polling_toml("max_registrations_per_request = 3"),
    })
    .await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not valid JSON"),
        (b"[]".to_vec(), "no shipment"),
        (b"42".to_vec(), "object or an array"),
        (
            json!(vec![json!({"source": "ssi", "tracking_number": "A1"}); 4]).to_string().into_bytes(),
            "at most 3",
        ),
        (json!({"source": "ssi"}).to_string().into_bytes(), "tracking_number"),
        (
            json!({"tracking_number": "A1"}).to_string().into_bytes(),
            "`carrier` or `source` is required",
        ),
        (
            json!({"carrier": "starshipit", "tracking_number": "A1"}).to_string().into_bytes(),
            "several sources",
        ),
        (
            json!({"source": "ssi", "tracking_number": "A#1"}).to_string().into_bytes(),
            "tracking_number",
        ),
        (
            json!({"source": "ssi", "tracking_number": "A1", "metadata": [1]}).to_string().into_bytes(),
            "metadata",
        ),
        (
            json!({"source": "ssi", "tracking_number": "A1", "colour": "red"}).to_string().into_bytes(),
            "colour",
        ),
        (
            json!([{"source": "ssi", "tracking_number": "A1"}, {"source": "ssi", "tracking_number": ""}])
                .to_string()
                .into_bytes(),
            "shipments[1]",
        ),
    ];
    for (body, expected) in cases {
        let response = app.register_raw(&body).await;
        let status = response.status().as_u16();
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, 400, "{}: {answer}", String::from_utf8_lossy(&body));
        assert_eq!(answer["error"], "bad_request");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{expected:?} not in {message:?}"
        );
    }
    // A source that does not exist, and one of another tenant, are the same 404: the answer
    // does not tell whether the id is taken.
    for source in ["nope", "other-tenant"] {
        let body = json!([{"source": "ssi", "tracking_number": "A1"}, {"source": source, "tracking_number": "A1"}]);
        let response = app.register_raw(body.to_string().as_bytes()).await;
        assert_eq!(response.status().as_u16(), 404, "{source}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "unknown_source", "{answer}");
        assert_eq!(
            answer["message"],
            format!("no source `{source}` is configured")
        );
    }
    assert_eq!(
        app.queue_depth(&app.topology().webhooks_queue()).await,
        0,
        "a rejected request publishes nothing, not even its valid items"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_twice_is_harmless_and_applies_parked_events() {
    let courier = FakeCourier::start(|_, _| Answer::status(404)).await;
    let app = spawn_app_with(AppOptions {
        workers: 1,
        extra_toml: starshipit_source("ssi", &courier.url, "hybrid").replace(
            "mode = \"hybrid\"",
            "mode = \"hybrid\"\nrequire_registration = true",
        ) + &polling_toml(""),
    })
    .await;
    // A webhook for a shipment nobody registered yet is parked.
    post_captured_webhook(&app).await;
    eventually(
        Duration::from_secs(10),
        "the expected poll outcome",
        async || {
            let parked: i64 = sqlx::query_scalar("select count(*) from unmatched_events")
                .fetch_one(app.db.store().pool())
                .await
                .unwrap();
            (parked == 1).then_some(())
        },
    )
    .await;

    let registration = json!({
        "source": "ssi",
        "tracking_number": "T01234567890",
        "order_number": "12345678",
        "metadata": {"channel": "web"}
    });
    for _ in 0..2 {
        let response = app.register(&registration).await;
        assert_eq!(response.status(), 202);
    }
    let shipment = app
        .wait_for_shipment_within("starshipit", "T01234567890", Duration::from_secs(10), |s| {
            s["status"] == "InTransit"
        })
        .await;
    assert_eq!(shipment["registered"], true);
    assert_eq!(shipment["order_number"], "12345678");
    assert_eq!(shipment["metadata"], json!({"channel": "web"}));
    assert_eq!(
        shipment["history"].as_array().unwrap().len(),
        1,
        "the parked event"
    );
    let shipments: i64 = sqlx::query_scalar("select count(*) from shipments")
        .fetch_one(app.db.store().pool())
        .await
        .unwrap();
    assert_eq!(shipments, 1);
    // Polling starts once, whatever the number of registrations (a 404 is not a failure).
    let schedule = app
        .wait_for_schedule(
            "starshipit",
            "T01234567890",
            Duration::from_secs(15),
            |schedule| schedule.slot.is_none() && schedule.next_poll_at.is_some(),
        )
        .await;
    assert_eq!(schedule.poll_failures, 0);
    assert!(courier.requests().len() <= 1);
    app.shutdown().await;
}
