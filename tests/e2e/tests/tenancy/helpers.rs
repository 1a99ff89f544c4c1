//! `spawn_app()` for the tenancy tests: an ingress and a worker with API keys required
//! (`[auth] mode = "keys"`, a one-second refresh), two tenants' sources, and every log line of
//! the test binary captured in memory so tests can prove what never appears in it.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_core::TenantId;
use waybill_core::access::Scope;
use waybill_store::testing::TestDatabase;

/// The webhook secret of every source (sources differ by tenant, not by secret).
pub const WEBHOOK_SECRET: &str = "test-tenancy-webhook-secret";

/// The key-set refresh interval the tests run with, and the documented bound on revocation
/// that follows from it (one refresh plus one publish; see docs/security.md).
pub const REFRESH_SECS: u64 = 1;

pub fn admin_database_url() -> String {
    std::env::var("WAYBILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("WAYBILL_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A running ingress and worker on their own database and queue prefix, keys required.
pub struct TestApp {
    pub ingress: String,
    pub worker: String,
    pub settings: Settings,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub async fn spawn_app() -> TestApp {
    install_log_capture();
    let db = TestDatabase::create(&admin_database_url())
        .await
        .expect("create test database");
    let prefix = format!("t{}.", random_suffix());
    let toml = format!(
        r#"
        [auth]
        mode = "keys"
        refresh_secs = {REFRESH_SECS}
        max_snapshot_age_secs = {max_age}
        [bus]
        url = "{amqp}"
        prefix = "{prefix}"
        [database]
        url = "{db_url}"
        max_connections = 4
        [ingress]
        addr = "127.0.0.1:0"
        [worker]
        addr = "127.0.0.1:0"
        batch_size = 100
        prefetch = 200
        batch_linger_ms = 5
        consumers = 1

        [[sources]]
        id = "acme-direct"
        profile = "waybill"
        tenant = "acme"
        secrets = ["{WEBHOOK_SECRET}"]
        [[sources]]
        id = "globex-direct"
        profile = "waybill"
        tenant = "globex"
        secrets = ["{WEBHOOK_SECRET}"]
        "#,
        max_age = REFRESH_SECS * 3,
        amqp = amqp_url(),
        db_url = db.url(),
    );
    let settings = Settings::from_toml_str(&toml).expect("test configuration is valid");
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();

    // The topology exists before anything publishes, as `waybill topology` does in production.
    let connection =
        waybill_bus::BusConnection::connect(settings.bus.url.expose_secret(), "waybill-test-setup")
            .await
            .expect("broker reachable");
    waybill_bus::Topology::new(&settings.bus.prefix)
        .with_delivery_limit(settings.bus.delivery_limit)
        .declare(&connection)
        .await
        .expect("declare topology");
    let _ = connection.close().await;

    let state = waybill_ingress::AppState::build(&settings, shutdown.clone())
        .await
        .expect("build ingress");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind ingress");
    let ingress = format!("http://{}", listener.local_addr().expect("ingress addr"));
    let token = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let _ = waybill_ingress::run(listener, state, token).await;
    }));

    let worker = waybill_worker::Worker::build(settings.clone(), shutdown.clone())
        .await
        .expect("build worker");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind worker");
    let worker_url = format!("http://{}", listener.local_addr().expect("worker addr"));
    let token = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let _ = worker.run(listener, token).await;
    }));

    TestApp {
        ingress,
        worker: worker_url,
        settings,
        db,
        http: reqwest::Client::new(),
        shutdown,
        tasks,
    }
}

impl TestApp {
    /// Creates a key the way `waybill keys create` does; returns the whole key.
    pub async fn create_key(&self, tenant: &str, scopes: &[Scope]) -> String {
        let tenant = TenantId::parse(tenant).expect("tenant id");
        let created = waybill_cli::keys::create(&self.settings, &tenant, scopes, "test")
            .await
            .expect("create a key");
        created.key.expose()
    }

    /// `GET {worker}{path}` with the key as a bearer token, if any.
    pub async fn get(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let authorization = key.map(|key| format!("Bearer {key}"));
        self.get_with(path, authorization.as_deref()).await
    }

    /// `GET {worker}{path}` with this `Authorization` header, if any.
    pub async fn get_with(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.worker));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().await.expect("worker reachable")
    }

    /// Waits (bounded) until the worker has a key set in which `key` is known, i.e. a request
    /// with it is neither 401 nor 503.
    pub async fn wait_until_known(&self, key: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let status = self
                .get("/v1/shipments?order_number=probe", Some(key))
                .await
                .status()
                .as_u16();
            if status != 401 && status != 503 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the key never became known (last status {status})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts a body in Waybill's own format to `/v1/webhooks/{source}`, signed.
    pub async fn post_direct(&self, source: &str, body: &[u8]) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/webhooks/{source}", self.ingress))
            .header("content-type", "application/json")
            .header("waybill-signature", sign_direct(body))
            .body(body.to_vec())
            .send()
            .await
            .expect("ingress reachable")
    }

    /// Waits (bounded) until `GET path` with `key` answers 200, and returns the JSON.
    pub async fn wait_for_json(&self, path: &str, key: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let response = self.get(path, Some(key)).await;
            if response.status().as_u16() == 200 {
                return response.json().await.expect("JSON");
            }
            assert!(Instant::now() < deadline, "{path} never answered 200");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops everything and removes the database and the queues.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        if let Ok(connection) = waybill_bus::BusConnection::connect(
            self.settings.bus.url.expose_secret(),
            "waybill-test-cleanup",
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

/// `Waybill-Signature: t=…,v1=…` for a body, with [`WEBHOOK_SECRET`].
pub fn sign_direct(body: &[u8]) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut signed = format!("{now}.").into_bytes();
    signed.extend_from_slice(body);
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("any length");
    mac.update(&signed);
    format!("t={now},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// One event in Waybill's own format.
pub fn direct_event(
    tracking_number: &str,
    status: &str,
    occurred_at: &str,
    location: &str,
    order_number: &str,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "carrier": "acme-post",
        "tracking_number": tracking_number,
        "status": status,
        "raw_status": status,
        "occurred_at": occurred_at,
        "location": location,
        "order_number": order_number,
    }))
    .expect("serialisable")
}

pub fn random_suffix() -> String {
    use rand::Rng;
    let value: u64 = rand::rng().random();
    format!("{value:016x}")
}

/// Everything every component of this test binary logged so far, at every level.
pub fn captured_logs() -> String {
    let buffer = log_buffer().lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&buffer).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

/// Installs, once, a global subscriber that writes every event at TRACE (the AMQP client's
/// frame-level chatter aside) into [`captured_logs`], as RUST_LOG=trace would to a terminal.
fn install_log_capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let buffer = Arc::clone(log_buffer());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "trace,lapin=info,amq_protocol=info,pinky_swear=info",
            ))
            .with_ansi(false)
            .with_writer(move || CaptureWriter(Arc::clone(&buffer)))
            .try_init();
    });
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
