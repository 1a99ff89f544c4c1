//! The per-shipment fold: the pure [`waybill_core::merge::apply`] over each shipment's stored
//! state and new events, loading stored history only where the incremental fold is not exact.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use waybill_core::EventKey;
use waybill_core::merge::{self, ShipmentState};

use super::plan::PlannedEvent;
use super::sql::{self, LockedShipment};
use crate::batch::BatchReport;
use crate::error::StoreError;

/// The outcome of merging one shipment's new events.
pub(super) struct ShipmentMerge {
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
}

impl ShipmentMerge {
    pub fn current_changed(&self) -> bool {
        self.previous != self.current
    }

    pub fn current_id(&self) -> &str {
        self.current.as_ref().map_or("", |c| c.id.as_str())
    }
}

/// Runs the pure merge for every locked shipment, loading history only where the incremental
/// fold is not exact. Returns one entry per shipment that needs its row updated (new events, or
/// a webhook event to record), and counts every event's [`waybill_core::ChangeKind`].
pub(super) async fn merge_shipments(
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
        let newer_than_all = row
            .last_event_at
            .is_none_or(|last| new_events.iter().all(|e| e.event.occurred_at > last));
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
        });
    }
    Ok(merges)
}
