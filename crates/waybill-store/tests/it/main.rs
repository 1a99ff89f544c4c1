//! The store's integration tests against a real PostgreSQL, one test binary; each test creates
//! (and drops) its own database.

#![allow(
    clippy::too_many_lines,
    reason = "a test reads as one scenario, from its set-up to its last assertion"
)]

mod common;

mod api_keys;
mod apply_batch;
mod bench;
mod cohorts;
mod concurrency;
mod equivalence;
mod fanout;
mod polling;
mod rejected;
