//! The worker: consumes the inbound queue in batches and merges each batch into Postgres in one
//! transaction, then acknowledges it; serves the shipments API, health and metrics.
//!
//! **Invariant:** a message is acknowledged only after the transaction that applied it
//! committed; a message that cannot be applied is dead-lettered with its reason, never retried
//! forever and never silently dropped.

mod api;
mod auth;
mod batch;
pub mod cohorts;
mod consume;
pub mod fanout;
pub mod poll;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use waybill_bus::{Publisher, Topology};
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_http::auth::KeyGate;
use waybill_store::Store;

pub use api::openapi;
pub use batch::{BatchOutcome, Batcher};

/// Everything the worker's tasks share.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    store: Store,
    topology: Topology,
    publisher: Publisher,
    consumers_up: std::sync::atomic::AtomicUsize,
    keys: KeyGate,
    /// The published bytes of the changes this process merged, for its relay.
    bodies: waybill_store::EncodedBodies,
}

impl FromRef<Worker> for KeyGate {
    fn from_ref(worker: &Worker) -> KeyGate {
        worker.inner.keys.clone()
    }
}

impl Worker {
    /// Connects to Postgres (migrating first when `worker.migrate_on_start`) and starts the
    /// publisher used for dead-lettering and, later, fan-out.
    pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Worker> {
        let store = Store::connect(
            settings.database.url.expose_secret(),
            settings.database.max_connections,
        )
        .await?;
        if settings.worker.migrate_on_start {
            store.migrate().await?;
        }
        let (topology, mut config) =
            waybill_http::process::publisher_config(&settings, "waybill-worker-publisher");
        config.channels = 1;
        let keys = KeyGate::start(&settings, "waybill-worker-keys", &shutdown);
        let publisher = Publisher::start(config, shutdown).await?;
        // Enough for a few relay rounds of this process's own changes; none without a relay.
        let bodies = waybill_store::EncodedBodies::new(if settings.fanout.relay_enabled {
            4 * settings.fanout.relay_batch.max(1) as usize
        } else {
            0
        });
        Ok(Worker {
            inner: Arc::new(Inner {
                settings,
                store,
                topology,
                publisher,
                consumers_up: std::sync::atomic::AtomicUsize::new(0),
                keys,
                bodies,
            }),
        })
    }

    /// The store (for tests and the CLI).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The batch applier, for driving the worker step by step in tests.
    pub fn batcher(&self) -> Batcher {
        Batcher::new(self.inner.store.clone(), self.inner.bodies.clone())
    }

    /// Runs the consumers and the HTTP server on `listener` until `shutdown` is cancelled;
    /// then stops consuming, lets in-flight batches finish within the grace period, and closes.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        consume::spawn(&self, &shutdown, &tracker);
        tracker.spawn(auth::publish_key_sets(self.clone(), shutdown.clone()));
        poll::spawn(&self, &tracker, shutdown.clone());
        fanout::spawn(&self, &tracker, shutdown.clone());
        cohorts::spawn(&self, &tracker, shutdown.clone());
        tracker.close();
        let grace = Duration::from_millis(self.inner.settings.worker.shutdown_grace_ms);
        let served = self
            .clone()
            .serve_api(listener, shutdown.clone(), grace)
            .await;
        if served.is_err() {
            // The API could not start or stopped on an error (its pool could not connect, say):
            // the process ends, and its consumers with it.
            shutdown.cancel();
        }
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                "consumers did not stop within the grace period; unacked messages will be redelivered"
            );
        }
        self.inner.publisher.close().await;
        served
    }

    /// Serves the HTTP API on `listener` until `shutdown`, on a thread and a single-threaded
    /// runtime of its own, reading through a pool of its own (`database.api_connections`).
    ///
    /// Under a backlog the merge keeps the process's runtime threads busy with batches, and its
    /// pool's connections with their transactions: a read sharing them waited behind that work
    /// (with both apart, reads' p99 under a drain halved; docs/performance.md). The pool is made
    /// on the API's runtime, so its connections are driven there too.
    async fn serve_api(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let listener = listener.into_std()?;
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("waybill-api".into())
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|runtime| {
                        runtime.block_on(self.api_server(listener, shutdown, grace))
                    });
                let _ = done.send(served);
            })?;
        finished
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the HTTP API's thread panicked")))
    }

    /// The HTTP API's server, on the API's runtime.
    async fn api_server(
        self,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> anyhow::Result<()> {
        let database = &self.inner.settings.database;
        let reads = Store::connect(database.url.expose_secret(), database.api_connections).await?;
        let mut app = api::router(self.clone(), reads.clone());
        if let Some(console) = self.console(&reads)? {
            app = app.nest(waybill_console::BASE, console);
        }
        // The same accept loop as the ingress: a caller gets a bounded time to send its
        // headers, and open connections a bounded time to finish after shutdown.
        let served =
            waybill_http::serve::serve(TcpListener::from_std(listener)?, app, shutdown, grace)
                .await;
        reads.close().await;
        Ok(served?)
    }

    /// The operator console's routes, when `console.enabled` and API keys are on (sign-in is
    /// with a key), on the API's pool `store`. Its key changes are published by
    /// [`auth::publish_once`], this worker's own periodic publish run at once.
    fn console(&self, store: &Store) -> anyhow::Result<Option<axum::Router>> {
        let settings = &self.inner.settings;
        if !settings.console.enabled {
            return Ok(None);
        }
        let KeyGate::Keys(ring) = &self.inner.keys else {
            tracing::warn!(
                "the console is not served: it signs in with API keys, and [auth] mode = \"none\""
            );
            return Ok(None);
        };
        let worker = self.clone();
        let publish_ring = Arc::clone(ring);
        let publish_key_set: waybill_console::PublishKeySet = Arc::new(move || {
            let worker = worker.clone();
            let ring = Arc::clone(&publish_ring);
            Box::pin(async move {
                // A change made in the console is always a new set: publish it as one.
                auth::publish_once(&worker, &ring, &mut None)
                    .await
                    .map_err(|error| format!("{error:#}"))
            })
        });
        let router = waybill_console::router(waybill_console::ConsoleParts {
            settings: settings.clone(),
            store: store.clone(),
            keys: Arc::clone(ring),
            publisher: self.inner.publisher.clone(),
            topology: self.inner.topology.clone(),
            publish_key_set,
        })?;
        Ok(Some(router))
    }

    pub(crate) fn consumers_up(&self) -> usize {
        self.inner
            .consumers_up
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
