//! Waybill's wire types: every body that crosses an HTTP boundary or leaves for a downstream
//! system, with its OpenAPI schema beside it, shared by the services that produce them and the
//! CLI and tests that read them.
//!
//! **Invariant:** one definition of each wire type. The store builds the outbound event and the
//! shipment views, the ingress and worker answer with them, the CLI and tests parse them — all
//! with these types, so the documented schema and the bytes on the wire cannot drift apart.
//! Fields may be added; none is renamed or removed without a new version.
//!
//! * [`error`] — the one error body, `{"error": code, "message": sentence}`.
//! * [`events`] — the outbound `shipment.status_changed` event (version 1).
//! * [`health`] — liveness and readiness answers.
//! * [`shipments`] — the worker's shipments API answers.
//! * [`ingress`] — the ingress's webhook and registration bodies.
//! * [`params`] — the path, query and header parameters of both APIs.
//! * [`patterns`] — the request constraints the OpenAPI documents state, equal to the domain's
//!   parsers.

#![warn(missing_docs)]

pub mod error;
pub mod events;
pub mod health;
pub mod ingress;
pub mod params;
pub mod patterns;
pub mod shipments;

pub use error::ErrorBody;
pub use events::{
    DownstreamEvent, HistoryEntryV1, RECENT_HISTORY_LEN, ScanV1, ShipmentRefV1, StatusChangedV1,
};
pub use ingress::{
    Accepted, AcceptedStatus, Registered, RegisteredShipment, RegistrationBody, RegistrationRequest,
};
pub use shipments::{HistoryEntry, ShipmentList, ShipmentSummary, ShipmentView};
