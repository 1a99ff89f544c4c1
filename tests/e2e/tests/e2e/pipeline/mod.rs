//! End-to-end tests of the webhook pipeline on the real services: HTTP → ingress → RabbitMQ →
//! worker → Postgres → shipments API. One test binary; each test spawns its own app with its
//! own database and queue-name prefix.

pub(crate) mod helpers;

mod errors;
mod flow;
mod reads;
mod registration;
mod replicas;
