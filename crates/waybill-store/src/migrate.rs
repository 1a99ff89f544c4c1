//! The schema migrations, embedded in the binary and applied by sqlx's own migrator.
//!
//! `sqlx::migrate!()` would embed them too, but it is a proc macro that needs sqlx's `macros`
//! feature, which compiles sqlx, rustls and tokio a second time for the host. Instead the files
//! are embedded with `include_str!` and handed to [`sqlx::migrate::Migrator`] through a
//! [`MigrationSource`]: the same `_sqlx_migrations` table, checksums, dirty-state detection and
//! per-database advisory lock as the macro (so two processes migrating at once are safe and the
//! `sqlx` CLI understands the table), at no extra compile cost.
//!
//! **Adding a migration:** add `migrations/NNNN_description.sql` and a line to `MIGRATIONS` in this file.
//! Never edit an applied migration: its checksum is recorded and a change is refused.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Connection, PgConnection};

use crate::error::StoreError;

/// The embedded migrations: `(version, description, sql)`, in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "tracking",
        include_str!("../migrations/0001_tracking.sql"),
    ),
    (2, "polling", include_str!("../migrations/0002_polling.sql")),
    (3, "fanout", include_str!("../migrations/0003_fanout.sql")),
    (
        4,
        "api_keys",
        include_str!("../migrations/0004_api_keys.sql"),
    ),
    (
        5,
        "trace_context",
        include_str!("../migrations/0005_trace_context.sql"),
    ),
    (
        6,
        "rejected_events",
        include_str!("../migrations/0006_rejected_events.sql"),
    ),
    (
        7,
        "console_read_scope",
        include_str!("../migrations/0007_console_read_scope.sql"),
    ),
    (
        8,
        "deliveries_claim_order",
        include_str!("../migrations/0008_deliveries_claim_order.sql"),
    ),
    (
        9,
        "deliveries_prune_order",
        include_str!("../migrations/0009_deliveries_prune_order.sql"),
    ),
    (
        10,
        "event_cohorts",
        include_str!("../migrations/0010_event_cohorts.sql"),
    ),
    (
        11,
        "outbox_to_publish",
        include_str!("../migrations/0011_outbox_to_publish.sql"),
    ),
    (
        12,
        "outbox_to_fan_out",
        include_str!("../migrations/0012_outbox_to_fan_out.sql"),
    ),
    (
        13,
        "deliveries_body_out_of_line",
        include_str!("../migrations/0013_deliveries_body_out_of_line.sql"),
    ),
];

/// The migrations compiled into this binary, as a [`MigrationSource`] for sqlx's migrator.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddedMigrations;

impl MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move {
            Ok(MIGRATIONS
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// How many migrations this binary embeds (versions may have gaps).
pub fn migration_count() -> usize {
    MIGRATIONS.len()
}

/// The newest schema version this binary knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |(version, _, _)| *version)
}

/// Applies the embedded migrations up to and including `version`, and no later one: a schema
/// as an older release left it, for tests of a later migration over existing data.
pub async fn migrate_to(connection: &mut PgConnection, version: i64) -> Result<(), StoreError> {
    let mut migrator = Migrator::new(EmbeddedMigrations).await?;
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|migration| migration.version <= version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    migrator.run(connection).await?;
    Ok(())
}

/// Applies every embedded migration not yet applied, each in its own transaction, under a
/// database-wide advisory lock.
///
/// Runs on a dedicated connection that is closed afterwards rather than on a pooled one: the
/// migrator's lock is session-level, and if a migration fails the migrator returns without
/// unlocking. Closing the session is what reliably releases it.
#[tracing::instrument(skip_all)]
pub(crate) async fn run(connection: PgConnection) -> Result<(), StoreError> {
    let mut connection = connection;
    let migrator = Migrator::new(EmbeddedMigrations).await?;
    let outcome = migrator.run(&mut connection).await;
    // Close even on failure; a close error after a successful migration is not worth failing
    // start-up for (the server ends the session when the socket goes anyway).
    if let Err(error) = connection.close().await {
        tracing::debug!(error = %error, "closing the migration connection failed");
    }
    outcome?;
    tracing::info!(
        schema.version = latest_version(),
        "database schema is up to date"
    );
    Ok(())
}
