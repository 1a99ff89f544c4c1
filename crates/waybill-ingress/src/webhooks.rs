//! `POST /v1/webhooks/{source}`: verify over the raw bytes, map with the source's profile,
//! publish one confirmed persistent message, and only then answer 200.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use tracing::Instrument;
use waybill_api::params::WebhookPath;
use waybill_api::{Accepted, AcceptedStatus, ErrorBody};
use waybill_bus::envelope::{InboundEnvelope, RejectedEventV1, WebhookV1};
use waybill_bus::{OutboundMessage, PublishError};
use waybill_carriers::{Credentials, Mapped, UnverifiedRequest, VerifiedRequest, VerifyError};
use waybill_config::PollMode;
use waybill_core::storable;
use waybill_http::extract::Path;
use waybill_telemetry::trace;

use crate::{ApiError, AppState, series};

/// The outcome label of an accepted webhook, whose series each source keeps a handle to.
const ACCEPTED: &str = "accepted";

/// Outcome label for `waybill_webhooks_received_total`.
fn outcome_of(result: &Result<Json<Accepted>, ApiError>) -> &'static str {
    match result {
        Ok(_) => ACCEPTED,
        Err(error) => error.code(),
    }
}

/// Counts one webhook request in `waybill_webhooks_received_total`. Labelled by source only
/// when the source exists: request paths are not a closed set.
pub(crate) fn count_received(state: &AppState, source_id: &str, outcome: &'static str) {
    let source = match state.inner.sources.get(source_id) {
        Some(source) if outcome == ACCEPTED => {
            source.series.accepted(source_id).increment(1);
            return;
        }
        Some(_) => source_id.to_owned(),
        None => "unknown".to_owned(),
    };
    metrics::counter!(
        "waybill_webhooks_received_total",
        "source" => source,
        "outcome" => outcome
    )
    .increment(1);
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
        (status = 503, description = "Not queued (broker down, nack, timeout, or a signing key id not known yet); see Retry-After", body = ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Path(source_id): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Accepted>, ApiError> {
    let started = Instant::now();
    let span = tracing::info_span!("waybill.webhook", source = %source_id);
    if let Some(parent) = incoming_traceparent(&headers) {
        trace::set_parent(&span, parent);
    }
    let target = uri.to_string();
    let result = handle(&state, &source_id, &target, &headers, body)
        .instrument(span)
        .await;
    count_received(&state, &source_id, outcome_of(&result));
    series::ack_seconds().record(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        if error.status().is_server_error() {
            tracing::warn!(error = %error, "webhook not accepted");
        } else {
            tracing::debug!(error = %error, "webhook rejected");
        }
    }
    result
}

/// Resolves the source, verifies the request, maps it, and publishes the events (and the
/// events that could not be mapped, for replay) in one confirmed message.
async fn handle(
    state: &AppState,
    source_id: &str,
    target: &str,
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
    let verified = verify(state, source, request, target, received_at).await?;
    // When each configured secret last verified a request: the console's rotation view (an old
    // secret that stopped matching can be removed).
    source
        .series
        .secret_matched(source_id, verified.matched_secret())
        .set(received_at.timestamp() as f64);
    let mapped = map(source_id, source, &verified, received_at)?;
    let events = mapped.events.len();
    let rejected = rejected_events(&mapped);
    if events == 0 && rejected.is_empty() {
        return Ok(Json(Accepted {
            status: AcceptedStatus::Accepted,
            id: None,
            events: 0,
            rejected: 0,
            ignored: mapped.ignored,
        }));
    }
    let rejected_count = rejected.len();

    let publish_span = tracing::info_span!("waybill.publish", messaging.destination = "inbound");
    // The message carries the publish span's context, so the worker's merge joins this trace;
    // without an exporter, the courier's own `traceparent` is passed through unchanged.
    let traceparent = trace::traceparent_of(&publish_span)
        .or_else(|| incoming_traceparent(headers).map(str::to_owned));
    let envelope = envelope(source, received_at, mapped, rejected, &body, traceparent);
    let id = envelope.id.as_str().to_owned();
    publish(state, envelope).instrument(publish_span).await?;
    Ok(Json(Accepted {
        status: AcceptedStatus::Accepted,
        id: Some(id),
        events,
        rejected: rejected_count,
        ignored: false,
    }))
}

/// Maps a verified request with the source's profile, one event at a time (an event that
/// cannot be mapped is kept aside, never its siblings' loss), counting unmapped statuses and
/// ignored requests.
fn map(
    source_id: &str,
    source: &crate::ResolvedSource,
    verified: &VerifiedRequest<'_>,
    received_at: chrono::DateTime<Utc>,
) -> Result<Mapped, ApiError> {
    let mut mapped = source
        .profile
        .map_webhook_isolated(verified, received_at)
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    crate::storable::events(&mut mapped.events)?;
    if !mapped.unmapped_statuses.is_empty() {
        metrics::counter!("waybill_unmapped_status_total", "profile" => source.profile.name.clone())
            .increment(mapped.unmapped_statuses.len() as u64);
    }
    if mapped.ignored {
        metrics::counter!("waybill_webhooks_ignored_total", "source" => source_id.to_owned())
            .increment(1);
    }
    Ok(mapped)
}

/// The message for the worker: the mapped events, the events that could not be mapped (with
/// the profile that failed them), and the raw body they keep for replay.
fn envelope(
    source: &crate::ResolvedSource,
    received_at: chrono::DateTime<Utc>,
    mapped: Mapped,
    rejected: Vec<RejectedEventV1>,
    body: &[u8],
    traceparent: Option<String>,
) -> WebhookV1 {
    let mut envelope = WebhookV1::new(
        source.settings.id.clone(),
        source.settings.tenant.clone(),
        source.settings.require_registration,
        received_at,
        mapped.provider_event_id,
        mapped.events,
        // JSON and XML bodies are UTF-8 (they parsed); a form body need not be. Text, as the
        // storage rule has it: a rejected event keeps this body for its replay.
        storable::text(&String::from_utf8_lossy(body)).into_owned(),
        traceparent,
    );
    if !rejected.is_empty() {
        envelope.rejected = rejected;
        envelope.profile = Some(source.profile.name.clone());
    }
    envelope
}

/// Publishes the envelope, persistent and confirmed, within the publish timeout; a nack, a
/// broker that is down or a timeout is a 503 with `Retry-After`.
async fn publish(state: &AppState, envelope: WebhookV1) -> Result<(), ApiError> {
    let inner = &state.inner;
    let id = envelope.id.as_str().to_owned();
    let traceparent = envelope.traceparent.clone();
    let message = OutboundMessage::new(
        inner.topology.inbound_exchange(),
        Topology::WEBHOOK_ROUTING_KEY,
        InboundEnvelope::WebhookV1(envelope).encode(),
    )
    .with_message_id(id)
    .with_optional_header(trace::TRACEPARENT, traceparent);

    let publish_started = Instant::now();
    let published =
        tokio::time::timeout(inner.publish_timeout, inner.publisher.publish(message)).await;
    series::publish_confirm_seconds().record(publish_started.elapsed().as_secs_f64());
    match published {
        Ok(Ok(())) => Ok(()),
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

/// Verifies with the source's secrets, configured public keys and JWKS key set. A key id the
/// JWKS does not have triggers a bounded refresh; still unknown → 503 with `Retry-After`.
async fn verify<'a>(
    state: &AppState,
    source: &crate::ResolvedSource,
    request: UnverifiedRequest<'a>,
    target: &str,
    received_at: chrono::DateTime<Utc>,
) -> Result<VerifiedRequest<'a>, ApiError> {
    let inner = &state.inner;
    let source_id = source.settings.id.as_str();
    let secrets = waybill_config::expose_list(&source.settings.secrets);
    let attempt = |jwks: Option<&waybill_carriers::KeySet>| {
        let credentials = Credentials {
            secrets: &secrets,
            public_keys: Some(&source.public_keys),
            jwks,
            url: Some(target),
        };
        source
            .profile
            .verify_with(request, &credentials, received_at)
    };
    let jwks = inner.jwks.keys(source_id);
    let outcome = match attempt(jwks.as_deref()) {
        Err(VerifyError::UnknownKey { .. }) if jwks.is_some() => {
            match inner.jwks.refreshed(source_id).await {
                Some(fresh) => attempt(Some(&fresh)),
                None => attempt(jwks.as_deref()),
            }
        }
        other => other,
    };
    outcome.map_err(|error| match error {
        VerifyError::UnknownKey { .. } => ApiError::KeyUnavailable {
            retry_after: inner.retry_after_secs,
        },
        other => ApiError::Unauthorized(other.to_string()),
    })
}

/// The rejected events of a mapping, in the envelope's wire shape.
fn rejected_events(mapped: &Mapped) -> Vec<RejectedEventV1> {
    mapped
        .rejected
        .iter()
        .map(|rejected| RejectedEventV1 {
            path: storable::text(&rejected.path).into_owned(),
            kind: rejected.kind.to_owned(),
            reason: storable::text(&rejected.reason).into_owned(),
            element: storable_element(&rejected.element),
            tracking_number: rejected
                .tracking_number
                .as_deref()
                .map(|number| storable::text(number).into_owned()),
        })
        .collect()
}

/// A rejected element as the storage rule has it: U+0000 replaced in its strings and keys; when
/// that would merge two keys, the element's JSON text instead (still readable, still replayable
/// from the stored body).
fn storable_element(element: &serde_json::Value) -> serde_json::Value {
    let mut copy = element.clone();
    match storable::replace_in_json(&mut copy) {
        Ok(_) => copy,
        Err(_) => serde_json::Value::String(storable::text(&element.to_string()).into_owned()),
    }
}

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
