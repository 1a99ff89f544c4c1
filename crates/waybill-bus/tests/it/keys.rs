//! The key-set snapshot on a real broker: published with a confirm even when nobody listens,
//! delivered to every subscriber, and read by a process that starts later.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{TestBus, eventually, unique_name, url};
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use waybill_bus::keys::{KeyRing, KeySnapshotV1, KeySubscriberConfig, spawn_key_subscriber};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_reach_running_and_later_subscribers() -> anyhow::Result<()> {
    let bus = TestBus::new("keys").await?;
    let publisher = bus
        .publisher(&unique_name("keys-publisher"), |_| {})
        .await?;
    let shutdown = CancellationToken::new();

    // Nobody subscribed yet: the publish is still routable (the kept-snapshot queue) and confirmed.
    publisher
        .publish(snapshot(1, false).to_message(&bus.topology))
        .await?;

    // A process starting now reads the kept snapshot at once.
    let early = Arc::new(KeyRing::new(Duration::from_secs(60)));
    subscriber(&bus, "keys-early", &early, &shutdown);
    let early_ring = Arc::clone(&early);
    assert!(
        eventually(Duration::from_secs(10), || {
            let ring = Arc::clone(&early_ring);
            async move { ring.revision() == Some(1) }
        })
        .await,
        "the kept snapshot was not read at start"
    );

    // A second subscriber also starts from it, and both follow the next revision.
    let late = Arc::new(KeyRing::new(Duration::from_secs(60)));
    subscriber(&bus, "keys-late", &late, &shutdown);
    let late_ring = Arc::clone(&late);
    assert!(
        eventually(Duration::from_secs(10), || {
            let ring = Arc::clone(&late_ring);
            async move { ring.revision() == Some(1) }
        })
        .await
    );
    publisher
        .publish(snapshot(2, true).to_message(&bus.topology))
        .await?;
    for ring in [&early, &late] {
        let ring = Arc::clone(ring);
        assert!(
            eventually(Duration::from_secs(10), || {
                let ring = Arc::clone(&ring);
                async move { ring.revision() == Some(2) }
            })
            .await,
            "revision 2 did not arrive"
        );
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
    publisher.close().await;
    bus.cleanup().await
}
