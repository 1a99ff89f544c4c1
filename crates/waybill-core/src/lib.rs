//! The tracking domain: canonical statuses, validated identifiers, tracking events with their
//! deterministic ids, and the order-independent merge of events into a shipment's state.
//!
//! **Invariant:** this crate is pure. It performs no IO, spawns nothing and depends on no runtime,
//! database, broker or HTTP crate. Everything here is a value or a function of values, so every
//! rule can be tested exhaustively and property-tested.

/// Implements `Display`, `TryFrom<String>` (through `$name::parse(&str)`, failing with `$error`)
/// and `From<$name> for String` for a newtype `$name(String)` holding its text, so it
/// (de)serialises with `#[serde(try_from = "String", into = "String")]`.
#[macro_export]
macro_rules! string_conversions {
    ($name:ident, $error:ty) => {
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl ::std::convert::TryFrom<String> for $name {
            type Error = $error;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                $name::parse(&value)
            }
        }

        impl ::std::convert::From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}

pub mod access;
mod event;
mod event_id;
mod ids;
pub mod merge;
pub mod rfc3339;
mod status;
pub mod storable;
pub mod tagged;

pub use event::{Origin, RawStatus, TimeProvenance, TrackingEvent, TrackingEventDraft};
pub use event_id::EventId;
pub use ids::{CarrierCode, IdError, SourceId, TenantId, TrackingNumber};
pub use merge::{ChangeKind, EventKey, MergeOutcome, ShipmentState};
pub use status::{Status, UnknownStatus};
