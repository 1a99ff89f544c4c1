//! The cluster faults: each runs load through a fresh stack whose ingress and worker list the
//! three nodes, stops one or two nodes mid-run, measures recovery, brings the nodes back, and
//! reconciles the books exactly as the single-node suite does.

use std::time::{Duration, Instant};

use super::nodes::{Cluster, NODES};
use crate::faults::effects;
use crate::faults::ledger::{Outcome, Profile, Row};
use crate::faults::probes::{http, post_probe};
use waybill_e2e::stack::Stack;

/// The connection name of the ingress's publisher.
const INGRESS_CONNECTION: &str = "waybill-ingress";

/// How long a probe may take to get through after the fault (or, without quorum, after a
/// node came back).
const RECOVERY_BOUND: Duration = Duration::from_secs(90);

/// Every cluster fault, in the order the suite runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterFault {
    /// The node the ingress publishes through stops; it comes back after the hold.
    IngressNode,
    /// The node that leads the webhooks quorum queue stops; it comes back after the hold.
    QueueLeader,
    /// A follower of the webhooks queue stops (the cluster keeps its majority); it comes back.
    MinorityNode,
    /// Two of three nodes stop: no majority, so nothing can be confirmed and the ingress must
    /// refuse; one node comes back, and acceptance must resume by itself.
    NoQuorum,
}

impl ClusterFault {
    pub const ALL: [ClusterFault; 4] = [
        ClusterFault::IngressNode,
        ClusterFault::QueueLeader,
        ClusterFault::MinorityNode,
        ClusterFault::NoQuorum,
    ];

    /// The short name (`WAYBILL_CLUSTER_FAULTS_ONLY` takes a comma-separated list of these).
    pub fn name(self) -> &'static str {
        match self {
            ClusterFault::IngressNode => "ingress-node-down",
            ClusterFault::QueueLeader => "queue-leader-down",
            ClusterFault::MinorityNode => "minority-node-down",
            ClusterFault::NoQuorum => "two-of-three-down",
        }
    }
}

/// Runs one fault end to end. Never panics: what went wrong is in the row's failures.
pub async fn run(fault: ClusterFault, cluster: &Cluster, profile: &Profile) -> Row {
    let mut row = Row::new(fault.name());
    let urls = Cluster::urls();
    let stack = Stack::create_on(fault.name(), 1, "info,lapin=error", "", &urls);
    let Some(stack) = row.record(stack.await, "cannot create the stack") else {
        return row;
    };
    let Some(mut stack) = row.started(stack).await else {
        return row;
    };
    row.load_while(&mut stack, profile, async |stack| {
        inject(fault, stack, cluster, profile).await
    })
    .await;
    // Whatever happened, the next fault starts on three nodes.
    if let Err(error) = cluster.start_stopped().await {
        row.failures
            .push(format!("cannot bring the nodes back: {error:#}"));
    }
    row.check_effects(&stack).await;
    row.close(stack).await
}

async fn inject(
    fault: ClusterFault,
    stack: &mut Stack,
    cluster: &Cluster,
    profile: &Profile,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    tokio::time::sleep(profile.warmup).await;
    let queue = stack.webhooks_queue();
    let leader = cluster.leader(&queue).await?;
    let ingress_nodes = cluster.nodes_of(INGRESS_CONNECTION).await?;
    let ingress_node = *ingress_nodes
        .first()
        .ok_or_else(|| anyhow::anyhow!("no connection named {INGRESS_CONNECTION} found"))?;
    outcome.notes.push(format!(
        "ingress on node {ingress_node}, {queue} led by node {leader}"
    ));
    match fault {
        ClusterFault::IngressNode => {
            one_node_down(stack, cluster, profile, ingress_node, &mut outcome).await?;
            let now_on = cluster.nodes_of(INGRESS_CONNECTION).await?;
            outcome.notes.push(format!("ingress then on {now_on:?}"));
        }
        ClusterFault::QueueLeader => {
            one_node_down(stack, cluster, profile, leader, &mut outcome).await?;
            let members = cluster.quorum(&queue).await?;
            outcome.check(
                members.iter().filter(|(_, role)| role == "leader").count() == 1,
                format!("after the leader came back the queue's members are {members:?}"),
            );
        }
        ClusterFault::MinorityNode => {
            // A follower, and not the ingress's node if there is such a one: the fault is the
            // replica's absence alone.
            let follower = NODES
                .into_iter()
                .filter(|n| *n != leader)
                .max_by_key(|n| *n != ingress_node)
                .unwrap_or(1);
            one_node_down(stack, cluster, profile, follower, &mut outcome).await?;
        }
        ClusterFault::NoQuorum => {
            no_quorum(stack, cluster, profile, leader, ingress_node, &mut outcome).await?;
        }
    }
    outcome.check(stack.worker_alive(0), "the worker exited");
    outcome.check(stack.ingress_alive(), "the ingress exited");
    Ok(outcome)
}

