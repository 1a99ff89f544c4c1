//! `[telemetry]`: which spans are exported when traces are on (`OTEL_EXPORTER_OTLP_ENDPOINT`).
//! Logs have their own filter (`RUST_LOG`); see "Logs, traces and sampling" in
//! `docs/operations.md`.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The environment variable that overrides `telemetry.traces_filter`.
pub const TRACES_FILTER_ENV: &str = "OTEL_TRACES_FILTER";

/// `[telemetry]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// Which spans are exported, in `RUST_LOG` syntax (e.g. `waybill=debug`); env
    /// `OTEL_TRACES_FILTER`. Unset or blank: Waybill's spans from `info`. Independent of
    /// `RUST_LOG`, which chooses log lines only.
    pub traces_filter: Option<String>,
}

/// The environment's `OTEL_TRACES_FILTER`, taken as written (a filter may hold characters the
/// other variables' value parsing would read as TOML).
pub(crate) fn traces_filter_from_env() -> Option<String> {
    std::env::var(TRACES_FILTER_ENV).ok()
}

pub(crate) fn validate(telemetry: &TelemetrySettings) -> Result<(), ConfigError> {
    let Some(directives) = telemetry
        .traces_filter
        .as_deref()
        .filter(|directives| !directives.trim().is_empty())
    else {
        return Ok(());
    };
    tracing_subscriber::EnvFilter::builder()
        .parse(directives)
        .map(|_| ())
        .map_err(|error| ConfigError::Rule {
            key: "telemetry.traces_filter".to_owned(),
            reason: format!("not a filter in RUST_LOG syntax: {error}"),
        })
}

#[cfg(test)]
mod tests {
    use crate::Settings;

    #[test]
    fn the_traces_filter_is_optional_and_checked() {
        let settings = Settings::from_toml_str("").unwrap();
        assert_eq!(settings.telemetry.traces_filter, None);
        let settings = Settings::from_toml_str(
            "[telemetry]\ntraces_filter = \"waybill=debug,tower_http=info\"",
        )
        .unwrap();
        assert_eq!(
            settings.telemetry.traces_filter.as_deref(),
            Some("waybill=debug,tower_http=info")
        );
        let error = Settings::from_toml_str("[telemetry]\ntraces_filter = \"waybill=loud\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("telemetry.traces_filter"), "{error}");
        let error = Settings::from_toml_str("[telemetry]\nfilter = \"info\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("filter"), "{error}");
    }
}
