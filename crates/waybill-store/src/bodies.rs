//! The published bytes of the changes this process merged, handed from the merge to the relay.
//!
//! The merge encodes every change's downstream event once, to write it as the outbox row's
//! payload. Without this, the relay would read that payload back as the text Postgres prints
//! for `jsonb`, decode it and encode it again to the same bytes: about a quarter of the worker's
//! instructions for a change (docs/performance.md). With it, a relay in the same process takes
//! the bytes the merge kept, and Postgres does not print the payload at all.
//!
//! Only an optimisation, never the record: a change this process did not merge (another
//! worker's, or one from before a restart), or one evicted because the relay fell behind, is
//! read from its stored payload and encoded to the same bytes, deterministically
//! ([`OutboxEntry::encode`](crate::fanout::OutboxEntry::encode)). Bodies are offered only after their
//! transaction committed, and taken out when a claim takes their rows, so a body is used at
//! most once; a claim whose transaction then fails reads its rows' payloads the next time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// A bounded map from outbox row id to the bytes its change is published as. Cheap to clone:
/// clones share the map.
#[derive(Clone, Debug)]
pub struct EncodedBodies {
    kept: Arc<Mutex<Kept>>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Kept {
    by_id: HashMap<i64, Vec<u8>>,
    /// Ids in the order they were offered, the oldest first evicted. May name ids already taken.
    order: VecDeque<i64>,
}

impl EncodedBodies {
    /// Keeps at most `capacity` bodies (the oldest offered are dropped first). A capacity of 0
    /// keeps none.
    pub fn new(capacity: usize) -> EncodedBodies {
        EncodedBodies {
            kept: Arc::new(Mutex::new(Kept::default())),
            capacity,
        }
    }

    /// Offers the bodies of committed changes, by outbox row id.
    pub fn offer(&self, bodies: impl IntoIterator<Item = (i64, Vec<u8>)>) {
        if self.capacity == 0 {
            return;
        }
        let mut kept = self.lock();
        for (id, body) in bodies {
            kept.by_id.insert(id, body);
            kept.order.push_back(id);
            while kept.order.len() > self.capacity {
                if let Some(oldest) = kept.order.pop_front() {
                    kept.by_id.remove(&oldest);
                }
            }
        }
    }

    /// Takes the bodies of those of `ids` that are kept, in the order of `ids` (`None` where
    /// not kept).
    pub(crate) fn take(&self, ids: &[i64]) -> Vec<Option<Vec<u8>>> {
        let mut kept = self.lock();
        if kept.by_id.is_empty() {
            return vec![None; ids.len()];
        }
        ids.iter().map(|id| kept.by_id.remove(id)).collect()
    }

    /// How many bodies are kept.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        // Every update leaves the map consistent, so a panic elsewhere while it was held does
        // not make its contents wrong.
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_taken_once_and_the_oldest_are_evicted_first() {
        let bodies = EncodedBodies::new(2);
        bodies.offer([(1, b"one".to_vec()), (2, b"two".to_vec())]);
        assert_eq!(bodies.take(&[2, 7]), vec![Some(b"two".to_vec()), None]);
        assert_eq!(bodies.take(&[2]), vec![None], "taken once");
        // 3 and 4 push 1 out (the order still holds the taken 2, which goes first).
        bodies.offer([(3, b"three".to_vec()), (4, b"four".to_vec())]);
        assert_eq!(bodies.len(), 2);
        assert_eq!(
            bodies.take(&[1, 3, 4]),
            vec![None, Some(b"three".to_vec()), Some(b"four".to_vec())]
        );
        assert!(bodies.is_empty());

        let none = EncodedBodies::new(0);
        none.offer([(1, b"one".to_vec())]);
        assert_eq!(none.take(&[1]), vec![None]);
    }
}
