//! The faults: each runs load through a fresh stack, injects its fault mid-run, heals it,
//! measures recovery, settles, and reconciles the books.

use std::fmt;
use std::time::{Duration, Instant};

use chrono::Utc;
use waybill_bench::loadgen::{self, Ledger, LoadgenArgs};
use waybill_config::ExposeSecret;

use crate::blackhole::Blackhole;
use crate::downstream::{self, Downstream, DownstreamLedger};
use crate::effects::{self, Effects};
use crate::services::Services;
use crate::stack::{SECRETS, Stack, is_ready};

/// How long and how hard each fault runs.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Length of the sending phase.
    pub load: Duration,
    /// Requests per second.
    pub rate: f64,
    /// When, into the sending phase, the fault is injected.
    pub warmup: Duration,
    /// How long an outage lasts.
    pub hold: Duration,
}

impl Profile {
    /// The CI form: a few seconds per fault.
    pub fn reduced() -> Profile {
        Profile {
            load: Duration::from_secs(8),
            rate: 150.0,
            warmup: Duration::from_millis(2500),
            hold: Duration::from_secs(3),
        }
    }

    /// `WAYBILL_FAULTS_FULL=1`: a minute of load per fault, 15 s outages.
    pub fn full() -> Profile {
        Profile {
            load: Duration::from_secs(60),
            rate: 400.0,
            warmup: Duration::from_secs(20),
            hold: Duration::from_secs(15),
        }
    }
}

/// Every fault the suite injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `rabbitmqctl stop_app`, an outage, `start_app`.
    BrokerRestart,
    /// `rabbitmqctl close_all_connections`.
    BrokerConnectionsClosed,
    /// `set_vm_memory_high_watermark 0`, then back: publishing connections blocked.
    BrokerMemoryAlarm,
    /// The ingress's connections to the broker stop carrying bytes (a partition), then resume:
    /// confirms in flight never come, and nothing says the connection is in trouble.
    BrokerUnreachable,
    /// The ingress's connection to the broker goes silent for good while new connections work
    /// (a half-open connection): only heartbeats can tell, and the ingress must move on.
    BrokerConnectionSilent,
    /// `pg_ctlcluster … stop`, an outage, `start`.
    PostgresRestart,
    /// `pg_terminate_backend` of the worker's sessions, repeatedly, for the hold.
    PostgresTerminateBackends,
    /// SIGKILL one of two workers mid-run.
    WorkerKillOne,
    /// SIGKILL both workers, an outage, restart both.
    WorkerKillBoth,
    /// SIGKILL the ingress, restart it on the same port.
    IngressKill,
    /// One of two HTTP subscribers answers 500s, then hangs, then recovers.
    DownstreamReceiver,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::BrokerRestart,
        Fault::BrokerConnectionsClosed,
        Fault::BrokerMemoryAlarm,
        Fault::BrokerUnreachable,
        Fault::BrokerConnectionSilent,
        Fault::PostgresRestart,
        Fault::PostgresTerminateBackends,
        Fault::WorkerKillOne,
        Fault::WorkerKillBoth,
        Fault::IngressKill,
        Fault::DownstreamReceiver,
    ];

    /// The short name (`WAYBILL_FAULTS_ONLY` takes a comma-separated list of these).
    pub fn name(self) -> &'static str {
        match self {
            Fault::BrokerRestart => "broker-restart",
            Fault::BrokerConnectionsClosed => "broker-close-connections",
            Fault::BrokerMemoryAlarm => "broker-memory-alarm",
            Fault::BrokerUnreachable => "broker-unreachable",
            Fault::BrokerConnectionSilent => "broker-connection-silent",
            Fault::PostgresRestart => "postgres-restart",
            Fault::PostgresTerminateBackends => "postgres-terminate-backends",
            Fault::WorkerKillOne => "worker-kill-one-of-two",
            Fault::WorkerKillBoth => "worker-kill-both",
            Fault::IngressKill => "ingress-kill",
            Fault::DownstreamReceiver => "downstream-receiver",
        }
    }

    fn workers(self) -> usize {
        match self {
            Fault::WorkerKillOne | Fault::WorkerKillBoth => 2,
            _ => 1,
        }
    }
}

