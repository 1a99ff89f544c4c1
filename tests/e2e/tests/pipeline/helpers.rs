//! `spawn_app()` and the helpers the pipeline tests share.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_store::testing::TestDatabase;

/// The secrets every test app configures, by source id.
pub const STARSHIPIT_SECRET: &str = "test-starshipit-secret";
pub const CLICKPOST_KEY: &str = "test-clickpost-key";
pub const AFTERSHIP_SECRET: &str = "test-aftership-secret";
pub const EASYPOST_SECRET: &str = "test-easypost-secret";
pub const DIRECT_SECRET: &str = "test-direct-secret";

pub fn admin_database_url() -> String {
    std::env::var("WAYBILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("WAYBILL_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Options for [`spawn_app_with`].
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Worker processes to run (0: ingress only, nothing consumes).
    pub workers: usize,
    /// Overrides the AMQP URL of the ingress (e.g. a closed port).
    pub ingress_amqp_url: Option<String>,
    /// Extra TOML appended to the generated configuration.
    pub extra_toml: String,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            workers: 1,
            ingress_amqp_url: None,
            extra_toml: String::new(),
        }
    }
}

/// A running ingress and worker(s) on their own database and queue prefix.
pub struct TestApp {
    pub ingress: String,
    pub workers: Vec<String>,
    pub settings: Settings,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let db = TestDatabase::create(&admin_database_url())
        .await
        .expect("create test database");
    let prefix = format!("t{}.", random_suffix());
    let toml = format!(
        r#"
        auth = {{ mode = "none" }} # these tests are about the pipeline; tests/tenancy covers keys
        [bus]
        url = "{amqp}"
        prefix = "{prefix}"
        delivery_limit = 3
        [database]
        url = "{db_url}"
        max_connections = 4
        [ingress]
        addr = "127.0.0.1:0"
        body_limit_bytes = 65536
        publish_timeout_ms = 2000
        [worker]
        addr = "127.0.0.1:0"
        batch_size = 100
        prefetch = 200
        batch_linger_ms = 5
        consumers = 1

        [[sources]]
        id = "starshipit"
        profile = "starshipit"
        secrets = ["{STARSHIPIT_SECRET}"]
        [[sources]]
        id = "clickpost"
        profile = "clickpost"
        secrets = ["{CLICKPOST_KEY}"]
        [[sources]]
        id = "aftership"
        profile = "aftership"
        secrets = ["{AFTERSHIP_SECRET}"]
        [[sources]]
        id = "easypost"
        profile = "easypost"
        secrets = ["{EASYPOST_SECRET}"]
        [[sources]]
        id = "direct"
        profile = "waybill"
        secrets = ["{DIRECT_SECRET}"]
        [[sources]]
        id = "registered-only"
        profile = "waybill"
        secrets = ["{DIRECT_SECRET}"]
        require_registration = true
        {extra}
        "#,
        amqp = amqp_url(),
        db_url = db.url(),
        extra = options.extra_toml,
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

    let mut ingress_settings = settings.clone();
    if let Some(url) = &options.ingress_amqp_url {
        ingress_settings.bus.url = url.clone().into();
    }
    let state = waybill_ingress::AppState::build(&ingress_settings, shutdown.clone())
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

    let mut workers = Vec::new();
    for _ in 0..options.workers {
        workers.push(spawn_worker(&settings, &shutdown, &mut tasks).await);
    }

    TestApp {
        ingress,
        workers,
        settings,
        db,
        http: reqwest::Client::new(),
        shutdown,
        tasks,
    }
}

async fn spawn_worker(
    settings: &Settings,
    shutdown: &CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> String {
    let worker = waybill_worker::Worker::build(settings.clone(), shutdown.clone())
        .await
        .expect("build worker");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind worker");
    let url = format!("http://{}", listener.local_addr().expect("worker addr"));
    let token = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let _ = worker.run(listener, token).await;
    }));
    url
}

impl TestApp {
    /// The first worker's base URL.
    pub fn worker(&self) -> &str {
        &self.workers[0]
    }

    /// Posts `body` to `/v1/webhooks/{source}` with `headers`.
    pub async fn post_webhook(
        &self,
        source: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/v1/webhooks/{source}", self.ingress))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.expect("ingress reachable")
    }

