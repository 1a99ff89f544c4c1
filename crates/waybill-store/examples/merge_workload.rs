//! Measures `apply_batch` on the workload `waybill bench` sends, without the broker or HTTP in
//! the way: one event per delivery, shipments of five scans (info, two transit hubs, out for
//! delivery, delivered) of which 20% have two adjacent scans swapped, 64 senders × 20 shipments
//! in flight, five sources/carriers. The stream is cut into batches of `BATCH` events applied by
//! `WRITERS` concurrent writers, each batch in its own committed transaction:
//!
//! - by default in arrival order, dealt to the writers in turn — like consumers that each batch
//!   whatever they receive: concurrent batches share shipments and wait for each other's locks;
//! - with `LANES=1`, routed to a writer by shipment key first — like the worker's lanes.
//!
//! ```text
//! cargo run -p waybill-store --release --example merge_workload [events] [batch] [writers]
//! LANES=1 cargo run -p waybill-store --release --example merge_workload
//! AUTO_EXPLAIN=5ms cargo run ...   # log plans of statements slower than that (server log)
//! ```
//!
//! Prints events merged per second, the median time per batch inside `apply_batch` and in
//! `commit`, and the raw batched upsert ceiling (`waybill_store::bench::raw_batched_upsert`) at
//! the same batch size and writers, measured right after on the same database, so the ratio
//! `waybill bench` reports can be watched without the rest of the stack. The machine's other
//! load moves both figures: compare ratios, and repeat.

mod common;

use std::collections::VecDeque;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, TimeZone, Utc};
use waybill_core::{
    CarrierCode, RawStatus, SourceId, Status, TenantId, TrackingEventDraft, TrackingNumber,
};
use waybill_store::testing::{Random, TestDatabase};
use waybill_store::{BatchReport, InboundBatch, InboundItem, Store};

const LIFE: [(Status, &str); 5] = [
    (Status::InfoReceived, "Printed"),
    (Status::InTransit, "InTransit"),
    (Status::InTransit, "InTransit"),
    (Status::OutForDelivery, "OutForDelivery"),
    (Status::Delivered, "Delivered"),
];
const SOURCES: [&str; 5] = ["starshipit", "clickpost", "aftership", "easypost", "direct"];
const SENDERS: usize = 64;
const IN_FLIGHT: usize = 20;

struct Cursor {
    number: usize,
    steps: VecDeque<usize>,
}

/// One sender's shipments in flight, like the load generator's `Plan`.
struct Sender {
    index: usize,
    next: usize,
    active: Vec<Cursor>,
}

fn scan(number: usize, step: usize, run: &str) -> InboundItem {
    let base = Utc.timestamp_opt(1_780_000_000, 0).single().expect("valid");
    let source = SOURCES[number % SOURCES.len()];
    let (status, raw) = LIFE[step];
    let tracking_number = format!("LG{run}{number:07}");
    let occurred_at =
        base + Duration::hours(step as i64) + Duration::seconds((number % 3600) as i64);
    let event = TrackingEventDraft {
        raw_status: RawStatus {
            code: raw.to_owned(),
            description: Some(raw.to_owned()),
        },
        location: Some(format!("Hub {step}")),
        message: Some(raw.to_owned()),
        order_number: Some(format!("O-{tracking_number}")),
        ..TrackingEventDraft::new(
            CarrierCode::parse(source).expect("valid"),
            TrackingNumber::parse(&tracking_number).expect("valid"),
            status,
            raw,
            occurred_at,
        )
    }
    .finish();
    InboundItem {
        tenant: TenantId::default_tenant(),
        source: SourceId::parse(source).expect("valid"),
        require_registration: false,
        events: vec![event],
        received_at: Utc::now(),
        traceparent: None,
    }
}

