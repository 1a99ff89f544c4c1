//! `waybill-worker`: parse config, init telemetry, consume and serve, flush.

use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (settings, _telemetry) = waybill_http::process::start("waybill-worker");
    let shutdown = waybill_telemetry::shutdown_on_signal();
    let addr = settings.worker.addr;
    let worker = waybill_worker::Worker::build(settings, shutdown.clone()).await?;
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "waybill-worker running");
    worker.run(listener, shutdown).await
}
