//! The versioned wire format of the messages on Waybill's queues.
//!
//! Every message is a JSON object whose `type` names its kind *and version*
//! (`"WebhookV1"`, `"RegisterV1"`, `"PollJobV1"`). **A wire contract:** messages already queued
//! must still decode after a deploy, so a variant's fields may gain optional (`#[serde(default)]`)
//! members but are never renamed or removed; an incompatible change is a new variant (`WebhookV2`)
//! that consumers learn to read before producers start writing it. The committed fixtures in
//! `tests/fixtures/` pin the V1 shapes.
//!
//! A body that is not one of these (not JSON, no `type`, an unknown `type`, invalid fields) is an
//! [`EnvelopeError`]: permanent, so the worker dead-letters it instead of retrying.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use waybill_core::{CarrierCode, EventId, SourceId, TenantId, TrackingEvent, TrackingNumber};

use crate::message::OutboundMessage;
use crate::topology::Topology;

/// The header that carries W3C trace context on every message.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The id of one envelope: 128 random bits as 32 lowercase hex characters. Used as the AMQP
/// `message_id` and returned to the sender of a webhook.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EnvelopeId(String);

/// A string that is not 32 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an envelope id is 32 lowercase hex characters")]
pub struct InvalidEnvelopeId;

impl EnvelopeId {
    /// A new random id.
    pub fn random() -> EnvelopeId {
        EnvelopeId(format!("{:032x}", rand::random::<u128>()))
    }

    /// Parses a transmitted id. It has the form of an event id (32 lowercase hex characters),
    /// so the event id's check decides.
    pub fn parse(raw: &str) -> Result<EnvelopeId, InvalidEnvelopeId> {
        EventId::parse(raw)
            .map(|_| EnvelopeId(raw.to_owned()))
            .map_err(|_| InvalidEnvelopeId)
    }

    /// The id as 32 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

waybill_core::string_conversions!(EnvelopeId, InvalidEnvelopeId);

/// Why a message body is not an envelope Waybill can read. Always permanent.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is not a JSON object.
    #[error("the message is not a JSON object")]
    NotJson(#[source] serde_json::Error),
    /// The body has no string `type` field.
    #[error("the message has no `type` field")]
    MissingType,
    /// The `type` names no kind or version this build reads (e.g. a `WebhookV2` from a newer
    /// producer, or a message for another queue).
    #[error("unknown message type `{found}` (this build reads {expected})")]
    UnknownType {
        /// The `type` found.
        found: String,
        /// The types this decoder reads.
        expected: &'static str,
    },
    /// The `type` is known but the fields do not match it.
    #[error("invalid `{message_type}` message")]
    Invalid {
        /// The `type`.
        message_type: String,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
}

/// A message on the webhooks queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum InboundEnvelope {
    /// A verified webhook delivery and the events mapped from it.
    WebhookV1(WebhookV1),
    /// A shipment registered through the API.
    RegisterV1(RegisterV1),
}

/// A verified webhook delivery, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookV1 {
    /// The envelope id (also the AMQP `message_id`).
    pub id: EnvelopeId,
    /// The source (endpoint) it arrived on.
    pub source: SourceId,
    /// The tenant owning the source.
    pub tenant: TenantId,
    /// When the ingress received it.
    #[serde(with = "waybill_core::rfc3339")]
    pub received_at: DateTime<Utc>,
    /// Whether events for unregistered shipments are parked instead of creating shipments.
    pub require_registration: bool,
    /// The provider's id for the whole delivery, when it sends one (dedupes re-deliveries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_event_id: Option<String>,
    /// The events mapped from the payload by the source's carrier profile.
    pub events: Vec<TrackingEvent>,
    /// The verified body, as received (UTF-8 JSON), for audit and re-mapping.
    pub raw_body: String,
    /// The W3C trace context of the request, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Event elements of this verified delivery that the profile could not map while their
    /// siblings could: the worker keeps them for an operator to see and replay. Absent in
    /// messages from before this field existed (they decode with none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedEventV1>,
    /// The carrier profile that mapped the delivery (set when `rejected` is not empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// One event element a profile could not map, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedEventV1 {
    /// The concrete path of the element in the payload (`$/events/3`).
    pub path: String,
    /// Why, as a closed-set label (`invalid_timestamp`, `wrong_type`, …).
    pub kind: String,
    /// Why, as one sentence naming the path at fault.
    pub reason: String,
    /// The element as it was in the payload.
    pub element: serde_json::Value,
    /// Its tracking number, when that much could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking_number: Option<String>,
}

