//! Profile format 2 and the language additions, one worked profile per feature: composed
//! verification (digests, Standard Webhooks, Slack, several schemes, RSA/ECDSA/Ed25519 with key
//! ids and JWKS), nested arrays, filters, current fields, status-only webhooks, status pairs,
//! transforms, custom times, form and XML bodies, per-event isolation.

use crate::common::{headers, received_at, utc};
use chrono::{DateTime, Utc};
use http::HeaderMap;
use waybill_carriers::{
    CarrierProfile, Credentials, KeySet, MapError, Mapped, UnverifiedRequest, VerifyError,
};
use waybill_core::{Status, TimeProvenance};

fn profile(text: &str) -> CarrierProfile {
    CarrierProfile::from_toml("test.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn verify(
    profile: &CarrierProfile,
    pairs: &[(&str, &str)],
    body: &[u8],
    credentials: &Credentials<'_>,
    now: DateTime<Utc>,
) -> Result<Option<usize>, VerifyError> {
    let headers = headers(pairs);
    profile
        .verify_with(
            UnverifiedRequest {
                headers: &headers,
                body,
            },
            credentials,
            now,
        )
        .map(|verified| verified.matched_secret())
}

fn secrets(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn map(profile: &CarrierProfile, body: &str) -> Result<Mapped, MapError> {
    profile.map_stored_body(body.as_bytes(), received_at())
}

fn summary(mapped: &Mapped) -> Vec<String> {
    mapped
        .events
        .iter()
        .map(|e| {
            format!(
                "{} {:?} {} {} {}",
                e.tracking_number,
                e.status,
                e.raw_status.code,
                e.occurred_at.to_rfc3339(),
                e.location.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

const MAPPING: &str = r#"
[mapping.events]
current = "$"
[mapping.fields]
tracking_number = "$/tracking_number"
status = "@/status"
time = "@/time"
"#;

fn with_verify(verify: &str) -> CarrierProfile {
    profile(&format!(
        "format_version = 2\nname = \"t\"\n{verify}\n{MAPPING}"
    ))
}

#[test]
fn a_plain_digest_of_body_and_secret() {
    let profile = with_verify(
        r#"[verify]
algorithm = "sha256"
signed = "{body}/{secret}"
signature = "X-Digest"
encoding = "hex""#,
    );
    let body = br#"{"tracking_number":"A1","status":"Delivered"}"#;
    // sha256(body + "/" + secret), computed independently with sha256sum.
    let mut message = body.to_vec();
    message.extend_from_slice(b"/digest-secret");
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&message))
    };
    let credentials = Credentials {
        secrets: &secrets(&["old", "digest-secret"]),
        ..Credentials::default()
    };
    let now = received_at();
    assert_eq!(
        verify(&profile, &[("x-digest", &digest)], body, &credentials, now),
        Ok(Some(1))
    );
    let tampered = br#"{"tracking_number":"A2","status":"Delivered"}"#;
    assert!(matches!(
        verify(
            &profile,
            &[("x-digest", &digest)],
            tampered,
            &credentials,
            now
        ),
        Err(VerifyError::BadSignature { .. })
    ));
    assert_eq!(
        profile.sign_headers(body, "digest-secret", now),
        vec![("x-digest".to_owned(), digest)]
    );
}

const STANDARD_WEBHOOKS: &str = r#"[verify]
algorithm = "hmac_sha256"
signed = "{id}.{timestamp}.{body}"
id = "webhook-id"
timestamp = "webhook-timestamp"
tolerance_seconds = 300
signature = { header = "webhook-signature", separator = " ", item = "v1", item_separator = "," }
encoding = "base64"
secret_encoding = "whsec""#;

#[test]
fn standard_webhooks_is_a_profile_not_code() {
    // The test vector of the Standard Webhooks specification's reference library.
    let profile = with_verify(STANDARD_WEBHOOKS);
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    let now = DateTime::from_timestamp(1_649_367_553, 0).unwrap();
    let credentials = Credentials {
        secrets: &secrets(&["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]),
        ..Credentials::default()
    };
    let good = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
    let base = [
        ("webhook-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"),
        ("webhook-timestamp", "1649367553"),
    ];
    let with = |signature: &str| {
        let mut pairs = base.to_vec();
        pairs.push(("webhook-signature", signature));
        verify(&profile, &pairs, body, &credentials, now)
    };
    assert_eq!(with(good), Ok(Some(0)));
    // Rotation: an unknown signature beside the good one; another version's item ignored.
    assert_eq!(with(&format!("v1,AAAA v1a,xyz {good}")), Ok(Some(0)));
    assert!(matches!(
        with("v1,AAAA"),
        Err(VerifyError::BadSignature { .. })
    ));
    assert!(matches!(
        verify(&profile, &base, body, &credentials, now),
        Err(VerifyError::MissingSignature { .. })
    ));
    let later = now + chrono::TimeDelta::seconds(301);
    let mut pairs = base.to_vec();
    pairs.push(("webhook-signature", good));
    assert!(matches!(
        verify(&profile, &pairs, body, &credentials, later),
        Err(VerifyError::TimestampOutsideTolerance { .. })
    ));
    // `sign_headers` is the exact inverse.
    let signed = profile.sign_headers(body, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", now);
    let pairs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(pairs.len(), 3, "{pairs:?}");
    assert_eq!(
        verify(&profile, &pairs, body, &credentials, now),
        Ok(Some(0))
    );
}

#[test]
fn slack_style_v0_signatures_with_the_documented_vector() {
    // Slack's "Verifying requests from Slack" worked example (signing secret, timestamp, form
    // body and signature as published there).
    let profile = profile(
        r#"format_version = 2
name = "slack-like"
[verify]
algorithm = "hmac_sha256"
signed = "v0:{timestamp}:{body}"
timestamp = "X-Slack-Request-Timestamp"
signature = { header = "X-Slack-Signature", prefix = "v0=" }
encoding = "hex"
[mapping.body]
format = "form"
[mapping.events]
current = "$"
[mapping.fields]
tracking_number = "$/trigger_id"
status = "@/command"
"#,
    );
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let credentials = Credentials {
        secrets: &secrets(&["8f742231b10e8888abcd99yyyzzz85a5"]),
        ..Credentials::default()
    };
    let now = DateTime::from_timestamp(1_531_420_618, 0).unwrap();
    let pairs = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        (
            "X-Slack-Signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ];
    assert_eq!(
        verify(&profile, &pairs, body, &credentials, now),
        Ok(Some(0))
    );
    let mapped = profile
        .map_stored_body(body, now + chrono::TimeDelta::hours(1))
        .unwrap();
    assert_eq!(mapped.events[0].raw_status.code, "/webhook-collect");
}

#[test]
fn several_schemes_during_a_migration() {
    let profile = with_verify(
        r#"[[verify]]
algorithm = "hmac_sha256"
signature = { header = "X-Sig-V2", prefix = "sha256=" }
encoding = "hex"
[[verify]]
algorithm = "token"
signature = "X-Token""#,
    );
    let body = br#"{"tracking_number":"A1","status":"x"}"#;
    let credentials = Credentials {
        secrets: &secrets(&["s1"]),
        ..Credentials::default()
    };
    let now = received_at();
    assert_eq!(
        verify(&profile, &[("x-token", "s1")], body, &credentials, now),
        Ok(Some(0))
    );
    let signed = profile.sign_headers(body, "s1", now);
    let pairs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        verify(&profile, &pairs, body, &credentials, now),
        Ok(Some(0))
    );
    // Neither present: missing; a wrong token: bad (not "missing X-Sig-V2").
    assert!(matches!(
        verify(&profile, &[], body, &credentials, now),
        Err(VerifyError::MissingSignature { .. })
    ));
    assert!(matches!(
        verify(&profile, &[("x-token", "s2")], body, &credentials, now),
        Err(VerifyError::BadSignature { .. })
    ));
}

fn fixture_text(name: &str) -> String {
    String::from_utf8(crate::common::fixture(&format!("keys/{name}"))).unwrap()
}

/// The message the fixture signatures sign (made with `openssl dgst -sha256 -sign`,
/// `-sigopt rsa_padding_mode:pss`, and `openssl pkeyutl -sign -rawin` for Ed25519).
const SIGNED_BODY: &[u8] =
    br#"{"tracking_number":"RS123","status":"Delivered","time":"2026-11-27T10:00:00Z"}"#;
const SIGNED_AT: &str = "1795823940";

fn asymmetric(algorithm: &str) -> CarrierProfile {
    with_verify(&format!(
        r#"[verify]
algorithm = "{algorithm}"
signed = "{{timestamp}}.{{body}}"
timestamp = "X-Timestamp"
key_id = "X-Key-Id"
signature = "X-Signature"
encoding = "base64""#
    ))
}

#[test]
fn rsa_ecdsa_and_ed25519_with_key_ids_from_a_jwks() {
    let (jwks, skipped) = KeySet::from_jwks(fixture_text("jwks.json").as_bytes()).unwrap();
    assert_eq!(
        (jwks.len(), skipped),
        (3, 2),
        "an encryption key and a P-384 key are skipped"
    );
    let credentials = Credentials {
        jwks: Some(&jwks),
        ..Credentials::default()
    };
    let now = utc("2026-11-28T00:00:00Z");
    for (algorithm, kid, signature) in [
        ("rsa_sha256", "rsa-2026", "rsa.sig.b64"),
        ("rsa_pss_sha256", "rsa-2026", "pss.sig.b64"),
        ("ecdsa_p256_sha256", "ec-2026", "ec.sig.b64"),
        ("ed25519", "ed-2026", "ed.sig.b64"),
    ] {
        let profile = asymmetric(algorithm);
        let signature = fixture_text(signature);
        let pairs = |kid: &'static str| -> Vec<(&str, &str)> {
            vec![
                ("x-timestamp", SIGNED_AT),
                ("x-key-id", kid),
                ("x-signature", signature.trim()),
            ]
        };
        let good = pairs(kid);
        assert_eq!(
            verify(&profile, &good, SIGNED_BODY, &credentials, now),
            Ok(None),
            "{algorithm}"
        );
        let tampered =
            br#"{"tracking_number":"RS124","status":"Delivered","time":"2026-11-27T10:00:00Z"}"#;
        assert!(
            matches!(
                verify(&profile, &good, tampered, &credentials, now),
                Err(VerifyError::BadSignature { .. })
            ),
            "{algorithm}"
        );
        // A key id nobody published: 503-worthy, the key set may be stale.
        let error = verify(
            &profile,
            &pairs("rotated-2027"),
            SIGNED_BODY,
            &credentials,
            now,
        )
        .unwrap_err();
        assert!(
            matches!(error, VerifyError::UnknownKey { .. }),
            "{algorithm}: {error}"
        );
        assert_eq!(error.http_status(), 503);
        // No keys at all: an operator's mistake, 401.
        assert!(matches!(
            verify(&profile, &good, SIGNED_BODY, &Credentials::default(), now),
            Err(VerifyError::NoKeysConfigured)
        ));
    }
}

#[test]
fn configured_pem_keys_verify_without_a_key_id() {
    let keys = KeySet::from_config(&[
        fixture_text("rsa.pub"),
        fixture_text("ec.pub"),
        fixture_text("ed.pub"),
    ])
    .unwrap();
    assert_eq!(keys.len(), 3);
    let credentials = Credentials {
        public_keys: Some(&keys),
        ..Credentials::default()
    };
    let profile = with_verify(
        r#"[verify]
algorithm = "rsa_sha256"
signed = "{timestamp}.{body}"
timestamp = "X-Timestamp"
signature = "X-Signature""#,
    );
    let signature = fixture_text("rsa.sig.b64");
    let pairs = [
        ("x-timestamp", SIGNED_AT),
        ("x-signature", signature.trim()),
    ];
    assert_eq!(
        verify(
            &profile,
            &pairs,
            SIGNED_BODY,
            &credentials,
            utc("2026-11-28T00:00:00Z")
        ),
        Ok(None)
    );
    let error = KeySet::from_config(&[
        "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----".to_owned(),
    ])
    .unwrap_err();
    assert!(error.to_string().starts_with("public key 0:"), "{error}");
    assert!(KeySet::from_jwks(b"[]").is_err());
}

#[test]
fn bad_verify_tables_name_the_key() {
    for (table, field) in [
        ("algorithm = \"hmac_sha256\"", "verify.signature"),
        (
            "algorithm = \"hmac_sha256\"\nsignature = \"x\"\nsigned = \"{timestamp}.{body}\"",
            "verify.timestamp",
        ),
        (
            "algorithm = \"rsa_sha256\"\nsignature = \"x\"\nsigned = \"{body}{secret}\"",
            "verify.signed",
        ),
        (
            "algorithm = \"hmac_sha256\"\nsignature = \"x\"\nkey_id = \"k\"",
            "verify.key_id",
        ),
        (
            "algorithm = \"hmac_sha256\"\nsignature = \"x\"\nscheme = \"none\"",
            "verify.algorithm",
        ),
        (
            "scheme = \"hmac_sha256\"\nheader = \"x\"\nsigned = \"{body}\"",
            "verify.signed",
        ),
    ] {
        let text = format!("format_version = 2\nname = \"t\"\n[verify]\n{table}\n{MAPPING}");
        let error = CarrierProfile::from_toml("t.toml", &text).unwrap_err();
        assert!(error.to_string().contains(field), "{table}: {error}");
    }
    let text = format!(
        "format_version = 2\nname = \"t\"\n[verify]\nalgorithm = \"sha256\"\nsignature = \"x\"\nsigned = \"{{nope}}\"\n{MAPPING}"
    );
    let error = CarrierProfile::from_toml("t.toml", &text).unwrap_err();
    assert!(error.to_string().contains("unknown placeholder"), "{error}");
}

const NONE: &str = "format_version = 2\nname = \"t\"\n[verify]\nscheme = \"none\"\n";

#[test]
fn nested_arrays_read_every_leg_with_its_ancestors() {
    let profile = profile(&format!(
        r#"{NONE}
[mapping.events]
array = ["$/shipments", "@/legs", "@/events"]
[mapping.fields]
tracking_number = "^^/number"
carrier = "^/carrier"
status = "@/code"
time = "@/at"
location = ["@/place", "^/hub"]
"#
    ));
    let mapped = map(
        &profile,
        r#"{"shipments":[
            {"number":"S1","legs":[
                {"carrier":"dhl","hub":"LEJ","events":[{"code":"PU","at":"2026-11-20T10:00:00Z"},{"code":"IT","at":"2026-11-21T10:00:00Z","place":"Paris"}]},
                {"carrier":"colissimo","events":[{"code":"DL","at":"2026-11-22T10:00:00Z"}]}]},
            {"number":"S2","legs":[{"carrier":"ups","events":[{"code":"PU","at":"2026-11-23T10:00:00Z"}]}]}]}"#,
    )
    .unwrap();
    assert_eq!(
        summary(&mapped),
        [
            "S1 Unknown PU 2026-11-20T10:00:00+00:00 LEJ",
            "S1 Unknown IT 2026-11-21T10:00:00+00:00 Paris",
            "S1 Unknown DL 2026-11-22T10:00:00+00:00 -",
            "S2 Unknown PU 2026-11-23T10:00:00+00:00 -",
        ]
    );
    let carriers: Vec<&str> = mapped.events.iter().map(|e| e.carrier.as_str()).collect();
    assert_eq!(carriers, ["dhl", "dhl", "colissimo", "ups"]);
}

#[test]
fn a_wildcard_level_reads_lists_side_by_side() {
    let profile = profile(&format!(
        r#"{NONE}
[mapping.events]
array = ["$/data/*/trackinfo"]
[mapping.fields]
tracking_number = "$/data/number"
status = "@/code"
time = "@/at"
"#
    ));
    let mapped = map(
        &profile,
        r#"{"data":{"number":"W1","id":7,"origin_info":{"trackinfo":[{"code":"PU","at":"2026-11-20T10:00:00Z"}]},"destination_info":{"trackinfo":[{"code":"DL","at":"2026-11-22T10:00:00Z"}]},"extra":{"trackinfo":null}}}"#,
    )
    .unwrap();
    let mut summary = summary(&mapped);
    summary.sort();
    assert_eq!(
        summary,
        [
            "W1 Unknown DL 2026-11-22T10:00:00+00:00 -",
            "W1 Unknown PU 2026-11-20T10:00:00+00:00 -",
        ]
    );
    // A match that is not a list is the same 400 as without `*`, naming the concrete path.
    let error = map(
        &profile,
        r#"{"data":{"number":"W1","origin_info":{"trackinfo":"none"}}}"#,
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("$/data/origin_info/trackinfo"),
        "{error}"
    );
    // `*` stays refused in field paths: one field is one value.
    let text = format!(
        "{NONE}[mapping.events]\ncurrent = \"$\"\n[mapping.fields]\ntracking_number = \"$/a/*\"\nstatus = \"@/s\"\n"
    );
    let refused = CarrierProfile::from_toml("test.toml", &text).unwrap_err();
    assert!(
        refused.to_string().contains("`*` is only allowed"),
        "{refused}"
    );
}

#[test]
fn filters_ignore_payloads_and_skip_events() {
    let profile = profile(&format!(
        r#"{NONE}
[[mapping.ignore]]
path = "$/event"
in = ["ping", "shipment.created"]
[[mapping.when]]
path = "$/object"
present = true
[mapping.events]
array = "$/object/details"
[[mapping.events.ignore]]
path = "@/kind"
matches = "^(note|internal)$"
[mapping.fields]
tracking_number = "$/object/code"
status = "@/status"
"#
    ));
    for body in [
        r#"{"event":"ping","object":{}}"#,
        r#"{"event":"tracker.updated"}"#,
    ] {
        let mapped = map(&profile, body).unwrap();
        assert!(mapped.ignored && mapped.events.is_empty(), "{body}");
    }
    let mapped = map(
        &profile,
        r#"{"event":"tracker.updated","object":{"code":"Z1","details":[{"status":"a"},{"status":"b","kind":"note"},{"status":"c","kind":"scan"}]}}"#,
    )
    .unwrap();
    assert!(!mapped.ignored);
    assert_eq!(mapped.skipped_events, 1);
    let raw: Vec<&str> = mapped
        .events
        .iter()
        .map(|e| e.raw_status.code.as_str())
        .collect();
    assert_eq!(raw, ["a", "c"]);
}

#[test]
fn current_and_array_fields_never_mix_and_status_only_ids_are_stable() {
    let profile = profile(&format!(
        r#"{NONE}
[mapping.events]
array = "$/history"
current = "$"
current_when = "always"
[mapping.fields]
tracking_number = "$/number"
status = "@/event_code"
time = "@/event_time"
location = "@/where"
[mapping.current_fields]
status = "@/current_status"
"#
    ));
    // The current object has `where` and `event_time` too, but of the shipment, not of a scan:
    // they are not read for it. It has no time of its own: status-only.
    let body = r#"{"number":"N1","current_status":"OFD","where":"Depot 9","event_time":"2026-11-20T00:00:00Z",
        "history":[{"event_code":"PU","event_time":"2026-11-25T08:00:00Z","where":"Origin"}]}"#;
    let first = map(&profile, body).unwrap();
    assert_eq!(
        summary(&first),
        [
            "N1 Unknown PU 2026-11-25T08:00:00+00:00 Origin",
            "N1 Unknown OFD 2026-11-28T00:00:00+00:00 -",
        ]
    );
    assert_eq!(first.events[1].time_provenance, TimeProvenance::ReceivedAt);
    // The courier retries an hour later: the status-only event keeps its id.
    let retry = profile
        .map_stored_body(body.as_bytes(), received_at() + chrono::TimeDelta::hours(1))
        .unwrap();
    assert_eq!(retry.events[1].id, first.events[1].id);
    // Format 2 insists on separate current fields when both kinds exist.
    let error = CarrierProfile::from_toml(
        "t.toml",
        &format!("{NONE}\n[mapping.events]\narray = \"$/h\"\ncurrent = \"$\"\n[mapping.fields]\ntracking_number = \"$/n\"\nstatus = \"@/s\"\n"),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("mapping.current_fields"),
        "{error}"
    );
}

#[test]
fn status_pairs_transforms_and_custom_times() {
    let profile = profile(&format!(
        r#"{NONE}
[mapping.events]
array = "$/events"
[mapping.fields]
tracking_number = {{ path = "$/ref", capture = "^TRK-(\\w+)$", case = "upper" }}
status = "@/status"
sub_status = {{ path = "@/detail", split = "/", pick = -1 }}
time = {{ join = ["@/date", "@/time"], separator = " " }}
zone = "@/tz"
[mapping.time]
zone = "America/New_York"
formats = [{{ strftime = "%m/%d/%Y %I:%M %p" }}, "rfc3339"]
[mapping.status.map]
Exception = "Exception"
InTransit = "InTransit"
[[mapping.status.pairs]]
status = "Exception"
sub_status = "DeliveryRefused"
to = "Returned"
[[mapping.status.pairs]]
status = "Exception"
sub_status = "Address*"
to = "AttemptFail"
"#
    ));
    let mapped = map(
        &profile,
        r#"{"ref":"TRK-ab12","events":[
            {"status":"Exception","detail":"ex/DeliveryRefused","date":"03/14/2026","time":"2:05 PM"},
            {"status":"Exception","detail":"AddressIssue","date":"03/14/2026","time":"11:59 pm","tz":"Asia/Tokyo"},
            {"status":"Exception","detail":"Weather","date":"03/15/2026","time":"12:00 AM","tz":"+05:30"},
            {"status":"InTransit","date":"2026-03-16T10:00:00Z"}]}"#,
    )
    .unwrap();
    let got: Vec<(String, Status, String)> = mapped
        .events
        .iter()
        .map(|e| {
            (
                e.tracking_number.to_string(),
                e.status,
                e.occurred_at.to_rfc3339(),
            )
        })
        .collect();
    let want = |n: &str, s, t: &str| (n.to_owned(), s, utc(t).to_rfc3339());
    assert_eq!(
        got,
        [
            want("AB12", Status::Returned, "2026-03-14T18:05:00Z"),
            want("AB12", Status::AttemptFail, "2026-03-14T14:59:00Z"),
            want("AB12", Status::Exception, "2026-03-14T18:30:00Z"),
            want("AB12", Status::InTransit, "2026-03-16T10:00:00Z"),
        ]
    );
    assert_eq!(
        mapped.events[0].sub_status.as_deref(),
        Some("DeliveryRefused")
    );
}

