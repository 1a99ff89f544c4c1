//! `waybill deadletters list|show|replay|purge`: the operator's side of `waybill.dead`.
//!
//! A dead letter is named by its `message_id` (the envelope id the ingress gave it), or, when it
//! has none, by `sha256:` and the first 16 hex digits of its body's hash — stable, so `list`
//! then `show`/`replay`/`purge` name the same message.
//!
//! Bodies carry personal data (names, addresses, phone numbers): nothing here prints a body
//! unless `show --body` asks for it. `list` shows the id, the reason, the size and where the
//! message came from.
//!
//! `replay` publishes the message back, confirmed, to the exchange and routing key it was first
//! published with — the normal path: the worker consumes it like any other message and merges
//! it idempotently — and only then removes it from the dead-letter queue.

use std::fmt;
use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use waybill_bus::dead::{DeadLetters, DeadMessage};
use waybill_bus::{BusConnection, Publisher, PublisherConfig, Topology};
use waybill_config::Settings;

/// How long `replay` waits for its publisher to connect.
const PUBLISHER_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Dead-letter commands.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters: id, reason, size, original queue (never the body).
    List {
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter's metadata and headers; the body only with `--body`.
    Show {
        /// The id from `list`.
        id: String,
        /// Also print the body. It carries personal data: use only when you must.
        #[arg(long)]
        body: bool,
        /// Print JSON instead of lines (the body, with `--body`, as a UTF-8 string).
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters back to where they were first published (the normal path), then
    /// remove them from the dead-letter queue.
    Replay {
        /// Ids from `list`.
        ids: Vec<String>,
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Remove dead letters for good.
    Purge {
        /// Ids from `list`.
        ids: Vec<String>,
        /// Remove every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}

/// Which dead letters a command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every dead letter in the queue when the command started.
    All,
    /// The dead letters with these ids.
    Ids(Vec<String>),
}

impl Selection {
    fn from_args(ids: Vec<String>, all: bool) -> anyhow::Result<Selection> {
        match (all, ids.is_empty()) {
            (true, _) => Ok(Selection::All),
            (false, false) => Ok(Selection::Ids(ids)),
            (false, true) => {
                anyhow::bail!("name the dead letters by id (see `list`) or pass --all")
            }
        }
    }

    fn matches(&self, id: &str) -> bool {
        match self {
            Selection::All => true,
            Selection::Ids(ids) => ids.iter().any(|wanted| wanted == id),
        }
    }
}

/// What `list` shows of a dead letter: never its body.
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
}

/// A dead letter in full, for `show`.
#[derive(Debug, Clone)]
pub struct DeadLetterDetail {
    /// What `list` shows.
    pub summary: DeadLetterSummary,
    /// Its string headers (trace context, death bookkeeping; never secrets).
    pub headers: Vec<(String, String)>,
    /// The body (personal data: print only on request).
    pub body: Vec<u8>,
}

/// What `replay` did.
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
            format!("sha256:{}", &hex::encode(digest)[..16])
        }
    }
}

fn summary_of(message: &DeadMessage) -> DeadLetterSummary {
    DeadLetterSummary {
        id: letter_id(message),
        reason: message.reason.clone(),
        size: message.body.len(),
        original_queue: message.original_queue.clone(),
        original_exchange: message.original_exchange.clone(),
        original_routing_key: message.original_routing_key.clone(),
        death_count: message.death_count,
    }
}

/// Runs a dead-letter command, printing its result.
pub async fn run(command: DeadLettersCommand, settings: &Settings) -> anyhow::Result<()> {
    match command {
        DeadLettersCommand::List { limit, json } => {
            let (letters, total) = list(settings, limit).await?;
            if json {
                crate::output::json(&letters)?;
            } else {
                print!("{}", Table(&letters));
            }
            eprintln!("{} of {total} dead letter(s) shown", letters.len());
        }
        DeadLettersCommand::Show { id, body, json } => {
            let Some(detail) = show(settings, &id).await? else {
                anyhow::bail!("no dead letter with id {id}");
            };
            if json {
                return print_json(&detail, body);
            }
            let s = &detail.summary;
            let or_unknown =
                |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
            println!("id               {}", s.id);
            println!(
                "reason           {}",
                crate::output::cell(&or_unknown(&s.reason))
            );
            println!("size             {} bytes", s.size);
            println!("original queue   {}", or_unknown(&s.original_queue));
            println!(
                "original route   {} / {}",
                or_unknown(&s.original_exchange),
                or_unknown(&s.original_routing_key)
            );
            if let Some(count) = s.death_count {
                println!("deaths           {count}");
            }
            for (name, value) in &detail.headers {
                println!(
                    "header           {}: {}",
                    crate::output::cell(name),
                    crate::output::cell(value)
                );
            }
            if body {
                println!("── body ──");
                println!("{}", String::from_utf8_lossy(&detail.body));
            } else {
                eprintln!("(body not shown: it carries personal data; add --body to print it)");
            }
        }
        DeadLettersCommand::Replay { ids, all } => {
            let report = replay(settings, &Selection::from_args(ids, all)?).await?;
            for id in &report.replayed {
                println!("{id}");
            }
            for (id, why) in &report.failed {
                eprintln!("not replayed {id}: {why}");
            }
            eprintln!(
                "{} replayed, {} failed",
                report.replayed.len(),
                report.failed.len()
            );
            if !report.failed.is_empty() {
                anyhow::bail!(
                    "some dead letters could not be replayed; they are still in the dead-letter queue"
                );
            }
        }
        DeadLettersCommand::Purge { ids, all } => {
            let removed = purge(settings, &Selection::from_args(ids, all)?).await?;
            for id in &removed {
                println!("{id}");
            }
            eprintln!("{} purged", removed.len());
        }
    }
    Ok(())
}

