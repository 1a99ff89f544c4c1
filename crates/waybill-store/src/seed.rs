//! Stored history for `waybill-bench seed` and `bench --stored-events`: millions of shipments
//! with their tracking events, written set-based (`generate_series`, one `insert … select` per
//! range of shipments) as the merge would have left them, so the worker and the read API meet a
//! table of realistic size and shape.
//!
//! **What a seeded shipment looks like.** Shipment `i` of a [`SeedPlan`] is
//! `(tenant, carrier, prefix + i as 10 digits)`, order number `O-` + its tracking number, created
//! by its first webhook. Its events follow each other 8 hours apart (less when histories are so
//! long they would not fit; plus a jitter) from a start spread over 90 to 10 days before the
//! plan's anchor: `InfoReceived` (Starshipit's `Printed`, no location), `InTransit`
//! (`Dispatched`, then `InTransit`, at one of eight depots)… For eight shipments in ten the last
//! two are `OutForDelivery` and `Delivered`; one in ten ends out for delivery, one in transit.
//! Every event id is the real one ([`waybill_core::EventId::compute`], recomputed in SQL), so a
//! webhook replaying a seeded scan is a duplicate. The shipment row holds what merging the
//! events one at a time, in time order, leaves: the last event current, `version` the number of
//! events, `last_event_at` its time. Seeded shipments are already past the poll scheduler
//! (`poll_state` `done` when delivered, else `off`), so no worker polls a courier for them.
//!
//! **Idempotent.** Shipments are inserted with `on conflict do nothing` and events only for the
//! shipments the same statement inserted, each range in one statement: seeding the same plan
//! again, or after an interruption, writes only what is missing. A range whose shipments are all
//! there already is skipped after counting them, so seeding a big table again is quick.

use std::ops::Range;

use chrono::{DateTime, Utc};
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection, Row};
use waybill_core::{CarrierCode, TenantId};

use crate::StoreError;

/// How many seeded shipments there can be: the index takes 10 digits of the tracking number.
pub const MAX_SHIPMENTS: u64 = 10_000_000_000;

/// The longest tracking-number prefix, so prefix and index fit a tracking number.
pub const MAX_PREFIX_LEN: usize = 24;

/// Room left after the last start for the longest history, in seconds (10 days).
const HISTORY_ROOM_SECS: i64 = 10 * 86_400;

/// The usual time between two scans of a shipment, in seconds.
const USUAL_STEP_SECS: i64 = 8 * 3_600;

/// Which shipments and events to seed.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    tenant: TenantId,
    carrier: CarrierCode,
    source: Option<String>,
    prefix: String,
    events: u64,
    shipments: u64,
    anchor: DateTime<Utc>,
}

/// What seeding one range of shipments wrote (nothing for shipments that already existed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeededRows {
    /// Shipments inserted.
    pub shipments: u64,
    /// Tracking events inserted.
    pub events: u64,
}

/// Rows and on-disk size (heap, indexes and TOAST: `pg_total_relation_size`) of the two tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// Rows in `shipments`.
    pub shipments: u64,
    /// Bytes of `shipments` with its indexes.
    pub shipments_bytes: u64,
    /// Rows in `tracking_events`.
    pub events: u64,
    /// Bytes of `tracking_events` with its indexes.
    pub events_bytes: u64,
}

