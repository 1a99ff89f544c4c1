//! Serving a server's OpenAPI document, and the security scheme and key refusal both documents
//! share.

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use utoipa::Modify;
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use waybill_api::ErrorBody;

/// The name operations use to require an API key: `security(("api_key" = []))`.
pub const API_KEY_SCHEME: &str = "api_key";

/// Adds the `api_key` scheme: `Authorization: Bearer wbk_…` (see `docs/security.md`).
#[derive(Debug, Clone, Copy)]
pub struct ApiKeySecurity;

impl Modify for ApiKeySecurity {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY_SCHEME,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The refusal every route behind an API key documents: the [`crate::auth::Authorized`]
/// extractor answers it before the handler runs. Listed in the route's `responses(...)`.
#[derive(utoipa::IntoResponses)]
pub enum KeyRefusal {
    /// 401: no key, or one that is not known.
    #[response(status = 401, description = "Missing or unknown API key")]
    Unauthorized(ErrorBody),
}

/// `GET /openapi.json`: the document, serialised once when the router is built.
pub fn route<S: Clone + Send + Sync + 'static>(document: &OpenApi) -> MethodRouter<S> {
    // A document that does not serialise is a bug caught by the contract test; serving `{}`
    // keeps the server up meanwhile.
    let body = Bytes::from(serde_json::to_vec(document).unwrap_or_else(|_| b"{}".to_vec()));
    get(move || {
        let body = body.clone();
        async move { json_bytes(body) }
    })
}

fn json_bytes(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
