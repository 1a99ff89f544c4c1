//! `waybill-bench loadgen`: plays many couriers at once against a running ingress, then balances the
//! books against Postgres. See the README, "Load generator and fault suite".

mod ledger;
pub(crate) mod payloads;
mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use waybill_config::{PollMode, Settings};
use waybill_core::EventId;

pub use ledger::{DrainLedger, Ledger, Percentiles, RequestLedger};
pub(crate) use plan::signed_headers;
use plan::{Intent, Mix, Plan, Planned, Target};
use waybill_config::ExposeSecret;

/// `waybill-bench loadgen` arguments.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// The ingress base URL (default: from `ingress.addr`).
    #[arg(long)]
    pub ingress: Option<String>,
    /// The worker base URL, to read merge outcomes from its /metrics (default: from `worker.addr`).
    #[arg(long)]
    pub worker: Option<String>,
    /// Sources to post to (default: every configured source in a format the generator speaks).
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<String>,
    /// Target requests per second; 0 sends as fast as the connections allow.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long to send, e.g. `30s`, `2m` (ignored when --count is given).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// How many requests to send (overrides --duration).
    #[arg(long)]
    pub count: Option<u64>,
    /// Share of requests that re-send an earlier body exactly (0..1).
    #[arg(long, default_value_t = 0.1)]
    pub duplicates: f64,
    /// Share of shipments whose scans arrive partly out of order (0..1).
    #[arg(long, default_value_t = 0.2)]
    pub out_of_order: f64,
    /// Share of invalid requests: bad signatures and malformed bodies (0..1).
    #[arg(long, default_value_t = 0.02)]
    pub invalid: f64,
    /// Shipments each connection interleaves at a time.
    #[arg(long, default_value_t = 20)]
    pub shipments_in_flight: usize,
    /// Attempts after the first for a 5xx or a connection error, like a courier's retries.
    #[arg(long, default_value_t = 20)]
    pub retries: u32,
    /// Longest wait between retries (a `Retry-After` above it is shortened to it).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub max_retry_delay: Duration,
    /// How long to wait for Postgres to show every accepted event without progress before
    /// declaring the rest lost.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Skip the Postgres accounting (requests only).
    #[arg(long)]
    pub no_drain: bool,
    /// Print the ledger as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Parses `500ms`, `10s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 10s, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h)"
            ));
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("`{text}` is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn local_url(addr: std::net::SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}", addr.port())
}

struct Context {
    http: reqwest::Client,
    ingress: String,
    targets: Arc<Vec<Target>>,
    tickets: AtomicU64,
    count: Option<u64>,
    deadline: Instant,
    start: Instant,
    rate: Option<f64>,
    retries: u32,
    max_retry_delay: Duration,
    progress: ProgressBar,
    accepted: AtomicU64,
}

#[derive(Default)]
struct TaskResult {
    ledger: RequestLedger,
    latency: Option<Histogram<u64>>,
    first_sent: HashMap<EventId, DateTime<Utc>>,
    /// Accepted valid requests: (target, body, first send time); mapped to event ids after
    /// the sending phase.
    accepted_bodies: Vec<(usize, Arc<Vec<u8>>, DateTime<Utc>)>,
    shipments: HashSet<String>,
}

/// Runs the load and the accounting; returns the ledger.
pub async fn run(args: &LoadgenArgs, settings: &Settings) -> anyhow::Result<Ledger> {
    run_with(args, settings, async {}).await
}

