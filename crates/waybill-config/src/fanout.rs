//! `[fanout]`: the outbox relay (publishing changes to `waybill.events`) and the HTTP webhook
//! deliveries to subscriptions (see `docs/subscriptions.md` for the rules these numbers feed).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// `[fanout]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutSettings {
    /// Run the outbox relay in this worker process: publish changes to `waybill.events` and
    /// create the deliveries of HTTP subscriptions.
    pub relay_enabled: bool,
    /// Run the delivery dispatcher in this worker process: send due HTTP deliveries.
    pub delivery_enabled: bool,
    /// Most outbox rows one relay round claims (for publishing, and again for the fan-out).
    pub relay_batch: u32,
    /// How often an idle relay looks for new outbox rows (a full batch is followed at once).
    pub relay_interval_ms: u64,
    /// How often an idle dispatcher looks for due deliveries.
    pub delivery_interval_ms: u64,
    /// The wait before each attempt of a delivery: the first entry before the first attempt,
    /// and so on; after the last attempt fails, the delivery is dead. Written with units
    /// (`ms`, `s`, `m`, `h`, `d`).
    pub retry_schedule: Vec<Period>,
    /// Every wait of the schedule is multiplied by a random factor in `1 ± retry_jitter`
    /// (0 to 0.5), so that deliveries that failed together do not retry together.
    pub retry_jitter: f64,
    /// A receiver's `Retry-After` postpones the next attempt to at least that time, but by no
    /// more than this.
    pub max_retry_after: Period,
    /// The deadline of one delivery request, connecting to reading the answer.
    pub request_timeout_ms: u64,
    /// The deadline for connecting to a receiver.
    pub connect_timeout_ms: u64,
    /// Delivery requests in flight at once per worker process.
    pub concurrency: usize,
    /// Delivery requests in flight at once per subscription per worker process, so that a slow
    /// receiver holds at most this many of the process's `concurrency`.
    pub concurrency_per_subscription: usize,
    /// Hosts (as written in subscription URLs: a name or an IP address) that may resolve to
    /// private, loopback, link-local or other internal addresses. Every other destination
    /// resolving to one is refused.
    pub allowed_hosts: Vec<String>,
    /// A subscription whose every attempt has failed for this long is disabled (`failing`).
    pub disable_after: Period,
    /// After `waybill subscriptions rotate-secret`, deliveries are signed with the old secret as
    /// well as the new one for this long.
    pub secret_rotation_window: Period,
    /// Outbox rows published and fanned out, and deliveries delivered, are deleted once they
    /// are this old (pending and dead deliveries are kept). `0s` keeps everything.
    pub retention: Period,
}

impl Default for FanoutSettings {
    fn default() -> Self {
        let hours = |h: u64| Period(Duration::from_secs(h * 3600));
        FanoutSettings {
            relay_enabled: true,
            delivery_enabled: true,
            relay_batch: 500,
            relay_interval_ms: 100,
            delivery_interval_ms: 200,
            // Standard Webhooks' example schedule, cut at 8 attempts (≈ 27.6 h).
            retry_schedule: vec![
                Period(Duration::ZERO),
                Period(Duration::from_secs(5)),
                Period(Duration::from_secs(5 * 60)),
                Period(Duration::from_secs(30 * 60)),
                hours(2),
                hours(5),
                hours(10),
                hours(10),
            ],
            retry_jitter: 0.2,
            max_retry_after: hours(1),
            request_timeout_ms: 15_000,
            connect_timeout_ms: 5_000,
            concurrency: 64,
            concurrency_per_subscription: 8,
            allowed_hosts: Vec::new(),
            disable_after: hours(5 * 24),
            secret_rotation_window: hours(24),
            retention: hours(7 * 24),
        }
    }
}

impl FanoutSettings {
    /// The retry schedule as durations.
    pub fn schedule(&self) -> Vec<Duration> {
        self.retry_schedule.iter().map(|p| p.0).collect()
    }

