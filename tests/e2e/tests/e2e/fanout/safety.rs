//! Who gets what: filters by tenant, carrier and status; destinations inside the network are
//! refused unless allowed.

use std::time::Duration;

use waybill_store::fanout::DeliveryStatus;

use super::helpers::*;

#[tokio::test]
async fn a_filter_excludes_what_it_should() {
    let app = spawn("").await;
    let (receiver, everything, _) = subscribed(&app, vec![], "/all").await;
    let (acme, _) = app.subscribe(&receiver.url("/acme"), &["acme"], &[]).await;
    let (delivered, _) = app
        .subscribe(&receiver.url("/delivered"), &[], &["delivered"])
        .await;
    let (acme_delivered, _) = app
        .subscribe(&receiver.url("/acme-delivered"), &["acme"], &["Delivered"])
        .await;
    let (globex, _) = app
        .subscribe_tenant(&receiver.url("/globex"), "globex", &[], &[])
        .await;

    post_acme(&app, "F1", "InTransit", "2026-11-20T10:00:00Z").await;
    post_direct(&app, "dhl", "F2", "Delivered", "2026-11-20T10:00:00Z").await;
    post_acme(&app, "F3", "Delivered", "2026-11-20T10:00:00Z").await;
    app.post_event(
        "globex",
        &event("acme", "F4", "Delivered", "2026-11-20T10:00:00Z"),
    )
    .await;
    eventually(Duration::from_secs(20), "every change merged", || async {
        app.outbox_rows().await == 4
    })
    .await;
    received(&receiver, 3 + 2 + 2 + 1 + 1).await;
    // Time must pass to show that nothing beyond the filters arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 9, "nothing beyond the filters");

    let numbers = |path: &str| {
        let mut numbers: Vec<String> = receiver
            .received_on(path)
            .iter()
            .map(|r| {
                r.json()["shipment"]["tracking_number"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        numbers.sort();
        numbers
    };
    assert_eq!(numbers("/all"), ["F1", "F2", "F3"], "the default tenant's");
    assert_eq!(numbers("/acme"), ["F1", "F3"]);
    assert_eq!(numbers("/delivered"), ["F2", "F3"]);
    assert_eq!(numbers("/acme-delivered"), ["F3"]);
    assert_eq!(numbers("/globex"), ["F4"], "another tenant's only");
    for (id, expected) in [
        (everything, 3),
        (acme, 2),
        (delivered, 2),
        (acme_delivered, 1),
        (globex, 1),
    ] {
        assert_eq!(app.deliveries(id).await.len(), expected);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn two_tenants_tracking_the_same_parcel_are_notified_apart() {
    let app = spawn("").await;
    let receiver = Receiver::start(vec![]).await;
    app.subscribe_tenant(&receiver.url("/default"), "default", &[], &[])
        .await;
    app.subscribe_tenant(&receiver.url("/globex"), "globex", &[], &[])
        .await;
    let installation = app.bind_events("#").await;
    let default_tenant = app.bind_tenant_events("default.#").await;
    let globex = app.bind_tenant_events("globex.#").await;
    let globex_delivered = app.bind_tenant_events("globex.*.delivered").await;

    // The same scan of the same parcel, reported to each tenant's source.
    let scan = event("acme", "SAME1", "InTransit", "2026-11-20T10:00:00Z");
    app.post_event("direct", &scan).await;
    app.post_event("globex", &scan).await;
    eventually(Duration::from_secs(20), "both changes merged", || async {
        app.outbox_rows().await == 2
    })
    .await;

    let all = installation.collect(2, Duration::from_secs(20)).await;
    let mut tenants: Vec<&str> = all
        .iter()
        .map(|m| m.headers["x-waybill-tenant"].as_str())
        .collect();
    tenants.sort_unstable();
    assert_eq!(
        tenants,
        ["default", "globex"],
        "the installation's stream has both"
    );

    for (queue, tenant) in [(&default_tenant, "default"), (&globex, "globex")] {
        let got = queue.collect(1, Duration::from_secs(20)).await;
        assert_eq!(got.len(), 1, "{tenant} gets exactly its own change");
        assert_eq!(got[0].routing_key, format!("{tenant}.acme.in_transit"));
        assert_eq!(got[0].headers["x-waybill-tenant"], tenant);
        assert_eq!(got[0].json()["shipment"]["tenant"], tenant);
        // The same bytes and id as on the installation's exchange.
        let twin = all
            .iter()
            .find(|m| m.headers["x-waybill-tenant"] == tenant)
            .expect("its twin on waybill.events");
        assert_eq!(got[0].body, twin.body);
        assert_eq!(got[0].message_id, twin.message_id);
    }
    assert!(
        globex_delivered
            .collect(0, Duration::from_millis(500))
            .await
            .is_empty(),
        "a status binding excludes what it should"
    );

    received(&receiver, 2).await;
    for tenant in ["default", "globex"] {
        let got = receiver.received_on(&format!("/{tenant}"));
        assert_eq!(
            got.len(),
            1,
            "{tenant}'s subscription gets its own change only"
        );
        assert_eq!(got[0].json()["shipment"]["tenant"], tenant);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn private_destinations_are_refused_unless_allow_listed() {
    let app = spawn("").await;
    let receiver = Receiver::start(vec![]).await;
    let port = receiver.base.rsplit(':').next().unwrap().to_owned();

    // Internal IP literals are refused when subscribing (127.0.0.1 is allow-listed, .2 is not).
    for url in [
        format!("http://127.0.0.2:{port}/hook"),
        "http://10.0.0.5/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[::1]/hook".to_owned(),
        "ftp://example.com/hook".to_owned(),
    ] {
        let refused = waybill_cli::subscriptions::add(
            &app.settings,
            &waybill_cli::subscriptions::AddSubscription {
                url: url.clone(),
                tenant: "default".to_owned(),
                ..Default::default()
            },
        )
        .await;
        assert!(refused.is_err(), "{url} was accepted");
    }

    // A name is checked where it matters, when connecting: `localhost` is not allow-listed,
    // and it resolves to loopback, so the delivery is refused without a request being made.
    let (by_name, _) = app
        .subscribe(&format!("http://localhost:{port}/hook"), &[], &[])
        .await;
    let (allowed, _) = app.subscribe(&receiver.url("/hook"), &[], &[]).await;
    post_acme(&app, "SSRF1", "InTransit", "2026-11-20T10:00:00Z").await;
    eventually(
        Duration::from_secs(20),
        "both deliveries settled",
        || async {
            let refused = app.deliveries(by_name).await;
            let delivered = app.deliveries(allowed).await;
            refused
                .first()
                .is_some_and(|d| d.status == DeliveryStatus::Dead)
                && delivered
                    .first()
                    .is_some_and(|d| d.status == DeliveryStatus::Delivered)
        },
    )
    .await;
    let refused = &app.deliveries(by_name).await[0];
    let error = refused.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("destination refused: localhost"), "{error}");
    assert_eq!(refused.attempts, 1, "a refused destination is not retried");
    assert_eq!(
        receiver.count(),
        1,
        "only the allow-listed destination was called"
    );
    assert!(
        app.metrics()
            .contains("waybill_webhook_destinations_refused_total")
    );
    app.shutdown().await;
}
