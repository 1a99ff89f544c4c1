//! The key-set snapshot: its wire format and the ring that keeps the newest one; and on a real
//! broker, published with a confirm even when nobody listens, delivered to every subscriber, and
//! read by a process that starts later.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{TestBus, eventually, unique_name, url};
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use waybill_bus::keys::{
    KeyRing, KeySnapshotV1, KeySubscriberConfig, KeysUnavailable, Offered, spawn_key_subscriber,
};
use waybill_core::TenantId;
use waybill_core::access::{KeyId, KeyRecord, Scope, SecretHash};

fn snapshot(revision: i64, revoked: bool) -> KeySnapshotV1 {
    KeySnapshotV1::new(
        "epoch-test",
        revision,
        Utc::now(),
        [KeyRecord {
            id: KeyId::parse("ab12cd34ef56").unwrap(),
            tenant: TenantId::parse("acme").unwrap(),
            scopes: BTreeSet::from([Scope::ShipmentsRead]),
            secret_sha256: SecretHash::from_slice(&[9; 32]).unwrap(),
            revoked,
        }],
    )
}

fn subscriber(bus: &TestBus, name: &str, ring: &Arc<KeyRing>, shutdown: &CancellationToken) {
    let config = KeySubscriberConfig::new(url(), unique_name(name), bus.topology.clone());
    spawn_key_subscriber(config, Arc::clone(ring), shutdown.clone());
}

/// Whether `ring` holds `revision` within ten seconds.
async fn reaches_revision(ring: &Arc<KeyRing>, revision: i64) -> bool {
    eventually(Duration::from_secs(10), || {
        let ring = Arc::clone(ring);
        async move { ring.revision() == Some(revision) }
    })
    .await
}

#[test]
fn the_wire_format_round_trips_and_is_tagged() {
    let snapshot = snapshot(3, false);
    let body = snapshot.encode();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["type"], "key_set.v1");
    assert_eq!(json["keys"][0]["scopes"][0], "shipments:read");
    assert_eq!(KeySnapshotV1::decode(&body).unwrap(), snapshot);
    assert!(KeySnapshotV1::decode(b"{\"type\":\"key_set.v9\"}").is_err());
}

#[test]
fn unknown_scopes_grant_nothing() {
    let mut snapshot = snapshot(1, false);
    snapshot.keys[0].scopes = vec!["shipments:teleport".to_owned()];
    assert_eq!(snapshot.key_set().len(), 1);
}

#[test]
fn a_ring_never_goes_back_to_an_older_revision() {
    let ring = KeyRing::new(Duration::from_secs(60));
    assert_eq!(ring.current().unwrap_err(), KeysUnavailable::NotYetReceived);
    assert_eq!(ring.offer(&snapshot(2, false)), Offered::Installed);
    assert_eq!(ring.offer(&snapshot(3, true)), Offered::Installed);
    assert_eq!(ring.offer(&snapshot(2, false)), Offered::Outdated);
    assert_eq!(ring.offer(&snapshot(3, true)), Offered::Refreshed);
    assert_eq!(ring.revision(), Some(3));
    let mut other_database = snapshot(1, false);
    other_database.epoch = "epoch-other".to_owned();
    assert_eq!(ring.offer(&other_database), Offered::Installed);
}

#[tokio::test]
async fn a_ring_follows_a_restored_database_once_its_revision_is_no_longer_repeated() {
    let ring = KeyRing::new(Duration::from_millis(400));
    ring.offer(&snapshot(5, true));
    assert_eq!(ring.offer(&snapshot(3, false)), Offered::Outdated);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(ring.offer(&snapshot(3, false)), Offered::Installed);
    assert_eq!(ring.revision(), Some(3));
}

#[tokio::test]
async fn a_ring_expires_when_nothing_arrives() {
    let ring = KeyRing::new(Duration::from_millis(300));
    ring.offer(&snapshot(1, false));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(ring.current().is_ok());
    ring.offer(&snapshot(1, false));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(ring.current().is_ok(), "a repeat restarts the age");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(
        ring.current(),
        Err(KeysUnavailable::Expired { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_reach_running_and_later_subscribers() -> anyhow::Result<()> {
    let (bus, publisher) = TestBus::with_publisher("keys", |_| {}).await?;
    let shutdown = CancellationToken::new();

    // Nobody subscribed yet: the publish is still routable (the kept-snapshot queue) and confirmed.
    publisher
        .publish(snapshot(1, false).to_message(&bus.topology))
        .await?;

    // A process starting now reads the kept snapshot at once.
    let early = Arc::new(KeyRing::new(Duration::from_secs(60)));
    subscriber(&bus, "keys-early", &early, &shutdown);
    assert!(
        reaches_revision(&early, 1).await,
        "the kept snapshot was not read at start"
    );

    // A second subscriber also starts from it, and both follow the next revision.
    let late = Arc::new(KeyRing::new(Duration::from_secs(60)));
    subscriber(&bus, "keys-late", &late, &shutdown);
    assert!(reaches_revision(&late, 1).await);
    publisher
        .publish(snapshot(2, true).to_message(&bus.topology))
        .await?;
    for ring in [&early, &late] {
        assert!(reaches_revision(ring, 2).await, "revision 2 did not arrive");
    }
    // An outdated snapshot published late changes nothing.
    publisher
        .publish(snapshot(1, false).to_message(&bus.topology))
        .await?;
    // Time must pass to show that the outdated snapshot changes nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(early.revision(), Some(2));
    assert_eq!(
        bus.ready_messages(&bus.topology.keys_latest_queue())
            .await?,
        1
    );

    shutdown.cancel();
    bus.finish(publisher).await
}
