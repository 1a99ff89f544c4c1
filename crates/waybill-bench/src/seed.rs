//! `waybill-bench seed`: stores millions of shipments with their tracking events in the
//! configured database (migrated first), as the merge would have left them, to measure Waybill
//! against a big table (`bench --stored-events` seeds its fresh database the same way). The rows
//! and their shape are [`waybill_store::seed`]'s; this module splits the shipments into ranges
//! of one statement each, reports progress on stderr, vacuums and measures the tables.
//! See docs/performance.md, "Big tables".

use std::fmt;
use std::ops::Range;
use std::time::Instant;

use chrono::{DateTime, Utc};
use clap::Args;
use sqlx::Connection as _;
use waybill_config::{ExposeSecret, Settings};
use waybill_core::{CarrierCode, TenantId};
use waybill_store::PgConnection;
use waybill_store::seed::{SeedPlan, SeededRows, TableSizes};

/// The carrier of the seeded shipments: Starshipit, whose raw statuses their events carry.
pub const SEED_CARRIER: &str = "starshipit";

/// Shipments written per statement unless `--chunk` says otherwise.
pub const DEFAULT_CHUNK: u64 = 50_000;

/// `waybill-bench seed` arguments.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Tracking events to store.
    #[arg(long)]
    pub events: u64,
    /// Shipments to spread them over (default: a tenth of the events).
    #[arg(long)]
    pub shipments: Option<u64>,
    /// Tracking-number prefix of the seeded shipments (ASCII letters and digits); seeding again
    /// with the same prefix and counts writes only what is missing.
    #[arg(long, default_value = "SEED")]
    pub prefix: String,
    /// Tenant of the seeded shipments.
    #[arg(long, default_value = TenantId::DEFAULT)]
    pub tenant: String,
    /// Shipments written per statement (with their events, in one transaction).
    #[arg(long, default_value_t = DEFAULT_CHUNK)]
    pub chunk: u64,
}

/// What a seed wrote, how long it took, and the tables after it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeedReport {
    /// Rows this seed inserted (fewer than planned when some already existed).
    pub written: SeededRows,
    /// Seconds spent inserting.
    pub insert_secs: f64,
    /// Seconds spent in `vacuum analyze` afterwards.
    pub vacuum_secs: f64,
    /// Both tables' rows and on-disk size afterwards.
    pub tables: TableSizes,
}

impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tables = &self.tables;
        writeln!(
            f,
            "inserted {} shipments and {} events in {:.1} s ({:.0} events/s), then vacuum analyze in {:.1} s",
            self.written.shipments,
            self.written.events,
            self.insert_secs,
            self.written.events as f64 / self.insert_secs.max(1e-6),
            self.vacuum_secs
        )?;
        writeln!(f, "| table | rows | on disk with indexes |")?;
        writeln!(f, "|---|---:|---:|")?;
        writeln!(
            f,
            "| shipments | {} | {:.2} GiB |",
            tables.shipments,
            gib(tables.shipments_bytes)
        )?;
        writeln!(
            f,
            "| tracking_events | {} | {:.2} GiB |",
            tables.events,
            gib(tables.events_bytes)
        )
    }
}

/// `bytes` in GiB, as the seed's and the benchmarks' size figures print them.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// The default number of shipments for `events` events: a tenth, at least one.
pub fn default_shipments(events: u64) -> u64 {
    (events / 10).max(1)
}

/// The shipment index ranges of a seed of `shipments` in statements of `chunk` shipments.
pub fn chunks(shipments: u64, chunk: u64) -> impl Iterator<Item = Range<u64>> {
    let chunk = chunk.max(1);
    (0..shipments.div_ceil(chunk)).map(move |n| n * chunk..((n + 1) * chunk).min(shipments))
}

/// The plan of a seed of `events` over `shipments` of `tenant` with tracking numbers starting
/// with `prefix`: Starshipit shipments first reported by the first configured source of that
/// profile, if any, with times counted back from the start of today (UTC), so seeding again on
/// the same day produces the same rows.
pub fn plan(
    settings: &Settings,
    tenant: &str,
    prefix: &str,
    (events, shipments): (u64, u64),
) -> anyhow::Result<SeedPlan> {
    let source = settings
        .sources
        .iter()
        .find(|source| source.profile == SEED_CARRIER)
        .map(|source| source.id.to_string());
    Ok(SeedPlan::new(
        TenantId::parse(tenant)?,
        CarrierCode::parse(SEED_CARRIER)?,
        source,
        prefix,
        (events, shipments),
        start_of_today(),
    )?)
}

/// Applies the migrations to the database at `url` over a connection of its own, closed
/// afterwards (also when they fail).
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    let store = waybill_store::Store::connect(url, 1).await?;
    let migrated = store.migrate().await;
    store.close().await;
    Ok(migrated?)
}

