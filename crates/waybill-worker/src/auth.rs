//! API keys on the worker's API, and the key-set publisher.
//!
//! The worker owns the database, so it is the one that reads `api_keys` and publishes the whole
//! key set to `waybill.keys` every `auth.refresh_secs` (see `docs/security.md`). It checks its
//! own API's keys against the same in-memory [`KeyRing`] as the ingress does, fed by its own
//! reads and by everything published (other workers, `waybill keys` right after a change), so a
//! request never costs a database round trip for its key.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use waybill_bus::keys::{
    KeyRing, KeySnapshotV1, KeySubscriberConfig, KeysUnavailable, spawn_key_subscriber,
};
use waybill_config::{AuthMode, Settings};
use waybill_core::access::{Denied, Principal, Scope};

use crate::Worker;

/// How requests are authenticated: not at all (`[auth] mode = "none"`), or against the newest
/// key set received.
#[derive(Debug, Clone)]
pub(crate) enum KeyGate {
    /// Every caller is [`Principal::development`].
    Open,
    /// Keys checked against the ring.
    Keys(Arc<KeyRing>),
}

impl KeyGate {
    /// The gate the settings ask for; with keys, starts the subscriber that feeds the ring.
    pub(crate) fn start(settings: &Settings, shutdown: &CancellationToken) -> KeyGate {
        if settings.auth.mode == AuthMode::None {
            tracing::warn!(
                "[auth] mode = \"none\": the shipments API is open to anyone who can reach it"
            );
            return KeyGate::Open;
        }
        let ring = Arc::new(KeyRing::new(Duration::from_secs(
            settings.auth.max_snapshot_age_secs,
        )));
        let topology = waybill_bus::Topology::new(&settings.bus.prefix)
            .with_delivery_limit(settings.bus.delivery_limit);
        let config = KeySubscriberConfig::new(&settings.bus.url, "waybill-worker-keys", topology);
        spawn_key_subscriber(config, Arc::clone(&ring), shutdown.clone());
        KeyGate::Keys(ring)
    }

    fn authenticate(&self, parts: &Parts) -> Result<Principal, AuthRejection> {
        let ring = match self {
            KeyGate::Open => return Ok(Principal::development()),
            KeyGate::Keys(ring) => ring,
        };
        // A header that is not visible ASCII is malformed, not missing.
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|value| value.to_str().unwrap_or(""));
        if authorization.is_none() {
            return Err(AuthRejection::Denied(Denied::MissingCredentials));
        }
        let keys = ring.current().map_err(AuthRejection::Unavailable)?;
        keys.authenticate(authorization)
            .map_err(AuthRejection::Denied)
    }
}

/// A scope an [`Authorized`] extractor requires.
pub(crate) trait RequiredScope {
    /// The scope.
    const SCOPE: Scope;
}

/// `shipments:read`.
pub(crate) struct ShipmentsRead;

impl RequiredScope for ShipmentsRead {
    const SCOPE: Scope = Scope::ShipmentsRead;
}

/// The caller, authenticated by an API key that has the scope `S`. Put it first among a
/// handler's extractors, so that an unauthenticated request learns nothing else (401 before 400).
pub(crate) struct Authorized<S> {
    /// Who is calling.
    pub principal: Principal,
    scope: PhantomData<S>,
}

impl<S: RequiredScope> FromRequestParts<Worker> for Authorized<S> {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        worker: &Worker,
    ) -> Result<Self, Self::Rejection> {
        let result = worker.inner.keys.authenticate(parts).and_then(|principal| {
            principal.require(S::SCOPE).map_err(AuthRejection::Denied)?;
            Ok(principal)
        });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(rejection) => rejection.reason(),
        };
        metrics::counter!("waybill_api_auth_total", "outcome" => outcome).increment(1);
        match result {
            Ok(principal) => Ok(Authorized {
                principal,
                scope: PhantomData,
            }),
            Err(rejection) => {
                rejection.log();
                Err(rejection)
            }
        }
    }
}

/// Why a request was refused before its handler ran: `{"error", "message"}` with 401 (and
/// `WWW-Authenticate: Bearer`), 403, or 503 (and `Retry-After`) while no trusted key set is held.
#[derive(Debug)]
pub(crate) enum AuthRejection {
    /// 401 or 403.
    Denied(Denied),
    /// 503: no key set received yet, or the last one is too old.
    Unavailable(KeysUnavailable),
}

impl AuthRejection {
    fn reason(&self) -> &'static str {
        match self {
            AuthRejection::Denied(denied) => denied.reason(),
            AuthRejection::Unavailable(_) => "unavailable",
        }
    }

    /// Logs the refusal once, at the boundary: the reason and the key id, never the key.
    fn log(&self) {
        match self {
            AuthRejection::Denied(denied) => tracing::debug!(
                reason = denied.reason(),
                key.id = denied.key_id().map(|id| id.as_str()),
                "API request refused"
            ),
            AuthRejection::Unavailable(why) => {
                tracing::warn!(reason = %why, "API request refused: no trusted key set")
            }
        }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::Denied(denied) => denied_response(&denied),
            AuthRejection::Unavailable(why) => {
                let body = json!({
                    "error": "unavailable",
                    "message": format!("{why}; retry shortly"),
                });
                let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                response
            }
        }
    }
}

/// The response to a refusal: 401 with `WWW-Authenticate` or 403, with the standard body.
fn denied_response(denied: &Denied) -> Response {
    let (status, code) = if denied.is_unauthenticated() {
        (StatusCode::UNAUTHORIZED, "unauthorized")
    } else {
        (StatusCode::FORBIDDEN, "forbidden")
    };
    let body = json!({ "error": code, "message": denied.message() });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"waybill\""),
        );
    }
    response
}

/// Publishes the key set read from Postgres every `auth.refresh_secs` until `shutdown`, and
/// installs it in this worker's own ring. Failures are logged once per streak and retried at the
/// next tick; the ring's maximum age bounds how long the last good set stays trusted.
pub(crate) async fn publish_key_sets(worker: Worker, shutdown: CancellationToken) {
    let KeyGate::Keys(ring) = worker.inner.keys.clone() else {
        return;
    };
    let period = Duration::from_secs(worker.inner.settings.auth.refresh_secs);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match publish_once(&worker, &ring).await {
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
/// at once after the console changed a key).
pub(crate) async fn publish_once(worker: &Worker, ring: &KeyRing) -> anyhow::Result<()> {
    let snapshot = {
        let mut connection = worker.inner.store.acquire().await?;
        waybill_store::keys::key_set_snapshot(&mut connection).await?
    };
    let message = KeySnapshotV1::new(
        snapshot.epoch,
        snapshot.revision,
        snapshot.generated_at,
        snapshot.keys.iter().map(|key| key.to_record()),
    );
    ring.offer(&message);
    worker
        .inner
        .publisher
        .publish(message.to_message(&worker.inner.topology))
        .await?;
    Ok(())
}
