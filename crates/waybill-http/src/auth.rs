//! API keys, checked without a database: against the newest key set the worker published to
//! `waybill.keys` (see `docs/security.md` and `waybill_bus::keys`). Courier webhooks never go
//! through this: they are authenticated by their signatures, and their source decides their
//! tenant.
//!
//! Use: put [`Authorized`] first among a handler's extractors, with the scope the route needs,
//! and take the tenant from it (a state type `S` provides the gate with `KeyGate: FromRef<S>`):
//!
//! ```ignore
//! async fn register(
//!     auth: Authorized<ShipmentsWrite>,
//!     State(state): State<AppState>,
//!     JsonBody(body): JsonBody,
//! ) -> Result<Json<Registered>, HttpError> {
//!     // The key's tenant; a body naming another is refused (403) unless the key is `admin`.
//!     let tenant = auth.tenant_for(requested_tenant.as_ref())?;
//!     …
//! }
//! ```

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use waybill_bus::keys::{KeyRing, KeySubscriberConfig, KeysUnavailable, spawn_key_subscriber};
use waybill_config::ExposeSecret;
use waybill_config::{AuthMode, Settings};
use waybill_core::TenantId;
use waybill_core::access::{Denied, Principal, Scope};

use crate::HttpError;

/// Seconds a client is told to wait while no trusted key set is held.
const UNAVAILABLE_RETRY_AFTER_SECS: u32 = 5;

/// How requests are authenticated: not at all (`[auth] mode = "none"`), or against the newest
/// key set received from the bus.
#[derive(Debug, Clone)]
pub enum KeyGate {
    /// Every caller is [`Principal::development`] (local development only).
    Open,
    /// Keys checked against the ring.
    Keys(Arc<KeyRing>),
}

impl KeyGate {
    /// The gate the settings ask for; with keys, starts the task that feeds the ring from
    /// `waybill.keys` (on its own connection named `connection_name`, reconnecting by itself)
    /// until `shutdown`.
    pub fn start(
        settings: &Settings,
        connection_name: &str,
        shutdown: &CancellationToken,
    ) -> KeyGate {
        if settings.auth.mode == AuthMode::None {
            tracing::warn!(
                "[auth] mode = \"none\": API endpoints are open to anyone who can reach them"
            );
            return KeyGate::Open;
        }
        let ring = Arc::new(KeyRing::new(Duration::from_secs(
            settings.auth.max_snapshot_age_secs,
        )));
        let topology = waybill_bus::Topology::new(&settings.bus.prefix)
            .with_delivery_limit(settings.bus.delivery_limit);
        let config =
            KeySubscriberConfig::new(settings.bus.url.expose_secret(), connection_name, topology);
        spawn_key_subscriber(config, Arc::clone(&ring), shutdown.clone());
        KeyGate::Keys(ring)
    }

