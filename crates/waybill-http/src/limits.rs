//! Body limits answered at the earliest point: a request whose declared `Content-Length` is
//! over the route's limit gets 413 before a byte of its body is read (a client cannot make the
//! server wait for a body it will refuse anyway). A body without a declared length (chunked) is
//! cut off at the limit while it is read (`axum::extract::DefaultBodyLimit`), also with 413.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::HttpError;

/// The body limit of the routes a [`declared_length`] layer guards, in bytes. Also put in the
/// request's extensions, so extractors can name it in their 413.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

/// Middleware (`axum::middleware::from_fn_with_state(BodyLimit(n), declared_length)`): 413
/// when `Content-Length` declares more than the limit; otherwise records the limit in the
/// request's extensions and passes it on.
pub async fn declared_length(
    State(limit): State<BodyLimit>,
    mut request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if let Some(declared) = declared
        && declared > u64::try_from(limit.0).unwrap_or(u64::MAX)
    {
        return HttpError::payload_too_large(limit.0).into_response();
    }
    request.extensions_mut().insert(limit);
    next.run(request).await
}
