//! Reading a scan time from whatever a carrier sends: RFC 3339 with an offset, a naive local
//! date-time in a zone the profile declares (or one the payload names), a bare date, unix
//! seconds/milliseconds, or a custom `strftime`-style format (`%m/%d/%Y %I:%M %p`). The
//! result always says how it was derived ([`TimeProvenance`]), because "13:23 with no zone" is
//! a guess and downstream systems deserve to know which times are guesses.

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use waybill_core::TimeProvenance;

/// The `[mapping.time]` table: how a profile reads timestamps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimeSpec {
    /// The zone naive date-times and bare dates are in.
    #[serde(default)]
    pub zone: Zone,
    /// The formats accepted; by default all of them.
    #[serde(default = "TimeFormat::all")]
    pub formats: Vec<TimeFormat>,
    /// How to read unix numbers.
    #[serde(default)]
    pub unix_unit: UnixUnit,
}

impl Default for TimeSpec {
    fn default() -> Self {
        TimeSpec {
            zone: Zone::default(),
            formats: TimeFormat::all(),
            unix_unit: UnixUnit::Auto,
        }
    }
}

/// One accepted timestamp shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TimeFormat {
    /// `2017-08-02T13:23:02Z`, `2017-08-02 13:23:02.5+05:30`: explicit offset.
    Rfc3339,
    /// `2016-07-12T17:12:36.710`, `2022-10-31 19:56:16`: local time in [`TimeSpec::zone`].
    Naive,
    /// `2024-08-05`: midnight in [`TimeSpec::zone`].
    Date,
    /// `1712741696`, `1712741696123`, `"1712741696"`: unix time.
    Unix,
    /// A `strftime`-style format (`{ strftime = "%m/%d/%Y %I:%M %p" }`), checked at load.
    Custom(CustomFormat),
}

/// A custom format and what it contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CustomFormat {
    /// The format as written.
    pub pattern: String,
    /// It reads an offset (`%z`, `%:z`, `%#z`): the time is explicit.
    has_offset: bool,
    /// It reads a time of day; without one, the value is a date (midnight in the zone).
    has_time: bool,
}

impl CustomFormat {
    /// Checks a format: every specifier known to chrono, a date in it.
    pub fn parse(pattern: &str) -> Result<CustomFormat, String> {
        use chrono::format::{Fixed, Item, Numeric, StrftimeItems};
        let mut has_offset = false;
        let mut has_time = false;
        let mut has_date = false;
        for item in StrftimeItems::new(pattern) {
            match item {
                Item::Error => {
                    return Err(format!(
                        "`{pattern}` is not a valid strftime format (an unknown `%` specifier)"
                    ));
                }
                Item::Fixed(
                    Fixed::TimezoneOffset
                    | Fixed::TimezoneOffsetColon
                    | Fixed::TimezoneOffsetColonZ
                    | Fixed::TimezoneOffsetZ
                    | Fixed::TimezoneOffsetDoubleColon
                    | Fixed::TimezoneOffsetTripleColon,
                ) => has_offset = true,
                Item::Fixed(Fixed::RFC3339 | Fixed::RFC2822) => {
                    has_offset = true;
                    has_time = true;
                    has_date = true;
                }
                Item::Numeric(
                    Numeric::Hour | Numeric::Hour12 | Numeric::Minute | Numeric::Second,
                    _,
                ) => has_time = true,
                Item::Numeric(
                    Numeric::Year | Numeric::Day | Numeric::Ordinal | Numeric::Timestamp,
                    _,
                ) => has_date = true,
                _ => {}
            }
        }
        if !has_date {
            return Err(format!(
                "`{pattern}` has no year or day (`%Y`, `%d`): join the date field into the time field"
            ));
        }
        Ok(CustomFormat {
            pattern: pattern.to_owned(),
            has_offset,
            has_time,
        })
    }

    fn read(
        &self,
        text: &str,
        zone: &Zone,
    ) -> Option<Result<(DateTime<Utc>, TimeProvenance), TimeError>> {
        if self.has_offset {
            let time = DateTime::<FixedOffset>::parse_from_str(text, &self.pattern).ok()?;
            return Some(Ok((time.to_utc(), TimeProvenance::ExplicitOffset)));
        }
        if self.has_time {
            let naive = NaiveDateTime::parse_from_str(text, &self.pattern).ok()?;
            return Some(
                zone.to_utc(naive)
                    .ok_or(TimeError::OutOfRange)
                    .map(|utc| (utc, TimeProvenance::AssumedZone { zone: zone.name() })),
            );
        }
        let date = NaiveDate::parse_from_str(text, &self.pattern).ok()?;
        let midnight = date.and_hms_opt(0, 0, 0)?;
        Some(
            zone.to_utc(midnight)
                .ok_or(TimeError::OutOfRange)
                .map(|utc| (utc, TimeProvenance::DateOnly { zone: zone.name() })),
        )
    }
}

