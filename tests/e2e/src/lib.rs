//! The end-to-end test kit: Waybill's services started in any combination on a fresh database
//! and queue prefix, and the stand-ins around them. The suites live in `tests/`.
//!
//! - [`TestApp`] ([`app`]): the ingress and workers in this test process, built by
//!   [`TestApp::builder`]; a scheduler the test ticks on its own clock;
//! - [`stack`]: the real binaries as child processes, which a test can kill and restart;
//! - [`sources`]: the standard sources, their secrets and signatures, fixtures and bodies;
//! - [`logs`]: every log line of the test process, to prove what never appears;
//! - [`otlp`]: an OTLP/HTTP receiver standing in for a trace collector;
//! - and the leaf kit every crate's tests share ([`waybill_testkit`]): [`eventually`], the
//!   local services' URLs, HTTP stand-ins for couriers and subscribers, a tapped queue.

pub mod app;
pub mod logs;
pub mod otlp;
pub mod sources;
pub mod stack;

pub use app::{AppBuilder, TestApp};
pub use waybill_testkit::amqp::{Tap, TappedMessage};
pub use waybill_testkit::http::{Answer, FakeCourier, Received, Receiver, Reply, serve};
pub use waybill_testkit::{Settled, amqp, env, eventually, eventually_or, http, sign};
