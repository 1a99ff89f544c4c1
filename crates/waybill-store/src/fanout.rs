//! Downstream fan-out: every statement the outbox relay, the delivery dispatcher and the
//! `waybill subscriptions` / `waybill deliveries` commands run (see
//! `migrations/0003_fanout.sql` for the tables and `docs/subscriptions.md` for the rules).
//!
//! The relay reads the outbox through two independent cursors, each claimed
//! `for update skip locked` in the caller's transaction, so any number of workers share it:
//!
//! * [`claim_unpublished`] → the caller publishes to `waybill.events` → [`mark_published`] for
//!   the confirmed rows, then commits. A crash before the commit leaves the rows unpublished:
//!   they are published again (at least once; consumers dedupe on the message id).
//! * [`fan_out_pending`] creates one [`deliveries`] row per matching enabled subscription and
//!   takes the rows out of the set still to fan out, in one transaction; idempotent by
//!   `unique (subscription_id, outbox_id)`.
//!
//! Each cursor is a narrow table of the ids still to go (`outbox_to_publish`,
//! `outbox_to_fan_out`), filled by triggers in the merge's transaction and deleted from when
//! done, so an outbox row is written once (migrations 11 and 12).
//!
//! The wire form of a change — its bytes and its id — is one deterministic encoding of its
//! payload, so that the topic message and every HTTP delivery of a change carry the same bytes
//! and the same id ([`OutboxEntry::body`], [`OutboxEntry::message_id`]): encoded here from the
//! stored payload, or, for the relay of the process that merged it, kept from the merge's own
//! encoding of the same value ([`EncodedBodies`](crate::EncodedBodies)).

pub mod deliveries;
pub mod subscriptions;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use waybill_core::{CarrierCode, EventId, Status, TenantId};

use crate::EncodedBodies;
use crate::decode::{count, parse_event_id, parse_status};
use crate::error::StoreError;
use crate::fetch::RunQuery;
use crate::fragments::matches_clause;
use waybill_api::events::{DownstreamEvent, DownstreamEventRef, StatusChangedV1};

pub use deliveries::{
    ClaimedDelivery, DeadFilter, DeliveredOutcome, DeliveryRecord, DeliveryStatus, FailureRecorded,
    claim_due_deliveries, count_deliveries, get_delivery, list_dead, list_deliveries,
    record_all_delivered, record_delivered, record_failure, record_gone, replay_all_dead,
    replay_dead,
};
pub use subscriptions::{
    DisabledReason, NewSubscription, SecretText, Subscription, count_disabled_subscriptions,
    delete_subscription, disable_subscription, enable_subscription, get_subscription,
    insert_subscription, list_subscriptions, rotate_secret,
};

/// An outbox row as the relay reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The row id (the relay's order).
    pub id: i64,
    /// The owning tenant.
    pub tenant: TenantId,
    /// The carrier code.
    pub carrier: CarrierCode,
    /// The new current event.
    pub event_id: EventId,
    /// The status after the change.
    pub new_status: Status,
    /// The shipment's version after the change.
    pub version: i64,
    /// The body's `"type"` (`shipment.status_changed`).
    pub event_type: String,
    /// The exact bytes published and POSTed (see [`OutboxEntry::encode`]).
    pub body: Vec<u8>,
    /// When the merge wrote it.
    pub created_at: DateTime<Utc>,
    /// The trace context of the message that caused the change, when it was traced.
    pub traceparent: Option<String>,
}

impl OutboxEntry {
    /// The id of this change on every channel: the AMQP `message_id` on `waybill.events` and the
    /// Standard Webhooks `webhook-id` of every HTTP delivery and replay of it:
    /// `msg_<event id>_<shipment version>`. Unique per shipment change within a tenant (the same
    /// parcel tracked by two tenants has the same event ids).
    pub fn message_id(&self) -> String {
        message_id(&self.event_id, self.version)
    }

