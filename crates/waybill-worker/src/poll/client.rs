//! The HTTP client for courier tracking APIs: one `reqwest` client per worker (connection reuse,
//! rustls, HTTP/2 where offered), every request bounded in time and response size, every answer
//! sorted into what the scheduler must do about it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use waybill_carriers::PollRequest;
use waybill_config::PollingSettings;

/// How a courier answered, sorted by what it means for the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CourierAnswer {
    /// 2xx: the body, to map.
    Body(Vec<u8>),
    /// 404: the courier knows nothing of it yet (before the first scan): not a failure.
    NotFound,
    /// 429: slow down; `retry_after` when the courier said how long.
    RateLimited {
        /// The `Retry-After`, if present and readable.
        retry_after: Option<Duration>,
    },
    /// 401 or 403: the credentials are refused.
    Unauthorized {
        /// The status.
        status: u16,
    },
    /// 5xx: the courier is failing.
    ServerError {
        /// The status.
        status: u16,
    },
    /// Another 4xx (or an unexpected status): our request is wrong for this courier.
    ClientError {
        /// The status.
        status: u16,
    },
    /// No answer within the request timeout.
    Timeout,
    /// No connection (refused, DNS, TLS, reset).
    Unreachable,
    /// The body is larger than `polling.max_response_bytes`.
    TooLarge,
}

impl CourierAnswer {
    /// A metric label (closed set).
    pub fn label(&self) -> &'static str {
        match self {
            CourierAnswer::Body(_) => "ok",
            CourierAnswer::NotFound => "not_found",
            CourierAnswer::RateLimited { .. } => "rate_limited",
            CourierAnswer::Unauthorized { .. } => "unauthorized",
            CourierAnswer::ServerError { .. } => "server_error",
            CourierAnswer::ClientError { .. } => "client_error",
            CourierAnswer::Timeout => "timeout",
            CourierAnswer::Unreachable => "unreachable",
            CourierAnswer::TooLarge => "too_large",
        }
    }
}

/// The courier API client.
#[derive(Debug, Clone)]
pub struct CourierClient {
    http: reqwest::Client,
    max_body: usize,
}

impl CourierClient {
    /// A client with `[polling]`'s timeouts.
    pub fn new(settings: &PollingSettings) -> Result<CourierClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("waybill/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(settings.concurrency)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        Ok(CourierClient {
            http,
            max_body: settings.max_response_bytes,
        })
    }

    /// Sends one request and sorts the answer. Never fails: every failure is an answer. A
    /// `waybill.poll_request` span with the courier's status (never the URL or headers: they
    /// may carry credentials), whose context the courier receives in `traceparent`.
    #[tracing::instrument(
        name = "waybill.poll_request",
        skip_all,
        fields(
            otel.kind = "client",
            http.request.method = %request.method,
            http.response.status_code = tracing::field::Empty,
            waybill.poll.outcome = tracing::field::Empty,
        )
    )]
    pub async fn fetch(&self, request: &PollRequest) -> CourierAnswer {
        let answer = self.send(request).await;
        tracing::Span::current().record("waybill.poll.outcome", answer.label());
        answer
    }

    async fn send(&self, request: &PollRequest) -> CourierAnswer {
        let Ok(method) = reqwest::Method::from_bytes(request.method.as_bytes()) else {
            return CourierAnswer::ClientError { status: 0 };
        };
        let mut builder = self.http.request(method, &request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        // The courier sees the poll's trace (when tracing is on), as our receivers see theirs.
        if let Some(traceparent) = waybill_telemetry::trace::current_traceparent() {
            builder = builder.header(waybill_telemetry::trace::TRACEPARENT, traceparent);
        }
        let mut response = match builder.send().await {
            Ok(response) => response,
            Err(error) => return failure(&error),
        };
        let status = response.status().as_u16();
        tracing::Span::current().record("http.response.status_code", status);
        match status {
            200..=299 => {}
            404 => return CourierAnswer::NotFound,
            429 => {
                return CourierAnswer::RateLimited {
                    retry_after: retry_after(response.headers(), Utc::now()),
                };
            }
            401 | 403 => return CourierAnswer::Unauthorized { status },
            500..=599 => return CourierAnswer::ServerError { status },
            _ => return CourierAnswer::ClientError { status },
        }
        if response
            .content_length()
            .is_some_and(|length| length > self.max_body as u64)
        {
            return CourierAnswer::TooLarge;
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_body {
                        return CourierAnswer::TooLarge;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return CourierAnswer::Body(body),
                Err(error) => return failure(&error),
            }
        }
    }
}

fn failure(error: &reqwest::Error) -> CourierAnswer {
    if error.is_timeout() {
        CourierAnswer::Timeout
    } else {
        CourierAnswer::Unreachable
    }
}

/// `Retry-After` as seconds or an HTTP date, at most a day; `None` when absent or unreadable.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value)
                .ok()?
                .with_timezone(&Utc);
            (at - now).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(Duration::from_secs(86_400)))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = Utc.with_ymd_and_hms(2026, 11, 6, 8, 49, 0).unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Fri, 06 Nov 2026 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(37)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("99999999"));
        assert_eq!(
            retry_after(&headers, now),
            Some(Duration::from_secs(86_400))
        );
    }
}
