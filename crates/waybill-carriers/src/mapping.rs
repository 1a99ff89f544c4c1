//! The mapping engine: one document in, canonical [`TrackingEvent`]s out, driven entirely by
//! the profile's `[mapping]` table. Webhooks and poll responses go through the same code, so
//! the same scan gets the same event id whichever way it arrives.
//!
//! This module finds the events (envelopes, payload filters, nested arrays, the current
//! object, event filters); [`crate::event`] turns one element into one event.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use waybill_core::{Origin, TrackingEvent, TrackingNumber};

use crate::body::BodySpec;
use crate::error::MapError;
use crate::fields::{FieldSpec, optional_text, text_and_path};
use crate::json::{type_name, wrong_type};
use crate::path::{DocumentPath, Frame, JsonPath, Scope, Scopes};
use crate::status_map::StatusSpec;
use crate::time::TimeSpec;
use crate::transform::{Filter, Filters};

/// What a payload mapped to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mapped {
    /// The events, in payload order, without repeats (two elements that are the same scan
    /// yield one event).
    pub events: Vec<TrackingEvent>,
    /// The provider's id of the whole delivery (AfterShip `event_id`, EasyPost `evt_…`), for
    /// deduplicating retries before any mapping work.
    pub provider_event_id: Option<String>,
    /// Raw statuses that no status map entry matched and so became
    /// [`waybill_core::Status::Unknown`], without repeats, for the "unmapped status" metric.
    pub unmapped_statuses: Vec<String>,
    /// Events that could not be mapped while their siblings could (only from
    /// [`crate::CarrierProfile::map_webhook_isolated`]): kept so an operator can replay them
    /// after fixing the profile.
    pub rejected: Vec<RejectedEvent>,
    /// The payload matched a payload filter (`[[mapping.ignore]]`, `[[mapping.when]]`): it is
    /// not a tracking update (a ping, an order event) and yields nothing.
    pub ignored: bool,
    /// Event elements skipped by event filters (`[[mapping.events.ignore]]`, `…when`).
    pub skipped_events: usize,
}

/// One event element that could not be mapped, with everything needed to see why and to map
/// it again after the profile is fixed.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedEvent {
    /// The concrete path of the element in the document (`$/legs/1/events/0`).
    pub path: String,
    /// Why, as a closed set for metric labels ([`MapError::kind`]).
    pub kind: &'static str,
    /// Why, as a sentence naming the path at fault (never a payload value).
    pub reason: String,
    /// The element as it was in the payload.
    pub element: Value,
    /// Its tracking number, when that much could be read.
    pub tracking_number: Option<String>,
    /// The error itself, for callers that decide on it.
    pub error: MapError,
}

/// How a payload's bad events are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// The first bad event fails the whole payload (polls, and `map_webhook`).
    Strict,
    /// A bad event is set aside in [`Mapped::rejected`]; its siblings are kept.
    PerEvent,
}

/// The `[mapping]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MappingSpec {
    /// How the body is written (JSON, form, XML).
    #[serde(default)]
    pub body: BodySpec,
    /// Envelopes to look through: the first path that leads to an object becomes the document.
    #[serde(default)]
    pub unwrap: Vec<DocumentPath>,
    /// Payload filters: every `when` must hold and no `ignore` may, or the payload is ignored.
    #[serde(default)]
    pub when: Vec<Filter>,
    #[serde(default)]
    pub ignore: Vec<Filter>,
    /// The most events one payload may yield.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Where the events are.
    pub events: EventsSpec,
    /// Where each field of an event is.
    pub fields: FieldsSpec,
    /// Format 2: the fields of the `current` event, when its shape differs from the array's.
    #[serde(default)]
    pub current_fields: Option<CurrentFields>,
    /// How times are read.
    #[serde(default)]
    pub time: TimeSpec,
    /// How raw statuses map to canonical ones.
    #[serde(default)]
    pub status: StatusSpec,
    /// The profile's format version (set after parsing).
    #[serde(skip)]
    pub format_version: u32,
}

fn default_max_events() -> usize {
    1000
}

