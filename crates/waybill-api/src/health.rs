//! `GET /healthz` and `GET /readyz` of both servers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /healthz`: the process is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: HealthStatus,
}

/// The word of [`Health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Alive.
    Ok,
}

/// `GET /readyz`: whether the dependencies are usable (200) or not (503).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: ReadinessStatus,
    /// The broker: `ok` or `unavailable`.
    pub broker: DependencyStatus,
    /// The database (the worker only): `ok` or `unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DependencyStatus>,
}

/// The word of [`Readiness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessStatus {
    /// Every dependency is usable.
    Ready,
    /// One is not.
    NotReady,
}

/// One dependency's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependencyStatus {
    /// Usable.
    Ok,
    /// Not usable now.
    Unavailable,
}

impl DependencyStatus {
    /// `Ok` when `usable`.
    pub fn of(usable: bool) -> DependencyStatus {
        if usable {
            DependencyStatus::Ok
        } else {
            DependencyStatus::Unavailable
        }
    }
}

impl Readiness {
    /// Ready when every dependency given is usable.
    pub fn of(broker: bool, database: Option<bool>) -> Readiness {
        let ready = broker && database.unwrap_or(true);
        Readiness {
            status: if ready {
                ReadinessStatus::Ready
            } else {
                ReadinessStatus::NotReady
            },
            broker: DependencyStatus::of(broker),
            database: database.map(DependencyStatus::of),
        }
    }

    /// Whether every dependency is usable.
    pub fn is_ready(&self) -> bool {
        self.status == ReadinessStatus::Ready
    }
}
