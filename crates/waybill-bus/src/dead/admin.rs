//! The operator's side of `waybill.dead`: list, show, replay and purge, as `waybill deadletters`
//! and the console do them (one implementation for both).
//!
//! A dead letter is named by its `message_id` (the envelope id the ingress gave it), or, when it
//! has none, by `sha256:` and the first 16 hex digits of its body's hash — stable, so a listing
//! and a later `show`/`replay`/`purge` name the same message.
//!
//! Every operation reads the queue once through on a connection of its own and puts back what
//! it did not consume, so a listing removes nothing. `replay` publishes a message back,
//! confirmed, to the exchange and routing key it was first published with — the normal path: the
//! worker merges it idempotently — and only then removes it from the dead-letter queue.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{DeadLetters, DeadMessage};
use crate::connection::BusConnection;
use crate::error::BusError;
use crate::publisher::Publisher;
use crate::topology::Topology;

/// Which dead letters an operation acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every dead letter in the queue when the operation started.
    All,
    /// The dead letters with these ids.
    Ids(Vec<String>),
}

impl Selection {
    /// Whether the dead letter `id` is selected.
    pub fn matches(&self, id: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => ids.iter().any(|wanted| wanted == id),
        }
    }
}

/// What a listing shows of a dead letter: never its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterSummary {
    /// The id `show`, `replay` and `purge` take.
    pub id: String,
    /// Why it died (the worker's reason, or the broker's: `delivery_limit`, `rejected`, …).
    pub reason: Option<String>,
    /// Body size in bytes.
    pub size: usize,
    /// The queue it died in.
    pub original_queue: Option<String>,
    /// The exchange it was first published to.
    pub original_exchange: Option<String>,
    /// The routing key it was first published with.
    pub original_routing_key: Option<String>,
    /// How many times the broker dead-lettered it (absent when the worker did).
    pub death_count: Option<i64>,
    /// The tenant its envelope names, when the body is an envelope (for tenant views).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// When Waybill received what it carries, when the body is an envelope that says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
}

/// A dead letter in full.
#[derive(Debug, Clone)]
pub struct DeadLetterDetail {
    /// What a listing shows.
    pub summary: DeadLetterSummary,
    /// Its string headers (trace context, death bookkeeping; never secrets).
    pub headers: Vec<(String, String)>,
    /// The body (personal data: show only on request).
    pub body: Vec<u8>,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Ids published back and removed from the dead-letter queue.
    pub replayed: Vec<String>,
    /// Ids that could not be replayed, with why; they stay in the dead-letter queue.
    pub failed: Vec<(String, String)>,
}

/// The id of a dead letter: its `message_id`, or `sha256:<16 hex>` of its body.
pub fn letter_id(message: &DeadMessage) -> String {
    match &message.message_id {
        Some(id) if !id.is_empty() => id.clone(),
        _ => {
            let digest = Sha256::digest(&message.body);
            let mut id = String::from("sha256:");
            for byte in &digest[..8] {
                let _ = write!(id, "{byte:02x}");
            }
            id
        }
    }
}

/// The summary of a dead message (its tenant and receive time read from the envelope, if the
/// body is one).
pub fn summary_of(message: &DeadMessage) -> DeadLetterSummary {
    #[derive(serde::Deserialize)]
    struct EnvelopeFacts {
        tenant: Option<String>,
        received_at: Option<DateTime<Utc>>,
    }
    let facts = serde_json::from_slice::<EnvelopeFacts>(&message.body).ok();
    DeadLetterSummary {
        id: letter_id(message),
        reason: message.reason.clone(),
        size: message.body.len(),
        original_queue: message.original_queue.clone(),
        original_exchange: message.original_exchange.clone(),
        original_routing_key: message.original_routing_key.clone(),
        death_count: message.death_count,
        tenant: facts.as_ref().and_then(|facts| facts.tenant.clone()),
        received_at: facts.and_then(|facts| facts.received_at),
    }
}

/// One pass over the dead-letter queue on a connection of its own. Every message not removed
/// or replayed goes back to the queue when it closes. It stops after the messages that were
/// there at the start, so that a message that dies again meanwhile is not visited twice.
struct Scan {
    connection: BusConnection,
    letters: DeadLetters,
    budget: Option<u64>,
    seen: u64,
}

impl Scan {
    async fn open(url: &str, topology: &Topology, connection_name: &str) -> Result<Scan, BusError> {
        let connection = BusConnection::connect(url, connection_name).await?;
        let letters = match DeadLetters::open(&connection, topology).await {
            Ok(letters) => letters,
            Err(error) => {
                let _ = connection.close().await;
                return Err(error);
            }
        };
        Ok(Scan {
            connection,
            letters,
            budget: None,
            seen: 0,
        })
    }

    /// The next message of the pass, or `None` at its end.
    async fn next(&mut self) -> Result<Option<DeadMessage>, BusError> {
        if self.budget.is_some_and(|budget| self.seen >= budget) {
            return Ok(None);
        }
        let Some(message) = self.letters.get().await? else {
            return Ok(None);
        };
        // `remaining` counts the messages still ready after this one.
        self.budget.get_or_insert(u64::from(message.remaining) + 1);
        self.seen += 1;
        Ok(Some(message))
    }

    async fn close(self) {
        self.letters.close().await;
        let _ = self.connection.close().await;
    }
}