/// The `[mapping.events]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsSpec {
    /// The arrays whose elements are events: one `$` path, or a list of levels for nested
    /// arrays (`["$/legs", "@/events"]`: every event of every leg).
    #[serde(default)]
    pub array: Option<ArraySpec>,
    /// Accept a single object where an array is expected, as a one-event array.
    #[serde(default)]
    pub single_object: bool,
    /// An object that is itself one event: the whole payload for one-scan webhooks.
    #[serde(default)]
    pub current: Option<DocumentPath>,
    /// When the current object becomes an event.
    #[serde(default)]
    pub current_when: CurrentWhen,
    /// Event filters: elements failing them are skipped (counted, not rejected).
    #[serde(default)]
    pub when: Vec<Filter>,
    #[serde(default)]
    pub ignore: Vec<Filter>,
}

/// The levels of (possibly nested) event arrays: the first from the document, each next one
/// from an element of the previous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArraySpec(pub Vec<JsonPath>);

impl<'de> Deserialize<'de> for ArraySpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArrayVisitor;
        impl<'de> Visitor<'de> for ArrayVisitor {
            type Value = ArraySpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a path like \"$/events\" or a list of levels like [\"$/legs\", \"@/events\"]",
                )
            }
            // Levels may use `*` segments: `$/data/*/trackinfo` reads the `trackinfo` array
            // of every member of `data` (an origin and a destination carrier's lists).
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ArraySpec, E> {
                check_levels(vec![JsonPath::parse(text, true).map_err(E::custom)?])
                    .map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArraySpec, A::Error> {
                let mut levels = Vec::new();
                while let Some(text) = seq.next_element::<String>()? {
                    levels.push(JsonPath::parse(&text, true).map_err(de::Error::custom)?);
                }
                check_levels(levels).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(ArrayVisitor)
    }
}

fn check_levels(levels: Vec<JsonPath>) -> Result<ArraySpec, String> {
    match levels.split_first() {
        None => Err("an array needs at least one level".to_owned()),
        Some((first, _)) if first.scope() != Scope::Document => Err(format!(
            "path `{first}` must start with `$`: there is no event element here (the first level is found in the document)"
        )),
        Some((_, rest)) => match rest.iter().find(|path| path.scope() != Scope::Event) {
            Some(path) => Err(format!(
                "the inner level `{path}` must start with `@`: it is found in an element of the level above"
            )),
            None if levels.len() > crate::path::MAX_ANCESTORS => Err(format!(
                "at most {} levels of nested arrays",
                crate::path::MAX_ANCESTORS
            )),
            None => Ok(ArraySpec(levels)),
        },
    }
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

/// The fields of an event, where each is found. `[mapping.fields]` ([`FieldsSpec`]) needs a
/// tracking number; `[mapping.current_fields]` ([`CurrentFields`]) may leave it out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventFields<Tracking> {
    pub tracking_number: Tracking,
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
    /// The zone of this event's naive time (an IANA name or an offset), overriding the
    /// profile's `mapping.time.zone`.
    #[serde(default)]
    pub zone: Option<FieldSpec>,
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

/// The `[mapping.fields]` table.
pub(crate) type FieldsSpec = EventFields<FieldSpec>;

/// The `[mapping.current_fields]` table (format 2): the event-level fields of the current event.
/// Shipment-level fields (tracking number, carrier, order number, courier, provider event id)
/// come from `[mapping.fields]` unless given here; event-level ones never do.
pub(crate) type CurrentFields = EventFields<Option<FieldSpec>>;

impl CurrentFields {
    /// The complete field set of the current event.
    pub fn resolve(&self, shared: &FieldsSpec) -> FieldsSpec {
        FieldsSpec {
            tracking_number: self
                .tracking_number
                .clone()
                .unwrap_or_else(|| shared.tracking_number.clone()),
            carrier: self.carrier.clone().or_else(|| shared.carrier.clone()),
            status: self.status.clone(),
            raw_code: self.raw_code.clone(),
            status_description: self.status_description.clone(),
            sub_status: self.sub_status.clone(),
            time: self.time.clone(),
            zone: self.zone.clone(),
            location: self.location.clone(),
            message: self.message.clone(),
            order_number: self
                .order_number
                .clone()
                .or_else(|| shared.order_number.clone()),
            provider_event_id: self
                .provider_event_id
                .clone()
                .or_else(|| shared.provider_event_id.clone()),
            courier: self.courier.clone().or_else(|| shared.courier.clone()),
        }
    }
}

/// Per-call facts the payload does not carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapContext<'a> {
    pub origin: Origin,
    pub received_at: DateTime<Utc>,
    /// For polls: the number that was polled. Used when the document has none; documents
    /// about a different number are skipped.
    pub polled: Option<&'a TrackingNumber>,
    pub isolation: Isolation,
}

