//! `POST /v1/shipments`: register one shipment (a JSON object) or several (an array of up to
//! `polling.max_registrations_per_request`). Like a webhook, a registration only becomes a
//! confirmed message (`RegisterV1` on `waybill.inbound`); the worker upserts it idempotently,
//! applies any events parked for it, and its scheduler starts polling it when its source is
//! polled. Registering the same shipment twice is harmless.
//!
//! ```json
//! {"carrier": "starshipit", "tracking_number": "T01234567890",
//!  "source": "starshipit-main", "order_number": "ORD-1", "metadata": {"channel": "web"}}
//! ```
//!
//! * `source` (optional): the configured source whose events and polls the shipment belongs to.
//!   Without it, the tenant's only source whose profile is `carrier` is used, if there is exactly
//!   one (several: 400, name one); with no such source the shipment is tracked by webhooks only.
//! * `carrier` (optional when `source` is given): defaults to the source's profile name.
//! * `tenant` (optional): the API key's own tenant; another tenant needs an `admin` key (403).
//!
//! Answers `202` with each shipment's envelope id once the broker confirmed every message; `400`
//! with the reason (and the item's index) for bad input, nothing published; `503` with
//! `Retry-After` when the broker did not confirm (retrying the whole request is safe).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use waybill_api::patterns::MAX_ORDER_NUMBER_CHARS;
use waybill_api::{
    AcceptedStatus, ErrorBody, Registered, RegisteredShipment, RegistrationBody,
    RegistrationRequest,
};
use waybill_bus::envelope::{EnvelopeId, InboundEnvelope, RegisterV1};
use waybill_core::{CarrierCode, SourceId, TenantId, TrackingNumber};
use waybill_http::HttpError;
use waybill_http::auth::{Authorized, ShipmentsWrite};
use waybill_http::extract::JsonBody;
use waybill_http::openapi::KeyRefusal;
use waybill_telemetry::trace;

use crate::{ApiError, AppState};

/// Registers shipments. The API key comes first: an unauthenticated caller learns nothing about
/// its body (401 before 400).
#[utoipa::path(
    post,
    path = "/v1/shipments",
    tag = "shipments",
    summary = "Register shipments for polling and order lookups",
    description = "One object or an array (up to the configured batch size). Queued like a webhook: 202 after RabbitMQ confirmed every registration; the worker upserts idempotently and applies events parked for them.",
    request_body(content = RegistrationBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued durably", body = Registered),
        (status = 400, description = "Invalid item (the message names it and the field)", body = ErrorBody),
        (status = 403, description = "The key lacks `shipments:write`, or names another tenant", body = ErrorBody),
        (status = 404, description = "The item names a source that is not configured for the key's tenant (`unknown_source`)", body = ErrorBody),
        (status = 408, description = "The request was not received in time", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "The body is not declared `application/json`", body = ErrorBody),
        (status = 503, description = "Not queued, or no key set yet; see Retry-After", body = ErrorBody),
        KeyRefusal,
    ),
    security(("api_key" = []))
)]
pub async fn register(
    auth: Authorized<ShipmentsWrite>,
    State(state): State<AppState>,
    body: Result<JsonBody, HttpError>,
) -> Response {
    let result = handle(&auth, &state, body).await;
    let outcome = match &result {
        Ok(_) => "accepted",
        Err(error) => error.code(),
    };
    metrics::counter!("waybill_registrations_received_total", "outcome" => outcome).increment(1);
    match result {
        Ok(registered) => {
            metrics::counter!("waybill_shipments_registered_total")
                .increment(registered.shipments.len() as u64);
            (StatusCode::ACCEPTED, Json(registered)).into_response()
        }
        Err(error) => {
            if error.status().is_server_error() {
                tracing::warn!(error = %error, "registration not accepted");
            } else {
                tracing::debug!(error = %error, "registration rejected");
            }
            error.into_response()
        }
    }
}

