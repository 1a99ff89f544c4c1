//! End-to-end tests of the downstream fan-out on the real services: a change merged by a worker
//! reaches a queue bound to `waybill.events` and subscribed HTTP receivers (local axum servers
//! on 127.0.0.1), signed per Standard Webhooks, retried, disabled, replayed. Each test has its
//! own database and queue-name prefix.

pub(crate) mod helpers;

mod delivery;
mod recovery;
mod safety;
mod topic;
