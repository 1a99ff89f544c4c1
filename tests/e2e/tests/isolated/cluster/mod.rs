//! The cluster fault suite: real load through the real binaries, whose `bus.urls` list the three
//! nodes of a RabbitMQ cluster, while nodes are stopped — the ingress's node, the leader of the
//! webhooks quorum queue, a follower, then two of three — and the books balanced as in the
//! single-node suite: every request answered 2xx is in Postgres exactly once, no effect
//! happened twice, and without a majority the ingress refuses rather than accepts.
//!
//! It starts three extra RabbitMQ nodes with `scripts/rabbitmq-cluster.sh` (which needs the
//! `rabbitmq-server` package) and stops and removes them at the end, also when a check fails;
//! the machine's own broker and PostgreSQL are only used, never stopped. The test is `#[ignore]`d:
//!
//! ```sh
//! cargo build --bins && cargo test -p waybill-e2e --test isolated -- --ignored --nocapture cluster::
//! WAYBILL_CLUSTER_FAULTS_FULL=1 cargo test …   # full length
//! WAYBILL_CLUSTER_FAULTS_ONLY=two-of-three-down cargo test …   # a subset
//! ```
//!
//! See `docs/reliability.md`.

mod nodes;
mod scenarios;

use std::time::{Duration, Instant};

use crate::faults::ledger::{Profile, flag, report, run_each, select};
use nodes::Cluster;
use scenarios::ClusterFault;

/// The CI form: ten seconds of load per fault, outages of a few seconds.
fn reduced() -> Profile {
    Profile {
        load: Duration::from_secs(10),
        rate: 100.0,
        warmup: Duration::from_secs(3),
        hold: Duration::from_secs(3),
    }
}

/// `WAYBILL_CLUSTER_FAULTS_FULL=1`: a minute of load per fault, 15 s outages.
fn full() -> Profile {
    Profile {
        load: Duration::from_secs(60),
        rate: 300.0,
        warmup: Duration::from_secs(15),
        hold: Duration::from_secs(15),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a three-node RabbitMQ cluster beside the machine's broker: run by scripts/test.sh"]
async fn every_cluster_fault_keeps_the_books_balanced() {
    let _alone = crate::alone().await;
    let full_form = flag("WAYBILL_CLUSTER_FAULTS_FULL");
    let profile = if full_form { full() } else { reduced() };
    let faults = select(
        ClusterFault::ALL,
        ClusterFault::name,
        "WAYBILL_CLUSTER_FAULTS_ONLY",
    );

    let started = Instant::now();
    // Stopped and removed when this goes out of scope, also on a panic.
    let cluster = Cluster::start()
        .await
        .unwrap_or_else(|error| panic!("cannot start the cluster: {error:#}"));
    eprintln!(
        "cluster fault suite ({}): three nodes up in {:.0} s; {} faults, {} s of load at {}/s each, outages of {} s",
        if full_form { "full" } else { "reduced" },
        started.elapsed().as_secs_f64(),
        faults.len(),
        profile.load.as_secs(),
        profile.rate,
        profile.hold.as_secs(),
    );

    let rows = run_each(faults, ClusterFault::name, |fault| {
        scenarios::run(fault, &cluster, &profile)
    })
    .await;
    drop(cluster);

    report(
        &rows,
        started,
        "waybill-cluster-faults-table.md",
        "the cluster fault suite",
    );
}
