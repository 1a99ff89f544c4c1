//! The statements of a batch merge, one function per round trip. Every multi-row statement takes
//! parallel arrays and `unnest`s them, so a batch costs the same handful of round trips whether
//! it holds one event or five hundred.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Row};
use waybill_core::{EventKey, RawStatus, TrackingEvent};

use super::plan::{LOCK_NAMESPACE, Plan, PlannedEvent};
use crate::batch::key_columns;
use crate::error::StoreError;
use crate::fetch::RunQuery;
use waybill_api::events::{HistoryEntryV1, ScanV1, StatusChangedV1};

use crate::decode::{
    HISTORY_ENTRY_COLUMNS, history_entry_v1, parse_event_id, parse_origin, parse_status,
};
use crate::outbox::NewOutboxRow;

/// Takes the per-shipment advisory locks, in the order given (sorted by the caller). Held until
/// the transaction ends. They serialise batches that touch the same shipment *including* one
/// that does not exist yet, which row locks cannot: without them, a batch parking an event for
/// an unknown shipment and a batch registering that shipment could each miss the other's
/// uncommitted row and leave the event parked forever.
pub(super) async fn lock_keys(conn: &mut PgConnection, lock_ids: &[i32]) -> Result<(), StoreError> {
    sqlx::query("select pg_advisory_xact_lock($1, k) from unnest($2::int4[]) as k")
        .bind(LOCK_NAMESPACE)
        .bind(lock_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Applies the batch's registrations, creating shipments as needed, in key order. Returns the
/// ids of rows inserted or changed (the shipments whose parked events must be pulled in), each
/// with whether it was inserted.
pub(super) async fn register_shipments(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
) -> Result<HashMap<i64, bool>, StoreError> {
    let mut tenants = Vec::new();
    let mut carriers = Vec::new();
    let mut tracking_numbers = Vec::new();
    let mut order_numbers = Vec::new();
    let mut metadata = Vec::new();
    let mut sources = Vec::new();
    for shipment in &plan.shipments {
        let Some(registration) = &shipment.registration else {
            continue;
        };
        tenants.push(shipment.key.tenant.as_str());
        carriers.push(shipment.key.carrier.as_str());
        tracking_numbers.push(shipment.key.tracking_number.as_str());
        order_numbers.push(registration.order_number.as_deref());
        metadata.push(Json(&registration.metadata));
        // The registration's source, else the source of the batch's first event for it.
        sources.push(
            registration
                .source
                .as_ref()
                .or(shipment.source.as_ref())
                .map(|s| s.as_str()),
        );
    }
    if tenants.is_empty() {
        return Ok(HashMap::new());
    }
    // Updates only when the registration changes something, so a repeated registration writes
    // nothing; `on conflict do update` locks the existing row either way, in `order by` order.
    let rows = sqlx::query(
        "insert into shipments
             (tenant, carrier, tracking_number, registered, order_number, metadata, source)
         select tenant, carrier, tracking_number, true, order_number, metadata, source
         from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[])
             as t(tenant, carrier, tracking_number, order_number, metadata, source)
         order by tenant, carrier, tracking_number
         on conflict (tenant, carrier, tracking_number) do update set
             registered = true,
             order_number = coalesce(excluded.order_number, shipments.order_number),
             metadata = shipments.metadata || excluded.metadata,
             source = coalesce(shipments.source, excluded.source),
             updated_at = now()
         where not shipments.registered
            or coalesce(excluded.order_number, shipments.order_number)
                   is distinct from shipments.order_number
            or shipments.metadata || excluded.metadata is distinct from shipments.metadata
            or (shipments.source is null and excluded.source is not null)
         returning id, (xmax = 0) as inserted",
    )
    .bind(tenants)
    .bind(carriers)
    .bind(tracking_numbers)
    .bind(order_numbers)
    .bind(metadata)
    .bind(sources)
    .fetch_all(conn)
    .await?;
    // `xmax = 0`: the row version was made by the insert, not by the conflict update (which
    // stamps it with this transaction's id).
    rows.iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("inserted")?)))
        .collect()
}

/// Newest first in exactly the merge's order ([`EventKey`]: time, status rank, then event id
/// compared bytewise like Rust's `String`, whatever the database's collation), so that "the
/// newest five" is the same set in SQL and in memory even when times and ranks tie.
static NEWEST_FIRST_EXACT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "e.occurred_at desc, {} desc, e.event_id collate \"C\" desc",
        crate::fragments::status_rank_sql("e.status")
    )
});