/// Like [`run`], awaiting `after_sending` between the sending phase and the accounting (the
/// benchmark starts the worker there, so the drain measures the worker alone).
pub async fn run_with(
    args: &LoadgenArgs,
    settings: &Settings,
    after_sending: impl Future<Output = ()>,
) -> anyhow::Result<Ledger> {
    let targets = Arc::new(targets(args, settings)?);
    let ingress = args
        .ingress
        .clone()
        .unwrap_or_else(|| local_url(settings.ingress.addr));
    let worker = args
        .worker
        .clone()
        .unwrap_or_else(|| local_url(settings.worker.addr));
    let run_id = format!("{:06X}", rand::random::<u32>() & 0xFF_FFFF);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let merge_before = scrape_merge_outcomes(&http, &worker).await;
    let shipments_before = if args.no_drain {
        0
    } else {
        last_shipment_id(settings).await?
    };

    let progress = progress_bar(args);
    let start = Instant::now();
    let context = Arc::new(Context {
        http: http.clone(),
        ingress,
        targets: targets.clone(),
        tickets: AtomicU64::new(0),
        count: args.count,
        deadline: if args.count.is_some() {
            start + Duration::from_secs(24 * 3600)
        } else {
            start + args.duration
        },
        start,
        rate: (args.rate > 0.0).then_some(args.rate),
        retries: args.retries,
        max_retry_delay: args.max_retry_delay,
        progress: progress.clone(),
        accepted: AtomicU64::new(0),
    });
    let ticker = spawn_ticker(context.clone(), args.count.is_none());
    let mut total = send_all(args, &context, &targets, &run_id).await?;
    ticker.abort();
    progress.finish_and_clear();
    let sending = start.elapsed();
    total.ledger.duration_secs = sending.as_secs_f64();
    total.ledger.accepted_per_sec = total.ledger.accepted as f64 / sending.as_secs_f64().max(0.001);
    total.ledger.ack_latency_ms = total
        .latency
        .as_ref()
        .map(Percentiles::of)
        .unwrap_or_default();

    after_sending.await;
    first_sent_of_events(&mut total, &targets);
    let drain = if args.no_drain {
        None
    } else {
        let mut drain = drain(settings, &total, args.drain_timeout, shipments_before).await?;
        if let (Some(before), Some(after)) =
            (merge_before, scrape_merge_outcomes(&http, &worker).await)
        {
            drain.merge_outcomes = Some(outcomes_since(&before, &after));
        }
        Some(drain)
    };
    Ok(Ledger {
        requests: total.ledger,
        drain,
    })
}

/// The progress bar: by request count, or by seconds for a timed run; hidden with `--quiet`.
fn progress_bar(args: &LoadgenArgs) -> ProgressBar {
    if args.quiet {
        return ProgressBar::hidden();
    }
    let bar = match args.count {
        Some(count) => ProgressBar::new(count),
        None => ProgressBar::new(args.duration.as_secs().max(1)),
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Updates the progress bar's rate four times a second (and its position, for a timed run).
fn spawn_ticker(context: Arc<Context>, by_time: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let elapsed = context.start.elapsed().as_secs_f64().max(0.001);
            let accepted = context.accepted.load(Ordering::Relaxed);
            if by_time {
                context.progress.set_position(elapsed as u64);
            }
            context.progress.set_message(format!(
                "accepted {accepted} ({:.0}/s)",
                accepted as f64 / elapsed
            ));
        }
    })
}

/// Runs the `--concurrency` senders to the end and adds up what they saw.
async fn send_all(
    args: &LoadgenArgs,
    context: &Arc<Context>,
    targets: &Arc<Vec<Target>>,
    run_id: &str,
) -> anyhow::Result<TaskResult> {
    let mix = Mix {
        duplicates: args.duplicates,
        out_of_order: args.out_of_order,
        invalid: args.invalid,
    };
    let mut tasks = Vec::new();
    for task in 0..args.concurrency.max(1) {
        let plan = Plan::new(
            targets.clone(),
            mix,
            run_id,
            task,
            args.concurrency.max(1),
            args.shipments_in_flight,
        );
        tasks.push(tokio::spawn(sender(
            context.clone(),
            plan,
            args.count.is_some(),
        )));
    }
    let mut total = TaskResult::default();
    for task in tasks {
        let result = task.await?;
        merge_into(&mut total, result);
    }
    Ok(total)
}

/// Which event ids the accepted requests carried, each with when it was first sent: mapped
/// after the timed phase, so the mapping does not slow the sending.
fn first_sent_of_events(total: &mut TaskResult, targets: &[Target]) {
    for (target, body, sent_at) in std::mem::take(&mut total.accepted_bodies) {
        for id in plan::event_ids_of(&targets[target], &body) {
            total
                .first_sent
                .entry(id)
                .and_modify(|first| *first = (*first).min(sent_at))
                .or_insert(sent_at);
        }
    }
}

