//! The console over HTTP, in-process, on the real Postgres and RabbitMQ (a fresh database and
//! queue prefix per test): sign-in, sessions, CSRF, read-only keys, tenant isolation, escaping
//! of courier text, key revocation ending a session, and the security headers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chrono::Utc;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};
use tokio_util::sync::CancellationToken;
use waybill_bench::scratch::{self, topology};
use waybill_bus::keys::{KeyRing, KeySnapshotV1};
use waybill_bus::{BusConnection, Publisher, PublisherConfig};
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_core::access::{ApiKey, Scope};
use waybill_core::{
    CarrierCode, RawStatus, SourceId, Status, TenantId, TrackingEventDraft, TrackingNumber,
};
use waybill_store::fanout::{DisabledReason, NewSubscription, SecretText};
use waybill_store::testing::TestDatabase;
use waybill_store::{InboundBatch, InboundItem, Store};
use waybill_testkit::env::amqp_url;

const HOSTILE_LOCATION: &str = "<script>document.title='owned'</script>";
const HOSTILE_MESSAGE: &str = "\"><img src=x onerror=alert(1)>";

struct App {
    base: String,
    http: reqwest::Client,
    db: Option<TestDatabase>,
    settings: Settings,
    admin: ApiKey,
    acme_reader: ApiKey,
    api_only: ApiKey,
    stop: CancellationToken,
}

/// Publishes the store's key set into `ring` (the worker also publishes it to the broker).
async fn install_keys(store: &Store, ring: &KeyRing) -> Result<(), String> {
    let mut connection = store.acquire().await.map_err(|e| e.to_string())?;
    let snapshot = waybill_store::keys::key_set_snapshot(&mut connection)
        .await
        .map_err(|e| e.to_string())?;
    ring.offer(&KeySnapshotV1::new(
        snapshot.epoch,
        snapshot.revision,
        snapshot.generated_at,
        snapshot.keys.iter().map(|key| key.to_record()),
    ));
    Ok(())
}

async fn key(store: &Store, tenant: &str, scope: Scope) -> ApiKey {
    let mut connection = store.acquire().await.unwrap();
    let tenant = TenantId::parse(tenant).unwrap();
    waybill_store::keys::create_api_key(&mut connection, &tenant, &[scope], "test")
        .await
        .unwrap()
        .0
}

async fn spawn() -> App {
    let db = TestDatabase::create(&TestDatabase::admin_url())
        .await
        .unwrap();
    let prefix = format!("console{:08x}.", rand::random::<u32>());
    let toml = format!(
        "[bus]\nurl = \"{}\"\nprefix = \"{prefix}\"\n[database]\nurl = \"{}\"\n\
         [[sources]]\nid = \"acme-direct\"\nprofile = \"waybill\"\nsecrets = [\"s1\", \"s2\"]\ntenant = \"acme\"\n\
         [[sources]]\nid = \"globex-direct\"\nprofile = \"waybill\"\nsecrets = [\"s3\"]\ntenant = \"globex\"\n",
        amqp_url(),
        db.url()
    );
    let settings = Settings::from_toml_str(&toml).unwrap();
    let topology = topology(&settings);
    let connection = BusConnection::connect(settings.bus.url.expose_secret(), "console-test-setup")
        .await
        .unwrap();
    topology.declare(&connection).await.unwrap();
    let _ = connection.close().await;

    let store = db.store().clone();
    let admin = key(&store, "default", Scope::Admin).await;
    let acme_reader = key(&store, "acme", Scope::Read).await;
    let api_only = key(&store, "acme", Scope::ShipmentsRead).await;
    let ring = Arc::new(KeyRing::new(Duration::from_secs(60)));
    install_keys(&store, &ring).await.unwrap();

    let stop = CancellationToken::new();
    let publisher = Publisher::start(
        PublisherConfig::new(
            settings.bus.url.expose_secret(),
            "console-test",
            topology.clone(),
        ),
        stop.clone(),
    )
    .await
    .unwrap();
    let (publish_store, publish_ring) = (store.clone(), Arc::clone(&ring));
    let publish_key_set: waybill_console::PublishKeySet = Arc::new(move || {
        let (store, ring) = (publish_store.clone(), Arc::clone(&publish_ring));
        Box::pin(async move { install_keys(&store, &ring).await })
    });
    let console = waybill_console::router(waybill_console::ConsoleParts {
        settings: settings.clone(),
        store,
        keys: ring,
        publisher,
        topology,
        publish_key_set,
    })
    .unwrap();
    let app = Router::new().nest(waybill_console::BASE, console);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
    });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    App {
        base: format!("http://{addr}/console"),
        http,
        db: Some(db),
        settings,
        admin,
        acme_reader,
        api_only,
        stop,
    }
}

struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl App {
    fn store(&self) -> &Store {
        self.db.as_ref().unwrap().store()
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        page(request.send().await.unwrap()).await
    }

    async fn post(&self, path: &str, cookie: &str, fields: &[(&str, &str)]) -> Page {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, cookie)
            .form(fields)
            .send()
            .await
            .unwrap();
        page(response).await
    }

    /// Signs in with `key`; returns the sign-in page's answer and, on success, the cookie.
    async fn sign_in(&self, key: &str) -> (Page, Option<String>) {
        let form = self.get("/login", None).await;
        let login_cookie = cookie_pair(&form.headers, "waybill_console_login").unwrap();
        let token = csrf(&form.body).unwrap();
        let answer = self
            .post("/login", &login_cookie, &[("csrf", &token), ("key", key)])
            .await;
        let session = cookie_pair(&answer.headers, "waybill_console");
        (answer, session)
    }

    async fn session(&self, key: &ApiKey) -> (String, String) {
        let (answer, cookie) = self.sign_in(&key.expose()).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        let cookie = cookie.unwrap();
        let token = csrf(&self.get("/overview", Some(&cookie)).await.body).unwrap();
        (cookie, token)
    }

    async fn destroy(mut self) {
        self.stop.cancel();
        scratch::remove(&self.settings, self.db.take(), "console-test-cleanup").await;
    }
}

async fn page(response: reqwest::Response) -> Page {
    Page {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap_or_default(),
    }
}

/// `name=value` of a `Set-Cookie` answer, for the next request's `Cookie`.
fn cookie_pair(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with(&format!("{name}=")) && !value.contains("Max-Age=0"))
        .and_then(|value| value.split(';').next())
        .map(str::to_owned)
}

fn csrf(html: &str) -> Option<String> {
    let start = html.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_owned())
}

async fn disabled_subscription(store: &Store, tenant: &str, url: &str) -> i64 {
    let mut connection = store.acquire().await.unwrap();
    let tenant = TenantId::parse(tenant).unwrap();
    let created = waybill_store::fanout::insert_subscription(
        &mut connection,
        &NewSubscription {
            tenant: &tenant,
            url,
            description: "",
            carriers: &[],
            statuses: &[],
            secret: &SecretText::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        },
    )
    .await
    .unwrap();
    waybill_store::fanout::disable_subscription(
        &mut connection,
        created.id,
        DisabledReason::Gone,
        Utc::now(),
    )
    .await
    .unwrap();
    created.id
}

async fn is_enabled(store: &Store, id: i64) -> bool {
    let mut connection = store.acquire().await.unwrap();
    waybill_store::fanout::get_subscription(&mut connection, id)
        .await
        .unwrap()
        .unwrap()
        .enabled
}

