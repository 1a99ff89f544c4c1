//! The database ceiling for `waybill bench`: the same rows the worker writes (an event row and a
//! shipment upsert per event, batched with `unnest`), with none of Waybill's logic around them —
//! no advisory locks, no history load, no merge, no outbox.

use std::time::Instant;

use chrono::{Duration, Utc};
use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use crate::{Store, StoreError};

/// Writes `batches` batches of `batch_size` events for fresh shipments from `writers` concurrent
/// connections, each batch in one transaction; returns events written per second. Rows go to a
/// tenant of their own (`bench-<run>`), deleted afterwards.
pub async fn raw_batched_upsert(
    store: &Store,
    batch_size: usize,
    batches: usize,
    writers: usize,
) -> Result<f64, StoreError> {
    let run = format!("bench-{:08x}", rand_u32());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers.max(1) {
        let store = store.clone();
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            let mut batch_index = writer;
            while batch_index < batches {
                let mut tx = store.begin().await?;
                write_batch(&mut tx, &run, batch_index, batch_size).await?;
                tx.commit().await?;
                batch_index += writers.max(1);
            }
            Ok::<_, StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    remove_tenant(store, &run).await?;
    Ok((batch_size * batches) as f64 / elapsed.max(1e-6))
}

/// Deletes the shipments (and with them the events) a benchmark wrote under `tenant`.
pub async fn remove_tenant(store: &Store, tenant: &str) -> Result<(), StoreError> {
    let mut conn = store.acquire().await?;
    sqlx::query("delete from shipments where tenant = $1")
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn write_batch(
    conn: &mut PgConnection,
    run: &str,
    batch_index: usize,
    size: usize,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let tracking_numbers: Vec<String> = (0..size)
        .map(|i| format!("B{batch_index:07}X{i:05}"))
        .collect();
    let tenants = vec![run; size];
    let carriers = vec!["bench"; size];
    let statuses = vec!["InTransit"; size];
    let times: Vec<_> = (0..size)
        .map(|i| now - Duration::seconds(i as i64))
        .collect();
    let rows = sqlx::query(
        "insert into shipments (tenant, carrier, tracking_number, status, raw_status,
                                current_event_id, current_event_at, last_event_at, version)
         select t, c, n, s, s, n, at, at, 1
           from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) as u(t, c, n, s, at)
         order by 1, 2, 3
         on conflict (tenant, carrier, tracking_number) do update
            set status = excluded.status, version = shipments.version + 1, updated_at = now()
         returning id",
    )
    .bind(&tenants)
    .bind(&carriers)
    .bind(&tracking_numbers)
    .bind(&statuses)
    .bind(&times)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<i64> = rows
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?;
    let event_ids: Vec<String> = (0..size)
        .map(|i| format!("{:032x}", (batch_index * 1_000_000 + i) as u128))
        .collect();
    let provenance = Json(json!({"kind": "explicit_offset"}));
    let provenances = vec![provenance; ids.len()];
    let locations = vec!["Hub 1"; ids.len()];
    let origins = vec!["webhook"; ids.len()];
    sqlx::query(
        "insert into tracking_events
             (shipment_id, event_id, tenant, status, raw_status, occurred_at, time_provenance,
              location, origin, received_at)
         select id, e, t, s, s, at, p, l, o, at
           from unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                       $6::jsonb[], $7::text[], $8::text[]) as u(id, e, t, s, at, p, l, o)
         on conflict (shipment_id, event_id) do nothing",
    )
    .bind(&ids)
    .bind(&event_ids[..ids.len()])
    .bind(&tenants[..ids.len()])
    .bind(&statuses[..ids.len()])
    .bind(&times[..ids.len()])
    .bind(&provenances)
    .bind(&locations)
    .bind(&origins)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A batch of decoded events, column by column, for [`ideal_merge`].
#[derive(Debug, Default)]
pub struct EventColumns {
    /// Each event's tenant.
    pub tenants: Vec<String>,
    /// Each event's carrier code.
    pub carriers: Vec<String>,
    /// Each event's tracking number.
    pub tracking_numbers: Vec<String>,
    /// Each event's canonical status.
    pub statuses: Vec<String>,
    /// When each event happened.
    pub occurred_at: Vec<chrono::DateTime<Utc>>,
    /// Each event's content id.
    pub event_ids: Vec<String>,
}

impl EventColumns {
    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.event_ids.len()
    }

    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.event_ids.is_empty()
    }
}

/// The ideal worker's write, for `waybill-bench bench`'s fair ceiling: one statement that
/// upserts each shipment of the batch once (its latest event's status) and inserts the events
/// that are new, batched with `unnest`, in the caller's transaction. Returns the ids of the
/// events inserted (the changes to publish). No advisory lock, no history load, no outbox.
pub async fn ideal_merge(
    conn: &mut PgConnection,
    events: &EventColumns,
) -> Result<Vec<String>, StoreError> {
    let provenance = Json(json!({"kind": "explicit_offset"}));
    let mut query = sqlx::query(
        "with ev as (
             select * from unnest($3::text[], $4::text[], $5::text[], $6::text[],
                                  $1::timestamptz[], $7::text[]) as u(t, c, n, s, at, e)
         ), ship as (
             insert into shipments (tenant, carrier, tracking_number, status, raw_status,
                                    current_event_id, current_event_at, last_event_at, version)
             select distinct on (t, c, n) t, c, n, s, s, e, at, at, 1
               from ev order by t, c, n, at desc
             on conflict (tenant, carrier, tracking_number) do update
                set status = case when excluded.current_event_at >= shipments.current_event_at
                                  then excluded.status else shipments.status end,
                    current_event_at = greatest(excluded.current_event_at,
                                                shipments.current_event_at),
                    version = shipments.version + 1, updated_at = now()
             returning id, tenant, carrier, tracking_number
         )
         insert into tracking_events
             (shipment_id, event_id, tenant, status, raw_status, occurred_at, time_provenance,
              origin, received_at)
         select ship.id, ev.e, ev.t, ev.s, ev.s, ev.at, $2, 'webhook', now()
           from ev join ship on ship.tenant = ev.t and ship.carrier = ev.c
                            and ship.tracking_number = ev.n
         on conflict (shipment_id, event_id) do nothing
         returning event_id",
    )
    .bind(&events.occurred_at)
    .bind(provenance);
    for column in [
        &events.tenants,
        &events.carriers,
        &events.tracking_numbers,
        &events.statuses,
        &events.event_ids,
    ] {
        query = query.bind(column);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get("event_id"))
        .collect::<Result<_, _>>()?)
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    nanos ^ std::process::id()
}
