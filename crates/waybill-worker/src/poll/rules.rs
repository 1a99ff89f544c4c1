//! The scheduling rules, pure: what to do with a claimed slot, when to poll next after each kind
//! of answer. `docs/polling.md` states them in prose; the tests below pin them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use waybill_config::{IntervalSettings, PollingSettings};
use waybill_core::Status;
use waybill_store::polling::ClaimedShipment;

/// The numbers the rules use, from `[polling]`.
#[derive(Debug, Clone)]
pub struct Rules {
    /// ± this fraction of every interval.
    pub jitter: f64,
    /// No scan for this long: Expired.
    pub expire_after: Duration,
    /// First back-off after a failure; doubled per consecutive failure.
    pub backoff_base: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
    /// The pause after a 401/403.
    pub unauthorized_backoff: Duration,
    /// The wait after a 429 without a usable `Retry-After`.
    pub default_retry_after: Duration,
}

impl Rules {
    /// The rules of `[polling]`.
    pub fn from_settings(settings: &PollingSettings) -> Rules {
        Rules {
            jitter: settings.jitter,
            expire_after: Duration::from_secs(u64::from(settings.expire_after_days) * 86_400),
            backoff_base: Duration::from_secs(settings.backoff_base_secs),
            backoff_max: Duration::from_secs(settings.backoff_max_secs),
            unauthorized_backoff: Duration::from_secs(settings.unauthorized_backoff_secs),
            default_retry_after: Duration::from_secs(settings.default_retry_after_secs),
        }
    }
}

/// What the scheduler does with a claimed slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Publish a poll job.
    Poll,
    /// A webhook arrived within the interval: no poll now, the next one an interval after it.
    AfterWebhook {
        /// The next poll.
        next_poll_at: DateTime<Utc>,
    },
    /// Terminal for longer than the grace period (or already Expired): stop polling.
    Stop,
    /// No scan for `expire_after`: merge a System `Expired` event at `at`, then stop.
    Expire {
        /// When the shipment became expired (last scan + `expire_after`): deterministic, so
        /// doing it twice stores one event.
        at: DateTime<Utc>,
    },
    /// The source is not polled (any more): switch polling off.
    Off,
}

/// The interval before the next poll of a shipment in `status`. `has_scan`: whether any event
/// was ever stored for it.
pub fn interval(intervals: &IntervalSettings, status: Status, has_scan: bool) -> Duration {
    let seconds = if !has_scan || status == Status::Pending {
        intervals.before_first_scan_interval_secs
    } else if status.is_terminal() {
        intervals.after_delivery_interval_secs
    } else if status == Status::OutForDelivery {
        intervals
            .out_for_delivery_interval_secs
            .unwrap_or(intervals.interval_secs)
    } else {
        intervals.interval_secs
    };
    Duration::from_secs(seconds)
}

/// Decides a claimed slot at `now`. `intervals`: the source's intervals, `None` when the source
/// is not polled.
pub fn decide(
    claim: &ClaimedShipment,
    intervals: Option<&IntervalSettings>,
    rules: &Rules,
    now: DateTime<Utc>,
    rng: &mut impl Rng,
) -> Decision {
    let Some(intervals) = intervals else {
        return Decision::Off;
    };
    if claim.status == Status::Expired {
        return Decision::Stop;
    }
    if claim.status.is_terminal() {
        let since = claim.current_event_at.unwrap_or(claim.created_at);
        if since + secs(intervals.terminal_grace_secs) <= now {
            return Decision::Stop;
        }
    } else {
        let last_scan = claim.last_event_at.unwrap_or(claim.created_at);
        let expires_at = last_scan + rules.expire_after;
        if expires_at <= now {
            return Decision::Expire { at: expires_at };
        }
    }
    if let Some(webhook_at) = claim.last_webhook_at {
        let due = webhook_at + interval(intervals, claim.status, claim.last_event_at.is_some());
        if due > now {
            return Decision::AfterWebhook {
                next_poll_at: due + jitter_of(due - webhook_at, rules.jitter, rng),
            };
        }
    }
    Decision::Poll
}

/// The next poll after a successful one (or a 404: nothing known yet).
pub fn next_after_success(
    intervals: &IntervalSettings,
    status: Status,
    has_scan: bool,
    rules: &Rules,
    now: DateTime<Utc>,
    rng: &mut impl Rng,
) -> DateTime<Utc> {
    let interval = chrono_duration(interval(intervals, status, has_scan));
    now + interval + jitter_of(interval, rules.jitter, rng)
}

/// The back-off after the `failures`-th consecutive failure (1 for the first): base × 2^(n-1),
/// capped, with "equal jitter" (between half and all of it), so that many shipments failing
/// together (a courier outage) come back spread out.
pub fn backoff(failures: u32, rules: &Rules, rng: &mut impl Rng) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let full = rules
        .backoff_base
        .saturating_mul(1u32 << exponent)
        .min(rules.backoff_max);
    let half = full / 2;
    half + half.mul_f64(rng.random::<f64>())
}

