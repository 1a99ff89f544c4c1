//! Tenants and API keys end to end, on the real services: the 401/403 matrix of every platform
//! endpoint, two tenants tracking the same parcel, revocation within the documented bound, and
//! keys that never show up in logs, in the database or on the broker.

pub(crate) mod helpers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use helpers::{
    ACME_READ, ACME_WRITE, GLOBEX_READ, REFRESH_SECS, TestApp, captured_logs, direct_event,
    spawn_app, spawn_app_with_keys,
};
use serde_json::Value;
use waybill_bus::keys::{KeyRing, KeySubscriberConfig, spawn_key_subscriber};
use waybill_config::ExposeSecret;
use waybill_core::access::{KeyId, Scope};
use waybill_e2e::eventually;

/// The bound docs/security.md promises for a revocation: one refresh interval plus one publish.
/// The slack covers scheduling on a loaded test machine, not a weaker guarantee.
fn revocation_bound() -> Duration {
    Duration::from_secs(REFRESH_SECS) + Duration::from_millis(1500)
}

/// The key's id (`wbk_<id>_…`).
fn id_of(key: &str) -> KeyId {
    KeyId::parse(&key[..16]).expect("a key starts with wbk_<id>")
}

/// The key's secret part.
fn secret_of(key: &str) -> &str {
    &key[17..]
}

