//! The operational routes both servers serve — `GET /healthz`, `/readyz`, `/metrics` —
//! handled and documented once, so both served documents describe them the same way.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use waybill_api::health::{Health, HealthStatus, Readiness};

/// `GET /healthz`: the process is alive.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: HealthStatus::Ok,
    })
}

/// `GET /readyz`: each server probes its own dependencies and answers with this.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready: every dependency of this server is usable (the broker; for the worker also the database)", body = Readiness),
        (status = 503, description = "Not ready: the body says which dependency is not usable", body = Readiness),
    )
)]
pub fn readiness(readiness: Readiness) -> Response {
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format (docs/metrics.md)", content_type = "text/plain"))
)]
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        waybill_telemetry::render_metrics(),
    )
}