/// A shipment registration, version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterV1 {
    /// The envelope id (also the AMQP `message_id`).
    pub id: EnvelopeId,
    /// The tenant registering the shipment.
    pub tenant: TenantId,
    /// The source whose events (and polls) the shipment belongs to, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceId>,
    /// The carrier.
    pub carrier: CarrierCode,
    /// The tracking number.
    pub tracking_number: TrackingNumber,
    /// The merchant's order number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_number: Option<String>,
    /// Free-form data the platform attaches (echoed to downstream systems).
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// When the ingress received the registration.
    #[serde(with = "waybill_core::rfc3339")]
    pub received_at: DateTime<Utc>,
    /// The W3C trace context of the request, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// A message on the polls queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PollEnvelope {
    /// Poll one shipment's carrier tracking API once.
    PollJobV1(PollJobV1),
}

/// One poll of one shipment, version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollJobV1 {
    /// The shipment's id in the store.
    pub shipment_id: i64,
    /// The shipment's tenant.
    pub tenant: TenantId,
    /// The source whose carrier API is polled.
    pub source: SourceId,
    /// The carrier.
    pub carrier: CarrierCode,
    /// The tracking number.
    pub tracking_number: TrackingNumber,
    /// The scheduled time slot this job is for (the same slot is one job, however often sent).
    #[serde(with = "waybill_core::rfc3339")]
    pub slot: DateTime<Utc>,
    /// How many times this slot was attempted before (0 on the first).
    pub attempt: u32,
    /// The W3C trace context of the scheduler's run, when traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl WebhookV1 {
    /// A new envelope with a random id.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: SourceId,
        tenant: TenantId,
        require_registration: bool,
        received_at: DateTime<Utc>,
        provider_event_id: Option<String>,
        events: Vec<TrackingEvent>,
        raw_body: String,
        traceparent: Option<String>,
    ) -> WebhookV1 {
        WebhookV1 {
            id: EnvelopeId::random(),
            source,
            tenant,
            received_at,
            require_registration,
            provider_event_id,
            events,
            raw_body,
            traceparent,
            rejected: Vec::new(),
            profile: None,
        }
    }
}

impl InboundEnvelope {
    /// The envelope id.
    pub fn id(&self) -> &EnvelopeId {
        match self {
            InboundEnvelope::WebhookV1(webhook) => &webhook.id,
            InboundEnvelope::RegisterV1(registration) => &registration.id,
        }
    }

    /// The trace context it carries.
    pub fn traceparent(&self) -> Option<&str> {
        match self {
            InboundEnvelope::WebhookV1(webhook) => webhook.traceparent.as_deref(),
            InboundEnvelope::RegisterV1(registration) => registration.traceparent.as_deref(),
        }
    }

    /// The routing key it is published with on the inbound exchange.
    pub fn routing_key(&self) -> &'static str {
        match self {
            InboundEnvelope::WebhookV1(_) => Topology::WEBHOOK_ROUTING_KEY,
            InboundEnvelope::RegisterV1(_) => Topology::REGISTER_ROUTING_KEY,
        }
    }

    /// The JSON body.
    pub fn encode(&self) -> Vec<u8> {
        // Sized for the whole envelope up front (an event is about 500 bytes of JSON, the raw
        // body grows by its escapes), so encoding does not regrow the buffer as it goes.
        let capacity = match self {
            InboundEnvelope::WebhookV1(webhook) => {
                ENVELOPE_OVERHEAD + webhook.raw_body.len() * 9 / 8 + 512 * webhook.events.len()
            }
            InboundEnvelope::RegisterV1(_) => ENVELOPE_OVERHEAD,
        };
        encode_into(Vec::with_capacity(capacity), self)
    }

    /// Reads a body; see [`EnvelopeError`] for what fails.
    pub fn decode(body: &[u8]) -> Result<InboundEnvelope, EnvelopeError> {
        decode(
            body,
            "WebhookV1 and RegisterV1",
            |message_type| match message_type {
                "WebhookV1" => Some(serde_json::from_slice(body).map(InboundEnvelope::WebhookV1)),
                "RegisterV1" => Some(serde_json::from_slice(body).map(InboundEnvelope::RegisterV1)),
                _ => None,
            },
        )
    }

    /// The message to publish: on the inbound exchange with its routing key, the envelope id as
    /// `message_id` and the trace context as the `traceparent` header.
    pub fn to_message(&self, topology: &Topology) -> OutboundMessage {
        OutboundMessage::new(
            topology.inbound_exchange(),
            self.routing_key(),
            self.encode(),
        )
        .with_message_id(self.id().as_str())
        .with_optional_header(TRACEPARENT_HEADER, self.traceparent())
    }
}

