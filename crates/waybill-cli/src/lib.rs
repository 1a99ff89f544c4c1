//! The `waybill` admin CLI's library: the load generator, the benchmark and the dead-letter
//! commands, so that the fault suite (`tests/e2e/tests/faults`) and other tests can drive them
//! in-process. `main.rs` parses arguments and calls these.

pub mod bench;
pub mod deadletters;
pub mod deliveries;
pub mod keys;
pub mod loadgen;
pub mod output;
pub mod subscriptions;
