//! The fault suite: real load through the real binaries while RabbitMQ and PostgreSQL are
//! restarted, blocked and cut off and the processes are SIGKILLed — then the books are balanced:
//! every request answered 2xx is in Postgres exactly once, and no effect happened twice.
//!
//! It restarts the RabbitMQ and PostgreSQL that the test URLs point at, so it must run alone:
//! the one test is `#[ignore]`d and `scripts/test.sh` runs it after everything else:
//!
//! ```sh
//! cargo build --bins && cargo test -p waybill-e2e --test isolated -- --ignored --nocapture faults::
//! WAYBILL_FAULTS_FULL=1 cargo test -p waybill-e2e --test isolated -- --ignored --nocapture faults::  # full length
//! WAYBILL_FAULTS_ONLY=broker-restart,ingress-kill cargo test …                          # a subset
//! ```
//!
//! To leave shared services alone while developing, point it at a private broker and cluster:
//! `WAYBILL_TEST_AMQP_URL`, `WAYBILL_TEST_DATABASE_URL` (the cluster is found by its port) and
//! `WAYBILL_FAULTS_RABBIT_NODE`. See `docs/reliability.md`.

mod blackhole;
pub mod downstream;
pub mod effects;
pub mod ledger;
pub mod probes;
mod scenarios;
pub mod services;

use std::time::Instant;

use waybill_e2e::stack;

use ledger::{Profile, report};
use scenarios::Fault;
use services::Services;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared RabbitMQ and PostgreSQL: runs alone, after the other tests (scripts/test.sh)"]
async fn every_fault_keeps_the_books_balanced() {
    let _alone = crate::alone().await;
    let full = ledger::flag("WAYBILL_FAULTS_FULL");
    let profile = if full {
        Profile::full()
    } else {
        Profile::reduced()
    };
    let faults = ledger::select(Fault::ALL, Fault::name, "WAYBILL_FAULTS_ONLY");

    let services = Services::discover(&stack::admin_database_url())
        .await
        .unwrap_or_else(|error| panic!("cannot find the services to break: {error:#}"));
    // Whatever happens below, the broker runs, its watermark is back and Postgres is started
    // when this goes out of scope.
    let _restore = services.restore_guard();
    eprintln!(
        "fault suite ({}): {} faults, {} s of load at {}/s each, outages of {} s; PostgreSQL {} {}, RabbitMQ node {}",
        if full { "full" } else { "reduced" },
        faults.len(),
        profile.load.as_secs(),
        profile.rate,
        profile.hold.as_secs(),
        services.pg_version,
        services.pg_cluster,
        services.rabbit_node.as_deref().unwrap_or("(default)")
    );

    let started = Instant::now();
    let rows = ledger::run_each(faults, Fault::name, |fault| {
        scenarios::run(fault, &services, &profile)
    })
    .await;

    report(&rows, started, "waybill-faults-table.md", "the fault suite");
}