/// The dead-letter queue of a broker and topology, reached on connections named
/// `connection_name` (one per operation, closed after it).
#[derive(Debug, Clone, Copy)]
pub struct DeadLetterQueue<'a> {
    /// The broker's AMQP URL.
    pub url: &'a str,
    /// The topology whose dead-letter queue is meant.
    pub topology: &'a Topology,
    /// The name the connections show in `rabbitmqctl list_connections`.
    pub connection_name: &'a str,
}

impl DeadLetterQueue<'_> {
    /// The first `limit` dead letters that `keep` accepts (never their bodies), and how many
    /// there are in the queue in all.
    pub async fn list(
        &self,
        limit: usize,
        keep: impl Fn(&DeadLetterSummary) -> bool,
    ) -> Result<(Vec<DeadLetterSummary>, u64), BusError> {
        self.scan(async |scan: &mut Scan| {
            let mut letters = Vec::new();
            let mut total = None;
            while letters.len() < limit
                && let Some(message) = scan.next().await?
            {
                total.get_or_insert(u64::from(message.remaining) + 1);
                let summary = summary_of(&message);
                if keep(&summary) {
                    letters.push(summary);
                }
            }
            Ok((letters, total.unwrap_or(0)))
        })
        .await
    }

    /// The dead letter with `id`, body included, if it is in the queue.
    pub async fn show(&self, id: &str) -> Result<Option<DeadLetterDetail>, BusError> {
        self.scan(async |scan: &mut Scan| {
            while let Some(message) = scan.next().await? {
                if letter_id(&message) == id {
                    return Ok(Some(DeadLetterDetail {
                        summary: summary_of(&message),
                        headers: message
                            .headers
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                        body: message.body.clone(),
                    }));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Replays the selected dead letters through `publisher` (see the module documentation).
    /// An id of the selection that is not in the queue is reported as failed.
    pub async fn replay(
        &self,
        publisher: &Publisher,
        selection: &Selection,
    ) -> Result<ReplayReport, BusError> {
        let mut report = self
            .scan(async |scan: &mut Scan| {
                let mut report = ReplayReport::default();
                while let Some(message) = scan.next().await? {
                    let id = letter_id(&message);
                    if !selection.matches(&id) {
                        continue;
                    }
                    match scan.letters.replay(publisher, &message).await {
                        Ok(()) => report.replayed.push(id),
                        Err(error) => report.failed.push((id, crate::error::chain(&error))),
                    }
                }
                Ok(report)
            })
            .await?;
        if let Selection::Ids(ids) = selection {
            for id in ids {
                let touched =
                    report.replayed.contains(id) || report.failed.iter().any(|(f, _)| f == id);
                if !touched {
                    report
                        .failed
                        .push((id.clone(), "no dead letter with this id".to_owned()));
                }
            }
        }
        Ok(report)
    }

    /// Removes the selected dead letters for good; returns the ids removed.
    pub async fn purge(&self, selection: &Selection) -> Result<Vec<String>, BusError> {
        self.scan(async |scan: &mut Scan| {
            let mut removed = Vec::new();
            while let Some(message) = scan.next().await? {
                let id = letter_id(&message);
                if selection.matches(&id) {
                    scan.letters.remove(message.delivery_tag).await?;
                    removed.push(id);
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Runs `work` on one pass over the queue, then closes the pass (whatever `work` returned),
    /// which puts back every message `work` did not remove or replay.
    async fn scan<T>(
        &self,
        work: impl AsyncFnOnce(&mut Scan) -> Result<T, BusError>,
    ) -> Result<T, BusError> {
        let mut scan = Scan::open(self.url, self.topology, self.connection_name).await?;
        let result = work(&mut scan).await;
        scan.close().await;
        result
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn message(message_id: Option<&str>, body: &[u8]) -> DeadMessage {
        DeadMessage {
            delivery_tag: 1,
            body: body.to_vec(),
            headers: BTreeMap::new(),
            message_id: message_id.map(str::to_owned),
            reason: Some("poison".to_owned()),
            original_exchange: None,
            original_routing_key: None,
            original_queue: None,
            death_count: None,
            remaining: 0,
        }
    }

    #[test]
    fn ids_are_the_message_id_or_a_stable_body_hash() {
        assert_eq!(letter_id(&message(Some("abc"), b"x")), "abc");
        let hashed = letter_id(&message(None, b"x"));
        assert!(hashed.starts_with("sha256:") && hashed.len() == 7 + 16);
        assert_eq!(hashed, letter_id(&message(Some(""), b"x")));
    }

    #[test]
    fn summaries_read_the_tenant_and_time_of_an_envelope_only() {
        let body = br#"{"type":"WebhookV1","tenant":"acme","received_at":"2026-11-02T08:31:00Z"}"#;
        let summary = summary_of(&message(Some("a"), body));
        assert_eq!(summary.tenant.as_deref(), Some("acme"));
        assert!(summary.received_at.is_some());
        let garbage = summary_of(&message(Some("b"), b"\xff not json"));
        assert_eq!(garbage.tenant, None);
        assert_eq!(garbage.size, 10);
    }

    #[test]
    fn selections_match_ids() {
        let some = Selection::Ids(vec!["a".into()]);
        assert!(some.matches("a") && !some.matches("b"));
        assert!(Selection::All.matches("anything"));
    }
}
