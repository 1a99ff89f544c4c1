//! The merge: folding tracking events into one shipment state, the same whatever order, batching
//! or duplication the events arrive in.
//!
//! The state is the *set* of events seen, and the current event is a pure function of that set:
//! walk the events in [`EventKey`] order (time, then status rank, then id) and let each one
//! replace the current event when [`Status::allows_follow_on`] permits. Set union is commutative,
//! associative and idempotent, and the current event depends only on the set, so the merge is
//! too. Only the `version` counter depends on arrival order: it counts how many times the
//! current event changed, which is what downstream consumers order notifications by.
//!
//! Events are deduplicated by [`EventId`], the idempotency key, not by the whole [`EventKey`]:
//! two copies of one scan can disagree on what the id leaves out (sub-second digits, which
//! sources send differently; a canonical status re-mapped between deliveries). The first copy
//! stays, like the store's unique event id; a later copy is a duplicate and changes nothing.

use std::collections::{BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event_id::EventId;
use crate::status::Status;

/// What the merge needs to know about an event: its time, canonical status and id. Ordered by
/// `(occurred_at, status rank, id)`, a total order that breaks ties deterministically.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventKey {
    /// When the scan happened.
    pub occurred_at: DateTime<Utc>,
    /// Its canonical status.
    pub status: Status,
    /// Its deterministic id.
    pub id: EventId,
}

impl Ord for EventKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.occurred_at, self.status.rank(), &self.id).cmp(&(
            other.occurred_at,
            other.status.rank(),
            &other.id,
        ))
    }
}

impl PartialOrd for EventKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A shipment's merge state: every event seen, the current one, and the change counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipmentState {
    /// Every event merged so far: at most one per event id, the first copy that arrived.
    pub history: BTreeSet<EventKey>,
    /// The event that determines the current status; `None` before the first event.
    pub current: Option<EventKey>,
    /// Increases by one for every merge that changed the current event; never otherwise.
    pub version: i64,
}

/// What one input event did to the shipment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// New, and it is now the shipment's current event.
    NewCurrent,
    /// New, stored in history, but not current (not newer, or a terminal status kept its place).
    HistoryOnly,
    /// New but older than the shipment's current event: history only, the status never regresses.
    Outdated,
    /// Already known (same event id): changes nothing.
    Duplicate,
}

impl ChangeKind {
    /// The lowercase name used in storage and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::NewCurrent => "new_current",
            ChangeKind::HistoryOnly => "history_only",
            ChangeKind::Outdated => "outdated",
            ChangeKind::Duplicate => "duplicate",
        }
    }

    /// Whether the event was new to the shipment's history.
    pub fn is_new(self) -> bool {
        !matches!(self, ChangeKind::Duplicate)
    }
}

/// The result of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    /// The state after the merge.
    pub state: ShipmentState,
    /// The current event before the merge.
    pub previous: Option<EventKey>,
    /// One entry per input event, in input order.
    pub changes: Vec<(EventId, ChangeKind)>,
}

impl MergeOutcome {
    /// Whether the merge changed the current event (and so bumped the version): the only case
    /// downstream systems are told about.
    pub fn current_changed(&self) -> bool {
        self.previous != self.state.current
    }
}

/// The current event of a set of events: the fold of [`Status::allows_follow_on`] over the set
/// in [`EventKey`] order.
pub fn current_of<'a>(history: impl IntoIterator<Item = &'a EventKey>) -> Option<EventKey> {
    let mut current: Option<&EventKey> = None;
    for candidate in history {
        let replaces = match current {
            None => true,
            Some(existing) => existing.status.allows_follow_on(candidate.status),
        };
        if replaces {
            current = Some(candidate);
        }
    }
    current.cloned()
}