/// Runs `waybill-bench seed` against the configured database.
pub async fn run(args: &SeedArgs, settings: &Settings) -> anyhow::Result<SeedReport> {
    let shipments = args
        .shipments
        .unwrap_or_else(|| default_shipments(args.events));
    let plan = plan(
        settings,
        &args.tenant,
        &args.prefix,
        (args.events, shipments),
    )?;
    let url = settings.database.url.expose_secret();
    migrate(url).await?;
    let mut conn = waybill_store::seed::connect(url).await?;
    let report = seed(&mut conn, &plan, args.chunk).await?;
    conn.close().await?;
    Ok(report)
}

/// Seeds `plan` over `conn` (a [`waybill_store::seed::connect`] session), `chunk` shipments per
/// statement, printing progress on stderr; then vacuums and analyzes both tables and measures
/// them.
pub async fn seed(
    conn: &mut PgConnection,
    plan: &SeedPlan,
    chunk: u64,
) -> anyhow::Result<SeedReport> {
    let started = Instant::now();
    let mut written = SeededRows::default();
    for range in chunks(plan.shipments(), chunk) {
        let end = range.end;
        let rows = waybill_store::seed::seed_range(conn, plan, range).await?;
        written.shipments += rows.shipments;
        written.events += rows.events;
        eprintln!(
            "seed: {end}/{} shipments done, {} shipments and {} events inserted, {:.1} s",
            plan.shipments(),
            written.shipments,
            written.events,
            started.elapsed().as_secs_f64()
        );
    }
    let insert_secs = started.elapsed().as_secs_f64();
    eprintln!("seed: vacuum analyze…");
    let vacuum_started = Instant::now();
    waybill_store::seed::vacuum_analyze(conn).await?;
    let vacuum_secs = vacuum_started.elapsed().as_secs_f64();
    let tables = waybill_store::seed::table_sizes(conn).await?;
    Ok(SeedReport {
        written,
        insert_secs,
        vacuum_secs,
        tables,
    })
}

/// Midnight UTC today.
fn start_of_today() -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    DateTime::from_timestamp(now - now.rem_euclid(86_400), 0).unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_shipment_once_in_order() {
        let ranges: Vec<_> = chunks(250_001, 100_000).collect();
        assert_eq!(
            ranges,
            [0..100_000, 100_000..200_000, 200_000..250_001],
            "the last range is the remainder"
        );
        assert_eq!(chunks(300, 100).count(), 3);
        assert_eq!(chunks(0, 100).count(), 0);
        assert_eq!(chunks(5, 0).count(), 5, "a zero chunk is taken as one");
    }

    #[test]
    fn shipments_default_to_a_tenth_of_the_events() {
        assert_eq!(default_shipments(50_000_000), 5_000_000);
        assert_eq!(default_shipments(7), 1);
    }

    fn plan_of(events: u64, shipments: u64) -> SeedPlan {
        SeedPlan::new(
            TenantId::default_tenant(),
            CarrierCode::parse(SEED_CARRIER).unwrap(),
            None,
            "seed",
            (events, shipments),
            start_of_today(),
        )
        .unwrap()
    }

    #[test]
    fn every_shipment_gets_events_and_they_add_up_exactly() {
        for (events, shipments) in [(2_000, 200), (1_003, 101), (10, 10), (25, 7), (999, 4)] {
            let plan = plan_of(events, shipments);
            let counts: Vec<u64> = (0..shipments).map(|i| plan.events_of(i)).collect();
            assert_eq!(
                counts.iter().sum::<u64>(),
                events,
                "{events} over {shipments}"
            );
            assert!(counts.iter().all(|count| *count >= 1));
            assert!(counts.iter().all(|count| *count <= plan.longest_history()));
        }
        let varied = plan_of(2_000, 200);
        assert_eq!(
            (0..4).map(|i| varied.events_of(i)).collect::<Vec<_>>(),
            [8, 9, 11, 12],
            "histories vary in length around the average"
        );
    }

    #[test]
    fn a_plan_refuses_what_it_cannot_seed() {
        let plan = |prefix: &str, events, shipments| {
            SeedPlan::new(
                TenantId::default_tenant(),
                CarrierCode::parse(SEED_CARRIER).unwrap(),
                None,
                prefix,
                (events, shipments),
                Utc::now(),
            )
        };
        assert!(plan("SEED", 9, 10).is_err(), "fewer events than shipments");
        assert!(plan("SEED", 10, 0).is_err());
        assert!(plan("SEED-1", 10, 10).is_err(), "only letters and digits");
        assert!(plan("", 10, 10).is_err());
        assert_eq!(
            plan("seed", 10, 10).unwrap().tracking_number(42),
            "SEED0000000042"
        );
    }
}
