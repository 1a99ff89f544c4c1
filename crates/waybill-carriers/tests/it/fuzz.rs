//! Property-based fuzzing: random bytes and random mutations of every fixture, through
//! sign → verify → map (and through the poll mapper) for every built-in profile. The property:
//! no panic, and the outcome is either events that respect the invariants or a typed error
//! with a one-line message.
//!
//! `WAYBILL_FUZZ_CASES` scales the case counts (default 1, i.e. the numbers below); every test
//! prints how many verify+map executions it ran (`cargo test -- --nocapture` shows them).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::{SECRET, fixture, received_at, signed_headers, webhook};
use chrono::TimeDelta;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};
use waybill_carriers::{CarrierProfile, MapError, Mapped, ProfileRegistry, UnverifiedRequest};
use waybill_core::{Status, TrackingNumber};

const PROFILES: [&str; 6] = [
    "starshipit",
    "clickpost",
    "aftership",
    "easypost",
    "waybill",
    "kea-parcel",
];

/// Every fixture with the profile it belongs to.
const FIXTURES: [(&str, &str); 16] = [
    ("starshipit/support-article.json", "starshipit"),
    ("starshipit/captured-real.json", "starshipit"),
    ("starshipit/poll-track.json", "starshipit"),
    ("clickpost/all-status-out-for-delivery.json", "clickpost"),
    ("clickpost/failed-delivery-ndr.json", "clickpost"),
    ("clickpost/selected-event-delivered.json", "clickpost"),
    ("clickpost/wrapped-payload.json", "clickpost"),
    ("clickpost/poll-track-order.json", "clickpost"),
    ("aftership/webhook-2026-07.json", "aftership"),
    ("aftership/legacy-truncated.json", "aftership"),
    ("aftership/poll-get-tracking.json", "aftership"),
    ("easypost/event-body.json", "easypost"),
    ("easypost/poll-trackers.json", "easypost"),
    ("waybill/single.json", "waybill"),
    ("waybill/batch.json", "waybill"),
    ("example-courier/webhook.json", "kea-parcel"),
];

/// The built-ins plus the documented example profile.
fn registry() -> ProfileRegistry {
    let mut registry = ProfileRegistry::builtin();
    registry.insert(
        ProfileRegistry::load_file(&crate::common::fixture_path("example-courier.toml")).unwrap(),
    );
    registry
}