/// Stops node `n`; recovery runs from the moment it is down until a fresh webhook is accepted
/// and stored (the clients must get there without it); after the hold it comes back.
async fn one_node_down(
    stack: &Stack,
    cluster: &Cluster,
    profile: &Profile,
    n: usize,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    cluster.stop_node(n).await?;
    let down = Instant::now();
    let recovered = effects::probe(stack, down, RECOVERY_BOUND).await;
    outcome.recovery = outcome.record(recovered, "recovery probe with a node down");
    tokio::time::sleep(profile.hold.saturating_sub(down.elapsed())).await;
    outcome.notes.push(format!(
        "node {n} down for {:.0} s",
        down.elapsed().as_secs_f64()
    ));
    let started = Instant::now();
    cluster.start_node(n).await?;
    outcome.notes.push(format!(
        "node {n} back in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Stops the queue's leader and one more node (the ingress's, when that is another one), so one
/// node of three is left. While the hold lasts, every probe must be refused with 503 and
/// `Retry-After` — a 2xx would be an acceptance without a confirm. Then the leader comes back
/// (two of three: a majority again), and recovery runs from then until a fresh webhook is
/// accepted and stored; the third node follows.
async fn no_quorum(
    stack: &Stack,
    cluster: &Cluster,
    profile: &Profile,
    leader: usize,
    ingress_node: usize,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let second = if ingress_node == leader {
        NODES.into_iter().find(|n| *n != leader).unwrap_or(1)
    } else {
        ingress_node
    };
    cluster.stop_node(leader).await?;
    cluster.stop_node(second).await?;
    let down = Instant::now();
    let (mut refused, mut accepted, mut other) = (0u64, 0u64, Vec::new());
    while down.elapsed() < profile.hold || refused == 0 && down.elapsed() < RECOVERY_BOUND {
        match post_probe(stack).await {
            Ok(response) => {
                let status = response.status().as_u16();
                effects::count_probe_answer(status);
                let retry_after = response.headers().contains_key("retry-after");
                if response.status().is_success() {
                    accepted += 1;
                } else if status == 503 && retry_after {
                    refused += 1;
                } else {
                    other.push(format!("{status} (Retry-After: {retry_after})"));
                }
            }
            Err(error) => other.push(format!("no answer: {error:#}")),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    outcome.notes.push(format!(
        "one node of three for {:.0} s: {refused} probes refused with 503",
        down.elapsed().as_secs_f64()
    ));
    outcome.check(
        accepted == 0,
        format!("{accepted} probes were accepted with no majority of the queue's replicas up"),
    );
    outcome.check(refused > 0, "no probe was refused with 503 + Retry-After");
    outcome.check(
        other.is_empty(),
        format!("without a majority, probes were answered {other:?}"),
    );
    let started = Instant::now();
    cluster.start_node(leader).await?;
    let back = Instant::now();
    outcome.notes.push(format!(
        "node {leader} back in {:.0} s",
        (back - started).as_secs_f64()
    ));
    let recovered = effects::probe(stack, back, RECOVERY_BOUND).await;
    outcome.recovery = outcome.record(recovered, "recovery probe after a majority was back");
    outcome.notes.push(format!(
        "publish failures by reason: {}",
        publish_failures(stack).await
    ));
    cluster.start_node(second).await?;
    Ok(())
}

/// The ingress's `waybill_publish_failures_total`, as `reason=count` pairs.
async fn publish_failures(stack: &Stack) -> String {
    let text = match http()
        .get(format!("{}/metrics", stack.ingress_url()))
        .send()
        .await
    {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(error) => return format!("no metrics: {error}"),
    };
    let pairs: Vec<String> = text
        .lines()
        .filter(|line| line.starts_with("waybill_publish_failures_total{"))
        .filter_map(|line| {
            let reason = line.split("reason=\"").nth(1)?.split('"').next()?;
            let count = line.rsplit(' ').next()?;
            Some(format!("{reason}={count}"))
        })
        .collect();
    if pairs.is_empty() {
        "none".to_owned()
    } else {
        pairs.join(", ")
    }
}
