//! `spawn_app()` for the polling tests (the pipeline harness's pattern), plus local HTTP servers
//! standing in for the couriers' tracking APIs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_store::testing::TestDatabase;

pub const STARSHIPIT_SECRET: &str = "test-starshipit-secret";

pub fn admin_database_url() -> String {
    std::env::var("WAYBILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn amqp_url() -> String {
    std::env::var("WAYBILL_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// What a fake courier answers to one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub retry_after: Option<String>,
}

impl Answer {
    pub fn ok(body: Vec<u8>) -> Answer {
        Answer {
            status: 200,
            body,
            retry_after: None,
        }
    }

    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            body: br#"{"error":"x"}"#.to_vec(),
            retry_after: None,
        }
    }
}

/// One request the fake courier received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub uri: String,
    pub headers: HeaderMap,
}

type Responder = Box<dyn Fn(&str, usize) -> Answer + Send + Sync>;

/// A courier API on 127.0.0.1: records every request; answers with `responder(uri, n)` where n
/// counts earlier requests with the same URI.
#[derive(Clone)]
pub struct FakeCourier {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    responder: Arc<Mutex<Responder>>,
}

impl FakeCourier {
    pub async fn start(responder: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let url = format!("http://{}", listener.local_addr().expect("fake addr"));
        let courier = FakeCourier {
            url,
            seen: Arc::default(),
            responder: Arc::new(Mutex::new(Box::new(responder))),
        };
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(courier.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        courier
    }

    /// Changes the answers from now on.
    pub fn respond(&self, responder: impl Fn(&str, usize) -> Answer + Send + Sync + 'static) {
        *self.responder.lock().unwrap() = Box::new(responder);
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(State(courier): State<FakeCourier>, request: Request) -> Response {
    let uri = request.uri().to_string();
    let earlier = {
        let mut seen = courier.seen.lock().unwrap();
        let earlier = seen.iter().filter(|s| s.uri == uri).count();
        seen.push(Seen {
            at: Instant::now(),
            uri: uri.clone(),
            headers: request.headers().clone(),
        });
        earlier
    };
    let answer = (courier.responder.lock().unwrap())(&uri, earlier);
    let mut response = (
        StatusCode::from_u16(answer.status).unwrap(),
        [("content-type", "application/json")],
        answer.body,
    )
        .into_response();
    if let Some(retry_after) = answer.retry_after {
        response
            .headers_mut()
            .insert("retry-after", retry_after.parse().unwrap());
    }
    response
}

/// Options for [`spawn_app_with`].
pub struct AppOptions {
    pub workers: usize,
    /// Sources and `[polling]` settings (TOML appended to the base configuration).
    pub extra_toml: String,
}

/// A running ingress and worker(s) on their own database and queue prefix.
pub struct TestApp {
    pub ingress: String,
    pub workers: Vec<String>,
    /// Handles on the workers (clones of what runs), e.g. to drive a scheduler by hand.
    pub worker_handles: Vec<waybill_worker::Worker>,
    pub settings: Settings,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The base configuration: fast ticks, no jitter, one-second back-off, nothing expires.
pub fn polling_toml(extra_polling: &str) -> String {
    format!(
        r#"
        [polling]
        tick_ms = 100
        first_poll_jitter_secs = 0
        jitter = 0.0
        backoff_base_secs = 1
        backoff_max_secs = 4
        expire_after_days = 36500
        lease_secs = 60
        max_rate_wait_ms = 200
        request_timeout_ms = 2000
        {extra_polling}
        "#
    )
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
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
        body_limit_bytes = 262144
        publish_timeout_ms = 2000
        [worker]
        addr = "127.0.0.1:0"
        batch_size = 100
        prefetch = 200
        batch_linger_ms = 5
        consumers = 1
        {extra}
        "#,
        amqp = amqp_url(),
        db_url = db.url(),
        extra = options.extra_toml,
    );
    let settings = Settings::from_toml_str(&toml).expect("test configuration is valid");
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();

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

    let mut workers = Vec::new();
    let mut worker_handles = Vec::new();
    for _ in 0..options.workers {
        let worker = waybill_worker::Worker::build(settings.clone(), shutdown.clone())
            .await
            .expect("build worker");
        worker_handles.push(worker.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind worker");
        workers.push(format!(
            "http://{}",
            listener.local_addr().expect("worker addr")
        ));
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let _ = worker.run(listener, token).await;
        }));
    }

    TestApp {
        ingress,
        workers,
        worker_handles,
        settings,
        db,
        http: reqwest::Client::new(),
        shutdown,
        tasks,
    }
}

impl TestApp {
    /// `POST /v1/shipments` with a JSON body, expecting 202.
    pub async fn register_ok(&self, body: &Value) {
        let response = self.register(body).await;
        let status = response.status();
        let answer = response.text().await.unwrap_or_default();
        assert_eq!(status, 202, "POST /v1/shipments answered {answer}");
    }