    /// The exact bytes published and POSTed for a stored payload (its JSON text as Postgres
    /// prints it), and the payload's `"type"`: compact JSON, fields in schema order (`"type"`
    /// first). Deterministic, so the topic message and the HTTP deliveries of a change are
    /// byte for byte the same. Decoded straight from the text into the typed event, without
    /// a `serde_json::Value` tree in between (docs/performance.md). A payload of a type this
    /// binary does not know (written by a newer version) is passed on as it is.
    pub fn encode(payload: &str) -> (String, Vec<u8>) {
        // Postgres prints a `jsonb` object's keys shortest first, so `type` leads; the body is
        // then read straight into its struct, not first into serde's buffered form of the
        // whole tree that finding a tag anywhere needs (docs/performance.md).
        if waybill_core::tagged::leading_type(payload.as_bytes()) == Some(StatusChangedV1::TYPE)
            && let Ok(event) = serde_json::from_str::<StatusChangedV1>(payload)
        {
            let mut body = Vec::with_capacity(payload.len());
            if serde_json::to_writer(&mut body, &DownstreamEventRef::StatusChanged(&event)).is_ok()
            {
                return (StatusChangedV1::TYPE.to_owned(), body);
            }
        }
        if let Ok(event) = serde_json::from_str::<DownstreamEvent>(payload)
            && let Ok(body) = serde_json::to_vec(&event)
        {
            return (event.type_name().to_owned(), body);
        }
        // Rare (a newer version's payload): compact, keys in order, as this binary always wrote
        // such bodies.
        let Ok(value) = serde_json::from_str::<serde_json::Value>(payload) else {
            return ("unknown".to_owned(), payload.as_bytes().to_vec());
        };
        let kind = value
            .get("type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        (kind, value.to_string().into_bytes())
    }
}

/// `msg_<event id>_<shipment version>` (see [`OutboxEntry::message_id`]).
pub fn message_id(event_id: &EventId, version: i64) -> String {
    format!("msg_{}_{version}", event_id.as_str())
}

/// What [`fan_out_pending`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanOutReport {
    /// Outbox rows claimed and taken out of the set still to fan out.
    pub rows: u64,
    /// Deliveries created.
    pub deliveries: u64,
    /// The trace contexts of the changes fanned out to some subscription (those traced), so
    /// the fan-out's span can link to them.
    pub traceparents: Vec<String>,
}

/// The oldest `limit` outbox rows not yet published (those in `outbox_to_publish`), locked `for
/// update skip locked` in the caller's transaction (ids another relay holds are skipped). Mark
/// the ones confirmed by the broker with [`mark_published`] in the same transaction.
///
/// The ids are taken first and their rows looked up by primary key after (two statements), so a
/// claim reads what it takes whatever the planner believes of the two tables: as one join,
/// Postgres could merge it with the outbox read from its oldest row, through the week of
/// published changes before the first unpublished one (docs/performance.md). An id whose row is
/// gone (its shipment forgotten, see migration 11) is taken out of the set here. A row whose
/// body `bodies` kept (this process merged it) is published as kept, its payload not read.
#[tracing::instrument(skip_all, fields(limit = limit))]
pub async fn claim_unpublished(
    conn: &mut PgConnection,
    limit: u32,
    bodies: &EncodedBodies,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let ids: Vec<i64> = sqlx::query_scalar(&oldest_ids("outbox_to_publish"))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // The bodies this process's merges kept: their payloads are not printed or decoded.
    let kept = bodies.take(&ids);
    let known: Vec<bool> = kept.iter().map(Option::is_some).collect();
    let rows = sqlx::query(
        "select p.outbox_id, o.id, o.tenant, o.carrier, o.event_id, o.new_status, o.version,
                case when p.known then null else o.payload::text end as payload,
                o.created_at, o.traceparent
         from unnest($1::int8[], $2::bool[]) with ordinality as p(outbox_id, known, position)
         left join outbox o on o.id = p.outbox_id
         order by p.position",
    )
    .bind(&ids)
    .bind(&known)
    .fetch_all(&mut *conn)
    .await?;
    let mut entries = Vec::with_capacity(rows.len());
    let mut gone = Vec::new();
    for (row, kept) in rows.iter().zip(kept) {
        match row.try_get::<Option<i64>, _>("id")? {
            Some(_) => entries.push(outbox_entry(row, kept)?),
            None => gone.push(row.try_get::<i64, _>("outbox_id")?),
        }
    }
    mark_published(conn, &gone).await?;
    Ok(entries)
}