impl PollJobV1 {
    /// The deterministic message id of this job's slot: `poll-<shipment>-<slot unix seconds>`.
    /// The same slot published twice carries the same id.
    pub fn message_id(&self) -> String {
        format!("poll-{}-{}", self.shipment_id, self.slot.timestamp())
    }
}

impl PollEnvelope {
    /// The JSON body.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Reads a body; see [`EnvelopeError`] for what fails.
    pub fn decode(body: &[u8]) -> Result<PollEnvelope, EnvelopeError> {
        decode(body, "PollJobV1", |message_type| match message_type {
            "PollJobV1" => Some(serde_json::from_slice(body).map(PollEnvelope::PollJobV1)),
            _ => None,
        })
    }

    /// The message to publish: on the inbound exchange with the poll routing key, the slot's
    /// deterministic id as `message_id` and the trace context as `traceparent`.
    pub fn to_message(&self, topology: &Topology) -> OutboundMessage {
        let PollEnvelope::PollJobV1(job) = self;
        OutboundMessage::new(
            topology.inbound_exchange(),
            Topology::POLL_ROUTING_KEY,
            self.encode(),
        )
        .with_message_id(job.message_id())
        .with_optional_header(TRACEPARENT_HEADER, job.traceparent.as_deref())
    }
}

/// The bytes of an envelope besides its events and raw body: ids, names, times, trace context.
const ENVELOPE_OVERHEAD: usize = 512;

fn encode(value: &impl Serialize) -> Vec<u8> {
    encode_into(Vec::with_capacity(ENVELOPE_OVERHEAD), value)
}

fn encode_into(mut buffer: Vec<u8>, value: &impl Serialize) -> Vec<u8> {
    // Cannot fail: every field serialises to JSON (string map keys only, no fallible
    // `Serialize` impls), and writing to a Vec cannot fail.
    serde_json::to_writer(&mut buffer, value)
        .unwrap_or_else(|error| unreachable!("envelopes always serialise: {error}"));
    buffer
}

/// Reads an envelope: its `type` first, so that an unknown kind or version is reported as such
/// rather than as serde's "unknown variant", then the body straight into the variant struct
/// that `variant` picks for it (`None`: a type this build does not read). Decoding the enum
/// itself would first copy the whole body into serde's buffered form to find the tag wherever
/// it is: two thirds of the instructions of the worker's decoding (docs/performance.md).
fn decode<T>(
    body: &[u8],
    expected: &'static str,
    variant: impl FnOnce(&str) -> Option<Result<T, serde_json::Error>>,
) -> Result<T, EnvelopeError> {
    if !body.trim_ascii_start().starts_with(b"{") {
        // A derived struct would also accept a JSON array; an envelope is an object.
        return Err(EnvelopeError::NotJson(serde::de::Error::custom(
            "expected a JSON object",
        )));
    }
    let message_type = message_type(body)?;
    match variant(&message_type) {
        None => Err(EnvelopeError::UnknownType {
            found: message_type.into_owned(),
            expected,
        }),
        Some(Ok(envelope)) => Ok(envelope),
        // Not JSON after all past the type read up front: said so, as a whole-body parse would.
        Some(Err(source)) if source.is_syntax() || source.is_eof() => {
            Err(EnvelopeError::NotJson(source))
        }
        Some(Err(source)) => Err(EnvelopeError::Invalid {
            message_type: message_type.into_owned(),
            source,
        }),
    }
}