/// Merges `events` into `state`. Pure; commutative, associative and idempotent in the final
/// `history` and `current` (property-tested in `tests/merge_algebra.rs`). An event whose id is
/// already known, from `state` or from earlier in `events`, is a [`ChangeKind::Duplicate`] and
/// changes nothing, even if its time or status differ from the stored copy's.
pub fn apply(state: &ShipmentState, events: &[EventKey]) -> MergeOutcome {
    let previous = state.current.clone();
    let mut history = state.history.clone();
    // Duplicates are recognised by id alone (see the module documentation): `history` is
    // ordered by the whole key, so an id can only be looked up in a set of its own.
    let mut known_ids: HashSet<&EventId> = state.history.iter().map(|event| &event.id).collect();
    let mut fresh: Vec<bool> = Vec::with_capacity(events.len());
    for event in events {
        let is_new = known_ids.insert(&event.id);
        if is_new {
            history.insert(event.clone());
        }
        fresh.push(is_new);
    }
    let current = if fresh.iter().any(|is_new| *is_new) {
        current_of(&history)
    } else {
        previous.clone()
    };

    let changes = events
        .iter()
        .zip(fresh)
        .map(|(event, is_new)| {
            let kind = if !is_new {
                ChangeKind::Duplicate
            } else if current.as_ref() == Some(event) {
                ChangeKind::NewCurrent
            } else if previous.as_ref().is_some_and(|before| event < before) {
                ChangeKind::Outdated
            } else {
                ChangeKind::HistoryOnly
            };
            (event.id.clone(), kind)
        })
        .collect();

    let version = if current == previous {
        state.version
    } else {
        state.version + 1
    };
    MergeOutcome {
        state: ShipmentState {
            history,
            current,
            version,
        },
        previous,
        changes,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn key(seconds: i64, status: Status, tag: u8) -> EventKey {
        EventKey {
            occurred_at: Utc.timestamp_opt(seconds, 0).unwrap(),
            status,
            id: EventId::parse(&format!("{tag:032x}")).unwrap(),
        }
    }

    /// The status of the current event after a merge.
    fn current_status(outcome: &MergeOutcome) -> Status {
        outcome.state.current.as_ref().unwrap().status
    }

    /// Merges the event `(time, status)` `first` into an empty shipment, then `second` (an
    /// event's id is its time, so the same time is the same event): what the second was, the
    /// current status, the version and how many events the history holds. Checks on the way
    /// that the first became current and that only a bumped version counts as a change.
    fn second_after_first(
        first: (i64, Status),
        second: (i64, Status),
    ) -> (ChangeKind, Status, i64, usize) {
        let [first, second] = [first, second].map(|(at, status)| key(at, status, at as u8));
        let once = apply(&ShipmentState::default(), &[first]);
        assert_eq!(once.state.version, 1);
        let twice = apply(&once.state, &[second]);
        let version = twice.state.version;
        assert_eq!(twice.current_changed(), version == 2);
        if twice.changes[0].1 == ChangeKind::Duplicate {
            assert_eq!(twice.state, once.state);
        }
        let history = twice.state.history.len();
        (twice.changes[0].1, current_status(&twice), version, history)
    }

    /// A later event becomes current and bumps the version; an older one is outdated and never
    /// regresses the status; a duplicate changes nothing; a terminal status is not left for a
    /// stray one; an unknown status never displaces a known one.
    #[test]
    fn a_second_event_is_judged_against_the_first() {
        use ChangeKind::{Duplicate, HistoryOnly, NewCurrent, Outdated};
        use Status::{Delivered, InTransit, OutForDelivery, Unknown};
        let later = second_after_first((10, InTransit), (20, OutForDelivery));
        assert_eq!(later, (NewCurrent, OutForDelivery, 2, 2));
        let older = second_after_first((20, Delivered), (10, InTransit));
        assert_eq!(older, (Outdated, Delivered, 1, 2));
        let duplicate = second_after_first((10, InTransit), (10, InTransit));
        assert_eq!(duplicate, (Duplicate, InTransit, 1, 1));
        let stray = second_after_first((10, Delivered), (20, InTransit));
        assert_eq!(stray, (HistoryOnly, Delivered, 1, 2));
        let unknown = second_after_first((10, InTransit), (20, Unknown));
        assert_eq!(unknown, (HistoryOnly, InTransit, 1, 2));
    }

    #[test]
    fn a_terminal_status_is_left_for_an_allowed_follow_on() {
        let delivered = apply(&ShipmentState::default(), &[key(10, Status::Delivered, 1)]);
        let stray = apply(&delivered.state, &[key(20, Status::InTransit, 2)]);
        let returned = apply(&stray.state, &[key(30, Status::Returned, 3)]);
        assert_eq!(current_status(&returned), Status::Returned);
    }

    #[test]
    fn an_unknown_status_is_current_when_it_is_the_only_one() {
        let only_unknown = apply(&ShipmentState::default(), &[key(20, Status::Unknown, 2)]);
        assert_eq!(current_status(&only_unknown), Status::Unknown);
    }

    #[test]
    fn same_second_ties_break_by_rank() {
        let a = apply(
            &ShipmentState::default(),
            &[
                key(10, Status::Delivered, 1),
                key(10, Status::OutForDelivery, 2),
            ],
        );
        let b = apply(
            &ShipmentState::default(),
            &[
                key(10, Status::OutForDelivery, 2),
                key(10, Status::Delivered, 1),
            ],
        );
        assert_eq!(a.state.current, b.state.current);
        assert_eq!(a.state.current.unwrap().status, Status::Delivered);
    }
}
