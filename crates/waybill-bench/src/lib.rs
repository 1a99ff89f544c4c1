//! Waybill's load tools: the load generator (`loadgen`), which plays many couriers against a
//! running ingress and balances the books in Postgres, and the benchmark (`bench`), which puts
//! the machine's ceilings and Waybill's figures side by side. They live apart from the `waybill`
//! admin CLI so the production image carries operator commands only; the fault suite
//! (`tests/e2e/tests/isolated/faults`) drives `loadgen` in-process through this library.
//! `procfs` reads processes' CPU time from `/proc`. `scratch` removes a run's fresh database
//! and queue prefix; the test kits that start Waybill on one use it too. `seed` stores a big
//! history (millions of shipments and events) to measure against.

pub mod bench;
pub mod loadgen;
pub mod procfs;
pub mod scratch;
pub mod seed;
