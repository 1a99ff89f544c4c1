//! The V1 wire format, pinned by committed fixtures: messages queued by an older build must
//! decode after a deploy, and this build must write the same shape. If one of these fails, the
//! change is incompatible: add a `…V2` variant instead of changing a V1 one.

use chrono::{TimeZone, Utc};
use waybill_bus::envelope::{EnvelopeError, InboundEnvelope, PollEnvelope, WebhookV1};
use waybill_core::{Status, TimeProvenance};

const WEBHOOK_V1: &str = include_str!("../fixtures/webhook_v1.json");
const WEBHOOK_V1_MINIMAL: &str = include_str!("../fixtures/webhook_v1_minimal.json");
const REGISTER_V1: &str = include_str!("../fixtures/register_v1.json");
const POLL_JOB_V1: &str = include_str!("../fixtures/poll_job_v1.json");

/// Decoding and encoding again gives the fixture back, field for field.
fn assert_same_shape(fixture: &str, encoded: &[u8]) {
    let fixture: serde_json::Value = serde_json::from_str(fixture).expect("fixtures are JSON");
    let encoded: serde_json::Value =
        serde_json::from_slice(encoded).expect("envelopes encode to JSON");
    assert_eq!(encoded, fixture);
}

/// Decodes an inbound fixture and checks that it encodes back to the same shape.
fn decode_inbound(fixture: &str) -> InboundEnvelope {
    let envelope = InboundEnvelope::decode(fixture.as_bytes())
        .unwrap_or_else(|error| panic!("the fixture does not decode: {error:?}"));
    assert_same_shape(fixture, &envelope.encode());
    envelope
}

/// The webhook an inbound envelope holds; a panic when it holds something else.
fn webhook_v1(envelope: &InboundEnvelope) -> &WebhookV1 {
    let InboundEnvelope::WebhookV1(webhook) = envelope else {
        panic!("expected a WebhookV1, got {envelope:?}");
    };
    webhook
}

#[test]
fn a_queued_webhook_v1_still_decodes() {
    let envelope = decode_inbound(WEBHOOK_V1);
    let webhook = webhook_v1(&envelope);
    assert_eq!(webhook.id.as_str(), "3f2b8c0d9e1a4b5c6d7e8f9012345678");
    assert_eq!(webhook.source.as_str(), "starshipit-main");
    assert_eq!(webhook.tenant.as_str(), "acme");
    assert!(webhook.require_registration);
    assert_eq!(webhook.provider_event_id.as_deref(), Some("evt_7f3a"));
    assert_eq!(
        webhook.received_at,
        Utc.with_ymd_and_hms(2026, 11, 2, 8, 16, 3).unwrap() + chrono::Duration::milliseconds(250)
    );
    assert_eq!(webhook.events.len(), 2);
    assert_eq!(webhook.events[1].status, Status::OutForDelivery);
    assert_eq!(
        webhook.events[1].time_provenance,
        TimeProvenance::AssumedZone {
            zone: "Australia/Sydney".into()
        }
    );
    assert_eq!(
        webhook.events[0].id.as_str(),
        "9f0fbe7ea7a65352cc24f1c673ce93ab"
    );
    assert!(webhook.raw_body.contains("QQQ001737901000931501"));
    assert_eq!(
        envelope.traceparent(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
}

#[test]
fn a_webhook_v1_without_optional_fields_decodes() {
    let envelope = decode_inbound(WEBHOOK_V1_MINIMAL);
    let webhook = webhook_v1(&envelope);
    assert!(webhook.events.is_empty());
    assert_eq!(webhook.provider_event_id, None);
    assert_eq!(webhook.traceparent, None);
}

#[test]
fn a_queued_register_v1_still_decodes() {
    let envelope = decode_inbound(REGISTER_V1);
    let InboundEnvelope::RegisterV1(registration) = &envelope else {
        panic!("expected a RegisterV1, got {envelope:?}");
    };
    assert_eq!(registration.carrier.as_str(), "aftership");
    assert_eq!(registration.tracking_number.as_str(), "1Z999AA10123456784");
    assert_eq!(registration.order_number.as_deref(), Some("ORD-10043"));
    assert_eq!(registration.metadata["customer_id"], 981);
    assert_eq!(
        registration.source.as_ref().map(|source| source.as_str()),
        Some("aftership")
    );
    assert_eq!(envelope.routing_key(), "register");
}

#[test]
fn a_queued_poll_job_v1_still_decodes() {
    let envelope = PollEnvelope::decode(POLL_JOB_V1.as_bytes()).expect("the V1 fixture decodes");
    let PollEnvelope::PollJobV1(job) = &envelope;
    assert_eq!(job.shipment_id, 123_456);
    assert_eq!(job.attempt, 2);
    assert_eq!(
        job.slot,
        Utc.with_ymd_and_hms(2026, 11, 2, 10, 0, 0).unwrap()
    );
    assert_eq!(job.message_id(), "poll-123456-1793613600");
    assert_same_shape(POLL_JOB_V1, &envelope.encode());
}

#[test]
fn a_poll_job_is_not_an_inbound_envelope_and_vice_versa() {
    assert!(matches!(
        InboundEnvelope::decode(POLL_JOB_V1.as_bytes()),
        Err(EnvelopeError::UnknownType { .. })
    ));
    assert!(matches!(
        PollEnvelope::decode(WEBHOOK_V1.as_bytes()),
        Err(EnvelopeError::UnknownType { .. })
    ));
}
