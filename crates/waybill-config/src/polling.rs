//! `[polling]`: the poll scheduler, the courier tracking-API clients and shipment registration
//! (see `docs/polling.md` for the rules these numbers feed).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::sources::SourceSettings;

/// `[polling]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollingSettings {
    /// Run the poll scheduler and the poll consumers in this worker process.
    pub enabled: bool,
    /// How often the scheduler looks for due shipments.
    pub tick_ms: u64,
    /// Most shipments one scheduler claims per tick, over all sources.
    pub claim_batch: u32,
    /// How long a claimed slot stays claimed without a recorded result before another scheduler
    /// may claim it again (a worker that crashed between claiming and polling).
    pub lease_secs: u64,
    /// The scheduler stops claiming while this many poll jobs wait in `waybill.polls`: a backlog
    /// waits in Postgres, where webhooks can still make it unnecessary, not in the queue.
    pub max_queued_jobs: u32,
    /// A new shipment's first poll is spread uniformly over this many seconds after it is
    /// registered, so that a bulk registration does not poll in one burst.
    pub first_poll_jitter_secs: u64,
    /// Every interval is multiplied by a random factor in `1 ± jitter` (0 to 0.5).
    pub jitter: f64,
    /// `[polling.intervals]`: the intervals between polls (overridable per carrier profile in
    /// `[polling.profiles.*]`).
    pub intervals: IntervalSettings,
    /// Per-profile overrides of the intervals, by profile name.
    pub profiles: BTreeMap<String, IntervalOverrides>,
    /// Per-source overrides (the rate budget of each carrier account).
    pub sources: BTreeMap<String, SourcePollSettings>,
    /// A shipment without any scan for this many days is marked `Expired` and no longer polled.
    pub expire_after_days: u32,
    /// First back-off after a 5xx, timeout or connection failure; doubled per failure.
    pub backoff_base_secs: u64,
    /// Longest back-off after repeated failures.
    pub backoff_max_secs: u64,
    /// How long a source's polling pauses after a 401 or 403 (credentials need fixing).
    pub unauthorized_backoff_secs: u64,
    /// The wait after a 429 that carries no usable `Retry-After`.
    pub default_retry_after_secs: u64,
    /// Longest a poll job waits for its account's rate budget before it is put back in the
    /// schedule (so a slow account cannot hold up the others' jobs).
    pub max_rate_wait_ms: u64,
    /// The deadline of one courier request, connecting to reading the whole body.
    pub request_timeout_ms: u64,
    /// The deadline for connecting to a courier.
    pub connect_timeout_ms: u64,
    /// The largest courier response read; a larger one counts as unmappable.
    pub max_response_bytes: usize,
    /// Poll requests in flight at once per worker process.
    pub concurrency: usize,
    /// Most shipments in one `POST /v1/shipments` request (an array); more → 400.
    pub max_registrations_per_request: usize,
}

/// `[polling.intervals]`: the intervals between polls, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntervalSettings {
    /// Between polls of a shipment in transit.
    pub interval_secs: u64,
    /// Between polls of a shipment with no scan yet (longer: nothing moves before pick-up).
    pub before_first_scan_interval_secs: u64,
    /// Between polls of a shipment out for delivery; unset: `interval_secs`.
    pub out_for_delivery_interval_secs: Option<u64>,
    /// Between polls of a delivered (returned, cancelled) shipment during the grace period.
    pub after_delivery_interval_secs: u64,
    /// How long a shipment in a terminal status is still polled (to catch a late correction,
    /// e.g. Delivered → Exception) before polling stops for good.
    pub terminal_grace_secs: u64,
}

/// `[polling.profiles.<name>]`: any of the intervals, for one carrier profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalOverrides {
    /// See [`IntervalSettings::interval_secs`].
    pub interval_secs: Option<u64>,
    /// See [`IntervalSettings::before_first_scan_interval_secs`].
    pub before_first_scan_interval_secs: Option<u64>,
    /// See [`IntervalSettings::out_for_delivery_interval_secs`].
    pub out_for_delivery_interval_secs: Option<u64>,
    /// See [`IntervalSettings::after_delivery_interval_secs`].
    pub after_delivery_interval_secs: Option<u64>,
    /// See [`IntervalSettings::terminal_grace_secs`].
    pub terminal_grace_secs: Option<u64>,
}

