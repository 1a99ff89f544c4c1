//! The ingress's refusals. Each becomes the one shared shape, `{"error": code, "message":
//! sentence}` (`waybill_http::HttpError`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use waybill_http::HttpError;

/// Everything a request can fail with. Each variant documents its status; messages say what
/// was wrong in a sentence and never echo secrets, signatures or payload content.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: no source is configured under this id.
    #[error("no source `{0}` is configured")]
    UnknownSource(String),
    /// 401: the signature (or token) is missing or does not verify.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the source does not accept webhooks (it is configured `poll_only`).
    #[error("source `{0}` is configured poll-only and accepts no webhooks")]
    WebhooksDisabled(String),
    /// 400: the body is not a valid payload for the source's format.
    #[error("{0}")]
    BadRequest(String),
    /// 413: the body is larger than `ingress.body_limit_bytes`.
    #[error("the request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// 429: the source sent more than its `rate_limit_per_second`. Nothing was read or queued;
    /// the client should retry after `retry_after` seconds.
    #[error("too many requests from this source; retry later")]
    RateLimited {
        /// Seconds for the `Retry-After` header.
        retry_after: u32,
    },
    /// 408: the request was not received and answered within the request deadline (a body
    /// that trickles in). The client may retry; a duplicate is harmless.
    #[error("the request took longer than {}s to arrive; send it again", .0.as_secs())]
    RequestTimeout(std::time::Duration),
    /// 503: the broker did not confirm the message (down, nack, unroutable, timeout).
    /// The client should retry after `retry_after` seconds; nothing was accepted.
    #[error("the message could not be queued durably; retry later")]
    Unavailable {
        /// Seconds for the `Retry-After` header.
        retry_after: u32,
    },
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownSource(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::WebhooksDisabled(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownSource(_) => "unknown_source",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::WebhooksDisabled(_) => "webhooks_disabled",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::TooLarge(_) => "payload_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::Unavailable { .. } => "unavailable",
        }
    }
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> HttpError {
        let retry_after = match &error {
            ApiError::Unavailable { retry_after } | ApiError::RateLimited { retry_after } => {
                Some(*retry_after)
            }
            _ => None,
        };
        let http = HttpError::new(error.status(), error.code(), error.to_string());
        match retry_after {
            Some(seconds) => http.with_retry_after(seconds),
            None => http,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        HttpError::from(self).into_response()
    }
}
