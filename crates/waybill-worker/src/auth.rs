//! The key-set publisher. The API keys of the worker's API are checked by
//! `waybill_http::auth` like the ingress's.
//!
//! The worker owns the database, so it is the one that reads `api_keys` and publishes the whole
//! key set to `waybill.keys` every `auth.refresh_secs` (see `docs/security.md`). It checks its
//! own API's keys against the same in-memory `KeyRing` as the ingress does, fed by its own
//! reads and by everything published (other workers, `waybill keys` right after a change), so a
//! request never costs a database round trip for its key.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use waybill_bus::keys::{KeyRing, KeySnapshotV1};
use waybill_http::auth::KeyGate;
use waybill_telemetry::trace;

use crate::Worker;

/// Publishes the key set read from Postgres every `auth.refresh_secs` until `shutdown`, and
/// installs it in this worker's own ring. Failures are logged once per streak and retried at the
/// next tick; the ring's maximum age bounds how long the last good set stays trusted. Only a
/// publish of a set this worker has not published before is traced: the refresh of an unchanged
/// set is routine, not work.
pub(crate) async fn publish_key_sets(worker: Worker, shutdown: CancellationToken) {
    let KeyGate::Keys(ring) = worker.inner.keys.clone() else {
        return;
    };
    let period = Duration::from_secs(worker.inner.settings.auth.refresh_secs);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut published: Option<(String, i64)> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match publish_once(&worker, &ring, &mut published).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("publishing the API key set works again");
            }
            Ok(()) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(error = %error, "could not publish the API key set; retrying every refresh");
            }
            Err(error) => tracing::debug!(error = %error, "publishing the API key set still fails"),
        }
    }
}

/// Reads the key set, installs it in this worker's ring and publishes it (every refresh, and
/// at once after the console changed a key); `published` is the `(epoch, revision)` last
/// published.
pub(crate) async fn publish_once(
    worker: &Worker,
    ring: &KeyRing,
    published: &mut Option<(String, i64)>,
) -> anyhow::Result<()> {
    let pass = trace::Pass::open(tracing::info_span!(
        parent: None,
        "waybill.key_set_publish",
        key_set.revision = tracing::field::Empty,
        key_set.keys = tracing::field::Empty,
    ));
    let snapshot = trace::untraced(async {
        let mut connection = worker.inner.store.acquire().await?;
        waybill_store::keys::key_set_snapshot(&mut connection).await
    })
    .await?;
    let version = (snapshot.epoch.clone(), snapshot.revision);
    let message = KeySnapshotV1::new(
        snapshot.epoch,
        snapshot.revision,
        snapshot.generated_at,
        snapshot.keys.iter().map(|key| key.to_record()),
    );
    ring.offer(&message);
    let publish = worker
        .inner
        .publisher
        .publish(message.to_message(&worker.inner.topology));
    if published.as_ref() == Some(&version) {
        trace::untraced(publish).await?;
    } else {
        let span = pass.found(std::iter::empty());
        span.record("key_set.revision", version.1);
        span.record("key_set.keys", snapshot.keys.len());
        publish.instrument(span).await?;
        *published = Some(version);
    }
    Ok(())
}