/// The worker's merge outcome counters' growth between two scrapes.
fn outcomes_since(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(outcome, count)| {
            (
                outcome.clone(),
                count.saturating_sub(*before.get(outcome).unwrap_or(&0)),
            )
        })
        .collect()
}

fn targets(args: &LoadgenArgs, settings: &Settings) -> anyhow::Result<Vec<Target>> {
    let profiles = settings.profiles()?;
    let mut targets = Vec::new();
    for source in &settings.sources {
        if !args.sources.is_empty()
            && !args
                .sources
                .iter()
                .any(|wanted| wanted == source.id.as_str())
        {
            continue;
        }
        let Some(profile) = profiles.get(&source.profile) else {
            continue;
        };
        if !payloads::SUPPORTED_PROFILES.contains(&profile.name.as_str())
            || source.mode == PollMode::PollOnly
        {
            continue;
        }
        if source.require_registration {
            // Events would park until registration: they could not be accounted for.
            continue;
        }
        let Some(secret) = source.secrets.first() else {
            continue;
        };
        targets.push(Target {
            source: source.id.to_string(),
            profile,
            secret: secret.expose_secret().to_owned(),
        });
    }
    if targets.is_empty() {
        anyhow::bail!(
            "no usable source: configure a [[sources]] entry with a secret and one of the profiles {} (not poll_only, not require_registration)",
            payloads::SUPPORTED_PROFILES.join(", ")
        );
    }
    Ok(targets)
}

async fn sender(context: Arc<Context>, mut plan: Plan, by_count: bool) -> TaskResult {
    let mut result = TaskResult {
        latency: Histogram::new_with_bounds(1, 120_000_000, 3).ok(),
        ..TaskResult::default()
    };
    loop {
        let ticket = context.tickets.fetch_add(1, Ordering::Relaxed);
        if context.count.is_some_and(|count| ticket >= count) || Instant::now() >= context.deadline
        {
            break;
        }
        if let Some(rate) = context.rate {
            let due = context.start + Duration::from_secs_f64(ticket as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let planned = plan.next();
        let sent_at = Utc::now();
        let started = Instant::now();
        let (answer, attempts) = send(&context, &planned).await;
        if let Some(histogram) = result.latency.as_mut() {
            let _ = histogram.record(started.elapsed().as_micros().max(1) as u64);
        }
        record(&mut result, &planned, answer, attempts, sent_at);
        if matches!(answer, Answer::Status(code) if (200..300).contains(&code)) {
            context.accepted.fetch_add(1, Ordering::Relaxed);
        }
        if by_count {
            context.progress.inc(1);
        }
    }
    result
}

#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    Transport,
}

async fn send(context: &Context, planned: &Planned) -> (Answer, u32) {
    let target = &context.targets[planned.target];
    let url = format!("{}/v1/webhooks/{}", context.ingress, target.source);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let secret = if planned.intent == Intent::BadSignature {
            format!("not-{}", target.secret)
        } else {
            target.secret.clone()
        };
        let mut request = context
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(planned.body.as_ref().clone());
        if let Some((name, value)) = target.profile.sign(&planned.body, &secret, Utc::now()) {
            request = request.header(name, value);
        }
        let (answer, retry_after) = match request.send().await {
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let status = response.status().as_u16();
                // Drain the body so the connection is reused.
                let _ = response.bytes().await;
                (Answer::Status(status), retry_after)
            }
            Err(_) => (Answer::Transport, None),
        };
        let retryable = match answer {
            Answer::Status(code) => matches!(code, 502..=504),
            Answer::Transport => true,
        };
        if !retryable || attempts > context.retries {
            return (answer, attempts);
        }
        let backoff = Duration::from_millis(50u64.saturating_mul(1 << attempts.min(10)));
        let wait = retry_after.unwrap_or(backoff).min(context.max_retry_delay);
        tokio::time::sleep(wait).await;
    }
}

