//! The worker's HTTP server: the shipments API, health, readiness and metrics.
//!
//! It runs on a thread and runtime of its own and reads through a pool of its own
//! (`database.api_connections`, see [`crate::Worker::run`]), so a read is not queued behind the
//! merge's batches.
//!
//! The shipments routes need an API key with `shipments:read` (see `docs/security.md`); the
//! tenant is the key's, and only an `admin` key may name another with `?tenant=`. Health,
//! readiness and metrics stay open. Every refusal is `{"error", "message"}`
//! (`waybill_http::HttpError`), the router's own 404 and 405 included.

use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::middleware::map_response;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use waybill_api::health::{Health, Readiness};
use waybill_api::params::{OrderQuery, ShipmentPath, TenantQuery};
use waybill_api::{ErrorBody, ShipmentList, ShipmentView};
use waybill_core::{CarrierCode, TenantId, TrackingNumber};
use waybill_http::HttpError;
use waybill_http::auth::{Authorized, KeyGate, ShipmentsRead};
use waybill_http::extract::{Path, Query};
use waybill_http::openapi::{ApiKeySecurity, KeyRefusal};
use waybill_store::Store;

use crate::Worker;

/// Seconds a client is told to wait when the database is unavailable.
const DATABASE_RETRY_AFTER_SECS: u32 = 5;

/// What the routes share: the worker, and the API's own pool.
#[derive(Clone)]
struct Api {
    worker: Worker,
    reads: Store,
}

impl FromRef<Api> for KeyGate {
    fn from_ref(api: &Api) -> KeyGate {
        KeyGate::from_ref(&api.worker)
    }
}

/// The worker's routes; the shipments are read through `reads`.
pub fn router(worker: Worker, reads: Store) -> Router {
    Router::new()
        .route(
            "/v1/shipments/{carrier}/{tracking_number}",
            get(get_shipment),
        )
        .route("/v1/shipments", get(find_shipments))
        .route("/healthz", get(waybill_http::operations::healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(waybill_http::operations::metrics))
        .route("/openapi.json", waybill_http::openapi::route(&openapi()))
        .fallback(waybill_http::extract::not_found)
        .layer(map_response(waybill_http::extract::json_errors))
        .with_state(Api { worker, reads })
}

/// 503 while the database cannot answer.
fn database_unavailable() -> HttpError {
    HttpError::unavailable(
        "the database is unavailable; retry later",
        DATABASE_RETRY_AFTER_SECS,
    )
}

/// The refusal every route that reads the database documents: [`database_unavailable`].
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "it only describes a response")]
enum DatabaseRefusal {
    /// 503 with `Retry-After`.
    #[response(status = 503, description = "Database unavailable")]
    Unavailable(ErrorBody),
}

/// The tenant a request reads: the key's own, or the one `?tenant=` names if the key may.
fn tenant_of(auth: &Authorized<ShipmentsRead>, raw: Option<&str>) -> Result<TenantId, HttpError> {
    let requested = raw
        .map(TenantId::parse)
        .transpose()
        .map_err(|error| HttpError::bad_request(format!("tenant: {error}")))?;
    Ok(auth.tenant_for(requested.as_ref())?)
}

/// `GET /v1/shipments/{carrier}/{tracking_number}`: a shipment with its history, newest first.
#[utoipa::path(
    get,
    path = "/v1/shipments/{carrier}/{tracking_number}",
    tag = "shipments",
    summary = "A shipment and its history",
    params(ShipmentPath, TenantQuery),
    responses(
        (status = 200, description = "The shipment", body = ShipmentView),
        (status = 400, description = "Invalid carrier, tracking number or tenant", body = ErrorBody),
        (status = 403, description = "The key lacks `shipments:read`, or names another tenant", body = ErrorBody),
        (status = 404, description = "No such shipment in the key's tenant", body = ErrorBody),
        KeyRefusal,
        DatabaseRefusal,
    ),
    security(("api_key" = []))
)]
async fn get_shipment(
    auth: Authorized<ShipmentsRead>,
    State(api): State<Api>,
    Path(path): Path<ShipmentPath>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<ShipmentView>, HttpError> {
    let tenant = tenant_of(&auth, query.tenant.as_deref())?;
    let carrier = CarrierCode::parse(&path.carrier)
        .map_err(|error| HttpError::bad_request(error.to_string()))?;
    let tracking_number = TrackingNumber::parse(&path.tracking_number)
        .map_err(|error| HttpError::bad_request(error.to_string()))?;
    let found = api
        .reads
        .get_shipment(&tenant, &carrier, &tracking_number)
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "shipment lookup failed");
            database_unavailable()
        })?;
    found.map(Json).ok_or_else(|| {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no shipment {carrier}/{tracking_number} is known"),
        )
    })
}

/// `GET /v1/shipments?order_number=…`: the shipments of an order.
#[utoipa::path(
    get,
    path = "/v1/shipments",
    tag = "shipments",
    summary = "Shipments by order number",
    params(OrderQuery),
    responses(
        (status = 200, description = "`{\"shipments\": [...]}`, possibly empty", body = ShipmentList),
        (status = 400, description = "order_number missing", body = ErrorBody),
        (status = 403, description = "The key lacks `shipments:read`", body = ErrorBody),
        KeyRefusal,
        DatabaseRefusal,
    ),
    security(("api_key" = []))
)]
async fn find_shipments(
    auth: Authorized<ShipmentsRead>,
    State(api): State<Api>,
    Query(query): Query<OrderQuery>,
) -> Result<Json<ShipmentList>, HttpError> {
    let tenant = tenant_of(&auth, query.tenant.as_deref())?;
    let Some(order_number) = query.order_number.filter(|value| !value.trim().is_empty()) else {
        return Err(HttpError::bad_request(
            "the query parameter order_number is required",
        ));
    };
    let shipments = api
        .reads
        .find_by_order_number(&tenant, order_number.trim())
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "order lookup failed");
            database_unavailable()
        })?;
    Ok(Json(ShipmentList { shipments }))
}

/// `GET /readyz`: 200 when the database answers the merge's pool and a consumer is up, else 503.
async fn readyz(State(Api { worker, .. }): State<Api>) -> Response {
    // Probed every few seconds by orchestrators: never a trace of its own.
    let database = waybill_telemetry::trace::untraced(worker.store().ping())
        .await
        .is_ok();
    let broker = worker.consumers_up() > 0;
    waybill_http::operations::readiness(Readiness::of(broker, Some(database)))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Waybill worker API",
        description = "Shipments and their histories, per tenant; health and metrics.",
        license(name = "Apache-2.0")
    ),
    paths(
        get_shipment,
        find_shipments,
        waybill_http::operations::healthz,
        waybill_http::operations::readiness,
        waybill_http::operations::metrics
    ),
    components(schemas(
        ErrorBody,
        Health,
        Readiness,
        ShipmentList,
        ShipmentView,
        waybill_api::HistoryEntry,
        waybill_api::ShipmentSummary
    )),
    modifiers(&ApiKeySecurity)
)]
struct WorkerApi;

/// The worker API's OpenAPI 3.1 document (the combined document of both binaries is committed
/// at `docs/openapi.json` and checked by a test).
pub fn openapi() -> utoipa::openapi::OpenApi {
    <WorkerApi as utoipa::OpenApi>::openapi()
}
