//! Breaking and mending the real RabbitMQ and PostgreSQL the suite runs against.
//!
//! The services are the ones the test URLs point at (`WAYBILL_TEST_AMQP_URL`,
//! `WAYBILL_TEST_DATABASE_URL`): the PostgreSQL cluster is found by its port in `pg_lsclusters`,
//! the RabbitMQ node is `rabbitmqctl`'s default or `WAYBILL_FAULTS_RABBIT_NODE`. A developer can
//! point the suite at a private broker and cluster so that a run does not disturb anything
//! else; CI runs it alone against the shared ones.
//!
//! [`Services::restore_guard`] puts everything back (application started, memory watermark at
//! its previous value, PostgreSQL started) when it is dropped — also when a check panicked.

use std::process::Command as StdCommand;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

/// How long one control command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// The services under test and how to control them.
#[derive(Debug, Clone)]
pub struct Services {
    /// `-n <node>` for rabbitmqctl, when not the default node.
    pub rabbit_node: Option<String>,
    /// The PostgreSQL major version of the cluster (`15`).
    pub pg_version: String,
    /// The cluster name (`main`).
    pub pg_cluster: String,
    /// The memory high watermark as read before the suite touched it (`0.4` or
    /// `absolute <bytes>`), as arguments for `set_vm_memory_high_watermark`.
    pub original_watermark: Vec<String>,
}

impl Services {
    /// Finds the services the test URLs point at and reads the broker's watermark.
    pub async fn discover(database_url: &str) -> anyhow::Result<Services> {
        let port = database_port(database_url);
        let clusters = output("pg_lsclusters", &["-h"]).await?;
        let (pg_version, pg_cluster) = clusters
            .lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .find(|fields| fields.len() >= 3 && fields[2] == port.to_string())
            .map(|fields| (fields[0].to_owned(), fields[1].to_owned()))
            .with_context(|| format!("no PostgreSQL cluster on port {port} in pg_lsclusters"))?;
        let rabbit_node = std::env::var("WAYBILL_FAULTS_RABBIT_NODE")
            .ok()
            .filter(|node| !node.is_empty());
        let mut services = Services {
            rabbit_node,
            pg_version,
            pg_cluster,
            original_watermark: Vec::new(),
        };
        services.original_watermark = services.read_watermark().await?;
        Ok(services)
    }