fn record(
    result: &mut TaskResult,
    planned: &Planned,
    answer: Answer,
    attempts: u32,
    sent_at: DateTime<Utc>,
) {
    let ledger = &mut result.ledger;
    ledger.sent += 1;
    ledger.attempts += u64::from(attempts);
    if attempts > 1 {
        ledger.retried += 1;
    }
    let valid = matches!(planned.intent, Intent::Fresh | Intent::Duplicate);
    match answer {
        Answer::Status(code) if (200..300).contains(&code) => {
            if !valid {
                ledger.unexpected += 1;
                return;
            }
            ledger.accepted += 1;
            if planned.intent == Intent::Duplicate {
                ledger.accepted_duplicates += 1;
            } else {
                ledger.accepted_fresh += 1;
            }
            result.shipments.insert(planned.tracking_number.clone());
            result
                .accepted_bodies
                .push((planned.target, planned.body.clone(), sent_at));
        }
        Answer::Status(code) if (400..500).contains(&code) => {
            *ledger.rejected.entry(code).or_default() += 1;
            if valid {
                ledger.unexpected += 1;
            } else if matches!(code, 400 | 401) {
                ledger.invalid_refused += 1;
            } else {
                ledger.unexpected += 1;
            }
        }
        Answer::Status(_) => ledger.server_errors += 1,
        Answer::Transport => ledger.transport_errors += 1,
    }
}

fn merge_into(total: &mut TaskResult, part: TaskResult) {
    let (a, b) = (&mut total.ledger, part.ledger);
    a.sent += b.sent;
    a.attempts += b.attempts;
    a.accepted += b.accepted;
    a.accepted_fresh += b.accepted_fresh;
    a.accepted_duplicates += b.accepted_duplicates;
    for (code, count) in b.rejected {
        *a.rejected.entry(code).or_default() += count;
    }
    a.invalid_refused += b.invalid_refused;
    a.server_errors += b.server_errors;
    a.transport_errors += b.transport_errors;
    a.retried += b.retried;
    a.unexpected += b.unexpected;
    match (&mut total.latency, part.latency) {
        (Some(mine), Some(theirs)) => {
            let _ = mine.add(&theirs);
        }
        (mine @ None, theirs) => *mine = theirs,
        _ => {}
    }
    total.accepted_bodies.extend(part.accepted_bodies);
    total.shipments.extend(part.shipments);
}

/// The newest shipment's id before sending: every shipment of the run is newer (its tracking
/// numbers are the run's own), so the lookups read only the run's part of the events.
async fn last_shipment_id(settings: &Settings) -> anyhow::Result<i64> {
    let store = waybill_store::Store::connect(settings.database.url.expose_secret(), 1).await?;
    let mut conn = store.acquire().await?;
    let id = waybill_store::ledger::last_shipment_id(&mut conn).await?;
    drop(conn);
    store.close().await;
    Ok(id)
}

