//! The end-to-end suites, one test binary: Waybill's services on the real PostgreSQL and
//! RabbitMQ, each test on its own database and queue prefix (`waybill_e2e::TestApp`), or the
//! real binaries as child processes (`waybill_e2e::stack`).
//!
//! A plain `cargo test -p waybill-e2e --test e2e` runs the in-process suites. The suites that
//! run the built binaries (or a browser) are `#[ignore]`d and selected by name after
//! `cargo build --bins`, as `scripts/test.sh` does:
//!
//! ```sh
//! cargo test -p waybill-e2e --test e2e                                  # in process
//! cargo test -p waybill-e2e --test e2e polling::                        # one suite
//! cargo build --bins && cargo test -p waybill-e2e --test e2e -- --ignored hostile::
//! cargo build --bins && cargo test -p waybill-e2e --test e2e -- --ignored hardening::
//! cargo build --bins && cargo test -p waybill-e2e --test e2e -- --ignored otlp_export::
//! cargo build --bins && cargo test -p waybill-e2e --test e2e -- --ignored console::
//! ```
//!
//! The suites that need the process to themselves (observability, the fault suites) are the
//! `isolated` binary.

#![allow(
    clippy::too_many_lines,
    reason = "a test reads as one scenario, from its set-up to its last assertion"
)]

mod console;
mod fanout;
mod hardening;
mod hostile;
mod openapi;
mod otlp_export;
mod pipeline;
mod polling;
mod tenancy;
