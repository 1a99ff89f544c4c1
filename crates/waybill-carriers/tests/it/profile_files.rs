//! Profile files: the worked example from the docs, a directory of user profiles overriding a
//! built-in, and broken files reported with file, field and position.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{BUILTIN_NAMES, Expect, Prov, check, fixture, fixture_path, received_at};
use http::{HeaderMap, HeaderValue};
use waybill_carriers::{CarrierProfile, ProfileError, ProfileRegistry, UnverifiedRequest};
use waybill_core::Status::*;

/// A fresh empty directory under the system temp dir (no tempfile crate needed).
fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "waybill-carriers-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn example() -> CarrierProfile {
    ProfileRegistry::load_file(&fixture_path("example-courier.toml")).unwrap()
}

#[test]
fn the_documented_example_loads_verifies_and_maps() {
    let kea = example();
    assert_eq!(kea.name, "kea-parcel");
    let body = fixture("example-courier/webhook.json");
    // Signature computed with Python: hmac.new(b"kea-secret", body, hashlib.sha256).hexdigest()
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-kea-signature",
        HeaderValue::from_static(
            "sha256=dea245b48364099592cb953693b4c0dfe211635f0d387fce6b134c0099c82915",
        ),
    );
    let verified = kea
        .verify(
            UnverifiedRequest {
                headers: &headers,
                body: &body,
            },
            &["kea-secret".to_owned()],
            received_at(),
        )
        .unwrap();
    let mapped = kea.map_webhook(&verified, received_at()).unwrap();
    // Pacific/Auckland is on daylight time (+13) in November.
    const NZ: Prov = Prov::Assumed("Pacific/Auckland");
    check(
        "kea-parcel",
        &mapped,
        &Expect {
            events: &[
                ("KP123456789NZ", InTransit, "PU", "2026-11-26T03:05:00Z", NZ),
                ("KP123456789NZ", InTransit, "IT", "2026-11-26T09:40:00Z", NZ),
                (
                    "KP123456789NZ",
                    OutForDelivery,
                    "OD",
                    "2026-11-26T19:10:00Z",
                    NZ,
                ),
                ("KP123456789NZ", Unknown, "ZZ", "2026-11-26T19:11:00Z", NZ),
            ],
            provider_event_id: None,
            unmapped: &["ZZ"],
        },
    );
    let locations: Vec<Option<&str>> = mapped
        .events
        .iter()
        .map(|e| e.location.as_deref())
        .collect();
    assert_eq!(
        locations,
        [
            Some("Christchurch Depot"),
            Some("Auckland, AKL"),
            Some("Auckland Depot"),
            None
        ]
    );
    assert!(
        mapped
            .events
            .iter()
            .all(|e| e.carrier.as_str() == "kea-parcel")
    );
    assert_eq!(mapped.events[0].order_number.as_deref(), Some("ORD-77"));

    let request = kea
        .poll()
        .unwrap()
        .build_request(
            None,
            &"KP123456789NZ".parse().unwrap(),
            &[("api_key".into(), "kk".into())].into(),
        )
        .unwrap();
    assert_eq!(
        request.url,
        "https://api.keaparcel.example/v1/consignments/KP123456789NZ/scans"
    );
    assert_eq!(
        request.headers,
        [("Authorization".to_owned(), "Bearer kk".to_owned())]
    );
    let polled = kea
        .map_poll_response(&body, &"KP123456789NZ".parse().unwrap(), received_at())
        .unwrap();
    let ids =
        |m: &waybill_carriers::Mapped| m.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&polled), ids(&mapped));
}

