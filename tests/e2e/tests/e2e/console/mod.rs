//! The operator console in a real browser (headless Chromium over WebDriver) against the real
//! binaries on the real PostgreSQL and RabbitMQ, as a person would use it: sign in, find a
//! shipment that arrived by webhook and by poll (a local server plays the courier's API), see a
//! courier's `<script>` rendered inert, replay a dead letter and see it merged, re-enable a
//! disabled subscription, revoke a key and see its session end, and a read-only key that sees
//! no buttons and whose POSTs get 403. Every page passes axe-core (no serious or critical
//! violation) and does not scroll sideways at 1280 and 390 px; each is photographed.
//!
//! It needs the binaries and Chromium, so it is `#[ignore]`d in a plain `cargo test`:
//!
//! ```sh
//! cargo build --bins && cargo test -p waybill-e2e --test e2e -- --ignored --nocapture console::
//! # refresh the committed screenshots:
//! WAYBILL_CONSOLE_SCREENSHOTS=docs/console cargo test -p waybill-e2e --test e2e -- --ignored console::
//! ```

mod browser;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use waybill_bus::envelope::{InboundEnvelope, WebhookV1};
use waybill_bus::{
    ORIGINAL_EXCHANGE_HEADER, ORIGINAL_ROUTING_KEY_HEADER, OutboundMessage, Publisher,
    PublisherConfig, REASON_HEADER, Topology,
};
use waybill_carriers::UnverifiedRequest;
use waybill_core::access::{ApiKey, Scope};
use waybill_core::{CarrierCode, SourceId, TenantId, TrackingNumber};
use waybill_store::Store;
use waybill_store::fanout::{DisabledReason, NewSubscription, SecretText};

use browser::{Browser, Driver, screenshots_dir};
use waybill_config::ExposeSecret;
use waybill_e2e::sources::{self, STARSHIPIT_SECRET, starshipit_poll, tracking_number_in};
use waybill_e2e::stack::Stack;
use waybill_e2e::{Answer, FakeCourier};