async fn hostile_shipment(store: &Store, tenant: &str, number: &str) {
    let event = TrackingEventDraft {
        raw_status: RawStatus {
            code: "IT".into(),
            description: Some("<b>bold</b>".into()),
        },
        location: Some(HOSTILE_LOCATION.into()),
        message: Some(HOSTILE_MESSAGE.into()),
        ..TrackingEventDraft::new(
            CarrierCode::parse("waybill").unwrap(),
            TrackingNumber::parse(number).unwrap(),
            Status::InTransit,
            "IT",
            Utc::now(),
        )
    }
    .finish();
    store
        .apply_batch(InboundBatch {
            items: vec![InboundItem {
                tenant: TenantId::parse(tenant).unwrap(),
                source: SourceId::parse("acme-direct").unwrap(),
                require_registration: false,
                events: vec![event],
                received_at: Utc::now(),
                traceparent: None,
            }],
            registrations: Vec::new(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn signing_in_needs_a_console_key_and_a_fresh_form() {
    let app = spawn().await;
    let anonymous = app.get("/overview", None).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers[LOCATION], "/console/login");

    let form = app.get("/login", None).await;
    let login_cookie = cookie_pair(&form.headers, "waybill_console_login").unwrap();
    let forged = app
        .post(
            "/login",
            &login_cookie,
            &[("csrf", "forged"), ("key", &app.admin.expose())],
        )
        .await;
    assert_eq!(
        forged.status,
        StatusCode::FORBIDDEN,
        "a sign-in without the form's token"
    );
    assert!(cookie_pair(&forged.headers, "waybill_console").is_none());

    let (api_only, cookie) = app.sign_in(&app.api_only.expose()).await;
    assert_eq!(
        api_only.status,
        StatusCode::FORBIDDEN,
        "shipments:read is not a console scope"
    );
    assert!(cookie.is_none());
    let (wrong, _) = app
        .sign_in("wbk_aaaaaaaaaaaa_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde")
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        !wrong.body.contains("AbCdEfGhIjKlMnOp"),
        "the key is never echoed"
    );

    let (signed_in, cookie) = app.sign_in(&app.acme_reader.expose()).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    let set = signed_in
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("waybill_console="))
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP without a proxy saying otherwise"
    );
    let overview = app.get("/overview", cookie.as_deref()).await;
    assert_eq!(overview.status, StatusCode::OK, "{}", overview.body);
    let policy = overview.headers[CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"));
    assert!(!overview.body.contains(" style=") && !overview.body.contains("<script>"));
    app.destroy().await;
}

#[tokio::test]
async fn read_keys_see_their_tenant_and_change_nothing() {
    let app = spawn().await;
    let acme = disabled_subscription(app.store(), "acme", "https://acme.example/hook").await;
    let globex = disabled_subscription(app.store(), "globex", "https://globex.example/hook").await;
    hostile_shipment(app.store(), "acme", "ACME0001").await;
    hostile_shipment(app.store(), "globex", "GLOBEX0001").await;
    let (cookie, token) = app.session(&app.acme_reader).await;

    let list = app.get("/subscriptions", Some(&cookie)).await;
    assert!(list.body.contains("acme.example") && !list.body.contains("globex.example"));
    assert!(
        !list.body.contains("Re-enable"),
        "no action buttons for a read key"
    );
    let refused = app
        .post(
            &format!("/subscriptions/{acme}/enable"),
            &cookie,
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!is_enabled(app.store(), acme).await);
    let other = app
        .get(&format!("/subscriptions/{globex}"), Some(&cookie))
        .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    let sources = app.get("/sources", Some(&cookie)).await;
    assert!(sources.body.contains("acme-direct") && !sources.body.contains("globex-direct"));
    let found = app
        .get("/shipments?tracking_number=globex0001", Some(&cookie))
        .await;
    assert!(found.body.contains("No shipment matches"), "{}", found.body);
    let theirs = app
        .get("/shipments/globex/waybill/GLOBEX0001", Some(&cookie))
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);

    let timeline = app
        .get("/shipments/acme/waybill/ACME0001", Some(&cookie))
        .await;
    assert_eq!(timeline.status, StatusCode::OK);
    assert!(!timeline.body.contains("<script>document") && !timeline.body.contains("<img"));
    assert!(timeline.body.contains("&lt;script&gt;document.title="));
    assert!(
        timeline
            .body
            .contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;")
    );
    assert!(timeline.body.contains("&lt;b&gt;bold&lt;/b&gt;"));
    app.destroy().await;
}

#[tokio::test]
async fn forms_without_the_session_token_are_refused() {
    let app = spawn().await;
    let id = disabled_subscription(app.store(), "acme", "https://acme.example/hook").await;
    let (cookie, token) = app.session(&app.admin).await;
    let path = format!("/subscriptions/{id}/enable");
    assert_eq!(
        app.post(&path, &cookie, &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let other_session = app.session(&app.admin).await.1;
    assert_ne!(other_session, token, "each session has its own token");
    let stale = app.post(&path, &cookie, &[("csrf", &other_session)]).await;
    assert_eq!(stale.status, StatusCode::FORBIDDEN);
    assert!(
        !is_enabled(app.store(), id).await,
        "refused forms change nothing"
    );
    let listed = app.get("/subscriptions", Some(&cookie)).await;
    assert!(listed.body.contains("Re-enable"));
    let done = app.post(&path, &cookie, &[("csrf", &token)]).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(is_enabled(app.store(), id).await);
    app.destroy().await;
}

#[tokio::test]
async fn a_key_is_shown_once_and_a_revoked_key_ends_its_session() {
    let app = spawn().await;
    let (admin, token) = app.session(&app.admin).await;
    let created = app
        .post(
            "/keys",
            &admin,
            &[
                ("csrf", &token),
                ("tenant", "acme"),
                ("scope", "read"),
                ("name", "console test"),
            ],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    let start =
        created.body.find(r#"<code id="new-key">"#).unwrap() + r#"<code id="new-key">"#.len();
    let end = created.body[start..].find('<').unwrap();
    let new_key = ApiKey::parse(&created.body[start..start + end]).unwrap();
    let listed = app.get("/keys", Some(&admin)).await;
    assert!(listed.body.contains(&new_key.id().public_prefix()));
    assert!(
        !listed.body.contains(&new_key.expose()),
        "the secret is shown once only"
    );

    let (reader, _) = app.session(&new_key).await;
    assert_eq!(
        app.get("/overview", Some(&reader)).await.status,
        StatusCode::OK
    );
    let revoked = app
        .post(
            &format!("/keys/{}/revoke", new_key.id()),
            &admin,
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    let after = app.get("/overview", Some(&reader)).await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "the revoked key's session ended"
    );
    let again = app.get("/overview", Some(&reader)).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "and stays ended");
    let (refused, _) = app.sign_in(&new_key.expose()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    app.destroy().await;
}
