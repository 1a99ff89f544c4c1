//! Per-source request limits, so that one misbehaving courier cannot starve the others: a token
//! bucket per source with `rate_limit_per_second` (`[[sources]]`), checked before the body is
//! read; and a deadline on the whole request.
//!
//! The set of sources is fixed at start, so the buckets are built once; a bucket is a few
//! floats behind a mutex held for nanoseconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use waybill_http::extract::Path;

use crate::webhooks::count_received;
use crate::{ApiError, AppState};

/// How long a request's body may take to arrive; the request deadline is this plus the publish
/// timeout.
pub(crate) const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// The token buckets of the sources that have a limit.
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    buckets: HashMap<String, Mutex<TokenBucket>>,
}

impl RateLimits {
    /// Buckets for `(source id, requests per second)`.
    pub(crate) fn new(limits: impl IntoIterator<Item = (String, f64)>) -> RateLimits {
        RateLimits {
            buckets: limits
                .into_iter()
                .map(|(source, rate)| (source, Mutex::new(TokenBucket::new(rate, Instant::now()))))
                .collect(),
        }
    }

    /// `Ok` when `source` may make a request now; else how long until it may.
    fn check(&self, source: &str) -> Result<(), Duration> {
        let Some(bucket) = self.buckets.get(source) else {
            return Ok(());
        };
        let mut bucket = bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        bucket.take(Instant::now())
    }
}

/// A token bucket: `rate` tokens a second, holding at most one second's worth (at least 1).
#[derive(Debug, Clone)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(rate: f64, now: Instant) -> TokenBucket {
        let capacity = rate.max(1.0);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            updated: now,
        }
    }

    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Middleware on `POST /v1/webhooks/{source}`: `429` + `Retry-After` once the source's bucket
/// is empty (before its body is read); otherwise a request that has not been answered within
/// the deadline (a body trickling in) gets `408`. Dropping the handler is safe: a publish
/// already handed to the broker driver completes on its own, and the courier's retry is
/// deduplicated.
pub(crate) async fn limit(
    State(state): State<AppState>,
    Path(source): Path<String>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(wait) = state.inner.rate_limits.check(&source) {
        count_received(&state, &source, "rate_limited");
        let retry_after = u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
        return ApiError::RateLimited { retry_after }.into_response();
    }
    within_deadline(&state, request, next, || {
        count_received(&state, &source, "request_timeout");
    })
    .await
}

/// Middleware on `POST /v1/shipments`: the same deadline as a webhook's, for the same reason
/// (a registration's body can trickle too). Its publishes are confirmed together; a retry of
/// the whole request is harmless.
pub(crate) async fn registration_deadline(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    within_deadline(&state, request, next, || {
        metrics::counter!(
            "waybill_registrations_received_total",
            "outcome" => "request_timeout"
        )
        .increment(1);
    })
    .await
}

/// The response of `next`, or `408` (after `count_timeout`) when it takes longer than the
/// configured request timeout.
async fn within_deadline(
    state: &AppState,
    request: Request,
    next: Next,
    count_timeout: impl FnOnce(),
) -> Response {
    let limit = state.inner.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_elapsed) => {
            count_timeout();
            ApiError::RequestTimeout(limit).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_and_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, start);
        for _ in 0..10 {
            assert!(bucket.take(start).is_ok());
        }
        let wait = bucket.take(start).err();
        assert!(wait.is_some_and(|w| w <= Duration::from_millis(100) && w > Duration::ZERO));
        assert!(bucket.take(start + Duration::from_millis(100)).is_ok());
        assert!(bucket.take(start + Duration::from_millis(100)).is_err());
        // Idle time never builds more than one second's worth.
        let later = start + Duration::from_secs(60);
        let allowed = (0..100).filter(|_| bucket.take(later).is_ok()).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn a_slow_rate_still_allows_one_request() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(0.5, start);
        assert!(bucket.take(start).is_ok());
        let wait = bucket.take(start).err();
        assert!(wait.is_some_and(|w| w > Duration::from_millis(1900)));
        assert!(bucket.take(start + Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn sources_without_a_limit_are_not_limited() {
        let limits = RateLimits::new([("slow".to_owned(), 1.0)]);
        assert!(limits.check("slow").is_ok());
        assert!(limits.check("slow").is_err());
        for _ in 0..1000 {
            assert!(limits.check("other").is_ok());
        }
    }
}