/// One line of the table.
#[derive(Debug, Default)]
pub struct Row {
    pub fault: String,
    pub ledger: Option<Ledger>,
    pub effects: Option<Effects>,
    /// The downstream books (the downstream fault only).
    pub downstream: Option<DownstreamLedger>,
    pub recovery: Option<Duration>,
    /// `503`s the ingress answered (from its metrics; an ingress killed mid-run loses its own
    /// count, so the kill fault counts what it had answered before the kill).
    pub unavailable: Option<u64>,
    pub notes: Vec<String>,
    /// Checks that did not hold (the suite fails when any row has one).
    pub failures: Vec<String>,
}

impl Row {
    pub fn requests(&self) -> u64 {
        self.ledger.as_ref().map_or(0, |l| l.requests.sent)
    }

    pub fn lost(&self) -> Option<u64> {
        self.ledger.as_ref()?.drain.as_ref().map(|d| d.lost)
    }

    /// Verifies the books: nothing lost, nothing doubled, no answer against its intent.
    fn reconcile(&mut self) {
        match &self.ledger {
            None => self.failures.push("no ledger".to_owned()),
            Some(ledger) => {
                let r = &ledger.requests;
                if r.unexpected > 0 {
                    self.failures.push(format!(
                        "{} answers contradicted their intent",
                        r.unexpected
                    ));
                }
                if r.server_errors + r.transport_errors > 0 {
                    self.failures.push(format!(
                        "{} requests still failed after every retry ({} 5xx, {} transport)",
                        r.server_errors + r.transport_errors,
                        r.server_errors,
                        r.transport_errors
                    ));
                }
                match &ledger.drain {
                    None => self.failures.push("no Postgres accounting".to_owned()),
                    Some(drain) if drain.expected_events == 0 => self
                        .failures
                        .push("nothing was accepted: the run proves nothing".to_owned()),
                    Some(drain) if drain.lost > 0 => self.failures.push(format!(
                        "{} accepted events are not in Postgres",
                        drain.lost
                    )),
                    Some(_) => {}
                }
            }
        }
        match &self.effects {
            None => self.failures.push("no effects check".to_owned()),
            Some(effects) if effects.duplicated() > 0 => self
                .failures
                .push(format!("duplicated effects: {effects:?}")),
            Some(_) => {}
        }
    }
}

/// The loadgen run for a stack: steady rate, duplicates and out-of-order scans mixed in, a few
/// invalid requests, and couriers that retry for as long as any outage here lasts.
fn load_args(stack: &Stack, profile: &Profile) -> LoadgenArgs {
    LoadgenArgs {
        ingress: Some(stack.ingress_url()),
        worker: Some(stack.worker_url(0)),
        sources: Vec::new(),
        rate: profile.rate,
        concurrency: 24,
        duration: profile.load,
        count: None,
        duplicates: 0.1,
        out_of_order: 0.3,
        invalid: 0.02,
        shipments_in_flight: 10,
        retries: 300,
        max_retry_delay: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(30),
        no_drain: false,
        json: false,
        quiet: true,
    }
}