/// A random `± jitter × interval`.
pub fn jitter_of(interval: chrono::Duration, jitter: f64, rng: &mut impl Rng) -> chrono::Duration {
    if jitter <= 0.0 {
        return chrono::Duration::zero();
    }
    let spread = interval.num_milliseconds() as f64 * jitter;
    chrono::Duration::milliseconds((rng.random_range(-1.0..=1.0) * spread) as i64)
}

/// `std` to `chrono`, saturating.
pub fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

fn secs(seconds: u64) -> chrono::Duration {
    chrono_duration(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use waybill_core::{CarrierCode, SourceId, TenantId, TrackingNumber};
    use waybill_store::ShipmentKey;

    use super::*;

    fn rules() -> Rules {
        Rules::from_settings(&PollingSettings {
            jitter: 0.0,
            ..PollingSettings::default()
        })
    }

    fn t(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(hours)
    }

    fn claim(status: Status, last_event_hours: Option<i64>) -> ClaimedShipment {
        ClaimedShipment {
            id: 1,
            key: ShipmentKey {
                tenant: TenantId::default_tenant(),
                carrier: CarrierCode::parse("starshipit").unwrap(),
                tracking_number: TrackingNumber::parse("T1").unwrap(),
            },
            source: SourceId::parse("s").unwrap(),
            status,
            current_event_at: last_event_hours.map(t),
            last_event_at: last_event_hours.map(t),
            last_webhook_at: None,
            created_at: t(0),
            poll_failures: 0,
            slot: t(0),
            attempt: 0,
        }
    }

    #[test]
    fn intervals_follow_the_status() {
        let mut intervals = IntervalSettings::default();
        let hours = |d: Duration| d.as_secs() / 3600;
        assert_eq!(hours(interval(&intervals, Status::Pending, false)), 6);
        assert_eq!(hours(interval(&intervals, Status::InTransit, true)), 2);
        assert_eq!(hours(interval(&intervals, Status::OutForDelivery, true)), 2);
        assert_eq!(hours(interval(&intervals, Status::Delivered, true)), 12);
        intervals.out_for_delivery_interval_secs = Some(1800);
        assert_eq!(
            interval(&intervals, Status::OutForDelivery, true),
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn a_claim_is_polled_deferred_stopped_or_expired() {
        let intervals = IntervalSettings::default();
        let rules = rules();
        let mut rng = StdRng::seed_from_u64(7);
        let now = t(24);
        let decide = |claim: &ClaimedShipment, rng: &mut StdRng| {
            decide(claim, Some(&intervals), &rules, now, rng)
        };
        assert_eq!(
            decide(&claim(Status::InTransit, Some(20)), &mut rng),
            Decision::Poll
        );
        assert_eq!(
            super::decide(
                &claim(Status::InTransit, Some(20)),
                None,
                &rules,
                now,
                &mut rng
            ),
            Decision::Off
        );

        // A webhook an hour ago pushes the poll to an interval after it.
        let mut recent = claim(Status::InTransit, Some(20));
        recent.last_webhook_at = Some(t(23));
        assert_eq!(
            decide(&recent, &mut rng),
            Decision::AfterWebhook {
                next_poll_at: t(25)
            }
        );
        recent.last_webhook_at = Some(t(21));
        assert_eq!(decide(&recent, &mut rng), Decision::Poll);

        // Delivered: polled through the grace period (3 days), then stopped.
        assert_eq!(
            decide(&claim(Status::Delivered, Some(0)), &mut rng),
            Decision::Poll
        );
        let old = claim(Status::Delivered, Some(-72));
        assert_eq!(decide(&old, &mut rng), Decision::Stop);
        assert_eq!(
            decide(&claim(Status::Expired, Some(20)), &mut rng),
            Decision::Stop
        );

        // Thirty days without a scan: expired at exactly last scan + 30 days.
        let silent = claim(Status::InTransit, Some(0));
        let later = t(24 * 31);
        assert_eq!(
            super::decide(&silent, Some(&intervals), &rules, later, &mut rng),
            Decision::Expire { at: t(24 * 30) }
        );
        // Never scanned: counted from creation.
        let never = claim(Status::Pending, None);
        assert_eq!(
            super::decide(&never, Some(&intervals), &rules, later, &mut rng),
            Decision::Expire { at: t(24 * 30) }
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_downwards_only() {
        let rules = rules();
        let mut rng = StdRng::seed_from_u64(1);
        for failures in 1..40 {
            let full = rules
                .backoff_base
                .saturating_mul(1 << (failures - 1).min(30))
                .min(rules.backoff_max);
            let got = backoff(failures, &rules, &mut rng);
            assert!(
                got >= full / 2 && got <= full,
                "{failures}: {got:?} vs {full:?}"
            );
        }
        assert!(backoff(100, &rules, &mut rng) <= rules.backoff_max);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let mut rng = StdRng::seed_from_u64(3);
        let interval = chrono::Duration::hours(2);
        for _ in 0..1000 {
            let jitter = jitter_of(interval, 0.1, &mut rng);
            assert!(jitter.num_minutes().abs() <= 12);
        }
        assert_eq!(jitter_of(interval, 0.0, &mut rng), chrono::Duration::zero());
    }
}
