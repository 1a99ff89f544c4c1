//! Shipment cohorts: `tracking_events` is partitioned by the month its shipments were created
//! in, and shipment ids encode that month (migration `0010_event_cohorts.sql` explains why).
//!
//! The worker keeps the partitions ahead of time ([`ensure`]) and, with a retention, forgets
//! whole months of shipments: one `drop table` for their events ([`forget`]), then their
//! shipment rows in short batches ([`delete_forgotten_shipments`]). Nothing here deletes event
//! rows one by one.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::StoreError;

/// Creates the event partitions of `at`'s month and the next when missing, and moves the
/// shipment id sequence into `at`'s month when it is behind. Returns the partitions created.
/// Safe to call from several processes at once.
pub async fn ensure(conn: &mut PgConnection, at: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("select waybill_ensure_cohorts($1)")
        .bind(at)
        .fetch_all(conn)
        .await?)
}

/// Drops the event partitions of every cohort whose month ended before `before`'s month began,
/// and returns their names. Gives up (an error) when it waits more than 5 s for the table's lock.
pub async fn forget(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar("select waybill_forget_cohorts($1)")
        .bind(before)
        .fetch_all(conn)
        .await?)
}

/// Deletes up to `limit` shipments of the cohorts that ended before `before`'s month began
/// (with their outbox rows, by cascade), and returns how many. Their events went with
/// [`forget`]; call it until it deletes fewer than `limit`.
pub async fn delete_forgotten_shipments(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: u32,
) -> Result<u64, StoreError> {
    let deleted = sqlx::query(
        "delete from shipments
         where id = any(array(select id from shipments where id < waybill_cohort_base($1)
                              order by id limit $2 for update skip locked))",
    )
    .bind(before)
    .bind(i64::from(limit))
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected())
}

/// The event partitions, oldest cohort first: `(partition, first shipment id or None for the
/// initial partition)`. The default partition is not listed.
pub async fn partitions(conn: &mut PgConnection) -> Result<Vec<(String, Option<i64>)>, StoreError> {
    Ok(sqlx::query_as(
        "select c.relname::text,
                substring(pg_get_expr(c.relpartbound, c.oid) from $r$FROM \\('(-?[0-9]+)'\\)$r$)::int8
         from pg_inherits i join pg_class c on c.oid = i.inhrelid
         where i.inhparent = 'tracking_events'::regclass
           and pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
         order by 2 nulls first",
    )
    .fetch_all(conn)
    .await?)
}