/// The oldest `$1` ids of `set` (`outbox_to_publish` or `outbox_to_fan_out`), locked `for
/// update skip locked`: a claim's first step, before its rows are looked up by primary key.
fn oldest_ids(set: &str) -> String {
    format!(
        "select outbox_id from {set}
         order by outbox_id
         limit $1
         for update skip locked"
    )
}

/// Marks outbox rows published (after the broker confirmed them): takes their ids out of the
/// set still to publish (`outbox_to_publish`), leaving the rows themselves as they were written.
#[tracing::instrument(skip_all, fields(rows = ids.len()))]
pub async fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    sqlx::query("delete from outbox_to_publish where outbox_id = any($1)")
        .bind(ids)
        .execute_counting(conn)
        .await
}

/// Fans out the oldest `limit` outbox rows not yet fanned out (those in `outbox_to_fan_out`), in
/// the caller's transaction: claims their ids `for update skip locked`, creates one pending
/// delivery (its first attempt due at `due_at`) for every enabled subscription of the row's
/// tenant whose filters match and that existed when the change was written, and takes the ids
/// out of the set. Running it twice for a row creates nothing new. The ids are taken first and
/// their rows looked up by primary key, as in [`claim_unpublished`].
#[tracing::instrument(skip_all, fields(limit = limit))]
pub async fn fan_out_pending(
    conn: &mut PgConnection,
    limit: u32,
    due_at: DateTime<Utc>,
) -> Result<FanOutReport, StoreError> {
    // Which rows some subscription still wants (one may have been disabled since the merge),
    // so that payloads are read and cross the network only for those. An id whose row is gone
    // is wanted by nobody, and leaves the set.
    let rows = sqlx::query(&format!(
        "with f as ({ids})
         select f.outbox_id, o.id, o.tenant, o.carrier, o.event_id, o.new_status, o.version,
                o.created_at, o.traceparent, coalesce(w.wanted, false) as wanted,
                case when w.wanted then o.payload::text end as payload
         from f
         left join outbox o on o.id = f.outbox_id
         left join lateral (select exists (select 1 from subscriptions s
                                           where {MATCHES}) as wanted) w on o.id is not null
         order by f.outbox_id",
        ids = oldest_ids("outbox_to_fan_out"),
        MATCHES = matches_clause("o.tenant", "o.carrier", "o.new_status", "o.created_at"),
    ))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(FanOutReport::default());
    }
    let mut claimed = Vec::with_capacity(rows.len());
    let mut wanted = Vec::new();
    for row in &rows {
        claimed.push(row.try_get::<i64, _>("outbox_id")?);
        if row.try_get::<bool, _>("wanted")? {
            wanted.push(outbox_entry(row, None)?);
        }
    }
    let outbox_ids: Vec<i64> = wanted.iter().map(|e| e.id).collect();
    let tenants: Vec<&str> = wanted.iter().map(|e| e.tenant.as_str()).collect();
    let carriers: Vec<&str> = wanted.iter().map(|e| e.carrier.as_str()).collect();
    let statuses: Vec<&str> = wanted.iter().map(|e| e.new_status.as_str()).collect();
    let created: Vec<DateTime<Utc>> = wanted.iter().map(|e| e.created_at).collect();
    let ids: Vec<String> = wanted.iter().map(OutboxEntry::message_id).collect();
    let bodies: Vec<&[u8]> = wanted.iter().map(|e| e.body.as_slice()).collect();
    let traceparents: Vec<Option<&str>> = wanted.iter().map(|e| e.traceparent.as_deref()).collect();
    let counts = sqlx::query(&format!(
        "with i as (
             select * from unnest($1::int8[], $2::text[], $3::text[], $4::text[],
                                  $5::timestamptz[], $6::text[], $7::bytea[], $10::text[])
                 as i(outbox_id, tenant, carrier, status, created_at, webhook_id, body,
                      traceparent)),
         inserted as (
             insert into deliveries (subscription_id, outbox_id, tenant, webhook_id, body,
                                     next_attempt_at, traceparent)
             select s.id, i.outbox_id, i.tenant, i.webhook_id, i.body, $8, i.traceparent
             from i join subscriptions s on {MATCHES}
             order by i.outbox_id, s.id
             on conflict (subscription_id, outbox_id) do nothing
             returning 1),
         marked as (
             delete from outbox_to_fan_out where outbox_id = any($9) returning 1)
         select (select count(*) from inserted) as deliveries,
                (select count(*) from marked) as rows",
        MATCHES = matches_clause("i.tenant", "i.carrier", "i.status", "i.created_at"),
    ))
    .bind(outbox_ids)
    .bind(tenants)
    .bind(carriers)
    .bind(statuses)
    .bind(created)
    .bind(ids)
    .bind(bodies)
    .bind(due_at)
    .bind(claimed)
    .bind(traceparents)
    .fetch_one(conn)
    .await?;
    Ok(FanOutReport {
        rows: count(&counts, "rows")?,
        deliveries: count(&counts, "deliveries")?,
        traceparents: wanted.into_iter().filter_map(|e| e.traceparent).collect(),
    })
}

