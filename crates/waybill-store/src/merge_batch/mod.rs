//! The batch merge: one consumed batch of events and registrations applied to Postgres in the
//! caller's transaction, with the same pure [`waybill_core::merge::apply`] that defines the
//! semantics deciding every shipment's current event.
//!
//! Round trips, each one statement over `unnest`ed arrays, in this order:
//!
//! 1. advisory-lock every shipment key of the batch (sorted lock ids);
//! 2. *if any:* apply the registrations (key order);
//! 3. lock the batch's existing shipments `for no key update` (key order) and load their merge
//!    state;
//! 3b. *if any are missing:* insert the shipments the batch's events create (key order);
//! 4. *if any:* park events of shipments that do not exist (source requires registration);
//! 5. *if any shipment was created or registered:* pull its parked events back in;
//! 6. insert the events (`on conflict do nothing returning`) to learn which are new;
//! 7. *only if some new event is not newer than everything stored:* load those shipments'
//!    history keys; otherwise the fold continues from the stored current event;
//! 8. *if any current event changed:* load the new current events and the newest history;
//! 9. update the shipment rows;
//! 10. *if any current event changed:* write one outbox row per changed shipment.
//!
//! **Deadlocks.** Every lock a batch takes is on a shipment key it already holds the advisory
//! lock for, and advisory locks are taken in one statement in sorted order, so two batches can
//! never wait on each other in a cycle, whatever order their inputs came in.

mod plan;
mod sql;

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use waybill_core::merge::{self, ShipmentState};
use waybill_core::{EventKey, Status};

use self::plan::{Plan, PlannedEvent};
use self::sql::{LockedShipment, ShipmentUpdate};
use crate::batch::{BatchReport, ChangedShipment, InboundBatch};
use crate::error::StoreError;
use crate::outbox::{self, HistoryEntryV1, NewOutboxRow, ShipmentRefV1, StatusChangedV1};

