//! Extractors whose rejections are [`HttpError`]s, and the two router-wide pieces that give
//! every other refusal the same shape: the fallback for unknown routes and the
//! [`json_errors`] middleware.
//!
//! axum's own extractors answer a bad request with `text/plain` (a duplicated query parameter,
//! `%FF` in a path segment, an unreadable body) and its router answers unknown routes and
//! methods with an empty body. Handlers use [`Path`], [`Query`] and [`JsonBody`] from here, and
//! both routers end with [`not_found`] as fallback and [`json_errors`] as their outermost
//! layer, so a caller always gets `{"error", "message"}`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::HttpError;
use crate::limits::BodyLimit;

/// `axum::extract::Path` refusing with a JSON 400 (e.g. `%FF` in a segment is not UTF-8).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(HttpError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` refusing with a JSON 400 (e.g. a parameter given twice).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(HttpError))]
pub struct Query<T>(pub T);

impl From<PathRejection> for HttpError {
    fn from(rejection: PathRejection) -> HttpError {
        HttpError::bad_request(format!(
            "the request path is not valid: {}",
            bounded(&rejection.body_text())
        ))
    }
}

impl From<QueryRejection> for HttpError {
    fn from(rejection: QueryRejection) -> HttpError {
        HttpError::bad_request(format!(
            "the query string is not valid: {}",
            bounded(&rejection.body_text())
        ))
    }
}

/// The raw bytes of a body declared `application/json` (or `application/<x>+json`): 415
/// otherwise, 413 over the route's [`BodyLimit`], 400 when it cannot be read. The handler parses
/// the bytes itself, so its errors can name the field and the item at fault.
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = HttpError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody, HttpError> {
        if !is_json(request.headers()) {
            return Err(HttpError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON, sent with `Content-Type: application/json`",
            ));
        }
        let limit = request.extensions().get::<BodyLimit>().copied();
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| body_error(&rejection, limit))?;
        Ok(JsonBody(bytes))
    }
}

/// The refusal for a body that could not be read: 413 over the limit (named when known), else
/// 400.
pub fn body_error(rejection: &BytesRejection, limit: Option<BodyLimit>) -> HttpError {
    match (rejection.status(), limit) {
        (StatusCode::PAYLOAD_TOO_LARGE, Some(BodyLimit(limit))) => {
            HttpError::payload_too_large(limit)
        }
        (StatusCode::PAYLOAD_TOO_LARGE, None) => {
            HttpError::of_status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        _ => HttpError::bad_request("the request body could not be read"),
    }
}

/// The routers' fallback: 404 for a path no route serves.
pub async fn not_found() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "there is no such route; GET /openapi.json lists this server's routes",
    )
}

/// Middleware (outermost, with `axum::middleware::map_response`): a refusal that is not JSON —
/// the router's 405, a layer's own answer — gets the standard body for its status, keeping its
/// headers (`Allow`, `Retry-After`). Responses that are already JSON, and successes, pass as
/// they are.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (parts, _body) = response.into_parts();
    let mut shaped = HttpError::of_status(status).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().append(name.clone(), value.clone());
        }
    }
    shaped
}

/// Whether the headers declare a JSON body: `application/json` or `application/<x>+json`, any
/// parameters (`; charset=utf-8`) allowed.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    let suffixed = subtype.len() > "+json".len()
        && subtype
            .get(subtype.len() - "+json".len()..)
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"));
    kind.eq_ignore_ascii_case("application") && (subtype.eq_ignore_ascii_case("json") || suffixed)
}

/// A framework message, cut to a sentence's length: it may quote the request's own text.
fn bounded(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    let mut cut: String = text.chars().take(MAX_CHARS).collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn json_media_types_are_recognised_with_parameters_and_suffixes() {
        for (value, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/problem+json", true),
            ("application/+json", false),
            ("text/json", false),
            ("application/jsonp", false),
            ("application/x-www-form-urlencoded", false),
            ("", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), json, "{value}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