async fn assert_refused(response: reqwest::Response, status: u16, error: &str, case: &str) {
    assert_eq!(response.status().as_u16(), status, "{case}");
    if status == 401 {
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{case}: 401 without WWW-Authenticate"
        );
    }
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"], error, "{case}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_platform_endpoint_answers_the_401_403_matrix() {
    let app = spawn_app().await;
    let reader = app.create_key("acme", &[Scope::ShipmentsRead]).await;
    let writer = app.create_key("acme", &[Scope::ShipmentsWrite]).await;
    let admin = app.create_key("ops", &[Scope::Admin]).await;
    let revoked = app.create_key("acme", &[Scope::ShipmentsRead]).await;
    waybill_cli::keys::revoke(&app.settings, &id_of(&revoked))
        .await
        .expect("revoke");
    app.wait_until_known(&reader).await;
    app.wait_until_known(&admin).await;
    let wrong_secret = format!("{}_{}", &reader[..16], "A".repeat(43));
    let unknown_id = format!("wbk_zzzzzzzzzzzz_{}", secret_of(&reader));

    for path in [
        "/v1/shipments/acme-post/NOPE0001",
        "/v1/shipments?order_number=NOPE-1",
    ] {
        let separator = if path.contains('?') { '&' } else { '?' };
        let unauthenticated: [(&str, Option<String>); 6] = [
            ("no header", None),
            ("basic auth", Some("Basic dXNlcjpwYXNz".to_owned())),
            ("not a key", Some("Bearer not-a-key".to_owned())),
            ("wrong secret", Some(format!("Bearer {wrong_secret}"))),
            ("unknown id", Some(format!("Bearer {unknown_id}"))),
            ("revoked", Some(format!("Bearer {revoked}"))),
        ];
        for (case, authorization) in unauthenticated {
            let response = app.get_with(path, authorization.as_deref()).await;
            assert_refused(response, 401, "unauthorized", &format!("{path}: {case}")).await;
        }
        let response = app.get(path, Some(&writer)).await;
        assert_refused(
            response,
            403,
            "forbidden",
            &format!("{path}: no read scope"),
        )
        .await;
        let other_tenant = format!("{path}{separator}tenant=globex");
        let response = app.get(&other_tenant, Some(&reader)).await;
        assert_refused(response, 403, "forbidden", &format!("{path}: other tenant")).await;

        let expected = if path.contains('?') { 200 } else { 404 };
        let own_tenant = format!("{path}{separator}tenant=acme");
        for (case, key, path) in [
            ("reader", &reader, path),
            ("reader naming its tenant", &reader, own_tenant.as_str()),
            ("admin naming a tenant", &admin, other_tenant.as_str()),
            ("admin", &admin, path),
        ] {
            let status = app.get(path, Some(key)).await.status().as_u16();
            assert_eq!(status, expected, "{path}: {case}");
        }
    }

    // POST /v1/shipments on the ingress (issue 4), once it exists: shipments:write, 401/403 first.
    let register = format!("{}/v1/shipments", app.ingress);
    let probe = app
        .http
        .post(&register)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    if matches!(probe.status().as_u16(), 404 | 405) {
        eprintln!("note: the ingress has no POST /v1/shipments yet; its matrix is not checked");
    } else {
        assert_refused(probe, 401, "unauthorized", "POST /v1/shipments: no header").await;
        for (case, key, status, error) in [
            ("wrong secret", &wrong_secret, 401, "unauthorized"),
            ("revoked", &revoked, 401, "unauthorized"),
            ("read only", &reader, 403, "forbidden"),
        ] {
            let response = app
                .http
                .post(&register)
                .bearer_auth(key)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            assert_refused(
                response,
                status,
                error,
                &format!("POST /v1/shipments: {case}"),
            )
            .await;
        }
        let response = app
            .http
            .post(&register)
            .bearer_auth(&writer)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(
            !matches!(status, 401 | 403 | 503),
            "POST /v1/shipments with a writer key: {status}"
        );
    }

    // Health, readiness and metrics stay open.
    for path in ["/healthz", "/metrics"] {
        assert_eq!(app.get(path, None).await.status().as_u16(), 200, "{path}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_tracking_the_same_parcel_see_only_their_own() {
    let (app, [acme, globex]) = spawn_app_with_keys([ACME_READ, GLOBEX_READ]).await;

    // The same scan of the same parcel reaches both merchants (their own orders); globex also
    // gets a later one.
    let scan = |order: &str| {
        direct_event(
            "SAMEPARCEL1",
            "InTransit",
            "2026-03-01T10:00:00Z",
            "Sydney",
            order,
        )
    };
    for (source, body) in [
        ("acme-direct", scan("A-100")),
        ("globex-direct", scan("G-200")),
        (
            "globex-direct",
            direct_event(
                "SAMEPARCEL1",
                "OutForDelivery",
                "2026-03-02T08:00:00Z",
                "Melbourne",
                "G-200",
            ),
        ),
    ] {
        assert_eq!(app.post_signed(source, &body).await.status().as_u16(), 200);
    }

    let path = "/v1/shipments/acme-post/SAMEPARCEL1";
    let globex_view = wait_for_status(&app, path, &globex, "OutForDelivery").await;
    let acme_view = app.wait_for_json(path, &acme).await;
    assert_eq!(acme_view["tenant"], "acme");
    assert_eq!(acme_view["order_number"], "A-100");
    assert_eq!(acme_view["status"], "InTransit");
    assert_eq!(
        acme_view["history"].as_array().unwrap().len(),
        1,
        "{acme_view}"
    );
    assert_eq!(globex_view["tenant"], "globex");
    assert_eq!(globex_view["order_number"], "G-200");
    assert_eq!(
        globex_view["history"].as_array().unwrap().len(),
        2,
        "{globex_view}"
    );
    assert!(!acme_view.to_string().contains("Melbourne"));

    // By order number: each sees its own order, nobody else's.
    let acme_by_order = async |order: &str| -> Value {
        let path = format!("/v1/shipments?order_number={order}");
        app.get(&path, Some(&acme)).await.json().await.unwrap()
    };
    let own = acme_by_order("A-100").await;
    assert_eq!(own["shipments"].as_array().unwrap().len(), 1);
    let other = acme_by_order("G-200").await;
    assert_eq!(other["shipments"], serde_json::json!([]));
    let response = app.get(&format!("{path}?tenant=globex"), Some(&acme)).await;
    assert_eq!(response.status().as_u16(), 403);

    // Two shipments in Postgres; every outbox row (what fan-out publishes) carries its
    // shipment's tenant.
    let pool = app.db.store().pool();
    let tenants: Vec<String> = sqlx::query_scalar(
        "select tenant from shipments where tracking_number = 'SAMEPARCEL1' order by tenant",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(tenants, ["acme", "globex"]);
    let mismatched: i64 = sqlx::query_scalar(
        "select count(*) from outbox o join shipments s on s.id = o.shipment_id where o.tenant <> s.tenant",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(mismatched, 0);
    let outbox_tenants: Vec<String> =
        sqlx::query_scalar("select distinct tenant from outbox order by tenant")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(outbox_tenants, ["acme", "globex"]);
    app.shutdown().await;
}

async fn wait_for_status(app: &TestApp, path: &str, key: &str, status: &str) -> Value {
    eventually(
        Duration::from_secs(20),
        &format!("{path} reaches {status}"),
        async || {
            let view = app.wait_for_json(path, key).await;
            (view["status"] == status).then_some(view)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_stops_working_within_the_documented_bound() {
    let (app, [by_cli, by_sql]) = spawn_app_with_keys([ACME_READ, ACME_READ]).await;

    // A stand-in for another ingress: the same subscriber and ring the ingress runs.
    let ring = Arc::new(KeyRing::new(Duration::from_secs(REFRESH_SECS * 3)));
    let stop = tokio_util::sync::CancellationToken::new();
    let topology = waybill_bus::Topology::new(&app.settings.bus.prefix)
        .with_delivery_limit(app.settings.bus.delivery_limit);
    spawn_key_subscriber(
        KeySubscriberConfig::new(
            app.settings.bus.url.expose_secret(),
            "waybill-test-ingress-keys",
            topology,
        ),
        Arc::clone(&ring),
        stop.clone(),
    );
    let accepts = |ring: &KeyRing, key: &str| {
        ring.current()
            .ok()
            .is_some_and(|keys| keys.authenticate(Some(&format!("Bearer {key}"))).is_ok())
    };
    eventually(
        Duration::from_secs(10),
        "the stand-in ingress learns the keys",
        async || accepts(&ring, &by_cli) && accepts(&ring, &by_sql),
    )
    .await;

    // `waybill keys revoke` publishes the new set itself.
    waybill_cli::keys::revoke(&app.settings, &id_of(&by_cli))
        .await
        .expect("revoke");
    let took = time_until_refused(&app, &ring, &by_cli, &accepts).await;
    eprintln!("revoked by `waybill keys revoke`: refused everywhere after {took:?}");
    assert!(took <= revocation_bound(), "CLI revocation took {took:?}");

    // Revoked behind Waybill's back (plain SQL, nobody publishes): the workers' periodic publish
    // still carries it within the bound.
    let mut connection = app.db.store().acquire().await.unwrap();
    waybill_store::keys::revoke_api_key(&mut connection, &id_of(&by_sql))
        .await
        .unwrap()
        .expect("the key exists");
    drop(connection);
    let took = time_until_refused(&app, &ring, &by_sql, &accepts).await;
    eprintln!("revoked by plain SQL: refused everywhere after {took:?}");
    assert!(took <= revocation_bound(), "SQL revocation took {took:?}");

    stop.cancel();
    app.shutdown().await;
}

/// How long until both the worker's API and the stand-in ingress refuse `key`.
async fn time_until_refused(
    app: &TestApp,
    ring: &KeyRing,
    key: &str,
    accepts: &impl Fn(&KeyRing, &str) -> bool,
) -> Duration {
    let started = Instant::now();
    eventually(
        Duration::from_secs(20),
        "the revoked key is refused everywhere",
        async || {
            let worker_refuses = app
                .get("/v1/shipments?order_number=probe", Some(key))
                .await
                .status()
                .as_u16()
                == 401;
            worker_refuses && !accepts(ring, key)
        },
    )
    .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_appear_in_logs_the_database_or_the_broker() {
    let (app, [reader, writer, revoked]) =
        spawn_app_with_keys([ACME_READ, ACME_WRITE, ACME_READ]).await;
    waybill_cli::keys::revoke(&app.settings, &id_of(&revoked))
        .await
        .expect("revoke");

    // Use every key every way: accepted, refused for scope, revoked, with a wrong secret, with
    // another key's secret under an unknown id, and sent to a webhook that ignores it.
    let wrong_secret = format!("{}_{}", &reader[..16], secret_of(&writer));
    let unknown_id = format!("wbk_qqqqqqqqqqqq_{}", secret_of(&reader));
    for key in [&reader, &writer, &revoked, &wrong_secret, &unknown_id] {
        for path in [
            "/v1/shipments/acme-post/LOGS0001",
            "/v1/shipments?order_number=L-1",
        ] {
            let _ = app.get(path, Some(key)).await;
        }
    }
    let body = direct_event(
        "LOGS0001",
        "InTransit",
        "2026-03-01T10:00:00Z",
        "Perth",
        "L-1",
    );
    let response = app
        .http
        .post(format!("{}/v1/webhooks/acme-direct", app.ingress))
        .header("content-type", "application/json")
        .header("waybill-signature", helpers::sign_direct(&body))
        .bearer_auth(&reader)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let _ = app
        .wait_for_json("/v1/shipments/acme-post/LOGS0001", &reader)
        .await;

    let secrets = [&reader, &writer, &revoked].map(|key| secret_of(key).to_owned());

    // Logs: everything logged at every level by every component of this process so far.
    let logs = captured_logs();
    assert!(
        logs.contains("API request refused"),
        "the capture does not see the auth logs; the check below would prove nothing"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a key's secret is in the logs"
        );
    }

    // The database: every row of every table, as text.
    let pool = app.db.store().pool();
    let tables: Vec<String> = sqlx::query_scalar(
        "select quote_ident(table_schema) || '.' || quote_ident(table_name)
         from information_schema.tables
         where table_schema not in ('pg_catalog', 'information_schema') and table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.iter().any(|table| table.ends_with("api_keys")));
    for table in &tables {
        let dump: String = sqlx::query_scalar(&format!(
            "select coalesce(string_agg(t::text, ' '), '') from {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        for secret in &secrets {
            assert!(
                !dump.contains(secret.as_str()),
                "a key's secret is in {table}"
            );
        }
    }
    let stored: i64 =
        sqlx::query_scalar("select count(*) from api_keys where length(secret_sha256) = 32")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(stored, 3);

    // The broker: the kept key-set snapshot carries hashes, never secrets.
    let snapshot = kept_snapshot(&app).await;
    assert!(snapshot.contains("secret_sha256"));
    for secret in &secrets {
        assert!(
            !snapshot.contains(secret.as_str()),
            "a key's secret is on the broker"
        );
    }
    app.shutdown().await;
}

/// The body of the snapshot kept in `waybill.keys.latest` (read, then returned).
async fn kept_snapshot(app: &TestApp) -> String {
    let connection = lapin::Connection::connect(
        app.settings.bus.url.expose_secret(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = waybill_bus::Topology::new(&app.settings.bus.prefix).keys_latest_queue();
    let got = channel
        .basic_get(
            queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .expect("a kept snapshot");
    let body = String::from_utf8(got.delivery.data.clone()).unwrap();
    let _ = connection.close(200, "bye".into()).await;
    body
}
