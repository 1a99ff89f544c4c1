//! Accounting queries for the load generator and the fault suite: which event ids are stored,
//! and when they were written.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres};
use waybill_core::EventId;

use crate::StoreError;

/// The newest shipment's id (0 when there is none). Every shipment created later has a greater
/// one: the load generator takes it before sending, since all its shipments are new.
pub async fn last_shipment_id(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("select coalesce(max(id), 0)::int8 from shipments")
            .fetch_one(conn)
            .await?,
    )
}

/// The process id of the server process serving `conn`, so the caller can tell its CPU time
/// apart from the rest of Postgres' (on the same machine, from `/proc`).
pub async fn backend_pid(conn: &mut PgConnection) -> Result<u32, StoreError> {
    let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(conn)
        .await?;
    Ok(u32::try_from(pid).unwrap_or(0))
}

/// For each of `ids` that is stored (in any tenant) in a shipment whose id is greater than
/// `after_shipment` (0: any), the earliest time a row with that id was written
/// (`tracking_events.stored_at`). Ids not stored are absent from the result.
///
/// The bound keeps the lookup to the primary key's range of the new shipments: event ids are
/// not indexed on their own, and without it each lookup reads the whole table (19 s a lookup
/// with 20 M stored events).
#[tracing::instrument(skip_all, fields(ids = ids.len()))]
pub async fn stored_at_of(
    conn: &mut PgConnection,
    ids: &[EventId],
    after_shipment: i64,
) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    per_event_id(conn, ids, after_shipment, "min(e.stored_at)").await
}

/// How many rows each event id has (more than one only when several tenants track the same
/// parcel); ids not stored are absent.
#[tracing::instrument(skip_all, fields(ids = ids.len()))]
pub async fn copies_of(
    conn: &mut PgConnection,
    ids: &[EventId],
) -> Result<Vec<(String, i64)>, StoreError> {
    per_event_id(conn, ids, 0, "count(*)").await
}

/// One aggregate of `tracking_events e` per stored id of `ids` in shipments after
/// `after_shipment`.
async fn per_event_id<T>(
    conn: &mut PgConnection,
    ids: &[EventId],
    after_shipment: i64,
    aggregate: &'static str,
) -> Result<Vec<(String, T)>, StoreError>
where
    T: for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + Send + Unpin,
{
    let ids: Vec<&str> = ids.iter().map(EventId::as_str).collect();
    // A join on the unnested ids (a hash join), not `= any($1)`, which tests every row against
    // the whole array.
    let statement = format!(
        "select e.event_id, {aggregate} as value
           from tracking_events e
           join (select distinct unnest($1::text[]) as id) ids on ids.id = e.event_id
          where e.shipment_id > $2
          group by e.event_id"
    );
    Ok(sqlx::query_as(&statement)
        .bind(&ids)
        .bind(after_shipment)
        .fetch_all(conn)
        .await?)
}
