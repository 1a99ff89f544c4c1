//! The worked examples of `docs/carrier-profiles.md` ("Worked examples, one per feature") are
//! read from the page itself: each profile loads, each signed sample verifies (and fails once a
//! byte of it changes), and each sample maps to exactly the events of the table shown under it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use waybill_carriers::{CarrierProfile, Credentials, KeySet, UnverifiedRequest};

/// One example as the page gives it, by its `<!-- example NAME PART -->` markers.
#[derive(Debug, Default)]
struct Example {
    profile: String,
    sample: String,
    headers: Vec<(String, String)>,
    ignored_sample: Option<String>,
    expected_rows: Vec<String>,
}

fn page() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/carrier-profiles.md"),
    )
    .unwrap()
}

/// Every example of the page: the fenced block (or, for `expect`, the table) after each marker.
fn examples(page: &str) -> BTreeMap<String, Example> {
    let lines: Vec<&str> = page.lines().collect();
    let mut examples: BTreeMap<String, Example> = BTreeMap::new();
    for (index, line) in lines.iter().enumerate() {
        let Some(marker) = line
            .strip_prefix("<!-- example ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        let (name, part) = marker.split_once(' ').unwrap();
        let example = examples.entry(name.to_owned()).or_default();
        let rest = &lines[index + 1..];
        if part == "expect" {
            // The table's rows, after its header and separator lines.
            example.expected_rows = rest
                .iter()
                .take_while(|line| line.starts_with('|'))
                .skip(2)
                .map(|row| normalise_row(row))
                .collect();
            continue;
        }
        assert!(
            rest[0].starts_with("```"),
            "{name} {part}: no block after the marker"
        );
        let block = rest[1..]
            .iter()
            .take_while(|line| !line.starts_with("```"))
            .copied()
            .collect::<Vec<_>>()
            .join("\n");
        match part {
            "profile" => example.profile = block,
            "sample" => example.sample = block,
            "ignored" => example.ignored_sample = Some(block),
            "headers" => {
                example.headers = block
                    .lines()
                    .map(|line| {
                        let (name, value) = line.split_once(':').unwrap();
                        (name.trim().to_owned(), value.trim().to_owned())
                    })
                    .collect();
            }
            other => panic!("{name}: unknown part `{other}`"),
        }
    }
    examples
}

fn normalise_row(row: &str) -> String {
    row.trim_matches('|')
        .split('|')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The rows of the page's tables for what a profile made of a sample.
fn rows(events: &[Value]) -> Vec<String> {
    let text = |event: &Value, pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    events
        .iter()
        .map(|event| {
            [
                "/tracking_number",
                "/status",
                "/raw_status/code",
                "/occurred_at",
                "/courier",
                "/location",
            ]
            .map(|pointer| text(event, pointer))
            .join(" | ")
        })
        .collect()
}

fn received_at() -> DateTime<Utc> {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

fn verify(
    profile: &CarrierProfile,
    headers: &[(String, String)],
    body: &[u8],
    credentials: &Credentials<'_>,
) -> bool {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    // Verified at the signed timestamp when there is one, as the sender's clock had it.
    let now = headers
        .iter()
        .find(|(name, _)| name == "X-Timestamp")
        .and_then(|(_, value)| DateTime::from_timestamp(value.parse().ok()?, 0))
        .unwrap_or_else(received_at);
    profile
        .verify_with(
            UnverifiedRequest {
                headers: &map,
                body,
            },
            credentials,
            now,
        )
        .is_ok()
}

#[test]
fn every_worked_example_maps_to_the_events_the_page_shows() {
    let examples = examples(&page());
    let names: Vec<&str> = examples.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "digest", "filters", "form", "nested", "rsa", "times", "wildcard", "xml"
        ],
        "one example per feature"
    );
    let (jwks, _) = KeySet::from_jwks(crate::common::fixture("keys/jwks.json").as_slice()).unwrap();
    let secrets = ["parcelbird-secret".to_owned()];
    for (name, example) in &examples {
        let profile = CarrierProfile::from_toml(&format!("{name} example"), &example.profile)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let body = example.sample.as_bytes();
        if !example.headers.is_empty() {
            let credentials = Credentials {
                secrets: &secrets,
                jwks: Some(&jwks),
                ..Credentials::default()
            };
            assert!(
                verify(&profile, &example.headers, body, &credentials),
                "{name}: the documented signature does not verify"
            );
            let mut tampered = body.to_vec();
            tampered[2] ^= 1;
            assert!(
                !verify(&profile, &example.headers, &tampered, &credentials),
                "{name}: a changed body still verifies"
            );
        }
        let mapped = profile
            .map_stored_body(body, received_at())
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(mapped.rejected.is_empty(), "{name}: {:?}", mapped.rejected);
        assert!(!mapped.ignored, "{name}");
        let events: Vec<Value> = mapped
            .events
            .iter()
            .map(|event| serde_json::to_value(event).unwrap())
            .collect();
        assert_eq!(rows(&events), example.expected_rows, "{name}");
        if let Some(ignored) = &example.ignored_sample {
            let mapped = profile
                .map_stored_body(ignored.as_bytes(), received_at())
                .unwrap();
            assert!(
                mapped.ignored && mapped.events.is_empty(),
                "{name}: {mapped:?}"
            );
        }
    }
}

#[test]
fn the_filters_example_skips_the_note() {
    let examples = examples(&page());
    let example = &examples["filters"];
    let profile = CarrierProfile::from_toml("filters example", &example.profile).unwrap();
    let mapped = profile
        .map_stored_body(example.sample.as_bytes(), received_at())
        .unwrap();
    assert_eq!(mapped.skipped_events, 1);
}