fn cases(base: u32) -> u32 {
    let scale: u32 = std::env::var("WAYBILL_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    base.saturating_mul(scale.max(1))
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// The invariants every successful mapping keeps.
fn check_outcome(profile: &CarrierProfile, outcome: Result<Mapped, MapError>) {
    match outcome {
        Ok(mapped) => {
            assert!(mapped.events.len() <= profile.max_events());
            let earliest = crate::common::utc("2000-01-01T00:00:00Z");
            let latest = received_at() + TimeDelta::days(2);
            for event in &mapped.events {
                assert!(
                    event.occurred_at >= earliest && event.occurred_at <= latest,
                    "{event:?}"
                );
            }
            // An unmapped raw status always shows up as an Unknown event.
            if !mapped.unmapped_statuses.is_empty() {
                assert!(mapped.events.iter().any(|e| e.status == Status::Unknown));
            }
            let mut seen = std::collections::HashSet::new();
            assert!(
                mapped.events.iter().all(|e| seen.insert(e.id.clone())),
                "event ids repeat"
            );
        }
        Err(error) => {
            let text = error.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{text:?}");
            assert_eq!(error.http_status(), 400);
        }
    }
}

/// Runs one body through every profile as a webhook and as a poll response.
fn run_everywhere(registry: &ProfileRegistry, body: &[u8], counter: &AtomicU64) {
    let number = TrackingNumber::parse("0000000000000000").unwrap();
    for name in PROFILES {
        let profile = registry.get(name).unwrap();
        check_outcome(&profile, webhook(&profile, body));
        check_outcome(
            &profile,
            profile.map_poll_response(body, &number, received_at()),
        );
        counter.fetch_add(2, Ordering::Relaxed);
    }
}

#[test]
fn random_bytes_never_panic() {
    static EXECUTIONS: AtomicU64 = AtomicU64::new(0);
    let registry = registry();
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        // Mostly-JSON bytes reach deeper into the parser than uniform noise.
        proptest::collection::vec(
            prop::sample::select(b"{}[]\":,0123456789.eE+-tfnulr \\abc".to_vec()),
            0..512
        ),
    ];
    runner(cases(2000))
        .run(&bytes, |body| {
            run_everywhere(&registry, &body, &EXECUTIONS);
            Ok(())
        })
        .unwrap();
    println!(
        "fuzz random_bytes: {} verify+map executions",
        EXECUTIONS.load(Ordering::Relaxed)
    );
}

/// JSON values biased towards what the profiles look for.
fn arb_json() -> impl Strategy<Value = Value> {
    let text = prop_oneof![
        Just(String::new()),
        Just("2024-01-01T00:00:00Z".to_owned()),
        Just("2016-07-12T17:12:36.710".to_owned()),
        Just("2024-08-05".to_owned()),
        Just("1712741696".to_owned()),
        Just("1999-01-01T00:00:00Z".to_owned()),
        Just("9999-12-31T23:59:59Z".to_owned()),
        Just("Delivered".to_owned()),
        Just("InTransit".to_owned()),
        Just("6".to_owned()),
        Just("AB<1>".to_owned()),
        Just("\u{0}\u{feff}é漢".to_owned()),
        "[A-Za-z0-9 _./-]{0,70}",
        ".{0,20}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        text.prop_map(Value::String),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "tracking_number",
            "tracking_status",
            "last_updated_date",
            "tag",
            "subtag",
            "checkpoints",
            "checkpoint_time",
            "msg",
            "ts",
            "event_id",
            "waybill",
            "clickpost_status_code",
            "timestamp",
            "payload",
            "result",
            "tracking_details",
            "tracking_code",
            "status",
            "datetime",
            "carrier",
            "occurred_at",
            "location",
            "tracking_location",
            "city",
            "tracking_events",
            "scans",
            "data",
            "trackings",
            "trackers",
            "additional",
        ])
        .prop_map(str::to_owned),
        ".{0,6}",
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, Value),
    Remove(usize),
    Deepen(usize, u8),
    Repeat(usize, u16),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), arb_json()).prop_map(|(at, value)| Mutation::Replace(at, value)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        1 => (any::<usize>(), 1u8..80).prop_map(|(at, depth)| Mutation::Deepen(at, depth)),
        1 => (any::<usize>(), 0u16..1200).prop_map(|(at, count)| Mutation::Repeat(at, count)),
    ]
}