/// The `type` of an envelope that is a JSON object: read from the first bytes where every
/// envelope this crate writes has it ([`waybill_core::tagged::leading_type`]), else from a parse
/// of the whole body that skips everything but the type.
fn message_type(body: &[u8]) -> Result<std::borrow::Cow<'_, str>, EnvelopeError> {
    if let Some(found) = waybill_core::tagged::leading_type(body) {
        return Ok(std::borrow::Cow::Borrowed(found));
    }
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        message_type: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(body).map_err(EnvelopeError::NotJson)?;
    match probe.message_type {
        Some(serde_json::Value::String(message_type)) => Ok(std::borrow::Cow::Owned(message_type)),
        _ => Err(EnvelopeError::MissingType),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// A mapped event: the first of the committed V1 webhook fixture's.
    fn event() -> TrackingEvent {
        let fixture = include_bytes!("../tests/fixtures/webhook_v1.json");
        let InboundEnvelope::WebhookV1(webhook) = InboundEnvelope::decode(fixture).unwrap() else {
            panic!("the fixture is a webhook");
        };
        webhook.events[0].clone()
    }

    /// A registration of shipment QQQ001 with an order number and metadata.
    fn registration() -> InboundEnvelope {
        InboundEnvelope::RegisterV1(RegisterV1 {
            id: EnvelopeId::random(),
            tenant: TenantId::default_tenant(),
            source: None,
            carrier: CarrierCode::parse("starshipit").unwrap(),
            tracking_number: TrackingNumber::parse("QQQ001").unwrap(),
            order_number: Some("ORD-1".into()),
            metadata: serde_json::json!({"priority": "high"}),
            received_at: Utc.with_ymd_and_hms(2026, 11, 2, 8, 31, 0).unwrap(),
            traceparent: None,
        })
    }

    /// Shipment 42's poll job for one slot, traced.
    fn poll_job() -> PollJobV1 {
        PollJobV1 {
            shipment_id: 42,
            tenant: TenantId::default_tenant(),
            source: SourceId::parse("aftership").unwrap(),
            carrier: CarrierCode::parse("aftership").unwrap(),
            tracking_number: TrackingNumber::parse("1Z999").unwrap(),
            slot: Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
            attempt: 0,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        }
    }

    #[test]
    fn a_webhook_envelope_round_trips() {
        let envelope = InboundEnvelope::WebhookV1(WebhookV1::new(
            SourceId::parse("starshipit-main").unwrap(),
            TenantId::default_tenant(),
            false,
            Utc.with_ymd_and_hms(2026, 11, 2, 8, 31, 0).unwrap(),
            Some("evt_1".into()),
            vec![event()],
            r#"{"hello":"world"}"#.into(),
            None,
        ));
        let decoded = InboundEnvelope::decode(&envelope.encode()).unwrap();
        assert_eq!(decoded, envelope);
    }

    #[test]
    fn rejected_events_round_trip_and_older_messages_decode_without_them() {
        let mut webhook = WebhookV1::new(
            SourceId::parse("kea").unwrap(),
            TenantId::default_tenant(),
            false,
            Utc.with_ymd_and_hms(2026, 11, 2, 8, 31, 0).unwrap(),
            None,
            vec![event()],
            r#"{"events":[{},{"time":"x"}]}"#.into(),
            None,
        );
        webhook.profile = Some("kea-parcel".into());
        webhook.rejected.push(RejectedEventV1 {
            path: "$/events/1".into(),
            kind: "invalid_timestamp".into(),
            reason: "the timestamp at $/events/1/time is invalid: …".into(),
            element: serde_json::json!({"time": "x"}),
            tracking_number: Some("QQQ001".into()),
        });
        let envelope = InboundEnvelope::WebhookV1(webhook);
        let encoded = envelope.encode();
        assert_eq!(InboundEnvelope::decode(&encoded).unwrap(), envelope);
        // A message of the previous version (no `rejected`, no `profile`) still decodes.
        let mut older: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
        let object = older.as_object_mut().unwrap();
        object.remove("rejected");
        object.remove("profile");
        let InboundEnvelope::WebhookV1(decoded) =
            InboundEnvelope::decode(&serde_json::to_vec(&older).unwrap()).unwrap()
        else {
            panic!("a webhook")
        };
        assert!(decoded.rejected.is_empty() && decoded.profile.is_none());
        // A webhook without rejected events is encoded exactly as before.
        let plain = InboundEnvelope::WebhookV1(WebhookV1::new(
            SourceId::parse("kea").unwrap(),
            TenantId::default_tenant(),
            false,
            Utc.with_ymd_and_hms(2026, 11, 2, 8, 31, 0).unwrap(),
            None,
            vec![event()],
            "{}".into(),
            None,
        ));
        let text = String::from_utf8(plain.encode()).unwrap();
        assert!(
            !text.contains("rejected") && !text.contains("\"profile\""),
            "{text}"
        );
    }

    #[test]
    fn registration_and_poll_envelopes_round_trip_into_their_own_variant() {
        let registration = registration();
        assert_eq!(
            InboundEnvelope::decode(&registration.encode()).unwrap(),
            registration
        );
        let job = PollEnvelope::PollJobV1(PollJobV1 {
            attempt: 2,
            traceparent: None,
            ..poll_job()
        });
        assert_eq!(PollEnvelope::decode(&job.encode()).unwrap(), job);
        // A webhook body is not a poll job, whatever fields they share.
        let error = PollEnvelope::decode(&registration.encode()).unwrap_err();
        assert!(
            matches!(&error, EnvelopeError::UnknownType { found, .. } if found == "RegisterV1"),
            "{error:?}"
        );
    }

    #[test]
    fn unknown_types_and_versions_are_named() {
        let error = InboundEnvelope::decode(br#"{"type":"WebhookV2","id":"x"}"#).unwrap_err();
        assert!(
            matches!(&error, EnvelopeError::UnknownType { found, .. } if found == "WebhookV2"),
            "{error:?}"
        );
        assert!(error.to_string().contains("WebhookV2"));
        let error = InboundEnvelope::decode(br#"{"type":"PollJobV1"}"#).unwrap_err();
        assert!(matches!(error, EnvelopeError::UnknownType { .. }));
        assert!(matches!(
            InboundEnvelope::decode(b"{}"),
            Err(EnvelopeError::MissingType)
        ));
        assert!(matches!(
            InboundEnvelope::decode(br#"{"type":7}"#),
            Err(EnvelopeError::MissingType)
        ));
        assert!(matches!(
            InboundEnvelope::decode(b"not json"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            InboundEnvelope::decode(b"[1]"),
            Err(EnvelopeError::NotJson(_))
        ));
        let error = InboundEnvelope::decode(br#"{"type":"RegisterV1","id":"nothex"}"#).unwrap_err();
        assert!(matches!(error, EnvelopeError::Invalid { .. }), "{error:?}");
    }

    #[test]
    fn the_type_is_found_wherever_it_is_and_however_it_is_written() {
        let registration = registration();
        let encoded = registration.encode();
        assert!(
            encoded.starts_with(br#"{"type":"RegisterV1","#),
            "written first"
        );
        // Another producer's key order (a `Value` map sorts its keys: `id` before `type`).
        let value: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
        let reordered = serde_json::to_vec(&value).unwrap();
        assert!(!reordered.starts_with(br#"{"type""#));
        assert_eq!(InboundEnvelope::decode(&reordered).unwrap(), registration);
        // Spaces, and an escape inside the type.
        let spaced = serde_json::to_vec_pretty(&value).unwrap();
        assert_eq!(InboundEnvelope::decode(&spaced).unwrap(), registration);
        let escaped = String::from_utf8(encoded.clone()).unwrap().replacen(
            "RegisterV1",
            "Register\\u0056\\u0031",
            1,
        );
        assert_eq!(
            InboundEnvelope::decode(escaped.as_bytes()).unwrap(),
            registration
        );
        // A body cut short after a type read up front is not JSON, as before.
        let cut = &encoded[..encoded.len() / 2];
        assert!(
            matches!(InboundEnvelope::decode(cut), Err(EnvelopeError::NotJson(_))),
            "{:?}",
            InboundEnvelope::decode(cut)
        );
        let trailing = [encoded.as_slice(), b"x"].concat();
        assert!(matches!(
            InboundEnvelope::decode(&trailing),
            Err(EnvelopeError::NotJson(_))
        ));
    }

    #[test]
    fn envelope_ids_are_random_hex() {
        let (a, b) = (EnvelopeId::random(), EnvelopeId::random());
        assert_ne!(a, b);
        assert_eq!(EnvelopeId::parse(a.as_str()), Ok(a));
        assert!(EnvelopeId::parse("ABC").is_err());
    }

    #[test]
    fn messages_carry_id_route_and_trace() {
        let topology = Topology::new("t.");
        let message = PollEnvelope::PollJobV1(poll_job()).to_message(&topology);
        assert_eq!(message.exchange, "t.waybill.inbound");
        assert_eq!(message.routing_key, "poll");
        assert_eq!(message.message_id.as_deref(), Some("poll-42-1800000000"));
        assert!(message.headers.contains_key(TRACEPARENT_HEADER));
    }
}
