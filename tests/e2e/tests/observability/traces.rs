//! One webhook's trace: the courier's span → the ingress request → the publish → the worker's
//! merge, with the batch span linking to the message it merged.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

use crate::helpers::*;

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

#[tokio::test]
async fn one_webhook_is_one_trace_from_courier_to_merge() {
    let _serial = crate::exclusive().await;
    let (exporter, provider) = exporter();
    let app = spawn_app().await;
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
    let mut spans = Vec::new();
    for _ in 0..100 {
        let _ = provider.force_flush();
        spans = exporter.get_finished_spans().expect("finished spans");
        if find(&spans, "waybill.merge", trace).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    app.shutdown().await;
}
