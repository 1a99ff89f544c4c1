//! The tracking domain: canonical statuses, validated identifiers, tracking events with their
//! deterministic ids, and the order-independent merge of events into a shipment's state.
//!
//! **Invariant:** this crate is pure. It performs no IO, spawns nothing and depends on no runtime,
//! database, broker or HTTP crate. Everything here is a value or a function of values, so every
//! rule can be tested exhaustively and property-tested.

pub mod access;
mod event;
mod event_id;
mod ids;
pub mod merge;
mod status;
pub mod storable;

pub use event::{Origin, RawStatus, TimeProvenance, TrackingEvent, TrackingEventDraft};
pub use event_id::EventId;
pub use ids::{CarrierCode, IdError, SourceId, TenantId, TrackingNumber};
pub use merge::{ChangeKind, EventKey, MergeOutcome, ShipmentState};
pub use status::{Status, UnknownStatus};
