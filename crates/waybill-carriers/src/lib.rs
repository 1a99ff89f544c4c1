//! Carrier profiles: each courier's or tracking platform's wire format described as data, so
//! adding a courier is writing a TOML file, not code.
//!
//! A profile says how to **verify** a webhook (HMAC-SHA256 over the raw body, Stripe-style
//! timestamped signatures, a static token, or nothing), how to **map** a payload to canonical
//! [`waybill_core::TrackingEvent`]s (JSON paths, checkpoint arrays, time zones, a status table),
//! and how to **poll** the carrier's tracking API. The format is documented in
//! `docs/carrier-profiles.md`; the built-ins are in `profiles/`.
//!
//! ```text
//! UnverifiedRequest ──CarrierProfile::verify──▶ VerifiedRequest ──map_webhook──▶ Mapped
//! PollSpec::build_request ──(worker sends it)──▶ body ──map_poll_response──▶ Mapped
//! ```
//!
//! **Invariant:** this crate is pure: no runtime, no network, no database. Its only IO is
//! reading profile files when asked to. It never panics on input and never puts a secret,
//! signature or payload value into an error message.

#![warn(missing_docs)]

mod error;
mod fields;
mod json;
mod mapping;
mod path;
mod poll;
mod profile;
mod registry;
mod status_map;
mod time;
mod verify;

pub use error::{MapError, ProfileError, VerifyError};
pub use json::MAX_DEPTH as MAX_JSON_DEPTH;
pub use mapping::Mapped;
pub use poll::{PollRequest, PollSpec};
pub use profile::CarrierProfile;
pub use registry::ProfileRegistry;
pub use verify::{UnverifiedRequest, VerifiedRequest};