/// Runs one fault end to end. Never panics: what went wrong is in the row's failures.
pub async fn run(fault: Fault, services: &Services, profile: &Profile) -> Row {
    let mut row = Row {
        fault: fault.name().to_owned(),
        ..Row::default()
    };
    let extra_toml = if fault == Fault::DownstreamReceiver {
        downstream::FANOUT_TOML
    } else {
        ""
    };
    let stack = Stack::create_with(
        fault.name(),
        fault.workers(),
        "info,lapin=error",
        extra_toml,
    );
    let mut stack = match stack.await {
        Ok(stack) => stack,
        Err(error) => {
            row.failures
                .push(format!("cannot create the stack: {error:#}"));
            return row;
        }
    };
    // For the partition, the ingress reaches the broker through a relay that can be frozen.
    let blackhole = if matches!(
        fault,
        Fault::BrokerUnreachable | Fault::BrokerConnectionSilent
    ) {
        let relay = match crate::stack::amqp_addr(stack.settings.bus.url.expose_secret()) {
            Ok(upstream) => Blackhole::start(upstream).await,
            Err(error) => Err(error),
        };
        match relay {
            Ok(relay) => {
                stack.set_ingress_env(
                    "AMQP_URL",
                    crate::stack::amqp_url_via(stack.settings.bus.url.expose_secret(), relay.addr),
                );
                Some(relay)
            }
            Err(error) => {
                row.failures
                    .push(format!("cannot start the relay: {error:#}"));
                None
            }
        }
    } else {
        None
    };
    // Subscribed and bound before the workers start: every change of the run is owed to them.
    let downstream = if fault == Fault::DownstreamReceiver {
        match Downstream::start(&stack.settings, &stack.database_url()).await {
            Ok(downstream) => Some(downstream),
            Err(error) => {
                row.failures
                    .push(format!("cannot start the downstream receivers: {error:#}"));
                None
            }
        }
    } else {
        None
    };
    if let Err(error) = stack.start_all().await {
        row.failures
            .push(format!("cannot start the stack: {error:#}"));
        row.notes
            .push(format!("logs in {}", stack.log_dir().display()));
        stack.destroy().await;
        return row;
    }
    let settings = stack.settings.clone();
    let args = load_args(&stack, profile);
    let (ledger, injected) = tokio::join!(
        loadgen::run(&args, &settings),
        inject(
            fault,
            &mut stack,
            services,
            profile,
            blackhole.as_ref(),
            downstream.as_ref()
        )
    );
    match ledger {
        Ok(ledger) => row.ledger = Some(ledger),
        Err(error) => row.failures.push(format!("loadgen failed: {error:#}")),
    }
    match injected {
        Ok(outcome) => {
            row.recovery = outcome.recovery;
            let now = unavailable_answers(&stack).await;
            // Less the 503s the suite's own probes got: the column is the couriers'.
            row.unavailable = now.map(|now| {
                (now + outcome.unavailable_before_restart).saturating_sub(
                    effects::PROBE_UNAVAILABLE.swap(0, std::sync::atomic::Ordering::Relaxed),
                )
            });
            row.notes.extend(outcome.notes);
            row.failures.extend(outcome.failures);
        }
        Err(error) => row
            .failures
            .push(format!("injecting the fault failed: {error:#}")),
    }
    match effects::check(&stack.database_url()).await {
        Ok(effects) => {
            row.notes.push(format!(
                "{} events in {} shipments",
                effects.events, effects.shipments
            ));
            row.effects = Some(effects);
        }
        Err(error) => row
            .failures
            .push(format!("effects check failed: {error:#}")),
    }
    if let Some(downstream) = &downstream {
        match downstream.reconcile(&stack.database_url()).await {
            Ok(ledger) => {
                row.notes.push(ledger.note());
                row.failures.extend(ledger.failures());
                row.downstream = Some(ledger);
            }
            Err(error) => row
                .failures
                .push(format!("downstream reconciliation failed: {error:#}")),
        }
    }
    row.reconcile();
    let keep_logs = std::env::var_os("WAYBILL_FAULTS_KEEP_LOGS").is_some();
    if row.failures.is_empty() && !keep_logs {
        let _ = std::fs::remove_dir_all(stack.log_dir());
    } else {
        row.notes
            .push(format!("logs in {}", stack.log_dir().display()));
    }
    stack.destroy().await;
    row
}

/// What injecting a fault observed.
#[derive(Debug, Default)]
struct Outcome {
    recovery: Option<Duration>,
    /// `503`s answered by an ingress that was then killed.
    unavailable_before_restart: u64,
    notes: Vec<String>,
    failures: Vec<String>,
}

