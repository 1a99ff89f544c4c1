//! The outbox relay: two loops over the outbox, each claiming rows `for update skip locked` so
//! that any number of worker replicas share the work (see `waybill_store::fanout`).
//!
//! * **Publish**: claim the oldest unpublished rows, publish each to `waybill.events` (routing
//!   key `<carrier>.<status>`, persistent, `message_id` = the change's id) with pipelined
//!   confirms, mark the confirmed ones published, commit. A row whose publish failed stays
//!   unpublished and is published by a later round; a crash between the confirms and the commit
//!   publishes those rows again (consumers dedupe on `message_id`).
//! * **Fan-out**: claim the oldest rows not yet fanned out and create their HTTP deliveries, in
//!   one transaction. Independent of the broker, so a broker outage does not stop webhooks.
//!
//! Each round runs in a spawned task, so its transaction is never dropped half-way (shutdown
//! waits for the round), as for the merge's transactions (ARCHITECTURE.md, "Transactions and
//! cancellation").

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use waybill_bus::{OutboundMessage, Publisher, Topology};
use waybill_config::FanoutSettings;
use waybill_store::fanout::{self, FanOutReport, OutboxEntry, Pruned};
use waybill_store::{EncodedBodies, Store, StoreError};
use waybill_telemetry::trace;

use crate::Worker;

/// AMQP header naming the event's `type` (`shipment.status_changed`), so consumers can route
/// without parsing the body.
pub const EVENT_TYPE_HEADER: &str = "x-waybill-event-type";
/// AMQP header naming the event's tenant.
pub const TENANT_HEADER: &str = "x-waybill-tenant";

/// What one publish round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishRound {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows confirmed by the broker and marked published.
    pub published: usize,
    /// Rows whose publish failed (published by a later round).
    pub failed: usize,
    /// The first failure, for the log.
    pub first_error: Option<String>,
}

/// The relay of one worker process. Public so that tests and benchmarks can drive it round by
/// round.
#[derive(Clone)]
pub struct Relay {
    store: Store,
    publisher: Publisher,
    exchange: String,
    tenant_exchange: String,
    batch: u32,
    /// The wait before a delivery's first attempt (the schedule's first entry).
    first_attempt_delay: chrono::Duration,
    /// Woken after a fan-out created deliveries, so this process's dispatcher sends them at once.
    deliveries_created: Arc<Notify>,
    /// The published bytes of the changes this process merged (see [`EncodedBodies`]).
    bodies: EncodedBodies,
}

impl Relay {
    /// The relay of `worker`, with its store, publisher and `[fanout]` settings.
    pub fn new(worker: &Worker) -> Relay {
        Relay::with_parts(
            worker.inner.store.clone(),
            worker.inner.publisher.clone(),
            &worker.inner.topology,
            &worker.inner.settings.fanout,
            Arc::new(Notify::new()),
            worker.inner.bodies.clone(),
        )
    }

    pub(crate) fn with_parts(
        store: Store,
        publisher: Publisher,
        topology: &Topology,
        settings: &FanoutSettings,
        deliveries_created: Arc<Notify>,
        bodies: EncodedBodies,
    ) -> Relay {
        let first_attempt_delay = settings.schedule().first().copied().unwrap_or_default();
        Relay {
            store,
            publisher,
            exchange: topology.events_exchange(),
            tenant_exchange: topology.tenant_events_exchange(),
            batch: settings.relay_batch.max(1),
            first_attempt_delay: chrono::Duration::from_std(first_attempt_delay)
                .unwrap_or_default(),
            deliveries_created,
            bodies,
        }
    }