/// What [`lock_load_create`] found and did.
pub(super) struct LockLoad {
    /// The batch's shipments that exist now, existing ones with their stored state and newest
    /// events, created ones empty. In no particular order.
    pub locked: Vec<LockedShipment>,
    /// The ids of the shipments this statement created.
    pub created: HashSet<i64>,
    /// The plan shipments to create that some writer outside the advisory-lock protocol
    /// inserted meanwhile (`on conflict do nothing` skipped them): the caller locks them.
    pub conflicted: Vec<usize>,
    /// Events parked for the created shipments, taken out of `unmatched_events`.
    pub pulled: Vec<PulledEvent>,
}

/// The columns of the newest stored events, as the lock statement returns them.
const RECENT_COLUMNS: [&str; 9] = [
    "event_id",
    "status",
    "raw_status",
    "raw_status_description",
    "sub_status",
    "occurred_at",
    "location",
    "message",
    "origin",
];

/// One round trip for what used to take three: locks the batch's existing shipments `for no
/// key update` in key order and loads their merge state, their newest stored events (what an
/// outbox row's `recent_history` needs, before this batch's events) and — only for a shipment
/// some batch event is not newer than — the keys of its whole stored history; creates the
/// missing shipments the batch's events create (key order, after the locks, as before); and
/// takes the events parked for the created shipments out of `unmatched_events`.
///
/// `min_at[i]` is the oldest `occurred_at` among plan shipment `i`'s events (`None` if it has
/// none: its stored events are then not loaded). Runs after the advisory locks, so its snapshot
/// sees everything the previous holder of any of these keys committed; all sub-statements share
/// that snapshot, so a row some writer outside the protocol inserted after it is neither locked
/// nor created here but reported in `conflicted`, exactly as the separate statements did.
pub(super) async fn lock_load_create(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
    min_at: &[Option<DateTime<Utc>>],
) -> Result<LockLoad, StoreError> {
    let keys = PlanKeys::of(plan);
    let rows = sqlx::query(LOCK_LOAD_CREATE.as_str())
        .bind(keys.tenants)
        .bind(keys.carriers)
        .bind(keys.tracking_numbers)
        .bind(keys.plan_indexes)
        .bind(keys.creates)
        .bind(keys.sources)
        .bind(min_at)
        .fetch_all(conn)
        .await?;
    let mut result = decode_lock_load(&rows)?;
    result.conflicted = conflicted(plan, &result.locked);
    Ok(result)
}

