//! Shipment cohorts' upkeep (see `waybill_store::cohorts`): every worker, every ten minutes,
//! makes sure the event partitions of this month and the next exist and that new shipment ids
//! are this month's; with `database.shipment_retention`, it then forgets the months of
//! shipments older than the retention: their events by dropping partitions, their shipment
//! rows in short batches.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use waybill_store::{Store, StoreError, cohorts};
use waybill_telemetry::trace;

use crate::Worker;

/// How often the upkeep runs. A month's partition is created a month ahead, so this only
/// bounds how long after midnight on the 1st new shipments start the new month's ids.
const INTERVAL: Duration = Duration::from_secs(600);
/// Most shipment rows one deleting statement removes.
const DELETE_BATCH: u32 = 5_000;
/// The pause between two full deleting statements, leaving the database to the merges.
const DELETE_PAUSE: Duration = Duration::from_millis(100);

/// What one upkeep round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Upkeep {
    /// Event partitions created.
    pub created: Vec<String>,
    /// Event partitions dropped by the retention.
    pub dropped: Vec<String>,
    /// Shipment rows deleted by the retention.
    pub deleted_shipments: u64,
}

/// One upkeep round at `now`: creates the partitions this month and the next need and, with a
/// `retention`, forgets the cohorts whose whole month is older than `now - retention`.
pub async fn upkeep(
    store: &Store,
    now: DateTime<Utc>,
    retention: Option<Duration>,
    shutdown: &CancellationToken,
) -> Result<Upkeep, StoreError> {
    let mut done = Upkeep::default();
    let mut conn = store.acquire().await?;
    done.created = cohorts::ensure(&mut conn, now).await?;
    for partition in &done.created {
        tracing::info!(partition = %partition, "created the event partition of a new shipment cohort");
    }
    let Some(retention) = retention else {
        return Ok(done);
    };
    let before = chrono::Duration::from_std(retention)
        .ok()
        .and_then(|retention| now.checked_sub_signed(retention))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    done.dropped = cohorts::forget(&mut conn, before).await?;
    for partition in &done.dropped {
        tracing::info!(partition = %partition, "dropped the events of a shipment cohort past database.shipment_retention");
    }
    loop {
        let deleted = cohorts::delete_forgotten_shipments(&mut conn, before, DELETE_BATCH).await?;
        done.deleted_shipments += deleted;
        metrics::counter!("waybill_pruned_total", "table" => "shipments").increment(deleted);
        if deleted < u64::from(DELETE_BATCH) || shutdown.is_cancelled() {
            break;
        }
        tokio::time::sleep(DELETE_PAUSE).await;
    }
    if done.deleted_shipments > 0 {
        tracing::info!(
            shipments = done.deleted_shipments,
            "deleted the shipments of cohorts past database.shipment_retention"
        );
    }
    Ok(done)
}

/// Runs [`upkeep`] at start and every ten minutes until shutdown.
pub(crate) fn spawn(
    worker: &Worker,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) {
    let store = worker.inner.store.clone();
    let retention = worker
        .inner
        .settings
        .database
        .shipment_retention
        .retention();
    tracker.spawn(async move {
        while !shutdown.is_cancelled() {
            let round = trace::untraced(upkeep(&store, Utc::now(), retention, &shutdown)).await;
            if let Err(error) = round {
                // Nothing waits on the upkeep: a month's partition exists a month ahead, and
                // the next round tries again (WaybillCohortUpkeepFailing if it keeps failing).
                metrics::counter!("waybill_cohort_upkeep_failures_total").increment(1);
                tracing::warn!(error = %error, "the shipment cohorts' upkeep failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(INTERVAL) => {}
            }
        }
    });
}
