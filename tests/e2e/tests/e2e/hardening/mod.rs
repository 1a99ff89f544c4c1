//! Input hardening, against the real ingress and worker: whatever they acknowledge is stored
//! ("200 means stored"), every refusal has one shape, limits answer at the earliest point, and
//! request-derived values never reach a log line as markup.
//!
//! `stored`, `errors` and `served` run the ingress and worker in process (a plain `cargo test`);
//! `logs` (the binaries' own log output) and `contract` (Schemathesis against the binaries) are
//! `#[ignore]`d and run by `scripts/test.sh` after `cargo build --bins`:
//!
//! ```sh
//! cargo test -p waybill-e2e --test e2e hardening::
//! cargo build --bins && cargo test -p waybill-e2e --test e2e -- --ignored hardening::
//! WAYBILL_PROPERTY_CASES=5000 WAYBILL_PROPERTY_SEED=7 cargo test -p waybill-e2e --test e2e hardening::stored
//! ```

mod cli;
mod contract;
mod errors;
mod logs;
mod served;
mod stored;
