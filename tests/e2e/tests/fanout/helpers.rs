//! `FanoutApp` (an ingress and workers that can be stopped and started one by one, on their own
//! database and queue prefix), scripted HTTP receivers, and a queue bound to `waybill.events`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_store::fanout::{self, DeliveryRecord};
use waybill_store::testing::TestDatabase;

pub const DIRECT_SECRET: &str = "test-direct-secret";

pub fn admin_database_url() -> String {
    std::env::var("WAYBILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("WAYBILL_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The `[fanout]` section every test app starts from: fast loops, a short schedule, 127.0.0.1
/// allowed (the receivers live there). Tests append keys to change it.
pub const FAST_FANOUT: &str = r#"
relay_interval_ms = 20
delivery_interval_ms = 20
retry_schedule = ["0ms", "150ms", "150ms"]
retry_jitter = 0.0
request_timeout_ms = 2000
connect_timeout_ms = 1000
allowed_hosts = ["127.0.0.1"]
"#;

/// A running ingress and any number of workers on one database and queue prefix.
pub struct FanoutApp {
    pub ingress: String,
    pub settings: Settings,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    ingress_task: tokio::task::JoinHandle<()>,
    workers: Vec<Option<RunningWorker>>,
}

struct RunningWorker {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl FanoutApp {
    /// An app whose `[fanout]` is [`FAST_FANOUT`] plus `fanout_toml`, with one worker.
    pub async fn spawn(fanout_toml: &str) -> FanoutApp {
        let mut app = FanoutApp::spawn_without_workers(fanout_toml).await;
        app.start_worker(|_| {}).await;
        app
    }

    /// The app with no worker yet (start them with [`FanoutApp::start_worker`]).
    pub async fn spawn_without_workers(fanout_toml: &str) -> FanoutApp {
        // Metrics are recorded only once a recorder is installed.
        waybill_telemetry::metrics_handle();
        let db = TestDatabase::create(&admin_database_url())
            .await
            .expect("create test database");
        let prefix = format!("t{}.", random_suffix());
        let toml = format!(
            r#"
            auth = {{ mode = "none" }}
            [bus]
            url = "{amqp}"
            prefix = "{prefix}"
            delivery_limit = 3
            [database]
            url = "{db_url}"
            max_connections = 6
            [ingress]
            addr = "127.0.0.1:0"
            publish_timeout_ms = 2000
            [worker]
            addr = "127.0.0.1:0"
            batch_size = 100
            prefetch = 200
            batch_linger_ms = 5
            consumers = 1
            shutdown_grace_ms = 5000
            [polling]
            enabled = false
            [fanout]
            {fanout}

            [[sources]]
            id = "direct"
            profile = "waybill"
            secrets = ["{DIRECT_SECRET}"]
            [[sources]]
            id = "globex"
            profile = "waybill"
            tenant = "globex"
            secrets = ["{DIRECT_SECRET}"]
            "#,
            amqp = amqp_url(),
            db_url = db.url(),
            fanout = fanout_section(fanout_toml),
        );
        let settings = Settings::from_toml_str(&toml).expect("test configuration is valid");
        let connection = waybill_bus::BusConnection::connect(
            settings.bus.url.expose_secret(),
            "fanout-test-setup",
        )
        .await
        .expect("broker reachable");
        waybill_bus::Topology::new(&settings.bus.prefix)
            .with_delivery_limit(settings.bus.delivery_limit)
            .declare(&connection)
            .await
            .expect("declare topology");
        let _ = connection.close().await;

        let shutdown = CancellationToken::new();
        let state = waybill_ingress::AppState::build(&settings, shutdown.clone())
            .await
            .expect("build ingress");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ingress");
        let ingress = format!("http://{}", listener.local_addr().expect("ingress addr"));
        let token = shutdown.clone();
        let ingress_task = tokio::spawn(async move {
            let _ = waybill_ingress::run(listener, state, token).await;
        });
        FanoutApp {
            ingress,
            settings,
            db,
            http: reqwest::Client::new(),
            shutdown,
            ingress_task,
            workers: Vec::new(),
        }
    }

    /// Starts a worker with the app's settings as `tweak` changes them; returns its index.
    pub async fn start_worker(&mut self, tweak: impl FnOnce(&mut Settings)) -> usize {
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        let shutdown = self.shutdown.child_token();
        let worker = waybill_worker::Worker::build(settings, shutdown.clone())
            .await
            .expect("build worker");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind worker");
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let _ = worker.run(listener, token).await;
        });
        self.workers.push(Some(RunningWorker { shutdown, task }));
        self.workers.len() - 1
    }

    /// Stops a worker (SIGTERM-like: in-flight work finishes within its grace) and waits.
    pub async fn stop_worker(&mut self, index: usize) {
        if let Some(worker) = self.workers[index].take() {
            worker.shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(15), worker.task).await;
        }
    }

    /// Posts one event in Waybill's own format to the `direct` source (or another one), signed.
    pub async fn post_event(&self, source: &str, event: &serde_json::Value) {
        let body = serde_json::to_vec(event).expect("JSON");
        let now = chrono::Utc::now().timestamp();
        let mut signed = format!("{now}.").into_bytes();
        signed.extend_from_slice(&body);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(DIRECT_SECRET.as_bytes())
            .expect("any key length");
        mac.update(&signed);
        let signature = hex::encode(mac.finalize().into_bytes());
        let response = self
            .http
            .post(format!("{}/v1/webhooks/{source}", self.ingress))
            .header("content-type", "application/json")
            .header("waybill-signature", format!("t={now},v1={signature}"))
            .body(body)
            .send()
            .await
            .expect("ingress reachable");
        assert_eq!(response.status(), 200, "the ingress accepted the event");
    }

    /// Subscribes `url` through the CLI's library; returns the id and the secret.
    pub async fn subscribe(
        &self,
        url: &str,
        carriers: &[&str],
        statuses: &[&str],
    ) -> (i64, String) {
        self.subscribe_tenant(url, "default", carriers, statuses)
            .await
    }

    /// [`FanoutApp::subscribe`] for another tenant.
    pub async fn subscribe_tenant(
        &self,
        url: &str,
        tenant: &str,
        carriers: &[&str],
        statuses: &[&str],
    ) -> (i64, String) {
        let (subscription, secret) = waybill_cli::subscriptions::add(
            &self.settings,
            &waybill_cli::subscriptions::AddSubscription {
                url: url.to_owned(),
                tenant: tenant.to_owned(),
                carriers: carriers.iter().map(|c| c.to_string()).collect(),
                statuses: statuses.iter().map(|s| s.to_string()).collect(),
                description: "test".to_owned(),
                secret: None,
            },
        )
        .await
        .expect("subscription added");
        (subscription.id, secret)
    }

    /// Every delivery of a subscription, oldest first.
    pub async fn deliveries(&self, subscription: i64) -> Vec<DeliveryRecord> {
        let mut conn = self.db.store().acquire().await.expect("connection");
        fanout::list_deliveries(&mut conn, subscription)
            .await
            .expect("deliveries")
    }

    /// A subscription as `waybill subscriptions list` shows it.
    pub async fn listed(
        &self,
        subscription: i64,
    ) -> waybill_cli::subscriptions::ListedSubscription {
        waybill_cli::subscriptions::list(&self.settings, None)
            .await
            .expect("list")
            .into_iter()
            .find(|s| s.id == subscription)
            .expect("listed")
    }

    /// Rows in the outbox.
    pub async fn outbox_rows(&self) -> i64 {
        let mut conn = self.db.store().acquire().await.expect("connection");
        waybill_store::count_outbox(&mut conn).await.expect("count")
    }

    /// Declares a queue bound to `waybill.events` with `binding` (e.g. `#`).
    pub async fn bind_events(&self, binding: &str) -> EventsQueue {
        let exchange = waybill_bus::Topology::new(&self.settings.bus.prefix).events_exchange();
        EventsQueue::bind(&self.settings, &exchange, binding).await
    }

    /// Declares a queue bound to `waybill.tenant-events` with `binding` (e.g. `acme.#`).
    pub async fn bind_tenant_events(&self, binding: &str) -> EventsQueue {
        let exchange =
            waybill_bus::Topology::new(&self.settings.bus.prefix).tenant_events_exchange();
        EventsQueue::bind(&self.settings, &exchange, binding).await
    }

    /// The worker API of nobody: metrics come from the process-wide recorder.
    pub fn metrics(&self) -> String {
        waybill_telemetry::render_metrics()
    }

    /// Stops everything and removes the database and the queues.
    pub async fn shutdown(mut self) {
        for index in 0..self.workers.len() {
            self.stop_worker(index).await;
        }
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.ingress_task).await;
        if let Ok(connection) = waybill_bus::BusConnection::connect(
            self.settings.bus.url.expose_secret(),
            "fanout-test-cleanup",
        )
        .await
        {
            let _ = waybill_bus::Topology::new(&self.settings.bus.prefix)
                .delete(&connection)
                .await;
            let _ = connection.close().await;
        }
        let _ = self.db.drop_database().await;
    }
}

