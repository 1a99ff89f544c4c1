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

use clap::Subcommand;
use waybill_bus::Topology;
use waybill_bus::dead::admin::DeadLetterQueue;
pub use waybill_bus::dead::admin::{
    DeadLetterDetail, DeadLetterSummary, ReplayReport, Selection, letter_id,
};
use waybill_config::ExposeSecret;
use waybill_config::Settings;

use crate::broker::{CommandPublisher, topology};

/// The connection name these commands show in `rabbitmqctl list_connections`.
const CONNECTION_NAME: &str = "waybill-cli-deadletters";

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

/// The selection named by `ids` or `--all`.
fn selection_from_args(ids: Vec<String>, all: bool) -> anyhow::Result<Selection> {
    match (all, ids.is_empty()) {
        (true, _) => Ok(Selection::All),
        (false, false) => Ok(Selection::Ids(ids)),
        (false, true) => {
            anyhow::bail!("name the dead letters by id (see `list`) or pass --all")
        }
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
            let report = replay(settings, &selection_from_args(ids, all)?).await?;
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
            let removed = purge(settings, &selection_from_args(ids, all)?).await?;
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

/// The first `limit` dead letters (never their bodies) and how many there are in all.
pub async fn list(
    settings: &Settings,
    limit: usize,
) -> anyhow::Result<(Vec<DeadLetterSummary>, u64)> {
    let topology = topology(settings);
    Ok(queue(settings, &topology).list(limit, |_| true).await?)
}

/// The dead letter with `id`, body included, if it is in the queue.
pub async fn show(settings: &Settings, id: &str) -> anyhow::Result<Option<DeadLetterDetail>> {
    let topology = topology(settings);
    Ok(queue(settings, &topology).show(id).await?)
}

/// Replays the selected dead letters through the normal path (see the module documentation).
pub async fn replay(settings: &Settings, selection: &Selection) -> anyhow::Result<ReplayReport> {
    let topology = topology(settings);
    let publisher = CommandPublisher::start(settings, &topology, "waybill-cli-replay").await?;
    let report = queue(settings, &topology)
        .replay(publisher.publisher(), selection)
        .await;
    publisher.close().await;
    Ok(report?)
}

/// Removes the selected dead letters for good; returns the ids removed.
pub async fn purge(settings: &Settings, selection: &Selection) -> anyhow::Result<Vec<String>> {
    let topology = topology(settings);
    Ok(queue(settings, &topology).purge(selection).await?)
}

/// The configured dead-letter queue, reached as [`CONNECTION_NAME`].
fn queue<'a>(settings: &'a Settings, topology: &'a Topology) -> DeadLetterQueue<'a> {
    DeadLetterQueue {
        url: settings.bus.url.expose_secret(),
        topology,
        connection_name: CONNECTION_NAME,
    }
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
        assert!(selection_from_args(Vec::new(), false).is_err());
        assert_eq!(
            selection_from_args(Vec::new(), true).ok(),
            Some(Selection::All)
        );
        let some = selection_from_args(vec!["a".into()], false).ok();
        assert!(
            some.as_ref()
                .is_some_and(|s| s.matches("a") && !s.matches("b"))
        );
    }
}
