//! Rejected events (`rejected_events`, migration 0006): the event elements of verified webhooks
//! that their profile could not map, kept so that an operator can see them and replay them after
//! fixing the profile. Written in the transaction of the batch that stored their siblings.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, Row};

use crate::error::StoreError;
use crate::fetch::RunQuery;

/// One rejected event to store (and, read back, the columns of the same names).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct NewRejectedEvent {
    /// The inbound envelope that carried it.
    pub envelope_id: String,
    /// Its place in the envelope's list of rejected events.
    pub position: i32,
    /// The source's tenant.
    pub tenant: String,
    /// The source it arrived on.
    pub source: String,
    /// The profile that could not map it.
    pub profile: String,
    /// The concrete path of the element.
    pub path: String,
    /// Why, as a closed-set label.
    pub kind: String,
    /// Why, as a sentence.
    pub reason: String,
    /// The element as it was.
    pub element: serde_json::Value,
    /// Its tracking number, when readable.
    pub tracking_number: Option<String>,
    /// The whole verified body.
    pub raw_body: String,
    /// When the ingress received it.
    pub received_at: DateTime<Utc>,
}

/// A stored rejected event, read from the columns of the same names.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RejectedEvent {
    /// The row id (what `waybill rejected show|replay` take).
    pub id: i64,
    /// Everything that was stored.
    #[sqlx(flatten)]
    pub stored: NewRejectedEvent,
    /// When it was stored.
    pub stored_at: DateTime<Utc>,
    /// When a replay mapped it, if one did.
    pub replayed_at: Option<DateTime<Utc>>,
}

/// Which rejected events to list.
#[derive(Debug, Clone, Default)]
pub struct RejectedFilter {
    /// Only this source's.
    pub source: Option<String>,
    /// Also the ones already replayed.
    pub include_replayed: bool,
    /// At most this many, newest first.
    pub limit: i64,
}

/// Stores rejected events; a row already stored (same envelope and position) is skipped. Returns
/// the (source, kind) of each row actually inserted, for the metric.
pub async fn insert(
    conn: &mut PgConnection,
    rows: &[NewRejectedEvent],
) -> Result<Vec<(String, String)>, StoreError> {
    let mut inserted = Vec::new();
    for row in rows {
        let result = sqlx::query(
            "insert into rejected_events (envelope_id, position, tenant, source, profile, path, \
             kind, reason, element, tracking_number, raw_body, received_at) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             on conflict (envelope_id, position) do nothing",
        )
        .bind(&row.envelope_id)
        .bind(row.position)
        .bind(&row.tenant)
        .bind(&row.source)
        .bind(&row.profile)
        .bind(&row.path)
        .bind(&row.kind)
        .bind(&row.reason)
        .bind(&row.element)
        .bind(&row.tracking_number)
        .bind(&row.raw_body)
        .bind(row.received_at)
        .execute(&mut *conn)
        .await?;
        if result.rows_affected() == 1 {
            inserted.push((row.source.clone(), row.kind.clone()));
        }
    }
    Ok(inserted)
}

const COLUMNS: &str = "id, envelope_id, position, tenant, source, profile, path, kind, reason, \
                       element, tracking_number, raw_body, received_at, stored_at, replayed_at";

fn from_row(row: &PgRow) -> Result<RejectedEvent, StoreError> {
    Ok(RejectedEvent::from_row(row)?)
}

/// Rejected events, newest first.
pub async fn list(
    conn: &mut PgConnection,
    filter: &RejectedFilter,
) -> Result<Vec<RejectedEvent>, StoreError> {
    sqlx::query(&format!(
        "select {COLUMNS} from rejected_events \
         where ($1::text is null or source = $1) and ($2 or replayed_at is null) \
         order by received_at desc, id desc limit $3"
    ))
    .bind(&filter.source)
    .bind(filter.include_replayed)
    .bind(filter.limit.max(0))
    .fetch_all_with(&mut *conn, from_row)
    .await
}

/// One rejected event by id.
pub async fn get(conn: &mut PgConnection, id: i64) -> Result<Option<RejectedEvent>, StoreError> {
    sqlx::query(&format!(
        "select {COLUMNS} from rejected_events where id = $1"
    ))
    .bind(id)
    .fetch_optional_with(&mut *conn, from_row)
    .await
}

/// Marks a rejected event replayed (its body mapped without rejecting it). False if no such row.
pub async fn mark_replayed(
    conn: &mut PgConnection,
    id: i64,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let result = sqlx::query("update rejected_events set replayed_at = $2 where id = $1")
        .bind(id)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// How many rejected events wait for a replay.
pub async fn count_pending(conn: &mut PgConnection) -> Result<i64, StoreError> {
    let row = sqlx::query("select count(*) as n from rejected_events where replayed_at is null")
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get("n")?)
}
