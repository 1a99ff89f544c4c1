//! `waybill-bench bench --deliveries N`: HTTP deliveries as a downstream subscriber sees them.
//! Subscriptions of the default tenant to fast local receivers (`--subscriptions`, and one slow
//! one with `--slow-subscription`); `N` webhooks (each a new scan of its shipment) posted at full
//! speed, or at `--deliveries-rate`, with the worker running; deliveries/s while the webhooks
//! arrive and after, from the first request to the last delivery, and the lag from a change's
//! merge to its recorded delivery (docs/performance.md).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use waybill_config::ExposeSecret;
use waybill_store::PgConnection;

use super::cpu::PhaseCpu;
use super::{BenchArgs, BenchSource, Stack, loadgen_args};
use crate::loadgen;

/// How long the deliveries may take after sending stopped before the run gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

/// How long the slow receiver (`--slow-subscription`) takes to answer.
const SLOW_ANSWER: Duration = Duration::from_secs(1);

/// What the fast receivers saw: when each distinct (receiver, `webhook-id`) first arrived, and
/// all their requests.
#[derive(Default)]
struct Arrivals {
    first_seen: Vec<Instant>,
    ids: HashSet<(u32, String)>,
    requests: u64,
}

/// Receivers answering 200 to every POST: `/hook/{n}` at once, recording arrivals, and
/// `/slow` after [`SLOW_ANSWER`].
struct Receiver {
    addr: std::net::SocketAddr,
    arrivals: Arc<Mutex<Arrivals>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let arrivals = Arc::new(Mutex::new(Arrivals::default()));
        let router = axum::Router::new()
            .route("/hook/{receiver}", axum::routing::post(receive))
            .route(
                "/slow",
                axum::routing::post(|| async {
                    tokio::time::sleep(SLOW_ANSWER).await;
                    StatusCode::OK
                }),
            )
            .with_state(arrivals.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Receiver {
            addr,
            arrivals,
            server,
        })
    }

    /// Distinct deliveries that had arrived by `instant`.
    fn delivered_by(&self, instant: Instant) -> usize {
        self.arrivals.lock().map_or(0, |arrivals| {
            arrivals.first_seen.partition_point(|seen| *seen <= instant)
        })
    }

    /// Distinct deliveries so far.
    fn delivered(&self) -> usize {
        self.arrivals
            .lock()
            .map_or(0, |arrivals| arrivals.ids.len())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(arrivals): State<Arc<Mutex<Arrivals>>>,
    Path(receiver): Path<u32>,
    headers: HeaderMap,
) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut arrivals) = arrivals.lock() {
        arrivals.requests += 1;
        if arrivals.ids.insert((receiver, id)) {
            arrivals.first_seen.push(Instant::now());
        }
    }
    StatusCode::OK
}

/// The configuration file the scenario's binaries read: the one given (`WAYBILL_CONFIG`), with
/// `fanout.allowed_hosts` allowing the local receiver.
fn config_allowing_localhost(tag: &str) -> anyhow::Result<PathBuf> {
    let given = match std::env::var_os(waybill_config::CONFIG_FILE_VARIABLE) {
        Some(path) => Some(std::fs::read_to_string(&path)?),
        None => None,
    };
    let path =
        std::env::temp_dir().join(format!("waybill-bench-{}.toml", tag.trim_end_matches('.')));
    std::fs::write(&path, allow_localhost(given.as_deref())?)?;
    Ok(path)
}

/// `config` (a TOML document, or none) with `fanout.allowed_hosts = ["127.0.0.1"]`.
fn allow_localhost(config: Option<&str>) -> anyhow::Result<String> {
    let mut table: toml::Table = config.unwrap_or_default().parse()?;
    let fanout = table
        .entry("fanout")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(fanout) = fanout.as_table_mut() else {
        anyhow::bail!("`fanout` in the configuration file is not a table");
    };
    fanout.insert(
        "allowed_hosts".to_owned(),
        toml::Value::Array(vec![toml::Value::String("127.0.0.1".to_owned())]),
    );
    Ok(toml::to_string(&table)?)
}

/// The scenario's figures.
#[derive(Debug, Default)]
struct DeliveryFigures {
    webhooks: u64,
    /// How the webhooks were posted: "at full speed" or "at N/s".
    pace: String,
    subscriptions: usize,
    slow: bool,
    changes: u64,
    sending_secs: f64,
    delivered_while_sending: usize,
    after_secs: f64,
    delivered: usize,
    requests: u64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    /// The CPU the stack spent per delivery once every change was merged (the deliveries made
    /// then, and nothing else running but the receivers), when any were made then.
    cpu_after_merges: Option<PhaseCpu>,
}

