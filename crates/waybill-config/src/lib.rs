//! Configuration: defaults, then an optional TOML file (`WAYBILL_CONFIG`), then environment
//! variables. Every key is documented in `docs/configuration.md`.
//!
//! **Invariant:** a [`Settings`] value is valid: unknown keys, wrong types and sources naming a
//! profile that does not exist are rejected by [`Settings::load`] with an error naming the key,
//! so a process never starts half-configured.

mod auth;
mod console;
mod fanout;
mod polling;
mod secret;
mod sources;
mod telemetry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use auth::{AuthMode, AuthSettings};
pub use console::{ConsoleSettings, SecureCookie};
pub use fanout::{FanoutSettings, Period};
pub use polling::{IntervalOverrides, IntervalSettings, PollingSettings, SourcePollSettings};
pub use secret::{ExposeSecret, SecretString, expose_list, expose_map};
pub use sources::{PollMode, SourceSettings};
pub use telemetry::{TRACES_FILTER_ENV, TelemetrySettings};

/// The environment variable that names the configuration file.
pub const CONFIG_FILE_VARIABLE: &str = "WAYBILL_CONFIG";

/// The environment variables the configuration reads, each with the key it overrides (they win
/// over the file). Deployment files may set only these, [`CONFIG_FILE_VARIABLE`] and the
/// telemetry's standard variables; `crates/waybill-config/tests/it/deploy` holds them to that.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("DATABASE_URL", "database.url"),
    ("AMQP_URL", "bus.url"),
    ("AMQP_URLS", "bus.urls"),
    ("WAYBILL_INGRESS_ADDR", "ingress.addr"),
    ("WAYBILL_WORKER_ADDR", "worker.addr"),
    ("WAYBILL_LOG_FORMAT", "log.format"),
    ("WAYBILL_PROFILES_DIR", "profiles_dir"),
    ("WAYBILL_BUS_PREFIX", "bus.prefix"),
];

/// The whole configuration of a Waybill process (both binaries read the same file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP ingress.
    pub ingress: IngressSettings,
    /// The worker.
    pub worker: WorkerSettings,
    /// RabbitMQ.
    pub bus: BusSettings,
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// A directory of extra carrier profile files (`*.toml`), beside the built-in ones.
    #[serde(default)]
    pub profiles_dir: Option<PathBuf>,
    /// Inbound sources: one per `POST /v1/webhooks/{source}` endpoint.
    #[serde(default)]
    pub sources: Vec<SourceSettings>,
    /// Logging.
    pub log: LogSettings,
    /// Which spans are exported.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// API keys on the platform-facing endpoints.
    #[serde(default)]
    pub auth: AuthSettings,
    /// The poll scheduler, courier API clients and shipment registration.
    #[serde(default)]
    pub polling: PollingSettings,
    /// The outbox relay and HTTP webhook deliveries.
    #[serde(default)]
    pub fanout: FanoutSettings,
    /// The operator console on the worker's listener.
    #[serde(default)]
    pub console: ConsoleSettings,
}

/// `[ingress]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressSettings {
    /// Listen address. Env: `WAYBILL_INGRESS_ADDR`.
    pub addr: SocketAddr,
    /// Largest accepted request body; larger gets 413.
    pub body_limit_bytes: usize,
    /// How long a request waits for the broker's confirm before answering 503.
    pub publish_timeout_ms: u64,
    /// The `Retry-After` (seconds) sent with a 503.
    pub retry_after_secs: u32,
    /// How long in-flight requests get to finish after SIGTERM.
    pub shutdown_grace_ms: u64,
}

/// `[worker]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Listen address of the worker's API, health and metrics server. Env: `WAYBILL_WORKER_ADDR`.
    pub addr: SocketAddr,
    /// Most messages merged in one Postgres transaction.
    pub batch_size: usize,
    /// Longest a partial batch waits for more messages before it is merged.
    pub batch_linger_ms: u64,
    /// Unacknowledged messages the broker may push to one worker (≥ batch_size).
    pub prefetch: u16,
    /// Run database migrations when the worker starts.
    pub migrate_on_start: bool,
    /// Consumers per worker process, each on its own channel with its own batches.
    pub consumers: usize,
    /// How long in-flight batches get to finish after SIGTERM.
    pub shutdown_grace_ms: u64,
}

