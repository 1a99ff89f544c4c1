//! The worker's HTTP server: the shipments API, health, readiness and metrics.
//!
//! The shipments routes need an API key with `shipments:read` (see `docs/security.md`); the
//! tenant is the key's, and only an `admin` key may name another with `?tenant=`. Health,
//! readiness and metrics stay open.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use waybill_core::{CarrierCode, TenantId, TrackingNumber};

use crate::Worker;
use crate::auth::{Authorized, ShipmentsRead};

/// The worker's routes.
pub fn router(worker: Worker) -> Router {
    Router::new()
        .route(
            "/v1/shipments/{carrier}/{tracking_number}",
            get(get_shipment),
        )
        .route("/v1/shipments", get(find_shipments))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(worker)
}

/// The worker API's error: `{"error": code, "message": sentence}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    fn unavailable() -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: "the database is unavailable; retry later".to_owned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct TenantQuery {
    tenant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FindQuery {
    tenant: Option<String>,
    order_number: Option<String>,
}

/// The tenant a request reads: the key's own, or the one `?tenant=` names if the key may.
fn tenant_of(auth: &Authorized<ShipmentsRead>, raw: Option<&str>) -> Result<TenantId, ApiError> {
    let requested = raw
        .map(TenantId::parse)
        .transpose()
        .map_err(|error| ApiError::bad_request(format!("tenant: {error}")))?;
    auth.principal
        .tenant_for(requested.as_ref())
        .map_err(|denied| ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: denied.message(),
        })
}

async fn get_shipment(
    auth: Authorized<ShipmentsRead>,
    State(worker): State<Worker>,
    Path((carrier, tracking_number)): Path<(String, String)>,
    Query(query): Query<TenantQuery>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&auth, query.tenant.as_deref())?;
    let carrier =
        CarrierCode::parse(&carrier).map_err(|error| ApiError::bad_request(error.to_string()))?;
    let tracking_number = TrackingNumber::parse(&tracking_number)
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    let found = worker
        .store()
        .get_shipment(&tenant, &carrier, &tracking_number)
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "shipment lookup failed");
            ApiError::unavailable()
        })?;
    Ok(match found {
        Some(shipment) => Json(shipment).into_response(),
        None => ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("no shipment {carrier}/{tracking_number} is known"),
        }
        .into_response(),
    })
}

async fn find_shipments(
    auth: Authorized<ShipmentsRead>,
    State(worker): State<Worker>,
    Query(query): Query<FindQuery>,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&auth, query.tenant.as_deref())?;
    let Some(order_number) = query.order_number.filter(|value| !value.trim().is_empty()) else {
        return Err(ApiError::bad_request(
            "the query parameter order_number is required",
        ));
    };
    let shipments = worker
        .store()
        .find_by_order_number(&tenant, order_number.trim())
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "order lookup failed");
            ApiError::unavailable()
        })?;
    Ok(Json(json!({ "shipments": shipments })).into_response())
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(worker): State<Worker>) -> impl IntoResponse {
    let database = worker.store().ping().await.is_ok();
    let broker = worker.consumers_up() > 0;
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    (
        status,
        Json(json!({
            "status": if database && broker { "ready" } else { "not_ready" },
            "database": word(database),
            "broker": word(broker),
        })),
    )
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        waybill_telemetry::render_metrics(),
    )
}