impl SeedPlan {
    /// `events` events over `shipments` shipments of `tenant` and `carrier`, first reported by
    /// `source`, tracking numbers starting with `prefix` (ASCII letters and digits, upper-cased),
    /// times counted back from `anchor` (truncated to whole seconds). Every shipment gets at
    /// least one event.
    pub fn new(
        tenant: TenantId,
        carrier: CarrierCode,
        source: Option<String>,
        prefix: &str,
        (events, shipments): (u64, u64),
        anchor: DateTime<Utc>,
    ) -> Result<SeedPlan, StoreError> {
        let prefix = prefix.to_ascii_uppercase();
        if prefix.is_empty()
            || prefix.len() > MAX_PREFIX_LEN
            || !prefix.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(StoreError::Invalid(
                "a seed prefix is 1 to 24 ASCII letters and digits",
            ));
        }
        if shipments == 0 || shipments > MAX_SHIPMENTS {
            return Err(StoreError::Invalid(
                "seed between 1 and 10,000,000,000 shipments",
            ));
        }
        if events < shipments || events > i64::MAX as u64 {
            return Err(StoreError::Invalid(
                "seed at least one event per shipment (events ≥ shipments)",
            ));
        }
        let anchor = DateTime::from_timestamp(anchor.timestamp(), 0).unwrap_or(anchor);
        Ok(SeedPlan {
            tenant,
            carrier,
            source,
            prefix,
            events,
            shipments,
            anchor,
        })
    }

    /// Events in the plan.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Shipments in the plan.
    pub fn shipments(&self) -> u64 {
        self.shipments
    }

    /// The seeded shipments' tenant.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The seeded shipments' carrier.
    pub fn carrier(&self) -> &CarrierCode {
        &self.carrier
    }

    /// The tracking number of shipment `index`.
    pub fn tracking_number(&self, index: u64) -> String {
        format!("{}{index:010}", self.prefix)
    }

    /// The order number of shipment `index`.
    pub fn order_number(&self, index: u64) -> String {
        format!("O-{}", self.tracking_number(index))
    }

    /// How many events shipment `index` gets: the average, the remainder spread over the first
    /// shipments, and in each whole group of four −2, −1, +1, +2 when the average is 3 or more
    /// (so histories vary in length and the total stays exact). [`seed_range`] computes the
    /// same in SQL.
    pub fn events_of(&self, index: u64) -> u64 {
        let (base, remainder, whole_groups) = self.distribution();
        let mut count = base + u64::from(index < remainder);
        if base >= 3 && index < whole_groups {
            count = match index % 4 {
                0 => count - 2,
                1 => count - 1,
                2 => count + 1,
                _ => count + 2,
            };
        }
        count
    }

    /// A bound on the longest history in the plan (exact unless the remainder is under 4).
    pub fn longest_history(&self) -> u64 {
        let (base, remainder, whole_groups) = self.distribution();
        base + u64::from(remainder > 0) + if base >= 3 && whole_groups > 0 { 2 } else { 0 }
    }

    /// `(average, remainder, shipments in whole groups of four)`.
    fn distribution(&self) -> (u64, u64, u64) {
        (
            self.events / self.shipments,
            self.events % self.shipments,
            self.shipments - self.shipments % 4,
        )
    }

    /// Seconds between two scans: 8 hours, or less so the longest history fits in 10 days.
    fn step_secs(&self) -> i64 {
        let longest = i64::try_from(self.longest_history()).unwrap_or(i64::MAX);
        USUAL_STEP_SECS
            .min(HISTORY_ROOM_SECS / longest.max(1))
            .max(2)
    }
}

/// A session of its own for seeding `url`: without the store's statement timeout (one range of
/// a big seed takes longer) and without slow-statement warnings, with memory to sort a range's
/// events in.
pub async fn connect(url: &str) -> Result<PgConnection, StoreError> {
    let options = PgConnectOptions::from_str(url)?
        .application_name("waybill-seed")
        .options([("statement_timeout", "0"), ("work_mem", "256MB")])
        .disable_statement_logging();
    Ok(options.connect().await?)
}

/// Seeds the shipments `range` of `plan` and their events in one statement (see the module
/// documentation); shipments that already exist are left as they are, with their events.
pub async fn seed_range(
    conn: &mut PgConnection,
    plan: &SeedPlan,
    range: Range<u64>,
) -> Result<SeededRows, StoreError> {
    let end = range.end.min(plan.shipments);
    if range.start >= end {
        return Ok(SeededRows::default());
    }
    let to_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    // Counting the range's shipments through the unique index takes milliseconds; building the
    // range's events to find them all present takes seconds. Seeding a big table again, after
    // an interruption or before another benchmark on it, skips the ranges it holds whole.
    let present: i64 = sqlx::query_scalar(
        "select count(*) from shipments
         where tenant = $1 and carrier = $2 and tracking_number between $3 and $4
           and length(tracking_number) = length($3)",
    )
    .bind(plan.tenant.as_str())
    .bind(plan.carrier.as_str())
    .bind(plan.tracking_number(range.start))
    .bind(plan.tracking_number(end - 1))
    .fetch_one(&mut *conn)
    .await?;
    if present == to_i64(end - range.start) {
        return Ok(SeededRows::default());
    }
    let (base, remainder, whole_groups) = plan.distribution();
    let row = sqlx::query(SEED_RANGE)
        .bind(to_i64(range.start))
        .bind(to_i64(end - 1))
        .bind(to_i64(base))
        .bind(to_i64(remainder))
        .bind(to_i64(whole_groups))
        .bind(plan.step_secs())
        .bind(plan.anchor)
        .bind(&plan.prefix)
        .bind(plan.tenant.as_str())
        .bind(plan.carrier.as_str())
        .bind(plan.source.as_deref())
        .fetch_one(&mut *conn)
        .await?;
    Ok(SeededRows {
        shipments: count(&row, "shipments")?,
        events: count(&row, "events")?,
    })
}

/// The `int8` `column` of `row` as a count (a negative value, which a count never is, as 0).
fn count(row: &sqlx::postgres::PgRow, column: &str) -> Result<u64, StoreError> {
    let value: i64 = row.try_get(column)?;
    Ok(u64::try_from(value).unwrap_or(0))
}

