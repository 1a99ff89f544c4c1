//! A server process's start, the same for both servers: its configuration, its telemetry and its
//! publisher's configuration.

use waybill_bus::{PublisherConfig, Topology};
use waybill_config::{ExposeSecret, Settings};
use waybill_telemetry::{LogFormat, TelemetryConfig, TelemetryGuard};

/// Loads the configuration (see [`Settings::load_or_exit`]) and starts telemetry as
/// `[log] format` says, at `info` unless `RUST_LOG` says otherwise. Keep the guard until the
/// process ends.
pub fn start(service_name: &'static str) -> (Settings, TelemetryGuard) {
    let settings = Settings::load_or_exit(service_name);
    let telemetry = waybill_telemetry::init(&TelemetryConfig {
        service_name,
        format: match settings.log.format {
            waybill_config::LogFormat::Json => LogFormat::Json,
            waybill_config::LogFormat::Pretty => LogFormat::Pretty,
        },
        default_filter: "info".to_owned(),
        traces_filter: settings.telemetry.traces_filter.clone(),
    });
    (settings, telemetry)
}

/// The configured topology, and the defaults of a publisher to it named `connection_name`.
pub fn publisher_config(settings: &Settings, connection_name: &str) -> (Topology, PublisherConfig) {
    let topology =
        Topology::new(&settings.bus.prefix).with_delivery_limit(settings.bus.delivery_limit);
    let config = PublisherConfig::new(
        settings.bus.url.expose_secret(),
        connection_name,
        topology.clone(),
    );
    (topology, config)
}
