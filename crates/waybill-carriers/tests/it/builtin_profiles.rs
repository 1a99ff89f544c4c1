//! Every built-in profile against the platforms' documented samples (copied verbatim into
//! tests/fixtures, see its README.md), through sign → verify → map, table-driven.

use crate::common::{
    BUILTIN_NAMES, Ev, Expect, Prov, check, fixture, is_missing, profile, sample, webhook,
};
use waybill_carriers::ProfileRegistry;
use waybill_core::{Origin, Status::*};

const ASSUMED_IST: Prov = Prov::Assumed("Asia/Kolkata");

/// The same ClickPost delivery scan, sent bare and in its `payload` envelope.
const CLICKPOST_DELIVERED: Expect = Expect::events(&[(
    "420714276075",
    Delivered,
    "8",
    "2018-08-06T15:00:32.002Z",
    Prov::Explicit,
)]);

/// (profile, fixture, expectation)
const TABLE: &[(&str, &str, Expect)] = &[
    (
        "starshipit",
        "starshipit/support-article.json",
        Expect::events(&[(
            "QQQ001737901000931501",
            InTransit,
            "Dispatched",
            "2018-08-09T02:56:07.3453198Z",
            Prov::Explicit,
        )]),
    ),
    (
        "starshipit",
        "starshipit/captured-real.json",
        Expect::events(&[(
            "T01234567890",
            InTransit,
            "InTransit",
            "2026-06-11T04:43:42.1543701Z",
            Prov::Explicit,
        )]),
    ),
    (
        "clickpost",
        "clickpost/all-status-out-for-delivery.json",
        Expect::events(&[(
            "P0109276342",
            OutForDelivery,
            "6",
            "2017-08-02T13:23:02Z",
            Prov::Explicit,
        )]),
    ),
    (
        "clickpost",
        "clickpost/failed-delivery-ndr.json",
        // "2016-07-12T17:12:36.710" has no zone: IST, so 11:42:36.710 UTC.
        Expect::events(&[(
            "XYZABC",
            AttemptFail,
            "9",
            "2016-07-12T11:42:36.710Z",
            ASSUMED_IST,
        )]),
    ),
    (
        "clickpost",
        "clickpost/selected-event-delivered.json",
        CLICKPOST_DELIVERED,
    ),
    (
        "clickpost",
        "clickpost/wrapped-payload.json",
        CLICKPOST_DELIVERED,
    ),
    (
        "aftership",
        "aftership/webhook-2026-07.json",
        Expect {
            events: &[(
                "0000000000000000",
                InTransit,
                "InTransit_001",
                "2021-01-14T00:52:00Z",
                Prov::Assumed("UTC"),
            )],
            provider_event_id: Some("94dadd60-ed26-46d0-aa52-3ced925a50ff"),
            unmapped: &[],
        },
    ),
    (
        "easypost",
        "easypost/event-body.json",
        Expect {
            events: &EASYPOST_EVENTS,
            provider_event_id: Some("evt_1"),
            unmapped: &[],
        },
    ),
    (
        "waybill",
        "waybill/single.json",
        Expect {
            events: &[(
                "ACME000123",
                OutForDelivery,
                "OFD",
                "2026-11-26T21:15:00Z",
                Prov::Explicit,
            )],
            provider_event_id: Some("acme-evt-1"),
            unmapped: &[],
        },
    ),
    (
        "waybill",
        "waybill/batch.json",
        Expect {
            events: &[
                (
                    "ACME000123",
                    InTransit,
                    "ARR",
                    "2026-11-26T20:00:00Z",
                    Prov::Explicit,
                ),
                (
                    "ACME000123",
                    OutForDelivery,
                    "OFD",
                    "2026-11-26T21:15:00Z",
                    Prov::Explicit,
                ),
                (
                    "ACME000456",
                    Unknown,
                    "HELD_AT_CUSTOMS",
                    "2026-11-27T01:00:00Z",
                    Prov::Explicit,
                ),
            ],
            provider_event_id: None,
            unmapped: &["HELD_AT_CUSTOMS"],
        },
    ),
];

const EASYPOST_EVENTS: [Ev; 7] = [
    (
        "1",
        InfoReceived,
        "OC",
        "2024-07-31T15:00:00Z",
        Prov::Explicit,
    ),
    ("1", InTransit, "PU", "2024-07-31T19:27:00Z", Prov::Explicit),
    ("1", InTransit, "AR", "2024-07-31T22:35:00Z", Prov::Explicit),
    ("1", InTransit, "DP", "2024-08-01T14:42:13Z", Prov::Explicit),
    ("1", InTransit, "IT", "2024-08-02T02:46:19Z", Prov::Explicit),
    ("1", InTransit, "IT", "2024-08-02T18:35:20Z", Prov::Explicit),
    ("1", InTransit, "AR", "2024-08-02T18:50:00Z", Prov::Explicit),
];

