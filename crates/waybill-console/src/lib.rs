//! Waybill's operator console: the pipeline's state at a glance and the everyday fixes, as
//! server-rendered HTML on the worker's listener under `/console` (see `docs/console.md`).
//!
//! * **Sign-in** is with an API key of scope `admin` (everything, every tenant) or `read`
//!   (everything of the key's tenant, no changes), checked against the worker's in-memory key
//!   ring. The key is not kept: a server-side session remembers its id and the SHA-256 of its
//!   secret and asks the ring again on every request, so a revoked key's session ends at its
//!   next request.
//! * **Every page** is escaped by construction (maud), sent with a strict Content-Security-Policy
//!   (scripts and styles from `/console/assets/` only), and every state-changing form carries a
//!   per-session CSRF token.
//! * **Data** comes from the crates that own it: SQL in `waybill_store::console`, RabbitMQ
//!   through `waybill_bus`, metrics from this process's registry and the `metrics_urls` it is
//!   given. Nothing here runs unless a page is being served: no task, no timer, no connection
//!   is kept while nobody looks.
//!
//! **Invariant:** the console never changes anything for a `read` key, never shows a secret or
//! a signature, and shows a tenant's key only that tenant's data.

#![warn(missing_docs)]

mod assets;
mod auth;
mod error;
mod metrics;
mod pages;
mod session;
mod shell;
mod view;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use waybill_bus::keys::KeyRing;
use waybill_bus::{Publisher, Topology};
use waybill_config::Settings;
use waybill_store::Store;

pub use metrics::{Sample, parse_metrics};

/// Where the worker mounts the console; every link and cookie path starts with it.
pub const BASE: &str = "/console";

/// Publishes the current key set right away (the worker's own periodic publish, run now), so
/// a key created or revoked in the console takes effect everywhere as after `waybill keys`.
pub type PublishKeySet =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What the console needs from the process that serves it.
pub struct ConsoleParts {
    /// The process's settings (sources, `[console]`, the bus).
    pub settings: Settings,
    /// The database.
    pub store: Store,
    /// The key ring the process's API checks keys against.
    pub keys: Arc<KeyRing>,
    /// A confirmed publisher (dead-letter replays).
    pub publisher: Publisher,
    /// The topology (queue names).
    pub topology: Topology,
    /// Publishes the key set after a key is created or revoked.
    pub publish_key_set: PublishKeySet,
}

/// The console's shared state.
#[derive(Clone)]
pub(crate) struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    parts: ConsoleParts,
    profiles: waybill_carriers::ProfileRegistry,
    sessions: session::SessionStore,
    sampler: metrics::Sampler,
    http: reqwest::Client,
}

impl Console {
    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.parts.settings
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.parts.store
    }

    pub(crate) fn parts(&self) -> &ConsoleParts {
        &self.inner.parts
    }

    pub(crate) fn sessions(&self) -> &session::SessionStore {
        &self.inner.sessions
    }

    pub(crate) fn sampler(&self) -> &metrics::Sampler {
        &self.inner.sampler
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    pub(crate) fn profiles(&self) -> &waybill_carriers::ProfileRegistry {
        &self.inner.profiles
    }
}

/// Why the console could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The carrier profiles of the configuration do not load.
    #[error("the carrier profiles do not load")]
    Profiles(#[source] waybill_config::ConfigError),
    /// The HTTP client for `metrics_urls` could not be built.
    #[error("the HTTP client for console.metrics_urls could not be built")]
    Http(#[source] reqwest::Error),
}

/// The console's routes, relative to [`BASE`]: mount them with `Router::nest(BASE, …)`.
pub fn router(parts: ConsoleParts) -> Result<Router, ConsoleError> {
    let profiles = parts.settings.profiles().map_err(ConsoleError::Profiles)?;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .map_err(ConsoleError::Http)?;
    let sessions = session::SessionStore::new(&parts.settings.console);
    let console = Console {
        inner: Arc::new(Inner {
            parts,
            profiles,
            sessions,
            sampler: metrics::Sampler::new(),
            http,
        }),
    };
    Ok(Router::new()
        .route("/", get(pages::home))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/tenant", post(auth::set_tenant_filter))
        .route("/overview", get(pages::overview::page))
        .route("/overview/live", get(pages::overview::live))
        .route("/sources", get(pages::sources::list))
        .route("/sources/{id}", get(pages::sources::show))
        .route("/sources/{id}/test", post(pages::sources::test_event))
        .route("/shipments", get(pages::shipments::search))
        .route(
            "/shipments/{tenant}/{carrier}/{tracking_number}",
            get(pages::shipments::timeline),
        )
        .route("/deadletters", get(pages::deadletters::list))
        .route("/deadletters/show", get(pages::deadletters::show))
        .route("/deadletters/replay", post(pages::deadletters::replay))
        .route("/deadletters/purge", post(pages::deadletters::purge))
        .route("/subscriptions", get(pages::subscriptions::list))
        .route("/subscriptions/{id}", get(pages::subscriptions::show))
        .route(
            "/subscriptions/{id}/enable",
            post(pages::subscriptions::enable),
        )
        .route(
            "/deliveries/{id}/replay",
            post(pages::subscriptions::replay_delivery),
        )
        .route("/keys", get(pages::keys::list).post(pages::keys::create))
        .route("/keys/{id}/revoke", post(pages::keys::revoke))
        .route("/assets/{name}", get(assets::serve))
        .fallback(pages::not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console))
}

/// The Content-Security-Policy of every console response: nothing inline, nothing from
/// elsewhere, no framing, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}
