//! `waybill cohorts`: the partitions of `tracking_events`, one per month of shipments, with
//! their sizes and the date `database.shipment_retention` forgets each (docs/operations.md,
//! "Shipment cohorts and retention").

use chrono::{DateTime, Utc};
use serde::Serialize;
use waybill_config::{ExposeSecret, Settings};
use waybill_store::cohorts::{self, CohortPartition};

/// One partition as `--json` prints it.
#[derive(Debug, Serialize)]
struct Row<'a> {
    partition: &'a str,
    /// `YYYY-MM`, `before YYYY-MM` (the initial partition) or null (the default one).
    cohort: Option<String>,
    shipments: Option<i64>,
    events_estimate: i64,
    bytes: i64,
    /// When the retention forgets it; null without a retention and for the default partition.
    forgotten_from: Option<DateTime<Utc>>,
}

/// Lists the partitions as a table, or as a JSON array with `json`.
pub async fn run(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let store = waybill_store::Store::connect(settings.database.url.expose_secret(), 1).await?;
    let mut conn = store.acquire().await?;
    let partitions = cohorts::list(&mut conn).await?;
    let retention = settings
        .database
        .shipment_retention
        .retention()
        .and_then(|retention| chrono::Duration::from_std(retention).ok());
    let rows: Vec<Row<'_>> = partitions
        .iter()
        .map(|partition| Row {
            partition: &partition.partition,
            cohort: cohort(partition),
            shipments: partition.shipments,
            events_estimate: partition.events_estimate,
            bytes: partition.bytes,
            forgotten_from: retention.and_then(|retention| partition.forgotten_from(retention)),
        })
        .collect();
    if json {
        return crate::output::json(&rows);
    }
    println!(
        "{:<26} {:<15} {:>12} {:>14} {:>10}  forgotten from",
        "partition", "cohort", "shipments", "events (est.)", "size"
    );
    for row in &rows {
        println!(
            "{:<26} {:<15} {:>12} {:>14} {:>10}  {}",
            row.partition,
            row.cohort.as_deref().unwrap_or("-"),
            row.shipments
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            row.events_estimate,
            size(row.bytes),
            match (row.forgotten_from, retention) {
                (Some(at), _) => at.format("%Y-%m-%d %H:%M UTC").to_string(),
                (None, None) => "never (no database.shipment_retention)".to_owned(),
                (None, Some(_)) => "-".to_owned(),
            }
        );
    }
    Ok(())
}

/// `YYYY-MM` for a month's partition, `before YYYY-MM` for the initial one.
fn cohort(partition: &CohortPartition) -> Option<String> {
    if let Some(month) = partition.month() {
        return Some(month.format("%Y-%m").to_string());
    }
    let end = cohorts::month_of_id(partition.end_id?)?;
    Some(format!("before {}", end.format("%Y-%m")))
}

/// Bytes in the largest binary unit under 1024 of it (`512 B`, `48.0 KiB`, `1.3 GiB`).
fn size(bytes: i64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut units = ["KiB", "MiB", "GiB", "TiB"].into_iter().peekable();
    while let Some(unit) = units.next() {
        if value < 1024.0 || units.peek().is_none() {
            return format!("{value:.1} {unit}");
        }
        value /= 1024.0;
    }
    format!("{bytes} B")
}