/// Applies a batch inside the caller's transaction: creates and registers shipments, parks or
/// un-parks events, stores new events, recomputes each touched shipment's current event with
/// [`waybill_core::merge::apply`], updates the shipments and writes their outbox rows.
///
/// Idempotent: applying the same batch again reports every event as a duplicate and changes
/// nothing. Commutative: any split of the same events into batches, applied in any order,
/// leaves the same histories and current events (property-tested against the pure merge).
///
/// The caller owns the transaction (`apply_batch(&mut tx, &batch)` then `tx.commit()`). **Do not
/// let its future be dropped half-way** — with sqlx 0.8 that can return a connection to the pool
/// still inside the transaction. Spawn the work (see [`Store::apply_batch`](crate::Store::apply_batch),
/// which does). Any error leaves the transaction to be rolled back by the caller.
#[tracing::instrument(
    skip_all,
    fields(batch.items = batch.items.len(), batch.registrations = batch.registrations.len())
)]
pub async fn apply_batch(
    conn: &mut PgConnection,
    batch: &InboundBatch,
) -> Result<BatchReport, StoreError> {
    let plan = Plan::new(batch);
    let mut report = BatchReport { duplicates: plan.duplicates_in_batch, ..BatchReport::default() };
    if plan.shipments.is_empty() {
        return Ok(report);
    }

    sql::lock_keys(conn, &plan.lock_ids()).await?;
    let mut created_or_registered = sql::register_shipments(conn, &plan).await?;
    let all: Vec<usize> = (0..plan.shipments.len()).collect();
    let mut locked = sql::lock_shipments(conn, &plan, &all).await?;
    // Shipments the events create that did not exist: insert them now. Locking first keeps the
    // common case — events for known shipments — to one statement here instead of two.
    let mut exists = vec![false; plan.shipments.len()];
    for row in &locked {
        exists[row.plan_index] = true;
    }
    let missing: Vec<usize> =
        all.iter().copied().filter(|&i| plan.shipments[i].creates && !exists[i]).collect();
    if !missing.is_empty() {
        let created = sql::create_shipments(conn, &plan, &missing).await?;
        if created.len() < missing.len() {
            // Inserted meanwhile by a writer outside the advisory-lock protocol: lock those.
            let created_indexes: HashSet<usize> = created.iter().map(|(i, _)| *i).collect();
            let others: Vec<usize> =
                missing.iter().copied().filter(|i| !created_indexes.contains(i)).collect();
            locked.extend(sql::lock_shipments(conn, &plan, &others).await?);
        }
        for (plan_index, id) in created {
            created_or_registered.insert(id, true);
            locked.push(LockedShipment::created(plan_index, id));
        }
        locked.sort_by_key(|row| row.plan_index);
    }
    report.shipments_created =
        created_or_registered.values().filter(|inserted| **inserted).count() as u64;
    report.shipments_touched = locked.len() as u64;

    let mut locked_of_plan: Vec<Option<usize>> = vec![None; plan.shipments.len()];
    for (index, shipment) in locked.iter().enumerate() {
        locked_of_plan[shipment.plan_index] = Some(index);
    }

    // Shipments that still do not exist only have events from sources that require
    // registration (anything else created them in step 2): park those events.
    let parked: Vec<(&str, &PlannedEvent)> = plan
        .shipments
        .iter()
        .zip(&locked_of_plan)
        .filter(|(_, locked)| locked.is_none())
        .flat_map(|(shipment, _)| shipment.events.iter().map(|e| (shipment.key.tenant.as_str(), e)))
        .collect();
    report.unmatched = parked.len() as u64;
    if !parked.is_empty() {
        sql::park_events(conn, &parked).await?;
    }

    // Parked events join a shipment in the transaction that creates or registers it. The
    // advisory locks guarantee no batch parks an event for it concurrently.
    let pull_from: Vec<usize> = locked
        .iter()
        .filter(|row| {
            created_or_registered.contains_key(&row.id)
                || plan.shipments[row.plan_index].registration.is_some()
        })
        .map(|row| row.plan_index)
        .collect();
    let pulled = if pull_from.is_empty() {
        Vec::new()
    } else {
        sql::pull_parked(conn, &plan, &pull_from).await?
    };
    report.pulled_from_unmatched = pulled.len() as u64;

    // Each locked shipment's events: the batch's, then pulled ones not already in the batch.
    let mut events_of: Vec<Vec<&PlannedEvent>> =
        locked.iter().map(|row| plan.shipments[row.plan_index].events.iter().collect()).collect();
    for pulled_event in &pulled {
        let Some(index) = locked_of_plan[pulled_event.plan_index] else { continue };
        let events = &mut events_of[index];
        if !events.iter().any(|e| e.event.id == pulled_event.event.event.id) {
            events.push(&pulled_event.event);
        }
    }

    let to_insert: Vec<(i64, &str, &PlannedEvent)> = locked
        .iter()
        .zip(&events_of)
        .flat_map(|(row, events)| {
            let tenant = plan.shipments[row.plan_index].key.tenant.as_str();
            events.iter().map(move |event| (row.id, tenant, *event))
        })
        .collect();
    let inserted = if to_insert.is_empty() {
        HashSet::new()
    } else {
        sql::insert_events(conn, &to_insert).await?
    };

    // `last_webhook_at` is refreshed at most once a minute: a replayed or busy webhook must not
    // turn every batch into a write of every shipment it mentions.
    let webhook_touch: Vec<bool> = locked
        .iter()
        .map(|row| row.webhook_stale && plan.shipments[row.plan_index].webhook_seen)
        .collect();
    let merges =
        merge_shipments(conn, &locked, &events_of, &webhook_touch, &inserted, &mut report).await?;
    let changed: Vec<&ShipmentMerge> = merges.iter().filter(|m| m.current_changed()).collect();
    let details = if changed.is_empty() {
        Vec::new()
    } else {
        let ids: Vec<i64> = changed.iter().map(|m| locked[m.locked_index].id).collect();
        let current: Vec<&str> = changed.iter().map(|m| m.current_id()).collect();
        sql::load_details(conn, &ids, &current).await?
    };
    let details = Details::group(details);

    let mut updates = Vec::new();
    for merge in &merges {
        let row = &locked[merge.locked_index];
        let current = if merge.current_changed() {
            Some(details.current(row.id, merge.current_id())?)
        } else {
            None
        };
        updates.push(ShipmentUpdate {
            id: row.id,
            current,
            version: merge.version,
            last_event_at: merge.last_event_at,
            order_number: merge.order_number.as_deref(),
            webhook_seen: merge.webhook_seen,
        });
    }
    if !updates.is_empty() {
        sql::update_shipments(conn, &updates).await?;
    }

    let mut outbox_rows = Vec::with_capacity(changed.len());
    for merge in &changed {
        let row = &locked[merge.locked_index];
        let key = &plan.shipments[row.plan_index].key;
        let current = details.current(row.id, merge.current_id())?;
        outbox_rows.push(NewOutboxRow {
            shipment_id: row.id,
            body: StatusChangedV1 {
                version: StatusChangedV1::VERSION,
                event_id: current.event_id.clone(),
                shipment: ShipmentRefV1 {
                    tenant: key.tenant.clone(),
                    carrier: key.carrier.clone(),
                    tracking_number: key.tracking_number.clone(),
                    order_number: row.order_number.clone().or_else(|| merge.order_number.clone()),
                },
                previous_status: merge.previous.as_ref().map(|p| p.status),
                new_status: current.status,
                raw_status: current.raw_status.clone(),
                sub_status: current.sub_status.clone(),
                occurred_at: current.occurred_at,
                location: current.location.clone(),
                message: current.message.clone(),
                shipment_version: merge.version,
                recent_history: details.recent(row.id),
            },
        });
    }
    if !outbox_rows.is_empty() {
        let written = outbox::insert(conn, &outbox_rows).await?;
        let outbox_id_of: HashMap<i64, i64> =
            written.into_iter().map(|(id, shipment_id)| (shipment_id, id)).collect();
        for (merge, row) in changed.iter().zip(&outbox_rows) {
            let shipment = &locked[merge.locked_index];
            report.changed_shipments.push(ChangedShipment {
                shipment_id: shipment.id,
                key: plan.shipments[shipment.plan_index].key.clone(),
                previous_status: row.body.previous_status,
                new_status: row.body.new_status,
                event_id: row.body.event_id.clone(),
                version: merge.version,
                outbox_id: outbox_id_of.get(&shipment.id).copied().unwrap_or_default(),
            });
        }
    }

    tracing::debug!(
        merge.new_current = report.new_current,
        merge.history_only = report.history_only,
        merge.outdated = report.outdated,
        merge.duplicates = report.duplicates,
        merge.unmatched = report.unmatched,
        merge.changed_shipments = report.changed_shipments.len(),
        "batch merged"
    );
    Ok(report)
}

