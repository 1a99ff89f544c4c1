//! A scratch installation's lifetime beside the configured one: its topology under a fresh
//! queue prefix, and its removal (child processes stopped, queues and exchanges deleted, the
//! fresh database dropped). The benchmark runs on one; so do the end-to-end and console tests.

use std::time::Duration;

use tokio::process::{Child, Command};
use waybill_config::{ExposeSecret, Settings};
use waybill_store::testing::TestDatabase;

/// The queues and exchanges of `settings`' prefix, with its delivery limit.
pub fn topology(settings: &Settings) -> waybill_bus::Topology {
    waybill_bus::Topology::new(&settings.bus.prefix)
        .with_delivery_limit(settings.bus.delivery_limit)
}

/// Stops a child process with SIGTERM (the binaries drain and exit), and SIGKILL when it has
/// not exited 15 s later.
pub async fn terminate(mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Deletes the topology of `settings`' prefix (over a connection named `connection_name`) and
/// drops `database`, if any. Best effort: whatever cannot be removed is left.
pub async fn remove(settings: &Settings, database: Option<TestDatabase>, connection_name: &str) {
    if let Ok(connection) =
        waybill_bus::BusConnection::connect(settings.bus.url.expose_secret(), connection_name).await
    {
        let _ = topology(settings).delete(&connection).await;
        let _ = connection.close().await;
    }
    if let Some(database) = database {
        let _ = database.drop_database().await;
    }
}
