//! Bad input gets a clear answer and leaves no damage.

use serde_json::Value;

use super::helpers::*;

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("JSON error body");
    assert!(
        body["error"].is_string() && body["message"].is_string(),
        "error shape: {body}"
    );
    (status, body)
}

#[tokio::test]
async fn bad_signature_is_401_and_nothing_is_published() {
    // No worker: whatever the ingress published stays in the queue where we can count it.
    let app = app().workers(0).start().await;
    let body = fixture("starshipit", "support-article.json");
    let (status, error) = error_of(
        app.post_webhook(
            "starshipit",
            &body,
            &[("x-starshipit-signature", hmac_hex("wrong-secret", &body))],
        )
        .await,
    )
    .await;
    assert_eq!(status, 401, "{error}");
    let (status, _) = error_of(app.post_webhook("starshipit", &body, &[]).await).await;
    assert_eq!(status, 401);
    let (status, _) = error_of(
        app.post_webhook(
            "clickpost",
            &fixture("clickpost", "all-status-out-for-delivery.json"),
            &[("webhook_key", "nope".into())],
        )
        .await,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        app.queued().await,
        0,
        "a rejected webhook must not be published"
    );
    // The control: a good one is published.
    assert_eq!(app.post_signed("starshipit", &body).await.status(), 200);
    assert_eq!(app.queued().await, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_unknown_and_oversized_requests_get_clear_errors() {
    let app = app().workers(0).start().await;
    for body in [
        &b"{\"order_number\": "[..],
        b"not json",
        b"[]",
        b"{\"tracking_number\": 5}",
    ] {
        let (status, error) = error_of(app.post_signed("starshipit", body).await).await;
        assert_eq!(status, 400, "{}: {error}", String::from_utf8_lossy(body));
    }
    let (status, error) = error_of(app.post_signed("direct", &[0xff, 0xfe, b'{']).await).await;
    assert_eq!(status, 400, "{error}");

    let (status, error) = error_of(app.post_webhook("nobody", b"{}", &[]).await).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"], "unknown_source");

    let huge = vec![b' '; 70_000];
    let (status, error) = error_of(app.post_signed("starshipit", &huge).await).await;
    assert_eq!(status, 413, "{error}");
    assert_eq!(app.queued().await, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_503_with_retry_after() {
    let app = app()
        .workers(0)
        .ingress_amqp_url("amqp://guest:guest@127.0.0.1:1/%2f")
        .start()
        .await;
    let body = fixture("starshipit", "support-article.json");
    let response = app.post_signed("starshipit", &body).await;
    assert!(response.headers().contains_key("retry-after"));
    let (status, error) = error_of(response).await;
    assert_eq!(status, 503, "{error}");
    let ready = app
        .http
        .get(format!("{}/readyz", app.ingress))
        .send()
        .await
        .expect("ingress up");
    assert_eq!(ready.status(), 503);
    app.shutdown().await;
}
