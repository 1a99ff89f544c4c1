//! The `waybill` admin CLI's library: the operator commands (API keys, subscriptions, deliveries,
//! dead letters), so that the end-to-end tests can drive them in-process. `main.rs` parses
//! arguments and calls these. The load tools are in `waybill-bench`.

mod args;
mod broker;
pub mod cohorts;
pub mod deadletters;
pub mod deliveries;
pub mod keys;
pub mod output;
pub mod profiles;
pub mod rejected;
pub mod subscriptions;

pub use broker::topology;