/// Every node's JSON pointer, root first.
fn pointers(value: &Value, here: String, out: &mut Vec<String>) {
    out.push(here.clone());
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, format!("{here}/{i}"), out);
            }
        }
        Value::Object(members) => {
            for (key, item) in members {
                pointers(
                    item,
                    format!("{here}/{}", key.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
}

fn apply(document: &mut Value, mutation: &Mutation) {
    let mut all = Vec::new();
    pointers(document, String::new(), &mut all);
    let pick = |at: &usize| all[at % all.len()].clone();
    match mutation {
        Mutation::Replace(at, value) => {
            if let Some(node) = document.pointer_mut(&pick(at)) {
                *node = value.clone();
            }
        }
        Mutation::Remove(at) => {
            let pointer = pick(at);
            if let Some((parent, last)) = pointer.rsplit_once('/') {
                let key = last.replace("~1", "/").replace("~0", "~");
                match document.pointer_mut(parent) {
                    Some(Value::Object(members)) => {
                        members.remove(&key);
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(index) = key.parse::<usize>()
                            && index < items.len()
                        {
                            items.remove(index);
                        }
                    }
                    _ => {}
                }
            }
        }
        Mutation::Deepen(at, depth) => {
            if let Some(node) = document.pointer_mut(&pick(at)) {
                for _ in 0..*depth {
                    *node = Value::Array(vec![node.take()]);
                }
            }
        }
        Mutation::Repeat(at, count) => {
            if let Some(Value::Array(items)) = document.pointer_mut(&pick(at))
                && let Some(first) = items.first().cloned()
            {
                items.resize(usize::from(*count), first);
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    fixture: usize,
    mutations: Vec<Mutation>,
    duplicate_key: bool,
    byte_flips: Vec<(usize, u8)>,
    truncate: Option<usize>,
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        0..FIXTURES.len(),
        proptest::collection::vec(arb_mutation(), 0..4),
        prop::bool::weighted(0.1),
        prop_oneof![8 => Just(Vec::new()), 2 => proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)],
        prop_oneof![9 => Just(None), 1 => any::<usize>().prop_map(Some)],
    )
        .prop_map(|(fixture, mutations, duplicate_key, byte_flips, truncate)| Case {
            fixture,
            mutations,
            duplicate_key,
            byte_flips,
            truncate,
        })
}

#[test]
fn mutated_fixtures_never_panic() {
    static EXECUTIONS: AtomicU64 = AtomicU64::new(0);
    static MAPPED_SOME: AtomicU64 = AtomicU64::new(0);
    let registry = registry();
    let documents: Vec<Value> = FIXTURES
        .iter()
        .map(|(file, _)| serde_json::from_slice(&fixture(file)).unwrap())
        .collect();
    runner(cases(3000))
        .run(&arb_case(), |case| {
            let mut document = documents[case.fixture].clone();
            for mutation in &case.mutations {
                apply(&mut document, mutation);
            }
            let mut body = serde_json::to_vec(&document).unwrap();
            if case.duplicate_key
                && let Some(open) = body.iter().position(|b| *b == b'{')
            {
                body.splice(
                    open + 1..open + 1,
                    br#""tracking_number":"DUP","tracking_number":"DUP","#
                        .iter()
                        .copied(),
                );
            }
            for (at, byte) in &case.byte_flips {
                if !body.is_empty() {
                    let index = at % body.len();
                    body[index] = *byte;
                }
            }
            if let Some(at) = case.truncate {
                body.truncate(at % (body.len() + 1));
            }
            run_everywhere(&registry, &body, &EXECUTIONS);
            let profile = registry.get(FIXTURES[case.fixture].1).unwrap();
            if webhook(&profile, &body).is_ok_and(|m| !m.events.is_empty()) {
                MAPPED_SOME.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    println!(
        "fuzz mutated_fixtures: {} verify+map executions ({} cases still mapped to events)",
        EXECUTIONS.load(Ordering::Relaxed),
        MAPPED_SOME.load(Ordering::Relaxed)
    );
}

#[test]
fn tampered_bodies_never_verify() {
    // The other direction: sign the fixture, then change one byte; verification must fail for
    // every body-covering scheme (ClickPost's static token does not cover the body).
    static EXECUTIONS: AtomicU64 = AtomicU64::new(0);
    let registry = registry();
    let strategy = (0..FIXTURES.len(), any::<usize>(), 1u8..=255);
    runner(cases(1000))
        .run(&strategy, |(index, at, delta)| {
            let body = fixture(FIXTURES[index].0);
            for name in [
                "starshipit",
                "aftership",
                "easypost",
                "waybill",
                "kea-parcel",
            ] {
                let profile = registry.get(name).unwrap();
                let headers = signed_headers(&profile, &body, received_at());
                let mut tampered = body.clone();
                let at = at % tampered.len();
                tampered[at] = tampered[at].wrapping_add(delta);
                let result = profile.verify(
                    UnverifiedRequest {
                        headers: &headers,
                        body: &tampered,
                    },
                    &[SECRET.to_owned()],
                    received_at(),
                );
                prop_assert!(result.is_err(), "{name} accepted a tampered body");
                EXECUTIONS.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    println!(
        "fuzz tampered_bodies: {} verify executions",
        EXECUTIONS.load(Ordering::Relaxed)
    );
}
