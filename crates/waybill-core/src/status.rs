//! The canonical status vocabulary (AfterShip-style tags, the de-facto standard of the trade).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The canonical status of a shipment or of one tracking event.
///
/// Every carrier's raw status maps to exactly one of these; a raw status nobody mapped yet maps to
/// [`Status::Unknown`] and is kept beside it, never rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    /// Created, no information from the carrier yet.
    Pending,
    /// The carrier has the shipment's data (label printed) but not the parcel.
    InfoReceived,
    /// The parcel is moving through the carrier's network.
    InTransit,
    /// The parcel is on the vehicle for the final delivery.
    OutForDelivery,
    /// A delivery was attempted and failed; another attempt may follow.
    AttemptFail,
    /// The parcel waits at a pick-up point for the recipient.
    AvailableForPickup,
    /// The parcel was delivered. Terminal.
    Delivered,
    /// Something went wrong (held, damaged, lost, address issue). Not terminal.
    Exception,
    /// The parcel went back to its sender. Terminal.
    Returned,
    /// The shipment was cancelled. Terminal.
    Cancelled,
    /// Tracking stopped without an outcome (no scan for too long). Terminal.
    Expired,
    /// The carrier's raw status is not mapped (yet).
    Unknown,
}

/// A string that is not one of the canonical status names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a canonical status (expected one of Pending, InfoReceived, InTransit, OutForDelivery, AttemptFail, AvailableForPickup, Delivered, Exception, Returned, Cancelled, Expired, Unknown)"
)]
pub struct UnknownStatus(pub String);

impl Status {
    /// Every status, in declaration order.
    pub const ALL: [Status; 12] = [
        Status::Pending,
        Status::InfoReceived,
        Status::InTransit,
        Status::OutForDelivery,
        Status::AttemptFail,
        Status::AvailableForPickup,
        Status::Delivered,
        Status::Exception,
        Status::Returned,
        Status::Cancelled,
        Status::Expired,
        Status::Unknown,
    ];

    /// The canonical name, e.g. `OutForDelivery`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::InfoReceived => "InfoReceived",
            Status::InTransit => "InTransit",
            Status::OutForDelivery => "OutForDelivery",
            Status::AttemptFail => "AttemptFail",
            Status::AvailableForPickup => "AvailableForPickup",
            Status::Delivered => "Delivered",
            Status::Exception => "Exception",
            Status::Returned => "Returned",
            Status::Cancelled => "Cancelled",
            Status::Expired => "Expired",
            Status::Unknown => "Unknown",
        }
    }

    /// The lowercase snake-case form used in routing keys and metric labels, e.g. `out_for_delivery`.
    pub fn routing_name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::InfoReceived => "info_received",
            Status::InTransit => "in_transit",
            Status::OutForDelivery => "out_for_delivery",
            Status::AttemptFail => "attempt_fail",
            Status::AvailableForPickup => "available_for_pickup",
            Status::Delivered => "delivered",
            Status::Exception => "exception",
            Status::Returned => "returned",
            Status::Cancelled => "cancelled",
            Status::Expired => "expired",
            Status::Unknown => "unknown",
        }
    }

    /// Terminal statuses end tracking; they are left only for an allowed follow-on
    /// (see [`Status::allows_follow_on`]).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Delivered | Status::Returned | Status::Cancelled | Status::Expired
        )
    }

    /// The tie-break rank between events with the same `occurred_at`: further along the
    /// shipment's life ranks higher, so a "Delivered" and an "OutForDelivery" stamped with the
    /// same second resolve to "Delivered" whatever order they arrive in.
    pub fn rank(self) -> u8 {
        match self {
            Status::Unknown => 0,
            Status::Pending => 1,
            Status::InfoReceived => 2,
            Status::InTransit => 3,
            Status::AvailableForPickup => 4,
            Status::OutForDelivery => 5,
            Status::AttemptFail => 6,
            Status::Exception => 7,
            Status::Delivered => 8,
            Status::Returned => 9,
            Status::Cancelled => 10,
            Status::Expired => 11,
        }
    }

    /// Whether a *later* event with status `next` may replace `self` as the current status.
    ///
    /// The transition table (also in `docs/merge.md`):
    ///
    /// | current | later events that may replace it |
    /// |---|---|
    /// | any non-terminal known status | any known status |
    /// | `Unknown` | any status |
    /// | `Delivered` | `Exception`, `Returned` |
    /// | `Returned` | `Delivered` |
    /// | `Cancelled` | `Delivered` |
    /// | `Expired` | any known status (a real scan proves the parcel is alive) |
    ///
    /// `Unknown` never replaces a known status: an unmapped raw status joins history only.
    pub fn allows_follow_on(self, next: Status) -> bool {
        if self == Status::Unknown {
            return true;
        }
        if next == Status::Unknown {
            return false;
        }
        match self {
            Status::Delivered => matches!(next, Status::Exception | Status::Returned),
            Status::Returned | Status::Cancelled => next == Status::Delivered,
            Status::Expired => true,
            _ => true,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = UnknownStatus;

    /// Parses a canonical name; case and `_`/`-`/space separators are ignored, so
    /// `OutForDelivery`, `out_for_delivery` and `out-for-delivery` all parse.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let folded: String = s
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect();
        Status::ALL
            .into_iter()
            .find(|status| status.as_str().to_ascii_lowercase() == folded)
            .ok_or_else(|| UnknownStatus(s.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_every_spelling() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
            assert_eq!(status.routing_name().parse::<Status>(), Ok(status));
        }
        assert!("Teleported".parse::<Status>().is_err());
    }

    #[test]
    fn ranks_are_distinct() {
        let mut ranks: Vec<u8> = Status::ALL.iter().map(|s| s.rank()).collect();
        ranks.sort_unstable();
        ranks.dedup();
        assert_eq!(ranks.len(), Status::ALL.len());
    }

    #[test]
    fn terminal_statuses_only_leave_for_their_follow_ons() {
        assert!(Status::Delivered.allows_follow_on(Status::Returned));
        assert!(Status::Delivered.allows_follow_on(Status::Exception));
        assert!(!Status::Delivered.allows_follow_on(Status::InTransit));
        assert!(!Status::Delivered.allows_follow_on(Status::Delivered));
        assert!(Status::Cancelled.allows_follow_on(Status::Delivered));
        assert!(!Status::Returned.allows_follow_on(Status::OutForDelivery));
        assert!(Status::Expired.allows_follow_on(Status::InTransit));
        assert!(!Status::InTransit.allows_follow_on(Status::Unknown));
        assert!(Status::Unknown.allows_follow_on(Status::Unknown));
    }
}