#[test]
fn a_directory_adds_profiles_and_overrides_builtins() {
    let dir = temp_dir();
    std::fs::copy(fixture_path("example-courier.toml"), dir.join("kea.toml")).unwrap();
    // An operator's ClickPost override: same name, stricter event cap.
    let clickpost = include_str!("../../profiles/clickpost.toml").replace(
        "unwrap = [\"$/payload\"]",
        "unwrap = [\"$/payload\"]\nmax_events = 5",
    );
    std::fs::write(dir.join("clickpost.toml"), clickpost).unwrap();
    std::fs::write(dir.join("README.md"), "not a profile").unwrap();
    let registry = ProfileRegistry::with_dir(&dir).unwrap();
    let names: Vec<&str> = registry.names().collect();
    // The built-ins (ClickPost overridden in place) and the new one, in name order.
    let mut expected = BUILTIN_NAMES.to_vec();
    expected.push("kea-parcel");
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert_eq!(registry.get("clickpost").unwrap().max_events(), 5);
    assert_eq!(
        ProfileRegistry::builtin()
            .get("clickpost")
            .unwrap()
            .max_events(),
        1000
    );
    assert!(registry.get("nope").is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn two_files_with_one_name_are_an_error() {
    let dir = temp_dir();
    std::fs::copy(fixture_path("example-courier.toml"), dir.join("a.toml")).unwrap();
    std::fs::copy(fixture_path("example-courier.toml"), dir.join("b.toml")).unwrap();
    let error = ProfileRegistry::with_dir(&dir).unwrap_err();
    assert!(
        matches!(error, ProfileError::Duplicate { ref name, .. } if name == "kea-parcel"),
        "{error}"
    );
    assert!(
        error.to_string().contains("a.toml") && error.to_string().contains("b.toml"),
        "{error}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unreadable_paths_name_the_path() {
    let missing = Path::new("/nonexistent/waybill/profiles");
    let error = ProfileRegistry::with_dir(missing).unwrap_err();
    assert!(
        matches!(error, ProfileError::Io { .. })
            && error.to_string().contains("/nonexistent/waybill/profiles")
    );
    let error = ProfileRegistry::load_file(&missing.join("x.toml")).unwrap_err();
    assert!(error.to_string().contains("x.toml"), "{error}");
}

const GOOD: &str = r#"name = "broken"
[verify]
scheme = "hmac_sha256"
header = "X-Sig"
encoding = "hex"
[mapping.events]
array = "$/scans"
[mapping.fields]
tracking_number = "$/tn"
status = "@/code"
time = "@/at"
[mapping.time]
zone = "UTC"
[mapping.status.map]
A = "Delivered"
"#;

/// (replace this, with that, expected field, expected line (0 = not checked), text in reason)
const BROKEN: &[(&str, &str, &str, usize, &str)] = &[
    (
        "encoding = \"hex\"",
        "encoding = \"hexx\"",
        "verify.encoding",
        5,
        "unknown variant `hexx`",
    ),
    (
        "encoding = \"hex\"",
        "encodng = \"hex\"",
        "verify.encodng",
        5,
        "unknown field `encodng`",
    ),
    (
        "array = \"$/scans\"",
        "array = \"scans\"",
        "mapping.events.array",
        7,
        "must start with `$`",
    ),
    (
        "array = \"$/scans\"",
        "array = \"@/scans\"",
        "mapping.events.array",
        7,
        "no event element",
    ),
    (
        "status = \"@/code\"",
        "status = 5",
        "mapping.fields.status",
        10,
        "a path like",
    ),
    (
        "time = \"@/at\"",
        "time = { fixed = \"x\", join = [\"$/a\"] }",
        "mapping.fields.time",
        11,
        "exactly one of",
    ),
    (
        "zone = \"UTC\"",
        "zone = \"Mars/Olympus\"",
        "mapping.time.zone",
        13,
        "IANA",
    ),
    (
        "A = \"Delivered\"",
        "A = \"Teleported\"",
        "mapping.status.map.A",
        15,
        "not a canonical status",
    ),
    (
        "scheme = \"hmac_sha256\"",
        "scheme = \"rot13\"",
        "verify.scheme",
        3,
        "unknown variant `rot13`",
    ),
    ("name = \"broken\"", "", "(root)", 0, "missing field `name`"),
    ("[mapping.events]", "[mapping.events\n", "", 6, ""),
];

#[test]
fn broken_files_name_the_file_field_and_position() {
    assert!(CarrierProfile::from_toml("good.toml", GOOD).is_ok());
    for (from, to, field, line, reason) in BROKEN {
        let text = GOOD.replacen(from, to, 1);
        let error = CarrierProfile::from_toml("profiles/broken.toml", &text).unwrap_err();
        let ProfileError::Parse {
            file,
            field: got_field,
            line: got_line,
            reason: got_reason,
            ..
        } = &error
        else {
            panic!("{to}: expected a parse error, got {error}");
        };
        assert_eq!(file, "profiles/broken.toml");
        if !field.is_empty() {
            assert_eq!(got_field, field, "{to}: {error}");
        }
        if *line > 0 {
            assert_eq!(got_line, line, "{to}: {error}");
        }
        assert!(got_reason.contains(reason), "{to}: {error}");
        let display = error.to_string();
        assert!(
            display.starts_with("carrier profile profiles/broken.toml: field `"),
            "{display}"
        );
        assert!(!display.trim_end().contains('\n'), "one line: {display}");
    }
}

#[test]
fn contradictions_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("header = \"X-Sig\"\n", "", "verify.header"),
        (
            "header = \"X-Sig\"",
            "header = \"bad header\"",
            "verify.header",
        ),
        (
            "encoding = \"hex\"",
            "tolerance_seconds = 5",
            "verify.tolerance_seconds",
        ),
        (
            "array = \"$/scans\"",
            "single_object = true",
            "mapping.events",
        ),
        ("name = \"broken\"", "name = \"Not A Slug!\"", "name"),
        (
            "name = \"broken\"",
            "name = \"broken\"\nformat_version = 3",
            "format_version",
        ),
        (
            "A = \"Delivered\"",
            "A = \"Delivered\"\na = \"Returned\"",
            "mapping.status.map",
        ),
    ];
    let case_insensitive = GOOD.replace(
        "[mapping.status.map]",
        "[mapping.status]\ncase_insensitive = true\n[mapping.status.map]",
    );
    for (from, to, field) in cases {
        let base = if field == &"mapping.status.map" {
            case_insensitive.as_str()
        } else {
            GOOD
        };
        let text = base.replacen(from, to, 1);
        let error = CarrierProfile::from_toml("x.toml", &text).unwrap_err();
        let ProfileError::Invalid { field: got, .. } = &error else {
            panic!("{to}: {error}")
        };
        assert_eq!(got, field, "{error}");
    }
}

#[test]
fn the_docs_example_is_the_fixture_and_its_error_message_is_real() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/carrier-profiles.md"
    ))
    .unwrap();
    let start = docs
        .find("```toml\nformat_version = 1")
        .expect("the worked example")
        + "```toml\n".len();
    let block = &docs[start..start + docs[start..].find("```").unwrap()];
    let from_docs = CarrierProfile::from_toml("docs", block).unwrap();
    let from_fixture = example();
    let body = fixture("example-courier/webhook.json");
    let verified_headers = crate::common::signed_headers(&from_fixture, &body, received_at());
    for profile in [&from_docs, &from_fixture] {
        let verified = profile
            .verify(
                UnverifiedRequest {
                    headers: &verified_headers,
                    body: &body,
                },
                &[crate::common::SECRET.to_owned()],
                received_at(),
            )
            .unwrap();
        assert_eq!(
            profile
                .map_webhook(&verified, received_at())
                .unwrap()
                .events
                .len(),
            4
        );
    }
    let typo = block.replace("Pacific/Auckland", "Pacific/Aukland");
    let error = CarrierProfile::from_toml("profiles/kea.toml", &typo)
        .unwrap_err()
        .to_string();
    assert!(
        docs.contains(&error),
        "the docs quote a different message than:\n{error}"
    );
}
