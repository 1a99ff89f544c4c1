//! Conversions between AMQP header tables and the plain maps the rest of Waybill sees.

use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::error::{BusError, short_string};

/// The header the publisher stamps on every message to pair a `basic.return` with its publish
/// (see `publisher::confirms`). Internal: stripped from deliveries.
pub(crate) const PUBLISH_ID_HEADER: &str = "x-waybill-publish-id";

/// The header a dead-lettered message carries with the reason Waybill gave.
pub const REASON_HEADER: &str = "x-waybill-reason";
/// The exchange a message was originally published to (set by `publish_dead`).
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-waybill-original-exchange";
/// The routing key a message was originally published with (set by `publish_dead`).
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-waybill-original-routing-key";
/// The queue a message was consumed from before Waybill dead-lettered it.
pub const ORIGINAL_QUEUE_HEADER: &str = "x-waybill-original-queue";

/// Builds an AMQP header table of long strings from a map.
pub(crate) fn to_field_table(headers: &BTreeMap<String, String>) -> Result<FieldTable, BusError> {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(
            short_string("header name", name)?,
            AMQPValue::LongString(LongString::from(value.as_bytes())),
        );
    }
    Ok(table)
}

/// The string-valued headers of a message (long and short strings that are valid UTF-8).
/// Tables, arrays and numbers (e.g. `x-death`, `x-delivery-count`) are left out; the internal
/// publish id is stripped.
pub(crate) fn string_headers(table: Option<&FieldTable>) -> BTreeMap<String, String> {
    let Some(table) = table else {
        return BTreeMap::new();
    };
    table
        .inner()
        .iter()
        .filter(|(name, _)| name.as_str() != PUBLISH_ID_HEADER)
        .filter_map(|(name, value)| Some((name.to_string(), as_string(value)?)))
        .collect()
}

/// An integer-valued header of any AMQP integer width.
pub(crate) fn integer_header(table: Option<&FieldTable>, name: &str) -> Option<i64> {
    table?.inner().get(name).and_then(as_integer)
}

/// The value as a string, when it is a string.
pub(crate) fn as_string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => String::from_utf8(text.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// The value as an integer, when it is one.
pub(crate) fn as_integer(value: &AMQPValue) -> Option<i64> {
    match *value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(n)),
        AMQPValue::ShortInt(n) => Some(i64::from(n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(n)),
        AMQPValue::LongInt(n) => Some(i64::from(n)),
        AMQPValue::LongUInt(n) => Some(i64::from(n)),
        AMQPValue::LongLongInt(n) => Some(n),
        _ => None,
    }
}

/// The first entry of the broker's `x-death` header (the most recent death), as a table.
pub(crate) fn first_death(table: Option<&FieldTable>) -> Option<&FieldTable> {
    match table?.inner().get("x-death")? {
        AMQPValue::FieldArray(deaths) => match deaths.as_slice().first()? {
            AMQPValue::FieldTable(death) => Some(death),
            _ => None,
        },
        _ => None,
    }
}

/// The first routing key recorded in an `x-death` entry.
pub(crate) fn death_routing_key(death: &FieldTable) -> Option<String> {
    match death.inner().get("routing-keys")? {
        AMQPValue::FieldArray(keys) => keys.as_slice().first().and_then(as_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{FieldArray, ShortString};

    use super::*;

    #[test]
    fn string_headers_keep_strings_and_drop_the_rest() {
        let mut table = FieldTable::default();
        table.insert("traceparent".into(), AMQPValue::LongString("00-abc".into()));
        table.insert(
            "short".into(),
            AMQPValue::ShortString(ShortString::from("s")),
        );
        table.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
        table.insert(PUBLISH_ID_HEADER.into(), AMQPValue::LongLongInt(7));
        table.insert(
            "bytes".into(),
            AMQPValue::LongString(LongString::from(vec![0xff, 0xfe])),
        );
        let headers = string_headers(Some(&table));
        assert_eq!(headers.len(), 2);
        assert_eq!(headers["traceparent"], "00-abc");
        assert_eq!(headers["short"], "s");
        assert_eq!(integer_header(Some(&table), "x-delivery-count"), Some(3));
    }

    #[test]
    fn first_death_reads_the_routing_key() {
        let mut death = FieldTable::default();
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                "webhook".into(),
            )])),
        );
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        let death = first_death(Some(&table)).expect("an x-death entry");
        assert_eq!(death_routing_key(death).as_deref(), Some("webhook"));
    }

    #[test]
    fn header_names_longer_than_a_short_string_are_refused() {
        let mut headers = BTreeMap::new();
        headers.insert("h".repeat(256), "v".to_owned());
        assert!(matches!(
            to_field_table(&headers),
            Err(BusError::InvalidName { .. })
        ));
    }
}
