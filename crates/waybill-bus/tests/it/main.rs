//! The bus crate's integration tests, one test binary: the broker itself (a real RabbitMQ,
//! each test on its own prefixed topology), the key-set snapshot, and the V1 wire format pinned
//! by committed fixtures.

mod common;

mod broker;
mod envelope_fixtures;
mod keys;
