//! Writing a batch's results: the shipment rows, and one outbox row per shipment whose current
//! event changed, in one statement.
//!
//! An outbox row carries the new current event's details and the shipment's newest events. Both
//! are assembled in memory: the new current event is almost always one of the events this batch
//! stored (their details are in the batch), else one of the newest stored events the lock
//! statement loaded; and the newest events after the batch are the newest of (the newest stored
//! before it) ∪ (the ones it stored). Only a shipment for which that is not known — its stored
//! events were not loaded with the lock, or its new current event is an older stored one — has
//! its details read back from `tracking_events` (one statement for all such shipments).

use std::cmp::Reverse;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use waybill_api::events::{HistoryEntryV1, RECENT_HISTORY_LEN, ShipmentRefV1, StatusChangedV1};
use waybill_core::TrackingEvent;

use super::fold::ShipmentMerge;
use super::plan::Plan;
use super::sql::{self, LockedShipment, ShipmentUpdate};
use crate::batch::{BatchReport, ChangedShipment};
use crate::error::StoreError;
use crate::outbox::NewOutboxRow;

/// Updates the merged shipments and writes the outbox rows of those whose current event
/// changed, recording them in the report.
pub(super) async fn write_results(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
    locked: &[LockedShipment],
    merges: &[ShipmentMerge<'_>],
    report: &mut BatchReport,
) -> Result<(), StoreError> {
    if merges.is_empty() {
        return Ok(());
    }
    let changed: Vec<&ShipmentMerge<'_>> = merges.iter().filter(|m| m.current_changed()).collect();
    let details = change_details(conn, locked, &changed).await?;
    let outbox_rows: Vec<NewOutboxRow<'_>> = changed
        .iter()
        .zip(details)
        .map(|(merge, details)| outbox_row(plan, &locked[merge.locked_index], merge, details))
        .collect::<Result<_, _>>()?;
    let updates = shipment_updates(locked, merges, &changed, &outbox_rows);
    let written = sql::update_shipments(conn, &updates, &outbox_rows).await?;
    if outbox_rows.is_empty() {
        return Ok(());
    }
    record_changes(plan, locked, &changed, outbox_rows, written, report)
}

/// A changed shipment's new current event and newest events.
type ChangeDetails = (HistoryEntryV1, Vec<HistoryEntryV1>);

/// The details of each changed shipment, from memory where they are all there, else read back
/// (one statement for all the others).
async fn change_details(
    conn: &mut PgConnection,
    locked: &[LockedShipment],
    changed: &[&ShipmentMerge<'_>],
) -> Result<Vec<ChangeDetails>, StoreError> {
    let mut details: Vec<Option<ChangeDetails>> = changed
        .iter()
        .map(|merge| in_memory(&locked[merge.locked_index], merge))
        .collect();
    let unknown: Vec<usize> = (0..changed.len())
        .filter(|&i| details[i].is_none())
        .collect();
    if !unknown.is_empty() {
        let ids: Vec<i64> = unknown
            .iter()
            .map(|&i| locked[changed[i].locked_index].id)
            .collect();
        let current: Vec<&str> = unknown.iter().map(|&i| changed[i].current_id()).collect();
        let loaded = Loaded::group(sql::load_details(conn, &ids, &current).await?);
        for &i in &unknown {
            let id = locked[changed[i].locked_index].id;
            let current = loaded.current(id, changed[i].current_id())?.clone();
            details[i] = Some((current, loaded.recent(id)));
        }
    }
    Ok(details.into_iter().flatten().collect())
}

/// The outbox row announcing a changed shipment's new current event.
fn outbox_row<'p>(
    plan: &Plan<'p>,
    row: &LockedShipment,
    merge: &ShipmentMerge<'_>,
    (current, recent): ChangeDetails,
) -> Result<NewOutboxRow<'p>, StoreError> {
    let planned = &plan.shipments[row.plan_index];
    let key = &planned.key;
    // The change continues the trace of the message that brought its new current event.
    let traceparent = planned
        .events
        .iter()
        .find(|e| e.event.id.as_str() == merge.current_id())
        .and_then(|e| e.traceparent);
    let body = StatusChangedV1 {
        version: StatusChangedV1::VERSION,
        event_id: current.event_id,
        shipment: ShipmentRefV1 {
            tenant: key.tenant.clone(),
            carrier: key.carrier.clone(),
            tracking_number: key.tracking_number.clone(),
            order_number: row
                .order_number
                .clone()
                .or_else(|| merge.order_number.clone()),
        },
        previous_status: merge.previous.as_ref().map(|p| p.status),
        new_status: current.status,
        scan: current.scan,
        shipment_version: merge.version,
        recent_history: recent,
    };
    let encoded = crate::outbox::encode(&body)
        .map_err(|error| StoreError::corrupt("outbox payload", error))?;
    Ok(NewOutboxRow {
        shipment_id: row.id,
        traceparent,
        body,
        encoded,
    })
}