/// `[bus]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    /// AMQP URL (its password is a secret). Env: `AMQP_URL`. With `urls` set, the
    /// comma-separated list of those instead: every AMQP connection takes the first node that
    /// answers (see `waybill_bus::split_urls`).
    #[serde(serialize_with = "secret::serialize")]
    pub url: SecretString,
    /// The nodes of a RabbitMQ cluster, any of which will do (secrets too). Env: `AMQP_URLS`,
    /// comma-separated.
    #[serde(
        default,
        deserialize_with = "url_list",
        serialize_with = "secret::serialize_list"
    )]
    pub urls: Vec<SecretString>,
    /// A prefix for every exchange and queue name (empty in production; tests use one each).
    pub prefix: String,
    /// Deliveries of one message before it is dead-lettered to `waybill.dead`.
    pub delivery_limit: u32,
    /// Channels the ingress publishes on, round-robin (confirms are pipelined on each). One
    /// is cheapest per message: confirms and frames coalesce on a single channel, and the
    /// broker spends less per message (measured in docs/performance.md);
    /// throughput scales with ingress replicas, each with its own connection.
    pub publisher_channels: usize,
}

impl BusSettings {
    /// With `urls` set, `url` becomes their comma-separated list, which every AMQP connection
    /// of the process reads.
    fn use_urls(&mut self) {
        if !self.urls.is_empty() {
            self.url = expose_list(&self.urls).join(",").into();
        }
    }
}

/// `bus.urls`: a list, or (from `AMQP_URLS`) one comma-separated string.
fn url_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let urls = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(list) => list.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(urls) => urls,
    };
    Ok(urls
        .into_iter()
        .map(|url| url.trim().to_owned())
        .filter(|url| !url.is_empty())
        .map(SecretString::from)
        .collect())
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// PostgreSQL URL (its password is a secret). Env: `DATABASE_URL`.
    #[serde(serialize_with = "secret::serialize")]
    pub url: SecretString,
    /// Connection pool size per worker process, for the merge and the background tasks.
    pub max_connections: u32,
    /// Connections of the worker's HTTP API (shipment reads, the console), a pool of its own
    /// beside `max_connections` so that reads do not wait behind the merge's batches.
    #[serde(default = "default_api_connections")]
    pub api_connections: u32,
    /// Shipments created more than this long ago are deleted with their whole tracking
    /// history, a calendar month at a time, by the worker. Written with units (`400d`); at
    /// least `31d`. `0s` (the default) keeps everything.
    #[serde(default)]
    pub shipment_retention: Period,
}

