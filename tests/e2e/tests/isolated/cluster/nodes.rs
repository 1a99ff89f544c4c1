//! The three extra RabbitMQ nodes of `scripts/rabbitmq-cluster.sh` (`waybillN@localhost`, AMQP
//! on 127.0.0.1:568N), driven through the script: start, stop a node, start it again, find the
//! leader of a quorum queue and the node each client connection reached.
//!
//! [`Cluster::start`] returns a guard that stops and removes the three nodes when dropped — also
//! when a check panicked. The machine's own broker is never touched.

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::Duration;

use anyhow::{Context, bail};

/// How long one script command may take (its own waits are bounded by 90 s each).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(240);

/// The node numbers.
pub const NODES: [usize; 3] = [1, 2, 3];

/// The running cluster; stopped and removed when dropped.
pub struct Cluster {
    script: PathBuf,
}

impl Cluster {
    /// The script, in the repository this suite belongs to.
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/rabbitmq-cluster.sh")
    }

    /// Starts the three nodes and waits until they are clustered. Refuses when any of them is
    /// already running (someone else's cluster, or one left behind): stopping it at the end
    /// would pull it from under its owner.
    pub async fn start() -> anyhow::Result<Cluster> {
        let script = Self::script();
        if !script.is_file() {
            bail!("{} is missing", script.display());
        }
        let status = run(&script, &["status"]).await.unwrap_or_default();
        if status
            .lines()
            .any(|line| line.ends_with(')') && line.contains(" running "))
        {
            bail!(
                "a node of the test cluster is already running; stop it with `scripts/rabbitmq-cluster.sh stop` first:\n{status}"
            );
        }
        // From here on the nodes are ours: the guard stops them whatever happens next.
        let cluster = Cluster { script };
        run(&cluster.script, &["start"]).await?;
        Ok(cluster)
    }

    /// The AMQP URLs of the three nodes.
    pub fn urls() -> Vec<String> {
        NODES
            .iter()
            .map(|n| format!("amqp://guest:guest@127.0.0.1:{}/%2f", 5680 + n))
            .collect()
    }

    /// Stops node `n` (`rabbitmqctl stop`: the node's process exits).
    pub async fn stop_node(&self, n: usize) -> anyhow::Result<()> {
        run(&self.script, &["stop-node", &n.to_string()])
            .await
            .map(drop)
    }

    /// Starts node `n` again and waits until it is back in the cluster.
    pub async fn start_node(&self, n: usize) -> anyhow::Result<()> {
        run(&self.script, &["start-node", &n.to_string()])
            .await
            .map(drop)
    }

    /// The nodes that run now.
    pub async fn running(&self) -> anyhow::Result<Vec<usize>> {
        let status = run(&self.script, &["status"]).await?;
        Ok(status
            .lines()
            .filter(|line| line.contains(" running ("))
            .filter_map(|line| node_number(line.split_whitespace().next()?))
            .collect())
    }

    /// Starts every node that is stopped (after a fault, before the next).
    pub async fn start_stopped(&self) -> anyhow::Result<()> {
        let running = self.running().await?;
        for n in NODES {
            if !running.contains(&n) {
                self.start_node(n).await?;
            }
        }
        Ok(())
    }

    /// The members of quorum queue `queue` and their Raft state (`leader`, `follower`, `down`…).
    pub async fn quorum(&self, queue: &str) -> anyhow::Result<Vec<(usize, String)>> {
        let members = run(&self.script, &["quorum", queue]).await?;
        Ok(members
            .lines()
            .filter_map(|line| {
                let (node, role) = line.split_once(' ')?;
                Some((node_number(node)?, role.trim().to_owned()))
            })
            .collect())
    }

    /// The node that leads quorum queue `queue`.
    pub async fn leader(&self, queue: &str) -> anyhow::Result<usize> {
        let members = self.quorum(queue).await?;
        members
            .iter()
            .find(|(_, role)| role == "leader")
            .map(|(n, _)| *n)
            .with_context(|| format!("{queue} has no leader: {members:?}"))
    }

    /// The nodes the connections named `name` reached.
    pub async fn nodes_of(&self, name: &str) -> anyhow::Result<Vec<usize>> {
        let connections = run(&self.script, &["connections"]).await?;
        Ok(connections
            .lines()
            .filter_map(|line| {
                let (node, connection) = line.split_once(' ')?;
                (connection.trim() == name).then(|| node_number(node))?
            })
            .collect())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Synchronous and best effort: the script's own waits are bounded.
        match StdCommand::new(&self.script).arg("stop").output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "stopping the test cluster failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => eprintln!("cannot stop the test cluster: {error}"),
        }
    }
}

/// `waybill2@localhost` → 2.
fn node_number(node: &str) -> Option<usize> {
    let n = node.strip_prefix("waybill")?.strip_suffix("@localhost")?;
    n.parse().ok().filter(|n| NODES.contains(n))
}

/// Runs the script, bounded in time; its stdout, or an error with its stderr.
async fn run(script: &Path, args: &[&str]) -> anyhow::Result<String> {
    let script = script.to_str().context("a script path in UTF-8")?;
    crate::faults::services::output_within(script, args, COMMAND_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_parse() {
        assert_eq!(node_number("waybill2@localhost"), Some(2));
        assert_eq!(node_number("waybill7@localhost"), None);
        assert_eq!(node_number("rabbit@localhost"), None);
    }
}