/// The statement of [`lock_load_create`]; its rows are of three kinds: 0 a locked shipment
/// with its state and newest events, 1 a created shipment, 2 an event pulled for one.
static LOCK_LOAD_CREATE: LazyLock<String> = LazyLock::new(|| {
    let recent_aggregates = RECENT_COLUMNS
        .iter()
        .map(|column| format!("array_agg(e.{column}) as r_{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    let recent_columns = RECENT_COLUMNS
        .iter()
        .map(|column| format!("e.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    let recent_nulls = RECENT_COLUMNS
        .iter()
        .map(|column| {
            let kind = if *column == "occurred_at" {
                "timestamptz"
            } else {
                "text"
            };
            format!("null::{kind}[]")
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "with k as (
             select * from unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::bool[],
                                  $6::text[], $7::timestamptz[])
                 as k(tenant, carrier, tracking_number, plan_index, creates, source, min_at)
         ),
         locked as (
             select k.plan_index, k.min_at, s.id, s.version, s.current_event_id,
                    s.current_event_at, s.status, s.last_event_at, s.order_number,
                    (s.last_webhook_at is null
                     or s.last_webhook_at < now() - interval '1 minute') as webhook_stale
             from k
             join shipments s on s.tenant = k.tenant
                             and s.carrier = k.carrier
                             and s.tracking_number = k.tracking_number
             order by s.tenant, s.carrier, s.tracking_number
             for no key update of s
         ),
         created as (
             insert into shipments (tenant, carrier, tracking_number, source)
             select k.tenant, k.carrier, k.tracking_number, k.source from k
             where k.creates
               and not exists (select from locked l where l.plan_index = k.plan_index)
             order by k.tenant, k.carrier, k.tracking_number
             on conflict (tenant, carrier, tracking_number) do nothing
             returning id, tenant, carrier, tracking_number
         ),
         pulled as (
             delete from unmatched_events u
             using created c
             where u.tenant = c.tenant and u.carrier = c.carrier
               and u.tracking_number = c.tracking_number
             returning c.id as shipment_id, u.event, u.source, u.received_at
         )
         select 0 as kind, l.plan_index, l.id, l.version, l.current_event_id,
                l.current_event_at, l.status, l.last_event_at, l.order_number,
                l.webhook_stale,
                l.min_at is not null as recent_loaded, {recent_select},
                coalesce(l.min_at <= l.last_event_at, false) as keys_loaded,
                h.h_ids, h.h_ats, h.h_statuses,
                null::jsonb as event, null::text as source, null::timestamptz as received_at
         from locked l
         cross join lateral (
             select {recent_aggregates}
             from (select {recent_columns} from tracking_events e
                   where e.shipment_id = l.id and l.min_at is not null
                   order by {order} limit {limit}) e
         ) r
         cross join lateral (
             select array_agg(e.event_id) as h_ids, array_agg(e.occurred_at) as h_ats,
                    array_agg(e.status) as h_statuses
             from tracking_events e
             where e.shipment_id = l.id and l.min_at <= l.last_event_at
         ) h
         union all
         select 1, k.plan_index, c.id, null, null, null, null, null, null, null,
                false, {recent_nulls}, false, null, null, null, null, null, null
         from created c
         join k on k.tenant = c.tenant and k.carrier = c.carrier
               and k.tracking_number = c.tracking_number
         union all
         select 2, null, p.shipment_id, null, null, null, null, null, null, null,
                false, {recent_nulls}, false, null, null, null, p.event, p.source,
                p.received_at
         from pulled p",
        recent_select = RECENT_COLUMNS
            .iter()
            .map(|column| format!("r.r_{column}"))
            .collect::<Vec<_>>()
            .join(", "),
        order = NEWEST_FIRST_EXACT.as_str(),
        limit = waybill_api::events::RECENT_HISTORY_LEN,
    )
});

/// The plan's shipment keys as the parallel arrays [`lock_load_create`] binds.
struct PlanKeys<'p> {
    tenants: Vec<&'p str>,
    carriers: Vec<&'p str>,
    tracking_numbers: Vec<&'p str>,
    plan_indexes: Vec<i64>,
    creates: Vec<bool>,
    sources: Vec<Option<&'p str>>,
}

impl<'p> PlanKeys<'p> {
    fn of(plan: &'p Plan<'_>) -> PlanKeys<'p> {
        let len = plan.shipments.len();
        let mut keys = PlanKeys {
            tenants: Vec::with_capacity(len),
            carriers: Vec::with_capacity(len),
            tracking_numbers: Vec::with_capacity(len),
            plan_indexes: Vec::with_capacity(len),
            creates: Vec::with_capacity(len),
            sources: Vec::with_capacity(len),
        };
        for (index, shipment) in plan.shipments.iter().enumerate() {
            keys.tenants.push(shipment.key.tenant.as_str());
            keys.carriers.push(shipment.key.carrier.as_str());
            keys.tracking_numbers
                .push(shipment.key.tracking_number.as_str());
            keys.plan_indexes.push(index as i64);
            keys.creates.push(shipment.creates);
            keys.sources
                .push(shipment.source.as_ref().map(|s| s.as_str()));
        }
        keys
    }
}

/// The rows of [`LOCK_LOAD_CREATE`] as locked and created shipments and pulled events (the
/// `conflicted` list is left empty for the caller).
fn decode_lock_load(rows: &[PgRow]) -> Result<LockLoad, StoreError> {
    let mut result = LockLoad {
        locked: Vec::with_capacity(rows.len()),
        created: HashSet::new(),
        conflicted: Vec::new(),
        pulled: Vec::new(),
    };
    let mut plan_index_of: HashMap<i64, usize> = HashMap::new();
    let mut pulled_rows = Vec::new();
    for row in rows {
        let kind: i32 = row.try_get("kind")?;
        match kind {
            0 => {
                let mut shipment = locked_from_row(row)?;
                if row.try_get("recent_loaded")? {
                    shipment.stored = Some(stored_from_row(row)?);
                }
                result.locked.push(shipment);
            }
            1 => {
                let plan_index = plan_index_from_row(row)?;
                let id: i64 = row.try_get("id")?;
                plan_index_of.insert(id, plan_index);
                result.created.insert(id);
                result.locked.push(LockedShipment::created(plan_index, id));
            }
            _ => pulled_rows.push(row),
        }
    }
    // A pulled event belongs to a shipment created by the same statement.
    for row in pulled_rows {
        let shipment_id: i64 = row.try_get("id")?;
        let plan_index = plan_index_of
            .get(&shipment_id)
            .copied()
            .ok_or_else(|| StoreError::corrupt("pulled event", "of a shipment not created"))?;
        result.pulled.push(pulled_from_row(row, plan_index)?);
    }
    Ok(result)
}

/// The plan shipments to create that are neither locked nor created: some writer outside the
/// advisory-lock protocol inserted them meanwhile.
fn conflicted(plan: &Plan<'_>, locked: &[LockedShipment]) -> Vec<usize> {
    let mut present = vec![false; plan.shipments.len()];
    for shipment in locked {
        present[shipment.plan_index] = true;
    }
    plan.shipments
        .iter()
        .enumerate()
        .filter(|(index, shipment)| shipment.creates && !present[*index])
        .map(|(index, _)| index)
        .collect()
}

fn plan_index_from_row(row: &PgRow) -> Result<usize, StoreError> {
    let plan_index: i64 = row.try_get("plan_index")?;
    usize::try_from(plan_index).map_err(|_| StoreError::corrupt("plan index", plan_index))
}

/// A locked shipment's state from a row of [`lock_shipments`] or [`lock_load_create`].
fn locked_from_row(row: &PgRow) -> Result<LockedShipment, StoreError> {
    let current_id: Option<String> = row.try_get("current_event_id")?;
    let current_at: Option<DateTime<Utc>> = row.try_get("current_event_at")?;
    let current = match (current_id, current_at) {
        (Some(id), Some(occurred_at)) => Some(EventKey {
            occurred_at,
            status: parse_status(&row.try_get::<String, _>("status")?)?,
            id: parse_event_id(&id)?,
        }),
        _ => None,
    };
    Ok(LockedShipment {
        plan_index: plan_index_from_row(row)?,
        id: row.try_get("id")?,
        version: row.try_get("version")?,
        current,
        last_event_at: row.try_get("last_event_at")?,
        order_number: row.try_get("order_number")?,
        webhook_stale: row.try_get("webhook_stale")?,
        stored: None,
    })
}

/// The stored newest events and (when loaded) history keys of a [`lock_load_create`] row.
fn stored_from_row(row: &PgRow) -> Result<StoredEvents, StoreError> {
    let ids: Vec<String> = row
        .try_get::<Option<_>, _>("r_event_id")?
        .unwrap_or_default();
    let mut recent = Vec::with_capacity(ids.len());
    if !ids.is_empty() {
        let statuses: Vec<String> = row.try_get("r_status")?;
        let raws: Vec<String> = row.try_get("r_raw_status")?;
        let raw_descriptions: Vec<Option<String>> = row.try_get("r_raw_status_description")?;
        let sub_statuses: Vec<Option<String>> = row.try_get("r_sub_status")?;
        let times: Vec<DateTime<Utc>> = row.try_get("r_occurred_at")?;
        let locations: Vec<Option<String>> = row.try_get("r_location")?;
        let messages: Vec<Option<String>> = row.try_get("r_message")?;
        let origins: Vec<String> = row.try_get("r_origin")?;
        let columns = (
            statuses.into_iter(),
            raws.into_iter(),
            raw_descriptions.into_iter(),
            sub_statuses.into_iter(),
            times.into_iter(),
            locations.into_iter(),
            messages.into_iter(),
            origins.into_iter(),
        );
        let (
            mut statuses,
            mut raws,
            mut raw_descriptions,
            mut sub_statuses,
            mut times,
            mut locations,
            mut messages,
            mut origins,
        ) = columns;
        let short = || StoreError::corrupt("newest events", "arrays of different lengths");
        for id in &ids {
            recent.push(HistoryEntryV1 {
                event_id: parse_event_id(id)?,
                status: parse_status(&statuses.next().ok_or_else(short)?)?,
                scan: ScanV1 {
                    raw_status: RawStatus {
                        code: raws.next().ok_or_else(short)?,
                        description: raw_descriptions.next().ok_or_else(short)?,
                    },
                    sub_status: sub_statuses.next().ok_or_else(short)?,
                    occurred_at: times.next().ok_or_else(short)?,
                    location: locations.next().ok_or_else(short)?,
                    message: messages.next().ok_or_else(short)?,
                },
                origin: parse_origin(&origins.next().ok_or_else(short)?)?,
            });
        }
    }
    let keys = if row.try_get("keys_loaded")? {
        let ids: Vec<String> = row.try_get::<Option<_>, _>("h_ids")?.unwrap_or_default();
        let times: Vec<DateTime<Utc>> = row.try_get::<Option<_>, _>("h_ats")?.unwrap_or_default();
        let statuses: Vec<String> = row
            .try_get::<Option<_>, _>("h_statuses")?
            .unwrap_or_default();
        if ids.len() != times.len() || ids.len() != statuses.len() {
            return Err(StoreError::corrupt(
                "history keys",
                "arrays of different lengths",
            ));
        }
        let mut keys = BTreeSet::new();
        for ((id, occurred_at), status) in ids.iter().zip(times).zip(&statuses) {
            keys.insert(EventKey {
                occurred_at,
                status: parse_status(status)?,
                id: parse_event_id(id)?,
            });
        }
        Some(keys)
    } else {
        None
    };
    Ok(StoredEvents { recent, keys })
}

fn pulled_from_row(row: &PgRow, plan_index: usize) -> Result<PulledEvent, StoreError> {
    let body: serde_json::Value = row.try_get("event")?;
    let event: TrackingEvent = serde_json::from_value(body)
        .map_err(|e| StoreError::corrupt("unmatched_events.event", e))?;
    let source: String = row.try_get("source")?;
    Ok(PulledEvent {
        plan_index,
        event: PlannedEvent {
            event: Cow::Owned(event),
            source: Cow::Owned(
                waybill_core::SourceId::parse(&source)
                    .map_err(|e| StoreError::corrupt("unmatched_events.source", e))?,
            ),
            received_at: row.try_get("received_at")?,
            traceparent: None,
        },
    })
}

/// A shipment row as locked at the start of its merge.
#[derive(Debug)]
pub(super) struct LockedShipment {
    /// Index into `Plan::shipments`.
    pub plan_index: usize,
    pub id: i64,
    pub version: i64,
    pub current: Option<EventKey>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub order_number: Option<String>,
    /// Whether `last_webhook_at` is unset or over a minute old, i.e. worth refreshing.
    pub webhook_stale: bool,
    /// What was stored for it before this batch, when loaded with the lock (`None`: unknown,
    /// the merge loads what it needs after the insert).
    pub stored: Option<StoredEvents>,
}

/// A locked shipment's stored events before this batch, as far as the merge needs them.
#[derive(Debug, Default)]
pub(super) struct StoredEvents {
    /// The newest [`RECENT_HISTORY_LEN`](waybill_api::events::RECENT_HISTORY_LEN) stored events, in
    /// no particular order.
    pub recent: Vec<HistoryEntryV1>,
    /// The keys of every stored event, when loaded (only if some batch event is not newer than
    /// the shipment's `last_event_at`: otherwise the fold continues from the current event).
    pub keys: Option<BTreeSet<EventKey>>,
}

impl LockedShipment {
    /// The state of a shipment this transaction just inserted (and so holds locked).
    pub fn created(plan_index: usize, id: i64) -> LockedShipment {
        LockedShipment {
            plan_index,
            id,
            version: 0,
            current: None,
            last_event_at: None,
            order_number: None,
            webhook_stale: true,
            // Just inserted: nothing can be stored for it yet.
            stored: Some(StoredEvents {
                recent: Vec::new(),
                keys: Some(BTreeSet::new()),
            }),
        }
    }
}

/// Binds the keys of the given plan shipments as `$1` to `$4` of `query`, for
/// `unnest($1::text[], $2::text[], $3::text[], $4::int8[]) as k(tenant, carrier, tracking_number,
/// plan_index)`.
fn bind_plan_keys<'q>(
    query: Query<'q, Postgres, PgArguments>,
    plan: &'q Plan<'_>,
    plan_indexes: &[usize],
) -> Query<'q, Postgres, PgArguments> {
    let (tenants, carriers, numbers) =
        key_columns(plan_indexes.iter().map(|&index| &plan.shipments[index].key));
    let ordinals: Vec<i64> = plan_indexes.iter().map(|&index| index as i64).collect();
    query
        .bind(tenants)
        .bind(carriers)
        .bind(numbers)
        .bind(ordinals)
}

