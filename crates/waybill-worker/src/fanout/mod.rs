//! Downstream fan-out: every change the merge writes to the outbox reaches the topic exchange
//! `waybill.events` and the HTTP subscriptions that want it, at least once, outside any request
//! path (see `docs/events.md` and `docs/subscriptions.md`).
//!
//! ```text
//!  outbox (Postgres) ──claim SKIP LOCKED──▶ relay ──publish, confirms──▶ waybill.events (topic)
//!        │                                    │ mark published after the confirm
//!        └──claim SKIP LOCKED──▶ fan-out ──▶ deliveries (Postgres, one per subscription)
//!                                                   │ claim due, lease
//!                                                   ▼
//!                              dispatcher ──signed POST (Standard Webhooks)──▶ receivers
//!                                   └── 2xx delivered · 410 disable · else retry per schedule · dead
//! ```
//!
//! * [`relay`]: the publish and fan-out loops ([`Relay`]), and the pruning of what is done
//!   with and older than `fanout.retention`.
//! * [`delivery`]: the dispatcher ([`Dispatcher`]): bounded concurrency overall and per
//!   subscription, outcomes recorded in Postgres.
//! * [`policy`]: what an answer means and when to try again ([`RetryPolicy`], [`Verdict`], [`judge`]).
//! * [`signer`]: `whsec_` secrets and `v1` signatures.
//! * [`ssrf`]: which destinations may be called.

mod delivery;
mod policy;
mod relay;
pub mod signer;
pub mod ssrf;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use delivery::{DispatchRound, Dispatcher, DispatcherError};
pub use policy::{Failed, RetryPolicy, Verdict, judge};
pub use relay::{EVENT_TYPE_HEADER, PublishRound, Relay, TENANT_HEADER};
pub use signer::{InvalidSecret, WebhookSecret, signature_header};
pub use ssrf::{DestinationPolicy, Refused};

use crate::Worker;
use crate::poll::SystemClock;

/// Starts the relay's loops and the dispatcher on `tracker`, as `[fanout]` enables them.
pub(crate) fn spawn(worker: &Worker, tracker: &TaskTracker, shutdown: CancellationToken) {
    let inner = &worker.inner;
    let settings = &inner.settings.fanout;
    let wake = Arc::new(Notify::new());
    if settings.relay_enabled {
        let relay = Relay::with_parts(
            inner.store.clone(),
            inner.publisher.clone(),
            &inner.topology,
            settings,
            Arc::clone(&wake),
            inner.bodies.clone(),
        );
        let interval = Duration::from_millis(settings.relay_interval_ms);
        tracker.spawn(relay::run_publish(
            relay.clone(),
            interval,
            shutdown.clone(),
        ));
        if let Some(retention) = settings.retention.retention() {
            tracker.spawn(relay::run_prune(relay.clone(), retention, shutdown.clone()));
        }
        tracker.spawn(relay::run_fan_out(relay, interval, shutdown.clone()));
    }
    if settings.delivery_enabled {
        match Dispatcher::with_wake(inner.store.clone(), settings, Arc::new(SystemClock), wake) {
            Ok(dispatcher) => {
                tracker.spawn(dispatcher.run(shutdown));
            }
            Err(error) => {
                tracing::error!(error = %error, "webhook deliveries cannot start; they wait in Postgres");
            }
        }
    }
}