/// The shipment that arrives by webhook (starshipit and the direct source) and by poll.
const TRACKED: &str = "CONSOLE0001";
/// The shipment only a dead letter carries.
const DEAD: &str = "DLQ0001";
const HOSTILE_LOCATION: &str = "<script>document.title='owned'</script>";
const HOSTILE_MESSAGE: &str = "\"><img src=x onerror=\"document.title='owned'\">";
/// Quick deliveries to the local receiver.
const FANOUT: &str = "
[fanout]
relay_interval_ms = 50
delivery_interval_ms = 50
retry_schedule = [\"0ms\", \"200ms\"]
retry_jitter = 0.0
allowed_hosts = [\"127.0.0.1\"]
";

struct Keys {
    admin: ApiKey,
    reader: ApiKey,
    doomed: ApiKey,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs `cargo build --bins` and Chromium; run by scripts/test.sh"]
async fn the_console_in_a_browser() {
    tokio::time::timeout(Duration::from_secs(300), scenario())
        .await
        .expect("the console scenario did not finish within 5 minutes")
        .expect("the console scenario");
}

async fn scenario() -> anyhow::Result<()> {
    let courier =
        FakeCourier::start(|uri, _| Answer::ok(starshipit_poll(&tracking_number_in(uri)))).await;
    let extra = sources::starshipit_source("ssi", &courier.url, "hybrid")
        + &sources::polling_toml(
            "[polling.intervals]\ninterval_secs = 2\nbefore_first_scan_interval_secs = 2",
        )
        + FANOUT;
    let mut stack = Stack::create_with("console", 1, "info", &extra).await?;
    let console_toml = format!(
        "\n[console]\nrefresh_secs = 2\nmetrics_urls = [\"{}/metrics\"]\n",
        stack.ingress_url()
    );
    let config = stack.dir.join("waybill.toml");
    let mut toml = std::fs::read_to_string(&config)?;
    toml.push_str(&console_toml);
    std::fs::write(&config, toml)?;
    stack.start_all().await?;
    let result = run(&stack).await;
    if result.is_ok() {
        stack.destroy().await;
    } else {
        let logs = stack.destroy_keeping_logs().await;
        eprintln!("logs in {}", logs.display());
    }
    result
}

async fn run(stack: &Stack) -> anyhow::Result<()> {
    let store = Store::connect(&stack.database_url(), 2).await?;
    let keys = keys(stack).await?;
    let receiver = Receiver::start(410).await?;
    let subscription = subscribe(&store, &receiver.url).await?;
    post_webhooks(stack).await?;
    bury_a_letter(stack).await?;
    // The receiver answered 410 Gone: the worker disabled the subscription.
    let gone = wait_until(|| async {
        let mut connection = store.acquire().await.ok()?;
        let found = waybill_store::fanout::get_subscription(&mut connection, subscription)
            .await
            .ok()??;
        (found.disabled_reason == Some(DisabledReason::Gone)).then_some(())
    })
    .await;
    anyhow::ensure!(
        gone.is_some(),
        "the subscription was not disabled by the 410"
    );

    let driver = Driver::start().await?;
    let base = stack.worker_url(0);
    let shots = screenshots_dir()?;
    let admin = Browser::open(&driver, &base).await?;
    admin.sign_in(&keys.admin.expose()).await?;
    keyboard_starts_at_the_skip_link(&admin).await?;
    overview(&admin, stack, &shots).await?;
    sources(&admin, &shots).await?;
    shipments(&admin, &shots).await?;
    dead_letters(&admin, &store, &shots).await?;
    subscriptions(&admin, &store, &receiver, subscription, &shots).await?;
    keys_and_revocation(&admin, &driver, &base, &keys, &shots).await?;
    read_only(&driver, &base, &keys, subscription, &store).await?;
    let refused = admin.post_status(&enable_path(subscription), false).await?;
    assert_eq!(refused, 403, "a POST without the CSRF token is refused");
    admin.close().await;
    store.close().await;
    Ok(())
}

/// The console's form action that enables `subscription`.
fn enable_path(subscription: i64) -> String {
    format!("/console/subscriptions/{subscription}/enable")
}

async fn keys(stack: &Stack) -> anyhow::Result<Keys> {
    let tenant = TenantId::default_tenant();
    let create = |scope: Scope, name: &'static str| {
        let tenant = tenant.clone();
        async move {
            let created =
                waybill_cli::keys::create(&stack.settings, &tenant, &[scope], name).await?;
            anyhow::ensure!(created.published, "the key set was not published");
            Ok::<ApiKey, anyhow::Error>(created.key)
        }
    };
    let keys = Keys {
        admin: create(Scope::Admin, "console admin").await?,
        reader: create(Scope::Read, "console reader").await?,
        doomed: create(Scope::Read, "revoked in the test").await?,
    };
    // The key set travels to the worker over the broker: wait until its API knows every key
    // (a known key without the scope gets 403, an unknown one 401).
    let http = reqwest::Client::new();
    for key in [&keys.admin, &keys.reader, &keys.doomed] {
        let known = wait_until(|| async {
            let response = http
                .get(format!(
                    "{}/v1/shipments?order_number=x",
                    stack.worker_url(0)
                ))
                .bearer_auth(key.expose())
                .send()
                .await
                .ok()?;
            (response.status() != 401).then_some(())
        })
        .await;
        anyhow::ensure!(known.is_some(), "the worker never received the key set");
    }
    Ok(keys)
}

/// A downstream receiver on 127.0.0.1 that answers every delivery with the status it is set to.
struct Receiver {
    url: String,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Receiver {
    async fn start(status: u16) -> anyhow::Result<Receiver> {
        let shared = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(status));
        let answer = std::sync::Arc::clone(&shared);
        let app = axum::Router::new().fallback(move || {
            let status = answer.load(std::sync::atomic::Ordering::SeqCst);
            async move { axum::http::StatusCode::from_u16(status).unwrap_or_default() }
        });
        let addr = waybill_e2e::serve(app).await?;
        Ok(Receiver {
            url: format!("http://{addr}/hooks/waybill"),
            status: shared,
        })
    }

    fn answer(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn subscribe(store: &Store, url: &str) -> anyhow::Result<i64> {
    let mut connection = store.acquire().await?;
    let created = waybill_store::fanout::insert_subscription(
        &mut connection,
        &NewSubscription {
            tenant: &TenantId::default_tenant(),
            url,
            description: "order service",
            carriers: &[],
            statuses: &[],
            secret: &SecretText::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        },
    )
    .await?;
    Ok(created.id)
}

fn direct_event(tracking_number: &str, location: &str, message: &str) -> Vec<u8> {
    serde_json::json!({
        "carrier": "starshipit", "tracking_number": tracking_number, "status": "InTransit",
        "occurred_at": "2026-06-11T06:00:00+10:00", "location": location, "message": message,
    })
    .to_string()
    .into_bytes()
}

/// A starshipit webhook (which makes the shipment a polled one of source `ssi`), then a direct
/// event for the same shipment carrying script in its location and message.
async fn post_webhooks(stack: &Stack) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let starshipit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/webhooks/starshipit.json"),
    )?
    .replace("QQQ001737901000931501", TRACKED);
    let posts = [
        (
            "ssi",
            "starshipit",
            STARSHIPIT_SECRET,
            starshipit.into_bytes(),
        ),
        (
            "direct",
            "waybill",
            "faults-direct-secret-9e21",
            direct_event(TRACKED, HOSTILE_LOCATION, HOSTILE_MESSAGE),
        ),
    ];
    for (source, profile, secret, body) in posts {
        let response = post_signed(&http, stack, (source, profile), secret, body).await?;
        anyhow::ensure!(response.status() == 200, "{source}: {}", response.status());
    }
    Ok(())
}

/// Puts a valid webhook envelope on the dead-letter queue, as the worker does with a message it
/// could not merge: replaying it must merge it.
async fn bury_a_letter(stack: &Stack) -> anyhow::Result<()> {
    let profiles = stack.settings.profiles()?;
    let profile = profiles.get("waybill").context("profile")?;
    let body = direct_event(DEAD, "Berlin", "Arrived at the depot");
    let now = Utc::now();
    let (name, value) = profile.sign(&body, "s", now).context("signature")?;
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        axum::http::HeaderName::from_bytes(name.as_bytes())?,
        axum::http::HeaderValue::from_str(&value)?,
    );
    let request = UnverifiedRequest {
        headers: &headers,
        body: &body,
    };
    let verified = profile.verify(request, &["s".to_owned()], now)?;
    let mapped = profile.map_webhook(&verified, now)?;
    let envelope = WebhookV1::new(
        SourceId::parse("direct")?,
        TenantId::default_tenant(),
        false,
        now,
        None,
        mapped.events,
        String::from_utf8(body)?,
        None,
    );
    let id = envelope.id.as_str().to_owned();
    let topology = Topology::new(&stack.settings.bus.prefix);
    let message = OutboundMessage::new(
        topology.dead_exchange(),
        Topology::DEAD_ROUTING_KEY,
        InboundEnvelope::WebhookV1(envelope).encode(),
    )
    .with_message_id(id)
    .with_header(REASON_HEADER, "the database was unavailable (test)")
    .with_header(ORIGINAL_EXCHANGE_HEADER, topology.inbound_exchange())
    .with_header(ORIGINAL_ROUTING_KEY_HEADER, Topology::WEBHOOK_ROUTING_KEY);
    let stop = tokio_util::sync::CancellationToken::new();
    let publisher = Publisher::start(
        PublisherConfig::new(
            stack.settings.bus.url.expose_secret(),
            "console-test-dead",
            topology,
        ),
        stop.clone(),
    )
    .await?;
    anyhow::ensure!(
        publisher.wait_ready(Duration::from_secs(10)).await,
        "publisher not ready"
    );
    publisher.publish(message).await?;
    stop.cancel();
    publisher.close().await;
    Ok(())
}

async fn keyboard_starts_at_the_skip_link(browser: &Browser) -> anyhow::Result<()> {
    browser.visit("/console/overview").await?;
    browser
        .client
        .find(fantoccini::Locator::Css("body"))
        .await?
        .send_keys("\u{E004}")
        .await?;
    let focused = browser
        .eval("return document.activeElement.textContent")
        .await?;
    assert_eq!(
        focused, "Skip to content",
        "Tab reaches the skip link first"
    );
    Ok(())
}

async fn overview(browser: &Browser, stack: &Stack, shots: &Path) -> anyhow::Result<()> {
    // The ingress's counters, read through console.metrics_urls: ssi accepted one webhook.
    wait_for_cell(browser, "accepted-h", "ssi", "1").await?;
    let text = browser.text().await?;
    assert!(
        text.contains("Queues") && text.contains("Worker lag"),
        "{text}"
    );
    // Traffic while the page is open: accepted webhooks and three with a bad signature, which
    // the overview counts by reason and draws per second.
    let http = reqwest::Client::new();
    for round in 0..12 {
        let body = direct_event(&format!("OVERVIEW{round:04}"), "Brisbane", "Sorted");
        post_direct(&http, stack, body, round % 4 == 3).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_for_cell(browser, "rejected-h", "signature (401)", "3").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    browser.check_page("overview", shots).await
}

/// Posts `body` to the direct source, signed (or with a wrong signature).
async fn post_direct(
    http: &reqwest::Client,
    stack: &Stack,
    body: Vec<u8>,
    forged: bool,
) -> anyhow::Result<()> {
    let secret = if forged {
        "not-the-secret"
    } else {
        "faults-direct-secret-9e21"
    };
    let response = post_signed(http, stack, ("direct", "waybill"), secret, body).await?;
    let expected = if forged { 401 } else { 200 };
    anyhow::ensure!(
        response.status() == expected,
        "direct: {}",
        response.status()
    );
    Ok(())
}

/// Posts `body` to the source `source` signed with `secret` the way its `profile` signs.
async fn post_signed(
    http: &reqwest::Client,
    stack: &Stack,
    (source, profile): (&str, &str),
    secret: &str,
    body: Vec<u8>,
) -> anyhow::Result<reqwest::Response> {
    let (name, value) = stack
        .settings
        .profiles()?
        .get(profile)
        .context("profile")?
        .sign(&body, secret, Utc::now())
        .context("signature")?;
    let response = http
        .post(format!("{}/v1/webhooks/{source}", stack.ingress_url()))
        .header("content-type", "application/json")
        .header(name, value)
        .body(body)
        .send()
        .await?;
    Ok(response)
}

/// Reloads the overview until the row `row` of the card headed `card` shows `since_start`.
async fn wait_for_cell(
    browser: &Browser,
    card: &str,
    row: &str,
    since_start: &str,
) -> anyhow::Result<()> {
    let script = format!(
        "return [...document.querySelectorAll('section[aria-labelledby={card}] tbody tr')]
           .filter(r => r.cells[0].innerText === {row:?}).map(r => r.cells[2].innerText).join()"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        browser.visit("/console/overview").await?;
        if browser.eval(&script).await? == since_start {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the overview never showed {row} = {since_start} in {card}: {}",
            browser.text().await?
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn sources(browser: &Browser, shots: &Path) -> anyhow::Result<()> {
    browser.visit("/console/sources").await?;
    let text = browser.text().await?;
    assert!(text.contains("ssi") && text.contains("direct"), "{text}");
    browser.check_page("sources", shots).await?;
    browser.visit("/console/sources/direct").await?;
    let sample = String::from_utf8(direct_event("SAMPLE0001", HOSTILE_LOCATION, "sample"))?;
    browser.type_into("#sample", &sample).await?;
    let text = browser
        .click_then("form.stack button[type=submit]", "It maps to")
        .await?;
    assert!(
        text.contains("It maps to 1 event(s)") && text.contains("SAMPLE0001"),
        "{text}"
    );
    assert!(text.contains(HOSTILE_LOCATION), "shown as text");
    browser.check_page("source-test-event", shots).await
}

async fn shipments(browser: &Browser, shots: &Path) -> anyhow::Result<()> {
    let path = format!("/console/shipments/default/starshipit/{TRACKED}");
    // The poll comes a couple of seconds after the last webhook.
    let text = wait_for_text(browser, &path, "poll").await?;
    assert!(
        text.contains("webhook") && text.contains("MELBOURNE"),
        "{text}"
    );
    assert!(
        text.contains(HOSTILE_LOCATION) && text.contains(HOSTILE_MESSAGE),
        "{text}"
    );
    let title = browser.eval("return document.title").await?;
    assert_ne!(title, "owned", "the courier's script did not run");
    let images = browser
        .eval("return document.querySelectorAll('img').length")
        .await?;
    assert_eq!(images, 0, "the courier's markup made no element");
    assert!(text.contains("Next poll"), "{text}");
    browser.check_page("shipment", shots).await?;
    browser
        .visit(&format!("/console/shipments?tracking_number={TRACKED}"))
        .await?;
    browser.check_page("shipments", shots).await
}

async fn dead_letters(browser: &Browser, store: &Store, shots: &Path) -> anyhow::Result<()> {
    browser.visit("/console/deadletters").await?;
    let text = browser.text().await?;
    assert!(
        text.contains("the database was unavailable (test)"),
        "{text}"
    );
    browser.check_page("deadletters", shots).await?;
    browser.click("input[name=id]").await?;
    browser
        .click_then("form#letters button[type=submit]", "1 replayed.")
        .await?;
    let merged = wait_until(|| async {
        let mut connection = store.acquire().await.ok()?;
        waybill_store::get_shipment(
            &mut connection,
            &TenantId::default_tenant(),
            &CarrierCode::parse("starshipit").ok()?,
            &TrackingNumber::parse(DEAD).ok()?,
        )
        .await
        .ok()
        .flatten()
    })
    .await;
    assert!(merged.is_some(), "the replayed dead letter was merged");
    browser
        .visit(&format!("/console/shipments?tracking_number={DEAD}"))
        .await?;
    assert!(browser.text().await?.contains(DEAD));
    Ok(())
}

async fn subscriptions(
    browser: &Browser,
    store: &Store,
    receiver: &Receiver,
    id: i64,
    shots: &Path,
) -> anyhow::Result<()> {
    browser.visit("/console/subscriptions").await?;
    assert!(
        browser
            .text()
            .await?
            .contains("the receiver answered 410 Gone")
    );
    browser.check_page("subscriptions", shots).await?;
    // The receiver is fixed; re-enable the subscription.
    receiver.answer(200);
    let reenable = format!("button[aria-label='Re-enable subscription {id}']");
    browser.click_then(&reenable, "is enabled again").await?;
    let mut connection = store.acquire().await?;
    let subscription = waybill_store::fanout::get_subscription(&mut connection, id).await?;
    assert!(subscription.context("subscription")?.enabled);
    drop(connection);
    // Its dead delivery (the one answered 410), replayed with the same webhook-id.
    browser
        .visit(&format!("/console/subscriptions/{id}"))
        .await?;
    assert!(browser.text().await?.contains("HTTP 410"));
    let label = browser
        .eval("return document.querySelector('button[aria-label^=\"Replay delivery\"]').getAttribute('aria-label')")
        .await?;
    let delivery: i64 = label
        .as_str()
        .and_then(|label| label.rsplit(' ').next())
        .and_then(|id| id.parse().ok())
        .context("a dead delivery to replay")?;
    let replay = format!("button[aria-label='Replay delivery {delivery}']");
    browser.click_then(&replay, "is pending again").await?;
    let delivered = wait_until(|| async {
        let mut connection = store.acquire().await.ok()?;
        let found = waybill_store::fanout::get_delivery(&mut connection, delivery)
            .await
            .ok()??;
        (found.status == waybill_store::fanout::DeliveryStatus::Delivered).then_some(found)
    })
    .await;
    let delivered = delivered.context("the replayed delivery was delivered")?;
    assert_eq!(delivered.last_status, Some(200));
    browser
        .visit(&format!("/console/subscriptions/{id}"))
        .await?;
    assert!(browser.text().await?.contains("HTTP 200"));
    browser.check_page("subscription", shots).await
}

async fn keys_and_revocation(
    admin: &Browser,
    driver: &Driver,
    base: &str,
    keys: &Keys,
    shots: &Path,
) -> anyhow::Result<()> {
    let victim = Browser::open(driver, base).await?;
    victim.sign_in(&keys.doomed.expose()).await?;
    admin.visit("/console/keys").await?;
    admin.check_page("keys", shots).await?;
    let prefix = keys.doomed.id().public_prefix();
    let revoke = format!("button[aria-label='Revoke {prefix}']");
    admin
        .click_then(&revoke, &format!("{prefix} is revoked."))
        .await?;
    victim.visit("/console/overview").await?;
    assert_eq!(
        victim.path().await?,
        "/console/login",
        "the revoked key's session ended"
    );
    victim.close().await;
    Ok(())
}

async fn read_only(
    driver: &Driver,
    base: &str,
    keys: &Keys,
    subscription: i64,
    store: &Store,
) -> anyhow::Result<()> {
    {
        let mut connection = store.acquire().await?;
        waybill_store::fanout::disable_subscription(
            &mut connection,
            subscription,
            DisabledReason::Manual,
            Utc::now(),
        )
        .await?;
    }
    let reader = Browser::open(driver, base).await?;
    reader.sign_in(&keys.reader.expose()).await?;
    for page in [
        "/console/subscriptions",
        "/console/deadletters",
        "/console/keys",
        "/console/shipments",
    ] {
        reader.visit(page).await?;
        let buttons = reader
            .eval(
                "return document.querySelectorAll('main button, main input[type=checkbox]').length",
            )
            .await?;
        let allowed = i64::from(page == "/console/shipments");
        assert_eq!(
            buttons.as_i64(),
            Some(allowed),
            "{page}: a read key sees no action"
        );
    }
    reader.visit("/console/subscriptions").await?;
    let status = reader.post_status(&enable_path(subscription), true).await?;
    assert_eq!(status, 403, "a read key's POST is refused");
    let mut connection = store.acquire().await?;
    let still = waybill_store::fanout::get_subscription(&mut connection, subscription).await?;
    assert!(
        !still.context("subscription")?.enabled,
        "and changed nothing"
    );
    reader.close().await;
    Ok(())
}

/// Reloads `path` until its text contains `needle` (at most 30 s).
async fn wait_for_text(browser: &Browser, path: &str, needle: &str) -> anyhow::Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        browser.visit(path).await?;
        let text = browser.text().await?;
        if text.contains(needle) {
            return Ok(text);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{path} never showed {needle:?}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls `probe` until it returns `Some` (at most 30 s).
async fn wait_until<T, F, Fut>(probe: F) -> Option<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    waybill_e2e::eventually_or(Duration::from_secs(30), async || probe().await).await
}