/// Locks the given plan shipments that exist (in key order) and loads what the merge needs.
/// `for no key update` is the lock the later `update` takes anyway (it never changes `id`), so
/// there is no upgrade, and inserts of rows referencing the shipment are not blocked. Shipments of the batch that do not exist are simply absent.
pub(super) async fn lock_shipments(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
    plan_indexes: &[usize],
) -> Result<Vec<LockedShipment>, StoreError> {
    let rows = bind_plan_keys(
        sqlx::query(
        "select k.plan_index, s.id, s.version, s.current_event_id, s.current_event_at, s.status,
                s.last_event_at, s.order_number,
                (s.last_webhook_at is null
                 or s.last_webhook_at < now() - interval '1 minute') as webhook_stale
         from unnest($1::text[], $2::text[], $3::text[], $4::int8[])
                  as k(tenant, carrier, tracking_number, plan_index)
         join shipments s on s.tenant = k.tenant
                         and s.carrier = k.carrier
                         and s.tracking_number = k.tracking_number
         order by s.tenant, s.carrier, s.tracking_number
         for no key update of s",
        ),
        plan,
        plan_indexes,
    )
    .fetch_all(conn)
    .await?;
    rows.iter().map(locked_from_row).collect()
}

/// Parks events of shipments nobody registered. Idempotent: a parked event parks once.
pub(super) async fn park_events(
    conn: &mut PgConnection,
    tenant_and_events: &[(&str, &PlannedEvent<'_>)],
) -> Result<(), StoreError> {
    let mut tenants = Vec::new();
    let mut carriers = Vec::new();
    let mut numbers = Vec::new();
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    let mut sources = Vec::new();
    let mut received = Vec::new();
    for (tenant, planned) in tenant_and_events {
        tenants.push(*tenant);
        carriers.push(planned.event.carrier.as_str());
        numbers.push(planned.event.tracking_number.as_str());
        ids.push(planned.event.id.as_str());
        bodies.push(Json(&planned.event));
        sources.push(planned.source.as_str());
        received.push(planned.received_at);
    }
    sqlx::query(
        "insert into unmatched_events
             (tenant, carrier, tracking_number, event_id, event, source, received_at)
         select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[],
                              $6::text[], $7::timestamptz[])
         on conflict (tenant, carrier, tracking_number, event_id) do nothing",
    )
    .bind(tenants)
    .bind(carriers)
    .bind(numbers)
    .bind(ids)
    .bind(bodies)
    .bind(sources)
    .bind(received)
    .execute(conn)
    .await?;
    Ok(())
}

/// A parked event taken out of `unmatched_events`, with its plan index.
pub(super) struct PulledEvent {
    pub plan_index: usize,
    pub event: PlannedEvent<'static>,
}

/// Deletes and returns the parked events of the given plan shipments.
pub(super) async fn pull_parked(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
    plan_indexes: &[usize],
) -> Result<Vec<PulledEvent>, StoreError> {
    bind_plan_keys(
        sqlx::query(
            "delete from unmatched_events u
         using unnest($1::text[], $2::text[], $3::text[], $4::int8[])
             as k(tenant, carrier, tracking_number, plan_index)
         where u.tenant = k.tenant and u.carrier = k.carrier
           and u.tracking_number = k.tracking_number
         returning k.plan_index, u.event, u.source, u.received_at",
        ),
        plan,
        plan_indexes,
    )
    .fetch_all_with(conn, |row| pulled_from_row(row, plan_index_from_row(row)?))
    .await
}

/// The events an insert stored (the others were there already), by shipment id.
pub(super) type Inserted = HashMap<i64, HashSet<String>>;

/// Inserts events; returns the ids of those that were new, by shipment.
pub(super) async fn insert_events(
    conn: &mut PgConnection,
    events: &[(i64, &str, &PlannedEvent<'_>)],
) -> Result<Inserted, StoreError> {
    let mut shipment_ids = Vec::with_capacity(events.len());
    let mut event_ids = Vec::with_capacity(events.len());
    let mut tenants = Vec::with_capacity(events.len());
    let mut statuses = Vec::with_capacity(events.len());
    let mut raw_codes = Vec::with_capacity(events.len());
    let mut raw_descriptions = Vec::with_capacity(events.len());
    let mut sub_statuses = Vec::with_capacity(events.len());
    let mut occurred = Vec::with_capacity(events.len());
    let mut provenances = Vec::with_capacity(events.len());
    let mut locations = Vec::with_capacity(events.len());
    let mut messages = Vec::with_capacity(events.len());
    let mut origins = Vec::with_capacity(events.len());
    let mut provider_ids = Vec::with_capacity(events.len());
    let mut couriers = Vec::with_capacity(events.len());
    let mut received = Vec::with_capacity(events.len());
    for (shipment_id, tenant, planned) in events {
        let event = &planned.event;
        shipment_ids.push(*shipment_id);
        event_ids.push(event.id.as_str());
        tenants.push(*tenant);
        statuses.push(event.status.as_str());
        raw_codes.push(event.raw_status.code.as_str());
        raw_descriptions.push(event.raw_status.description.as_deref());
        sub_statuses.push(event.sub_status.as_deref());
        occurred.push(event.occurred_at);
        provenances.push(Json(&event.time_provenance));
        locations.push(event.location.as_deref());
        messages.push(event.message.as_deref());
        origins.push(event.origin.as_str());
        provider_ids.push(event.provider_event_id.as_deref());
        couriers.push(event.courier.as_deref());
        received.push(planned.received_at);
    }
    let rows = sqlx::query(
        "insert into tracking_events
             (shipment_id, event_id, tenant, status, raw_status, raw_status_description,
              sub_status, occurred_at, time_provenance, location, message, origin,
              provider_event_id, courier, received_at)
         select * from unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::text[], $7::text[], $8::timestamptz[], $9::jsonb[],
                              $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                              $15::timestamptz[])
         order by 1, 2
         on conflict (shipment_id, event_id) do nothing
         returning shipment_id, event_id",
    )
    .bind(shipment_ids)
    .bind(event_ids)
    .bind(tenants)
    .bind(statuses)
    .bind(raw_codes)
    .bind(raw_descriptions)
    .bind(sub_statuses)
    .bind(occurred)
    .bind(provenances)
    .bind(locations)
    .bind(messages)
    .bind(origins)
    .bind(provider_ids)
    .bind(couriers)
    .bind(received)
    .fetch_all(conn)
    .await?;
    let mut inserted = Inserted::new();
    for row in &rows {
        inserted
            .entry(row.try_get("shipment_id")?)
            .or_default()
            .insert(row.try_get("event_id")?);
    }
    Ok(inserted)
}

/// The merge keys of every stored event of the given shipments.
pub(super) async fn load_history_keys(
    conn: &mut PgConnection,
    shipment_ids: &[i64],
) -> Result<Vec<(i64, EventKey)>, StoreError> {
    sqlx::query(
        "select shipment_id, event_id, occurred_at, status
         from tracking_events where shipment_id = any($1::int8[])",
    )
    .bind(shipment_ids)
    .fetch_all_with(conn, |row| {
        Ok((
            row.try_get("shipment_id")?,
            EventKey {
                occurred_at: row.try_get("occurred_at")?,
                status: parse_status(&row.try_get::<String, _>("status")?)?,
                id: parse_event_id(&row.try_get::<String, _>("event_id")?)?,
            },
        ))
    })
    .await
}

/// A stored event's details, as the outbox payload and the shipment row need them.
#[derive(Debug, Clone)]
pub(super) struct EventDetails {
    pub shipment_id: i64,
    pub entry: HistoryEntryV1,
    /// Whether the row came from the "newest five" half of the query (else: the current event).
    pub is_recent: bool,
}

/// For each `(shipment_id, current_event_id)`: the current event's details and the shipment's
/// five newest events (newest first, in merge order).
pub(super) async fn load_details(
    conn: &mut PgConnection,
    shipment_ids: &[i64],
    current_ids: &[&str],
) -> Result<Vec<EventDetails>, StoreError> {
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "select k.shipment_id, d.* from unnest($1::int8[], $2::text[]) as k(shipment_id, current_id)
             cross join lateral (
                 (select {columns}, true as is_recent from tracking_events e
                  where e.shipment_id = k.shipment_id
                  order by {order} limit {limit})
                 union all
                 (select {columns}, false from tracking_events e
                  where e.shipment_id = k.shipment_id and e.event_id = k.current_id)
             ) d",
            columns = HISTORY_ENTRY_COLUMNS,
            order = NEWEST_FIRST_EXACT.as_str(),
            limit = waybill_api::events::RECENT_HISTORY_LEN,
        )
    });
    sqlx::query(STATEMENT.as_str())
        .bind(shipment_ids)
        .bind(current_ids)
        .fetch_all_with(conn, |row| {
            Ok(EventDetails {
                shipment_id: row.try_get("shipment_id")?,
                is_recent: row.try_get("is_recent")?,
                entry: history_entry_v1(row)?,
            })
        })
        .await
}

