//! The end-to-end suites that need the test process to themselves, in their own test binary:
//!
//! * [`observability`]: metrics and traces of a real pipeline run — the metrics recorder and the
//!   tracing subscriber are process-wide, and its tests count exactly what their own traffic did,
//!   so no other suite may run beside them;
//! * [`faults`]: the fault suite, which restarts, blocks and cuts off the shared RabbitMQ and
//!   PostgreSQL (`#[ignore]`d; run alone and last);
//! * [`cluster`]: the cluster fault suite, on three extra RabbitMQ nodes (`#[ignore]`d).
//!
//! The two fault suites share their load, ledger and probes ([`faults::ledger`] and beside it).
//! Every test of this binary holds [`alone`] while it runs, so they never overlap whatever the
//! filter (`--ignored`, `--include-ignored`) or the number of test threads.
//!
//! ```sh
//! cargo test -p waybill-e2e --test isolated                     # observability
//! cargo build --bins && cargo test -p waybill-e2e --test isolated -- --ignored --nocapture cluster::
//! cargo build --bins && cargo test -p waybill-e2e --test isolated -- --ignored --nocapture --test-threads=1 faults::
//! ```

#![allow(
    clippy::too_many_lines,
    reason = "a test reads as one scenario, from its set-up to its last assertion"
)]

mod cluster;
mod faults;
mod observability;

/// Held by every test of this binary for its whole run: one at a time, because each needs the
/// process (observability) or the shared services (the fault suites) to itself.
async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}