impl<'de> Deserialize<'de> for TimeFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        const EXPECTED: &str =
            "expected `rfc3339`, `naive`, `date`, `unix` or { strftime = \"…\" }";
        // Read as a plain value first, so that every mistake gets a specific message (an
        // untagged enum would only say that nothing matched).
        match Value::deserialize(deserializer)? {
            Value::String(name) => match name.as_str() {
                "rfc3339" => Ok(TimeFormat::Rfc3339),
                "naive" => Ok(TimeFormat::Naive),
                "date" => Ok(TimeFormat::Date),
                "unix" => Ok(TimeFormat::Unix),
                other => Err(serde::de::Error::custom(format!(
                    "unknown time format `{other}`: {EXPECTED}"
                ))),
            },
            Value::Object(table) => {
                if let Some(unknown) = table.keys().find(|key| *key != "strftime") {
                    return Err(serde::de::Error::custom(format!(
                        "unknown key `{unknown}` in a time format: {EXPECTED}"
                    )));
                }
                match table.get("strftime") {
                    Some(Value::String(pattern)) => CustomFormat::parse(pattern)
                        .map(TimeFormat::Custom)
                        .map_err(serde::de::Error::custom),
                    _ => Err(serde::de::Error::custom(format!(
                        "a custom time format needs `strftime` as a string: {EXPECTED}"
                    ))),
                }
            }
            _ => Err(serde::de::Error::custom(format!(
                "a time format is a name or a table: {EXPECTED}"
            ))),
        }
    }
}

impl TimeFormat {
    fn all() -> Vec<TimeFormat> {
        vec![
            TimeFormat::Rfc3339,
            TimeFormat::Naive,
            TimeFormat::Date,
            TimeFormat::Unix,
        ]
    }
}

/// The unit of unix timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UnixUnit {
    /// Milliseconds when the magnitude is at least 10^11 (which as seconds would be the year
    /// 5138), seconds otherwise.
    #[default]
    Auto,
    /// Always seconds.
    Seconds,
    /// Always milliseconds.
    Millis,
}

/// The zone of naive times: `UTC`, a fixed offset like `+05:30`, or an IANA name.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum Zone {
    /// UTC.
    #[default]
    Utc,
    /// A fixed offset, with its spelling for provenance.
    Fixed(FixedOffset, String),
    /// An IANA zone (daylight saving handled).
    Iana(Tz),
}

impl Zone {
    /// Reads `UTC`, an offset like `+05:30`/`-0300`, or an IANA name.
    pub fn parse(text: &str) -> Result<Zone, String> {
        if text.eq_ignore_ascii_case("UTC") || text == "Z" {
            return Ok(Zone::Utc);
        }
        if text.starts_with('+') || text.starts_with('-') {
            let offset = parse_fixed_offset(text)
                .ok_or_else(|| format!("`{text}` is not an offset like +05:30"))?;
            return Ok(Zone::Fixed(offset, text.to_owned()));
        }
        text.parse::<Tz>().map(Zone::Iana).map_err(|_| {
            format!("`{text}` is neither UTC, an offset like +05:30, nor an IANA zone")
        })
    }

    fn name(&self) -> String {
        match self {
            Zone::Utc => "UTC".to_owned(),
            Zone::Fixed(_, spelling) => spelling.clone(),
            Zone::Iana(tz) => tz.name().to_owned(),
        }
    }

