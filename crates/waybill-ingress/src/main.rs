//! `waybill-ingress`: parse config, init telemetry, serve, flush.

use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (settings, _telemetry) = waybill_http::process::start("waybill-ingress");
    let shutdown = waybill_telemetry::shutdown_on_signal();
    let state = waybill_ingress::AppState::build(&settings, shutdown.clone()).await?;
    let listener = TcpListener::bind(settings.ingress.addr).await?;
    tracing::info!(addr = %settings.ingress.addr, sources = settings.sources.len(), "waybill-ingress listening");
    waybill_ingress::run(listener, state, shutdown).await?;
    Ok(())
}
