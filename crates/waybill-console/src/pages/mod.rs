//! The console's pages, one module per section.

pub(crate) mod deadletters;
pub(crate) mod keys;
pub(crate) mod overview;
pub(crate) mod shipments;
pub(crate) mod sources;
pub(crate) mod subscriptions;

use axum::response::{IntoResponse, Redirect, Response};
use waybill_config::SourceSettings;

use crate::auth::Viewer;
use crate::error::PageError;
use crate::{BASE, Console};

/// `GET /console/`: the overview.
pub(crate) async fn home() -> Redirect {
    Redirect::to(&format!("{BASE}/overview"))
}

/// Anything else under `/console`.
pub(crate) async fn not_found() -> Response {
    PageError::NotFound("there is no such console page").into_response()
}

/// The sources the viewer sees: its tenant's (a `read` key, or an admin's filter), or all.
pub(crate) fn visible_sources<'a>(
    console: &'a Console,
    viewer: &Viewer,
) -> Vec<&'a SourceSettings> {
    let scope = viewer.tenant_scope();
    console
        .settings()
        .sources
        .iter()
        .filter(|source| scope.as_ref().is_none_or(|tenant| source.tenant == *tenant))
        .collect()
}
