//! Readiness: the broker accepts publishes. (`/healthz` and `/metrics` are
//! `waybill_http::operations`, shared with the worker.)

use axum::extract::State;
use axum::response::Response;
use waybill_api::health::Readiness;

use crate::AppState;

/// `GET /readyz`: 200 when the broker channel is usable, else 503.
pub async fn readyz(State(state): State<AppState>) -> Response {
    waybill_http::operations::readiness(Readiness::of(state.inner.publisher.is_ready(), None))
}