/// [`FAST_FANOUT`] with the keys `overrides` sets replaced by its lines.
fn fanout_section(overrides: &str) -> String {
    let key = |line: &str| line.split('=').next().unwrap_or_default().trim().to_owned();
    let overridden: Vec<String> = overrides
        .lines()
        .filter(|line| line.contains('='))
        .map(key)
        .collect();
    let mut lines: Vec<&str> = FAST_FANOUT
        .lines()
        .filter(|line| line.contains('=') && !overridden.contains(&key(line)))
        .collect();
    lines.extend(overrides.lines());
    lines.join("\n")
}

/// One event in Waybill's own format.
pub fn event(
    carrier: &str,
    tracking_number: &str,
    status: &str,
    occurred_at: &str,
) -> serde_json::Value {
    serde_json::json!({
        "carrier": carrier,
        "tracking_number": tracking_number,
        "status": status,
        "raw_status": status,
        "occurred_at": occurred_at,
        "location": "SYDNEY",
    })
}

/// Polls `check` every 20 ms until it holds, for at most `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn random_suffix() -> String {
    use rand::Rng;
    let value: u64 = rand::rng().random();
    format!("{value:016x}")
}

/// How a receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status.
    Status(u16),
    /// This status with a `Retry-After` header.
    RetryAfter(u16, &'static str),
    /// Wait, then this status.
    Slow(Duration, u16),
}