/// The outcome of merging one shipment's new events.
struct ShipmentMerge {
    locked_index: usize,
    previous: Option<EventKey>,
    current: Option<EventKey>,
    version: i64,
    /// The newest `occurred_at` among the new events.
    last_event_at: Option<DateTime<Utc>>,
    /// An order number carried by the new events, offered to a shipment that has none.
    order_number: Option<String>,
    /// Whether to refresh `last_webhook_at`.
    webhook_seen: bool,
}

impl ShipmentMerge {
    fn current_changed(&self) -> bool {
        self.previous != self.current
    }

    fn current_id(&self) -> &str {
        self.current.as_ref().map_or("", |c| c.id.as_str())
    }
}

/// Runs the pure merge for every locked shipment, loading history only where the incremental
/// fold is not exact. Returns one entry per shipment that needs its row updated (new events, or
/// a webhook event to record), and counts every event's [`waybill_core::ChangeKind`].
async fn merge_shipments(
    conn: &mut PgConnection,
    locked: &[LockedShipment],
    events_of: &[Vec<&PlannedEvent>],
    webhook_touch: &[bool],
    inserted: &HashSet<(i64, String)>,
    report: &mut BatchReport,
) -> Result<Vec<ShipmentMerge>, StoreError> {
    // The new events of each locked shipment.
    let new_events_of: Vec<Vec<&PlannedEvent>> = locked
        .iter()
        .zip(events_of)
        .map(|(row, events)| {
            events
                .iter()
                .copied()
                .filter(|e| inserted.contains(&(row.id, e.event.id.as_str().to_owned())))
                .collect()
        })
        .collect();

    // The fold is a left fold over the history in key order, whose only state is the current
    // event. When every new event is strictly newer than every stored one, the sorted history
    // is the stored one followed by the new events, so folding the new events from the stored
    // current event gives exactly the full fold. Otherwise the whole history is needed.
    let mut needs_history = Vec::new();
    for (row, new_events) in locked.iter().zip(&new_events_of) {
        let newer_than_all = row.last_event_at.is_none_or(|last| {
            new_events.iter().all(|e| e.event.occurred_at > last)
        });
        if !new_events.is_empty() && !newer_than_all {
            needs_history.push(row.id);
        }
    }
    let mut history_of: HashMap<i64, BTreeSet<EventKey>> = HashMap::new();
    if !needs_history.is_empty() {
        for (shipment_id, key) in sql::load_history_keys(conn, &needs_history).await? {
            history_of.entry(shipment_id).or_default().insert(key);
        }
    }

    let mut merges = Vec::new();
    for (locked_index, (row, new_events)) in locked.iter().zip(&new_events_of).enumerate() {
        report.duplicates += (events_of[locked_index].len() - new_events.len()) as u64;
        let webhook_seen = webhook_touch[locked_index];
        if new_events.is_empty() {
            if webhook_seen {
                merges.push(ShipmentMerge {
                    locked_index,
                    previous: row.current.clone(),
                    current: row.current.clone(),
                    version: row.version,
                    last_event_at: None,
                    order_number: None,
                    webhook_seen,
                });
            }
            continue;
        }
        let new_keys: Vec<EventKey> = new_events.iter().map(|e| e.event.key()).collect();
        let history = match history_of.remove(&row.id) {
            // Loaded after the insert: take the new events out again to get the state before.
            Some(mut stored) => {
                for key in &new_keys {
                    stored.remove(key);
                }
                stored
            }
            None => row.current.iter().cloned().collect(),
        };
        let state = ShipmentState { history, current: row.current.clone(), version: row.version };
        let outcome = merge::apply(&state, &new_keys);
        for (_, kind) in &outcome.changes {
            report.record(*kind);
        }
        let order_number = if row.order_number.is_none() {
            new_events
                .iter()
                .filter(|e| e.event.order_number.is_some())
                .max_by(|a, b| a.event.key().cmp(&b.event.key()))
                .and_then(|e| e.event.order_number.clone())
        } else {
            None
        };
        merges.push(ShipmentMerge {
            locked_index,
            previous: outcome.previous,
            current: outcome.state.current,
            version: outcome.state.version,
            last_event_at: new_events.iter().map(|e| e.event.occurred_at).max(),
            order_number,
            webhook_seen,
        });
    }
    Ok(merges)
}

/// Loaded event details, grouped by shipment.
struct Details {
    by_shipment: HashMap<i64, Vec<sql::EventDetails>>,
}

impl Details {
    fn group(rows: Vec<sql::EventDetails>) -> Details {
        let mut by_shipment: HashMap<i64, Vec<sql::EventDetails>> = HashMap::new();
        for row in rows {
            by_shipment.entry(row.shipment_id).or_default().push(row);
        }
        Details { by_shipment }
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
            .map(|rows| rows.iter().filter(|r| r.is_recent).map(|r| r.entry.clone()).collect())
            .unwrap_or_default();
        recent.sort_by_cached_key(|entry| {
            std::cmp::Reverse(EventKey {
                occurred_at: entry.occurred_at,
                status: entry.status,
                id: entry.event_id.clone(),
            })
        });
        recent
    }
}

/// The SQL `CASE` giving [`Status::rank`] of a `status` column, generated from the domain so the
/// database orders ties exactly as the merge does.
pub(crate) fn status_rank_sql(column: &str) -> String {
    let mut sql = format!("case {column}");
    for status in Status::ALL {
        sql.push_str(&format!(" when '{}' then {}", status.as_str(), status.rank()));
    }
    sql.push_str(" end");
    sql
}
