//! The faults: each runs load through a fresh stack, injects its fault mid-run, heals it,
//! measures recovery, settles, and reconciles the books.

use std::time::{Duration, Instant};

use waybill_config::ExposeSecret;

use super::blackhole::Blackhole;
use super::downstream::{self, Downstream};
use super::effects;
use super::ledger::{Outcome, Profile, Row};
use super::probes::{accepted_now, http, signed_probe, unavailable_answer, unavailable_answers};
use super::services::Services;
use waybill_e2e::stack::{SECRETS, Stack, is_ready};

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

/// Runs one fault end to end. Never panics: what went wrong is in the row's failures.
pub async fn run(fault: Fault, services: &Services, profile: &Profile) -> Row {
    let mut row = Row::new(fault.name());
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
    let Some(mut stack) = row.record(stack.await, "cannot create the stack") else {
        return row;
    };
    // For the partition, the ingress reaches the broker through a relay that can be frozen.
    let blackhole = if matches!(
        fault,
        Fault::BrokerUnreachable | Fault::BrokerConnectionSilent
    ) {
        let relay = match waybill_e2e::stack::amqp_addr(stack.settings.bus.url.expose_secret()) {
            Ok(upstream) => Blackhole::start(upstream).await,
            Err(error) => Err(error),
        };
        let relay = row.record(relay, "cannot start the relay");
        if let Some(relay) = &relay {
            stack.set_ingress_env(
                "AMQP_URL",
                waybill_e2e::stack::amqp_url_via(
                    stack.settings.bus.url.expose_secret(),
                    relay.addr,
                ),
            );
        }
        relay
    } else {
        None
    };
    // Subscribed and bound before the workers start: every change of the run is owed to them.
    let downstream = if fault == Fault::DownstreamReceiver {
        let started = Downstream::start(&stack.settings, &stack.database_url()).await;
        row.record(started, "cannot start the downstream receivers")
    } else {
        None
    };
    let Some(mut stack) = row.started(stack).await else {
        return row;
    };
    row.load_while(&mut stack, profile, async |stack| {
        inject(
            fault,
            stack,
            services,
            profile,
            blackhole.as_ref(),
            downstream.as_ref(),
        )
        .await
    })
    .await;
    row.check_effects(&stack).await;
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
    row.close(stack).await
}

/// Asks the ingress for a 503 within the publish timeout: `note` says how many milliseconds it
/// took, or it is a failure naming what the ingress answered `when` (the fault is on).
async fn expect_unavailable(
    stack: &Stack,
    outcome: &mut Outcome,
    when: &str,
    note: impl FnOnce(u128) -> String,
) {
    match unavailable_answer(stack).await {
        Ok(took) => outcome.notes.push(note(took.as_millis())),
        Err(answer) => outcome.failures.push(format!(
            "{when} the ingress answered {answer}, not a 503 within the publish timeout"
        )),
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
    match fault {
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
        }
        Fault::BrokerConnectionsClosed => {
            let closed = services.close_all_connections().await;
            outcome.record(closed, "rabbitmqctl close_all_connections");
        }
        Fault::BrokerMemoryAlarm => {
            let raised = services.raise_memory_alarm().await;
            if outcome
                .record(raised, "set_vm_memory_high_watermark 0")
                .is_some()
            {
                // The alarm takes a moment to be raised and reach the connections.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                expect_unavailable(
                    stack,
                    &mut outcome,
                    "while the broker blocked publishing",
                    |ms| format!("503 while blocked in {ms} ms"),
                )
                .await;
                tokio::time::sleep(profile.hold.saturating_sub(Duration::from_millis(1500))).await;
            }
            let cleared = services.clear_memory_alarm().await;
            outcome.record(cleared, "restoring the memory watermark");
        }
        Fault::BrokerUnreachable => {
            let relay = blackhole.ok_or_else(|| anyhow::anyhow!("no relay to freeze"))?;
            relay.partition();
            let began = Instant::now();
            expect_unavailable(stack, &mut outcome, "with the broker unreachable", |ms| {
                format!("503 after {ms} ms with no confirm coming")
            })
            .await;
            tokio::time::sleep(profile.hold.saturating_sub(began.elapsed())).await;
            relay.heal();
        }
        Fault::BrokerConnectionSilent => {
            let relay = blackhole.ok_or_else(|| anyhow::anyhow!("no relay"))?;
            let stranded = relay.strand_existing();
            outcome
                .notes
                .push(format!("{stranded} connection(s) silenced"));
            expect_unavailable(stack, &mut outcome, "with its connection silent", |ms| {
                format!("503 after {ms} ms")
            })
            .await;
            // Nothing to heal: the ingress must notice by itself. Recovery counts from here.
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
        }
        Fault::WorkerKillOne => {
            let unacked = kill_mid_batch(stack, services, &[1]).await;
            if let Some(unacked) = outcome.record(unacked, "killing a worker mid-batch") {
                outcome.notes.push(format!("killed with {unacked} unacked"));
            }
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
        }
        Fault::DownstreamReceiver => {
            let downstream = downstream.ok_or_else(|| anyhow::anyhow!("no receivers"))?;
            let failures = downstream.inject(profile.hold).await;
            outcome.failures.extend(failures);
        }
    }
    // Every fault is healed (or left to heal itself) by now: recovery counts from here.
    let healed = Instant::now();
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
