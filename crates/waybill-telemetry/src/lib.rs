//! Logging, metrics and trace export, initialised once per process.
//!
//! Traces go to an OTLP collector when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//! (`OTEL_SERVICE_NAME` and `OTEL_TRACES_SAMPLER*` are honoured too); otherwise no exporter runs
//! and spans cost what plain `tracing` spans cost.
//!
//! Logs and traces are filtered apart: `RUST_LOG` chooses the log lines, the traces filter
//! ([`TelemetryConfig::traces_filter`], by default [`DEFAULT_TRACES_FILTER`]) chooses the spans
//! exported, so turning logs down to `warn` does not turn tracing off.
//!
//! **Invariant:** telemetry never carries secrets, signatures or payloads; metric labels come
//! from closed sets (enums, configured source ids), never from request input; a log line is
//! one event, and a request-derived value in it is data, never markup ([`escape`]). Logs go to
//! stderr, whatever `RUST_LOG` says: stdout is a command's result.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub mod escape;
pub mod trace;

use escape::{EscapeStyle, EscapedFields, Escaping};

/// Where log lines go and how they look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Silences the one library target known to log message bodies.
const RETURNED_MESSAGES_OFF: &str = "lapin::returned_messages=off";

/// Which spans are exported when no traces filter is configured: Waybill's own, from `info`.
pub const DEFAULT_TRACES_FILTER: &str = "waybill=info";

/// What [`init`] needs.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The service name reported in logs (`waybill-ingress`, `waybill-worker`).
    pub service_name: &'static str,
    /// Output format.
    pub format: LogFormat,
    /// The default filter when `RUST_LOG` is unset.
    pub default_filter: String,
    /// Which spans are exported (`[telemetry] traces_filter`, env `OTEL_TRACES_FILTER`), in
    /// `RUST_LOG` syntax; `None` or blank: [`DEFAULT_TRACES_FILTER`]. Independent of the logs.
    pub traces_filter: Option<String>,
}

impl TelemetryConfig {
    /// A command-line tool's telemetry: human-readable logs of warnings and errors (unless
    /// `RUST_LOG` says otherwise), spans exported as `traces_filter` says.
    pub fn command_line(
        service_name: &'static str,
        traces_filter: Option<String>,
    ) -> TelemetryConfig {
        TelemetryConfig {
            service_name,
            format: LogFormat::Pretty,
            default_filter: "warn".to_owned(),
            traces_filter,
        }
    }
}

/// Keeps telemetry alive; dropping it flushes what is buffered (spans not yet exported).
#[must_use = "dropping the guard stops telemetry export"]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global tracing subscriber — log lines filtered by `RUST_LOG` (defaulting to
/// `config.default_filter`), exported spans by the traces filter — and the Prometheus recorder.
/// Safe to call more than once: later calls leave the first subscriber in place.
pub fn init(config: &TelemetryConfig) -> TelemetryGuard {
    let provider = trace::provider_from_env(config.service_name);
    init_with(config, provider)
}

/// Like [`init`], exporting spans through `provider` (tests pass one with an in-memory
/// exporter); `None` exports nothing.
pub fn init_with(
    config: &TelemetryConfig,
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
) -> TelemetryGuard {
    let otel = provider.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("waybill"))
            .with_filter(traces_filter(config.traces_filter.as_deref()))
    });
    // Colours only for a person at a terminal: in a file or a collector they are raw escape
    // sequences.
    let ansi = std::io::stderr().is_terminal();
    let logs = log_layer(config.format, std::io::stderr, ansi).with_filter(log_filter(config));
    let _already_set = tracing_subscriber::registry()
        .with(otel)
        .with(logs)
        .try_init();
    trace::install_propagator();
    metrics_handle();
    metrics::gauge!("waybill_build_info", "service" => config.service_name, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    TelemetryGuard { provider }
}

/// The log output of `format`, written to `writer`: one line per event, request-derived values
/// escaped and (in the human-readable format) quoted — see [`escape`]. With `ansi` the
/// human-readable format is coloured, and only its fields are escaped (the colours are escape
/// sequences themselves).
pub fn log_layer<S, W>(
    format: LogFormat,
    writer: W,
    ansi: bool,
) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(Escaping::new(writer, EscapeStyle::Json))
            .boxed(),
        LogFormat::Pretty if ansi => tracing_subscriber::fmt::layer()
            .fmt_fields(EscapedFields)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .with_writer(Escaping::new(writer, EscapeStyle::Text))
            .boxed(),
    }
}

/// The log lines' filter: `RUST_LOG`, else `config.default_filter`.
fn log_filter(config: &TelemetryConfig) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.default_filter.clone()));
    without_message_bodies(filter)
}

/// The exported spans' filter: `configured` (the configuration checked its syntax at load), else
/// [`DEFAULT_TRACES_FILTER`].
fn traces_filter(configured: Option<&str>) -> EnvFilter {
    let filter = configured
        .filter(|directives| !directives.trim().is_empty())
        .and_then(|directives| EnvFilter::builder().parse(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_TRACES_FILTER));
    without_message_bodies(filter)
}

/// lapin logs every returned (unroutable) message at WARN *with its body*; bodies carry names
/// and addresses, so that target stays off in logs and traces whatever the filters say.
fn without_message_bodies(filter: EnvFilter) -> EnvFilter {
    match RETURNED_MESSAGES_OFF.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// How often buffered histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .map_or_else(
                |_| PrometheusBuilder::new().build_recorder(),
                |builder| builder.build_recorder(),
            );
        let handle = recorder.handle();
        // A second recorder (e.g. in a test binary that also installed one) keeps the first;
        // this handle then renders an empty registry, which tests notice.
        let _ = metrics::set_global_recorder(recorder);
        // Histogram samples wait in per-histogram buffers until they are folded into the
        // buckets, which rendering does, and upkeep. Without a scrape they would pile up
        // (several samples per request): fold them every few seconds whoever scrapes.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            });
        handle
    })
}

/// The current metrics in Prometheus text format, for a `/metrics` route.
pub fn render_metrics() -> String {
    metrics_handle().render()
}

/// A token cancelled on SIGTERM or Ctrl-C, for a binary's `main` to pass down.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
