//! The batch merge: one consumed batch of events and registrations applied to Postgres in the
//! caller's transaction, with the same pure [`waybill_core::merge::apply`] that defines the
//! semantics deciding every shipment's current event.
//!
//! Round trips, each one statement over `unnest`ed arrays, in this order:
//!
//! 1. advisory-lock every shipment key of the batch (sorted lock ids);
//! 2. *if any:* apply the registrations (key order);
//! 3. one statement ([`sql::lock_load_create`]): lock the batch's existing shipments `for no
//!    key update` (key order) and load their merge state and their newest stored events (and,
//!    only for a shipment some batch event is not newer than, the keys of its whole stored
//!    history); insert the missing shipments the batch's events create (key order, after the
//!    locks); take the events parked for those out of `unmatched_events`;
//! 4. *if any:* park events of shipments that do not exist (source requires registration);
//! 5. *if any shipment was registered:* pull its parked events back in;
//! 6. insert the events (`on conflict do nothing returning`) to learn which are new;
//! 7. *only if some new event is not newer than everything stored and step 3 could not foresee
//!    it:* load those shipments' history keys; otherwise the fold continues from the stored
//!    current event or the history step 3 loaded;
//! 8. *only if some new current event is neither in the batch nor among the newest stored
//!    events:* load those shipments' current and newest events back;
//! 9. one statement: update the shipment rows (new current event, version, `last_event_at`,
//!    order number, `last_webhook_at`) and write one outbox row per shipment whose current event
//!    changed, its details and newest history assembled in memory (see [`results`]).
//!
//! So a batch of events for known and new shipments costs 4 round trips plus the caller's
//! `begin`/`commit`, whatever its size; registrations, parking and out-of-order corner cases add
//! one each.
//!
//! **Deadlocks.** Every lock a batch takes is on a shipment key it already holds the advisory
//! lock for, and advisory locks are taken in one statement in sorted order, so two batches can
//! never wait on each other in a cycle, whatever order their inputs came in.

