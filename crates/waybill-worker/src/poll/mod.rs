//! Polling: the safety net under webhooks, and the only feed of couriers that cannot push.
//!
//! ```text
//!  shipments (Postgres) ──claim due, SKIP LOCKED, next_poll_at += lease──▶ scheduler ──PollJobV1──▶ waybill.polls
//!        ▲                                                                                        │
//!        └── apply_batch (origin Poll) + outcome (next poll, failures) ◀── poll consumer ◀──────────┘
//!                                                                          │ per-account token bucket
//!                                                                          ▼
//!                                                                   courier tracking API
//! ```
//!
//! * [`scheduler`]: every `polling.tick_ms`, adopts new shipments, claims due ones per source
//!   budget (bounded by the queue's backlog), applies the [`rules`] (webhook recency, terminal
//!   grace, expiry) and publishes one job per slot to poll, with confirms.
//! * [`consumer`]: takes jobs from `waybill.polls`, starts each claim once ([`begin_poll`]),
//!   waits for its account's budget ([`rate_limit`]), calls the courier ([`client`]), maps the
//!   answer with the source's profile and merges the events through the same `apply_batch` as
//!   webhooks, so a scan seen both ways is stored once; then writes the slot's outcome.
//!
//! [`begin_poll`]: waybill_store::polling::begin_poll

mod client;
mod clock;
mod consumer;
mod rate_limit;
mod rules;
mod scheduler;
mod sources;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use waybill_config::{PollingSettings, Settings};

pub use client::{CourierAnswer, CourierClient, retry_after};
pub use clock::{Clock, ManualClock, SystemClock};
pub use rate_limit::{Account, Refusal};
pub use rules::{Decision, Rules};
pub use scheduler::{Scheduler, TickReport, TickTimings, run as run_scheduler};
pub use sources::{PollSources, PolledSource};

use crate::Worker;

/// What the scheduler and the consumers of one worker process share.
pub(crate) struct PollContext {
    pub(crate) sources: PollSources,
    pub(crate) client: CourierClient,
    pub(crate) rules: Rules,
    pub(crate) settings: PollingSettings,
    pub(crate) clock: Arc<dyn Clock>,
}

impl PollContext {
    pub(crate) fn new(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<PollContext> {
        Ok(PollContext {
            sources: PollSources::from_settings(settings)?,
            client: CourierClient::new(&settings.polling)?,
            rules: Rules::from_settings(&settings.polling),
            settings: settings.polling.clone(),
            clock,
        })
    }
}

/// Starts the scheduler and the poll consumer on `tracker` when `polling.enabled`.
pub(crate) fn spawn(worker: &Worker, tracker: &TaskTracker, shutdown: CancellationToken) {
    if !worker.inner.settings.polling.enabled {
        return;
    }
    let context = match PollContext::new(&worker.inner.settings, Arc::new(SystemClock)) {
        Ok(context) => Arc::new(context),
        Err(error) => {
            tracing::error!(error = %error, "polling cannot start; shipments are not polled");
            return;
        }
    };
    let polled: Vec<&str> = context.sources.ids().iter().map(|s| s.as_str()).collect();
    tracing::info!(sources = ?polled, "polling started");
    for source in context.sources.iter() {
        metrics::gauge!("waybill_poll_source_unhealthy", "source" => source.settings.id.as_str().to_owned())
            .set(0.0);
    }
    let scheduler = Scheduler::with_context(worker.clone(), Arc::clone(&context));
    tracker.spawn(scheduler::run(scheduler, shutdown.clone()));
    if !context.sources.ids().is_empty() {
        tracker.spawn(consumer::run(worker.clone(), context, shutdown));
    }
}

/// How long in-flight polls get to finish at shutdown before their jobs are left to the broker.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
