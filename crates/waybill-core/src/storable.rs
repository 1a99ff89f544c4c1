//! What PostgreSQL can hold, as one rule applied before anything is accepted — "200 means
//! stored" (see `docs/reliability.md`).
//!
//! * **U+0000** cannot be stored in a `text` or `jsonb` value (nor escaped as `\u0000` in
//!   jsonb). Every U+0000 in text Waybill stores from input — an event's fields, an order
//!   number, registration metadata (its keys included) — is replaced by U+FFFD, the
//!   replacement character, the standard mark for "a character that could not be kept here".
//!   Everything else is kept byte for byte. Replacing rather than refusing keeps a courier's
//!   scan, and its siblings in the same payload, when one field carries a stray NUL (a C string
//!   gone wrong upstream); the count of replacements is reported so callers can record it.
//! * **Times before 4714-11-24 BC** (the start of PostgreSQL's `timestamptz`) cannot be stored;
//!   an event that claims one is refused, with a reason. (The end of `timestamptz`, 294276 AD,
//!   is later than any time the domain can represent.)
//! * **Order numbers over [`MAX_ORDER_NUMBER_CHARS`]** are refused, as registrations refuse
//!   them: they are looked up through an index, and an index entry has a size limit.
//!
//! Lone surrogates and invalid UTF-8 never get this far: a Rust `String` cannot hold them, and
//! the JSON readers refuse them with a 400.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

use crate::event::{TimeProvenance, TrackingEvent};

/// What replaces each U+0000.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// The longest order number, in characters, an event or a registration may carry.
pub const MAX_ORDER_NUMBER_CHARS: usize = 200;

/// The earliest instant PostgreSQL's `timestamptz` holds: 4714-11-24 00:00:00 UTC BC, as unix
/// seconds.
pub const EARLIEST_STORABLE_UNIX_SECONDS: i64 = -210_866_803_200;

/// Why a value cannot be stored even after U+0000 was replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotStorable {
    /// A time before what PostgreSQL can hold.
    #[error("`{field}` is {at}, earlier than the earliest time that can be stored (4714-11-24 BC)")]
    TimeOutOfRange {
        /// Which field.
        field: &'static str,
        /// The time, RFC 3339.
        at: String,
    },
    /// An order number over [`MAX_ORDER_NUMBER_CHARS`].
    #[error("`order_number` is longer than {MAX_ORDER_NUMBER_CHARS} characters")]
    OrderNumberTooLong,
    /// Two object keys that differ only by U+0000 against U+FFFD would become one.
    #[error("two keys of an object differ only where one holds U+0000, which cannot be stored")]
    KeysCollide,
}

/// `text` with every U+0000 replaced; borrowed when it has none.
pub fn text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Replaces every U+0000 of `text` in place; returns how many there were.
pub fn replace_in(text: &mut String) -> usize {
    let count = text.matches('\0').count();
    if count > 0 {
        *text = text.replace('\0', "\u{FFFD}");
    }
    count
}

/// [`replace_in`] on an optional string.
pub fn replace_in_option(text: &mut Option<String>) -> usize {
    text.as_mut().map_or(0, replace_in)
}

/// Replaces every U+0000 in a JSON document's strings and object keys, in place; returns how
/// many there were. Refuses (leaving the document unchanged) when two keys of one object would
/// become equal.
pub fn replace_in_json(value: &mut serde_json::Value) -> Result<usize, NotStorable> {
    if !json_holds_nul(value) {
        return Ok(0);
    }
    let mut copy = value.clone();
    let count = replace_in_json_unchecked(&mut copy)?;
    *value = copy;
    Ok(count)
}

fn json_holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(json_holds_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, item)| key.contains('\0') || json_holds_nul(item)),
        _ => false,
    }
}

fn replace_in_json_unchecked(value: &mut serde_json::Value) -> Result<usize, NotStorable> {
    match value {
        serde_json::Value::String(text) => Ok(replace_in(text)),
        serde_json::Value::Array(items) => items.iter_mut().map(replace_in_json_unchecked).sum(),
        serde_json::Value::Object(map) => {
            let mut count = 0;
            let mut rebuilt = serde_json::Map::new();
            for (mut key, mut item) in std::mem::take(map) {
                count += replace_in(&mut key) + replace_in_json_unchecked(&mut item)?;
                if rebuilt.insert(key, item).is_some() {
                    return Err(NotStorable::KeysCollide);
                }
            }
            *map = rebuilt;
            Ok(count)
        }
        _ => Ok(0),
    }
}

/// Whether PostgreSQL's `timestamptz` can hold `at`.
pub fn time_is_storable(at: DateTime<Utc>) -> bool {
    at.timestamp() >= EARLIEST_STORABLE_UNIX_SECONDS
}

impl TrackingEvent {
    /// Makes the event storable: refuses it when its time or order number cannot be stored
    /// ([`TrackingEvent::check_storable`]), else replaces every U+0000 in its text
    /// ([`TrackingEvent::replace_nul`]) and returns how many there were. Idempotent.
    pub fn make_storable(&mut self) -> Result<usize, NotStorable> {
        self.check_storable()?;
        Ok(self.replace_nul())
    }

