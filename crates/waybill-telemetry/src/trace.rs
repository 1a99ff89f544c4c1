//! Distributed tracing: the OTLP exporter, and W3C `traceparent` propagation through HTTP
//! headers and AMQP message headers, so one trace spans courier request → publish → merge →
//! topic publish → HTTP delivery.
//!
//! Only real work is traced. A loop looks for work under [`untraced`] (its queries make no
//! exported span) in a [`Pass`] whose span is exported only if the look found something, linked
//! to the traces of the changes it moves; an idle worker exports nothing.

mod sampler;

use std::collections::HashMap;
use std::future::Future;

use opentelemetry::context::{FutureExt as _, WithContext};
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
            .with_sampler(sampler::from_env())
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

/// Runs `future` with trace export off: the spans it opens (the queries of a loop looking for
/// work, a health check's ping) are neither exported nor propagated, whatever the filters and
/// the sampler say. Spans it enters that were made outside keep their own context.
pub fn untraced<F: Future>(future: F) -> WithContext<F> {
    future.with_context(opentelemetry::Context::new().with_telemetry_suppressed())
}

/// One pass of a loop that looks for work (a relay round, a scheduler tick, a delivery claim).
/// Its span is opened before the look, so that it starts when the pass does, but it is entered
/// only when the look [`found`](Pass::found) work; a pass dropped without finding any is
/// discarded unstarted, so an idle loop exports nothing. Look under [`untraced`].
#[must_use = "a pass is discarded when dropped"]
pub struct Pass {
    span: Option<tracing::Span>,
}

impl Pass {
    /// Opens a pass with its span (a root: `info_span!(parent: None, …)`), not entered.
    pub fn open(span: tracing::Span) -> Pass {
        Pass { span: Some(span) }
    }

    /// The pass found work: its span, linked to the traces of the changes it moves (their
    /// `traceparent`s; one pass serves many traces, so it links rather than adopts), to run
    /// the work in. The links are known before the span starts, so the sampler sees them.
    pub fn found<'a>(mut self, moved: impl IntoIterator<Item = &'a str>) -> tracing::Span {
        let span = self.span.take().unwrap_or_else(tracing::Span::none);
        for traceparent in moved {
            add_link(&span, traceparent);
        }
        span
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if let Some(span) = self.span.take() {
            // Never entered, so never started: a suppressed parent keeps it from ever being.
            let _ = span.set_parent(opentelemetry::Context::new().with_telemetry_suppressed());
        }
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
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
    use tracing::Instrument as _;

    use super::*;

    #[test]
    fn traceparent_validation() {
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent("00-xyz-00f067aa0ba902b7-01"));
        assert!(!is_valid_traceparent(""));
    }

    /// Runs `scenario` under a subscriber exporting, as a process does, through the traces
    /// filter `filter`; returns what was exported.
    async fn exported<F: Future<Output = ()>>(
        filter: Option<&str>,
        scenario: impl FnOnce() -> F,
    ) -> Vec<SpanData> {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_filter(crate::traces_filter(filter));
        let subscriber = tracing_subscriber::registry().with(layer);
        let guard = tracing::subscriber::set_default(subscriber);
        scenario().await;
        drop(guard);
        let _ = provider.force_flush();
        exporter.get_finished_spans().unwrap_or_default()
    }

    fn names(spans: &[SpanData]) -> Vec<&str> {
        let mut names: Vec<&str> = spans.iter().map(|span| span.name.as_ref()).collect();
        names.sort_unstable();
        names
    }

    const CHANGE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[tokio::test]
    async fn an_idle_pass_exports_nothing_and_a_busy_one_links_to_its_changes() {
        let spans = exported(None, || async {
            for found in [false, true] {
                let pass = Pass::open(tracing::info_span!(parent: None, "pass", found));
                untraced(async {
                    let _query = tracing::info_span!("claim").entered();
                    tracing::info!("looked");
                })
                .await;
                if !found {
                    continue;
                }
                let span = pass.found([CHANGE]);
                async {
                    let _write = tracing::info_span!("write").entered();
                }
                .instrument(span)
                .await;
            }
        })
        .await;
        assert_eq!(names(&spans), ["pass", "write"]);
        let pass = spans.iter().find(|span| span.name == "pass").expect("pass");
        assert_eq!(pass.links.len(), 1);
        assert_eq!(
            pass.links[0].span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let write = spans
            .iter()
            .find(|span| span.name == "write")
            .expect("write");
        assert_eq!(write.parent_span_id, pass.span_context.span_id());
    }

    #[tokio::test]
    async fn untraced_work_neither_exports_nor_propagates() {
        let spans = exported(None, || async {
            let seen = untraced(async {
                let span = tracing::info_span!("health_check");
                traceparent_of(&span)
            })
            .await;
            assert_eq!(seen, None);
        })
        .await;
        assert!(spans.is_empty(), "{:?}", names(&spans));
    }

    #[tokio::test]
    async fn the_traces_filter_chooses_the_spans() {
        let scenario = || async {
            let _info = tracing::info_span!("ours").entered();
            let _debug = tracing::debug_span!("detail").entered();
            let _library = tracing::info_span!(target: "lapin::channel", "theirs").entered();
        };
        assert_eq!(names(&exported(None, scenario).await), ["ours"]);
        assert_eq!(
            names(&exported(Some("waybill=debug,lapin=info"), scenario).await),
            ["detail", "ours", "theirs"]
        );
        assert_eq!(names(&exported(Some("  "), scenario).await), ["ours"]);
    }

    #[test]
    fn an_untraced_span_has_no_traceparent() {
        assert_eq!(traceparent_of(&tracing::Span::none()), None);
        assert!(extract("garbage").is_none());
        assert!(extract("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
    }
}