#[test]
fn builtin_profiles_load() {
    let registry = ProfileRegistry::builtin();
    let names: Vec<&str> = registry.names().collect();
    assert_eq!(names, BUILTIN_NAMES);
    for name in names {
        let profile = registry.get(name).unwrap();
        assert_eq!(profile.name, name);
        assert!(profile.description.is_some(), "{name} has a description");
    }
}

#[test]
fn every_sample_maps_as_expected() {
    for (name, file, expect) in TABLE {
        let mapped = sample(name, file);
        check(file, &mapped, expect);
        for event in &mapped.events {
            assert_eq!(event.origin, Origin::Webhook, "{file}");
        }
    }
}

#[test]
fn every_verbatim_sample_is_in_the_table() {
    // A new sample copied into fixtures/ must get a row (or an explicit error test below).
    let mut files = Vec::new();
    for carrier in [
        "starshipit",
        "clickpost",
        "aftership",
        "easypost",
        "waybill",
    ] {
        for entry in std::fs::read_dir(crate::common::fixture_path(carrier)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !name.starts_with("poll-") {
                files.push(format!("{carrier}/{name}"));
            }
        }
    }
    let covered: Vec<&str> = TABLE.iter().map(|(_, file, _)| *file).collect();
    for file in files {
        assert!(
            covered.contains(&file.as_str()) || file == "aftership/legacy-truncated.json",
            "{file} has no table row"
        );
    }
}

#[test]
fn the_carrier_is_the_platform_and_the_courier_is_kept() {
    let cases = [
        (
            "starshipit",
            "starshipit/support-article.json",
            "starshipit",
            Some("Australia Post"),
        ),
        (
            "clickpost",
            "clickpost/all-status-out-for-delivery.json",
            "clickpost",
            Some("14"),
        ),
        (
            "aftership",
            "aftership/webhook-2026-07.json",
            "aftership",
            Some("usps"),
        ),
        (
            "easypost",
            "easypost/event-body.json",
            "easypost",
            Some("FedEx"),
        ),
        ("waybill", "waybill/single.json", "acme-express", None),
    ];
    for (name, file, carrier, courier) in cases {
        let mapped = sample(name, file);
        for event in &mapped.events {
            assert_eq!(event.carrier.as_str(), carrier, "{file}");
            assert_eq!(event.courier.as_deref(), courier, "{file}");
        }
    }
}

#[test]
fn details_of_each_format() {
    let starshipit = sample("starshipit", "starshipit/support-article.json");
    assert_eq!(
        starshipit.events[0].order_number.as_deref(),
        Some("5567476")
    );
    assert_eq!(starshipit.events[0].location, None);

    let ofd = sample("clickpost", "clickpost/all-status-out-for-delivery.json");
    let event = &ofd.events[0];
    assert_eq!(event.location.as_deref(), Some("VASAI, MUMBAI"));
    assert_eq!(event.message.as_deref(), Some("Out For Delivery"));
    assert_eq!(
        event.raw_status.description.as_deref(),
        Some("OutForDelivery")
    );
    assert_eq!(ofd.events.len(), 1, "latest_status is not a second event");

    let ndr = sample("clickpost", "clickpost/failed-delivery-ndr.json");
    assert_eq!(
        ndr.events[0].sub_status.as_deref(),
        Some("Customer Unavailable")
    );

    let aftership = sample("aftership", "aftership/webhook-2026-07.json");
    let event = &aftership.events[0];
    assert_eq!(event.sub_status.as_deref(), Some("InTransit_001"));
    assert_eq!(
        event.message.as_deref(),
        Some("Departed Shipping Partner Facility, USPS Awaiting Item")
    );
    assert_eq!(event.order_number.as_deref(), Some("string"));
    assert_eq!(
        event.provider_event_id.as_deref(),
        Some("94dadd60-ed26-46d0-aa52-3ced925a50ff")
    );

    let easypost = sample("easypost", "easypost/event-body.json");
    let locations: Vec<Option<&str>> = easypost
        .events
        .iter()
        .map(|e| e.location.as_deref())
        .collect();
    assert_eq!(locations[0], Some("US"), "null city and state are skipped");
    assert_eq!(locations[1], Some("ORLANDO, FL, US"));
    assert_eq!(
        easypost.events[1].sub_status.as_deref(),
        Some("arrived_at_facility")
    );
    assert_eq!(
        easypost.events[1].raw_status.description.as_deref(),
        Some("Picked up")
    );

    let single = sample("waybill", "waybill/single.json");
    assert_eq!(single.events[0].order_number.as_deref(), Some("SO-1001"));
    assert_eq!(single.events[0].message.as_deref(), Some("With driver"));
}