impl std::fmt::Display for DeliveryFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_sec = |count: usize, secs: f64| count as f64 / secs.max(1e-6);
        let total_secs = self.sending_secs + self.after_secs;
        writeln!(f, "| figure | value |")?;
        writeln!(f, "|---|---:|")?;
        let plural = if self.subscriptions == 1 { "" } else { "s" };
        let slow = if self.slow {
            "; one more answering in 1 s, not counted"
        } else {
            ""
        };
        writeln!(
            f,
            "| changes made by {} webhooks posted {} ({} fast subscription{plural}{slow}) | {} |",
            self.webhooks, self.pace, self.subscriptions, self.changes
        )?;
        writeln!(
            f,
            "| deliveries/s while the webhooks arrive ({:.1} s) | {:.0}/s |",
            self.sending_secs,
            per_sec(self.delivered_while_sending, self.sending_secs)
        )?;
        writeln!(
            f,
            "| deliveries/s after they stopped ({:.1} s) | {:.0}/s |",
            self.after_secs,
            per_sec(
                self.delivered - self.delivered_while_sending,
                self.after_secs
            )
        )?;
        writeln!(
            f,
            "| deliveries/s from the first request to the last delivery | {:.0}/s |",
            per_sec(self.delivered, total_secs)
        )?;
        writeln!(
            f,
            "| delivery lag, merge to recorded delivery (p50 / p99) | {:.0} / {:.0} ms |",
            self.lag_p50_ms, self.lag_p99_ms
        )?;
        writeln!(
            f,
            "| delivered / requests received | {} / {} |",
            self.delivered, self.requests
        )?;
        if let Some(cpu) = &self.cpu_after_merges {
            let us = |component: &str| cpu.per_unit_us.get(component).copied().unwrap_or(0.0);
            writeln!(
                f,
                "| CPU per delivery once every change was merged (µs: receivers {:.1}, worker \
                 {:.1}, RabbitMQ {:.1}, Postgres {:.1}, other {:.1}; machine idle {:.0} %) | \
                 {:.1} µs |",
                us("bench"),
                us("worker"),
                us("broker"),
                us("database"),
                us("other"),
                cpu.idle_share * 100.0,
                cpu.total_us()
            )?;
        }
        Ok(())
    }
}

/// Runs the scenario on `stack` (removed afterwards) with `webhooks` webhooks posted.
pub(super) async fn run(args: &BenchArgs, mut stack: Stack, webhooks: usize) -> anyhow::Result<()> {
    let result = measure(args, &mut stack, webhooks).await;
    stack.destroy().await;
    let figures = result?;
    print!("{figures}");
    anyhow::ensure!(
        figures.delivered as u64 >= figures.changes * figures.subscriptions as u64,
        "{} of {} deliveries were made within {} s",
        figures.delivered,
        figures.changes * figures.subscriptions as u64,
        DRAIN_LIMIT.as_secs()
    );
    Ok(())
}

async fn measure(
    args: &BenchArgs,
    stack: &mut Stack,
    webhooks: usize,
) -> anyhow::Result<DeliveryFigures> {
    let settings = stack.settings.clone();
    let source = BenchSource::of(&settings)?;
    stack.config_file = Some(config_allowing_localhost(&settings.bus.prefix)?);
    let store = waybill_store::Store::connect(settings.database.url.expose_secret(), 1).await?;
    let mut conn = store.acquire().await?;
    let receiver = Receiver::start().await?;
    let subscriptions = args.subscriptions.max(1);
    let mut fast = Vec::new();
    for n in 0..subscriptions {
        fast.push(subscribe(&mut conn, &format!("http://{}/hook/{n}", receiver.addr)).await?);
    }
    if args.slow_subscription {
        subscribe(&mut conn, &format!("http://{}/slow", receiver.addr)).await?;
    }
    if let (Some(rows), Some(first)) = (args.stored_deliveries, fast.first()) {
        let seeding = Instant::now();
        store_delivered_history(&mut conn, *first, rows).await?;
        eprintln!(
            "stored {rows} delivered deliveries in {:.1} s",
            seeding.elapsed().as_secs_f64()
        );
    }
    stack.start_ingress().await?;
    stack.start_worker().await?;

    let mut load = loadgen_args(args, &settings);
    load.sources = vec![source.id];
    load.count = Some(webhooks as u64);
    load.rate = args.deliveries_rate.unwrap_or(0.0);
    // Every webhook a later scan of its shipment: most change the current status.
    load.out_of_order = 0.0;
    // The load generator waits until every event is merged, so the changes are known after.
    load.drain_timeout = DRAIN_LIMIT;
    let started = Instant::now();
    let ledger = loadgen::run(&load, &settings).await?;
    let drain_secs = ledger.drain.as_ref().map_or(0.0, |drain| drain.drain_secs);
    let sending = started
        .elapsed()
        .saturating_sub(Duration::from_secs_f64(drain_secs));
    let delivered_while_sending = receiver.delivered_by(started + sending);
    let changes = changes_made(&mut conn).await?;
    let expected = changes * subscriptions;
    let merged_cpu = stack.cpu();
    let delivered_at_merged = receiver.delivered();
    let deadline = Instant::now() + DRAIN_LIMIT;
    while receiver.delivered() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered_after_merges = receiver.delivered() - delivered_at_merged;
    let cpu_after_merges = (delivered_after_merges > 0).then(|| {
        PhaseCpu::new(
            "deliveries once every change was merged",
            "delivery",
            &stack.cpu().since(&merged_cpu),
            delivered_after_merges as f64,
        )
    });
    let (delivered, last, requests) = {
        let arrivals = receiver
            .arrivals
            .lock()
            .map_err(|_| anyhow::anyhow!("the receiver's records are poisoned"))?;
        (
            arrivals.ids.len(),
            arrivals.first_seen.last().copied(),
            arrivals.requests,
        )
    };
    let after = last.map_or(Duration::ZERO, |last| {
        last.saturating_duration_since(started + sending)
    });
    let (lag_p50_ms, lag_p99_ms) = delivery_lag(&mut conn, &fast).await?;
    drop(conn);
    store.close().await;
    Ok(DeliveryFigures {
        webhooks: ledger.requests.accepted,
        pace: args
            .deliveries_rate
            .map_or_else(|| "at full speed".to_owned(), |rate| format!("at {rate}/s")),
        subscriptions,
        slow: args.slow_subscription,
        changes: changes as u64,
        sending_secs: sending.as_secs_f64(),
        delivered_while_sending,
        after_secs: after.as_secs_f64(),
        delivered,
        requests,
        lag_p50_ms,
        lag_p99_ms,
        cpu_after_merges,
    })
}

