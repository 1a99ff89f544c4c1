//! Settings for one polled source, shared by the scheduler test and the scheduler benchmark
//! (which includes this file with `#[path]`).

use waybill_config::Settings;

/// One `starshipit` source `source` whose poll endpoint refuses connections (nothing consumes
/// the jobs), on its own queue `prefix` and database, polled at `rate_limit_per_second` with
/// the keys `polling` in `[polling]`.
pub fn polled_source_settings(
    amqp: &str,
    prefix: &str,
    database_url: &str,
    max_connections: u32,
    source: &str,
    rate_limit_per_second: u64,
    polling: &str,
) -> anyhow::Result<Settings> {
    Ok(Settings::from_toml_str(&format!(
        r#"
        auth = {{ mode = "none" }}
        [bus]
        url = "{amqp}"
        prefix = "{prefix}"
        [database]
        url = "{database_url}"
        max_connections = {max_connections}
        [[sources]]
        id = "{source}"
        profile = "starshipit"
        credentials = {{ api_key = "k", subscription_key = "s" }}
        poll_base_url = "http://127.0.0.1:9"
        [polling]
        {polling}
        [polling.sources.{source}]
        rate_limit_per_second = {rate_limit_per_second}
        "#
    ))?)
}
