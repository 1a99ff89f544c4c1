//! The wire form of a UTC time, as `#[serde(with = "waybill_core::rfc3339")]`: exactly chrono's
//! own (`2026-05-28T20:26:40Z`, `.123Z`, `.123456Z` or `.123456789Z` when there is a fraction),
//! written and read without chrono's general formatter and parser for that common shape.
//!
//! chrono writes a time through `fmt` and its RFC 3339 parser accepts many forms; a message's
//! times (an envelope's events, an outbox payload's history) went through both for every event,
//! about 7 % of the worker's instructions (docs/performance.md). Here the canonical shape is
//! written into a buffer and read by position; anything else (a year outside 0..=9999, a leap
//! second, an offset other than `Z`, a space for the `T`) is handed to chrono, so what is written
//! and what is accepted are chrono's, byte for byte and value for value (property-tested).

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest canonical form: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const LONGEST: usize = 30;

/// Serialises `time` exactly as chrono does.
pub fn serialize<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; LONGEST];
    match write(time, &mut buffer) {
        Some(len) => {
            // Only ASCII digits and separators were written.
            let text = std::str::from_utf8(&buffer[..len]).map_err(serde::ser::Error::custom)?;
            serializer.serialize_str(text)
        }
        None => time.serialize(serializer),
    }
}

/// Deserialises what chrono accepts, to the same value.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(Visitor)
}

struct Visitor;

impl serde::de::Visitor<'_> for Visitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DateTime<Utc>, E> {
        if let Some(time) = read(text) {
            return Ok(time);
        }
        DateTime::<Utc>::deserialize(serde::de::value::StrDeserializer::<E>::new(text))
    }
}

/// Writes the canonical form into `out`, returning its length; `None` for what only chrono
/// writes (a year outside 0..=9999, a leap second).
fn write(time: &DateTime<Utc>, out: &mut [u8; LONGEST]) -> Option<usize> {
    use chrono::Datelike;
    let year = time.year();
    let nano = time.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    let two = |out: &mut [u8; LONGEST], at: usize, value: u32| {
        out[at] = b'0' + (value / 10) as u8;
        out[at + 1] = b'0' + (value % 10) as u8;
    };
    two(out, 0, year as u32 / 100);
    two(out, 2, year as u32 % 100);
    out[4] = b'-';
    two(out, 5, time.month());
    out[7] = b'-';
    two(out, 8, time.day());
    out[10] = b'T';
    two(out, 11, time.hour());
    out[13] = b':';
    two(out, 14, time.minute());
    out[16] = b':';
    two(out, 17, time.second());
    let mut len = 19;
    let (digits, mut fraction) = if nano == 0 {
        (0, 0)
    } else if nano.is_multiple_of(1_000_000) {
        (3, nano / 1_000_000)
    } else if nano.is_multiple_of(1_000) {
        (6, nano / 1_000)
    } else {
        (9, nano)
    };
    if digits > 0 {
        out[len] = b'.';
        for at in (len + 1..=len + digits).rev() {
            out[at] = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        len += 1 + digits;
    }
    out[len] = b'Z';
    Some(len + 1)
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`; `None` for anything else, or an impossible date or
/// time, which chrono then reads or refuses.
fn read(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || *bytes.last()? != b'Z' {
        return None;
    }
    let digits = |from: usize, to: usize| -> Option<u32> {
        bytes[from..to].iter().try_fold(0u32, |value, &b| {
            b.is_ascii_digit().then(|| value * 10 + u32::from(b - b'0'))
        })
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, byte)| bytes[at] != byte) {
        return None;
    }
    let nano = match &bytes[19..bytes.len() - 1] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            digits(20, 20 + fraction.len())? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(digits(0, 4)? as i32, digits(5, 7)?, digits(8, 10)?)?;
    let time =
        NaiveTime::from_hms_nano_opt(digits(11, 13)?, digits(14, 16)?, digits(17, 19)?, nano)?;
    Some(NaiveDateTime::new(date, time).and_utc())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ours(#[serde(with = "super")] DateTime<Utc>);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Chronos(DateTime<Utc>);

    fn time(seconds: i64, nano: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, nano).unwrap()
    }

    #[test]
    fn the_shapes_chrono_writes() {
        for (nano, text) in [
            (0, "\"2026-05-28T20:26:40Z\""),
            (120_000_000, "\"2026-05-28T20:26:40.120Z\""),
            (123_450_000, "\"2026-05-28T20:26:40.123450Z\""),
            (5, "\"2026-05-28T20:26:40.000000005Z\""),
        ] {
            let at = time(1_780_000_000, nano);
            assert_eq!(serde_json::to_string(&Ours(at)).unwrap(), text);
            assert_eq!(serde_json::to_string(&Chronos(at)).unwrap(), text);
            assert_eq!(serde_json::from_str::<Ours>(text).unwrap().0, at);
        }
    }

    #[test]
    fn what_chrono_alone_reads_or_refuses_is_left_to_chrono() {
        // Other offsets, a space, lowercase, a leap second: read by chrono, to its values.
        for text in [
            "\"2026-05-28T22:26:40+02:00\"",
            "\"2026-05-28 20:26:40Z\"",
            "\"2026-05-28t20:26:40z\"",
            "\"2016-12-31T23:59:60Z\"",
            "\"2026-05-28T20:26:40.1234567891Z\"",
        ] {
            let chrono = serde_json::from_str::<Chronos>(text).map(|c| c.0);
            let ours = serde_json::from_str::<Ours>(text).map(|o| o.0);
            assert_eq!(ours.ok(), chrono.ok(), "{text}");
        }
        // Impossible or malformed: refused by both.
        for text in [
            "\"2026-02-30T20:26:40Z\"",
            "\"2026-05-28T24:00:00Z\"",
            "\"2026-05-28T20:26:4xZ\"",
            "\"2026-05-28T20:26:40.Z\"",
            "\"2026-05-28\"",
            "\"\"",
            "7",
        ] {
            assert!(serde_json::from_str::<Chronos>(text).is_err(), "{text}");
            let error = serde_json::from_str::<Ours>(text).unwrap_err();
            assert!(!error.to_string().is_empty());
        }
        // A year chrono writes with a sign.
        let far = Ours(time(300_000_000_000, 0));
        let written = serde_json::to_string(&far).unwrap();
        assert_eq!(written, serde_json::to_string(&Chronos(far.0)).unwrap());
        assert_eq!(serde_json::from_str::<Ours>(&written).unwrap(), far);
    }

    proptest! {
        #[test]
        fn written_and_read_exactly_as_chrono_does(
            seconds in -62_167_219_200i64..253_402_300_800,
            nano in prop_oneof![Just(0u32), 0u32..1_000, (0u32..1_000).prop_map(|m| m * 1_000_000), 0u32..1_000_000_000],
        ) {
            let at = time(seconds, nano);
            let ours = serde_json::to_string(&Ours(at)).unwrap();
            prop_assert_eq!(&ours, &serde_json::to_string(&Chronos(at)).unwrap());
            prop_assert_eq!(serde_json::from_str::<Ours>(&ours).unwrap().0, at);
        }

        #[test]
        fn any_text_reads_as_chrono_reads_it(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,11})?(Z|[+-][0-9]{2}:[0-9]{2})") {
            let json = serde_json::to_string(&text).unwrap();
            let chrono = serde_json::from_str::<Chronos>(&json).map(|c| c.0).ok();
            let ours = serde_json::from_str::<Ours>(&json).map(|o| o.0).ok();
            prop_assert_eq!(ours, chrono);
        }
    }
}
