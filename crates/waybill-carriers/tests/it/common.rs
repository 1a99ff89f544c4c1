//! Shared helpers: fixture loading and the table-driven check of a mapped payload.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use waybill_carriers::{CarrierProfile, MapError, Mapped, ProfileRegistry, UnverifiedRequest};
use waybill_core::{Status, TimeProvenance};

/// The receipt time used by every fixture test (after every sample's scan times).
pub fn received_at() -> DateTime<Utc> {
    utc("2026-11-28T00:00:00Z")
}

pub fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .to_utc()
}

pub fn fixture_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

pub fn fixture(relative: &str) -> Vec<u8> {
    std::fs::read(fixture_path(relative)).unwrap_or_else(|e| panic!("fixture {relative}: {e}"))
}

/// The built-in profiles' names, in the registry's order.
pub const BUILTIN_NAMES: [&str; 9] = [
    "17track",
    "aftership",
    "clickpost",
    "easypost",
    "sendcloud",
    "ship24",
    "starshipit",
    "track123-app",
    "waybill",
];

pub fn profile(name: &str) -> std::sync::Arc<CarrierProfile> {
    ProfileRegistry::builtin()
        .get(name)
        .unwrap_or_else(|| panic!("no built-in profile {name}"))
}

/// A header map from `(name, value)` pairs, repeated names kept.
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

pub const SECRET: &str = "fixture-secret";

/// Headers a genuine sender would attach to `body` (signed with [`SECRET`] at `now`).
pub fn signed_headers(profile: &CarrierProfile, body: &[u8], now: DateTime<Utc>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some((name, value)) = profile.sign(body, SECRET, now) {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    headers
}

/// Signs, verifies and maps a body like the ingress would.
pub fn webhook(profile: &CarrierProfile, body: &[u8]) -> Result<Mapped, MapError> {
    let now = received_at();
    let headers = signed_headers(profile, body, now);
    let verified = profile
        .verify(
            UnverifiedRequest {
                headers: &headers,
                body,
            },
            &[SECRET.to_owned()],
            now,
        )
        .expect("a body signed with the right secret verifies, whatever it contains");
    profile.map_webhook(&verified, now)
}

/// A documented sample (a fixture file) sent to a built-in profile as a webhook, mapped.
pub fn sample(profile_name: &str, file: &str) -> Mapped {
    webhook(&profile(profile_name), &fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// How an expected event's time was derived (`TimeProvenance` without allocations).
#[derive(Debug, Clone, Copy)]
pub enum Prov {
    Explicit,
    Assumed(&'static str),
    Unix,
}

impl Prov {
    fn to_core(self) -> TimeProvenance {
        match self {
            Prov::Explicit => TimeProvenance::ExplicitOffset,
            Prov::Assumed(zone) => TimeProvenance::AssumedZone { zone: zone.into() },
            Prov::Unix => TimeProvenance::UnixTime,
        }
    }
}

/// One expected event: tracking number, canonical status, raw code, UTC time, provenance.
pub type Ev = (&'static str, Status, &'static str, &'static str, Prov);

/// What a fixture must map to.
pub struct Expect {
    pub events: &'static [Ev],
    pub provider_event_id: Option<&'static str>,
    pub unmapped: &'static [&'static str],
}

impl Expect {
    /// Just these events: no provider event id, and every status mapped.
    pub const fn events(events: &'static [Ev]) -> Expect {
        Expect {
            events,
            provider_event_id: None,
            unmapped: &[],
        }
    }
}

/// Asserts a mapping result against a table row.
pub fn check(label: &str, mapped: &Mapped, expect: &Expect) {
    let got: Vec<String> = mapped
        .events
        .iter()
        .map(|e| {
            format!(
                "{} {:?} {} {} {:?}",
                e.tracking_number,
                e.status,
                e.raw_status.code,
                e.occurred_at.to_rfc3339(),
                e.time_provenance
            )
        })
        .collect();
    let want: Vec<String> = expect
        .events
        .iter()
        .map(|(tn, status, raw, time, prov)| {
            format!(
                "{tn} {status:?} {raw} {} {:?}",
                utc(time).to_rfc3339(),
                prov.to_core()
            )
        })
        .collect();
    assert_eq!(got, want, "{label}: events");
    assert_eq!(
        mapped.provider_event_id.as_deref(),
        expect.provider_event_id,
        "{label}: provider event id"
    );
    let unmapped: Vec<&str> = mapped
        .unmapped_statuses
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(unmapped, expect.unmapped, "{label}: unmapped statuses");
}

/// Whether `error` is a missing `field` (e.g. `"status"`, `"tracking number"`).
pub fn is_missing(error: &MapError, field: &str) -> bool {
    matches!(error, MapError::MissingField { field: missing, .. } if *missing == field)
}
