//! One webhook's trace: the courier's span → the ingress request → the publish → the worker's
//! merge (the batch span linking to the message it merged) → the change's publish on
//! `waybill.events` and its HTTP delivery to a subscriber, both carrying `traceparent` on.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

use super::helpers::*;

/// The process's in-memory exporter, installed once with the tracing subscriber.
pub fn exporter() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
    static INSTALLED: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let guard = waybill_telemetry::init_with(
            &waybill_telemetry::TelemetryConfig {
                service_name: "waybill-e2e",
                format: waybill_telemetry::LogFormat::Pretty,
                default_filter: "warn,waybill=info".to_owned(),
                traces_filter: None,
            },
            Some(provider.clone()),
        );
        // The subscriber lives as long as the process; the guard only flushes on drop.
        std::mem::forget(guard);
        (exporter, provider)
    })
}

fn find<'a>(spans: &'a [SpanData], name: &str, trace: TraceId) -> Option<&'a SpanData> {
    spans
        .iter()
        .find(|span| span.name == name && span.span_context.trace_id() == trace)
}

/// The finished spans once those named `awaited` in `trace` are in, or whatever has arrived when
/// `bound` passes (the checks that follow say what is missing).
async fn spans_within(bound: Duration, trace: TraceId, awaited: &[&str]) -> Vec<SpanData> {
    let (exporter, provider) = exporter();
    let mut spans = Vec::new();
    eventually_or(bound, async || {
        let _ = provider.force_flush();
        spans = exporter.get_finished_spans().expect("finished spans");
        awaited
            .iter()
            .all(|name| find(&spans, name, trace).is_some())
    })
    .await;
    spans
}

#[tokio::test]
async fn one_webhook_is_one_trace_from_courier_to_downstream() {
    let _serial = super::exclusive().await;
    // Installed before anything runs, so that every span is recorded.
    exporter();
    let app = TestApp::builder()
        .couriers()
        .config("[fanout]\nallowed_hosts = [\"127.0.0.1\"]\nrelay_interval_ms = 20\ndelivery_interval_ms = 50\n")
        .start()
        .await;
    let receiver = Receiver::start_with_default(vec![], Reply::Status(204)).await;
    super::subscribe(&app, &receiver.url("/hook")).await;
    let topic = app.bind_events("#").await;

    let courier_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let courier_span = "00f067aa0ba902b7";
    let body = direct_event("TRACE1", "InTransit", "2026-06-02T10:00:00Z", "Hub");
    let mut headers = sign("direct", &body);
    headers.push((
        "traceparent",
        format!("00-{courier_trace}-{courier_span}-01"),
    ));
    assert_eq!(
        app.post_webhook("direct", &body, &headers).await.status(),
        200
    );
    app.wait_for_shipment("acme", "TRACE1", |_| true).await;

    let trace = TraceId::from_hex(courier_trace).expect("trace id");
    let spans = spans_within(
        Duration::from_secs(10),
        trace,
        &["waybill.merge", "waybill.event_publish", "waybill.deliver"],
    )
    .await;
    let request = find(&spans, "waybill.webhook", trace)
        .expect("the ingress span joined the courier's trace");
    assert_eq!(
        request.parent_span_id,
        SpanId::from_hex(courier_span).expect("span id")
    );
    let publish = find(&spans, "waybill.publish", trace).expect("publish span in the trace");
    assert_eq!(publish.parent_span_id, request.span_context.span_id());
    let merge = find(&spans, "waybill.merge", trace).expect("the worker's merge joined the trace");
    assert_eq!(merge.parent_span_id, publish.span_context.span_id());
    let batch = spans
        .iter()
        .find(|span| {
            span.name == "waybill.merge_batch"
                && span
                    .links
                    .iter()
                    .any(|link| link.span_context.span_id() == publish.span_context.span_id())
        })
        .expect("a batch span links to the message's publish span");
    assert_ne!(
        batch.span_context.trace_id(),
        trace,
        "a batch has its own trace and links to its messages"
    );

    // Downstream: the topic publish and the HTTP delivery are children of the merge.
    let event_publish = find(&spans, "waybill.event_publish", trace)
        .expect("the change's publish on waybill.events joined the trace");
    assert_eq!(event_publish.parent_span_id, merge.span_context.span_id());
    let deliver =
        find(&spans, "waybill.deliver", trace).expect("the HTTP delivery joined the trace");
    assert_eq!(deliver.parent_span_id, merge.span_context.span_id());

    // And they carried it on the wire: the message's header names the publish span, the
    // request's header the delivery span.
    let first_message = eventually(
        Duration::from_secs(10),
        "a message on the topic",
        async || topic.drain().await.expect("basic.get").into_iter().next(),
    )
    .await;
    let on_topic = first_message
        .headers
        .get("traceparent")
        .cloned()
        .expect("a message with traceparent on the topic");
    assert_eq!(
        on_topic,
        format!(
            "00-{courier_trace}-{}-01",
            event_publish.span_context.span_id()
        )
    );
    let first_delivery = eventually(Duration::from_secs(10), "a delivery", async || {
        receiver.received().first().cloned()
    })
    .await;
    let on_http = Some(first_delivery.header("traceparent"))
        .filter(|value| !value.is_empty())
        .expect("a delivery with traceparent")
        .to_owned();
    assert_eq!(
        on_http,
        format!("00-{courier_trace}-{}-01", deliver.span_context.span_id())
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_poll_is_a_trace_that_reaches_the_courier() {
    let _serial = super::exclusive().await;
    // Installed before anything runs, so that every span is recorded.
    exporter();
    let courier = waybill_e2e::FakeCourier::start(|uri, _| {
        waybill_e2e::Answer::ok(starshipit_poll(&tracking_number_in(uri)))
    })
    .await;
    let app = TestApp::builder()
        .config("[ingress]\nbody_limit_bytes = 262144")
        .config(&starshipit_source("ssi", &courier.url, "poll_only"))
        .config(&polling_toml(""))
        .start()
        .await;
    app.register_ok(&serde_json::json!({"source": "ssi", "tracking_number": "TRACEPOLL1"}))
        .await;
    app.wait_for_shipment("starshipit", "TRACEPOLL1", |s| s["status"] == "InTransit")
        .await;
    let requests = courier.requests();
    let traceparent = requests[0]
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("the poll request carries traceparent")
        .to_owned();
    let mut parts = traceparent.split('-').skip(1);
    let (trace, span) = (
        TraceId::from_hex(parts.next().expect("trace id")).expect("hex trace id"),
        SpanId::from_hex(parts.next().expect("span id")).expect("hex span id"),
    );
    let spans = spans_within(
        Duration::from_secs(5),
        trace,
        &["waybill.poll", "waybill.poll_job"],
    )
    .await;
    let request = find(&spans, "waybill.poll_request", trace)
        .expect("the poll request's span is in the request's trace");
    assert_eq!(
        request.span_context.span_id(),
        span,
        "the courier saw the poll request's span"
    );
    let poll = find(&spans, "waybill.poll", trace).expect("the poll span is the request's trace");
    assert_eq!(request.parent_span_id, poll.span_context.span_id());
    let job =
        find(&spans, "waybill.poll_job", trace).expect("the trace starts at the scheduler's job");
    assert_eq!(poll.parent_span_id, job.span_context.span_id());
    app.shutdown().await;
}
