//! The test kit's leaf: what tests of any crate need beside the code under test, depending on
//! none of Waybill's crates.
//!
//! - [`env`]: the local PostgreSQL and RabbitMQ the tests run against, and unique names;
//! - [`eventually`]: the one way a test waits for something that happens in the background;
//! - [`http`]: local HTTP stand-ins — a subscriber's receiver and a courier's tracking API;
//! - [`amqp`]: a queue bound to an exchange, as a downstream consumer sees it;
//! - [`sign`]: the HMAC signatures couriers put on webhooks.
//!
//! The builder that starts Waybill's own services on a fresh database and queue prefix is
//! `waybill_e2e::TestApp` (it depends on every service crate, so it cannot live here).

pub mod amqp;
pub mod env;
pub mod http;
pub mod sign;
mod wait;

pub use wait::{Settled, eventually, eventually_or};
