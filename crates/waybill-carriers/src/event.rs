//! One event element → one [`TrackingEvent`]: the fields read through their candidates, the
//! status looked up, the time parsed, the id computed.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::Value;
use waybill_core::{
    CarrierCode, EventId, RawStatus, Status, TimeProvenance, TrackingEventDraft, TrackingNumber,
};

use crate::error::MapError;
use crate::fields::{FieldSpec, Found, optional_text, text_and_path};
use crate::mapping::{FieldsSpec, MapContext, Mapped, MappingSpec};
use crate::path::Scopes;
use crate::time::{TimeError, Zone};

/// The earliest believable scan time; anything before is a zero date or garbage.
fn earliest_plausible() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// How far after receipt a scan time may lie (couriers' clocks and zone mistakes).
const FUTURE_SLACK: TimeDelta = TimeDelta::days(2);

impl MappingSpec {
    /// Maps one event element. `optional` (the current object beside array events) skips the
    /// event when it has no status instead of failing.
    pub(crate) fn map_event(
        &self,
        fields: &FieldsSpec,
        scopes: Scopes<'_>,
        context: MapContext<'_>,
        carrier_default: &FieldSpec,
        optional: bool,
        out: &mut Mapped,
    ) -> Result<(), MapError> {
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
        let Some(tracking_number) = tracking_number(fields, scopes, context)? else {
            return Ok(());
        };
        let carrier = carrier(fields, carrier_default, scopes)?;

        let text = |spec: &Option<FieldSpec>, field| match spec {
            Some(spec) => optional_text(spec, scopes, field),
            None => Ok(None),
        };
        let raw_code =
            text(&fields.raw_code, "raw status code")?.unwrap_or_else(|| status_text.clone());
        let sub_status = text(&fields.sub_status, "sub-status")?;
        let status = self
            .status
            .lookup_pair(&status_text, sub_status.as_deref())
            .unwrap_or_else(|| {
                if !out.unmapped_statuses.contains(&status_text) {
                    out.unmapped_statuses.push(status_text.clone());
                }
                Status::Unknown
            });

        let timed = self.occurred_at(fields, scopes, context)?;
        let has_time = timed.is_some();
        let (occurred_at, time_provenance) =
            timed.unwrap_or((context.received_at, TimeProvenance::ReceivedAt));
        let draft = TrackingEventDraft {
            carrier,
            tracking_number,
            status,
            raw_status: RawStatus {
                code: raw_code,
                description: text(&fields.status_description, "status description")?,
            },
            sub_status,
            occurred_at,
            time_provenance,
            location: text(&fields.location, "location")?,
            message: text(&fields.message, "message")?,
            origin: context.origin,
            provider_event_id: text(&fields.provider_event_id, "provider event id")?,
            order_number: text(&fields.order_number, "order number")?,
            courier: text(&fields.courier, "courier")?,
        };
        let mut event = draft.finish();
        if !has_time && self.format_version >= 2 {
            // Format 2: an event without a time of its own (a status-only webhook) gets an id
            // that does not depend on when it arrived, so a courier's retry is a duplicate,
            // not a second event. Its time is still the time of receipt.
            event.id = EventId::compute(
                &event.carrier,
                &event.tracking_number,
                DateTime::<Utc>::UNIX_EPOCH,
                &event.raw_status.code,
                event.location.as_deref(),
            );
        }
        if !out.events.iter().any(|existing| existing.id == event.id) {
            out.events.push(event);
        }
        Ok(())
    }

    /// The event's time, `None` when no candidate has a value.
    fn occurred_at(
        &self,
        fields: &FieldsSpec,
        scopes: Scopes<'_>,
        context: MapContext<'_>,
    ) -> Result<Option<(DateTime<Utc>, TimeProvenance)>, MapError> {
        let Some(found) = fields
            .time
            .as_ref()
            .and_then(|spec| spec.find(scopes, true))
        else {
            return Ok(None);
        };
        let zone = match &fields.zone {
            Some(spec) => match spec.find(scopes, true) {
                Some(found) => {
                    let (text, path) = text_and_path(found, "time zone")?;
                    Some(Zone::parse(text.trim()).map_err(|_| MapError::InvalidZone {
                        path: path.to_string(),
                    })?)
                }
                None => None,
            },
            None => None,
        };
        let (parsed, path) = match found {
            Found::Json(value, path) => (self.time.parse_in(value, zone.as_ref()), path),
            Found::Text(text, path) => (
                self.time.parse_in(&Value::String(text), zone.as_ref()),
                path,
            ),
        };
        let (time, provenance) = parsed.map_err(|error| match error {
            TimeError::WrongType(found) => MapError::WrongType {
                field: "timestamp",
                path: path.to_string(),
                expected: "a string or a number",
                found,
            },
            TimeError::Unparseable(reason) => MapError::InvalidTimestamp {
                path: path.to_string(),
                reason,
            },
            TimeError::OutOfRange => MapError::AbsurdTimestamp {
                path: path.to_string(),
            },
        })?;
        let latest = context
            .received_at
            .checked_add_signed(FUTURE_SLACK)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if time < earliest_plausible() || time > latest {
            return Err(MapError::AbsurdTimestamp {
                path: path.to_string(),
            });
        }
        Ok(Some((time, provenance)))
    }
}

/// The event's tracking number; `None` when a poll document is about another number.
fn tracking_number(
    fields: &FieldsSpec,
    scopes: Scopes<'_>,
    context: MapContext<'_>,
) -> Result<Option<TrackingNumber>, MapError> {
    match fields.tracking_number.find(scopes, false) {
        Some(found) => {
            let (text, path) = text_and_path(found, "tracking number")?;
            let number =
                TrackingNumber::parse(&text).map_err(|source| MapError::InvalidTrackingNumber {
                    path: path.to_string(),
                    source,
                })?;
            if context.polled.is_some_and(|polled| *polled != number) {
                return Ok(None);
            }
            Ok(Some(number))
        }
        None => match context.polled {
            Some(polled) => Ok(Some(polled.clone())),
            None => Err(MapError::MissingField {
                field: "tracking number",
                path: fields.tracking_number.describe(),
            }),
        },
    }
}

fn carrier(
    fields: &FieldsSpec,
    carrier_default: &FieldSpec,
    scopes: Scopes<'_>,
) -> Result<CarrierCode, MapError> {
    let carrier_spec = fields.carrier.as_ref().unwrap_or(carrier_default);
    match carrier_spec.find(scopes, true) {
        Some(found) => {
            let (text, path) = text_and_path(found, "carrier")?;
            CarrierCode::parse(&text).map_err(|source| MapError::InvalidCarrier {
                path: path.to_string(),
                source,
            })
        }
        None => Err(MapError::MissingField {
            field: "carrier",
            path: carrier_spec.describe(),
        }),
    }
}

fn required_text(found: Found<'_>, field: &'static str) -> Result<String, MapError> {
    text_and_path(found, field).map(|(text, _)| text.trim().to_owned())
}
