//! A traced installation: the real binaries exporting to an [`OtlpReceiver`], a courier tracking
//! API and a subscriber standing in for third parties, and payloads carrying distinctive
//! personal data and secrets that no exported span may hold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, Uri};
use waybill_e2e::otlp::{OtlpReceiver, ReceivedSpan};
use waybill_e2e::sources::starshipit_source_with;

use waybill_e2e::stack::{SECRETS, Stack};

/// Personal data planted in every payload: a name, an address, an e-mail, a phone number.
pub const CANARIES: [&str; 4] = [
    "Philippa Otterbury-Quince",
    "17 Marmalade Crescent Wagga Wagga",
    "philippa.otterbury@example.net",
    "+61 455 019 284",
];

/// The polled source's tracking-API credentials (sent to the courier, never exported).
pub const POLL_API_KEY: &str = "otlp-poll-api-key-6d2e91";
/// The polled source's subscription key.
pub const POLL_SUBSCRIPTION_KEY: &str = "otlp-poll-subscription-0b7f44";

/// How fast the worker's loops turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intervals {
    /// Shortened for tests: relay every 20 ms, deliveries every 50 ms, a poll tick every
    /// 100 ms, the key set every second (5 to 10 times production's pace).
    Short,
    /// The defaults a production installation runs with.
    Production,
}

/// How a traced installation is started.
pub struct Options {
    /// The processes' `RUST_LOG`.
    pub rust_log: &'static str,
    /// Loop intervals.
    pub intervals: Intervals,
    /// `OTEL_TRACES_SAMPLER` and its argument.
    pub sampler: (&'static str, &'static str),
    /// Whether API keys guard the platform endpoints (the key set is then published in a loop);
    /// without, shipments can be registered without a key.
    pub api_keys: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rust_log: "info",
            intervals: Intervals::Short,
            sampler: ("parentbased_always_on", ""),
            api_keys: false,
        }
    }
}

/// The installation, its receiver and its third parties.
pub struct Traced {
    pub stack: Stack,
    pub otlp: OtlpReceiver,
    pub courier: Recorder,
    pub subscriber: Recorder,
    /// The subscription's signing secret.
    pub subscription_secret: String,
    http: reqwest::Client,
}

impl Traced {
    /// Starts everything: receiver, courier, subscriber, ingress and one worker, and subscribes
    /// the subscriber to every change.
    pub async fn start(label: &str, options: Options) -> Traced {
        let otlp = OtlpReceiver::start().await.expect("OTLP receiver");
        let courier = Recorder::start(Answer::Poll).await;
        let subscriber = Recorder::start(Answer::NoContent).await;
        let toml = config(&options, &courier.url);
        let mut stack = Stack::create_with(label, 1, options.rust_log, &toml)
            .await
            .expect("create the stack");
        stack.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint());
        // Export every 100 ms instead of 5 s, so a test waits less for its spans.
        stack.set_env("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned());
        stack.set_env("OTEL_TRACES_SAMPLER", options.sampler.0.to_owned());
        stack.set_env("OTEL_TRACES_SAMPLER_ARG", options.sampler.1.to_owned());
        let subscription_secret = subscribe(&stack, &format!("{}/hook", subscriber.url)).await;
        stack.start_all().await.expect("start the stack");
        Traced {
            stack,
            otlp,
            courier,
            subscriber,
            subscription_secret,
            http: reqwest::Client::new(),
        }
    }

    /// Posts a signed webhook for `tracking_number` with personal data in every field that
    /// can hold it, and the courier's `traceparent` if given; returns the signature sent.
    pub async fn post_webhook(&self, tracking_number: &str, traceparent: Option<&str>) -> String {
        let body = serde_json::to_vec(&serde_json::json!({
            "carrier": "acme",
            "tracking_number": tracking_number,
            "status": "OutForDelivery",
            "raw_status": "OutForDelivery",
            "occurred_at": chrono::Utc::now().to_rfc3339(),
            "location": CANARIES[1],
            "message": format!("With driver for {}", CANARIES[0]),
            "customer_name": CANARIES[0],
            "email": CANARIES[2],
            "phone": CANARIES[3],
        }))
        .expect("serialisable");
        let (_, profile, secret) = SECRETS
            .iter()
            .find(|(source, _, _)| *source == "direct")
            .expect("the direct source");
        let profiles = self.stack.settings.profiles().expect("profiles");
        let (header, signature) = profiles
            .get(profile)
            .expect("profile")
            .sign(&body, secret, chrono::Utc::now())
            .expect("the profile signs");
        let mut request = self
            .http
            .post(format!("{}/v1/webhooks/direct", self.stack.ingress_url()))
            .header("content-type", "application/json")
            .header(header, &signature)
            .body(body);
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await.expect("ingress reachable");
        assert_eq!(response.status(), 200, "the webhook was not accepted");
        signature
    }

    /// Registers `tracking_number` for polling at the courier.
    pub async fn register_poll(&self, tracking_number: &str) {
        let response = self
            .http
            .post(format!("{}/v1/shipments", self.stack.ingress_url()))
            .json(&serde_json::json!({"source": "courier", "tracking_number": tracking_number}))
            .send()
            .await
            .expect("ingress reachable");
        assert_eq!(response.status(), 202, "the registration was not accepted");
    }

    /// Everything that must never appear in a span: secrets, signatures, personal data.
    pub fn needles(&self, signatures: &[String]) -> Vec<String> {
        let mut needles: Vec<String> = SECRETS.iter().map(|(_, _, s)| (*s).to_owned()).collect();
        needles.extend([POLL_API_KEY, POLL_SUBSCRIPTION_KEY].map(str::to_owned));
        needles.extend(CANARIES.map(str::to_owned));
        needles.push(self.subscription_secret.clone());
        needles.extend(signatures.iter().cloned());
        needles.extend(self.subscriber.headers("webhook-signature"));
        needles
    }