/// One event element found in the document.
struct Element<'v> {
    value: &'v Value,
    path: String,
    /// Enclosing elements, nearest first.
    ancestors: Vec<Frame<'v>>,
}

impl MappingSpec {
    /// The field set of the current event: its own in format 2 when given, else the shared one.
    pub fn current_field_set(&self) -> Cow<'_, FieldsSpec> {
        match &self.current_fields {
            Some(current) => Cow::Owned(current.resolve(&self.fields)),
            None => Cow::Borrowed(&self.fields),
        }
    }

    /// Maps one document, appending to `out`.
    /// A webhook's document is an object, or an array when the events array is the document
    /// itself (`array = "$"`): `null`, a number, a string or an array elsewhere is refused,
    /// not accepted with zero events.
    pub fn check_root(&self, document: &Value) -> Result<(), MapError> {
        let root_array = self
            .events
            .array
            .as_ref()
            .and_then(|ArraySpec(levels)| levels.first())
            .is_some_and(|path| path.to_string() == "$");
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
                path.resolve(Scopes::document(document))
                    .map(|(value, _)| value)
                    .filter(|v| v.is_object())
            })
            .unwrap_or(document);
        let payload_filters = Filters {
            when: &self.when,
            ignore: &self.ignore,
        };
        if !payload_filters.pass(Scopes::document(document)) {
            out.ignored = true;
            return Ok(());
        }

        let elements = self.elements(document, out.events.len())?;
        let had_elements = !elements.is_empty();
        let event_filters = Filters {
            when: &self.events.when,
            ignore: &self.events.ignore,
        };
        for element in &elements {
            let scopes = Scopes {
                document,
                event: Some((element.value, &element.path)),
                ancestors: &element.ancestors,
            };
            if !event_filters.pass(scopes) {
                out.skipped_events += 1;
                continue;
            }
            let outcome = if element.value.is_object() {
                self.map_event(&self.fields, scopes, context, carrier_default, false, out)
            } else {
                Err(wrong_type(
                    "event",
                    &element.path,
                    "an object",
                    element.value,
                ))
            };
            self.settle(outcome, &self.fields, scopes, context, out)?;
        }
        self.map_current(
            document,
            had_elements,
            &event_filters,
            context,
            carrier_default,
            out,
        )?;
        if out.events.len() > self.max_events {
            return Err(MapError::TooManyEvents {
                max: self.max_events,
            });
        }
        if out.provider_event_id.is_none()
            && let Some(spec) = &self.fields.provider_event_id
        {
            out.provider_event_id =
                optional_text(spec, Scopes::document(document), "provider event id")?;
        }
        Ok(())
    }

    /// The current object's event, when the profile has one and it is wanted.
    fn map_current(
        &self,
        document: &Value,
        had_elements: bool,
        event_filters: &Filters<'_>,
        context: MapContext<'_>,
        carrier_default: &FieldSpec,
        out: &mut Mapped,
    ) -> Result<(), MapError> {
        let Some(DocumentPath(current_path)) = &self.events.current else {
            return Ok(());
        };
        if had_elements && self.events.current_when != CurrentWhen::Always {
            return Ok(());
        }
        match current_path.resolve(Scopes::document(document)) {
            None | Some((Value::Null, _)) => Ok(()),
            Some((element @ Value::Object(_), concrete)) => {
                // The base of the element's own paths.
                let concrete = concrete.to_string();
                let scopes = Scopes {
                    document,
                    event: Some((element, &concrete)),
                    ancestors: &[],
                };
                if !event_filters.pass(scopes) {
                    out.skipped_events += 1;
                    return Ok(());
                }
                let fields = self.current_field_set();
                let outcome =
                    self.map_event(&fields, scopes, context, carrier_default, had_elements, out);
                self.settle(outcome, &fields, scopes, context, out)
            }
            Some((other, concrete)) => Err(wrong_type(
                "event",
                &concrete.to_string(),
                "an object",
                other,
            )),
        }
    }

    /// Applies the isolation rule to one event's outcome.
    fn settle(
        &self,
        outcome: Result<(), MapError>,
        fields: &FieldsSpec,
        scopes: Scopes<'_>,
        context: MapContext<'_>,
        out: &mut Mapped,
    ) -> Result<(), MapError> {
        let Err(error) = outcome else {
            return Ok(());
        };
        if context.isolation == Isolation::Strict || error.is_whole_payload() {
            return Err(error);
        }
        let (element, path) = scopes
            .event
            .map_or((Value::Null, String::from("$")), |(value, path)| {
                (value.clone(), path.to_owned())
            });
        let tracking_number = fields
            .tracking_number
            .find(scopes, false)
            .and_then(|found| text_and_path(found, "tracking number").ok())
            .and_then(|(text, _)| TrackingNumber::parse(&text).ok())
            .map(|number| number.as_str().to_owned());
        out.rejected.push(RejectedEvent {
            path,
            kind: error.kind(),
            reason: error.to_string(),
            element,
            tracking_number,
            error,
        });
        Ok(())
    }

    /// Every event element of every (nested) array level, in document order.
    fn elements<'v>(
        &self,
        document: &'v Value,
        already: usize,
    ) -> Result<Vec<Element<'v>>, MapError> {
        let Some(ArraySpec(levels)) = &self.events.array else {
            return Ok(Vec::new());
        };
        let mut current = vec![Element {
            value: document,
            path: "$".to_owned(),
            ancestors: Vec::new(),
        }];
        for (depth, level) in levels.iter().enumerate() {
            let mut next = Vec::new();
            for parent in &current {
                // Inner levels are `@` paths (checked at load): relative to the parent element.
                // Without `*` a level matches at most one value; with it, every match in turn.
                let matches = level.resolve_all_from(parent.value, &parent.path);
                let mut ancestors = Vec::with_capacity(parent.ancestors.len() + 1);
                if depth > 0 {
                    ancestors.push((parent.value, parent.path.clone()));
                    ancestors.extend(parent.ancestors.iter().cloned());
                }
                for (resolved, concrete) in matches {
                    let items: Vec<(&'v Value, String)> = match resolved {
                        Value::Null => continue,
                        Value::Array(items) => items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| (item, format!("{concrete}/{i}")))
                            .collect(),
                        object @ Value::Object(_) if self.single_object() => {
                            vec![(object, concrete)]
                        }
                        other => {
                            return Err(MapError::WrongType {
                                field: "events array",
                                path: concrete,
                                expected: if self.single_object() {
                                    "an array or an object"
                                } else {
                                    "an array"
                                },
                                found: type_name(other),
                            });
                        }
                    };
                    if already + next.len() + items.len() > self.max_events {
                        return Err(MapError::TooManyEvents {
                            max: self.max_events,
                        });
                    }
                    next.extend(items.into_iter().map(|(value, path)| Element {
                        value,
                        path,
                        ancestors: ancestors.clone(),
                    }));
                }
            }
            current = next;
        }
        Ok(current)
    }

    /// Whether a lone object counts as a one-element array: when the profile says so, and
    /// always for XML (where one child element is an object and several are an array).
    fn single_object(&self) -> bool {
        self.events.single_object || self.body.format == crate::body::BodyFormat::Xml
    }
}
