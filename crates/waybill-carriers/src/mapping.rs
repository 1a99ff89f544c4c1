//! The mapping engine: one JSON document in, canonical [`TrackingEvent`]s out, driven entirely
//! by the profile's `[mapping]` table. Webhooks and poll responses go through the same code, so
//! the same scan gets the same event id whichever way it arrives.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;
use waybill_core::{
    CarrierCode, Origin, RawStatus, Status, TimeProvenance, TrackingEvent, TrackingEventDraft,
    TrackingNumber,
};

use crate::error::MapError;
use crate::fields::{FieldSpec, Found, scalar_text};
use crate::json::type_name;
use crate::path::{DocumentPath, Scopes};
use crate::status_map::StatusSpec;
use crate::time::{TimeError, TimeSpec};

/// What a payload mapped to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapped {
    /// The events, in payload order, without repeats (two elements that are the same scan
    /// yield one event).
    pub events: Vec<TrackingEvent>,
    /// The provider's id of the whole delivery (AfterShip `event_id`, EasyPost `evt_…`), for
    /// deduplicating retries before any mapping work.
    pub provider_event_id: Option<String>,
    /// Raw statuses that no status map entry matched and so became [`Status::Unknown`],
    /// without repeats, for the "unmapped status" metric.
    pub unmapped_statuses: Vec<String>,
}

/// The `[mapping]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MappingSpec {
    /// Envelopes to look through: the first path that leads to an object becomes the document.
    #[serde(default)]
    pub unwrap: Vec<DocumentPath>,
    /// The most events one payload may yield.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Where the events are.
    pub events: EventsSpec,
    /// Where each field of an event is.
    pub fields: FieldsSpec,
    /// How times are read.
    #[serde(default)]
    pub time: TimeSpec,
    /// How raw statuses map to canonical ones.
    #[serde(default)]
    pub status: StatusSpec,
}

fn default_max_events() -> usize {
    1000
}

/// The `[mapping.events]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsSpec {
    /// An array whose elements are events (checkpoints, scans, tracking details).
    #[serde(default)]
    pub array: Option<DocumentPath>,
    /// Accept a single object where the array is expected, as a one-event array.
    #[serde(default)]
    pub single_object: bool,
    /// An object that is itself one event: the whole payload for one-scan webhooks.
    #[serde(default)]
    pub current: Option<DocumentPath>,
    /// When the current object becomes an event.
    #[serde(default)]
    pub current_when: CurrentWhen,
}

/// When the `current` object yields an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CurrentWhen {
    /// Only when the array is absent or empty (AfterShip: `msg.tag` when there are no
    /// checkpoints).
    #[default]
    NoEvents,
    /// Also beside the array's events, if it has a status (Starshipit's poll: history plus the
    /// current status, which is what its webhooks carry).
    Always,
}

/// The `[mapping.fields]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FieldsSpec {
    pub tracking_number: FieldSpec,
    /// Defaults to the profile's name as a fixed carrier code.
    #[serde(default)]
    pub carrier: Option<FieldSpec>,
    pub status: FieldSpec,
    /// The raw code kept beside the canonical status (part of the event id); defaults to the
    /// status value.
    #[serde(default)]
    pub raw_code: Option<FieldSpec>,
    #[serde(default)]
    pub status_description: Option<FieldSpec>,
    #[serde(default)]
    pub sub_status: Option<FieldSpec>,
    /// Absent, or no candidate has a value: the time of receipt is used.
    #[serde(default)]
    pub time: Option<FieldSpec>,
    #[serde(default)]
    pub location: Option<FieldSpec>,
    #[serde(default)]
    pub message: Option<FieldSpec>,
    #[serde(default)]
    pub order_number: Option<FieldSpec>,
    #[serde(default)]
    pub provider_event_id: Option<FieldSpec>,
    #[serde(default)]
    pub courier: Option<FieldSpec>,
}

/// Per-call facts the payload does not carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapContext<'a> {
    pub origin: Origin,
    pub received_at: DateTime<Utc>,
    /// For polls: the number that was polled. Used when the document has none; documents
    /// about a different number are skipped.
    pub polled: Option<&'a TrackingNumber>,
}

/// The earliest believable scan time; anything before is a zero date or garbage.
fn earliest_plausible() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// How far after receipt a scan time may lie (couriers' clocks and zone mistakes).
const FUTURE_SLACK: TimeDelta = TimeDelta::days(2);