    /// Who is calling, from the request's `Authorization` header.
    pub fn authenticate(&self, parts: &Parts) -> Result<Principal, AuthRejection> {
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
pub trait RequiredScope {
    /// The scope.
    const SCOPE: Scope;
}

/// `shipments:write`: registering shipments.
#[derive(Debug)]
pub struct ShipmentsWrite;

impl RequiredScope for ShipmentsWrite {
    const SCOPE: Scope = Scope::ShipmentsWrite;
}

/// `shipments:read`: reading shipments.
#[derive(Debug)]
pub struct ShipmentsRead;

impl RequiredScope for ShipmentsRead {
    const SCOPE: Scope = Scope::ShipmentsRead;
}

/// The caller, authenticated by an API key that has the scope `S` (401 without a valid key,
/// 403 without the scope, 503 while no trusted key set is held). Put it first among a handler's
/// extractors so that an unauthenticated request learns nothing else (401 before 400).
#[derive(Debug)]
pub struct Authorized<S> {
    /// Who is calling.
    pub principal: Principal,
    scope: PhantomData<S>,
}

impl<S> Authorized<S> {
    /// The tenant the request acts on: the key's own, or `requested` when it is the same or the
    /// key is `admin` (403 otherwise). Requests take their tenant from here, never from the
    /// body or query alone.
    pub fn tenant_for(&self, requested: Option<&TenantId>) -> Result<TenantId, AuthRejection> {
        self.principal.tenant_for(requested).map_err(|denied| {
            let rejection = AuthRejection::Denied(denied);
            rejection.log();
            rejection
        })
    }
}

impl<S, State> FromRequestParts<State> for Authorized<S>
where
    S: RequiredScope,
    KeyGate: FromRef<State>,
    State: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Self::Rejection> {
        let result = KeyGate::from_ref(state)
            .authenticate(parts)
            .and_then(|principal| {
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

/// Why a request was refused: 401 (with `WWW-Authenticate: Bearer`), 403, or 503 (with
/// `Retry-After`) while no trusted key set is held.
#[derive(Debug)]
pub enum AuthRejection {
    /// 401 or 403.
    Denied(Denied),
    /// 503: no key set received yet, or the last one is too old.
    Unavailable(KeysUnavailable),
}

impl AuthRejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthRejection::Denied(denied) if denied.is_unauthenticated() => {
                StatusCode::UNAUTHORIZED
            }
            AuthRejection::Denied(_) => StatusCode::FORBIDDEN,
            AuthRejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

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
                tracing::warn!(reason = %why, "API request refused: no trusted key set");
            }
        }
    }
}

impl From<AuthRejection> for HttpError {
    fn from(rejection: AuthRejection) -> HttpError {
        match rejection {
            AuthRejection::Denied(denied) if denied.is_unauthenticated() => {
                HttpError::new(StatusCode::UNAUTHORIZED, "unauthorized", denied.message())
                    .with_bearer_challenge()
            }
            AuthRejection::Denied(denied) => {
                HttpError::new(StatusCode::FORBIDDEN, "forbidden", denied.message())
            }
            AuthRejection::Unavailable(why) => HttpError::unavailable(
                format!("{why}; retry shortly"),
                UNAVAILABLE_RETRY_AFTER_SECS,
            ),
        }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        HttpError::from(self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use chrono::Utc;
    use tower::ServiceExt;
    use waybill_bus::keys::KeySnapshotV1;
    use waybill_core::access::{ApiKey, KeyId, KeyRecord};

    use super::*;

    const SECRET: &str = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-x";

    fn key(id: &str) -> ApiKey {
        ApiKey::from_parts(KeyId::parse(id).unwrap(), SECRET.to_owned()).unwrap()
    }

    fn record(key: &ApiKey, tenant: &str, scopes: &[Scope], revoked: bool) -> KeyRecord {
        KeyRecord {
            id: key.id().clone(),
            tenant: TenantId::parse(tenant).unwrap(),
            scopes: scopes.iter().copied().collect::<BTreeSet<_>>(),
            secret_sha256: key.secret_sha256(),
            revoked,
        }
    }

    async fn probe(_auth: Authorized<ShipmentsWrite>) -> &'static str {
        "ok"
    }

    async fn call(gate: KeyGate, authorization: Option<&str>) -> (StatusCode, Response) {
        let app = Router::new().route("/probe", get(probe)).with_state(gate);
        let mut request = Request::get("/probe");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        (response.status(), response)
    }

    #[tokio::test]
    async fn the_matrix_of_missing_wrong_revoked_and_unscoped_keys() {
        let writer = key("writer000001");
        let reader = key("reader000001");
        let revoked = key("revoked00001");
        let ring = Arc::new(KeyRing::new(Duration::from_secs(60)));
        let gate = KeyGate::Keys(Arc::clone(&ring));

        // No key set yet: a well-formed request is told to retry; a keyless one is still 401.
        let bearer = |key: &ApiKey| format!("Bearer {}", key.expose());
        assert_eq!(
            call(gate.clone(), Some(&bearer(&writer))).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(call(gate.clone(), None).await.0, StatusCode::UNAUTHORIZED);

        ring.offer(&KeySnapshotV1::new(
            "e",
            1,
            Utc::now(),
            [
                record(&writer, "acme", &[Scope::ShipmentsWrite], false),
                record(&reader, "acme", &[Scope::ShipmentsRead], false),
                record(&revoked, "acme", &[Scope::ShipmentsWrite], true),
            ],
        ));
        let wrong = format!("Bearer wbk_writer000001_{}", "x".repeat(43));
        for (authorization, expected) in [
            (Some(bearer(&writer)), StatusCode::OK),
            (None, StatusCode::UNAUTHORIZED),
            (Some("Bearer nonsense".to_owned()), StatusCode::UNAUTHORIZED),
            (Some(wrong), StatusCode::UNAUTHORIZED),
            (Some(bearer(&revoked)), StatusCode::UNAUTHORIZED),
            (Some(bearer(&reader)), StatusCode::FORBIDDEN),
        ] {
            let (status, response) = call(gate.clone(), authorization.as_deref()).await;
            assert_eq!(status, expected, "{authorization:?}");
            if status == StatusCode::UNAUTHORIZED {
                assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
            }
            if status != StatusCode::OK {
                let body = axum::body::to_bytes(response.into_body(), 4096)
                    .await
                    .unwrap();
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert!(body["error"].is_string() && body["message"].is_string());
                assert!(!body.to_string().contains(SECRET));
            }
        }
        assert_eq!(call(KeyGate::Open, None).await.0, StatusCode::OK);
    }
}