impl Outcome {
    fn check(&mut self, holds: bool, what: impl Into<String>) {
        if !holds {
            self.failures.push(what.into());
        }
    }

    fn record<T>(&mut self, result: anyhow::Result<T>, doing: &str) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.failures.push(format!("{doing}: {error:#}"));
                None
            }
        }
    }
}

/// How long a probe may take to get through after a fault is healed.
const RECOVERY_BOUND: Duration = Duration::from_secs(90);

async fn inject(
    fault: Fault,
    stack: &mut Stack,
    services: &Services,
    profile: &Profile,
    blackhole: Option<&Blackhole>,
    downstream: Option<&Downstream>,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    tokio::time::sleep(profile.warmup).await;
    let healed = match fault {
        Fault::BrokerRestart => {
            let stopped = services.stop_broker().await;
            if outcome.record(stopped, "rabbitmqctl stop_app").is_some() {
                let answer = unavailable_answer(stack).await;
                outcome.check(
                    answer.is_ok(),
                    format!("while the broker was down the ingress answered {answer:?}, not a prompt 503 + Retry-After"),
                );
                let readiness = is_ready(&http(), &format!("{}/readyz", stack.ingress_url())).await;
                outcome.check(
                    !readiness,
                    "the ingress reported ready while the broker was down",
                );
                tokio::time::sleep(profile.hold).await;
            }
            let started = services.start_broker().await;
            outcome.record(started, "rabbitmqctl start_app");
            Instant::now()
        }
        Fault::BrokerConnectionsClosed => {
            let closed = services.close_all_connections().await;
            outcome.record(closed, "rabbitmqctl close_all_connections");
            Instant::now()
        }
        Fault::BrokerMemoryAlarm => {
            let raised = services.raise_memory_alarm().await;
            if outcome
                .record(raised, "set_vm_memory_high_watermark 0")
                .is_some()
            {
                // The alarm takes a moment to be raised and reach the connections.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                match unavailable_answer(stack).await {
                    Ok(took) => outcome.notes.push(format!("503 while blocked in {} ms", took.as_millis())),
                    Err(answer) => outcome.failures.push(format!(
                        "while the broker blocked publishing the ingress answered {answer}, not a 503 within the publish timeout"
                    )),
                }
                tokio::time::sleep(profile.hold.saturating_sub(Duration::from_millis(1500))).await;
            }
            let cleared = services.clear_memory_alarm().await;
            outcome.record(cleared, "restoring the memory watermark");
            Instant::now()
        }
        Fault::BrokerUnreachable => {
            let relay = blackhole.ok_or_else(|| anyhow::anyhow!("no relay to freeze"))?;
            relay.partition();
            let began = Instant::now();
            match unavailable_answer(stack).await {
                Ok(took) => outcome.notes.push(format!(
                    "503 after {} ms with no confirm coming",
                    took.as_millis()
                )),
                Err(answer) => outcome.failures.push(format!(
                    "with the broker unreachable the ingress answered {answer}, not a 503 within the publish timeout"
                )),
            }
            tokio::time::sleep(profile.hold.saturating_sub(began.elapsed())).await;
            relay.heal();
            Instant::now()
        }
        Fault::BrokerConnectionSilent => {
            let relay = blackhole.ok_or_else(|| anyhow::anyhow!("no relay"))?;
            let stranded = relay.strand_existing();
            outcome
                .notes
                .push(format!("{stranded} connection(s) silenced"));
            match unavailable_answer(stack).await {
                Ok(took) => outcome.notes.push(format!("503 after {} ms", took.as_millis())),
                Err(answer) => outcome.failures.push(format!(
                    "with its connection silent the ingress answered {answer}, not a 503 within the publish timeout"
                )),
            }
            // Nothing to heal: the ingress must notice by itself. Recovery counts from here.
            Instant::now()
        }
        Fault::PostgresRestart => {
            let stopped = services.stop_postgres().await;
            if outcome.record(stopped, "pg_ctlcluster stop").is_some() {
                let until = Instant::now() + profile.hold;
                let worker_ready = format!("{}/readyz", stack.worker_url(0));
                let mut saw_not_ready = false;
                let mut ingress_accepted = false;
                while Instant::now() < until {
                    if !is_ready(&http(), &worker_ready).await {
                        saw_not_ready = true;
                    }
                    if !ingress_accepted {
                        ingress_accepted = accepted_now(stack).await;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                outcome.check(
                    saw_not_ready,
                    "the worker stayed ready while Postgres was down",
                );
                outcome.check(
                    ingress_accepted,
                    "the ingress did not accept webhooks while Postgres was down (it must not depend on it)",
                );
            }
            let started = services.start_postgres().await;
            outcome.record(started, "pg_ctlcluster start");
            Instant::now()
        }
        Fault::PostgresTerminateBackends => {
            let database = stack
                .db
                .as_ref()
                .map(|db| db.name().to_owned())
                .unwrap_or_default();
            let until = Instant::now() + profile.hold;
            let mut terminated = 0;
            while Instant::now() < until {
                let killed =
                    effects::terminate_worker_backends(&stack.database_url(), &database).await;
                terminated += outcome.record(killed, "pg_terminate_backend").unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            outcome.check(terminated > 0, "no worker session was found to terminate");
            outcome
                .notes
                .push(format!("{terminated} worker sessions terminated"));
            Instant::now()
        }
        Fault::WorkerKillOne => {
            let unacked = kill_mid_batch(stack, services, &[1]).await;
            if let Some(unacked) = outcome.record(unacked, "killing a worker mid-batch") {
                outcome.notes.push(format!("killed with {unacked} unacked"));
            }
            Instant::now()
        }
        Fault::WorkerKillBoth => {
            let unacked = kill_mid_batch(stack, services, &[0, 1]).await;
            if let Some(unacked) = outcome.record(unacked, "killing the workers mid-batch") {
                outcome.notes.push(format!("killed with {unacked} unacked"));
            }
            tokio::time::sleep(profile.hold).await;
            for index in 0..2 {
                let started = stack.start_worker(index).await;
                outcome.record(started, "restarting a worker");
            }
            Instant::now()
        }
        Fault::IngressKill => {
            // A request caught half-sent when the ingress dies gets a connection error.
            let half_sent = HalfSentRequest::open(stack).await;
            outcome.unavailable_before_restart = unavailable_answers(stack).await.unwrap_or(0);
            stack.kill_ingress().await;
            if let Some(half_sent) = outcome.record(half_sent, "opening a half-sent request") {
                let answer = half_sent.answer().await;
                outcome.check(
                    answer.is_none(),
                    format!(
                        "a request in flight when the ingress was killed was answered {answer:?}"
                    ),
                );
            }
            tokio::time::sleep(profile.hold.min(Duration::from_secs(2))).await;
            let started = stack.start_ingress().await;
            outcome.record(started, "restarting the ingress");
            Instant::now()
        }
        Fault::DownstreamReceiver => {
            let downstream = downstream.ok_or_else(|| anyhow::anyhow!("no receivers"))?;
            let failures = downstream.inject(profile.hold).await;
            outcome.failures.extend(failures);
            Instant::now()
        }
    };
    let recovered = effects::probe(stack, healed, RECOVERY_BOUND).await;
    outcome.recovery = outcome.record(recovered, "recovery probe");
    if matches!(fault, Fault::BrokerRestart | Fault::BrokerConnectionsClosed) {
        // Workers came back on new channels with their prefetch.
        let prefetch = u32::from(stack.settings.worker.prefetch);
        let expected = fault.workers() * stack.settings.worker.consumers.max(1);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut prefetches = Vec::new();
        while Instant::now() < deadline {
            prefetches = services
                .consumer_prefetches(&stack.webhooks_queue())
                .await
                .unwrap_or_default();
            if prefetches.len() == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        outcome.check(
            prefetches.len() == expected && prefetches.iter().all(|p| *p == prefetch),
            format!("after reconnecting, consumers' prefetch is {prefetches:?}, expected {expected} × {prefetch}"),
        );
    }
    for index in 0..fault.workers() {
        if fault == Fault::WorkerKillOne && index == 1 {
            continue;
        }
        outcome.check(stack.worker_alive(index), format!("worker {index} exited"));
    }
    outcome.check(stack.ingress_alive(), "the ingress exited");
    Ok(outcome)
}

/// Kills workers while a batch of theirs is stuck inside its transaction: the test holds an
/// `exclusive` lock on `tracking_events` (reads pass, the batch's inserts wait), waits until the
/// broker shows deliveries unacknowledged, SIGKILLs, then lets go. The killed workers' batches
/// are rolled back with their sessions and their messages redelivered. Returns how many were
/// unacknowledged at the kill.
async fn kill_mid_batch(
    stack: &mut Stack,
    services: &Services,
    workers: &[usize],
) -> anyhow::Result<u64> {
    use sqlx::Executor;
    let store = waybill_store::Store::connect(&stack.database_url(), 1).await?;
    let mut blocker = store.begin().await?;
    (&mut *blocker)
        .execute("lock table tracking_events in exclusive mode")
        .await?;
    let queue = stack.webhooks_queue();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut unacked = 0;
    while Instant::now() < deadline {
        unacked = services.unacked(&queue).await.unwrap_or(0);
        if unacked > 0 {
            // A moment more, so the batch has reached its inserts.
            tokio::time::sleep(Duration::from_millis(300)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for index in workers {
        stack.kill_worker(*index).await;
    }
    blocker.rollback().await?;
    store.close().await;
    anyhow::ensure!(
        unacked > 0,
        "no batch was in flight when the workers were killed"
    );
    Ok(unacked)
}

/// A request whose headers and half of whose body were sent, the rest held back.
struct HalfSentRequest {
    stream: tokio::net::TcpStream,
}

impl HalfSentRequest {
    async fn open(stack: &Stack) -> anyhow::Result<HalfSentRequest> {
        use tokio::io::AsyncWriteExt;
        let (body, signature) = signed_probe(stack)?;
        let mut head = format!(
            "POST /v1/webhooks/{} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            SECRETS[4].0,
            stack.ingress_addr,
            body.len()
        );
        if let Some((name, value)) = signature {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = tokio::net::TcpStream::connect(stack.ingress_addr).await?;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body[..body.len() / 2]).await?;
        stream.flush().await?;
        // Let the ingress start reading it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(HalfSentRequest { stream })
    }

    /// The status line the ingress answered with, if it answered at all.
    async fn answer(mut self) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 512];
        match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buffer)).await {
            Ok(Ok(read)) if read > 0 => {
                let text = String::from_utf8_lossy(&buffer[..read]).into_owned();
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            // EOF or reset: the connection error a courier retries on.
            Ok(_) => None,
            Err(_elapsed) => Some("nothing, and the connection stayed open".to_owned()),
        }
    }
}

/// The `503`s the ingress has answered so far (`waybill_webhooks_received_total` with outcome
/// `unavailable`, over every source).
async fn unavailable_answers(stack: &Stack) -> Option<u64> {
    let text = http()
        .get(format!("{}/metrics", stack.ingress_url()))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let total = text
        .lines()
        .filter(|line| {
            line.starts_with("waybill_webhooks_received_total{")
                && line.contains("outcome=\"unavailable\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(total as u64)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// A signature header: name and value.
type Signature = Option<(String, String)>;

/// A fresh, valid, signed webhook body for the `direct` source.
fn signed_probe(stack: &Stack) -> anyhow::Result<(Vec<u8>, Signature)> {
    let (_, profile_name, secret) = SECRETS[4];
    let profiles = stack.settings.profiles()?;
    let profile = profiles
        .get(profile_name)
        .ok_or_else(|| anyhow::anyhow!("no waybill profile"))?;
    let body = serde_json::to_vec(&serde_json::json!({
        "carrier": "probe",
        "tracking_number": format!("CHECK{:010}", rand::random::<u32>()),
        "status": "InTransit",
        "raw_status": "InTransit",
        "occurred_at": Utc::now().to_rfc3339(),
        "location": "Check Depot",
    }))?;
    let signature = profile.sign(&body, secret, Utc::now());
    Ok((body, signature))
}

async fn post_probe(stack: &Stack) -> anyhow::Result<reqwest::Response> {
    Ok(probe_request(stack)?.send().await?)
}

/// A signed probe, ready to send (building a client and signing are not part of any timing).
fn probe_request(stack: &Stack) -> anyhow::Result<reqwest::RequestBuilder> {
    let (body, signature) = signed_probe(stack)?;
    let mut request = http()
        .post(format!(
            "{}/v1/webhooks/{}",
            stack.ingress_url(),
            SECRETS[4].0
        ))
        .header("content-type", "application/json")
        .body(body);
    if let Some((name, value)) = signature {
        request = request.header(name, value);
    }
    Ok(request)
}

/// Whether the ingress accepts a webhook right now.
async fn accepted_now(stack: &Stack) -> bool {
    match post_probe(stack).await {
        Ok(response) => {
            effects::count_probe_answer(response.status().as_u16());
            response.status().is_success()
        }
        Err(_) => false,
    }
}

/// Sends one webhook that cannot be confirmed now; `Ok(latency)` when it was answered 503 with
/// `Retry-After` within the publish timeout (plus a second), else what happened instead.
async fn unavailable_answer(stack: &Stack) -> Result<Duration, String> {
    let bound =
        Duration::from_millis(stack.settings.ingress.publish_timeout_ms) + Duration::from_secs(1);
    let request = probe_request(stack).map_err(|error| format!("no request: {error:#}"))?;
    let started = Instant::now();
    match request.send().await {
        Ok(response) => {
            let took = started.elapsed();
            let status = response.status().as_u16();
            effects::count_probe_answer(status);
            let retry_after = response.headers().contains_key("retry-after");
            if status == 503 && retry_after && took <= bound {
                Ok(took)
            } else {
                Err(format!(
                    "{status} (Retry-After: {retry_after}) after {} ms",
                    took.as_millis()
                ))
            }
        }
        Err(error) => Err(format!("no answer: {error:#}")),
    }
}

/// The table.
pub struct Table<'a>(pub &'a [Row]);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| fault | requests | accepted | retried | attempts | 503s | connection errors | lost | duplicated effects | recovery | notes |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")?;
        for row in self.0 {
            let (accepted, retried, attempts) = row.ledger.as_ref().map_or((0, 0, 0), |l| {
                (l.requests.accepted, l.requests.retried, l.requests.attempts)
            });
            // Every attempt beyond the first was a retry after a 5xx or a connection error.
            let retries = attempts.saturating_sub(row.requests());
            let (unavailable, connection_errors) = match row.unavailable {
                Some(n) if row.ledger.is_some() => {
                    (n.to_string(), retries.saturating_sub(n).to_string())
                }
                _ => ("?".to_owned(), "?".to_owned()),
            };
            let lost = row.lost().map_or_else(|| "?".to_owned(), |n| n.to_string());
            let duplicated = row.effects.map_or_else(
                || "?".to_owned(),
                |e| {
                    let downstream = row.downstream.map_or(0, |d| d.duplicated());
                    (e.duplicated() as u64 + downstream).to_string()
                },
            );
            let recovery = row
                .recovery
                .map_or_else(|| "?".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
            let mut notes = row.notes.clone();
            notes.extend(
                row.failures
                    .iter()
                    .map(|failure| format!("FAILED: {failure}")),
            );
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.fault,
                row.requests(),
                accepted,
                retried,
                attempts,
                unavailable,
                connection_errors,
                lost,
                duplicated,
                recovery,
                notes.join("; ")
            )?;
        }
        Ok(())
    }
}
