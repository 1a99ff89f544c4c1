//! The HTTP ingress: verifies, validates and publishes. Couriers get `200` only after RabbitMQ
//! confirmed the persistent message.
//!
//! **Invariant:** the request path is thin. This crate never touches Postgres (it does not
//! depend on the store crate) and never calls anything downstream; a request's only effect is
//! one confirmed publish.

mod error;
mod health;
pub mod jwks;
mod limits;
pub mod openapi;
mod registration;
mod series;
mod storable;
mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::middleware::{from_fn_with_state, map_response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use waybill_bus::{Publisher, Topology};
use waybill_carriers::CarrierProfile;
use waybill_config::{Settings, SourceSettings};
use waybill_http::auth::KeyGate;
use waybill_http::limits::{BodyLimit, declared_length};

pub use error::ApiError;

/// A configured source with its profile resolved.
#[derive(Debug)]
pub struct ResolvedSource {
    /// The source's configuration.
    pub settings: SourceSettings,
    /// The carrier profile that verifies and maps its requests.
    pub profile: Arc<CarrierProfile>,
    /// The source's configured `public_keys`, parsed.
    pub public_keys: waybill_carriers::KeySet,
    /// The metric series its accepted webhooks update.
    series: series::SourceSeries,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    sources: HashMap<String, ResolvedSource>,
    /// Key sets fetched from sources' JWKS URLs.
    jwks: jwks::JwksCache,
    publisher: Publisher,
    topology: Topology,
    body_limit: usize,
    publish_timeout: Duration,
    retry_after_secs: u32,
    /// How platform endpoints check API keys (webhooks never do).
    keys: KeyGate,
    rate_limits: limits::RateLimits,
    /// The deadline of a whole webhook request (body, verification, publish).
    request_timeout: Duration,
    shutdown_grace: Duration,
    /// Most shipments in one `POST /v1/shipments` request.
    max_registrations: usize,
}

impl AppState {
    /// Resolves sources against the carrier profiles and starts the broker publisher. The
    /// publisher connects in the background: the ingress starts (and answers 503) even while
    /// the broker is down, and recovers by itself when it comes back.
    pub async fn build(
        settings: &Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<AppState> {
        let profiles = settings.profiles()?;
        let mut sources = HashMap::new();
        for source in &settings.sources {
            let profile = profiles.get(&source.profile).ok_or_else(|| {
                anyhow::anyhow!("source `{}`: no profile `{}`", source.id, source.profile)
            })?;
            let public_keys = waybill_carriers::KeySet::from_config(&source.public_keys)
                .map_err(|error| anyhow::anyhow!("source `{}`: {error}", source.id))?;
            sources.insert(
                source.id.as_str().to_owned(),
                ResolvedSource {
                    settings: source.clone(),
                    profile,
                    public_keys,
                    series: series::SourceSeries::default(),
                },
            );
        }
        let (topology, mut config) =
            waybill_http::process::publisher_config(settings, "waybill-ingress");
        config.channels = settings.bus.publisher_channels;
        config.confirm_timeout = Duration::from_millis(settings.ingress.publish_timeout_ms);
        let keys = KeyGate::start(settings, "waybill-ingress-keys", &shutdown);
        let jwks = jwks::JwksCache::start(&settings.sources, &shutdown);
        let publisher = Publisher::start(config, shutdown).await?;
        let rate_limits = limits::RateLimits::new(settings.sources.iter().filter_map(|source| {
            let rate = source.rate_limit_per_second?;
            Some((source.id.as_str().to_owned(), rate))
        }));
        let publish_timeout = Duration::from_millis(settings.ingress.publish_timeout_ms);
        Ok(AppState {
            inner: Arc::new(Inner {
                sources,
                jwks,
                publisher,
                topology,
                body_limit: settings.ingress.body_limit_bytes,
                publish_timeout,
                retry_after_secs: settings.ingress.retry_after_secs,
                keys,
                rate_limits,
                request_timeout: publish_timeout + limits::BODY_DEADLINE,
                shutdown_grace: Duration::from_millis(settings.ingress.shutdown_grace_ms),
                max_registrations: settings.polling.max_registrations_per_request,
            }),
        })
    }

    /// The publisher (for shutdown and readiness).
    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }
}

impl FromRef<AppState> for KeyGate {
    fn from_ref(state: &AppState) -> KeyGate {
        state.inner.keys.clone()
    }
}

/// The ingress's routes. A webhook is rate-limited per source before its body is read, and
/// bounded in time as a whole (see `limits`); a declared body over the limit is refused before
/// anything else; every refusal, the router's own included, is `{"error", "message"}`.
pub fn router(state: AppState) -> Router {
    let body_limit = state.inner.body_limit;
    let webhooks =
        post(webhooks::receive).route_layer(from_fn_with_state(state.clone(), limits::limit));
    let document = openapi::served_document(state.inner.max_registrations);
    Router::new()
        .route("/v1/webhooks/{source}", webhooks)
        .route(
            "/v1/shipments",
            post(registration::register).route_layer(from_fn_with_state(
                state.clone(),
                limits::registration_deadline,
            )),
        )
        .route("/healthz", get(waybill_http::operations::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(waybill_http::operations::metrics))
        .route("/openapi.json", waybill_http::openapi::route(&document))
        .fallback(waybill_http::extract::not_found)
        // One layer of three, outermost first: each `Router::layer` boxes every route again,
        // and a request clones each box it passes through.
        .layer(
            ServiceBuilder::new()
                .layer(map_response(waybill_http::extract::json_errors))
                .layer(from_fn_with_state(BodyLimit(body_limit), declared_length))
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
}

/// Serves the ingress on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets in-flight requests finish (within `ingress.shutdown_grace_ms`), and closes the
/// publisher. A client gets [`waybill_http::serve::HEADER_READ_TIMEOUT`] to send each request's
/// headers.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let served =
        waybill_http::serve::serve(listener, app, shutdown, state.inner.shutdown_grace).await;
    state.inner.publisher.close().await;
    served
}