/// What one [`prune`] pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Outbox rows.
    pub outbox: u64,
    /// Deliveries.
    pub deliveries: u64,
}

/// Deletes up to `limit` outbox rows written before `before`, published and fanned out, and
/// up to `limit` deliveries delivered before `before`, oldest first. Outbox rows still to be
/// published or fanned out, pending deliveries and dead ones (kept for `waybill deliveries
/// replay`) stay, whatever their age. Rows another transaction holds are skipped. A delivery
/// carries its own body, so pruning the outbox loses nothing a dead delivery needs.
///
/// The outbox is read in id order only up to its first row written since `before` (found from
/// the oldest end of the primary key), so a pass that finds nothing old reads a few index
/// entries instead of the whole week's outbox.
#[tracing::instrument(skip_all, fields(limit = limit))]
pub async fn prune(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
    limit: u32,
) -> Result<Pruned, StoreError> {
    let row = sqlx::query(
        "with old_outbox as (
             select o.id from outbox o
             where o.id < coalesce((select min(young.id) from outbox young
                                    where young.created_at >= $1),
                                   9223372036854775807)
               and o.created_at < $1
               and not exists (select 1 from outbox_to_publish p where p.outbox_id = o.id)
               and not exists (select 1 from outbox_to_fan_out f where f.outbox_id = o.id)
             order by o.id
             limit $2
             for update of o skip locked),
         deleted_outbox as (
             delete from outbox o using old_outbox old where o.id = old.id returning 1),
         old_deliveries as (
             select id from deliveries
             where status = 'delivered' and delivered_at < $1
             order by delivered_at
             limit $2
             for update skip locked),
         deleted_deliveries as (
             delete from deliveries d using old_deliveries old where d.id = old.id returning 1)
         select (select count(*) from deleted_outbox) as outbox,
                (select count(*) from deleted_deliveries) as deliveries",
    )
    .bind(before)
    .bind(i64::from(limit))
    .fetch_one(conn)
    .await?;
    Ok(Pruned {
        outbox: count(&row, "outbox")?,
        deliveries: count(&row, "deliveries")?,
    })
}

/// Outbox rows not yet published and not yet fanned out (for `/metrics`, tests and benchmarks).
pub async fn relay_backlog(conn: &mut PgConnection) -> Result<(u64, u64), StoreError> {
    let row = sqlx::query(
        "select (select count(*) from outbox_to_publish) as unpublished,
                (select count(*) from outbox_to_fan_out) as not_fanned_out",
    )
    .fetch_one(conn)
    .await?;
    Ok((count(&row, "unpublished")?, count(&row, "not_fanned_out")?))
}

