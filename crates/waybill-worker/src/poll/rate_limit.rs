//! The rate budget of one carrier account, shared by every poll of this worker process that
//! goes to it: a token bucket (governor's GCRA) plus a pause the courier can impose (a 429's
//! `Retry-After`) or that bad credentials impose (401/403), and the account's health.
//!
//! An *account* is what a courier meters: sources with the same profile, credentials and base
//! URL share one (see `sources.rs`). The budget is per process; with N workers the account sees
//! up to N times the rate, so configure `rate_limit_per_second` as the account's limit divided by
//! the replicas (see `docs/polling.md`).

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// Why a poll may not go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The courier asked for a pause (429) or the credentials were refused (401/403); retry
    /// after this long.
    Paused(Duration),
    /// The bucket would make this poll wait longer than allowed; retry after this long.
    OverBudget(Duration),
}

/// One carrier account's budget and health.
#[derive(Debug)]
pub struct Account {
    /// A name for logs and metrics: the first source using it.
    pub label: String,
    /// Requests per second.
    pub rate: f64,
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
    paused_until: Mutex<Option<Instant>>,
    unhealthy: AtomicBool,
}

impl Account {
    /// An account allowing `rate` requests a second, bursting to one second's worth (at least 1).
    pub fn new(label: impl Into<String>, rate: f64) -> Account {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let burst = NonZeroU32::new(rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
            .unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Account {
            label: label.into(),
            rate,
            limiter: RateLimiter::direct(quota),
            clock: DefaultClock::default(),
            paused_until: Mutex::new(None),
            unhealthy: AtomicBool::new(false),
        }
    }

    /// Takes a token, waiting for it at most `max_wait`. A refusal says when to retry.
    pub async fn acquire(&self, max_wait: Duration) -> Result<(), Refusal> {
        if let Some(left) = self.pause_left() {
            return Err(Refusal::Paused(left));
        }
        loop {
            match self.limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if wait > max_wait {
                        return Err(Refusal::OverBudget(wait));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Stops every poll of the account for `duration` (keeps a longer pause already set).
    pub fn pause(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut paused = self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    /// How long the current pause still lasts, if any.
    pub fn pause_left(&self) -> Option<Duration> {
        let paused = self
            .paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        paused
            .map(|until| until.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    /// Marks the account's credentials refused. True on the transition (log it then, once).
    pub fn mark_unhealthy(&self) -> bool {
        !self.unhealthy.swap(true, Ordering::Relaxed)
    }

    /// Marks the account working again. True on the transition.
    pub fn mark_healthy(&self) -> bool {
        self.unhealthy.swap(false, Ordering::Relaxed)
    }

    /// Whether the credentials were last refused.
    pub fn is_unhealthy(&self) -> bool {
        self.unhealthy.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_bucket_bursts_one_second_then_refuses_beyond_the_wait() {
        let account = Account::new("a", 5.0);
        for _ in 0..5 {
            account.acquire(Duration::ZERO).await.unwrap();
        }
        match account.acquire(Duration::ZERO).await {
            Err(Refusal::OverBudget(wait)) => assert!(wait <= Duration::from_millis(200)),
            other => panic!("{other:?}"),
        }
        // Waiting is allowed within the bound.
        account.acquire(Duration::from_secs(1)).await.unwrap();
    }

    #[tokio::test]
    async fn a_pause_refuses_everything_until_it_ends_and_health_flips_once() {
        let account = Account::new("a", 100.0);
        account.pause(Duration::from_secs(30));
        account.pause(Duration::from_secs(1));
        match account.acquire(Duration::from_secs(60)).await {
            Err(Refusal::Paused(left)) => assert!(left > Duration::from_secs(20)),
            other => panic!("{other:?}"),
        }
        assert!(account.mark_unhealthy());
        assert!(!account.mark_unhealthy());
        assert!(account.mark_healthy());
        assert!(!account.mark_healthy());
    }
}