/// Vacuums and analyzes both tables, so the planner and the visibility map know the seeded
/// rows before anything is measured.
pub async fn vacuum_analyze(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("vacuum analyze shipments, tracking_events")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Rows and on-disk size of `shipments` and `tracking_events` (rows counted exactly; the
/// events' size is the sum over their partitions).
pub async fn table_sizes(conn: &mut PgConnection) -> Result<TableSizes, StoreError> {
    let row = sqlx::query(
        "select (select count(*) from shipments) as shipments,
                pg_total_relation_size('shipments') as shipments_bytes,
                (select count(*) from tracking_events) as events,
                (select sum(pg_total_relation_size(relid))::int8
                 from pg_partition_tree('tracking_events')) as events_bytes",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(TableSizes {
        shipments: count(&row, "shipments")?,
        shipments_bytes: count(&row, "shipments_bytes")?,
        events: count(&row, "events")?,
        events_bytes: count(&row, "events_bytes")?,
    })
}

/// One range of a seed. Parameters: $1 first and $2 last shipment index, $3 average events per
/// shipment, $4 remainder, $5 shipments in whole groups of four, $6 seconds between scans,
/// $7 anchor, $8 prefix, $9 tenant, $10 carrier, $11 source.
///
/// `shipment` lays out each shipment (its event count as [`SeedPlan::events_of`], its class:
/// 0–7 delivered, 8 out for delivery, 9 in transit); `scan` its events; `event` adds Starshipit's
/// raw status and the event id by the recipe of [`waybill_core::EventId::compute`] (the epoch
/// seconds, the location lower-cased with white space folded). `created` inserts the shipments
/// from their last (current) event and returns those that were new; their events follow.
const SEED_RANGE: &str = r#"
with shipment as (
    select i,
           $8 || lpad(i::text, 10, '0') as tracking_number,
           $3 + (i < $4)::int4
              + case when $3 >= 3 and i < $5 then (array[-2, -1, 1, 2])[(i % 4 + 1)::int4] else 0 end
               as events,
           i % 10 as class,
           $7 - interval '90 days' + make_interval(secs => (i * 2654435761) % (80 * 86400))
               as started_at
    from generate_series($1::int8, $2::int8) as i
), scan as (
    select s.tracking_number, s.events, n.step,
           -- The shipment was created when its first event was received.
           s.started_at + make_interval(secs => (s.i * 31 + 17) % 100 + 20) as created_at,
           s.started_at + make_interval(secs => (n.step - 1) * $6
               + case when n.step = 1 then 0 else (s.i * 7919 + n.step * 104729) % ($6 / 2) end)
               as occurred_at,
           (s.i * 31 + n.step * 17) % 100 + 20 as received_after,
           case when n.step = s.events and s.events > 1 and s.class < 8 then 'Delivered'
                when n.step = 1 then 'InfoReceived'
                when n.step = s.events - 1 and s.class < 8 then 'OutForDelivery'
                when n.step = s.events and s.class = 8 then 'OutForDelivery'
                else 'InTransit' end as status,
           (array['Sydney NSW', 'Melbourne VIC', 'Brisbane QLD', 'Perth WA', 'Adelaide SA',
                  'Canberra ACT', 'Hobart TAS', 'Darwin NT'])[((s.i + n.step) % 8 + 1)::int4] as depot
    from shipment s
    cross join lateral generate_series(1, s.events) as n(step)
), event as (
    select c.*,
           c.occurred_at + make_interval(secs => c.received_after) as received_at,
           left(encode(sha256(convert_to(
               'waybill.event.v1' || chr(31) || $10 || chr(31) || c.tracking_number || chr(31)
               || floor(extract(epoch from c.occurred_at))::int8::text || chr(31)
               || c.raw_status || chr(31)
               || coalesce(regexp_replace(lower(btrim(c.location)), '\s+', ' ', 'g'), ''),
               'UTF8')), 'hex'), 32) as event_id
    from (select scan.*,
                 case scan.status when 'InfoReceived' then 'Printed'
                                  when 'InTransit' then case when scan.step = 2 then 'Dispatched'
                                                             else 'InTransit' end
                                  else scan.status end as raw_status,
                 case when scan.status = 'InfoReceived' then null else scan.depot end as location
          from scan) as c
), created as (
    insert into shipments (tenant, carrier, tracking_number, order_number, source, registered,
                           current_event_id, current_event_at, status, raw_status,
                           last_event_at, version, created_at, updated_at, last_webhook_at,
                           poll_state)
    select $9, $10, e.tracking_number, 'O-' || e.tracking_number, $11, false,
           e.event_id, e.occurred_at, e.status, e.raw_status,
           e.occurred_at, e.events, e.created_at, e.received_at, e.received_at,
           case when e.status = 'Delivered' then 'done' else 'off' end
    from event e
    where e.step = e.events
    on conflict (tenant, carrier, tracking_number) do nothing
    returning id, tracking_number
), inserted as (
    insert into tracking_events (shipment_id, event_id, tenant, status, raw_status, occurred_at,
                                 time_provenance, location, origin, courier, received_at,
                                 stored_at)
    select c.id, e.event_id, $9, e.status, e.raw_status, e.occurred_at,
           '{"kind": "explicit_offset"}'::jsonb, e.location, 'webhook', 'Australia Post',
           e.received_at, e.received_at
    from event e
    join created c on c.tracking_number = e.tracking_number
    order by c.id, e.event_id
    returning 1
)
select (select count(*) from created) as shipments, (select count(*) from inserted) as events
"#;
