//! Accounting queries for the load generator and the fault suite: which event ids are stored,
//! and when they were written.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres};
use waybill_core::EventId;

use crate::StoreError;

/// For each of `ids` that is stored (in any tenant), the earliest time a row with that id was
/// written (`tracking_events.stored_at`). Ids not stored are absent from the result.
#[tracing::instrument(skip_all, fields(ids = ids.len()))]
pub async fn stored_at_of(
    conn: &mut PgConnection,
    ids: &[EventId],
) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    per_event_id(conn, ids, "min(e.stored_at)").await
}

/// How many rows each event id has (more than one only when several tenants track the same
/// parcel); ids not stored are absent.
#[tracing::instrument(skip_all, fields(ids = ids.len()))]
pub async fn copies_of(
    conn: &mut PgConnection,
    ids: &[EventId],
) -> Result<Vec<(String, i64)>, StoreError> {
    per_event_id(conn, ids, "count(*)").await
}

/// One aggregate of `tracking_events e` per stored id of `ids`.
async fn per_event_id<T>(
    conn: &mut PgConnection,
    ids: &[EventId],
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
          group by e.event_id"
    );
    Ok(sqlx::query_as(&statement)
        .bind(&ids)
        .fetch_all(conn)
        .await?)
}
