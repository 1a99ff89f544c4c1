//! Polling: the request each built-in builds, and poll responses mapped by the same engine as
//! webhooks, so that a scan seen both ways has one event id.

use std::collections::BTreeMap;

use crate::common::{Expect, Prov, check, fixture, profile, received_at, sample};
use waybill_carriers::{MapError, Mapped, PollRequest};
use waybill_core::{EventId, Origin, Status::*, TrackingNumber};

fn credentials(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tn(text: &str) -> TrackingNumber {
    TrackingNumber::parse(text).unwrap()
}

fn poll(name: &str, file: &str, number: &str) -> Mapped {
    profile(name)
        .map_poll_response(&fixture(file), &tn(number), received_at())
        .unwrap()
}

/// The request the poll spec of profile `name` builds for `number` (at the default base URL
/// unless `base` is given).
fn request(name: &str, base: Option<&str>, number: &str, pairs: &[(&str, &str)]) -> PollRequest {
    profile(name)
        .poll()
        .unwrap()
        .build_request(base, &tn(number), &credentials(pairs))
        .unwrap()
}

fn ids(mapped: &Mapped) -> Vec<EventId> {
    mapped.events.iter().map(|e| e.id.clone()).collect()
}

#[test]
fn starshipit_request() {
    let request = request(
        "starshipit",
        None,
        "T01234567890",
        &[("api_key", "k1"), ("subscription_key", "s1")],
    );
    assert_eq!(request.method, "GET");
    assert_eq!(
        request.url,
        "https://api.starshipit.com/api/track?tracking_number=T01234567890"
    );
    assert_eq!(
        request.headers,
        [
            ("Ocp-Apim-Subscription-Key".to_owned(), "s1".to_owned()),
            ("StarShipIT-Api-Key".to_owned(), "k1".to_owned())
        ]
    );
}

#[test]
fn aftership_request_against_a_local_server() {
    let request = request(
        "aftership",
        Some("http://127.0.0.1:8080/"),
        "9361289676091361892011",
        &[("api_key", "as-key")],
    );
    assert_eq!(
        request.url,
        "http://127.0.0.1:8080/tracking/2024-10/trackings?tracking_numbers=9361289676091361892011"
    );
    assert_eq!(
        request.headers,
        [("as-api-key".to_owned(), "as-key".to_owned())]
    );
    let spec = profile("aftership");
    let spec = spec.poll().unwrap();
    assert_eq!(spec.default_base_url(), Some("https://api.aftership.com"));
    assert!(spec.rate_limit_per_second().is_some());
    assert_eq!(spec.credential_names(), [("api_key".to_owned(), true)]);
}

#[test]
fn easypost_request_uses_basic_auth() {
    let request = request("easypost", None, "EZ1000000001", &[("api_key", "EZAK123")]);
    assert_eq!(
        request.url,
        "https://api.easypost.com/v2/trackers?tracking_codes=EZ1000000001"
    );
    // base64("EZAK123:") — API key as user name, empty password.
    assert_eq!(
        request.headers,
        [("Authorization".to_owned(), "Basic RVpBSzEyMzo=".to_owned())]
    );
}

#[test]
fn clickpost_request_encodes_credentials_and_optional_cp_id() {
    let with = request(
        "clickpost",
        None,
        "P0109276342",
        &[("username", "shop"), ("api_key", "a&b"), ("cp_id", "14")],
    );
    assert_eq!(
        with.url,
        "https://www.clickpost.in/api/v2/track-order/?username=shop&key=a%26b&waybill=P0109276342&cp_id=14"
    );
    let without = request(
        "clickpost",
        None,
        "P0109276342",
        &[("username", "shop"), ("api_key", "k")],
    );
    assert!(without.url.ends_with("&cp_id="), "{}", without.url);
    // The key is in the query string: Debug must not show it.
    let debug = format!("{with:?}");
    assert!(
        !debug.contains("a%26b") && debug.contains("/api/v2/track-order/"),
        "{debug}"
    );
    let spec = profile("clickpost");
    assert_eq!(
        spec.poll().unwrap().credential_names(),
        [
            ("api_key".into(), true),
            ("cp_id".into(), false),
            ("username".into(), true)
        ]
    );
}

#[test]
fn request_building_errors() {
    let spec = profile("aftership");
    let spec = spec.poll().unwrap();
    let number = tn("X1");
    assert_eq!(
        spec.build_request(None, &number, &BTreeMap::new()),
        Err(MapError::MissingCredential {
            name: "api_key".into()
        })
    );
    assert_eq!(
        spec.build_request(Some("ftp://x"), &number, &credentials(&[("api_key", "k")])),
        Err(MapError::InvalidBaseUrl)
    );
    assert_eq!(
        spec.build_request(
            None,
            &number,
            &credentials(&[("api_key", "k\r\nX-Evil: 1")])
        ),
        Err(MapError::InvalidCredential {
            name: "api_key".into()
        })
    );
}

#[test]
fn polls_and_webhooks_agree_on_event_ids() {
    // (profile, webhook sample, poll response, polled number, events)
    let cases = [
        (
            "aftership",
            "aftership/webhook-2026-07.json",
            "aftership/poll-get-tracking.json",
            "0000000000000000",
            1,
        ),
        (
            "easypost",
            "easypost/event-body.json",
            "easypost/poll-trackers.json",
            "1",
            7,
        ),
    ];
    for (name, hook_file, poll_file, number, events) in cases {
        let hook = sample(name, hook_file);
        let polled = poll(name, poll_file, number);
        assert_eq!(polled.events.len(), events, "{name}");
        assert_eq!(ids(&polled), ids(&hook), "{name}");
        assert!(
            polled.events.iter().all(|e| e.origin == Origin::Poll),
            "{name}"
        );
        assert_eq!(
            polled.provider_event_id, None,
            "{name}: a poll is no webhook delivery"
        );
    }
}

#[test]
fn polls_contain_the_webhooked_scan() {
    // (profile, webhook sample, poll response, polled number, expected events, which of them
    // is the webhooked scan): ClickPost's poll has the scan; Starshipit's has its history plus
    // the current status its webhooks carry.
    let cases = [
        (
            "clickpost",
            "clickpost/all-status-out-for-delivery.json",
            "clickpost/poll-track-order.json",
            "P0109276342",
            Expect::events(&[
                (
                    "P0109276342",
                    InTransit,
                    "5",
                    "2017-08-01T16:40:00Z",
                    Prov::Assumed("Asia/Kolkata"),
                ),
                (
                    "P0109276342",
                    OutForDelivery,
                    "6",
                    "2017-08-02T13:23:02Z",
                    Prov::Explicit,
                ),
            ]),
            1,
        ),
        (
            "starshipit",
            "starshipit/captured-real.json",
            "starshipit/poll-track.json",
            "T01234567890",
            Expect::events(&[
                (
                    "T01234567890",
                    InTransit,
                    "Dispatched",
                    "2026-06-10T12:30:00Z",
                    Prov::Assumed("UTC"),
                ),
                (
                    "T01234567890",
                    InTransit,
                    "InTransit",
                    "2026-06-11T04:43:42Z",
                    Prov::Assumed("UTC"),
                ),
                (
                    "T01234567890",
                    InTransit,
                    "InTransit",
                    "2026-06-11T04:43:42.1543701Z",
                    Prov::Explicit,
                ),
            ]),
            2,
        ),
    ];
    for (name, hook_file, poll_file, number, expect, webhooked) in cases {
        let hook = sample(name, hook_file);
        let polled = poll(name, poll_file, number);
        check(&format!("{name} poll"), &polled, &expect);
        assert_eq!(polled.events[webhooked].id, hook.events[0].id, "{name}");
    }
}

#[test]
fn starshipit_poll_history_has_place_and_message() {
    let polled = poll("starshipit", "starshipit/poll-track.json", "T01234567890");
    assert_eq!(polled.events[0].location.as_deref(), Some("SYDNEY"));
    assert_eq!(
        polled.events[0].message.as_deref(),
        Some("Shipment picked up")
    );
}

#[test]
fn items_about_another_number_are_skipped() {
    let polled = poll(
        "aftership",
        "aftership/poll-get-tracking.json",
        "SOMETHINGELSE",
    );
    assert!(polled.events.is_empty());
    // ClickPost scans carry no waybill: they belong to whatever was polled.
    let polled = poll("clickpost", "clickpost/poll-track-order.json", "ANY123");
    assert_eq!(polled.events.len(), 2);
    assert!(
        polled
            .events
            .iter()
            .all(|e| e.tracking_number.as_str() == "ANY123")
    );
}

#[test]
fn empty_and_invalid_poll_responses() {
    let aftership = profile("aftership");
    let number = tn("X1");
    let empty = aftership
        .map_poll_response(br#"{"data":{"trackings":[]}}"#, &number, received_at())
        .unwrap();
    assert!(empty.events.is_empty());
    let invalid = aftership.map_poll_response(b"<html>502</html>", &number, received_at());
    assert!(
        matches!(invalid, Err(MapError::InvalidJson { .. })),
        "{invalid:?}"
    );
    let clickpost = profile("clickpost");
    let not_valid = br#"{"result":{"X1":{"valid":false,"scans":[]}}}"#;
    assert!(
        clickpost
            .map_poll_response(not_valid, &number, received_at())
            .unwrap()
            .events
            .is_empty()
    );
}

#[test]
fn waybill_has_no_poll_but_maps_a_poll_body_like_a_webhook() {
    let waybill = profile("waybill");
    assert!(waybill.poll().is_none());
    let mapped = waybill
        .map_poll_response(
            &fixture("waybill/single.json"),
            &tn("ACME000123"),
            received_at(),
        )
        .unwrap();
    assert_eq!(mapped.events.len(), 1);
    assert_eq!(mapped.events[0].origin, Origin::Poll);
}
