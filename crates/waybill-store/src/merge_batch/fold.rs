//! The per-shipment fold: the pure [`waybill_core::merge::apply`] over each shipment's stored
//! state and new events, loading stored history only where the incremental fold is not exact.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use waybill_core::EventKey;
use waybill_core::merge::{self, ShipmentState};

use super::plan::PlannedEvent;
use super::sql::{self, Inserted, LockedShipment};
use crate::batch::BatchReport;
use crate::error::StoreError;

/// The outcome of merging one shipment's new events.
pub(super) struct ShipmentMerge<'a> {
    pub locked_index: usize,
    pub previous: Option<EventKey>,
    pub current: Option<EventKey>,
    pub version: i64,
    /// The newest `occurred_at` among the new events.
    pub last_event_at: Option<DateTime<Utc>>,
    /// An order number carried by the new events, offered to a shipment that has none.
    pub order_number: Option<String>,
    /// Whether to refresh `last_webhook_at`.
    pub webhook_seen: bool,
    /// The events this batch stored for the shipment (the others were there already).
    pub new_events: Vec<&'a PlannedEvent<'a>>,
}

impl ShipmentMerge<'_> {
    pub fn current_changed(&self) -> bool {
        self.previous != self.current
    }

    pub fn current_id(&self) -> &str {
        self.current.as_ref().map_or("", |c| c.id.as_str())
    }
}

/// Runs the pure merge for every locked shipment, loading history only where the incremental
/// fold is not exact and the lock statement did not load it already. Returns one entry per
/// shipment that needs its row updated (new events, or a webhook event to record), and counts
/// every event's [`waybill_core::ChangeKind`].
pub(super) async fn merge_shipments<'a>(
    conn: &mut PgConnection,
    locked: &[LockedShipment],
    events_of: &[Vec<&'a PlannedEvent<'a>>],
    webhook_touch: &[bool],
    inserted: &Inserted,
    report: &mut BatchReport,
) -> Result<Vec<ShipmentMerge<'a>>, StoreError> {
    let new_events_of = stored_by_this_batch(locked, events_of, inserted);
    let needs_history = needs_whole_history(locked, &new_events_of);
    let mut loaded = load_missing_history(conn, locked, &needs_history).await?;

    let mut merges = Vec::new();
    for (locked_index, (row, new_events)) in locked.iter().zip(new_events_of).enumerate() {
        report.duplicates += (events_of[locked_index].len() - new_events.len()) as u64;
        let webhook_seen = webhook_touch[locked_index];
        if new_events.is_empty() {
            if webhook_seen {
                merges.push(ShipmentMerge::webhook_only(locked_index, row));
            }
            continue;
        }
        let new_keys: Vec<EventKey> = new_events.iter().map(|e| e.event.key()).collect();
        let history =
            history_before_batch(row, needs_history[locked_index], &mut loaded, &new_keys);
        let state = ShipmentState {
            history,
            current: row.current.clone(),
            version: row.version,
        };
        let outcome = merge::apply(&state, &new_keys);
        for (_, kind) in &outcome.changes {
            report.record(*kind);
        }
        merges.push(ShipmentMerge {
            locked_index,
            previous: outcome.previous,
            current: outcome.state.current,
            version: outcome.state.version,
            last_event_at: new_events.iter().map(|e| e.event.occurred_at).max(),
            order_number: offered_order_number(row, &new_events),
            webhook_seen,
            new_events,
        });
    }
    Ok(merges)
}

impl ShipmentMerge<'_> {
    /// A shipment with no new events whose webhook event is still to be recorded.
    fn webhook_only(locked_index: usize, row: &LockedShipment) -> Self {
        ShipmentMerge {
            locked_index,
            previous: row.current.clone(),
            current: row.current.clone(),
            version: row.version,
            last_event_at: None,
            order_number: None,
            webhook_seen: true,
            new_events: Vec::new(),
        }
    }
}

/// The events of each locked shipment that this batch stored (the others were there already).
fn stored_by_this_batch<'a>(
    locked: &[LockedShipment],
    events_of: &[Vec<&'a PlannedEvent<'a>>],
    inserted: &Inserted,
) -> Vec<Vec<&'a PlannedEvent<'a>>> {
    locked
        .iter()
        .zip(events_of)
        .map(|(row, events)| match inserted.get(&row.id) {
            Some(ids) => events
                .iter()
                .copied()
                .filter(|e| ids.contains(e.event.id.as_str()))
                .collect(),
            None => Vec::new(),
        })
        .collect()
}

/// Whether each shipment's fold needs its whole history.
///
/// The fold is a left fold over the history in key order, whose only state is the current
/// event. When every new event is strictly newer than every stored one, the sorted history
/// is the stored one followed by the new events, so folding the new events from the stored
/// current event gives exactly the full fold. Otherwise the whole history is needed.
fn needs_whole_history(
    locked: &[LockedShipment],
    new_events_of: &[Vec<&PlannedEvent<'_>>],
) -> Vec<bool> {
    locked
        .iter()
        .zip(new_events_of)
        .map(|(row, new_events)| {
            let newer_than_all = row
                .last_event_at
                .is_none_or(|last| new_events.iter().all(|e| e.event.occurred_at > last));
            !new_events.is_empty() && !newer_than_all
        })
        .collect()
}

/// Loads the history keys of the shipments that need them and whose keys the lock statement
/// did not load (it loads them, as they were before this batch, when some batch event was not
/// newer than `last_event_at`; what it could not foresee is loaded now).
async fn load_missing_history(
    conn: &mut PgConnection,
    locked: &[LockedShipment],
    needs_history: &[bool],
) -> Result<HashMap<i64, BTreeSet<EventKey>>, StoreError> {
    let to_load: Vec<i64> = locked
        .iter()
        .zip(needs_history)
        .filter(|(row, needed)| {
            let preloaded = row.stored.as_ref().is_some_and(|s| s.keys.is_some());
            **needed && !preloaded
        })
        .map(|(row, _)| row.id)
        .collect();
    let mut loaded: HashMap<i64, BTreeSet<EventKey>> = HashMap::new();
    if !to_load.is_empty() {
        for (shipment_id, key) in sql::load_history_keys(conn, &to_load).await? {
            loaded.entry(shipment_id).or_default().insert(key);
        }
    }
    Ok(loaded)
}

/// The shipment's history before this batch, as much of it as the fold needs: the current
/// event alone when the new events are all newer, else every stored key.
fn history_before_batch(
    row: &LockedShipment,
    needs_history: bool,
    loaded: &mut HashMap<i64, BTreeSet<EventKey>>,
    new_keys: &[EventKey],
) -> BTreeSet<EventKey> {
    if !needs_history {
        row.current.iter().cloned().collect()
    } else if let Some(keys) = row.stored.as_ref().and_then(|s| s.keys.as_ref()) {
        // Loaded under the lock, before the insert: the state before this batch.
        keys.clone()
    } else {
        // Loaded after the insert: take the new events out again to get the state before.
        let mut stored = loaded.remove(&row.id).unwrap_or_default();
        for key in new_keys {
            stored.remove(key);
        }
        stored
    }
}

/// The order number the new events offer a shipment that has none: the newest event's.
fn offered_order_number(row: &LockedShipment, new_events: &[&PlannedEvent<'_>]) -> Option<String> {
    if row.order_number.is_some() {
        return None;
    }
    new_events
        .iter()
        .filter(|e| e.event.order_number.is_some())
        .max_by(|a, b| a.event.key().cmp(&b.event.key()))
        .and_then(|e| e.event.order_number.clone())
}
