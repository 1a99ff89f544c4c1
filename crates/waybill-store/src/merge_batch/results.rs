//! Writing a batch's results: the shipment rows, and one outbox row per shipment whose current
//! event changed, with the details (current event, newest history) loaded from the database.

use std::collections::HashMap;

use sqlx::PgConnection;
use waybill_core::EventKey;

use super::fold::ShipmentMerge;
use super::plan::Plan;
use super::sql::{self, LockedShipment, ShipmentUpdate};
use crate::batch::{BatchReport, ChangedShipment};
use crate::error::StoreError;
use crate::outbox::{self, HistoryEntryV1, NewOutboxRow, ShipmentRefV1, StatusChangedV1};

/// Updates the merged shipments and writes the outbox rows of those whose current event
/// changed, recording them in the report.
pub(super) async fn write_results(
    conn: &mut PgConnection,
    plan: &Plan,
    locked: &[LockedShipment],
    merges: &[ShipmentMerge],
    report: &mut BatchReport,
) -> Result<(), StoreError> {
    let changed: Vec<&ShipmentMerge> = merges.iter().filter(|m| m.current_changed()).collect();
    let details = if changed.is_empty() {
        Details::default()
    } else {
        let ids: Vec<i64> = changed.iter().map(|m| locked[m.locked_index].id).collect();
        let current: Vec<&str> = changed.iter().map(|m| m.current_id()).collect();
        Details::group(sql::load_details(conn, &ids, &current).await?)
    };

    let mut updates = Vec::with_capacity(merges.len());
    for merge in merges {
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
                    order_number: row
                        .order_number
                        .clone()
                        .or_else(|| merge.order_number.clone()),
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
    if outbox_rows.is_empty() {
        return Ok(());
    }
    let written = outbox::insert(conn, &outbox_rows).await?;
    let outbox_id_of: HashMap<i64, i64> = written
        .into_iter()
        .map(|(id, shipment_id)| (shipment_id, id))
        .collect();
    for (merge, row) in changed.iter().zip(&outbox_rows) {
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
    }
    Ok(())
}

/// Loaded event details, grouped by shipment.
#[derive(Default)]
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
            .map(|rows| {
                rows.iter()
                    .filter(|r| r.is_recent)
                    .map(|r| r.entry.clone())
                    .collect()
            })
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