mod fold;
mod plan;
mod results;
mod sql;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use self::plan::{Plan, PlannedEvent};
use self::sql::{LockedShipment, PulledEvent};
use crate::batch::{BatchReport, InboundBatch};
use crate::error::StoreError;

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
    let mut report = BatchReport {
        duplicates: plan.duplicates_in_batch,
        ..BatchReport::default()
    };
    if plan.shipments.is_empty() {
        return Ok(report);
    }

    sql::lock_keys(conn, &plan.lock_ids()).await?;
    let LockOutcome {
        locked,
        registered,
        mut pulled,
    } = lock_or_create(conn, &plan, &mut report).await?;
    let mut locked_of_plan: Vec<Option<usize>> = vec![None; plan.shipments.len()];
    for (index, shipment) in locked.iter().enumerate() {
        locked_of_plan[shipment.plan_index] = Some(index);
    }
    park_unmatched(conn, &plan, &locked_of_plan, &mut report).await?;

    // Parked events join a shipment in the transaction that creates or registers it. The
    // advisory locks guarantee no batch parks an event for it concurrently. Those of the
    // shipments created above came with the lock statement; registered ones are pulled here.
    let pull_from: Vec<usize> = locked
        .iter()
        .filter(|row| {
            registered.contains(&row.id) || plan.shipments[row.plan_index].registration.is_some()
        })
        .map(|row| row.plan_index)
        .collect();
    if !pull_from.is_empty() {
        pulled.extend(sql::pull_parked(conn, &plan, &pull_from).await?);
    }
    report.pulled_from_unmatched = pulled.len() as u64;

    // Each locked shipment's events: the batch's, then pulled ones not already in the batch.
    let mut events_of: Vec<Vec<&PlannedEvent<'_>>> = locked
        .iter()
        .map(|row| plan.shipments[row.plan_index].events.iter().collect())
        .collect();
    for pulled_event in &pulled {
        let Some(index) = locked_of_plan[pulled_event.plan_index] else {
            continue;
        };
        let events = &mut events_of[index];
        if !events
            .iter()
            .any(|e| e.event.id == pulled_event.event.event.id)
        {
            events.push(&pulled_event.event);
        }
    }

    let to_insert: Vec<(i64, &str, &PlannedEvent<'_>)> = locked
        .iter()
        .zip(&events_of)
        .flat_map(|(row, events)| {
            let tenant = plan.shipments[row.plan_index].key.tenant.as_str();
            events.iter().map(move |event| (row.id, tenant, *event))
        })
        .collect();
    let inserted = if to_insert.is_empty() {
        sql::Inserted::new()
    } else {
        sql::insert_events(conn, &to_insert).await?
    };

    // `last_webhook_at` is refreshed at most once a minute: a replayed or busy webhook must not
    // turn every batch into a write of every shipment it mentions.
    let webhook_touch: Vec<bool> = locked
        .iter()
        .map(|row| row.webhook_stale && plan.shipments[row.plan_index].webhook_seen)
        .collect();
    let merges = fold::merge_shipments(
        conn,
        &locked,
        &events_of,
        &webhook_touch,
        &inserted,
        &mut report,
    )
    .await?;
    results::write_results(conn, &plan, &locked, &merges, &mut report).await?;

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

/// What [`lock_or_create`] leaves for the rest of the merge.
struct LockOutcome {
    /// The batch's shipments that exist, locked, in key order.
    locked: Vec<LockedShipment>,
    /// Ids of the shipments a registration inserted or changed (their parked events are still
    /// to be pulled in).
    registered: HashSet<i64>,
    /// Events parked for the shipments the batch's events created, already taken out of
    /// `unmatched_events`.
    pulled: Vec<PulledEvent>,
}

/// Steps 2 to 4: applies the registrations, locks the batch's existing shipments (loading what
/// the merge and the outbox need of their stored events), creates the missing ones its events
/// create and pulls in the events parked for those.
async fn lock_or_create(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
    report: &mut BatchReport,
) -> Result<LockOutcome, StoreError> {
    let registered = sql::register_shipments(conn, plan).await?;
    let mut created = registered.values().filter(|inserted| **inserted).count();
    let registered: HashSet<i64> = registered.into_keys().collect();

    let min_at: Vec<Option<DateTime<Utc>>> = plan
        .shipments
        .iter()
        .map(|s| s.events.iter().map(|e| e.event.occurred_at).min())
        .collect();
    let loaded = sql::lock_load_create(conn, plan, &min_at).await?;
    let mut locked = loaded.locked;
    if !loaded.conflicted.is_empty() {
        // Inserted meanwhile by a writer outside the advisory-lock protocol: lock those.
        locked.extend(sql::lock_shipments(conn, plan, &loaded.conflicted).await?);
    }
    locked.sort_by_key(|row| row.plan_index);
    created += loaded.created.len();
    report.shipments_created = created as u64;
    report.shipments_touched = locked.len() as u64;
    Ok(LockOutcome {
        locked,
        registered,
        pulled: loaded.pulled,
    })
}

/// Step 5: shipments that still do not exist only have events from sources that require
/// registration (anything else created them in step 2 or 4): parks those events.
async fn park_unmatched(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
    locked_of_plan: &[Option<usize>],
    report: &mut BatchReport,
) -> Result<(), StoreError> {
    let parked: Vec<(&str, &PlannedEvent<'_>)> = plan
        .shipments
        .iter()
        .zip(locked_of_plan)
        .filter(|(_, locked)| locked.is_none())
        .flat_map(|(shipment, _)| {
            shipment
                .events
                .iter()
                .map(|e| (shipment.key.tenant.as_str(), e))
        })
        .collect();
    report.unmatched = parked.len() as u64;
    if !parked.is_empty() {
        sql::park_events(conn, &parked).await?;
    }
    Ok(())
}