/// `events` single-event deliveries in arrival order.
fn stream(events: usize, run: &str, random: &mut Random) -> Vec<InboundItem> {
    let mut senders: Vec<Sender> = (0..SENDERS)
        .map(|index| Sender {
            index,
            next: 0,
            active: Vec::new(),
        })
        .collect();
    let mut items = Vec::with_capacity(events);
    while items.len() < events {
        let sender = &mut senders[random.below(SENDERS)];
        while sender.active.len() < IN_FLIGHT {
            let number = sender.next * SENDERS + sender.index;
            sender.next += 1;
            let mut steps: Vec<usize> = (0..LIFE.len()).collect();
            if random.below(5) == 0 {
                let at = random.below(LIFE.len() - 1);
                steps.swap(at, at + 1);
            }
            sender.active.push(Cursor {
                number,
                steps: steps.into(),
            });
        }
        let pick = random.below(sender.active.len());
        let cursor = &mut sender.active[pick];
        let step = cursor.steps.pop_front().expect("non-empty");
        let number = cursor.number;
        if cursor.steps.is_empty() {
            sender.active.swap_remove(pick);
        }
        items.push(scan(number, step, run));
    }
    items
}

async fn apply_all(
    store: &Store,
    batches: Vec<InboundBatch>,
    writers: usize,
) -> anyhow::Result<(f64, f64, f64, BatchReport)> {
    let events: usize = batches.iter().map(|b| b.items.len()).sum();
    let started = Instant::now();
    let results = common::on_writers(store, batches, writers, |store, queue| async move {
        let mut total = BatchReport::default();
        let mut times = Vec::new();
        for batch in queue {
            let mut tx = store.begin().await?;
            let applying = Instant::now();
            let report = waybill_store::apply_batch(&mut tx, &batch).await?;
            let committing = Instant::now();
            tx.commit().await?;
            times.push((committing - applying, committing.elapsed()));
            add_counts(&mut total, &report);
        }
        Ok((total, times))
    })
    .await?;
    let mut total = BatchReport::default();
    let mut times = Vec::new();
    for (report, task_times) in results {
        times.extend(task_times);
        add_counts(&mut total, &report);
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let median = |mut values: Vec<StdDuration>| {
        values.sort_unstable();
        values
            .get(values.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let apply = median(times.iter().map(|t| t.0).collect());
    let commit = median(times.iter().map(|t| t.1).collect());
    Ok((rate, apply, commit, total))
}

/// Adds the counts of `report` to `total`.
fn add_counts(total: &mut BatchReport, report: &BatchReport) {
    total.new_current += report.new_current;
    total.history_only += report.history_only;
    total.outdated += report.outdated;
    total.duplicates += report.duplicates;
    total.shipments_created += report.shipments_created;
    total.shipments_touched += report.shipments_touched;
}

/// Batches per lane (by shipment key), interleaved lane by lane so that the writers' turns
/// give each lane's batches to one writer.
fn by_lane(items: Vec<InboundItem>, size: usize, lanes: usize) -> Vec<InboundBatch> {
    let mut parts: Vec<Vec<InboundItem>> = vec![Vec::new(); lanes];
    for item in items {
        let number = item.events[0].tracking_number.as_str();
        let hash = number.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        parts[hash % lanes].push(item);
    }
    let mut per_lane: Vec<VecDeque<InboundBatch>> = parts
        .into_iter()
        .map(|part| batches_of(part, size).into())
        .collect();
    let mut batches = Vec::new();
    while per_lane.iter().any(|lane| !lane.is_empty()) {
        for lane in &mut per_lane {
            if let Some(batch) = lane.pop_front() {
                batches.push(batch);
            }
        }
    }
    batches
}

fn batches_of(items: Vec<InboundItem>, size: usize) -> Vec<InboundBatch> {
    let mut batches = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        batches.push(InboundBatch {
            items: items.by_ref().take(size).collect(),
            registrations: vec![],
        });
    }
    batches
}

/// CPU time used so far, in ms: by the Postgres backends serving this database (read from
/// `/proc`, so only when the server runs on this machine; 0 otherwise) and by this process.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    server: f64,
    client: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, other: Cpu) -> Cpu {
        Cpu {
            server: self.server - other.server,
            client: self.client - other.client,
        }
    }
}

async fn cpu_ms(store: &Store) -> anyhow::Result<Cpu> {
    let ticks = |pid: &str| -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // Fields after the command (which may contain spaces): utime is the 12th, stime 13th.
                let rest = stat.rsplit_once(')')?.1;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
            })
            .unwrap_or(0.0)
    };
    let pids: Vec<i32> =
        sqlx::query_scalar("select pid from pg_stat_activity where datname = current_database()")
            .fetch_all(store.pool())
            .await?;
    // Clock ticks are 10 ms on Linux.
    let server = pids.iter().map(|pid| ticks(&pid.to_string())).sum::<f64>() * 10.0;
    Ok(Cpu {
        server,
        client: ticks("self") * 10.0,
    })
}

