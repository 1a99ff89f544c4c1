//! Why a console page could not be shown: an HTML page with the status and a sentence. Nothing
//! from a request is echoed into it except as escaped text; internals stay in the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::{BASE, view};

/// A page that cannot be served, by status.
#[derive(Debug)]
pub(crate) enum PageError {
    /// 400: the request is malformed (the sentence says how).
    BadRequest(String),
    /// 403: the key may not do this.
    Forbidden(&'static str),
    /// 404: no such thing (for this viewer).
    NotFound(&'static str),
    /// 503: the database or the broker did not answer; retry.
    Unavailable(&'static str),
    /// 503: the key ring holds no trusted key set, so nobody can be checked.
    KeysUnavailable,
}

impl PageError {
    /// A database failure, logged once here.
    pub(crate) fn database(error: &waybill_store::StoreError) -> PageError {
        tracing::warn!(error = %error, "console: database query failed");
        PageError::Unavailable("the database did not answer; try again shortly")
    }

    /// A broker failure, logged once here.
    pub(crate) fn broker(error: &waybill_bus::BusError) -> PageError {
        tracing::warn!(error = %error, "console: broker operation failed");
        PageError::Unavailable("RabbitMQ did not answer; try again shortly")
    }
}

impl From<waybill_store::StoreError> for PageError {
    fn from(error: waybill_store::StoreError) -> PageError {
        PageError::database(&error)
    }
}

impl From<waybill_bus::BusError> for PageError {
    fn from(error: waybill_bus::BusError) -> PageError {
        PageError::broker(&error)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, sentence) = match &self {
            PageError::BadRequest(sentence) => (StatusCode::BAD_REQUEST, sentence.as_str()),
            PageError::Forbidden(sentence) => (StatusCode::FORBIDDEN, *sentence),
            PageError::NotFound(sentence) => (StatusCode::NOT_FOUND, *sentence),
            PageError::Unavailable(sentence) => (StatusCode::SERVICE_UNAVAILABLE, *sentence),
            PageError::KeysUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the API key set has not been received (or is out of date), so no key can be checked; try again shortly",
            ),
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let body = view::bare_page(
            title,
            html! {
                h1 { (status.as_u16()) " " (title) }
                p role="alert" { (sentence) }
                p { a href={(BASE) "/overview"} { "Back to the console" } }
            },
        );
        let mut response = (status, body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