/// A request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Verifies the signature with the `standardwebhooks` crate (not Waybill's signer).
    pub fn verify(&self, secret: &str) -> Result<(), standardwebhooks::WebhookError> {
        standardwebhooks::Webhook::new(secret)?.verify(&self.body, &self.headers)
    }
}

/// A local HTTP receiver on 127.0.0.1 answering from a script (then 200), recording every
/// request (at its arrival) and the most requests it ever had in flight at once.
#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    state: Arc<ReceiverState>,
}

struct ReceiverState {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    received: Mutex<Vec<Received>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Receiver {
    /// Starts a receiver answering `script` in order, then 200.
    pub async fn start(script: Vec<Reply>) -> Receiver {
        Receiver::start_with_default(script, Reply::Status(200)).await
    }

    /// Starts a receiver answering `script` in order, then `default` forever.
    pub async fn start_with_default(script: Vec<Reply>, default: Reply) -> Receiver {
        let state = Arc::new(ReceiverState {
            script: Mutex::new(script.into()),
            default: Mutex::new(default),
            received: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let base = format!("http://{}", listener.local_addr().expect("receiver addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { base, state }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// From now on, answer `reply` when the script is used up.
    pub fn answer_from_now_on(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = reply;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now_in_flight = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state
        .max_in_flight
        .fetch_max(now_in_flight, Ordering::SeqCst);
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    });
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| state.default.lock().unwrap().clone());
    let response = match reply {
        Reply::Status(status) => status_of(status).into_response(),
        Reply::RetryAfter(status, after) => {
            (status_of(status), [("retry-after", after)]).into_response()
        }
        Reply::Slow(wait, status) => {
            tokio::time::sleep(wait).await;
            status_of(status).into_response()
        }
    };
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

fn status_of(status: u16) -> StatusCode {
    StatusCode::from_u16(status).expect("a valid status")
}

/// A queue bound to `waybill.events` (or `waybill.tenant-events`), read with `basic.get`.
pub struct EventsQueue(waybill_e2e::Tap);

/// A message read from an [`EventsQueue`].
pub type EventMessage = waybill_e2e::TappedMessage;

impl EventsQueue {
    async fn bind(settings: &Settings, exchange: &str, binding: &str) -> EventsQueue {
        let queue = format!("{}downstream.{}", settings.bus.prefix, random_suffix());
        let tap =
            waybill_e2e::Tap::bind(settings.bus.url.expose_secret(), exchange, &queue, binding)
                .await
                .expect("bind the downstream queue");
        EventsQueue(tap)
    }

    /// Takes every message waiting (acknowledged).
    pub async fn drain(&self) -> Vec<EventMessage> {
        self.0.drain().await.expect("basic.get")
    }

    /// Collects messages until at least `count` arrived (within `within`), then for a short
    /// while longer to catch any extra, and returns them all.
    pub async fn collect(&self, count: usize, within: Duration) -> Vec<EventMessage> {
        let deadline = Instant::now() + within;
        let mut messages = Vec::new();
        while messages.len() < count && Instant::now() < deadline {
            messages.extend(self.drain().await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        messages.extend(self.drain().await);
        messages
    }

    pub async fn close(self) {
        self.0.close().await;
    }
}