#[test]
fn aftership_without_checkpoints_maps_the_tag_at_ts() {
    let body = br#"{"event":"tracking_update","event_id":"e-1","msg":{"tracking_number":"9361289676091361892011","slug":"usps","tag":"InfoReceived","subtag":"InfoReceived_001","checkpoints":[]},"ts":1712741696}"#;
    let mapped = webhook(&profile("aftership"), body).unwrap();
    check(
        "aftership no checkpoints",
        &mapped,
        &Expect {
            events: &[(
                "9361289676091361892011",
                InfoReceived,
                "InfoReceived_001",
                "2024-04-10T09:34:56Z",
                Prov::Unix,
            )],
            provider_event_id: Some("e-1"),
            unmapped: &[],
        },
    );
}

#[test]
fn the_truncated_legacy_aftership_sample_is_a_clear_400() {
    // The stored copy stops before `tag` and `checkpoints`: there is no status to map.
    let error = webhook(
        &profile("aftership"),
        &fixture("aftership/legacy-truncated.json"),
    )
    .unwrap_err();
    assert!(is_missing(&error, "status"), "{error}");
    assert_eq!(error.to_string(), "the status is missing (looked at @/tag)");
}

#[test]
fn unknown_statuses_become_unknown_and_are_reported() {
    let body = br#"{"waybill":"AB1","cp_id":3,"clickpost_status_code":101,"timestamp":"2024-01-01 10:00:00","location":"X"}"#;
    let mapped = webhook(&profile("clickpost"), body).unwrap();
    assert_eq!(mapped.events[0].status, Unknown);
    assert_eq!(mapped.events[0].raw_status.code, "101");
    assert_eq!(mapped.unmapped_statuses, ["101"]);

    // EasyPost's own `unknown` is a mapped status (to Unknown), not an unmapped one.
    let body = br#"{"id":"evt_2","result":{"object":"Tracker","tracking_code":"Z1","carrier":"UPS","status":"unknown","updated_at":"2024-08-02T19:26:51Z","tracking_details":[]}}"#;
    let mapped = webhook(&profile("easypost"), body).unwrap();
    assert_eq!(mapped.events[0].status, Unknown);
    assert!(mapped.unmapped_statuses.is_empty());
}

#[test]
fn starshipit_status_names_match_any_case() {
    let body = br#"{"tracking_number":"T1","tracking_status":"PICKUPINSTORE","last_updated_date":"2026-06-11T04:43:42Z"}"#;
    let mapped = webhook(&profile("starshipit"), body).unwrap();
    assert_eq!(mapped.events[0].status, AvailableForPickup);
    assert_eq!(mapped.events[0].raw_status.code, "PICKUPINSTORE");
}

#[test]
fn a_payload_without_events_is_accepted_empty() {
    // An empty batch of Waybill's own format: nothing to store, nothing wrong, not filtered.
    let mapped = webhook(&profile("waybill"), b"[]").unwrap();
    assert!(mapped.events.is_empty());
    assert!(!mapped.ignored);
}

#[test]
fn easypost_ignores_events_that_are_not_about_a_tracker() {
    // EasyPost sends other Event types on the same URL (e.g. batch.created): a 200 with zero
    // events, counted as ignored, like a body without any result.
    for body in [
        br#"{"description":"batch.created","id":"evt_9","result":{"object":"Batch"}}"#.as_slice(),
        br#"{"description":"tracker.updated"}"#,
    ] {
        let mapped = webhook(&profile("easypost"), body).unwrap();
        assert!(mapped.events.is_empty());
        assert!(mapped.ignored, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn events_without_a_time_get_the_receipt_time() {
    let body = br#"{"tracking_number":"T1","tracking_status":"Delivered"}"#;
    let mapped = webhook(&profile("starshipit"), body).unwrap();
    assert_eq!(mapped.events[0].occurred_at, crate::common::received_at());
    assert_eq!(
        mapped.events[0].time_provenance,
        waybill_core::TimeProvenance::ReceivedAt
    );
}

#[test]
fn repeated_scans_in_one_payload_collapse() {
    let one = r#"{"carrier":"acme","tracking_number":"A1","status":"Delivered","occurred_at":"2026-11-27T10:00:00Z","location":"Depot"}"#;
    let same = r#"{"carrier":"ACME","tracking_number":"a1","status":"delivered","raw_status":"Delivered","occurred_at":"2026-11-27T10:00:00.500Z","location":" depot "}"#;
    let body = format!("[{one},{same}]");
    let mapped = webhook(&profile("waybill"), body.as_bytes()).unwrap();
    assert_eq!(mapped.events.len(), 1);
}
