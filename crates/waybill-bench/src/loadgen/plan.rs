//! What to send next: fresh scans of generated shipments (some out of order), exact duplicates
//! of earlier requests, and invalid requests, in the configured shares.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::HeaderMap;
use waybill_carriers::{CarrierProfile, UnverifiedRequest};
use waybill_core::EventId;

use super::payloads::{LIFE, Scan, render};

/// A source the generator posts to (no `Debug`: it holds a secret).
#[derive(Clone)]
pub struct Target {
    /// The source id (`/v1/webhooks/{id}`).
    pub source: String,
    /// Its profile.
    pub profile: Arc<CarrierProfile>,
    /// A secret the source accepts.
    pub secret: String,
}

/// The shares of the traffic mix, each in `0.0..=1.0`.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// Exact re-sends of an earlier accepted body.
    pub duplicates: f64,
    /// Shipments whose scans are sent partly out of order.
    pub out_of_order: f64,
    /// Requests with a bad signature or a malformed body.
    pub invalid: f64,
}

/// Why a request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// A scan not sent before.
    Fresh,
    /// The same bytes as an earlier request.
    Duplicate,
    /// Signed with the wrong secret: must be refused with 401.
    BadSignature,
    /// A truncated body: must be refused with 400.
    Malformed,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Index into the targets.
    pub target: usize,
    /// The body (shared: duplicates re-send the same bytes).
    pub body: Arc<Vec<u8>>,
    /// Why it is sent.
    pub intent: Intent,
    /// The shipment it is about.
    pub tracking_number: String,
}

/// A generator of requests for one sender task. Tasks use disjoint shipment numbers.
pub struct Plan {
    targets: Arc<Vec<Target>>,
    mix: Mix,
    run_id: String,
    task: usize,
    tasks: usize,
    next_shipment: usize,
    active: VecDeque<ShipmentCursor>,
    active_limit: usize,
    sent: Vec<Planned>,
    sequence: u64,
    base: DateTime<Utc>,
    rng: StdRng,
}

struct ShipmentCursor {
    number: usize,
    steps: VecDeque<usize>,
}

const REMEMBERED: usize = 4096;

impl Plan {
    /// A plan for sender `task` of `tasks`, interleaving `shipments_in_flight` shipments.
    pub fn new(
        targets: Arc<Vec<Target>>,
        mix: Mix,
        run_id: &str,
        task: usize,
        tasks: usize,
        shipments_in_flight: usize,
    ) -> Plan {
        Plan {
            targets,
            mix,
            run_id: run_id.to_owned(),
            task,
            tasks: tasks.max(1),
            next_shipment: 0,
            active: VecDeque::new(),
            active_limit: shipments_in_flight.max(1),
            sent: Vec::new(),
            sequence: 0,
            base: Utc::now() - Duration::days(3),
            rng: StdRng::from_os_rng(),
        }
    }

    /// The next request.
    pub fn next(&mut self) -> Planned {
        let roll: f64 = self.rng.random();
        if roll < self.mix.invalid {
            let mut fresh = self.fresh();
            if self.rng.random_bool(0.5) {
                fresh.intent = Intent::BadSignature;
            } else {
                fresh.intent = Intent::Malformed;
                let cut = fresh.body.len() / 2;
                fresh.body = Arc::new(fresh.body[..cut].to_vec());
            }
            return fresh;
        }
        if roll < self.mix.invalid + self.mix.duplicates && !self.sent.is_empty() {
            let pick = self.rng.random_range(0..self.sent.len());
            let mut again = self.sent[pick].clone();
            again.intent = Intent::Duplicate;
            return again;
        }
        let fresh = self.fresh();
        if self.sent.len() < REMEMBERED {
            self.sent.push(fresh.clone());
        } else {
            let slot = self.rng.random_range(0..REMEMBERED);
            self.sent[slot] = fresh.clone();
        }
        fresh
    }

    fn fresh(&mut self) -> Planned {
        while self.active.len() < self.active_limit {
            let number = self.next_shipment * self.tasks + self.task;
            self.next_shipment += 1;
            let mut steps: Vec<usize> = (0..LIFE.len()).collect();
            if self.rng.random_bool(self.mix.out_of_order.clamp(0.0, 1.0)) {
                // An older scan arrives after a newer one: swap a random adjacent pair.
                let at = self.rng.random_range(0..LIFE.len() - 1);
                steps.swap(at, at + 1);
            }
            self.active.push_back(ShipmentCursor {
                number,
                steps: steps.into(),
            });
        }
        let index = self.rng.random_range(0..self.active.len());
        let cursor = &mut self.active[index];
        let step = cursor.steps.pop_front().unwrap_or(0);
        let number = cursor.number;
        if cursor.steps.is_empty() {
            self.active.remove(index);
        }
        let target = number % self.targets.len();
        let tracking_number = format!("LG{}{number:07}", self.run_id);
        let scan = Scan {
            tracking_number: tracking_number.clone(),
            step,
            occurred_at: self.base
                + Duration::hours(step as i64)
                + Duration::seconds((number % 3600) as i64),
        };
        self.sequence += 1;
        let profile = &self.targets[target].profile;
        let body = render(
            &profile.name,
            &scan,
            self.sequence * self.tasks as u64 + self.task as u64,
        )
        .unwrap_or_default();
        Planned {
            target,
            body: Arc::new(body),
            intent: Intent::Fresh,
            tracking_number,
        }
    }
}

/// The event ids Waybill derives from `body`: the source's own profile maps it, exactly as the
/// ingress does. Called after the sending phase, so the mapping costs no sending time.
pub fn event_ids_of(target: &Target, body: &[u8]) -> Vec<EventId> {
    let now = Utc::now();
    let headers = signed_headers(&target.profile, body, &target.secret, now).unwrap_or_default();
    let request = UnverifiedRequest {
        headers: &headers,
        body,
    };
    target
        .profile
        .verify(request, std::slice::from_ref(&target.secret), now)
        .ok()
        .and_then(|verified| target.profile.map_webhook(&verified, now).ok())
        .map(|mapped| mapped.events.into_iter().map(|event| event.id).collect())
        .unwrap_or_default()
}

/// The signature header a sender holding `secret` attaches to `body` at `now` (none for a
/// profile that does not verify), as a header map; an error if it is not a valid header.
pub(crate) fn signed_headers(
    profile: &CarrierProfile,
    body: &[u8],
    secret: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    if let Some((name, value)) = profile.sign(body, secret, now) {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes())?,
            reqwest::header::HeaderValue::from_str(&value)?,
        );
    }
    Ok(headers)
}
