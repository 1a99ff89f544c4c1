//! Shipment cohorts: `tracking_events` is partitioned by the month its shipments were created
//! in, and shipment ids encode that month (migration `0010_event_cohorts.sql` explains why).
//!
//! The worker keeps the partitions ahead of time ([`ensure`]) and, with a retention, forgets
//! whole months of shipments: one `drop table` for their events ([`forget`]), then their
//! shipment rows in short batches ([`delete_forgotten_shipments`]). Nothing here deletes event
//! rows one by one.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sqlx::PgConnection;

use crate::error::StoreError;

/// Creates the event partitions of `at`'s month and the next when missing, and moves the
/// shipment id sequence into `at`'s month when it is behind. Returns the partitions created.
/// Safe to call from several processes at once.
pub async fn ensure(conn: &mut PgConnection, at: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
    partitions_named_by(conn, "select waybill_ensure_cohorts($1)", at).await
}

/// Drops the event partitions of every cohort whose month ended before `before`'s month began,
/// and returns their names. Gives up (an error) when it waits more than 5 s for the table's lock.
/// Safe to call from several processes at once.
pub async fn forget(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    partitions_named_by(conn, "select waybill_forget_cohorts($1)", before).await
}

/// Runs one of the migration's cohort functions at `at`; it returns the partitions it changed.
async fn partitions_named_by(
    conn: &mut PgConnection,
    statement: &'static str,
    at: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(statement)
        .bind(at)
        .fetch_all(conn)
        .await?)
}

/// Deletes up to `limit` shipments of the cohorts that ended before `before`'s month began
/// and whose partition is gone (with their outbox rows, by cascade), and returns how many.
/// Their events went with [`forget`]; call it until it deletes fewer than `limit`. Shipments
/// whose partition is still there are never deleted here (that would delete their events one
/// by one): the initial partition's, while the month of the upgrade is younger than `before`.
pub async fn delete_forgotten_shipments(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: u32,
) -> Result<u64, StoreError> {
    let deleted = sqlx::query(
        // The bound is one value (an init plan), so the scan is a range of the primary key
        // that finds nothing at once when nothing is due.
        "delete from shipments
         where id = any(array(
             select id from shipments
             where id < (select least(waybill_cohort_base($1),
                                      coalesce(min(coalesce(first_id, '-9223372036854775808'::int8)),
                                               '9223372036854775807'::int8))
                         from waybill_event_partitions() where not is_default)
             order by id limit $2 for update skip locked))",
    )
    .bind(before)
    .bind(i64::from(limit))
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected())
}

/// One partition of `tracking_events`, as [`list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CohortPartition {
    /// The table's name: `tracking_events_YYYY_MM`, `tracking_events_initial` (shipments
    /// created before partitioning) or `tracking_events_default` (ids no partition covers).
    pub partition: String,
    /// The first shipment id it holds; `None` for the initial and the default partition.
    pub first_id: Option<i64>,
    /// The first shipment id past it; `None` for the default partition.
    pub end_id: Option<i64>,
    /// Shipments whose ids are in its range (exact); `None` for the default partition.
    pub shipments: Option<i64>,
    /// Its events, as Postgres last estimated them (`reltuples`; 0 before the first analyze).
    pub events_estimate: i64,
    /// On disk with its indexes and TOAST.
    pub bytes: i64,
}

impl CohortPartition {
    /// The cohort's month (its first day), for a month's partition.
    pub fn month(&self) -> Option<NaiveDate> {
        self.first_id
            .filter(|_| self.end_id.is_some())
            .and_then(month_of_id)
    }

    /// When a retention of `retention` forgets it: that long after its cohort's last month
    /// ended (the next upkeep round after that drops it). `None` for the default partition.
    pub fn forgotten_from(&self, retention: chrono::Duration) -> Option<DateTime<Utc>> {
        let ended = month_of_id(self.end_id?)?
            .and_time(NaiveTime::MIN)
            .and_utc();
        ended.checked_add_signed(retention)
    }
}

/// The month a shipment id was handed out in (ids encode it: months since January 2000,
/// shifted left by 32). `None` for an id from before partitioning's scheme (below 2000).
pub fn month_of_id(id: i64) -> Option<NaiveDate> {
    let months = id >> 32;
    let year = i32::try_from(2000 + months / 12).ok()?;
    let month = u32::try_from(months % 12).ok()? + 1;
    (months > 0).then(|| NaiveDate::from_ymd_opt(year, month, 1))?
}

/// Every partition of `tracking_events`, oldest cohort first and the default one last.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<CohortPartition>, StoreError> {
    Ok(sqlx::query_as(
        "select p.partition, p.first_id, p.end_id,
                case when p.end_id is not null then
                    (select count(*) from shipments s
                     where s.id < p.end_id and (p.first_id is null or s.id >= p.first_id))
                end as shipments,
                greatest(c.reltuples, 0)::int8 as events_estimate,
                pg_total_relation_size(p.relid) as bytes
         from waybill_event_partitions() p join pg_class c on c.oid = p.relid
         order by p.end_id nulls last",
    )
    .fetch_all(conn)
    .await?)
}
