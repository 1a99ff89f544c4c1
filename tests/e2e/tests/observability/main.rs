//! Metrics and traces of a real pipeline run. Its own test binary: the metrics recorder and the
//! tracing subscriber are process-wide, so no other test may add to them.

#[path = "../pipeline/helpers.rs"]
#[allow(dead_code)]
mod helpers;

#[path = "../polling/helpers.rs"]
#[allow(dead_code)]
mod polling_helpers;

mod metrics;

/// Installs the recorder and the subscriber before any test sends traffic, and runs the tests
/// of this binary one at a time: they read process-wide counters and spans.
async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _ = traces::exporter();
    SERIAL.lock().await
}
mod traces;
