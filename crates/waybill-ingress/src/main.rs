//! `waybill-ingress`: parse config, init telemetry, serve, flush.

use tokio::net::TcpListener;
use waybill_config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("waybill-ingress: {error}");
            std::process::exit(2);
        }
    };
    let _telemetry = waybill_telemetry::init(&waybill_telemetry::TelemetryConfig {
        service_name: "waybill-ingress",
        format: match settings.log.format {
            waybill_config::LogFormat::Json => waybill_telemetry::LogFormat::Json,
            waybill_config::LogFormat::Pretty => waybill_telemetry::LogFormat::Pretty,
        },
        default_filter: "info".to_owned(),
        traces_filter: settings.telemetry.traces_filter.clone(),
    });
    let shutdown = waybill_telemetry::shutdown_on_signal();
    let state = waybill_ingress::AppState::build(&settings, shutdown.clone()).await?;
    let listener = TcpListener::bind(settings.ingress.addr).await?;
    tracing::info!(addr = %settings.ingress.addr, sources = settings.sources.len(), "waybill-ingress listening");
    waybill_ingress::run(listener, state, shutdown).await?;
    Ok(())
}
