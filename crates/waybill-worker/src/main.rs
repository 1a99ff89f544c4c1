//! `waybill-worker`: parse config, init telemetry, consume and serve, flush.

use tokio::net::TcpListener;
use waybill_config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("waybill-worker: {error}");
            std::process::exit(2);
        }
    };
    let _telemetry = waybill_telemetry::init(&waybill_telemetry::TelemetryConfig {
        service_name: "waybill-worker",
        format: match settings.log.format {
            waybill_config::LogFormat::Json => waybill_telemetry::LogFormat::Json,
            waybill_config::LogFormat::Pretty => waybill_telemetry::LogFormat::Pretty,
        },
        default_filter: "info".to_owned(),
        traces_filter: settings.telemetry.traces_filter.clone(),
    });
    let shutdown = waybill_telemetry::shutdown_on_signal();
    let addr = settings.worker.addr;
    let worker = waybill_worker::Worker::build(settings, shutdown.clone()).await?;
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "waybill-worker running");
    worker.run(listener, shutdown).await
}