impl MappingSpec {
    /// Maps one document, appending to `out`.
    /// A webhook's document is an object, or an array when the events array is the document
    /// itself (`array = "$"`): `null`, a number, a string or an array elsewhere is refused,
    /// not accepted with zero events.
    pub fn check_root(&self, document: &Value) -> Result<(), MapError> {
        let root_array = self
            .events
            .array
            .as_ref()
            .is_some_and(|DocumentPath(path)| path.to_string() == "$");
        match document {
            Value::Object(_) => Ok(()),
            Value::Array(_) if root_array => Ok(()),
            other => Err(wrong_type(
                "document",
                "$",
                if root_array {
                    "an object or an array"
                } else {
                    "an object"
                },
                other,
            )),
        }
    }

    pub fn map_document(
        &self,
        document: &Value,
        context: MapContext<'_>,
        carrier_default: &FieldSpec,
        out: &mut Mapped,
    ) -> Result<(), MapError> {
        let document = self
            .unwrap
            .iter()
            .find_map(|DocumentPath(path)| {
                path.resolve(Scopes {
                    document,
                    event: None,
                })
                .map(|(value, _)| value)
                .filter(|v| v.is_object())
            })
            .unwrap_or(document);

        let mut elements: Vec<(&Value, String)> = Vec::new();
        if let Some(DocumentPath(array_path)) = &self.events.array {
            match array_path.resolve(Scopes {
                document,
                event: None,
            }) {
                None | Some((Value::Null, _)) => {}
                Some((Value::Array(items), concrete)) => {
                    if out.events.len() + items.len() > self.max_events {
                        return Err(MapError::TooManyEvents {
                            max: self.max_events,
                        });
                    }
                    elements.extend(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| (item, format!("{concrete}/{i}"))),
                    );
                }
                Some((object @ Value::Object(_), concrete)) if self.events.single_object => {
                    elements.push((object, concrete));
                }
                Some((other, concrete)) => {
                    return Err(MapError::WrongType {
                        field: "events array",
                        path: concrete,
                        expected: if self.events.single_object {
                            "an array or an object"
                        } else {
                            "an array"
                        },
                        found: type_name(other),
                    });
                }
            }
        }
        let had_elements = !elements.is_empty();
        for (element, concrete) in &elements {
            if !element.is_object() {
                return Err(wrong_type("event", concrete, "an object", element));
            }
            let scopes = Scopes {
                document,
                event: Some((element, concrete)),
            };
            self.map_event(scopes, context, carrier_default, false, out)?;
        }