#[test]
fn xml_bodies_map_like_json() {
    let profile = profile(&format!(
        r#"{NONE}
[mapping.body]
format = "xml"
[mapping.events]
array = "$/TrackResponse/Shipment/Activity"
[mapping.fields]
tracking_number = "$/TrackResponse/Shipment/@number"
status = "@/Status/@code"
message = "@/Status/#text"
time = {{ join = ["@/Date", "@/Time"], separator = " " }}
[mapping.time]
formats = [{{ strftime = "%Y%m%d %H%M%S" }}]
"#
    ));
    let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<TrackResponse><Shipment number="1Z12345E0205271688">
  <Activity><Status code="D">Delivered</Status><Date>20261126</Date><Time>143000</Time></Activity>
</Shipment></TrackResponse>"#;
    let mapped = map(&profile, body).unwrap();
    assert_eq!(
        summary(&mapped),
        ["1Z12345E0205271688 Unknown D 2026-11-26T14:30:00+00:00 -"]
    );
    assert_eq!(mapped.events[0].message.as_deref(), Some("Delivered"));
    assert!(matches!(
        map(&profile, "<TrackResponse>"),
        Err(MapError::InvalidXml { .. })
    ));
}

#[test]
fn one_bad_event_never_loses_its_siblings() {
    let profile = profile(&format!(
        r#"{NONE}
[mapping.events]
array = "$/events"
[mapping.fields]
tracking_number = "$/number"
status = "@/status"
time = "@/time"
"#
    ));
    let body = r#"{"number":"K1","events":[
        {"status":"A","time":"2026-11-20T10:00:00Z"},
        {"status":"B","time":"03/14/2024 2:05 PM"},
        {"status":"C","time":"2026-11-21T10:00:00Z"}]}"#;
    let mapped = map(&profile, body).unwrap();
    assert_eq!(mapped.events.len(), 2);
    let [rejected] = mapped.rejected.as_slice() else {
        panic!("{:?}", mapped.rejected)
    };
    assert_eq!(rejected.path, "$/events/1");
    assert_eq!(rejected.kind, "invalid_timestamp");
    assert!(
        rejected.reason.contains("$/events/1/time"),
        "{}",
        rejected.reason
    );
    assert!(
        !rejected.reason.contains("PM"),
        "no payload value in the reason"
    );
    assert_eq!(rejected.tracking_number.as_deref(), Some("K1"));
    assert_eq!(rejected.element["status"], "B");

    // The strict mapping (polls, and `map_webhook`) still fails the whole payload.
    let headers = HeaderMap::new();
    let verified = profile
        .verify(
            UnverifiedRequest {
                headers: &headers,
                body: body.as_bytes(),
            },
            &[],
            received_at(),
        )
        .unwrap();
    assert!(matches!(
        profile.map_webhook(&verified, received_at()),
        Err(MapError::InvalidTimestamp { .. })
    ));
    // Whole-request failures: no tracking number anywhere, no status anywhere.
    assert!(matches!(
        map(&profile, r#"{"events":[{"status":"A"}]}"#),
        Err(MapError::MissingField {
            field: "tracking number",
            ..
        })
    ));
    assert!(matches!(
        map(
            &profile,
            r#"{"number":"K1","events":[{"time":"2026-11-20T10:00:00Z"}]}"#
        ),
        Err(MapError::MissingField {
            field: "status",
            ..
        })
    ));
    // Every event bad, but a tracking number known: all kept for replay, nothing lost.
    let all_bad = map(
        &profile,
        r#"{"number":"K1","events":[{"status":"A","time":"garbage"}]}"#,
    )
    .unwrap();
    assert!(all_bad.events.is_empty());
    assert_eq!(all_bad.rejected.len(), 1);
}

#[test]
fn the_sendcloud_builtin_verifies_its_documented_example() {
    // Sendcloud's "Webhooks overview": body `{"key": "value"}`, secret `secretkey`.
    let profile = crate::common::profile("sendcloud");
    let credentials = Credentials {
        secrets: &secrets(&["secretkey"]),
        ..Credentials::default()
    };
    let signature = "1eed4b3d41f4653ac64fd56f1bf1cbfd349e4482cbc11dff7134bd93e5da4b0a";
    assert_eq!(
        verify(
            &profile,
            &[("Sendcloud-Signature", signature)],
            br#"{"key": "value"}"#,
            &credentials,
            received_at()
        ),
        Ok(Some(0))
    );
}