/// Waits until Postgres holds every accepted event id, or until nothing new has arrived for
/// `timeout`; computes what is lost and the end-to-end latency. The lookups look only in
/// shipments newer than `shipments_before`, the last one in all of them.
///
/// Each lookup asks only for the ids still missing, and the next one waits ten times as long
/// as the last took (250 ms to 5 s): the accounting must not take the database away from the
/// worker it is measuring. The rates come from the rows' `stored_at`, not from when a
/// lookup saw them, so the spacing does not bias them.
async fn drain(
    settings: &Settings,
    total: &TaskResult,
    timeout: Duration,
    shipments_before: i64,
) -> anyhow::Result<DrainLedger> {
    // One connection, kept between lookups (and made again if a fault breaks it): the CPU of
    // its server processes is the accounting's, which the benchmark moves from Postgres' column
    // to the load generator's.
    let store = waybill_store::Store::connect(settings.database.url.expose_secret(), 1).await?;
    let mut backends = BTreeSet::new();
    let ids: Vec<EventId> = total.first_sent.keys().cloned().collect();
    let started = Instant::now();
    let drain_started_at = Utc::now();
    let mut last_progress = Instant::now();
    let mut found: Vec<(String, DateTime<Utc>)> = Vec::new();
    let mut missing = ids.clone();
    loop {
        let lookup_started = Instant::now();
        let mut conn = store.acquire().await?;
        backends.insert(waybill_store::ledger::backend_pid(&mut conn).await?);
        let now_found =
            waybill_store::ledger::stored_at_of(&mut conn, &missing, shipments_before).await?;
        drop(conn);
        let lookup = lookup_started.elapsed();
        if !now_found.is_empty() {
            last_progress = Instant::now();
            let seen: HashSet<&str> = now_found.iter().map(|(id, _)| id.as_str()).collect();
            missing.retain(|id| !seen.contains(id.as_str()));
            found.extend(now_found);
        }
        if missing.is_empty() || last_progress.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep((lookup * 10).clamp(Duration::from_millis(250), Duration::from_secs(5)))
            .await;
    }
    let drain_secs = started.elapsed().as_secs_f64();
    if !missing.is_empty() {
        // Before calling them lost, look in every shipment once: a run whose tracking numbers
        // met an older run's would have its events in shipments older than the bound.
        let mut conn = store.acquire().await?;
        backends.insert(waybill_store::ledger::backend_pid(&mut conn).await?);
        found.extend(waybill_store::ledger::stored_at_of(&mut conn, &missing, 0).await?);
    }
    // Read before the pool closes them (a closed one's time is the postmaster's then).
    let accounting_cpu_secs = backends
        .iter()
        .map(|pid| crate::procfs::process_seconds(*pid, false))
        .sum();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut first_send: Option<DateTime<Utc>> = None;
    let mut last_store: Option<DateTime<Utc>> = None;
    let by_id: HashMap<&str, DateTime<Utc>> = total
        .first_sent
        .iter()
        .map(|(id, at)| (id.as_str(), *at))
        .collect();
    for (id, stored_at) in &found {
        if let Some(sent) = by_id.get(id.as_str()) {
            let micros = (*stored_at - *sent).num_microseconds().unwrap_or(0).max(1) as u64;
            let _ = latency.record(micros);
            first_send = Some(first_send.map_or(*sent, |first| first.min(*sent)));
            last_store = Some(last_store.map_or(*stored_at, |last| last.max(*stored_at)));
        }
    }
    let merged_per_sec = match (first_send, last_store) {
        (Some(first), Some(last)) if last > first => {
            found.len() as f64 / ((last - first).num_milliseconds() as f64 / 1000.0).max(0.001)
        }
        _ => 0.0,
    };
    let drain_rate_per_sec = match last_store {
        Some(last) if last > drain_started_at => {
            let after_sending = found
                .iter()
                .filter(|(_, stored)| *stored >= drain_started_at)
                .count();
            after_sending as f64
                / ((last - drain_started_at).num_milliseconds() as f64 / 1000.0).max(0.001)
        }
        _ => 0.0,
    };
    store.close().await;
    Ok(DrainLedger {
        drain_rate_per_sec,
        expected_events: ids.len() as u64,
        found_events: found.len() as u64,
        lost: (ids.len() - found.len().min(ids.len())) as u64,
        shipments_touched: total.shipments.len() as u64,
        drain_secs,
        merge_outcomes: None,
        end_to_end_latency_ms: Percentiles::of(&latency),
        merged_per_sec,
        accounting_cpu_secs,
    })
}

/// The Prometheus text a service's `/metrics` answers (`base` is its base URL), if it answers.
pub async fn metrics_text(http: &reqwest::Client, base: &str) -> Option<String> {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The worker's `waybill_merge_events_total` counters by outcome, if its /metrics answers.
async fn scrape_merge_outcomes(
    http: &reqwest::Client,
    worker: &str,
) -> Option<BTreeMap<String, u64>> {
    let text = metrics_text(http, worker).await?;
    let mut outcomes = BTreeMap::new();
    for line in text
        .lines()
        .filter(|line| line.starts_with("waybill_merge_events_total{"))
    {
        let outcome = line
            .split("outcome=\"")
            .nth(1)?
            .split('"')
            .next()?
            .to_owned();
        let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
        *outcomes.entry(outcome).or_default() += value as u64;
    }
    Some(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
