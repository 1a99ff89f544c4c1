//! Accounting queries for the load generator and the fault suite: which event ids are stored,
//! and when they were written.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use waybill_core::EventId;

use crate::StoreError;

/// For each of `ids` that is stored (in any tenant), the earliest time a row with that id was
/// written (`tracking_events.stored_at`). Ids not stored are absent from the result.
#[tracing::instrument(skip_all, fields(ids = ids.len()))]
pub async fn stored_at_of(
    conn: &mut PgConnection,
    ids: &[EventId],
) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    let ids: Vec<&str> = ids.iter().map(EventId::as_str).collect();
    let rows = sqlx::query(
        // A join on the unnested ids (a hash join), not `= any($1)`, which tests every row
        // against the whole array.
        "select e.event_id, min(e.stored_at) as stored_at
           from tracking_events e
           join (select distinct unnest($1::text[]) as id) ids on ids.id = e.event_id
          group by e.event_id",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| Ok((row.try_get("event_id")?, row.try_get("stored_at")?)))
        .collect()
}

/// How many rows each event id has (more than one only when several tenants track the same
/// parcel); ids not stored are absent.
#[tracing::instrument(skip_all, fields(ids = ids.len()))]
pub async fn copies_of(
    conn: &mut PgConnection,
    ids: &[EventId],
) -> Result<Vec<(String, i64)>, StoreError> {
    let ids: Vec<&str> = ids.iter().map(EventId::as_str).collect();
    let rows = sqlx::query(
        "select e.event_id, count(*) as copies
           from tracking_events e
           join (select distinct unnest($1::text[]) as id) ids on ids.id = e.event_id
          group by e.event_id",
    )
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| Ok((row.try_get("event_id")?, row.try_get("copies")?)))
        .collect()
}
