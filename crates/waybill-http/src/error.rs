//! [`HttpError`]: the one refusal of both servers, `{"error": code, "message": sentence}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use waybill_api::ErrorBody;

/// A refusal: a status, a stable machine-readable code and a sentence, plus the headers some
/// statuses owe the client (`Retry-After` on 429 and 503, `WWW-Authenticate` on 401).
///
/// The message says what was wrong; it never quotes a secret, a signature or payload content.
/// Turning it into a response has no side effect (no logging, no metrics): the code that
/// decided to refuse logs once, where it knows why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u32>,
    bearer_challenge: bool,
}

impl HttpError {
    /// A refusal with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            bearer_challenge: false,
        }
    }

    /// 400 `bad_request`: the request is malformed; the message says how.
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 413 `payload_too_large`: the body is (or says it is) over `limit` bytes.
    pub fn payload_too_large(limit: usize) -> HttpError {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 503 `unavailable`: a dependency is down; retry after `retry_after` seconds.
    pub fn unavailable(message: impl Into<String>, retry_after: u32) -> HttpError {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            .with_retry_after(retry_after)
    }

    /// The refusal a status gets when nothing more specific is known: its code and a sentence
    /// (used for the framework's own refusals, see [`crate::extract::json_errors`]).
    pub fn of_status(status: StatusCode) -> HttpError {
        // The sentences too long for the table to keep one row per status.
        const METHOD_NOT_ALLOWED: &str =
            "this method is not allowed on this resource; the Allow header lists those that are";
        const UNSUPPORTED_MEDIA_TYPE: &str = "the request body's media type is not accepted here";
        const UNEXPECTED_SHAPE: &str = "the request body does not have the expected shape";
        let (code, message) = match status.as_u16() {
            400 => ("bad_request", "the request is malformed"),
            401 => ("unauthorized", "the request lacks valid credentials"),
            403 => ("forbidden", "the credentials do not allow this request"),
            404 => ("not_found", "no such resource"),
            405 => ("method_not_allowed", METHOD_NOT_ALLOWED),
            408 => ("request_timeout", "the request was not received in time"),
            411 => ("length_required", "the request needs a Content-Length"),
            413 => ("payload_too_large", "the request body is too large"),
            414 => ("uri_too_long", "the request target is too long"),
            415 => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE),
            422 => ("bad_request", UNEXPECTED_SHAPE),
            429 => ("rate_limited", "too many requests; retry later"),
            431 => ("headers_too_large", "the request headers are too large"),
            503 => ("unavailable", "the service is unavailable; retry later"),
            504 => ("timeout", "the request could not be completed in time"),
            500..=599 => ("internal", "the request could not be handled"),
            _ => ("error", "the request was refused"),
        };
        HttpError::new(status, code, message)
    }

    /// Adds `Retry-After: seconds`.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u32) -> HttpError {
        self.retry_after = Some(seconds);
        self
    }

    /// Adds `WWW-Authenticate: Bearer realm="waybill"` (a 401 must say how to authenticate).
    #[must_use]
    pub fn with_bearer_challenge(mut self) -> HttpError {
        self.bearer_challenge = true;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable machine-readable code (also the `outcome` label of request metrics).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The sentence.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HttpError {}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.bearer_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"waybill\""),
            );
        }
        response
    }
}