    /// One publish round (see the module documentation). A round that finds rows is a
    /// `waybill.relay_publish` span linked to the traces of the changes it publishes; an idle
    /// one traces nothing.
    pub async fn publish_once(&self) -> Result<PublishRound, StoreError> {
        let relay = self.clone();
        let pass = trace::Pass::open(tracing::info_span!(
            parent: None,
            "waybill.relay_publish",
            messaging.batch.message_count = tracing::field::Empty
        ));
        let work = async move {
            let (tx, rows) = trace::untraced(async {
                let mut tx = relay.store.begin().await?;
                let rows = fanout::claim_unpublished(&mut tx, relay.batch, &relay.bodies).await?;
                Ok::<_, StoreError>((tx, rows))
            })
            .await?;
            if rows.is_empty() {
                tx.rollback().await?;
                return Ok(PublishRound::default());
            }
            let span = pass.found(rows.iter().filter_map(|row| row.traceparent.as_deref()));
            span.record("messaging.batch.message_count", rows.len());
            relay.publish_rows(tx, rows).instrument(span).await
        };
        tokio::spawn(work).await?
    }

    /// Publishes claimed `rows` with pipelined confirms, marks the confirmed ones published and
    /// commits `tx`.
    async fn publish_rows(
        &self,
        mut tx: waybill_store::Transaction,
        rows: Vec<OutboxEntry>,
    ) -> Result<PublishRound, StoreError> {
        // A change that came from a traced message is published in that message's trace
        // (a `waybill.event_publish` span, open until the confirm); others carry the round's.
        let round_traceparent = trace::current_traceparent();
        let mut event_spans = Vec::new();
        // Each change twice, pipelined: on waybill.events and on waybill.tenant-events.
        let messages: Vec<OutboundMessage> = rows
            .iter()
            .flat_map(|row| {
                let own = row.traceparent.as_deref().and_then(|parent| {
                    let span = tracing::info_span!(parent: None, "waybill.event_publish");
                    trace::set_parent(&span, parent);
                    let own = trace::traceparent_of(&span);
                    event_spans.push(span);
                    own
                });
                let traceparent = own.as_deref().or(round_traceparent.as_deref());
                let message = self.message(row, traceparent);
                let for_tenant = self.tenant_message(&message, row);
                [message, for_tenant]
            })
            .collect();
        let results = self.publisher.publish_many(messages).await;
        drop(event_spans);
        let mut round = PublishRound {
            claimed: rows.len(),
            ..PublishRound::default()
        };
        let mut confirmed = Vec::with_capacity(rows.len());
        let now = Utc::now();
        // A row is published when both of its messages were confirmed.
        let mut results = results.into_iter();
        for row in &rows {
            let result = match (results.next(), results.next()) {
                (Some(Ok(())), Some(Ok(()))) => Ok(()),
                (Some(Err(error)), _) | (_, Some(Err(error))) => Err(error.to_string()),
                _ => Err("no confirm result for the message".to_owned()),
            };
            match result {
                Ok(()) => {
                    confirmed.push(row.id);
                    let lag = (now - row.created_at).to_std().unwrap_or_default();
                    metrics::histogram!("waybill_outbox_publish_lag_seconds")
                        .record(lag.as_secs_f64());
                }
                Err(error) => {
                    round.failed += 1;
                    round.first_error.get_or_insert(error);
                }
            }
        }
        fanout::mark_published(&mut tx, &confirmed).await?;
        tx.commit().await?;
        round.published = confirmed.len();
        metrics::counter!("waybill_outbox_published_total").increment(round.published as u64);
        metrics::counter!("waybill_outbox_publish_failures_total").increment(round.failed as u64);
        Ok(round)
    }

    /// One fan-out round (see the module documentation). One statement claims and fans out, so
    /// a round that fanned something out is a `waybill.relay_fan_out` span covering it, linked
    /// to the traces of the changes; an idle one traces nothing.
    pub async fn fan_out_once(&self) -> Result<FanOutReport, StoreError> {
        let due_at = Utc::now() + self.first_attempt_delay;
        let pass = trace::Pass::open(tracing::info_span!(
            parent: None,
            "waybill.relay_fan_out",
            waybill.outbox.rows = tracing::field::Empty,
            waybill.deliveries.created = tracing::field::Empty,
        ));
        let work = fan_out_in_transaction(self.store.clone(), self.batch, due_at);
        let report = tokio::spawn(trace::untraced(work)).await??;
        trace_round(
            pass,
            report.traceparents.iter().map(String::as_str),
            [
                ("waybill.outbox.rows", report.rows),
                ("waybill.deliveries.created", report.deliveries),
            ],
        );
        if report.deliveries > 0 {
            metrics::counter!("waybill_deliveries_created_total").increment(report.deliveries);
            self.deliveries_created.notify_one();
        }
        Ok(report)
    }