    /// Posts `body` signed the way `source`'s courier signs it.
    pub async fn post_signed(&self, source: &str, body: &[u8]) -> reqwest::Response {
        let headers = sign(source, body);
        self.post_webhook(source, body, &headers).await
    }

    /// `GET /v1/shipments/{carrier}/{tracking_number}` on the worker; `None` on 404.
    pub async fn shipment(&self, carrier: &str, tracking_number: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!(
                "{}/v1/shipments/{carrier}/{tracking_number}",
                self.worker()
            ))
            .send()
            .await
            .expect("worker reachable");
        match response.status().as_u16() {
            200 => Some(response.json().await.expect("shipment JSON")),
            404 => None,
            other => panic!("unexpected status {other} from the shipments API"),
        }
    }

    /// Waits (bounded) until the shipment exists and `done` holds for it.
    pub async fn wait_for_shipment(
        &self,
        carrier: &str,
        tracking_number: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(shipment) = self.shipment(carrier, tracking_number).await {
                if done(&shipment) {
                    return shipment;
                }
                assert!(
                    Instant::now() <= deadline,
                    "shipment {carrier}/{tracking_number} never reached the expected state: {shipment}"
                );
            } else if Instant::now() > deadline {
                panic!("shipment {carrier}/{tracking_number} never appeared");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the webhooks queue is empty and nothing is unacknowledged, i.e. the worker
    /// has applied everything published so far.
    pub async fn drain(&self) {
        let queue = waybill_bus::Topology::new(&self.settings.bus.prefix).webhooks_queue();
        let connection = waybill_bus::BusConnection::connect(
            self.settings.bus.url.expose_secret(),
            "waybill-test-drain",
        )
        .await
        .expect("broker reachable");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut settled = 0;
        while settled < 3 {
            let depth = connection.queue_stats(&queue).await.expect("queue depth");
            if depth.messages == 0 {
                settled += 1;
            } else {
                settled = 0;
            }
            assert!(
                Instant::now() < deadline,
                "queue {queue} did not drain: {depth:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = connection.close().await;
    }

    /// Messages ready in the webhooks queue.
    pub async fn queued(&self) -> u32 {
        let queue = waybill_bus::Topology::new(&self.settings.bus.prefix).webhooks_queue();
        let connection = waybill_bus::BusConnection::connect(
            self.settings.bus.url.expose_secret(),
            "waybill-test-depth",
        )
        .await
        .expect("broker reachable");
        let depth = connection.queue_stats(&queue).await.expect("queue depth");
        let _ = connection.close().await;
        depth.messages
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

/// Signs `body` the way the courier behind `source` does (independently of Waybill's verifier).
pub fn sign(source: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    match source {
        "starshipit" => vec![("x-starshipit-signature", hmac_hex(STARSHIPIT_SECRET, body))],
        "clickpost" => vec![("webhook_key", CLICKPOST_KEY.to_owned())],
        "aftership" => vec![("aftership-hmac-sha256", hmac_base64(AFTERSHIP_SECRET, body))],
        "easypost" => vec![(
            "x-hmac-signature",
            format!("hmac-sha256-hex={}", hmac_hex(EASYPOST_SECRET, body)),
        )],
        "direct" | "registered-only" => {
            let now = chrono::Utc::now().timestamp();
            let mut signed = format!("{now}.").into_bytes();
            signed.extend_from_slice(body);
            vec![(
                "waybill-signature",
                format!("t={now},v1={}", hmac_hex(DIRECT_SECRET, &signed)),
            )]
        }
        other => panic!("no signer for source {other}"),
    }
}

fn hmac_bytes(secret: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_bytes(secret, body))
}

pub fn hmac_base64(secret: &str, body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_bytes(secret, body))
}

/// The carrier fixtures shipped with the carriers crate.
pub fn fixture(carrier: &str, name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(carrier).join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crates/waybill-carriers/tests/fixtures")
}

pub fn random_suffix() -> String {
    use rand::Rng;
    let value: u64 = rand::rng().random();
    format!("{value:016x}")
}

/// A body in Waybill's own format: one event.
pub fn direct_event(
    tracking_number: &str,
    status: &str,
    occurred_at: &str,
    location: &str,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "carrier": "acme",
        "tracking_number": tracking_number,
        "status": status,
        "raw_status": status,
        "occurred_at": occurred_at,
        "location": location,
    }))
    .expect("serialisable")
}
