//! End-to-end tests of polling on the real services: registration through the ingress, the
//! scheduler and poll consumers of real workers, and local HTTP servers standing in for each
//! courier's tracking API. Each test has its own database, queue prefix and fake couriers.

pub(crate) mod helpers;

mod failures;
mod flow;
mod registration;
mod schedule;