    /// The same message on `waybill.tenant-events`, keyed `<tenant>.<carrier>.<status>`.
    fn tenant_message(&self, message: &OutboundMessage, row: &OutboxEntry) -> OutboundMessage {
        let mut for_tenant = message.clone().routing_optional();
        for_tenant.exchange.clone_from(&self.tenant_exchange);
        for_tenant.routing_key =
            Topology::tenant_event_routing_key(&row.tenant, &row.carrier, row.new_status);
        for_tenant
    }

    /// The message of one outbox row on `waybill.events`.
    fn message(&self, row: &OutboxEntry, traceparent: Option<&str>) -> OutboundMessage {
        let routing_key = Topology::event_routing_key(&row.carrier, row.new_status);
        OutboundMessage::new(self.exchange.clone(), routing_key, row.body.as_slice())
            .with_message_id(row.message_id())
            .with_header(EVENT_TYPE_HEADER, row.event_type.as_str())
            .with_header(TENANT_HEADER, row.tenant.as_str())
            .with_optional_header(trace::TRACEPARENT, traceparent)
    }
}

/// Records a finished round on `pass`'s span when it did something (a count is not zero):
/// linked to the traces of the changes it moved, with its counts, started and ended now, from
/// when the round began. An idle round traces nothing.
fn trace_round<'a>(
    pass: trace::Pass,
    links: impl Iterator<Item = &'a str>,
    counts: [(&'static str, u64); 2],
) {
    if counts.iter().all(|&(_, count)| count == 0) {
        return;
    }
    let span = pass.found(links);
    for (field, count) in counts {
        span.record(field, count);
    }
    span.in_scope(|| {});
}

/// Claims and fans out up to `batch` outbox rows in one transaction (see
/// [`fanout::fan_out_pending`]).
async fn fan_out_in_transaction(
    store: Store,
    batch: u32,
    due_at: chrono::DateTime<Utc>,
) -> Result<FanOutReport, StoreError> {
    let mut tx = store.begin().await?;
    let report = fanout::fan_out_pending(&mut tx, batch, due_at).await?;
    tx.commit().await?;
    Ok(report)
}

/// Runs the publish loop until `shutdown`: a full round is followed at once, an idle one waits
/// `interval`, a failing one backs off up to 5 s.
pub(crate) async fn run_publish(relay: Relay, interval: Duration, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(interval);
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        let wait = match relay.publish_once().await {
            Ok(round) if round.failed > 0 => {
                tracing::warn!(
                    published = round.published,
                    failed = round.failed,
                    error = round.first_error.as_deref().unwrap_or_default(),
                    "outbox rows could not be published; they stay in the outbox"
                );
                backoff.failed()
            }
            Ok(round) if round.claimed >= relay.batch as usize => backoff.busy(),
            Ok(_) => backoff.idle(),
            Err(error) => {
                tracing::warn!(error = %error, "the outbox relay could not read the outbox");
                backoff.failed()
            }
        };
        metrics::histogram!("waybill_outbox_relay_round_seconds")
            .record(started.elapsed().as_secs_f64());
        sleep_or_stop(wait, &shutdown).await;
    }
}

