//! The downstream fault: two HTTP subscribers and a queue bound to `waybill.events` while one
//! subscriber answers 500s, then hangs, then recovers. Afterwards every change in the outbox
//! must have reached the topic and both subscribers at least once (exactly once after deduping
//! on the message id / `webhook-id`), and the healthy subscriber must have kept receiving while
//! the other one failed.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_store::Store;
use waybill_store::fanout::{self, NewSubscription, SecretText};

/// The `[fanout]` settings of the downstream fault's stack: receivers on 127.0.0.1, a schedule
/// short enough for a test and long enough that nothing goes dead (≈ 40 s of retries), and a
/// timeout far shorter than the hang.
pub const FANOUT_TOML: &str = r#"
[fanout]
allowed_hosts = ["127.0.0.1"]
retry_schedule = ["0s", "250ms", "500ms", "1s", "1s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s"]
retry_jitter = 0.2
request_timeout_ms = 1000
connect_timeout_ms = 500
relay_interval_ms = 50
delivery_interval_ms = 100
"#;

const ANSWER_OK: u8 = 0;
const ANSWER_500: u8 = 1;
const ANSWER_HANG: u8 = 2;

/// A local HTTP receiver whose behaviour the fault switches.
pub struct Receiver {
    pub url: String,
    mode: Arc<AtomicU8>,
    /// `webhook-id` → how many times it was answered 2xx.
    delivered: Arc<Mutex<HashMap<String, u32>>>,
    /// Requests answered 2xx, and answered otherwise (500 or left hanging).
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        let mode = Arc::new(AtomicU8::new(ANSWER_OK));
        let delivered: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let app = {
            let (mode, delivered, ok, failed) = (
                Arc::clone(&mode),
                Arc::clone(&delivered),
                Arc::clone(&ok),
                Arc::clone(&failed),
            );
            axum::Router::new().fallback(move |headers: HeaderMap| {
                let (mode, delivered, ok, failed) = (
                    Arc::clone(&mode),
                    Arc::clone(&delivered),
                    Arc::clone(&ok),
                    Arc::clone(&failed),
                );
                async move {
                    match mode.load(Ordering::SeqCst) {
                        ANSWER_500 => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            StatusCode::INTERNAL_SERVER_ERROR
                        }
                        ANSWER_HANG => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            // Far beyond the worker's request timeout: it gives up first.
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            StatusCode::SERVICE_UNAVAILABLE
                        }
                        _ => {
                            let id = headers
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            *delivered.lock().unwrap().entry(id).or_default() += 1;
                            ok.fetch_add(1, Ordering::Relaxed);
                            StatusCode::NO_CONTENT
                        }
                    }
                }
            })
        };
        let addr = waybill_e2e::serve(app).await?;
        Ok(Receiver {
            url: format!("http://{addr}/hook"),
            mode,
            delivered,
            ok,
            failed,
        })
    }

    pub fn answer_500(&self) {
        self.mode.store(ANSWER_500, Ordering::SeqCst);
    }

    pub fn hang(&self) {
        self.mode.store(ANSWER_HANG, Ordering::SeqCst);
    }

    pub fn recover(&self) {
        self.mode.store(ANSWER_OK, Ordering::SeqCst);
    }

    pub fn answered_ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub fn answered_failure(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    fn delivered(&self) -> HashMap<String, u32> {
        self.delivered.lock().unwrap().clone()
    }
}

/// The subscribers and the topic tap of one run.
pub struct Downstream {
    pub flaky: Receiver,
    pub steady: Receiver,
    tap: waybill_e2e::Tap,
}

impl Downstream {
    /// Starts both receivers, subscribes them (every carrier and status) in the stack's
    /// database, and binds a queue with `#` to the stack's `waybill.events`. Before the workers
    /// start, so that every change of the run is owed to all three.
    pub async fn start(settings: &Settings, database_url: &str) -> anyhow::Result<Downstream> {
        let flaky = Receiver::start().await?;
        let steady = Receiver::start().await?;
        let store = Store::connect(database_url, 1).await?;
        let tenant = waybill_core::TenantId::default_tenant();
        {
            let mut conn = store.acquire().await?;
            for (receiver, description) in [(&flaky, "flaky"), (&steady, "steady")] {
                fanout::insert_subscription(
                    &mut conn,
                    &NewSubscription {
                        tenant: &tenant,
                        url: &receiver.url,
                        description,
                        carriers: &[],
                        statuses: &[],
                        secret: &SecretText::new(waybill_worker::fanout::WebhookSecret::generate()),
                    },
                )
                .await?;
            }
        }
        store.pool().close().await;

        let exchange = waybill_bus::Topology::new(&settings.bus.prefix).events_exchange();
        let queue = format!("{}downstream-tap", settings.bus.prefix);
        let tap = waybill_e2e::Tap::bind(settings.bus.url.expose_secret(), &exchange, &queue, "#")
            .await?;
        Ok(Downstream { flaky, steady, tap })
    }