/// A store whose sessions log the plans (with `analyze`, buffers and trigger times) of
/// statements slower than `min_duration` to the server log: set on the test database only.
async fn with_auto_explain(db: &TestDatabase, min_duration: &str) -> anyhow::Result<Store> {
    let url = db.url();
    let name = url
        .rsplit('/')
        .next()
        .and_then(|tail| tail.split('?').next())
        .ok_or_else(|| anyhow::anyhow!("no database name in {url}"))?;
    for setting in [
        "session_preload_libraries = 'auto_explain'".to_owned(),
        format!("auto_explain.log_min_duration = '{min_duration}'"),
        "auto_explain.log_analyze = on".to_owned(),
        "auto_explain.log_buffers = on".to_owned(),
        "auto_explain.log_triggers = on".to_owned(),
    ] {
        sqlx::query(&format!("alter database {name} set {setting}"))
            .execute(db.store().pool())
            .await?;
    }
    Ok(Store::connect(url, 8).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(Ok(40_000), |a| a.parse())?;
    let batch: usize = args.next().map_or(Ok(500), |a| a.parse())?;
    let writers: usize = args.next().map_or(Ok(2), |a| a.parse())?;

    let db = TestDatabase::create_with_pool(&TestDatabase::admin_url(), 8).await?;
    let explain_store;
    let store = match std::env::var("AUTO_EXPLAIN") {
        Ok(min_duration) => {
            explain_store = with_auto_explain(&db, &min_duration).await?;
            &explain_store
        }
        Err(_) => db.store(),
    };
    let mut random = Random(0x5eed_0000_0bad_cafe);

    // Warm-up on shipments of their own: statement preparation and caches.
    let warm = stream(4_000, "W", &mut random);
    apply_all(store, batches_of(warm, batch), writers).await?;

    let items = stream(events, "M", &mut random);
    let batches = if std::env::var("LANES").is_ok() {
        by_lane(items, batch, writers)
    } else {
        batches_of(items, batch)
    };
    let cpu_before = cpu_ms(store).await?;
    let (rate, apply, commit, report) = apply_all(store, batches, writers).await?;
    let cpu_merge = cpu_ms(store).await? - cpu_before;
    let cpu_before = cpu_ms(store).await?;
    let ceiling = waybill_store::bench::raw_batched_upsert(store, batch, 40, writers).await?;
    let cpu_raw = cpu_ms(store).await? - cpu_before;
    println!(
        "merge: {rate:>8.0} events/s (median per batch: apply {apply:.1} ms, commit {commit:.1} ms)   raw upsert: {ceiling:>8.0} events/s   ratio {:.2}",
        rate / ceiling
    );
    if cpu_merge.server > 0.0 {
        let per_batch = |cpu: Cpu, events: usize| {
            let batches = events as f64 / batch as f64;
            (cpu.server / batches, cpu.client / batches)
        };
        let (merge_server, merge_client) = per_batch(cpu_merge, events);
        let (raw_server, raw_client) = per_batch(cpu_raw, batch * 40);
        println!(
            "  CPU per batch of {batch}: merge {merge_server:.1} ms in Postgres + {merge_client:.1} ms here; raw upsert {raw_server:.1} + {raw_client:.1} ms (ratio {:.2})",
            (raw_server + raw_client) / (merge_server + merge_client)
        );
    }
    println!(
        "  new_current {}  history_only {}  outdated {}  duplicates {}  created {}  touched {}",
        report.new_current,
        report.history_only,
        report.outdated,
        report.duplicates,
        report.shipments_created,
        report.shipments_touched
    );
    if std::env::var("TABLE_STATS").is_ok() {
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "select relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup from pg_stat_user_tables order by relname",
        )
        .fetch_all(store.pool())
        .await?;
        for row in rows {
            println!("  {row:?}");
        }
    }
    if std::env::var("KEEP_DB").is_ok() {
        println!("  kept database {}", db.url());
        return Ok(());
    }
    db.drop_database().await?;
    Ok(())
}
