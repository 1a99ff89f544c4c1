//! What an attempt's answer means and when the next attempt is due: pure rules, no IO, so
//! they are tested without a receiver or a clock.
//!
//! | answer                                   | verdict                                  |
//! |------------------------------------------|------------------------------------------|
//! | 2xx                                      | delivered                                |
//! | 410 Gone                                 | dead, subscription disabled (`gone`)     |
//! | 3xx (redirects are not followed), other 4xx, 5xx, 429 | retry per schedule, at least `Retry-After` |
//! | timeout, connection error                | retry per schedule                       |
//! | destination refused (SSRF), bad URL or secret | dead (retrying cannot help)          |
//!
//! A retry after the schedule's last attempt is dead instead.

use std::time::Duration;

use rand::Rng;
use waybill_config::FanoutSettings;

/// What one attempt came to: the 2xx status it was delivered with, or why it failed.
pub type Verdict = Result<u16, Failed>;

/// Why an attempt did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    /// 410 Gone: the receiver asks never to be called again.
    Gone,
    /// Worth another attempt.
    Retry {
        /// The status, if there was an answer.
        status: Option<u16>,
        /// Why it failed, in a sentence.
        error: String,
        /// The receiver's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Another attempt cannot succeed (a refused destination, an unusable URL or secret).
    GiveUp {
        /// Why.
        error: String,
    },
}

/// The verdict of an HTTP answer.
pub fn judge(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Ok(status),
        410 => Err(Failed::Gone),
        _ => Err(Failed::Retry {
            status: Some(status),
            error: match status {
                300..=399 => format!("HTTP {status} (redirects are not followed)"),
                _ => format!("HTTP {status}"),
            },
            retry_after,
        }),
    }
}

/// The retry schedule with its jitter and `Retry-After` bound.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The wait before each attempt (the first entry before the first attempt).
    pub schedule: Vec<Duration>,
    /// Waits are multiplied by a factor in `1 ± jitter`.
    pub jitter: f64,
    /// The longest wait a `Retry-After` can impose.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// The policy configured in `[fanout]`.
    pub fn from_settings(settings: &FanoutSettings) -> RetryPolicy {
        RetryPolicy {
            schedule: settings.schedule(),
            jitter: settings.retry_jitter,
            max_retry_after: settings.max_retry_after.duration(),
        }
    }

    /// How many attempts a delivery gets.
    pub fn attempts(&self) -> usize {
        self.schedule.len()
    }

    /// The wait before the first attempt.
    pub fn first_delay(&self) -> Duration {
        self.schedule.first().copied().unwrap_or_default()
    }

    /// The wait after failed attempt number `attempt` (1 for the first) before the next one,
    /// or `None` when that was the last. The schedule's wait, jittered by `jitter_factor` (a
    /// value in `[-1, 1]`, scaled by [`RetryPolicy::jitter`]), but at least `retry_after`
    /// (bounded by [`RetryPolicy::max_retry_after`]).
    pub fn next_delay_with(
        &self,
        attempt: i32,
        retry_after: Option<Duration>,
        jitter_factor: f64,
    ) -> Option<Duration> {
        let index = usize::try_from(attempt).ok()?;
        let scheduled = *self.schedule.get(index)?;
        let factor = 1.0 + self.jitter * jitter_factor.clamp(-1.0, 1.0);
        let jittered = scheduled.mul_f64(factor.max(0.0));
        let floor = retry_after.map_or(Duration::ZERO, |wait| wait.min(self.max_retry_after));
        Some(jittered.max(floor))
    }

    /// [`RetryPolicy::next_delay_with`] with a random jitter.
    pub fn next_delay(&self, attempt: i32, retry_after: Option<Duration>) -> Option<Duration> {
        let factor = rand::rng().random_range(-1.0..=1.0);
        self.next_delay_with(attempt, retry_after, factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::from_settings(&FanoutSettings::default())
    }

    #[test]
    fn answers_map_to_verdicts() {
        assert_eq!(judge(204, None), Ok(204));
        assert_eq!(judge(410, None), Err(Failed::Gone));
        for status in [301, 302, 400, 404, 429, 500, 502, 503, 504] {
            assert!(
                matches!(judge(status, None), Err(Failed::Retry { status: Some(s), .. }) if s == status),
                "{status}"
            );
        }
        let Err(Failed::Retry { error, .. }) = judge(302, None) else {
            unreachable!()
        };
        assert!(error.contains("redirects are not followed"));
    }

    #[test]
    fn the_default_schedule_is_eight_attempts_with_bounded_jitter() {
        let policy = policy();
        assert_eq!(policy.attempts(), 8);
        assert_eq!(policy.first_delay(), Duration::ZERO);
        let exact: Vec<u64> = (1..8)
            .map(|attempt| {
                policy
                    .next_delay_with(attempt, None, 0.0)
                    .unwrap()
                    .as_secs()
            })
            .collect();
        assert_eq!(exact, [5, 300, 1800, 7200, 18000, 36000, 36000]);
        assert_eq!(policy.next_delay_with(8, None, 0.0), None, "exhausted");
        assert_eq!(
            policy.next_delay_with(1, None, 1.0),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            policy.next_delay_with(1, None, -1.0),
            Some(Duration::from_secs(4))
        );
        for _ in 0..100 {
            let wait = policy.next_delay(2, None).unwrap().as_secs_f64();
            assert!((240.0..=360.0).contains(&wait), "{wait}");
        }
    }

    #[test]
    fn retry_after_postpones_within_its_bound_but_never_hastens() {
        let policy = policy();
        let wait = |retry_after: u64| {
            policy
                .next_delay_with(1, Some(Duration::from_secs(retry_after)), 0.0)
                .unwrap()
        };
        assert_eq!(
            wait(1),
            Duration::from_secs(5),
            "the schedule's wait is a floor"
        );
        assert_eq!(wait(120), Duration::from_secs(120));
        assert_eq!(
            wait(86_400),
            Duration::from_secs(3600),
            "bounded by max_retry_after"
        );
        assert_eq!(
            policy.next_delay_with(8, Some(Duration::from_secs(1)), 0.0),
            None,
            "Retry-After does not add attempts"
        );
    }
}
