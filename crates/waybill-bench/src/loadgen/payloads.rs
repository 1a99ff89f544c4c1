//! Bodies in each built-in format, one scan per request, so every accepted request accounts
//! for exactly one event id.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// One step of a generated shipment's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Label printed.
    InfoReceived,
    /// Picked up / moving.
    InTransit,
    /// On the van.
    OutForDelivery,
    /// Delivered.
    Delivered,
}

/// The life every generated shipment goes through, one scan per step, an hour apart.
pub const LIFE: [Step; 5] = [
    Step::InfoReceived,
    Step::InTransit,
    Step::InTransit,
    Step::OutForDelivery,
    Step::Delivered,
];

/// The steps in Waybill's own (and AfterShip's) words.
const CANONICAL: [&str; 4] = ["InfoReceived", "InTransit", "OutForDelivery", "Delivered"];

/// The profiles the generator can speak.
pub const SUPPORTED_PROFILES: [&str; 5] = [
    "starshipit",
    "clickpost",
    "aftership",
    "easypost",
    "waybill",
];

/// A scan to render: which shipment, which step, when and where.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Tracking number (unique per run).
    pub tracking_number: String,
    /// Index into [`LIFE`].
    pub step: usize,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

impl Scan {
    fn status(&self) -> Step {
        LIFE[self.step.min(LIFE.len() - 1)]
    }

    /// This scan's step in a format's words, given in [`Step`] order: label printed, in
    /// transit, out for delivery, delivered.
    fn named<T: Copy>(&self, [info, transit, out, delivered]: [T; 4]) -> T {
        match self.status() {
            Step::InfoReceived => info,
            Step::InTransit => transit,
            Step::OutForDelivery => out,
            Step::Delivered => delivered,
        }
    }

    fn location(&self) -> String {
        format!("Hub {}", self.step)
    }
}

/// Renders `scan` as a body of `profile`'s format, or `None` for a format this generator does
/// not speak.
pub fn render(profile: &str, scan: &Scan, sequence: u64) -> Option<Vec<u8>> {
    let body = match profile {
        "starshipit" => starshipit(scan),
        "clickpost" => clickpost(scan),
        "aftership" => aftership(scan, sequence),
        "easypost" => easypost(scan, sequence),
        "waybill" => direct(scan),
        _ => return None,
    };
    serde_json::to_vec(&body).ok()
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn starshipit(scan: &Scan) -> Value {
    let status = scan.named(["Printed", "InTransit", "OutForDelivery", "Delivered"]);
    json!({
        "order_number": format!("O-{}", scan.tracking_number),
        "carrier_name": "Australia Post",
        "carrier_service": "7B05",
        "shipment_date": rfc3339(scan.occurred_at - chrono::Duration::hours(6)),
        "tracking_number": scan.tracking_number,
        "tracking_status": status,
        "last_updated_date": rfc3339(scan.occurred_at),
    })
}

fn clickpost(scan: &Scan) -> Value {
    let (code, description) = scan.named([
        (1, "OrderPlaced"),
        (5, "InTransit"),
        (6, "OutForDelivery"),
        (8, "Delivered"),
    ]);
    let scan_body = json!({
        "clickpost_status_code": code,
        "clickpost_status_description": description,
        "status": description,
        "location": scan.location(),
        "timestamp": rfc3339(scan.occurred_at),
        "remark": description,
    });
    let mut body = scan_body.clone();
    body["waybill"] = json!(scan.tracking_number);
    body["cp_id"] = json!(14);
    body["additional"] = json!({ "latest_status": scan_body });
    body
}

fn aftership(scan: &Scan, sequence: u64) -> Value {
    let tag = scan.named(CANONICAL);
    json!({
        "event": "tracking_update",
        "event_id": format!("00000000-0000-4000-8000-{sequence:012x}"),
        "is_tracking_first_tag": false,
        "msg": {
            "id": format!("lg{}", scan.tracking_number.to_lowercase()),
            "tracking_number": scan.tracking_number,
            "slug": "usps",
            "tag": tag,
            "subtag": format!("{tag}_001"),
            "order_number": format!("O-{}", scan.tracking_number),
            "checkpoints": [{
                "checkpoint_time": scan.occurred_at.format("%Y-%m-%dT%H:%M:%S").to_string(),
                "message": format!("{tag} at {}", scan.location()),
                "location": scan.location(),
                "slug": "usps",
                "tag": tag,
                "subtag": format!("{tag}_001"),
            }],
        },
        "ts": scan.occurred_at.timestamp(),
    })
}

fn easypost(scan: &Scan, sequence: u64) -> Value {
    let (status, code) = scan.named([
        ("pre_transit", "OC"),
        ("in_transit", "IT"),
        ("out_for_delivery", "OD"),
        ("delivered", "DL"),
    ]);
    json!({
        "id": format!("evt_lg{sequence:x}"),
        "object": "Event",
        "description": "tracker.updated",
        "mode": "production",
        "result": {
            "id": format!("trk_{}", scan.tracking_number.to_lowercase()),
            "object": "Tracker",
            "tracking_code": scan.tracking_number,
            "carrier": "FedEx",
            "status": status,
            "tracking_details": [{
                "object": "TrackingDetail",
                "message": status,
                "status": status,
                "datetime": rfc3339(scan.occurred_at),
                "carrier_code": code,
                "tracking_location": {"object": "TrackingLocation", "city": scan.location(), "state": "FL", "country": "US", "zip": null}
            }]
        }
    })
}

fn direct(scan: &Scan) -> Value {
    let status = scan.named(CANONICAL);
    json!({
        "carrier": "loadgen",
        "tracking_number": scan.tracking_number,
        "status": status,
        "raw_status": status,
        "occurred_at": rfc3339(scan.occurred_at),
        "location": scan.location(),
    })
}