/// The row update of every merged shipment; a changed one's new current event is the one its
/// outbox row announces.
fn shipment_updates<'r>(
    locked: &[LockedShipment],
    merges: &'r [ShipmentMerge<'_>],
    changed: &[&ShipmentMerge<'_>],
    outbox_rows: &'r [NewOutboxRow<'_>],
) -> Vec<ShipmentUpdate<'r>> {
    let mut announced: HashMap<usize, &StatusChangedV1> = HashMap::new();
    for (merge, row) in changed.iter().zip(outbox_rows) {
        announced.insert(merge.locked_index, &row.body);
    }
    merges
        .iter()
        .map(|merge| ShipmentUpdate {
            id: locked[merge.locked_index].id,
            current: announced.get(&merge.locked_index).copied(),
            version: merge.version,
            last_event_at: merge.last_event_at,
            order_number: merge.order_number.as_deref(),
            webhook_seen: merge.webhook_seen,
        })
        .collect()
}

/// Records each change in the report, with the id of its outbox row (`written`: the
/// statement's `(outbox id, shipment id)` pairs).
fn record_changes(
    plan: &Plan<'_>,
    locked: &[LockedShipment],
    changed: &[&ShipmentMerge<'_>],
    outbox_rows: Vec<NewOutboxRow<'_>>,
    written: Vec<(i64, i64)>,
    report: &mut BatchReport,
) -> Result<(), StoreError> {
    let outbox_id_of: HashMap<i64, i64> = written
        .into_iter()
        .map(|(id, shipment_id)| (shipment_id, id))
        .collect();
    for (merge, row) in changed.iter().zip(outbox_rows) {
        let shipment = &locked[merge.locked_index];
        let outbox_id = outbox_id_of
            .get(&shipment.id)
            .copied()
            .ok_or_else(|| StoreError::corrupt("outbox insert", "a row was not returned"))?;
        report.changed_shipments.push(ChangedShipment {
            shipment_id: shipment.id,
            key: plan.shipments[shipment.plan_index].key.clone(),
            previous_status: row.body.previous_status,
            new_status: row.body.new_status,
            event_id: row.body.event_id.clone(),
            version: merge.version,
            outbox_id,
        });
        let encoded: Box<str> = row.encoded.into();
        report
            .encoded_bodies
            .push((outbox_id, encoded.into_boxed_bytes().into_vec()));
    }
    Ok(())
}

/// A changed shipment's new current event and newest events, from the batch and the stored
/// events loaded with the lock; `None` when they are not all there.
fn in_memory(
    row: &LockedShipment,
    merge: &ShipmentMerge<'_>,
) -> Option<(HistoryEntryV1, Vec<HistoryEntryV1>)> {
    let stored = row.stored.as_ref()?;
    let current_id = &merge.current.as_ref()?.id;
    let current = match merge.new_events.iter().find(|e| e.event.id == *current_id) {
        Some(event) => HistoryEntryV1::of(&event.event),
        None => stored
            .recent
            .iter()
            .find(|entry| entry.event_id == *current_id)?
            .clone(),
    };
    // The newest of (newest stored) ∪ (new): what `tracking_events` now holds, newest first.
    // Sorted by borrowed merge keys; only the entries kept are built.
    enum Entry<'e> {
        Stored(&'e HistoryEntryV1),
        New(&'e TrackingEvent),
    }
    type MergeOrder<'k> = (DateTime<Utc>, u8, &'k str);
    let mut candidates: Vec<(MergeOrder<'_>, Entry<'_>)> =
        Vec::with_capacity(stored.recent.len() + merge.new_events.len());
    for entry in &stored.recent {
        let key = (
            entry.scan.occurred_at,
            entry.status.rank(),
            entry.event_id.as_str(),
        );
        candidates.push((key, Entry::Stored(entry)));
    }
    for planned in &merge.new_events {
        let event: &TrackingEvent = &planned.event;
        let key = (event.occurred_at, event.status.rank(), event.id.as_str());
        candidates.push((key, Entry::New(event)));
    }
    candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    let recent = candidates
        .into_iter()
        .take(RECENT_HISTORY_LEN)
        .map(|(_, entry)| match entry {
            Entry::Stored(entry) => entry.clone(),
            Entry::New(event) => HistoryEntryV1::of(event),
        })
        .collect();
    Some((current, recent))
}

/// Details read back from `tracking_events`, grouped by shipment.
#[derive(Default)]
struct Loaded {
    by_shipment: HashMap<i64, Vec<sql::EventDetails>>,
}

impl Loaded {
    fn group(rows: Vec<sql::EventDetails>) -> Loaded {
        let mut by_shipment: HashMap<i64, Vec<sql::EventDetails>> = HashMap::new();
        for row in rows {
            by_shipment.entry(row.shipment_id).or_default().push(row);
        }
        Loaded { by_shipment }
    }

    fn current(&self, shipment_id: i64, event_id: &str) -> Result<&HistoryEntryV1, StoreError> {
        self.by_shipment
            .get(&shipment_id)
            .and_then(|rows| rows.iter().find(|r| r.entry.event_id.as_str() == event_id))
            .map(|r| &r.entry)
            .ok_or_else(|| StoreError::corrupt("current event", "not found in tracking_events"))
    }

    /// The newest entries, newest first in merge order.
    fn recent(&self, shipment_id: i64) -> Vec<HistoryEntryV1> {
        let mut recent: Vec<HistoryEntryV1> = self
            .by_shipment
            .get(&shipment_id)
            .map(|rows| {
                rows.iter()
                    .filter(|r| r.is_recent)
                    .map(|r| r.entry.clone())
                    .collect()
            })
            .unwrap_or_default();
        recent.sort_by_cached_key(|entry| Reverse(entry.key()));
        recent
    }
}