/// New values for one shipment row after its merge.
#[derive(Debug)]
pub(super) struct ShipmentUpdate<'a> {
    pub id: i64,
    /// The announcement of the new current event, when it changed.
    pub current: Option<&'a StatusChangedV1>,
    pub version: i64,
    pub last_event_at: Option<DateTime<Utc>>,
    /// An order number to set if the shipment has none.
    pub order_number: Option<&'a str>,
    pub webhook_seen: bool,
}

/// Writes the merge results onto the (already locked) shipment rows and, in the same statement,
/// the outbox rows of the shipments whose current event changed. Returns `(outbox id,
/// shipment id)` of each outbox row written.
pub(super) async fn update_shipments(
    conn: &mut PgConnection,
    updates: &[ShipmentUpdate<'_>],
    outbox_rows: &[NewOutboxRow<'_>],
) -> Result<Vec<(i64, i64)>, StoreError> {
    let mut ids = Vec::new();
    let mut changed = Vec::new();
    let mut event_ids = Vec::new();
    let mut event_times = Vec::new();
    let mut statuses = Vec::new();
    let mut raw_codes = Vec::new();
    let mut raw_descriptions = Vec::new();
    let mut sub_statuses = Vec::new();
    let mut versions = Vec::new();
    let mut last_times = Vec::new();
    let mut order_numbers = Vec::new();
    let mut webhooks = Vec::new();
    for update in updates {
        ids.push(update.id);
        changed.push(update.current.is_some());
        event_ids.push(update.current.map(|c| c.event_id.as_str()));
        event_times.push(update.current.map(|c| c.scan.occurred_at));
        statuses.push(update.current.map(|c| c.new_status.as_str()));
        raw_codes.push(update.current.map(|c| c.scan.raw_status.code.as_str()));
        raw_descriptions.push(
            update
                .current
                .and_then(|c| c.scan.raw_status.description.as_deref()),
        );
        sub_statuses.push(update.current.and_then(|c| c.scan.sub_status.as_deref()));
        versions.push(update.version);
        last_times.push(update.last_event_at);
        order_numbers.push(update.order_number);
        webhooks.push(update.webhook_seen);
    }
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "with updated as (
                 update shipments as s set
                     current_event_id = case when u.changed then u.event_id
                                             else s.current_event_id end,
                     current_event_at = case when u.changed then u.event_at
                                             else s.current_event_at end,
                     status = case when u.changed then u.status else s.status end,
                     raw_status = case when u.changed then u.raw_status else s.raw_status end,
                     raw_status_description = case when u.changed then u.raw_description
                                                   else s.raw_status_description end,
                     sub_status = case when u.changed then u.sub_status else s.sub_status end,
                     version = u.version,
                     last_event_at = greatest(s.last_event_at, u.last_event_at),
                     order_number = coalesce(s.order_number, u.order_number),
                     last_webhook_at = case when u.webhook then now() else s.last_webhook_at end,
                     updated_at = now()
                 from unnest($1::int8[], $2::bool[], $3::text[], $4::timestamptz[], $5::text[],
                             $6::text[], $7::text[], $8::text[], $9::int8[], $10::timestamptz[],
                             $11::text[], $12::bool[])
                     as u(id, changed, event_id, event_at, status, raw_status, raw_description,
                          sub_status, version, last_event_at, order_number, webhook)
                 where s.id = u.id
             )
             {outbox}",
            outbox = crate::outbox::insert_statement(13),
        )
    });
    let query = sqlx::query(STATEMENT.as_str())
        .bind(ids)
        .bind(changed)
        .bind(event_ids)
        .bind(event_times)
        .bind(statuses)
        .bind(raw_codes)
        .bind(raw_descriptions)
        .bind(sub_statuses)
        .bind(versions)
        .bind(last_times)
        .bind(order_numbers)
        .bind(webhooks);
    crate::outbox::bind_rows(query, outbox_rows)
        .fetch_all_with(conn, |row| {
            Ok((row.try_get("id")?, row.try_get("shipment_id")?))
        })
        .await
}