    /// The delivery request deadline.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// A span of time written with a unit: `250ms`, `5s`, `5m`, `2h`, `3d` (whole numbers). The
/// default is zero.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Period(pub Duration);

impl Period {
    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// A retention's duration, or `None` for `0s`, which keeps everything.
    pub fn retention(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl TryFrom<String> for Period {
    type Error = String;

    fn try_from(text: String) -> Result<Period, String> {
        text.parse()
    }
}

impl std::str::FromStr for Period {
    type Err = String;

    fn from_str(text: &str) -> Result<Period, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let bad = || format!("`{text}` is not a period like 250ms, 5s, 5m, 2h or 3d");
        let number: u64 = number.parse().map_err(|_| bad())?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        number
            .checked_mul(millis_per_unit)
            .map(|ms| Period(Duration::from_millis(ms)))
            .ok_or_else(bad)
    }
}

impl From<Period> for String {
    fn from(period: Period) -> String {
        period.to_string()
    }
}

impl fmt::Display for Period {
    /// The largest unit that writes the period exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        if ms == 0 {
            return f.write_str("0s");
        }
        write!(f, "{ms}ms")
    }
}

impl fmt::Debug for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

pub(crate) fn validate(fanout: &FanoutSettings) -> Result<(), ConfigError> {
    let rule = |key: &str, reason: &str| ConfigError::Rule {
        key: format!("fanout.{key}"),
        reason: reason.to_owned(),
    };
    if fanout.retry_schedule.is_empty() || fanout.retry_schedule.len() > 50 {
        return Err(rule("retry_schedule", "must have 1 to 50 entries"));
    }
    if !(0.0..=0.5).contains(&fanout.retry_jitter) {
        return Err(rule("retry_jitter", "must be between 0 and 0.5"));
    }
    for (key, value) in [
        ("relay_batch", u64::from(fanout.relay_batch)),
        ("relay_interval_ms", fanout.relay_interval_ms),
        ("delivery_interval_ms", fanout.delivery_interval_ms),
        ("request_timeout_ms", fanout.request_timeout_ms),
        ("connect_timeout_ms", fanout.connect_timeout_ms),
        ("concurrency", fanout.concurrency as u64),
        (
            "concurrency_per_subscription",
            fanout.concurrency_per_subscription as u64,
        ),
    ] {
        if value == 0 {
            return Err(rule(key, "must be at least 1"));
        }
    }
    if fanout.disable_after.0.is_zero() {
        return Err(rule("disable_after", "must be longer than 0"));
    }
    if fanout.allowed_hosts.iter().any(|h| h.trim().is_empty()) {
        return Err(rule("allowed_hosts", "must not contain an empty host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_read_and_write_with_units() {
        for (text, ms) in [
            ("0s", 0),
            ("250ms", 250),
            ("5s", 5_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("3d", 259_200_000),
        ] {
            let period: Period = text.parse().unwrap();
            assert_eq!(period.0, Duration::from_millis(ms));
            assert_eq!(period.to_string(), text);
        }
        assert_eq!("90s".parse::<Period>().unwrap().to_string(), "90s");
        assert_eq!("1500ms".parse::<Period>().unwrap().to_string(), "1500ms");
        for bad in ["", "5", "s", "5 x", "-1s", "1.5h", "99999999999999999999d"] {
            assert!(bad.parse::<Period>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn the_default_schedule_is_the_industry_one() {
        let schedule: Vec<String> = FanoutSettings::default()
            .retry_schedule
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            schedule,
            ["0s", "5s", "5m", "30m", "2h", "5h", "10h", "10h"]
        );
        validate(&FanoutSettings::default()).unwrap();
    }

    #[test]
    fn a_file_sets_the_schedule_and_bad_values_name_their_key() {
        let settings = crate::Settings::from_toml_str(
            r#"
            [fanout]
            retry_schedule = ["0ms", "50ms", "2s"]
            disable_after = "500ms"
            allowed_hosts = ["127.0.0.1"]
            retention = "0s"
            "#,
        )
        .unwrap();
        assert!(
            settings.fanout.retention.duration().is_zero(),
            "0s keeps everything"
        );
        assert_eq!(
            FanoutSettings::default().retention.duration(),
            Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(
            settings.fanout.schedule(),
            [
                Duration::ZERO,
                Duration::from_millis(50),
                Duration::from_secs(2)
            ]
        );
        assert_eq!(
            settings.fanout.disable_after.duration(),
            Duration::from_millis(500)
        );
        let error = crate::Settings::from_toml_str("[fanout]\nretry_schedule = [\"soon\"]")
            .unwrap_err()
            .to_string();
        assert!(error.contains("retry_schedule"), "{error}");
        let error = crate::Settings::from_toml_str("[fanout]\nretry_schedule = []")
            .unwrap_err()
            .to_string();
        assert!(error.contains("fanout.retry_schedule"), "{error}");
    }
}
