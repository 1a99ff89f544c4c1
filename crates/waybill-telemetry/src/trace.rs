//! Distributed tracing: the OTLP exporter, and W3C `traceparent` propagation through HTTP
//! headers and AMQP message headers, so one trace spans courier request → publish → merge →
//! topic publish → HTTP delivery.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (HTTP and AMQP) carrying the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A tracer provider exporting over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; `None` otherwise, or when the exporter cannot
/// be built (reported on stderr: logging is not up yet).
pub fn provider_from_env(service_name: &'static str) -> Option<SdkTracerProvider> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    if !configured {
        return None;
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("tracing export disabled: cannot build the OTLP exporter: {error}");
            return None;
        }
    };
    let service_name =
        std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service_name.to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name)
        .build();
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// Installs the W3C trace-context propagator globally.
pub fn install_propagator() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// The `traceparent` of `span`, if it is being traced (an exporter is configured and the span
/// is sampled or recorded).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The `traceparent` of the current span, if it is being traced.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

fn extract(traceparent: &str) -> Option<opentelemetry::Context> {
    let carrier: HashMap<String, String> =
        HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    context.span().span_context().is_valid().then_some(context)
}

/// Makes `span` a child of the remote span `traceparent` (ignored when it does not parse).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if let Some(context) = extract(traceparent) {
        let _ = span.set_parent(context);
    }
}

/// Adds a link from `span` to the remote span `traceparent`: how a batch span records the
/// messages it merged, each with its own trace (ignored when it does not parse).
pub fn add_link(span: &tracing::Span, traceparent: &str) {
    if let Some(context) = extract(traceparent) {
        span.add_link(context.span().span_context().clone());
    }
}

/// Whether `value` is a well-formed W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && [2, 32, 16, 2]
            .iter()
            .zip(&parts)
            .all(|(len, part)| part.len() == *len && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation() {
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent("00-xyz-00f067aa0ba902b7-01"));
        assert!(!is_valid_traceparent(""));
    }

    #[test]
    fn an_untraced_span_has_no_traceparent() {
        assert_eq!(traceparent_of(&tracing::Span::none()), None);
        assert!(extract("garbage").is_none());
        assert!(extract("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
    }
}