    /// The fault itself: 500s for half the hold, a hang for the other half, then recovery.
    /// Fails when the healthy subscriber stopped receiving while the other one failed.
    pub async fn inject(&self, hold: Duration) -> Vec<String> {
        let mut failures = Vec::new();
        let half = hold / 2;
        for (phase, start) in [
            ("answering 500", Receiver::answer_500 as fn(&Receiver)),
            ("hanging", Receiver::hang),
        ] {
            let steady_before = self.steady.answered_ok();
            start(&self.flaky);
            tokio::time::sleep(half).await;
            if self.steady.answered_ok() == steady_before {
                failures.push(format!(
                    "the healthy subscriber received nothing while the other one was {phase}"
                ));
            }
        }
        self.flaky.recover();
        failures
    }

    /// Waits (bounded) until every change has a delivered delivery for both subscriptions, then
    /// balances the books against the outbox.
    pub async fn reconcile(&self, database_url: &str) -> anyhow::Result<DownstreamLedger> {
        let store = Store::connect(database_url, 1).await?;
        let pool = store.pool();
        let deadline = Instant::now() + Duration::from_secs(90);
        let changes: BTreeSet<String> = loop {
            let changes: Vec<String> =
                sqlx::query_scalar("select 'msg_' || event_id || '_' || version from outbox")
                    .fetch_all(pool)
                    .await?;
            let undelivered: i64 = sqlx::query_scalar(
                "select count(*) from outbox o cross join subscriptions s
                  where not exists (select 1 from deliveries d
                                     where d.subscription_id = s.id and d.outbox_id = o.id
                                       and d.status = 'delivered')",
            )
            .fetch_one(pool)
            .await?;
            let unpublished: i64 = sqlx::query_scalar("select count(*) from outbox_to_publish")
                .fetch_one(pool)
                .await?;
            if undelivered == 0 && unpublished == 0 {
                break changes.into_iter().collect();
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{undelivered} deliveries not delivered and {unpublished} changes not published 90 s after the load"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let dead: i64 = sqlx::query_scalar("select count(*) from deliveries where status = 'dead'")
            .fetch_one(pool)
            .await?;
        store.pool().close().await;

        let mut topic: HashMap<String, u32> = HashMap::new();
        for message in self.tap.drain().await? {
            *topic.entry(message.message_id).or_default() += 1;
        }
        Ok(DownstreamLedger {
            changes: changes.len() as u64,
            dead: dead as u64,
            topic: Tally::of(&changes, &topic),
            flaky: Tally::of(&changes, &self.flaky.delivered()),
            steady: Tally::of(&changes, &self.steady.delivered()),
            flaky_failed_attempts: self.flaky.answered_failure(),
        })
    }
}

/// One channel's books: what reached it, against the changes.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Distinct ids received.
    pub distinct: u64,
    /// Receipts beyond the first of an id (at least once: allowed, deduped by the consumer).
    pub repeats: u64,
    /// Changes never received.
    pub missing: u64,
    /// Ids received that are no change in the outbox (an effect that should not exist).
    pub unexpected: u64,
}

impl Tally {
    fn of(changes: &BTreeSet<String>, received: &HashMap<String, u32>) -> Tally {
        Tally {
            distinct: received.len() as u64,
            repeats: received
                .values()
                .map(|n| u64::from(n.saturating_sub(1)))
                .sum(),
            missing: changes
                .iter()
                .filter(|id| !received.contains_key(*id))
                .count() as u64,
            unexpected: received.keys().filter(|id| !changes.contains(*id)).count() as u64,
        }
    }
}

/// The downstream books of a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct DownstreamLedger {
    pub changes: u64,
    pub dead: u64,
    pub topic: Tally,
    pub flaky: Tally,
    pub steady: Tally,
    pub flaky_failed_attempts: u64,
}

impl DownstreamLedger {
    /// What must hold; each entry a failure.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.changes == 0 {
            failures.push("no change reached the outbox: the run proves nothing".to_owned());
        }
        if self.dead > 0 {
            failures.push(format!("{} deliveries went dead", self.dead));
        }
        if self.flaky_failed_attempts == 0 {
            failures.push("the failing subscriber was never called while failing".to_owned());
        }
        for (channel, tally) in [
            ("waybill.events", self.topic),
            ("the failing subscriber", self.flaky),
            ("the healthy subscriber", self.steady),
        ] {
            if tally.missing > 0 {
                failures.push(format!("{} changes never reached {channel}", tally.missing));
            }
            if tally.unexpected > 0 {
                failures.push(format!(
                    "{channel} received {} ids that are no change",
                    tally.unexpected
                ));
            }
        }
        failures
    }

    /// Effects beyond once per change after deduping on the id: by construction of the tally,
    /// ids that are no change.
    pub fn duplicated(&self) -> u64 {
        self.topic.unexpected + self.flaky.unexpected + self.steady.unexpected
    }

    pub fn note(&self) -> String {
        format!(
            "{} changes; topic {} (+{} repeats), failing subscriber {} (+{} repeats, {} failed attempts), healthy subscriber {} (+{} repeats); 0 missing after dedupe",
            self.changes,
            self.topic.distinct,
            self.topic.repeats,
            self.flaky.distinct,
            self.flaky.repeats,
            self.flaky_failed_attempts,
            self.steady.distinct,
            self.steady.repeats
        )
    }
}