        if let Some(DocumentPath(current_path)) = &self.events.current {
            let wanted = !had_elements || self.events.current_when == CurrentWhen::Always;
            if wanted {
                match current_path.resolve(Scopes {
                    document,
                    event: None,
                }) {
                    None | Some((Value::Null, _)) => {}
                    Some((element @ Value::Object(_), concrete)) => {
                        let scopes = Scopes {
                            document,
                            event: Some((element, &concrete)),
                        };
                        self.map_event(scopes, context, carrier_default, had_elements, out)?;
                    }
                    Some((other, concrete)) => {
                        return Err(wrong_type("event", &concrete, "an object", other));
                    }
                }
            }
        }
        if out.events.len() > self.max_events {
            return Err(MapError::TooManyEvents {
                max: self.max_events,
            });
        }
        if out.provider_event_id.is_none()
            && let Some(spec) = &self.fields.provider_event_id
        {
            let scopes = Scopes {
                document,
                event: None,
            };
            out.provider_event_id = optional_text(spec, scopes, "provider event id")?;
        }
        Ok(())
    }

    /// Maps one event element. `optional` (the current object beside array events) skips the
    /// event when it has no status instead of failing.
    fn map_event(
        &self,
        scopes: Scopes<'_>,
        context: MapContext<'_>,
        carrier_default: &FieldSpec,
        optional: bool,
        out: &mut Mapped,
    ) -> Result<(), MapError> {
        let fields = &self.fields;
        let Some(status_found) = fields.status.find(scopes, true) else {
            if optional {
                return Ok(());
            }
            return Err(MapError::MissingField {
                field: "status",
                path: fields.status.describe(),
            });
        };
        let status_text = required_text(status_found, "status")?;

        let tracking_number = match fields.tracking_number.find(scopes, false) {
            Some(found) => {
                let (text, path) = text_and_path(found, "tracking number")?;
                let number = TrackingNumber::parse(&text)
                    .map_err(|source| MapError::InvalidTrackingNumber { path, source })?;
                if context.polled.is_some_and(|polled| *polled != number) {
                    return Ok(());
                }
                number
            }
            None => match context.polled {
                Some(polled) => polled.clone(),
                None => {
                    return Err(MapError::MissingField {
                        field: "tracking number",
                        path: fields.tracking_number.describe(),
                    });
                }
            },
        };

        let carrier_spec = fields.carrier.as_ref().unwrap_or(carrier_default);
        let carrier = match carrier_spec.find(scopes, true) {
            Some(found) => {
                let (text, path) = text_and_path(found, "carrier")?;
                CarrierCode::parse(&text)
                    .map_err(|source| MapError::InvalidCarrier { path, source })?
            }
            None => {
                return Err(MapError::MissingField {
                    field: "carrier",
                    path: carrier_spec.describe(),
                });
            }
        };

        let raw_code = match &fields.raw_code {
            Some(spec) => optional_text(spec, scopes, "raw status code")?,
            None => None,
        }
        .unwrap_or_else(|| status_text.clone());
        let status = self.status.lookup(&status_text).unwrap_or_else(|| {
            if !out.unmapped_statuses.contains(&status_text) {
                out.unmapped_statuses.push(status_text.clone());
            }
            Status::Unknown
        });

        let (occurred_at, time_provenance) = self.occurred_at(scopes, context)?;
        let text = |spec: &Option<FieldSpec>, field| match spec {
            Some(spec) => optional_text(spec, scopes, field),
            None => Ok(None),
        };
        let draft = TrackingEventDraft {
            carrier,
            tracking_number,
            status,
            raw_status: RawStatus {
                code: raw_code,
                description: text(&fields.status_description, "status description")?,
            },
            sub_status: text(&fields.sub_status, "sub-status")?,
            occurred_at,
            time_provenance,
            location: text(&fields.location, "location")?,
            message: text(&fields.message, "message")?,
            origin: context.origin,
            provider_event_id: text(&fields.provider_event_id, "provider event id")?,
            order_number: text(&fields.order_number, "order number")?,
            courier: text(&fields.courier, "courier")?,
        };
        let event = draft.finish();
        if !out.events.iter().any(|existing| existing.id == event.id) {
            out.events.push(event);
        }
        Ok(())
    }

    fn occurred_at(
        &self,
        scopes: Scopes<'_>,
        context: MapContext<'_>,
    ) -> Result<(DateTime<Utc>, TimeProvenance), MapError> {
        let found = self
            .fields
            .time
            .as_ref()
            .and_then(|spec| spec.find(scopes, true));
        let Some(found) = found else {
            return Ok((context.received_at, TimeProvenance::ReceivedAt));
        };
        let (parsed, path) = match found {
            Found::Json(value, path) => (self.time.parse(value), path),
            Found::Text(text, path) => (self.time.parse(&Value::String(text)), path),
        };
        let (time, provenance) = parsed.map_err(|error| match error {
            TimeError::WrongType(found) => MapError::WrongType {
                field: "timestamp",
                path: path.clone(),
                expected: "a string or a number",
                found,
            },
            TimeError::Unparseable(reason) => MapError::InvalidTimestamp {
                path: path.clone(),
                reason,
            },
            TimeError::OutOfRange => MapError::AbsurdTimestamp { path: path.clone() },
        })?;
        let latest = context
            .received_at
            .checked_add_signed(FUTURE_SLACK)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if time < earliest_plausible() || time > latest {
            return Err(MapError::AbsurdTimestamp { path });
        }
        Ok((time, provenance))
    }
}

fn wrong_type(field: &'static str, path: &str, expected: &'static str, found: &Value) -> MapError {
    MapError::WrongType {
        field,
        path: path.to_owned(),
        expected,
        found: type_name(found),
    }
}

fn text_and_path(found: Found<'_>, field: &'static str) -> Result<(String, String), MapError> {
    match found {
        Found::Json(value, path) => match scalar_text(value) {
            Some(text) => Ok((text, path)),
            None => Err(wrong_type(field, &path, "a string or a number", value)),
        },
        Found::Text(text, path) => Ok((text, path)),
    }
}

fn required_text(found: Found<'_>, field: &'static str) -> Result<String, MapError> {
    text_and_path(found, field).map(|(text, _)| text.trim().to_owned())
}

fn optional_text(
    spec: &FieldSpec,
    scopes: Scopes<'_>,
    field: &'static str,
) -> Result<Option<String>, MapError> {
    match spec.find(scopes, true) {
        Some(found) => text_and_path(found, field).map(|(text, _)| Some(text.trim().to_owned())),
        None => Ok(None),
    }
}