    fn rabbit_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = Vec::new();
        if let Some(node) = &self.rabbit_node {
            all.extend(["-n", node.as_str()]);
        }
        all.extend_from_slice(args);
        all
    }

    /// Runs `rabbitmqctl <args>` against the node.
    pub async fn rabbitmqctl(&self, args: &[&str]) -> anyhow::Result<String> {
        output("rabbitmqctl", &self.rabbit_args(args)).await
    }

    /// The memory high watermark, as `set_vm_memory_high_watermark` arguments.
    async fn read_watermark(&self) -> anyhow::Result<Vec<String>> {
        let raw = self
            .rabbitmqctl(&["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."])
            .await?;
        parse_watermark(raw.trim())
            .with_context(|| format!("cannot read the memory watermark from `{}`", raw.trim()))
    }

    /// `set_vm_memory_high_watermark 0`: every publishing connection is blocked.
    pub async fn raise_memory_alarm(&self) -> anyhow::Result<()> {
        self.rabbitmqctl(&["set_vm_memory_high_watermark", "0"])
            .await?;
        Ok(())
    }

    /// Puts the watermark back to what it was.
    pub async fn clear_memory_alarm(&self) -> anyhow::Result<()> {
        let mut args = vec!["set_vm_memory_high_watermark"];
        args.extend(self.original_watermark.iter().map(String::as_str));
        self.rabbitmqctl(&args).await?;
        Ok(())
    }

    /// `rabbitmqctl stop_app`.
    pub async fn stop_broker(&self) -> anyhow::Result<()> {
        self.rabbitmqctl(&["stop_app"]).await.map(drop)
    }

    /// `rabbitmqctl start_app`.
    pub async fn start_broker(&self) -> anyhow::Result<()> {
        self.rabbitmqctl(&["start_app"]).await.map(drop)
    }

    /// `rabbitmqctl close_all_connections`: every client connection of the node.
    pub async fn close_all_connections(&self) -> anyhow::Result<()> {
        self.rabbitmqctl(&["close_all_connections", "waybill fault suite"])
            .await
            .map(drop)
    }

    /// The prefetch of every consumer on `queue`.
    pub async fn consumer_prefetches(&self, queue: &str) -> anyhow::Result<Vec<u32>> {
        self.listed_for(queue, "list_consumers", "queue_name", "prefetch_count")
            .await
    }

    /// Unacknowledged deliveries outstanding on `queue`.
    pub async fn unacked(&self, queue: &str) -> anyhow::Result<u64> {
        let listed = self
            .listed_for(queue, "list_queues", "name", "messages_unacknowledged")
            .await?;
        Ok(listed.first().copied().unwrap_or(0))
    }

    /// `rabbitmqctl <list> <key> <value>`: the values (those that parse) of the rows whose key
    /// is `queue`.
    async fn listed_for<T: std::str::FromStr>(
        &self,
        queue: &str,
        list: &str,
        key: &str,
        value: &str,
    ) -> anyhow::Result<Vec<T>> {
        let listed = self
            .rabbitmqctl(&[list, "-q", "--no-table-headers", key, value])
            .await?;
        Ok(listed
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next()? == queue).then(|| fields.next()?.parse().ok())?
            })
            .collect())
    }

    fn pg_ctl_args<'a>(&'a self, action: &'a str) -> [&'a str; 4] {
        [
            "--skip-systemctl-redirect",
            &self.pg_version,
            &self.pg_cluster,
            action,
        ]
    }

    /// `pg_ctlcluster … stop` (fast: sessions are terminated, transactions rolled back).
    pub async fn stop_postgres(&self) -> anyhow::Result<()> {
        output("pg_ctlcluster", &self.pg_ctl_args("stop"))
            .await
            .map(drop)
    }

    /// `pg_ctlcluster … start` (waits until it accepts connections).
    pub async fn start_postgres(&self) -> anyhow::Result<()> {
        output("pg_ctlcluster", &self.pg_ctl_args("start"))
            .await
            .map(drop)
    }

    /// A guard that restores every service when dropped.
    pub fn restore_guard(&self) -> RestoreGuard {
        RestoreGuard {
            services: self.clone(),
        }
    }

    /// Synchronous best-effort restoration (for `Drop`).
    fn restore_blocking(&self) {
        let rabbit = |args: &[&str]| {
            let _ = StdCommand::new("rabbitmqctl")
                .args(self.rabbit_args(args))
                .output();
        };
        rabbit(&["start_app"]);
        let mut watermark = vec!["set_vm_memory_high_watermark"];
        watermark.extend(self.original_watermark.iter().map(String::as_str));
        rabbit(&watermark);
        // "already running" is an error exit here, and fine.
        let _ = StdCommand::new("pg_ctlcluster")
            .args(self.pg_ctl_args("start"))
            .output();
    }
}

/// Restores the services on drop: `start_app`, the memory watermark, PostgreSQL started.
pub struct RestoreGuard {
    services: Services,
}

impl Drop for RestoreGuard {
    fn drop(&mut self) {
        self.services.restore_blocking();
    }
}

/// `0.4` → `["0.4"]`; `{absolute,1073741824}` → `["absolute", "1073741824"]`.
fn parse_watermark(raw: &str) -> Option<Vec<String>> {
    if let Some(inner) = raw
        .strip_prefix("{absolute,")
        .and_then(|r| r.strip_suffix('}'))
    {
        let bytes: u64 = inner.trim().parse().ok()?;
        return Some(vec!["absolute".to_owned(), bytes.to_string()]);
    }
    let fraction: f64 = raw.parse().ok()?;
    // A suite that died half-way may have left 0 behind: never "restore" an alarm.
    let fraction = if fraction > 0.0 { fraction } else { 0.4 };
    Some(vec![fraction.to_string()])
}

fn database_port(url: &str) -> u16 {
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    host_port
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(5432)
}

/// Runs a command, bounded in time; its stdout, or an error with its stderr.
async fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    output_within(program, args, COMMAND_TIMEOUT).await
}

/// Runs a command, bounded by `timeout`; its stdout, or an error with its stderr.
pub async fn output_within(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> anyhow::Result<String> {
    let run = Command::new(program).args(args).kill_on_drop(true).output();
    let output = tokio::time::timeout(timeout, run)
        .await
        .with_context(|| format!("`{program} {}` did not finish in time", args.join(" ")))?
        .with_context(|| format!("cannot run `{program}`"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_and_ports_parse() {
        assert_eq!(parse_watermark("0.4"), Some(vec!["0.4".to_owned()]));
        assert_eq!(parse_watermark("0"), Some(vec!["0.4".to_owned()]));
        assert_eq!(
            parse_watermark("{absolute,1024}"),
            Some(vec!["absolute".to_owned(), "1024".to_owned()])
        );
        assert_eq!(
            database_port("postgres://postgres@127.0.0.1:5433/postgres"),
            5433
        );
        assert_eq!(
            database_port("postgres://postgres@127.0.0.1/postgres"),
            5432
        );
    }
}