/// `[polling.sources.<id>]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePollSettings {
    /// Requests per second this worker process sends to the source's carrier account (a token
    /// bucket holding one second's worth). Unset: the profile's `poll.rate_limit_per_second`,
    /// else 1. Sources with the same profile, credentials and base URL share one bucket.
    pub rate_limit_per_second: Option<f64>,
}

impl Default for PollingSettings {
    fn default() -> Self {
        PollingSettings {
            enabled: true,
            tick_ms: 1_000,
            claim_batch: 1_000,
            lease_secs: 600,
            max_queued_jobs: 20_000,
            first_poll_jitter_secs: 300,
            jitter: 0.1,
            intervals: IntervalSettings::default(),
            profiles: BTreeMap::new(),
            sources: BTreeMap::new(),
            expire_after_days: 30,
            backoff_base_secs: 60,
            backoff_max_secs: 6 * 3600,
            unauthorized_backoff_secs: 6 * 3600,
            default_retry_after_secs: 60,
            max_rate_wait_ms: 5_000,
            request_timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            max_response_bytes: 4 * 1024 * 1024,
            concurrency: 32,
            max_registrations_per_request: 500,
        }
    }
}

impl Default for IntervalSettings {
    fn default() -> Self {
        IntervalSettings {
            interval_secs: 2 * 3600,
            before_first_scan_interval_secs: 6 * 3600,
            out_for_delivery_interval_secs: None,
            after_delivery_interval_secs: 12 * 3600,
            terminal_grace_secs: 3 * 24 * 3600,
        }
    }
}

impl IntervalSettings {
    /// These intervals with a profile's overrides applied.
    #[must_use]
    pub fn with_overrides(&self, overrides: Option<&IntervalOverrides>) -> IntervalSettings {
        let Some(o) = overrides else {
            return self.clone();
        };
        IntervalSettings {
            interval_secs: o.interval_secs.unwrap_or(self.interval_secs),
            before_first_scan_interval_secs: o
                .before_first_scan_interval_secs
                .unwrap_or(self.before_first_scan_interval_secs),
            out_for_delivery_interval_secs: o
                .out_for_delivery_interval_secs
                .or(self.out_for_delivery_interval_secs),
            after_delivery_interval_secs: o
                .after_delivery_interval_secs
                .unwrap_or(self.after_delivery_interval_secs),
            terminal_grace_secs: o.terminal_grace_secs.unwrap_or(self.terminal_grace_secs),
        }
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let positive = [
            ("interval_secs", Some(self.interval_secs)),
            (
                "before_first_scan_interval_secs",
                Some(self.before_first_scan_interval_secs),
            ),
            (
                "out_for_delivery_interval_secs",
                self.out_for_delivery_interval_secs,
            ),
            (
                "after_delivery_interval_secs",
                Some(self.after_delivery_interval_secs),
            ),
        ];
        for (name, value) in positive {
            if value == Some(0) {
                return Err(rule(&format!("{key}.{name}"), "must be at least 1 second"));
            }
        }
        Ok(())
    }
}