async fn handle(
    auth: &Authorized<ShipmentsWrite>,
    state: &AppState,
    body: Result<JsonBody, HttpError>,
) -> Result<Registered, HttpError> {
    let inner = &state.inner;
    let JsonBody(body) = body?;
    let (requests, is_array) = parse_body(&body, inner.max_registrations)?;
    let received_at = Utc::now();
    let span = tracing::info_span!("waybill.register", shipments = requests.len());
    let traceparent = trace::traceparent_of(&span);
    let mut envelopes = Vec::with_capacity(requests.len());
    for (index, request) in requests.into_iter().enumerate() {
        let at = |reason: String| {
            if is_array {
                ApiError::BadRequest(format!("shipments[{index}]: {reason}"))
            } else {
                ApiError::BadRequest(reason)
            }
        };
        let requested_tenant = request
            .tenant
            .as_deref()
            .map(TenantId::parse)
            .transpose()
            .map_err(|error| at(format!("`tenant`: {error}")))?;
        let tenant = auth.tenant_for(requested_tenant.as_ref())?;
        let envelope = resolve(state, request, tenant, received_at, traceparent.as_ref()).map_err(
            |error| match error {
                ItemError::Invalid(reason) => at(reason),
                ItemError::UnknownSource(id) => ApiError::UnknownSource(id),
            },
        )?;
        envelopes.push(envelope);
    }

    let messages = envelopes
        .iter()
        .map(|envelope| InboundEnvelope::RegisterV1(envelope.clone()).to_message(&inner.topology))
        .collect();
    let published = tokio::time::timeout(
        inner.publish_timeout,
        inner.publisher.publish_many(messages),
    )
    .await;
    let confirmed = match published {
        Ok(results) => results.iter().all(Result::is_ok),
        Err(_elapsed) => false,
    };
    if !confirmed {
        metrics::counter!("waybill_publish_failures_total", "reason" => "registration")
            .increment(1);
        return Err(ApiError::Unavailable {
            retry_after: inner.retry_after_secs,
        }
        .into());
    }
    Ok(Registered {
        status: AcceptedStatus::Accepted,
        shipments: envelopes
            .into_iter()
            .map(|envelope| RegisteredShipment {
                id: envelope.id.as_str().to_owned(),
                tenant: envelope.tenant.as_str().to_owned(),
                carrier: envelope.carrier.as_str().to_owned(),
                tracking_number: envelope.tracking_number.as_str().to_owned(),
                source: envelope.source.map(|source| source.as_str().to_owned()),
            })
            .collect(),
    })
}

