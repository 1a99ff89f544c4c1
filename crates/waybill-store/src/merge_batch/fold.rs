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
    // The new events of each locked shipment.
    let new_events_of: Vec<Vec<&'a PlannedEvent<'a>>> = locked
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
        .collect();

    // The fold is a left fold over the history in key order, whose only state is the current
    // event. When every new event is strictly newer than every stored one, the sorted history
    // is the stored one followed by the new events, so folding the new events from the stored
    // current event gives exactly the full fold. Otherwise the whole history is needed: the
    // lock statement loaded it (as it was before this batch) when some batch event was not
    // newer than `last_event_at`; what it could not foresee is loaded now.
    let mut needs_history = Vec::new();
    let mut to_load = Vec::new();
    for (row, new_events) in locked.iter().zip(&new_events_of) {
        let newer_than_all = row
            .last_event_at
            .is_none_or(|last| new_events.iter().all(|e| e.event.occurred_at > last));
        let needed = !new_events.is_empty() && !newer_than_all;
        needs_history.push(needed);
        let preloaded = row.stored.as_ref().is_some_and(|s| s.keys.is_some());
        if needed && !preloaded {
            to_load.push(row.id);
        }
    }
    let mut loaded: HashMap<i64, BTreeSet<EventKey>> = HashMap::new();
    if !to_load.is_empty() {
        for (shipment_id, key) in sql::load_history_keys(conn, &to_load).await? {
            loaded.entry(shipment_id).or_default().insert(key);
        }
    }

    let mut merges = Vec::new();
    for (locked_index, (row, new_events)) in locked.iter().zip(new_events_of).enumerate() {
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
                    new_events,
                });
            }
            continue;
        }
        let new_keys: Vec<EventKey> = new_events.iter().map(|e| e.event.key()).collect();
        let history = if !needs_history[locked_index] {
            row.current.iter().cloned().collect()
        } else if let Some(keys) = row.stored.as_ref().and_then(|s| s.keys.as_ref()) {
            // Loaded under the lock, before the insert: the state before this batch.
            keys.clone()
        } else {
            // Loaded after the insert: take the new events out again to get the state before.
            let mut stored = loaded.remove(&row.id).unwrap_or_default();
            for key in &new_keys {
                stored.remove(key);
            }
            stored
        };
        let state = ShipmentState {
            history,
            current: row.current.clone(),
            version: row.version,
        };
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
            new_events,
        });
    }
    Ok(merges)
}
