//! Traces as an operator receives them: the real binaries (`waybill-ingress` and
//! `waybill-worker` as child processes) export over OTLP/HTTP to a receiver on loopback
//! (`waybill_e2e::otlp`, decoding with `opentelemetry-proto`), and the tests read what arrived:
//!
//! * [`flows`]: one connected trace per webhook and per poll, from the courier to the
//!   subscriber's delivery, with logs at `warn` and at `info`; no secret, signature or personal
//!   data in any span;
//! * [`sampling`]: a ratio sampler's decision, taken once, honoured across the queue;
//! * [`idle`]: an idle installation exports (almost) nothing.
//!
//! The binaries must be built first, so these tests are `#[ignore]`d in a plain `cargo test`
//! and run by `scripts/test.sh` after `cargo build --bins`:
//!
//! ```sh
//! cargo build --bins && cargo test -p waybill-e2e --test e2e -- --ignored --nocapture otlp_export::
//! # An idle minute at production intervals, the figure docs/operations.md gives:
//! WAYBILL_IDLE_SECS=60 WAYBILL_IDLE_INTERVALS=production \
//!   cargo test -p waybill-e2e --test e2e -- --ignored --nocapture otlp_export::idle
//! ```

mod flows;
mod idle;
mod sampling;
mod traced;