    /// Whether the event, its U+0000 aside, can be stored: its time and order number.
    pub fn check_storable(&self) -> Result<(), NotStorable> {
        if !time_is_storable(self.occurred_at) {
            return Err(NotStorable::TimeOutOfRange {
                field: "occurred_at",
                at: self.occurred_at.to_rfc3339(),
            });
        }
        if self
            .order_number
            .as_ref()
            .is_some_and(|number| number.chars().count() > MAX_ORDER_NUMBER_CHARS)
        {
            return Err(NotStorable::OrderNumberTooLong);
        }
        Ok(())
    }

    /// Replaces every U+0000 in the event's text (see the module) and returns how many there
    /// were. The id is left as computed from what the source sent, so the same scan keeps one
    /// id however it arrives.
    pub fn replace_nul(&mut self) -> usize {
        let zone = match &mut self.time_provenance {
            TimeProvenance::AssumedZone { zone } | TimeProvenance::DateOnly { zone } => {
                replace_in(zone)
            }
            TimeProvenance::ExplicitOffset
            | TimeProvenance::UnixTime
            | TimeProvenance::ReceivedAt => 0,
        };
        zone + replace_in(&mut self.raw_status.code)
            + replace_in_option(&mut self.raw_status.description)
            + replace_in_option(&mut self.sub_status)
            + replace_in_option(&mut self.location)
            + replace_in_option(&mut self.message)
            + replace_in_option(&mut self.provider_event_id)
            + replace_in_option(&mut self.order_number)
            + replace_in_option(&mut self.courier)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;
    use crate::{CarrierCode, Status, TrackingEventDraft, TrackingNumber};

    fn event(message: &str, occurred_at: DateTime<Utc>) -> TrackingEvent {
        TrackingEventDraft {
            location: Some("Dock \0 7".into()),
            message: Some(message.into()),
            ..TrackingEventDraft::new(
                CarrierCode::parse("acme").unwrap(),
                TrackingNumber::parse("T1").unwrap(),
                Status::Delivered,
                "D\0",
                occurred_at,
            )
        }
        .finish()
    }

    #[test]
    fn nul_is_replaced_everywhere_and_nothing_else_changes() {
        let now = Utc.timestamp_opt(1_780_000_000, 0).unwrap();
        let mut event = event("Left at door\0", now);
        let id = event.id.clone();
        assert_eq!(event.make_storable(), Ok(3));
        assert_eq!(event.raw_status.code, "D\u{FFFD}");
        assert_eq!(event.location.as_deref(), Some("Dock \u{FFFD} 7"));
        assert_eq!(event.message.as_deref(), Some("Left at door\u{FFFD}"));
        assert_eq!(event.id, id, "the id is the source's");
        assert_eq!(event.make_storable(), Ok(0), "idempotent");
        assert_eq!(
            text("a\u{202E}b\u{1F600}\u{1B}"),
            "a\u{202E}b\u{1F600}\u{1B}"
        );
    }

    #[test]
    fn times_before_postgres_and_long_order_numbers_are_refused() {
        let earliest = Utc
            .timestamp_opt(EARLIEST_STORABLE_UNIX_SECONDS, 0)
            .unwrap();
        assert_eq!(earliest.to_rfc3339(), "-4713-11-24T00:00:00+00:00");
        assert!(event("x", earliest).make_storable().is_ok());
        let before = earliest - chrono::Duration::seconds(1);
        assert!(matches!(
            event("x", before).make_storable(),
            Err(NotStorable::TimeOutOfRange { .. })
        ));
        let mut long = event("x", earliest);
        long.order_number = Some("é".repeat(MAX_ORDER_NUMBER_CHARS + 1));
        assert_eq!(long.make_storable(), Err(NotStorable::OrderNumberTooLong));
        long.order_number = Some("é".repeat(MAX_ORDER_NUMBER_CHARS));
        assert!(long.make_storable().is_ok());
    }

    #[test]
    fn json_keys_and_strings_are_replaced_unless_two_keys_would_merge() {
        let mut value = json!({"a\u{0}": ["x\u{0}", {"k": "\u{0}"}], "n": 1});
        assert_eq!(replace_in_json(&mut value), Ok(3));
        assert_eq!(
            value,
            json!({"a\u{FFFD}": ["x\u{FFFD}", {"k": "\u{FFFD}"}], "n": 1})
        );
        let mut colliding = json!({"a\u{0}": 1, "a\u{FFFD}": 2});
        let before = colliding.clone();
        assert_eq!(
            replace_in_json(&mut colliding),
            Err(NotStorable::KeysCollide)
        );
        assert_eq!(colliding, before, "left unchanged");
        let mut clean = json!({"a": "b"});
        assert_eq!(replace_in_json(&mut clean), Ok(0));
    }
}