    /// Stops the processes and drops the database and queues.
    pub async fn destroy(self) {
        self.stack.destroy().await;
    }
}

fn config(options: &Options, courier_url: &str) -> String {
    let loops = match options.intervals {
        Intervals::Short => {
            "relay_interval_ms = 20\ndelivery_interval_ms = 50\n[polling]\ntick_ms = 100\n"
        }
        Intervals::Production => "[polling]\n",
    };
    let auth = match (options.api_keys, options.intervals) {
        (false, _) => "mode = \"none\"",
        (true, Intervals::Short) => "mode = \"keys\"\nrefresh_secs = 1\nmax_snapshot_age_secs = 5",
        (true, Intervals::Production) => "mode = \"keys\"",
    };
    format!(
        r#"
[auth]
{auth}
[fanout]
allowed_hosts = ["127.0.0.1"]
{loops}first_poll_jitter_secs = 0
jitter = 0.0
expire_after_days = 36500
request_timeout_ms = 2000
"#
    ) + &starshipit_source_with(
        "courier",
        courier_url,
        "poll_only",
        "otlp-courier-webhook-secret-4c1a",
        (POLL_API_KEY, POLL_SUBSCRIPTION_KEY),
    )
}

/// Subscribes `url` to every change of the default tenant; returns the signing secret.
async fn subscribe(stack: &Stack, url: &str) -> String {
    use waybill_store::fanout::{self, NewSubscription, SecretText};
    let store = waybill_store::Store::connect(&stack.database_url(), 1)
        .await
        .expect("database");
    let secret = waybill_worker::fanout::WebhookSecret::generate();
    let mut conn = store.acquire().await.expect("connection");
    fanout::insert_subscription(
        &mut conn,
        &NewSubscription {
            tenant: &waybill_core::TenantId::default_tenant(),
            url,
            description: "traces",
            carriers: &[],
            statuses: &[],
            secret: &SecretText::new(secret.clone()),
        },
    )
    .await
    .expect("subscription");
    secret
}

/// What a [`Recorder`] answers.
#[derive(Clone, Copy)]
enum Answer {
    /// A Starshipit tracking answer for the tracking number asked, personal data included.
    Poll,
    /// 204, as a subscriber acknowledging a delivery.
    NoContent,
}

/// A third party on loopback that records the headers of every request it gets.
pub struct Recorder {
    pub url: String,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Recorder {
    async fn start(answer: Answer) -> Recorder {
        let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
        let record = Arc::clone(&seen);
        let router = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let record = Arc::clone(&record);
            async move {
                lock(&record).push(headers);
                match answer {
                    Answer::Poll => (StatusCode::OK, poll_answer(&uri)),
                    Answer::NoContent => (StatusCode::NO_CONTENT, Vec::new()),
                }
            }
        });
        let addr = waybill_e2e::serve(router).await.expect("serve");
        Recorder {
            url: format!("http://{addr}"),
            seen,
        }
    }

    /// The values of header `name` in the requests received so far, in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        lock(&self.seen)
            .iter()
            .filter_map(|headers| headers.get(name)?.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// Waits up to `within` until `count` requests arrived.
    pub async fn wait_requests(&self, count: usize, within: Duration) {
        let what = format!("{} gets {count} requests", self.url);
        waybill_e2e::eventually(within, &what, async || lock(&self.seen).len() >= count).await;
    }

    /// Waits up to `within` for a request whose `traceparent` satisfies `wanted`.
    pub async fn traceparent(&self, within: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let found = waybill_e2e::eventually_or(within, async || {
            self.headers("traceparent")
                .into_iter()
                .find(|value| wanted(value))
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "no request with the traceparent wanted at {}; seen: {:?}",
                self.url,
                self.headers("traceparent")
            )
        })
    }
}

/// The Starshipit fixture's answer for the tracking number in `uri`, with personal data in
/// every location and message.
fn poll_answer(uri: &Uri) -> Vec<u8> {
    let tracking_number = waybill_e2e::sources::tracking_number_in(&uri.to_string());
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crates/waybill-carriers/tests/fixtures/starshipit/poll-track.json"
    );
    let fixture = std::fs::read_to_string(path).expect("the starshipit poll fixture");
    fixture
        .replace("T01234567890", &tracking_number)
        .replace("SYDNEY", CANARIES[1])
        .replace("MELBOURNE", CANARIES[1])
        .replace(
            "Shipment picked up",
            &format!("Picked up from {}", CANARIES[0]),
        )
        .into_bytes()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The trace and span id of a `traceparent`, and whether it is sampled.
pub fn parse_traceparent(value: &str) -> (String, String, bool) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "not a traceparent: {value}");
    (parts[1].to_owned(), parts[2].to_owned(), parts[3] == "01")
}

/// The one span of `trace_id` named `name`.
pub fn one<'a>(spans: &'a [ReceivedSpan], trace_id: &str, name: &str) -> &'a ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == trace_id && span.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name} in trace {trace_id}, found {}: {}",
        found.len(),
        names_by_trace(spans, trace_id)
    );
    found[0]
}

/// The root spans (passes) that link to span `span_id`.
pub fn linking_to<'a>(spans: &'a [ReceivedSpan], span_id: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.links.iter().any(|link| link.span_id == span_id))
        .collect()
}

/// `name ×count` of the spans of one trace, for failure messages.
pub fn names_by_trace(spans: &[ReceivedSpan], trace_id: &str) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for span in spans.iter().filter(|span| span.trace_id == trace_id) {
        *counts.entry(span.name.as_str()).or_default() += 1;
    }
    format!("{counts:?}")
}