/// Subscribes the default tenant to every change, at `url`; returns the subscription's id.
async fn subscribe(conn: &mut PgConnection, url: &str) -> anyhow::Result<i64> {
    let secret = waybill_store::fanout::SecretText::new(format!(
        "whsec_{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    ));
    let subscription = waybill_store::fanout::insert_subscription(
        conn,
        &waybill_store::fanout::NewSubscription {
            tenant: &waybill_core::TenantId::default_tenant(),
            url,
            description: "waybill-bench receiver",
            carriers: &[],
            statuses: &[],
            secret: &secret,
        },
    )
    .await?;
    Ok(subscription.id)
}

/// Writes `rows` deliveries to `subscription`, delivered a day ago, as a long-running
/// subscription has (small bodies: only the rows and their indexes matter), then analyzes the
/// table. Their outbox ids are negative so they meet no real change.
async fn store_delivered_history(
    conn: &mut PgConnection,
    subscription: i64,
    rows: u64,
) -> anyhow::Result<()> {
    // Millions of rows take longer than the store's statement timeout.
    sqlx::query("set statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "insert into deliveries (subscription_id, outbox_id, tenant, webhook_id, body, status,
                                 attempts, next_attempt_at, last_attempt_at, last_status,
                                 created_at, delivered_at)
         select $1, -g, 'default', 'msg_history_' || g, '\\x7b7d', 'delivered', 1, null,
                now() - interval '1 day', 200, now() - interval '1 day', now() - interval '1 day'
         from generate_series(1, $2::int8) as g",
    )
    .bind(subscription)
    .bind(i64::try_from(rows)?)
    .execute(&mut *conn)
    .await?;
    sqlx::query("vacuum analyze deliveries")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The changes the merges made (outbox rows), each owed to the one subscription.
async fn changes_made(conn: &mut PgConnection) -> anyhow::Result<usize> {
    let changes: i64 = sqlx::query_scalar("select count(*) from outbox")
        .fetch_one(&mut *conn)
        .await?;
    Ok(usize::try_from(changes)?)
}

/// p50 and p99 of the time from a change's outbox row (written by the merge) to its delivery
/// to one of `subscriptions` being recorded, ms.
async fn delivery_lag(
    conn: &mut PgConnection,
    subscriptions: &[i64],
) -> anyhow::Result<(f64, f64)> {
    let (p50, p99): (Option<f64>, Option<f64>) = sqlx::query_as(
        "select percentile_cont(0.5) within group (order by lag),
                percentile_cont(0.99) within group (order by lag)
           from (select extract(epoch from d.delivered_at - o.created_at)::float8 * 1000 as lag
                   from deliveries d join outbox o on o.id = d.outbox_id
                  where d.delivered_at is not null
                    and d.subscription_id = any($1)) as lags",
    )
    .bind(subscriptions)
    .fetch_one(&mut *conn)
    .await?;
    Ok((p50.unwrap_or(0.0), p99.unwrap_or(0.0)))
}

#[cfg(test)]
mod tests {
    use super::allow_localhost;
    use waybill_config::Settings;

    /// The scenario's configuration keeps every key of the given file and allows 127.0.0.1.
    #[test]
    fn the_scenarios_configuration_allows_the_local_receiver_and_keeps_the_rest() {
        let given = "[fanout]\nrelay_batch = 77\nallowed_hosts = [\"hooks.internal\"]\n\n[worker]\nbatch_size = 9\n";
        let settings = Settings::from_toml_str(&allow_localhost(Some(given)).unwrap()).unwrap();
        assert_eq!(settings.fanout.allowed_hosts, ["127.0.0.1"]);
        assert_eq!(settings.fanout.relay_batch, 77);
        assert_eq!(settings.worker.batch_size, 9);

        let settings = Settings::from_toml_str(&allow_localhost(None).unwrap()).unwrap();
        assert_eq!(settings.fanout.allowed_hosts, ["127.0.0.1"]);
        assert!(allow_localhost(Some("fanout = 3")).is_err());
    }
}
