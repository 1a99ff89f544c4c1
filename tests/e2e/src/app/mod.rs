//! [`TestApp`]: Waybill's services in this test process on a fresh database and queue prefix,
//! started by a builder in any combination.
//!
//! ```ignore
//! let app = TestApp::builder()
//!     .couriers()                        // the standard courier sources (crate::sources)
//!     .config("[ingress]\nbody_limit_bytes = 65536")
//!     .workers(2)
//!     .start()
//!     .await;
//! ```

mod config;
mod fanout;
mod keys;
mod requests;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use waybill_config::{ExposeSecret, Settings};
use waybill_store::testing::TestDatabase;
use waybill_worker::poll::{ManualClock, Scheduler};

use crate::{env, logs, sources};

/// How long a stopped component may take to finish.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// What to start; see [`TestApp::builder`].
#[must_use]
pub struct AppBuilder {
    fragments: Vec<String>,
    workers: usize,
    ingress_amqp_url: Option<String>,
    clock: Option<Arc<ManualClock>>,
    capture_logs: bool,
}

/// A running ingress and workers on their own database and queue prefix.
pub struct TestApp {
    /// The ingress's base URL.
    pub ingress: String,
    /// Each running worker's base URL (an empty string once stopped).
    pub workers: Vec<String>,
    /// Handles on the workers (clones of what runs).
    pub worker_handles: Vec<waybill_worker::Worker>,
    /// A scheduler on the first worker, ticked by the test on its own clock
    /// ([`AppBuilder::scheduler`]).
    pub scheduler: Option<Scheduler>,
    pub settings: Settings,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    ingress_task: Option<JoinHandle<()>>,
    worker_tasks: Vec<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl AppBuilder {
    /// Merges a TOML fragment over the configuration (see `app/config.rs`): its keys replace
    /// those set before, its `[[sources]]` are added.
    pub fn config(mut self, toml: &str) -> Self {
        self.fragments.push(toml.to_owned());
        self
    }

    /// The standard courier sources with their secrets ([`crate::sources`]).
    pub fn couriers(self) -> Self {
        self.config(&sources::couriers_toml())
    }

    /// How many workers to start (1 unless told; 0: nothing consumes).
    pub fn workers(mut self, count: usize) -> Self {
        self.workers = count;
        self
    }

    /// The ingress publishes to this broker URL instead (e.g. a closed port).
    pub fn ingress_amqp_url(mut self, url: &str) -> Self {
        self.ingress_amqp_url = Some(url.to_owned());
        self
    }

    /// The workers' own schedulers off; [`TestApp::scheduler`] is one on the first worker that
    /// the test ticks, reading the time from `clock`.
    pub fn scheduler(mut self, clock: Arc<ManualClock>) -> Self {
        self.clock = Some(clock);
        self.config("[polling]\nenabled = false")
    }

    /// Every log line of this test process, at every level, kept for [`logs::captured`].
    pub fn capture_logs(mut self) -> Self {
        self.capture_logs = true;
        self
    }

    /// Creates the database, declares the topology and starts everything.
    pub async fn start(self) -> TestApp {
        if self.capture_logs {
            logs::capture();
        }
        // Metrics are recorded only once a recorder is installed.
        waybill_telemetry::metrics_handle();
        let db = TestDatabase::create(&env::admin_database_url())
            .await
            .expect("create a test database (is PostgreSQL running?)");
        let base = config::base(&env::amqp_url(), &env::unique_prefix(), db.url());
        let toml = config::merged(&base, &self.fragments);
        let settings = Settings::from_toml_str(&toml).expect("test configuration is valid");
        declare_topology(&settings).await;

        let mut app = TestApp {
            ingress: String::new(),
            workers: Vec::new(),
            worker_handles: Vec::new(),
            scheduler: None,
            settings,
            db,
            http: reqwest::Client::new(),
            shutdown: CancellationToken::new(),
            ingress_task: None,
            worker_tasks: Vec::new(),
        };
        app.start_ingress(self.ingress_amqp_url.as_deref()).await;
        for _ in 0..self.workers {
            app.start_worker(|_| {}).await;
        }
        if let Some(clock) = self.clock {
            let worker = app
                .worker_handles
                .first()
                .expect("a scheduler needs a worker");
            app.scheduler = Some(Scheduler::new(worker, clock).expect("a scheduler"));
        }
        app
    }
}

/// The topology exists before anything publishes, as `waybill topology` does in production.
async fn declare_topology(settings: &Settings) {
    let connection =
        waybill_bus::BusConnection::connect(settings.bus.url.expose_secret(), "waybill-test-setup")
            .await
            .expect("broker reachable (is RabbitMQ running?)");
    waybill_bench::scratch::topology(settings)
        .declare(&connection)
        .await
        .expect("declare topology");
    let _ = connection.close().await;
}

impl TestApp {
    /// Nothing started yet: see [`AppBuilder`].
    pub fn builder() -> AppBuilder {
        AppBuilder {
            fragments: Vec::new(),
            workers: 1,
            ingress_amqp_url: None,
            clock: None,
            capture_logs: false,
        }
    }

    async fn start_ingress(&mut self, amqp_url: Option<&str>) {
        let mut settings = self.settings.clone();
        if let Some(url) = amqp_url {
            settings.bus.url = url.to_owned().into();
        }
        let state = waybill_ingress::AppState::build(&settings, self.shutdown.clone())
            .await
            .expect("build ingress");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ingress");
        self.ingress = format!("http://{}", listener.local_addr().expect("ingress addr"));
        let token = self.shutdown.clone();
        self.ingress_task = Some(tokio::spawn(async move {
            let _ = waybill_ingress::run(listener, state, token).await;
        }));
    }

    /// Starts one more worker with the app's settings as `tweak` changes them; returns its
    /// index.
    pub async fn start_worker(&mut self, tweak: impl FnOnce(&mut Settings)) -> usize {
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        let shutdown = self.shutdown.child_token();
        let worker = waybill_worker::Worker::build(settings, shutdown.clone())
            .await
            .expect("build worker");
        self.worker_handles.push(worker.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind worker");
        self.workers.push(format!(
            "http://{}",
            listener.local_addr().expect("worker addr")
        ));
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let _ = worker.run(listener, token).await;
        });
        self.worker_tasks.push(Some((shutdown, task)));
        self.worker_tasks.len() - 1
    }

    /// Stops a worker (as SIGTERM does: in-flight work finishes within its grace) and waits.
    pub async fn stop_worker(&mut self, index: usize) {
        if let Some((shutdown, task)) = self.worker_tasks[index].take() {
            shutdown.cancel();
            let _ = tokio::time::timeout(STOP_GRACE, task).await;
            self.workers[index].clear();
        }
    }

    /// The first worker's base URL.
    pub fn worker(&self) -> &str {
        &self.workers[0]
    }

    /// The app's queue and exchange names.
    pub fn topology(&self) -> waybill_bus::Topology {
        waybill_bus::Topology::new(&self.settings.bus.prefix)
    }

    /// Stops everything and removes the database and the queues.
    pub async fn shutdown(mut self) {
        for index in 0..self.worker_tasks.len() {
            self.stop_worker(index).await;
        }
        self.shutdown.cancel();
        if let Some(task) = self.ingress_task.take() {
            let _ = tokio::time::timeout(STOP_GRACE, task).await;
        }
        waybill_bench::scratch::remove(&self.settings, Some(self.db), "waybill-test-cleanup").await;
    }
}
