//! Bad payloads: each gets a typed error whose one-sentence message names the place, never a
//! panic, and never a payload value in the message.

use crate::common::{is_missing, profile, webhook};
use waybill_carriers::{MAX_JSON_DEPTH, MapError};

fn aftership(body: &str) -> Result<waybill_carriers::Mapped, MapError> {
    webhook(&profile("aftership"), body.as_bytes())
}

fn clickpost(body: &str) -> Result<waybill_carriers::Mapped, MapError> {
    webhook(&profile("clickpost"), body.as_bytes())
}

/// Asserts the error's variant (by a predicate), that its message is one sentence, mentions
/// `needle`, and does not contain `secret` (a payload value).
fn expect(
    result: Result<waybill_carriers::Mapped, MapError>,
    is: fn(&MapError) -> bool,
    needle: &str,
    secret: &str,
) {
    expect_for("", result, is, needle, secret);
}

/// [`expect`] for one case of a table, named by `case` in every failure message.
fn expect_for(
    case: &str,
    result: Result<waybill_carriers::Mapped, MapError>,
    is: fn(&MapError) -> bool,
    needle: &str,
    secret: &str,
) {
    let at = if case.is_empty() {
        String::new()
    } else {
        format!("{case}: ")
    };
    let error = result.expect_err(&format!("{at}an error"));
    assert!(is(&error), "{at}unexpected variant: {error:?}");
    let text = error.to_string();
    assert!(
        text.contains(needle),
        "{at}`{text}` should mention `{needle}`"
    );
    assert!(
        secret.is_empty() || !text.contains(secret),
        "{at}`{text}` leaks `{secret}`"
    );
    assert!(
        !text.contains(". ") && !text.ends_with('.'),
        "{at}one sentence without a full stop: {text}"
    );
    assert_eq!(error.http_status(), 400, "{at}HTTP status");
}

