//! `POST /v1/webhooks/{source}`: verify over the raw bytes, map with the source's profile,
//! publish one confirmed persistent message, and only then answer 200.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use tracing::Instrument;
use waybill_api::params::WebhookPath;
use waybill_api::{Accepted, AcceptedStatus, ErrorBody};
use waybill_bus::envelope::{InboundEnvelope, WebhookV1};
use waybill_bus::{OutboundMessage, PublishError};
use waybill_carriers::UnverifiedRequest;
use waybill_config::PollMode;
use waybill_http::extract::Path;
use waybill_telemetry::trace;

use crate::{ApiError, AppState};

/// Outcome label for `waybill_webhooks_received_total`.
fn outcome_of(result: &Result<Json<Accepted>, ApiError>) -> &'static str {
    match result {
        Ok(_) => "accepted",
        Err(error) => error.code(),
    }
}

/// Receives one courier webhook. Its span continues the courier's trace when the request
/// carries a `traceparent`.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{source}",
    tag = "webhooks",
    summary = "Receive a courier's tracking webhook",
    description = "Verifies the signature over the raw body with the source's carrier profile, maps the payload to tracking events and answers 200 only after RabbitMQ confirmed the persistent message. The body is the courier's own format (see docs/carrier-profiles.md); the signature header depends on the profile.",
    params(WebhookPath),
    request_body(content = Object, content_type = "application/json", description = "The courier's payload, verified byte for byte"),
    responses(
        (status = 200, description = "Queued durably", body = Accepted),
        (status = 400, description = "Not a valid payload for the source's format", body = ErrorBody),
        (status = 401, description = "Missing or bad signature", body = ErrorBody),
        (status = 403, description = "The source is poll-only", body = ErrorBody),
        (status = 404, description = "No such source", body = ErrorBody),
        (status = 408, description = "The request was not received in time", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 429, description = "The source's rate limit is exceeded; see Retry-After", body = ErrorBody),
        (status = 503, description = "Not queued (broker down, nack, timeout); see Retry-After", body = ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Accepted>, ApiError> {
    let started = Instant::now();
    let span = tracing::info_span!("waybill.webhook", source = %source_id);
    if let Some(parent) = incoming_traceparent(&headers) {
        trace::set_parent(&span, parent);
    }
    let result = handle(&state, &source_id, &headers, body)
        .instrument(span)
        .await;
    // Label by source only when the source exists: request paths are not a closed set.
    let source_label = if state.inner.sources.contains_key(&source_id) {
        source_id.clone()
    } else {
        "unknown".to_owned()
    };
    metrics::counter!(
        "waybill_webhooks_received_total",
        "source" => source_label,
        "outcome" => outcome_of(&result)
    )
    .increment(1);
    metrics::histogram!("waybill_webhook_ack_seconds").record(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        if error.status().is_server_error() {
            tracing::warn!(error = %error, "webhook not accepted");
        } else {
            tracing::debug!(error = %error, "webhook rejected");
        }
    }
    result
}

async fn handle(
    state: &AppState,
    source_id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Accepted>, ApiError> {
    let inner = &state.inner;
    let source = inner
        .sources
        .get(source_id)
        .ok_or_else(|| ApiError::UnknownSource(truncate(source_id, 64)))?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(inner.body_limit)
        } else {
            ApiError::BadRequest("the request body could not be read".to_owned())
        }
    })?;
    if source.settings.mode == PollMode::PollOnly {
        return Err(ApiError::WebhooksDisabled(source_id.to_owned()));
    }

    let received_at = Utc::now();
    let request = UnverifiedRequest {
        headers,
        body: &body,
    };
    let verified = source
        .profile
        .verify(request, &source.settings.secrets, received_at)
        .map_err(|error| ApiError::Unauthorized(error.to_string()))?;
    let mut mapped = source
        .profile
        .map_webhook(&verified, received_at)
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    crate::storable::events(&mut mapped.events)?;
    if !mapped.unmapped_statuses.is_empty() {
        metrics::counter!("waybill_unmapped_status_total", "profile" => source.profile.name.clone())
            .increment(mapped.unmapped_statuses.len() as u64);
    }
    let events = mapped.events.len();
    if events == 0 {
        return Ok(Json(Accepted {
            status: AcceptedStatus::Accepted,
            id: None,
            events: 0,
        }));
    }

    let publish_span = tracing::info_span!("waybill.publish", messaging.destination = "inbound");
    // The message carries the publish span's context, so the worker's merge joins this trace;
    // without an exporter, the courier's own `traceparent` is passed through unchanged.
    let traceparent = trace::traceparent_of(&publish_span)
        .or_else(|| incoming_traceparent(headers).map(str::to_owned));
    let envelope = WebhookV1::new(
        source.settings.id.clone(),
        source.settings.tenant.clone(),
        source.settings.require_registration,
        received_at,
        mapped.provider_event_id,
        mapped.events,
        // The body verified as JSON in the mapping step, so it is UTF-8.
        String::from_utf8_lossy(&body).into_owned(),
        traceparent.clone(),
    );
    let id = envelope.id.as_str().to_owned();
    let message = OutboundMessage::new(
        inner.topology.inbound_exchange(),
        Topology::WEBHOOK_ROUTING_KEY,
        InboundEnvelope::WebhookV1(envelope).encode(),
    )
    .with_message_id(id.clone())
    .with_optional_header(trace::TRACEPARENT, traceparent);

    let publish_started = Instant::now();
    let published = tokio::time::timeout(inner.publish_timeout, inner.publisher.publish(message))
        .instrument(publish_span)
        .await;
    metrics::histogram!("waybill_publish_confirm_seconds")
        .record(publish_started.elapsed().as_secs_f64());
    match published {
        Ok(Ok(())) => Ok(Json(Accepted {
            status: AcceptedStatus::Accepted,
            id: Some(id),
            events,
        })),
        Ok(Err(error)) => {
            metrics::counter!("waybill_publish_failures_total", "reason" => publish_failure_label(&error)).increment(1);
            Err(ApiError::Unavailable {
                retry_after: inner.retry_after_secs,
            })
        }
        Err(_elapsed) => {
            metrics::counter!("waybill_publish_failures_total", "reason" => "timeout").increment(1);
            Err(ApiError::Unavailable {
                retry_after: inner.retry_after_secs,
            })
        }
    }
}

use waybill_bus::Topology;

fn publish_failure_label(error: &PublishError) -> &'static str {
    error.kind()
}

/// The request's `traceparent`, if well-formed.
fn incoming_traceparent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(trace::TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .filter(|value| trace::is_valid_traceparent(value))
}

fn truncate(value: &str, max: usize) -> String {
    value.chars().take(max).collect()
}