/// The entry of a claimed row; `kept`: its body as this process's merge encoded it, when kept
/// (its payload was then not selected).
fn outbox_entry(row: &PgRow, kept: Option<Vec<u8>>) -> Result<OutboxEntry, StoreError> {
    let tenant: String = row.try_get("tenant")?;
    let carrier: String = row.try_get("carrier")?;
    let event_id: String = row.try_get("event_id")?;
    let status: String = row.try_get("new_status")?;
    let (event_type, body) = match kept {
        // The merge writes status changes only.
        Some(body) => (StatusChangedV1::TYPE.to_owned(), body),
        None => OutboxEntry::encode(row.try_get("payload")?),
    };
    Ok(OutboxEntry {
        id: row.try_get("id")?,
        tenant: TenantId::parse(&tenant).map_err(|e| StoreError::corrupt("outbox.tenant", e))?,
        carrier: CarrierCode::parse(&carrier)
            .map_err(|e| StoreError::corrupt("outbox.carrier", e))?,
        event_id: parse_event_id(&event_id)?,
        new_status: parse_status(&status)?,
        version: row.try_get("version")?,
        event_type,
        body,
        created_at: row.try_get("created_at")?,
        traceparent: row.try_get("traceparent")?,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn entry() -> OutboxEntry {
        OutboxEntry {
            id: 1,
            tenant: TenantId::default_tenant(),
            carrier: CarrierCode::parse("ups").unwrap(),
            event_id: EventId::parse("9daf98e69d8e027aa47249f74e25e84d").unwrap(),
            new_status: Status::Delivered,
            version: 4,
            event_type: "shipment.status_changed".to_owned(),
            body: Vec::new(),
            created_at: Utc.timestamp_opt(1_780_000_000, 0).unwrap(),
            traceparent: None,
        }
    }

    #[test]
    fn the_message_id_names_the_event_and_the_version() {
        assert_eq!(
            entry().message_id(),
            "msg_9daf98e69d8e027aa47249f74e25e84d_4"
        );
    }

    #[test]
    fn bodies_put_the_type_first_and_pass_unknown_types_through() {
        let known = serde_json::json!({
            "type": "shipment.status_changed",
            "version": 1,
            "event_id": "9daf98e69d8e027aa47249f74e25e84d",
            "shipment": {"tenant": "default", "carrier": "ups", "tracking_number": "1Z9",
                         "order_number": null},
            "previous_status": null,
            "new_status": "Delivered",
            "raw_status": {"code": "D"},
            "occurred_at": "2026-05-28T20:26:40Z",
            "shipment_version": 4,
            "recent_history": []
        });
        // As Postgres prints `jsonb`: keys by length, then bytewise, a space after each colon.
        let printed = r#"{"type": "shipment.status_changed", "version": 1, "event_id": "9daf98e69d8e027aa47249f74e25e84d", "shipment": {"tenant": "default", "carrier": "ups", "order_number": null, "tracking_number": "1Z9"}, "raw_status": {"code": "D"}, "new_status": "Delivered", "occurred_at": "2026-05-28T20:26:40Z", "recent_history": [], "previous_status": null, "shipment_version": 4}"#;
        let (kind, body) = OutboxEntry::encode(printed);
        assert_eq!(kind, "shipment.status_changed");
        let body = String::from_utf8(body).unwrap();
        assert!(body.starts_with(r#"{"type":"shipment.status_changed","version":1,"#));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            known
        );
        assert_eq!(OutboxEntry::encode(&known.to_string()).1, body.as_bytes());

        let future = r#"{"type": "shipment.teleported", "version": 9}"#;
        assert_eq!(
            OutboxEntry::encode(future),
            (
                "shipment.teleported".to_owned(),
                br#"{"type":"shipment.teleported","version":9}"#.to_vec()
            )
        );
        // A known type whose fields this binary cannot read is passed on too, compacted.
        assert_eq!(
            OutboxEntry::encode(r#"{"type": "shipment.status_changed", "version": 2}"#),
            (
                "shipment.status_changed".to_owned(),
                br#"{"type":"shipment.status_changed","version":2}"#.to_vec()
            )
        );
        assert_eq!(OutboxEntry::encode("[1]").0, "unknown");
    }
}