#[test]
fn not_json() {
    let truncated = r#"{"msg":{"tracking_number":"123","tag":"InTr"#;
    expect(
        aftership(truncated),
        |e| matches!(e, MapError::InvalidJson { .. }),
        "line 1",
        "",
    );
    expect(
        aftership(""),
        |e| matches!(e, MapError::InvalidJson { .. }),
        "not valid JSON",
        "",
    );
    expect(
        aftership("{} {}"),
        |e| matches!(e, MapError::InvalidJson { .. }),
        "trailing",
        "",
    );
    expect(
        aftership(r#"{"a":"\ud800"}"#),
        |e| matches!(e, MapError::InvalidJson { .. }),
        "JSON",
        "",
    );
}

#[test]
fn not_utf8() {
    let result = webhook(
        &profile("aftership"),
        b"{\"msg\":{\"tracking_number\":\"\xc3\x28\"}}",
    );
    expect(
        result,
        |e| matches!(e, MapError::InvalidUtf8 { valid_up_to: 27 }),
        "offset 27",
        "",
    );
}

#[test]
fn duplicate_keys_are_ambiguous() {
    // The signer may have meant the first tracking number; we refuse to guess.
    let body =
        r#"{"msg":{"tracking_number":"AAA111","tracking_number":"BBB222","tag":"Delivered"}}"#;
    expect(
        aftership(body),
        |e| matches!(e, MapError::DuplicateKey { .. }),
        "tracking_number",
        "AAA111",
    );
}

#[test]
fn nesting_too_deep() {
    let deep = format!(
        r#"{{"msg":{}1{}}}"#,
        "[".repeat(MAX_JSON_DEPTH),
        "]".repeat(MAX_JSON_DEPTH)
    );
    expect(
        aftership(&deep),
        |e| matches!(e, MapError::TooDeep { max: 64, .. }),
        "64",
        "",
    );
}

#[test]
fn missing_or_empty_identifiers() {
    expect(
        aftership(r#"{"msg":{"tag":"Delivered","checkpoints":[]}}"#),
        |e| is_missing(e, "tracking number"),
        "$/msg/tracking_number",
        "",
    );
    expect(
        aftership(r#"{"msg":{"tracking_number":"","tag":"Delivered"}}"#),
        |e| matches!(e, MapError::InvalidTrackingNumber { .. }),
        "is empty",
        "",
    );
    expect(
        aftership(r#"{"msg":{"tracking_number":"   ","tag":"Delivered"}}"#),
        |e| matches!(e, MapError::InvalidTrackingNumber { .. }),
        "$/msg/tracking_number",
        "",
    );
    expect(
        clickpost(r#"{"waybill":"AB 12<script>","clickpost_status_code":6}"#),
        |e| matches!(e, MapError::InvalidTrackingNumber { .. }),
        "$/waybill",
        "script",
    );
    expect(
        clickpost(&format!(
            r#"{{"waybill":"{}","clickpost_status_code":6}}"#,
            "9".repeat(65)
        )),
        |e| matches!(e, MapError::InvalidTrackingNumber { .. }),
        "longer than 64",
        "",
    );
    expect(
        webhook(&profile("waybill"), br#"{"tracking_number":"A1","status":"Delivered","occurred_at":"2026-01-01T00:00:00Z"}"#),
        |e| is_missing(e, "carrier"),
        "@/carrier",
        "",
    );
    expect(
        webhook(
            &profile("waybill"),
            br#"{"carrier":"not.valid","tracking_number":"A1","status":"Delivered"}"#,
        ),
        |e| matches!(e, MapError::InvalidCarrier { .. }),
        "$/carrier",
        "",
    );
}

#[test]
fn wrong_types_name_the_path() {
    expect(
        aftership(r#"{"msg":{"tracking_number":{"n":1},"tag":"Delivered"}}"#),
        |e| {
            matches!(
                e,
                MapError::WrongType {
                    found: "an object",
                    ..
                }
            )
        },
        "$/msg/tracking_number",
        "",
    );
    expect(
        aftership(r#"{"msg":{"tracking_number":"A1","checkpoints":"none"}}"#),
        |e| {
            matches!(
                e,
                MapError::WrongType {
                    found: "a string",
                    ..
                }
            )
        },
        "$/msg/checkpoints",
        "",
    );
    expect(
        aftership(r#"{"msg":{"tracking_number":"A1","checkpoints":[{"tag":"InTransit"}, 7]}}"#),
        |e| matches!(e, MapError::WrongType { .. }),
        "$/msg/checkpoints/1",
        "",
    );
    expect(
        aftership(r#"{"msg":{"tracking_number":"A1","checkpoints":[{"tag":["InTransit"]}]}}"#),
        |e| {
            matches!(
                e,
                MapError::WrongType {
                    found: "an array",
                    ..
                }
            )
        },
        "status",
        "",
    );
    expect(
        aftership(
            r#"{"msg":{"tracking_number":"A1","checkpoints":[{"tag":"InTransit","message":true}]}}"#,
        ),
        |e| {
            matches!(
                e,
                MapError::WrongType {
                    found: "a boolean",
                    ..
                }
            )
        },
        "message",
        "",
    );
    expect(
        aftership(r#"{"msg":"Delivered"}"#),
        |e| matches!(e, MapError::WrongType { .. }),
        "$/msg",
        "",
    );
    expect(
        aftership(
            r#"{"msg":{"tracking_number":"A1","checkpoints":[{"tag":"InTransit","checkpoint_time":{}}]}}"#,
        ),
        |e| {
            matches!(
                e,
                MapError::WrongType {
                    field: "timestamp",
                    ..
                }
            )
        },
        "$/msg/checkpoints/0/checkpoint_time",
        "",
    );
}

#[test]
fn bad_and_absurd_timestamps() {
    let with_time = |time: &str| {
        clickpost(&format!(
            r#"{{"waybill":"AB1","clickpost_status_code":6,"timestamp":{time}}}"#
        ))
    };
    expect(
        with_time(r#""next tuesday""#),
        |e| matches!(e, MapError::InvalidTimestamp { .. }),
        "$/timestamp",
        "tuesday",
    );
    // (time as written in the body, what the message mentions)
    let absurd = [
        (r#""1999-12-31T23:59:59Z""#, "before 2000"),
        (r#""0001-01-01T00:00:00""#, "$/timestamp"),
        (r#""2026-12-01T00:00:00Z""#, "2 days"),
        ("1e300", "$/timestamp"),
        ("-99999999999999999999", "$/timestamp"),
        ("18446744073709551615", "$/timestamp"),
        ("0", "$/timestamp"),
    ];
    for (time, needle) in absurd {
        expect_for(
            time,
            with_time(time),
            |e| matches!(e, MapError::AbsurdTimestamp { .. }),
            needle,
            "",
        );
    }
    expect(
        with_time(r#""2024-02-30 10:00:00""#),
        |e| matches!(e, MapError::InvalidTimestamp { .. }),
        "$/timestamp",
        "",
    );
    // Within two days of receipt is believable (clock skew, zone mistakes).
    assert!(with_time(r#""2026-11-29T23:00:00Z""#).is_ok());
    // Waybill's own format insists on an offset.
    expect(
        webhook(&profile("waybill"), br#"{"carrier":"a","tracking_number":"A1","status":"Delivered","occurred_at":"2026-01-01 10:00:00"}"#),
        |e| matches!(e, MapError::InvalidTimestamp { .. }),
        "$/occurred_at",
        "",
    );
}

#[test]
fn huge_numbers_are_text_or_errors_not_panics() {
    // A big integer tracking number is a valid (if odd) tracking number.
    let mapped =
        clickpost(r#"{"waybill":12345678901234567890,"clickpost_status_code":6}"#).unwrap();
    assert_eq!(
        mapped.events[0].tracking_number.as_str(),
        "12345678901234567890"
    );
    // A float that overflows is a JSON error; a float status is a raw code like any other.
    expect(
        clickpost(r#"{"waybill":"A1","clickpost_status_code":1e999}"#),
        |e| matches!(e, MapError::InvalidJson { .. }),
        "out of range",
        "",
    );
    let mapped = clickpost(r#"{"waybill":"A1","clickpost_status_code":6.0}"#).unwrap();
    assert_eq!(mapped.unmapped_statuses, ["6.0"]);
}

#[test]
fn too_many_events() {
    let checkpoint = r#"{"tag":"InTransit","checkpoint_time":"2024-01-01T00:00:00"}"#;
    let many = vec![checkpoint; 1001].join(",");
    let body = format!(r#"{{"msg":{{"tracking_number":"A1","checkpoints":[{many}]}}}}"#);
    expect(
        aftership(&body),
        |e| matches!(e, MapError::TooManyEvents { max: 1000 }),
        "1000",
        "",
    );
    let batch =
        vec![r#"{"carrier":"a","tracking_number":"A1","status":"InTransit"}"#; 1001].join(",");
    expect(
        webhook(&profile("waybill"), format!("[{batch}]").as_bytes()),
        |e| matches!(e, MapError::TooManyEvents { .. }),
        "more than",
        "",
    );
    // Exactly the cap is fine.
    let exactly = vec![checkpoint; 1000].join(",");
    let body = format!(r#"{{"msg":{{"tracking_number":"A1","checkpoints":[{exactly}]}}}}"#);
    // Same scan 1000 times collapses to one event.
    assert_eq!(aftership(&body).unwrap().events.len(), 1);
}

#[test]
fn empty_and_odd_roots() {
    for body in ["null", "[]", "7", "\"text\"", "true"] {
        // A document that is not an object is refused, not accepted with zero events…
        let easypost = webhook(&profile("easypost"), body.as_bytes());
        assert!(
            matches!(
                easypost,
                Err(MapError::WrongType {
                    field: "document",
                    ..
                })
            ),
            "{body}: {easypost:?}"
        );
    }
    // …unless the profile's events array is the document itself: then `[]` holds no event.
    assert!(webhook(&profile("waybill"), b"[]").is_ok_and(|m| m.events.is_empty()));
    assert!(webhook(&profile("waybill"), b"null").is_err());
    // …but Starshipit's payload *is* the event, and it needs a status.
    let error = webhook(&profile("starshipit"), b"{}").unwrap_err();
    assert!(is_missing(&error, "status"), "{error}");
    let error = webhook(&profile("starshipit"), b"[1,2]").unwrap_err();
    assert!(matches!(error, MapError::WrongType { .. }), "{error}");
}
