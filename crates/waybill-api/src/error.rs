//! The one error body of both HTTP services.

use serde::{Deserialize, Serialize};

/// Every refusal's body, whatever refused the request (a handler, an extractor, the router):
/// `{"error": code, "message": sentence}`, served as `application/json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable machine-readable code, e.g. `unauthorized`, `bad_request`, `not_found`
    /// (`docs/security.md` lists them).
    pub error: String,
    /// What was wrong, in a sentence. Never echoes a secret, a signature or payload content.
    pub message: String,
}