    /// `POST /v1/shipments` with a JSON body.
    pub async fn register(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/shipments", self.ingress))
            .json(body)
            .send()
            .await
            .expect("ingress reachable")
    }

    /// `POST /v1/shipments` with raw bytes.
    pub async fn register_raw(&self, body: &[u8]) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/shipments", self.ingress))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("ingress reachable")
    }

    /// A starshipit webhook, signed.
    pub async fn post_starshipit(&self, source: &str, body: &[u8]) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/webhooks/{source}", self.ingress))
            .header("content-type", "application/json")
            .header("x-starshipit-signature", hmac_hex(STARSHIPIT_SECRET, body))
            .body(body.to_vec())
            .send()
            .await
            .expect("ingress reachable")
    }

    /// `GET /v1/shipments/{carrier}/{tracking_number}` on the first worker; `None` on 404.
    pub async fn shipment(&self, carrier: &str, tracking_number: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!(
                "{}/v1/shipments/{carrier}/{tracking_number}",
                self.workers[0]
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
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let shipment = self.shipment(carrier, tracking_number).await;
            if let Some(shipment) = &shipment
                && done(shipment)
            {
                return shipment.clone();
            }
            assert!(
                Instant::now() < deadline,
                "shipment {carrier}/{tracking_number} never reached the expected state: {shipment:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The poll schedule of a shipment of the default tenant (which must exist).
    pub async fn schedule(
        &self,
        carrier: &str,
        tracking_number: &str,
    ) -> waybill_store::polling::PollSchedule {
        self.maybe_schedule(carrier, tracking_number)
            .await
            .expect("shipment exists")
    }

    /// The poll schedule of a shipment of the default tenant, if it exists.
    pub async fn maybe_schedule(
        &self,
        carrier: &str,
        tracking_number: &str,
    ) -> Option<waybill_store::polling::PollSchedule> {
        let key = waybill_store::ShipmentKey {
            tenant: waybill_core::TenantId::default_tenant(),
            carrier: waybill_core::CarrierCode::parse(carrier).unwrap(),
            tracking_number: waybill_core::TrackingNumber::parse(tracking_number).unwrap(),
        };
        let mut conn = self.db.store().acquire().await.expect("connection");
        waybill_store::polling::poll_schedule(&mut conn, &key)
            .await
            .expect("schedule")
    }

    /// Waits (bounded) until `check` holds.
    pub async fn eventually<T>(
        &self,
        within: Duration,
        mut check: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "condition not reached in {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages ready in a queue of this app's topology.
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let connection = waybill_bus::BusConnection::connect(
            self.settings.bus.url.expose_secret(),
            "waybill-test-depth",
        )
        .await
        .expect("broker reachable");
        let depth = connection.queue_stats(queue).await.expect("queue depth");
        let _ = connection.close().await;
        depth.messages
    }

    pub fn topology(&self) -> waybill_bus::Topology {
        waybill_bus::Topology::new(&self.settings.bus.prefix)
    }

    /// Stops everything and removes the database and the queues.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let topology = self.topology();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
        }
        if let Ok(connection) = waybill_bus::BusConnection::connect(
            self.settings.bus.url.expose_secret(),
            "waybill-test-cleanup",
        )
        .await
        {
            let _ = topology.delete(&connection).await;
            let _ = connection.close().await;
        }
        let _ = self.db.drop_database().await;
    }
}

pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The carrier fixtures shipped with the carriers crate.
pub fn fixture(carrier: &str, name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/waybill-carriers/tests/fixtures")
        .join(carrier)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// The starshipit poll fixture, for another tracking number.
pub fn starshipit_poll(tracking_number: &str) -> Vec<u8> {
    String::from_utf8(fixture("starshipit", "poll-track.json"))
        .unwrap()
        .replace("T01234567890", tracking_number)
        .into_bytes()
}

/// The tracking number in a starshipit poll URL (`...?tracking_number=X`).
pub fn tracking_number_in(uri: &str) -> String {
    uri.split("tracking_number=")
        .nth(1)
        .unwrap_or("")
        .split('&')
        .next()
        .unwrap_or("")
        .to_owned()
}

pub fn random_suffix() -> String {
    use rand::Rng;
    let value: u64 = rand::rng().random();
    format!("{value:016x}")
}

/// `[[sources]]` for a starshipit account polled at `url`.
pub fn starshipit_source(id: &str, url: &str, mode: &str) -> String {
    format!(
        r#"
        [[sources]]
        id = "{id}"
        profile = "starshipit"
        secrets = ["{STARSHIPIT_SECRET}"]
        mode = "{mode}"
        credentials = {{ api_key = "ssi-key", subscription_key = "ssi-sub" }}
        poll_base_url = "{url}"
        "#
    )
}

/// Counts requests per tracking number.
pub fn per_tracking_number(seen: &[Seen]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in seen {
        *counts.entry(tracking_number_in(&request.uri)).or_insert(0) += 1;
    }
    counts
}