fn rule(key: &str, reason: &str) -> ConfigError {
    ConfigError::Rule {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

pub(crate) fn validate(
    polling: &PollingSettings,
    sources: &[SourceSettings],
    profiles: &waybill_carriers::ProfileRegistry,
) -> Result<(), ConfigError> {
    let at_least_one = [
        ("polling.tick_ms", polling.tick_ms),
        ("polling.claim_batch", u64::from(polling.claim_batch)),
        ("polling.lease_secs", polling.lease_secs),
        (
            "polling.max_queued_jobs",
            u64::from(polling.max_queued_jobs),
        ),
        (
            "polling.expire_after_days",
            u64::from(polling.expire_after_days),
        ),
        ("polling.backoff_base_secs", polling.backoff_base_secs),
        ("polling.request_timeout_ms", polling.request_timeout_ms),
        ("polling.connect_timeout_ms", polling.connect_timeout_ms),
        (
            "polling.max_response_bytes",
            polling.max_response_bytes as u64,
        ),
        ("polling.concurrency", polling.concurrency as u64),
        (
            "polling.max_registrations_per_request",
            polling.max_registrations_per_request as u64,
        ),
    ];
    for (key, value) in at_least_one {
        if value == 0 {
            return Err(rule(key, "must be at least 1"));
        }
    }
    if !(0.0..=0.5).contains(&polling.jitter) {
        return Err(rule("polling.jitter", "must be between 0 and 0.5"));
    }
    if polling.backoff_max_secs < polling.backoff_base_secs {
        return Err(rule(
            "polling.backoff_max_secs",
            "must be at least polling.backoff_base_secs",
        ));
    }
    if polling.lease_secs * 1000 <= polling.request_timeout_ms + polling.max_rate_wait_ms {
        return Err(rule(
            "polling.lease_secs",
            "must be longer than one poll can take (request_timeout_ms + max_rate_wait_ms), or a slot could be polled twice",
        ));
    }
    polling.intervals.validate("polling.intervals")?;
    for (name, overrides) in &polling.profiles {
        if profiles.get(name).is_none() {
            return Err(rule(
                &format!("polling.profiles.{name}"),
                "no carrier profile of this name",
            ));
        }
        polling
            .intervals
            .with_overrides(Some(overrides))
            .validate(&format!("polling.profiles.{name}"))?;
    }
    for (id, source) in &polling.sources {
        if !sources.iter().any(|s| s.id.as_str() == id) {
            return Err(rule(
                &format!("polling.sources.{id}"),
                "no [[sources]] entry has this id",
            ));
        }
        if source
            .rate_limit_per_second
            .is_some_and(|rate| !rate.is_finite() || rate <= 0.0)
        {
            return Err(rule(
                &format!("polling.sources.{id}.rate_limit_per_second"),
                "must be a positive number of requests per second",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Settings;

    #[test]
    fn defaults_are_two_hours_and_valid() {
        let settings = Settings::from_toml_str("").unwrap();
        assert!(settings.polling.enabled);
        assert_eq!(settings.polling.intervals.interval_secs, 7200);
        assert_eq!(
            settings.polling.intervals.out_for_delivery_interval_secs,
            None
        );
    }

    #[test]
    fn profile_overrides_and_source_budgets_parse() {
        let settings = Settings::from_toml_str(
            r#"
            sources = [{ id = "ssi", profile = "starshipit" }]
            [polling.intervals]
            interval_secs = 3600
            out_for_delivery_interval_secs = 900
            [polling.profiles.starshipit]
            interval_secs = 5400
            [polling.sources.ssi]
            rate_limit_per_second = 0.5
            "#,
        )
        .unwrap();
        let polling = &settings.polling;
        let starshipit = polling
            .intervals
            .with_overrides(polling.profiles.get("starshipit"));
        assert_eq!(starshipit.interval_secs, 5400);
        assert_eq!(starshipit.out_for_delivery_interval_secs, Some(900));
        assert_eq!(polling.sources["ssi"].rate_limit_per_second, Some(0.5));
    }

    #[test]
    fn bad_polling_settings_name_their_key() {
        for (toml, key) in [
            ("[polling]\njitter = 0.9", "polling.jitter"),
            (
                "[polling.intervals]\ninterval_secs = 0",
                "polling.intervals.interval_secs",
            ),
            (
                "[polling.profiles.nope]\ninterval_secs = 1",
                "polling.profiles.nope",
            ),
            ("[polling.sources.nope]", "polling.sources.nope"),
            ("[polling]\nlease_secs = 1", "polling.lease_secs"),
            ("[polling]\nsurprise = 1", "surprise"),
        ] {
            let message = Settings::from_toml_str(toml)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(message.contains(key), "{toml}: {message}");
        }
    }
}