fn default_api_connections() -> u32 {
    4
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` or `json`. Env: `WAYBILL_LOG_FORMAT`. Levels come from `RUST_LOG`.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ingress: IngressSettings {
                addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
                body_limit_bytes: 1024 * 1024,
                publish_timeout_ms: 5_000,
                retry_after_secs: 5,
                shutdown_grace_ms: 10_000,
            },
            worker: WorkerSettings {
                addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
                batch_size: 500,
                batch_linger_ms: 10,
                prefetch: 1_000,
                migrate_on_start: false,
                consumers: 2,
                shutdown_grace_ms: 20_000,
            },
            bus: BusSettings {
                url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
                urls: Vec::new(),
                prefix: String::new(),
                delivery_limit: 10,
                publisher_channels: 1,
            },
            database: DatabaseSettings {
                url: "postgres://postgres@127.0.0.1:5432/waybill".into(),
                max_connections: 8,
                api_connections: default_api_connections(),
                shipment_retention: Period::default(),
            },
            profiles_dir: None,
            sources: Vec::new(),
            log: LogSettings {
                format: LogFormat::Pretty,
            },
            telemetry: TelemetrySettings::default(),
            auth: AuthSettings::default(),
            polling: PollingSettings::default(),
            fanout: FanoutSettings::default(),
            console: ConsoleSettings::default(),
        }
    }
}

/// Why the configuration cannot be used. The message names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key has the wrong type or value, is unknown, or the file does not parse.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// The file named by `WAYBILL_CONFIG` does not exist.
    #[error("configuration file {0} (WAYBILL_CONFIG) does not exist")]
    MissingFile(PathBuf),
    /// A semantic rule across keys is broken.
    #[error("invalid configuration: {key}: {reason}")]
    Rule {
        /// The key at fault, e.g. `sources[2].profile`.
        key: String,
        /// What is wrong with it, in a sentence.
        reason: String,
    },
    /// The carrier profiles could not be loaded.
    #[error("invalid configuration: profiles_dir: {0}")]
    Profiles(#[from] waybill_carriers::ProfileError),
}

impl Settings {
    /// Loads defaults ← the file named by `WAYBILL_CONFIG` (if set) ← environment, and validates.
    pub fn load() -> Result<Settings, ConfigError> {
        let file = std::env::var_os(CONFIG_FILE_VARIABLE).map(PathBuf::from);
        Settings::load_from(file.as_deref(), true)
    }

    /// [`Settings::load`] for a program's start: a configuration that does not load is printed
    /// to stderr after `program: ` and the process exits with status 2.
    pub fn load_or_exit(program: &str) -> Settings {
        match Settings::load() {
            Ok(settings) => settings,
            Err(error) => {
                eprintln!("{program}: {error}");
                std::process::exit(2);
            }
        }
    }

    /// Loads defaults ← `file` ← (if `with_env`) environment, and validates.
    pub fn load_from(file: Option<&Path>, with_env: bool) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file(path));
        }
        if with_env {
            for (variable, key) in ENVIRONMENT {
                figment = figment.merge(Env::raw().only(&[*variable]).map(|_| (*key).into()));
            }
        }
        let mut settings: Settings = figment.extract().map_err(Box::new)?;
        settings.bus.use_urls();
        if with_env && let Some(filter) = telemetry::traces_filter_from_env() {
            settings.telemetry.traces_filter = Some(filter);
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Parses a TOML document on top of the defaults, without reading the environment.
    pub fn from_toml_str(toml: &str) -> Result<Settings, ConfigError> {
        let mut settings: Settings = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::string(toml))
            .extract()
            .map_err(Box::new)?;
        settings.bus.use_urls();
        settings.validate()?;
        Ok(settings)
    }

    /// The carrier profiles: the built-ins plus `profiles_dir`.
    pub fn profiles(&self) -> Result<waybill_carriers::ProfileRegistry, ConfigError> {
        Ok(match &self.profiles_dir {
            Some(dir) => waybill_carriers::ProfileRegistry::with_dir(dir)?,
            None => waybill_carriers::ProfileRegistry::builtin(),
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let rule = |key: &str, reason: &str| ConfigError::Rule {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if self.worker.batch_size == 0 {
            return Err(rule("worker.batch_size", "must be at least 1"));
        }
        if usize::from(self.worker.prefetch) < self.worker.batch_size {
            return Err(rule(
                "worker.prefetch",
                "must be at least worker.batch_size, or a batch can never fill",
            ));
        }
        if let Some(position) = self.bus.urls.iter().position(|url| {
            let url = url.expose_secret();
            !(url.starts_with("amqp://") || url.starts_with("amqps://"))
        }) {
            return Err(rule(
                "bus.urls",
                &format!(
                    "entry {} is not an amqp:// or amqps:// URL (separate URLs with commas; write a comma inside a password as %2C)",
                    position + 1
                ),
            ));
        }
        if self
            .database
            .shipment_retention
            .retention()
            .is_some_and(|retention| retention < Duration::from_secs(31 * 24 * 3600))
        {
            return Err(rule(
                "database.shipment_retention",
                "must be 0s (keep everything) or at least 31d: shipments are forgotten a calendar month at a time",
            ));
        }
        if self.bus.publisher_channels == 0 {
            return Err(rule("bus.publisher_channels", "must be at least 1"));
        }
        if self.bus.delivery_limit == 0 {
            return Err(rule("bus.delivery_limit", "must be at least 1"));
        }
        if self.ingress.body_limit_bytes == 0 {
            return Err(rule("ingress.body_limit_bytes", "must be at least 1"));
        }
        auth::validate(&self.auth)?;
        fanout::validate(&self.fanout)?;
        console::validate(&self.console)?;
        telemetry::validate(&self.telemetry)?;
        let profiles = self.profiles()?;
        polling::validate(&self.polling, &self.sources, &profiles)?;
        sources::validate(&self.sources, &profiles)
    }

    /// The source with this id, if configured.
    pub fn source(&self, id: &str) -> Option<&SourceSettings> {
        self.sources.iter().find(|source| source.id.as_str() == id)
    }
}

#[cfg(test)]
mod tests;