/// Runs the fan-out loop until `shutdown` (waits as in [`run_publish`]).
pub(crate) async fn run_fan_out(relay: Relay, interval: Duration, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(interval);
    while !shutdown.is_cancelled() {
        let wait = match relay.fan_out_once().await {
            Ok(report) if report.rows >= u64::from(relay.batch) => backoff.busy(),
            Ok(_) => backoff.idle(),
            Err(error) => {
                tracing::warn!(error = %error, "the fan-out could not create deliveries");
                backoff.failed()
            }
        };
        sleep_or_stop(wait, &shutdown).await;
    }
}

/// Most outbox rows (and, separately, deliveries) one pruning statement deletes.
const PRUNE_BATCH: u32 = 5_000;
/// How often the relay looks for rows past the retention.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// The pause between two full pruning statements, so that clearing a long backlog (the first
/// start with a retention on a large outbox) leaves the database to the merges.
const PRUNE_PAUSE: Duration = Duration::from_millis(100);

impl Relay {
    /// One pruning statement: deletes outbox rows published and fanned out, and deliveries
    /// delivered, before `before` (see [`fanout::prune`]). Traced only when it deleted something.
    pub async fn prune_once(&self, before: chrono::DateTime<Utc>) -> Result<Pruned, StoreError> {
        let store = self.store.clone();
        let pass = trace::Pass::open(tracing::info_span!(
            parent: None,
            "waybill.relay_prune",
            waybill.pruned.outbox = tracing::field::Empty,
            waybill.pruned.deliveries = tracing::field::Empty,
        ));
        let work = async move {
            let mut conn = store.acquire().await?;
            fanout::prune(&mut conn, before, PRUNE_BATCH).await
        };
        let pruned = tokio::spawn(trace::untraced(work)).await??;
        // A pruning statement moves no change: nothing to link to.
        trace_round(
            pass,
            std::iter::empty(),
            [
                ("waybill.pruned.outbox", pruned.outbox),
                ("waybill.pruned.deliveries", pruned.deliveries),
            ],
        );
        metrics::counter!("waybill_pruned_total", "table" => "outbox").increment(pruned.outbox);
        metrics::counter!("waybill_pruned_total", "table" => "deliveries")
            .increment(pruned.deliveries);
        Ok(pruned)
    }
}

/// Deletes what is older than `retention` and done with (`fanout.retention`), every minute,
/// in statements of at most [`PRUNE_BATCH`] rows, until shutdown.
pub(crate) async fn run_prune(relay: Relay, retention: Duration, shutdown: CancellationToken) {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    while !shutdown.is_cancelled() {
        let before = Utc::now()
            .checked_sub_signed(retention)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        let wait = match relay.prune_once(before).await {
            Ok(pruned) if pruned.outbox.max(pruned.deliveries) >= u64::from(PRUNE_BATCH) => {
                PRUNE_PAUSE
            }
            Ok(_) => PRUNE_INTERVAL,
            Err(error) => {
                // Nothing waits on pruning: the next minute tries again.
                tracing::warn!(error = %error, "the outbox could not be pruned");
                PRUNE_INTERVAL
            }
        };
        sleep_or_stop(wait, &shutdown).await;
    }
}

async fn sleep_or_stop(wait: Duration, shutdown: &CancellationToken) {
    if wait.is_zero() {
        tokio::task::yield_now().await;
        return;
    }
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(wait) => {}
    }
}

/// The wait between rounds: none after a full round, the interval after an idle one, doubling
/// up to 5 s after failures.
struct Backoff {
    interval: Duration,
    failing: Duration,
}

impl Backoff {
    const MAX: Duration = Duration::from_secs(5);

    fn new(interval: Duration) -> Backoff {
        Backoff {
            interval,
            failing: interval,
        }
    }

    fn busy(&mut self) -> Duration {
        self.failing = self.interval;
        Duration::ZERO
    }

    fn idle(&mut self) -> Duration {
        self.failing = self.interval;
        self.interval
    }

    fn failed(&mut self) -> Duration {
        let wait = self.failing;
        self.failing = (self.failing * 2).clamp(self.interval, Self::MAX);
        wait
    }
}
