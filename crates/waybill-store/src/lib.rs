//! Waybill's Postgres storage: the schema and its migrations, the batched idempotent merge of
//! tracking events into shipments, the transactional outbox, and the read queries of the API.
//!
//! **Invariant:** this is the only crate that names sqlx or contains SQL. Every function that
//! writes takes `&mut PgConnection` so the caller owns the transaction (one per consumed batch);
//! [`Store::apply_batch`] wraps that in a spawned transaction for callers that can be cancelled.
//!
//! The merge semantics are not here: [`apply_batch`] feeds each shipment's events to the pure
//! [`waybill_core::merge::apply`], so the database holds exactly what the domain function says,
//! whatever the batching and order (property-tested in `tests/equivalence.rs`).

#![warn(missing_docs)]

mod batch;
pub mod bench;
mod bodies;
pub mod cohorts;
pub mod console;
mod decode;
mod error;
pub mod fanout;
mod fetch;
mod fragments;
pub mod keys;
pub mod ledger;
mod merge_batch;
pub mod migrate;
mod outbox;
pub mod polling;
mod queries;
pub mod rejected;
pub mod seed;
mod store;
pub mod testing;

pub use batch::{
    BatchReport, ChangedShipment, InboundBatch, InboundItem, Registration, ShipmentKey,
};
pub use bodies::EncodedBodies;
pub use error::StoreError;
pub use keys::{KeySetSnapshot, NewApiKey, StoredApiKey};
pub use merge_batch::apply_batch;
pub use queries::{
    count_events_with_ids, count_outbox, count_shipments, count_tracking_events,
    count_unmatched_events, find_by_order_number, get_shipment, webhook_touch,
};
/// The connection type the store's functions take (`&mut *tx`, `&mut *conn`).
pub use sqlx::PgConnection;
pub use store::{PooledConnection, Store, Transaction};
/// The wire types the store writes and reads back, defined in `waybill-api` (re-exported so
/// callers of the store need not name both crates).
pub use waybill_api::events::{
    DownstreamEvent, HistoryEntryV1, RECENT_HISTORY_LEN, ScanV1, ShipmentRefV1, StatusChangedV1,
};
pub use waybill_api::shipments::{HistoryEntry, ShipmentSummary, ShipmentView};