/// `show --json`: the summary, the headers, and the body only when asked for.
fn print_json(detail: &DeadLetterDetail, with_body: bool) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(&detail.summary)?;
    value["headers"] = detail
        .headers
        .iter()
        .map(|(name, text)| (name.clone(), serde_json::Value::String(text.clone())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    if with_body {
        value["body"] = String::from_utf8_lossy(&detail.body).into_owned().into();
    }
    crate::output::json(&value)
}

fn topology(settings: &Settings) -> Topology {
    Topology::new(&settings.bus.prefix).with_delivery_limit(settings.bus.delivery_limit)
}

/// Reads the dead-letter queue once through, handing each message to `visit`, which returns
/// whether it consumed the message (removed or replayed it); every other one goes back to the
/// queue when the handle closes. Stops after the messages that were there at the start, so that
/// a message that dies again meanwhile is not visited twice.
async fn scan<F>(settings: &Settings, connection_name: &str, mut visit: F) -> anyhow::Result<()>
where
    F: AsyncFnMut(&DeadLetters, &DeadMessage) -> anyhow::Result<bool>,
{
    let connection = BusConnection::connect(&settings.bus.url, connection_name).await?;
    let letters = DeadLetters::open(&connection, &topology(settings)).await?;
    let result = async {
        let mut budget: Option<u64> = None;
        let mut seen = 0u64;
        while let Some(message) = letters.get().await? {
            // `remaining` counts the messages still ready after this one.
            let budget = *budget.get_or_insert(u64::from(message.remaining) + 1);
            seen += 1;
            let keep_going = visit(&letters, &message).await?;
            if !keep_going || seen >= budget {
                break;
            }
        }
        Ok(())
    }
    .await;
    letters.close().await;
    let _ = connection.close().await;
    result
}

/// The first `limit` dead letters (never their bodies) and how many there are in all.
pub async fn list(
    settings: &Settings,
    limit: usize,
) -> anyhow::Result<(Vec<DeadLetterSummary>, u64)> {
    let mut letters = Vec::new();
    let mut total = 0u64;
    scan(settings, "waybill-cli-deadletters", async |_, message| {
        if letters.is_empty() && total == 0 {
            total = u64::from(message.remaining) + 1;
        }
        letters.push(summary_of(message));
        Ok(letters.len() < limit)
    })
    .await?;
    Ok((letters, total))
}

/// The dead letter with `id`, body included, if it is in the queue.
pub async fn show(settings: &Settings, id: &str) -> anyhow::Result<Option<DeadLetterDetail>> {
    let mut found = None;
    scan(settings, "waybill-cli-deadletters", async |_, message| {
        if letter_id(message) != id {
            return Ok(true);
        }
        found = Some(DeadLetterDetail {
            summary: summary_of(message),
            headers: message
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body: message.body.clone(),
        });
        Ok(false)
    })
    .await?;
    Ok(found)
}

/// Replays the selected dead letters through the normal path (see the module documentation).
pub async fn replay(settings: &Settings, selection: &Selection) -> anyhow::Result<ReplayReport> {
    let topology = topology(settings);
    let stop = CancellationToken::new();
    let publisher = Publisher::start(
        PublisherConfig::new(&settings.bus.url, "waybill-cli-replay", topology),
        stop.clone(),
    )
    .await?;
    if !publisher.wait_ready(PUBLISHER_READY_TIMEOUT).await {
        stop.cancel();
        publisher.close().await;
        anyhow::bail!("cannot publish to the broker (not connected, or publishing is blocked)");
    }
    let mut report = ReplayReport::default();
    let scanned = scan(
        settings,
        "waybill-cli-deadletters",
        async |letters, message| {
            let id = letter_id(message);
            if !selection.matches(&id) {
                return Ok(true);
            }
            match letters.replay(&publisher, message).await {
                Ok(()) => report.replayed.push(id),
                Err(error) => report.failed.push((id, error_chain(&error))),
            }
            Ok(true)
        },
    )
    .await;
    stop.cancel();
    publisher.close().await;
    scanned?;
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
pub async fn purge(settings: &Settings, selection: &Selection) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    scan(
        settings,
        "waybill-cli-deadletters",
        async |letters, message| {
            let id = letter_id(message);
            if selection.matches(&id) {
                letters.remove(message.delivery_tag).await?;
                removed.push(id);
            }
            Ok(true)
        },
    )
    .await?;
    Ok(removed)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `list` table.
struct Table<'a>(&'a [DeadLetterSummary]);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<38} {:>8} {:<28} {:>6}  REASON",
            "ID", "SIZE", "QUEUE", "DEATHS"
        )?;
        for letter in self.0 {
            let reason: String = letter
                .reason
                .as_deref()
                .unwrap_or("-")
                .chars()
                .take(80)
                .collect();
            writeln!(
                f,
                "{:<38} {:>8} {:<28} {:>6}  {}",
                letter.id,
                letter.size,
                letter.original_queue.as_deref().unwrap_or("-"),
                letter
                    .death_count
                    .map_or_else(|| "-".to_owned(), |n| n.to_string()),
                crate::output::cell(&reason)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_needs_ids_or_all() {
        assert!(Selection::from_args(Vec::new(), false).is_err());
        assert_eq!(
            Selection::from_args(Vec::new(), true).ok(),
            Some(Selection::All)
        );
        let some = Selection::from_args(vec!["a".into()], false).ok();
        assert!(
            some.as_ref()
                .is_some_and(|s| s.matches("a") && !s.matches("b"))
        );
    }
}