    /// The UTC instant of a naive local time. In a daylight-saving overlap the earlier instant
    /// wins; in a gap (a time that never existed locally) the offset in force just before the
    /// gap is used: a courier's clock that did not jump yet, rather than a rejected scan.
    fn to_utc(&self, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            Zone::Utc => Some(naive.and_utc()),
            Zone::Fixed(offset, _) => offset
                .from_local_datetime(&naive)
                .single()
                .map(|t| t.to_utc()),
            Zone::Iana(tz) => match tz.from_local_datetime(&naive) {
                LocalResult::Single(time) => Some(time.to_utc()),
                LocalResult::Ambiguous(earliest, _) => Some(earliest.to_utc()),
                LocalResult::None => {
                    let before = naive.checked_sub_signed(chrono::TimeDelta::hours(3))?;
                    let offset = tz.from_local_datetime(&before).earliest()?.offset().fix();
                    naive
                        .checked_sub_signed(chrono::TimeDelta::seconds(
                            offset.local_minus_utc().into(),
                        ))
                        .map(|utc| utc.and_utc())
                }
            },
        }
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Zone::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn parse_fixed_offset(text: &str) -> Option<FixedOffset> {
    let sign = if text.starts_with('-') { -1 } else { 1 };
    let digits = text.get(1..)?.replace(':', "");
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// Why a value is not a usable time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeError {
    /// The JSON type cannot hold a time (found type name).
    WrongType(&'static str),
    /// A string or number in no accepted format.
    Unparseable(&'static str),
    /// A time that exists in no calendar we handle (year ±262 000, or overflow).
    OutOfRange,
}

const NUMBERS_NOT_ACCEPTED: &str =
    "a number, but unix time is not among the profile's `time.formats`";
/// Names no format list: the profile's own may be narrower than all formats (Waybill's own
/// format accepts RFC 3339 only), and the message must not promise what it refuses.
const EXPECTED: &str = "it matches none of the profile's `time.formats`";

impl TimeSpec {
    /// A spec accepting only `formats`, zone UTC.
    pub fn with_formats(formats: Vec<TimeFormat>) -> TimeSpec {
        TimeSpec {
            formats,
            ..TimeSpec::default()
        }
    }

    fn accepts(&self, format: TimeFormat) -> bool {
        self.formats.contains(&format)
    }

    /// Reads one JSON value as a time.
    #[cfg(test)]
    pub fn parse(&self, value: &Value) -> Result<(DateTime<Utc>, TimeProvenance), TimeError> {
        self.parse_in(value, None)
    }

    /// Reads one JSON value as a time; naive times are in `zone` when given (a zone the payload
    /// named), else in the profile's zone.
    pub fn parse_in(
        &self,
        value: &Value,
        zone: Option<&Zone>,
    ) -> Result<(DateTime<Utc>, TimeProvenance), TimeError> {
        let zone = zone.unwrap_or(&self.zone);
        match value {
            Value::Number(number) if self.accepts(TimeFormat::Unix) => {
                let seconds = number.as_f64().ok_or(TimeError::OutOfRange)?;
                self.unix_time(seconds)
            }
            Value::Number(number) => self.parse_text(&number.to_string(), zone).map_err(|error| {
                if error == TimeError::Unparseable(EXPECTED) {
                    TimeError::Unparseable(NUMBERS_NOT_ACCEPTED)
                } else {
                    error
                }
            }),
            Value::String(text) => self.parse_text(text.trim(), zone),
            other => Err(TimeError::WrongType(crate::json::type_name(other))),
        }
    }

    fn parse_text(
        &self,
        text: &str,
        zone: &Zone,
    ) -> Result<(DateTime<Utc>, TimeProvenance), TimeError> {
        // Custom formats first: a profile that names one means it.
        for format in &self.formats {
            if let TimeFormat::Custom(custom) = format
                && let Some(result) = custom.read(text, zone)
            {
                return result;
            }
        }
        if self.accepts(TimeFormat::Unix) && looks_numeric(text) {
            let seconds: f64 = text.parse().map_err(|_| TimeError::Unparseable(EXPECTED))?;
            return self.unix_time(seconds);
        }
        if self.accepts(TimeFormat::Rfc3339)
            && let Some(time) = parse_with_offset(text)
        {
            return Ok((time, TimeProvenance::ExplicitOffset));
        }
        if self.accepts(TimeFormat::Naive) {
            const NAIVE: [&str; 4] = [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%d %H:%M",
            ];
            if let Some(naive) = NAIVE
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
            {
                let utc = zone.to_utc(naive).ok_or(TimeError::OutOfRange)?;
                return Ok((utc, TimeProvenance::AssumedZone { zone: zone.name() }));
            }
        }
        if self.accepts(TimeFormat::Date)
            && let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        {
            let midnight = date.and_hms_opt(0, 0, 0).ok_or(TimeError::OutOfRange)?;
            let utc = zone.to_utc(midnight).ok_or(TimeError::OutOfRange)?;
            return Ok((utc, TimeProvenance::DateOnly { zone: zone.name() }));
        }
        Err(TimeError::Unparseable(EXPECTED))
    }

    fn unix_time(&self, value: f64) -> Result<(DateTime<Utc>, TimeProvenance), TimeError> {
        let millis = match self.unix_unit {
            UnixUnit::Seconds => false,
            UnixUnit::Millis => true,
            UnixUnit::Auto => value.abs() >= 1e11,
        };
        let seconds = if millis { value / 1000.0 } else { value };
        // Anything beyond ±10^13 seconds (year 300 000) is garbage; also keeps the casts exact.
        if !seconds.is_finite() || seconds.abs() > 1e13 {
            return Err(TimeError::OutOfRange);
        }
        let whole = seconds.floor();
        let nanos = ((seconds - whole) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
        DateTime::from_timestamp(whole as i64, nanos)
            .map(|time| (time, TimeProvenance::UnixTime))
            .ok_or(TimeError::OutOfRange)
    }
}

fn looks_numeric(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().filter(|b| *b == b'.').count() <= 1
        && digits.bytes().next().is_some_and(|b| b.is_ascii_digit())
}

fn parse_with_offset(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.to_utc());
    }
    // Offsets without a colon (`+0530`) and a space separator are common off-spec spellings.
    const WITH_OFFSET: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
    ];
    WITH_OFFSET
        .iter()
        .find_map(|format| DateTime::<FixedOffset>::parse_from_str(text, format).ok())
        .map(|time| time.to_utc())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(zone: &str) -> TimeSpec {
        TimeSpec {
            zone: Zone::parse(zone).unwrap(),
            ..TimeSpec::default()
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn explicit_offsets_win() {
        let spec = spec("Asia/Kolkata");
        for (input, expected) in [
            ("2017-08-02T13:23:02Z", "2017-08-02T13:23:02Z"),
            ("2018-08-06T15:00:32.002000Z", "2018-08-06T15:00:32.002Z"),
            (
                "2018-08-09T02:56:07.3453198Z",
                "2018-08-09T02:56:07.3453198Z",
            ),
            ("2024-01-01 10:00:00+05:30", "2024-01-01T04:30:00Z"),
            ("2024-01-01T10:00:00+0530", "2024-01-01T04:30:00Z"),
        ] {
            assert_eq!(
                spec.parse(&json!(input)),
                Ok((utc(expected), TimeProvenance::ExplicitOffset)),
                "{input}"
            );
        }
    }

    #[test]
    fn naive_times_take_the_declared_zone() {
        let ist = spec("Asia/Kolkata");
        let assumed = TimeProvenance::AssumedZone {
            zone: "Asia/Kolkata".into(),
        };
        for (input, expected) in [
            ("2016-07-12T17:12:36.710", "2016-07-12T11:42:36.710Z"),
            ("2022-10-31 19:56:16", "2022-10-31T14:26:16Z"),
            (
                "2022-10-31 19:56:16.123456789",
                "2022-10-31T14:26:16.123456789Z",
            ),
            ("2022-10-31T19:56", "2022-10-31T14:26:00Z"),
        ] {
            assert_eq!(
                ist.parse(&json!(input)),
                Ok((utc(expected), assumed.clone())),
                "{input}"
            );
        }
        let fixed = spec("+05:30");
        assert_eq!(
            fixed.parse(&json!("2022-10-31 19:56:16")),
            Ok((
                utc("2022-10-31T14:26:16Z"),
                TimeProvenance::AssumedZone {
                    zone: "+05:30".into()
                }
            ))
        );
        assert_eq!(
            spec("UTC").parse(&json!("2021-01-14T00:52:00")),
            Ok((
                utc("2021-01-14T00:52:00Z"),
                TimeProvenance::AssumedZone { zone: "UTC".into() }
            ))
        );
    }

    #[test]
    fn daylight_saving_edges_resolve_without_error() {
        let sydney = spec("Australia/Sydney");
        // 2024-10-06 02:30 never happened in Sydney (clocks jumped 02:00 → 03:00, AEST +10).
        assert_eq!(
            sydney.parse(&json!("2024-10-06T02:30:00")).unwrap().0,
            utc("2024-10-05T16:30:00Z")
        );
        // 2024-04-07 02:30 happened twice; the earlier (AEDT +11) wins.
        assert_eq!(
            sydney.parse(&json!("2024-04-07T02:30:00")).unwrap().0,
            utc("2024-04-06T15:30:00Z")
        );
    }

    #[test]
    fn dates_and_unix_times() {
        let spec = spec("UTC");
        assert_eq!(
            spec.parse(&json!("2024-08-05")),
            Ok((
                utc("2024-08-05T00:00:00Z"),
                TimeProvenance::DateOnly { zone: "UTC".into() }
            ))
        );
        let ts = (utc("2024-04-10T09:34:56Z"), TimeProvenance::UnixTime);
        assert_eq!(spec.parse(&json!(1712741696)), Ok(ts.clone()));
        assert_eq!(spec.parse(&json!("1712741696")), Ok(ts.clone()));
        assert_eq!(spec.parse(&json!(1712741696000_u64)), Ok(ts.clone()));
        assert_eq!(
            spec.parse(&json!(1712741696.5)).unwrap().0,
            utc("2024-04-10T09:34:56.5Z")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let spec = spec("UTC");
        assert!(matches!(
            spec.parse(&json!(1e300)),
            Err(TimeError::OutOfRange)
        ));
        assert!(matches!(
            spec.parse(&json!(-1e300)),
            Err(TimeError::OutOfRange)
        ));
        assert!(matches!(
            spec.parse(&json!(u64::MAX)),
            Err(TimeError::OutOfRange)
        ));
        assert!(matches!(
            spec.parse(&json!("yesterday")),
            Err(TimeError::Unparseable(_))
        ));
        assert!(matches!(
            spec.parse(&json!("2024-13-45T99:00:00")),
            Err(TimeError::Unparseable(_))
        ));
        assert!(matches!(
            spec.parse(&json!("")),
            Err(TimeError::Unparseable(_))
        ));
        assert!(matches!(
            spec.parse(&json!(true)),
            Err(TimeError::WrongType("a boolean"))
        ));
        assert!(matches!(
            spec.parse(&json!({})),
            Err(TimeError::WrongType(_))
        ));
    }

    #[test]
    fn formats_can_be_restricted() {
        let strict = TimeSpec {
            formats: vec![TimeFormat::Rfc3339],
            ..TimeSpec::default()
        };
        assert!(strict.parse(&json!("2024-01-01T00:00:00Z")).is_ok());
        assert!(strict.parse(&json!("2024-01-01T00:00:00")).is_err());
        assert!(strict.parse(&json!(1712741696)).is_err());
    }

    #[test]
    fn custom_formats_read_12_hour_clocks_and_month_names() {
        let custom = |pattern: &str| TimeFormat::Custom(CustomFormat::parse(pattern).unwrap());
        let spec = TimeSpec {
            zone: Zone::parse("America/New_York").unwrap(),
            formats: vec![
                custom("%m/%d/%Y %I:%M %p"),
                custom("%d %b %Y %H:%M"),
                custom("%Y%m%d %H%M%S%z"),
                custom("%d.%m.%Y"),
            ],
            unix_unit: UnixUnit::Auto,
        };
        let assumed = TimeProvenance::AssumedZone {
            zone: "America/New_York".into(),
        };
        assert_eq!(
            spec.parse(&json!("03/14/2024 2:05 PM")),
            Ok((utc("2024-03-14T18:05:00Z"), assumed.clone()))
        );
        assert_eq!(
            spec.parse(&json!("03/14/2024 12:05 am")),
            Ok((utc("2024-03-14T04:05:00Z"), assumed.clone()))
        );
        assert_eq!(
            spec.parse(&json!("14 Mar 2024 14:05")),
            Ok((utc("2024-03-14T18:05:00Z"), assumed))
        );
        assert_eq!(
            spec.parse(&json!("20240314 140500+0100")),
            Ok((utc("2024-03-14T13:05:00Z"), TimeProvenance::ExplicitOffset))
        );
        assert_eq!(
            spec.parse(&json!("14.03.2024")).unwrap().1,
            TimeProvenance::DateOnly {
                zone: "America/New_York".into()
            }
        );
        // A zone named by the payload wins over the profile's.
        let tokyo = Zone::parse("Asia/Tokyo").unwrap();
        assert_eq!(
            spec.parse_in(&json!("03/14/2024 2:05 PM"), Some(&tokyo))
                .unwrap()
                .0,
            utc("2024-03-14T05:05:00Z")
        );
        assert!(matches!(
            spec.parse(&json!("13/45/2024 2:05 PM")),
            Err(TimeError::Unparseable(_))
        ));
        assert!(CustomFormat::parse("%Q").is_err());
        assert!(CustomFormat::parse("%H:%M").is_err());
    }

    #[test]
    fn zones_parse() {
        assert_eq!(Zone::parse("UTC"), Ok(Zone::Utc));
        assert!(matches!(Zone::parse("-03:00"), Ok(Zone::Fixed(..))));
        assert!(Zone::parse("+25:00").is_err());
        assert!(Zone::parse("Mars/Olympus").is_err());
    }
}