/// A JSON object or a non-empty array of at most `max` objects; true for an array.
fn parse_body(body: &[u8], max: usize) -> Result<(Vec<RegistrationRequest>, bool), ApiError> {
    let document: serde_json::Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::BadRequest(format!("the body is not valid JSON: {error}")))?;
    let is_array = document.is_array();
    let items = match document {
        serde_json::Value::Array(items) => {
            if items.is_empty() {
                return Err(ApiError::BadRequest(
                    "the array holds no shipment".to_owned(),
                ));
            }
            if items.len() > max {
                return Err(ApiError::BadRequest(format!(
                    "at most {max} shipments may be registered per request, got {}",
                    items.len()
                )));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(index, item)| {
                    serde_json::from_value(item).map_err(|error| {
                        ApiError::BadRequest(format!("shipments[{index}]: {error}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        object @ serde_json::Value::Object(_) => vec![
            serde_json::from_value(object)
                .map_err(|error| ApiError::BadRequest(format!("invalid shipment: {error}")))?,
        ],
        _ => {
            return Err(ApiError::BadRequest(
                "the body must be a shipment object or an array of them".to_owned(),
            ));
        }
    };
    Ok((items, is_array))
}

/// Why one registration item was refused.
enum ItemError {
    /// 400, with the reason.
    Invalid(String),
    /// 404: no such source in the caller's tenant.
    UnknownSource(String),
}

impl From<String> for ItemError {
    fn from(reason: String) -> ItemError {
        ItemError::Invalid(reason)
    }
}

/// Validates one request and resolves its source and carrier.
fn resolve(
    state: &AppState,
    request: RegistrationRequest,
    tenant: TenantId,
    received_at: chrono::DateTime<Utc>,
    traceparent: Option<&String>,
) -> Result<RegisterV1, ItemError> {
    let sources = &state.inner.sources;
    let source = match request.source.as_deref() {
        Some(raw) => {
            let id = SourceId::parse(raw).map_err(|error| format!("`source`: {error}"))?;
            // Another tenant's source is as unknown as one that does not exist: the answer
            // must not tell whether the id is taken.
            let source = sources
                .get(id.as_str())
                .filter(|source| source.settings.tenant == tenant)
                .ok_or_else(|| ItemError::UnknownSource(id.as_str().to_owned()))?;
            Some(source)
        }
        None => None,
    };
    let carrier = match (&request.carrier, source) {
        (Some(carrier), _) => {
            CarrierCode::parse(carrier).map_err(|error| format!("`carrier`: {error}"))?
        }
        (None, Some(source)) => CarrierCode::parse(&source.profile.name)
            .map_err(|error| format!("`carrier`: {error}"))?,
        (None, None) => return Err("`carrier` or `source` is required".to_owned().into()),
    };
    let tracking_number = TrackingNumber::parse(&request.tracking_number)
        .map_err(|error| format!("`tracking_number`: {error}"))?;
    let source: Option<SourceId> = match source {
        Some(source) => Some(source.settings.id.clone()),
        None => {
            let mut candidates = sources.values().filter(|source| {
                source.settings.tenant == tenant && source.profile.name == carrier.as_str()
            });
            match (candidates.next(), candidates.next()) {
                (Some(only), None) => Some(only.settings.id.clone()),
                (None, _) => None,
                (Some(_), Some(_)) => {
                    return Err(ItemError::Invalid(format!(
                        "several sources track carrier `{carrier}`; name one with `source`"
                    )));
                }
            }
        }
    };
    if let Some(order_number) = &request.order_number
        && (order_number.is_empty() || order_number.chars().count() > MAX_ORDER_NUMBER_CHARS)
    {
        return Err(
            format!("`order_number` must be 1 to {MAX_ORDER_NUMBER_CHARS} characters").into(),
        );
    }
    let mut metadata = match request.metadata {
        None | Some(serde_json::Value::Null) => serde_json::json!({}),
        Some(object @ serde_json::Value::Object(_)) => object,
        Some(_) => return Err("`metadata` must be a JSON object".to_owned().into()),
    };
    let mut order_number = request.order_number;
    crate::storable::registration(&mut order_number, &mut metadata)?;
    Ok(RegisterV1 {
        id: EnvelopeId::random(),
        tenant,
        source,
        carrier,
        tracking_number,
        order_number,
        metadata,
        received_at,
        traceparent: traceparent.cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_an_object_or_a_bounded_array() {
        let one = parse_body(br#"{"carrier":"a","tracking_number":"1"}"#, 2).unwrap();
        assert_eq!((one.0.len(), one.1), (1, false));
        let two = parse_body(
            br#"[{"carrier":"a","tracking_number":"1"},{"source":"s","tracking_number":"2"}]"#,
            2,
        )
        .unwrap();
        assert_eq!((two.0.len(), two.1), (2, true));
        for (body, expected) in [
            (&b"[]"[..], "no shipment"),
            (b"not json", "not valid JSON"),
            (b"7", "object or an array"),
            (b"[{},{},{}]", "at most 2"),
            (br#"[{"tracking_number":"1"},{"nope":1}]"#, "shipments[1]"),
            (br#"{"tracking_number":"1","surprise":true}"#, "surprise"),
        ] {
            let error = parse_body(body, 2).map(|_| ()).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
