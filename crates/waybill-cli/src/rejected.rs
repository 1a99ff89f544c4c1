//! `waybill rejected list|show|replay`: the events of verified webhooks that a carrier profile
//! could not map, kept in `rejected_events`. After fixing the profile (in `profiles_dir`),
//! `replay` maps each stored body again with the source's current profile and publishes the
//! events to the inbound queue like the ingress would: siblings already stored are duplicates
//! and change nothing; the element that failed is marked replayed once it maps.

use anyhow::Context as _;
use chrono::Utc;
use clap::Subcommand;
use serde_json::json;
use waybill_bus::envelope::{InboundEnvelope, WebhookV1};
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_core::{SourceId, TenantId};
use waybill_store::rejected::{self, RejectedEvent, RejectedFilter};

use crate::broker::{CommandPublisher, topology};

/// `waybill rejected …`.
#[derive(Debug, Subcommand)]
pub enum RejectedCommand {
    /// List rejected events still waiting for a replay, newest first.
    List {
        /// Only this source's.
        #[arg(long)]
        source: Option<String>,
        /// Also the ones already replayed.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one rejected event (its raw element only with `--element`: it carries personal data).
    Show {
        /// The id `list` shows.
        id: i64,
        /// Also print the raw element.
        #[arg(long)]
        element: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Map rejected events again with the current profiles and publish what now maps.
    Replay {
        /// The ids to replay.
        ids: Vec<i64>,
        /// Replay every pending one of this source instead.
        #[arg(long, conflicts_with = "ids")]
        source: Option<String>,
    },
}

/// Runs a `rejected` command.
pub async fn run(command: RejectedCommand, settings: &Settings) -> anyhow::Result<()> {
    let store = waybill_store::Store::connect(settings.database.url.expose_secret(), 1).await?;
    let mut conn = store.acquire().await?;
    match command {
        RejectedCommand::List {
            source,
            all,
            limit,
            json,
        } => {
            let filter = RejectedFilter {
                source,
                include_replayed: all,
                limit,
            };
            let rows = rejected::list(&mut conn, &filter).await?;
            print_list(&rows, json)?;
        }
        RejectedCommand::Show { id, element, json } => {
            let row = rejected::get(&mut conn, id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no rejected event {id}"))?;
            print_one(&row, element, json)?;
        }
        RejectedCommand::Replay { ids, source } => {
            let rows = replay_selection(&mut conn, ids, source).await?;
            let report = replay(settings, &mut conn, &rows).await?;
            println!(
                "{} replayed, {} still rejected, {} failed",
                report.replayed, report.still_rejected, report.failed
            );
            if report.failed > 0 {
                anyhow::bail!("some rejected events could not be replayed");
            }
        }
    }
    Ok(())
}

/// `list`: one line per rejected event, or a JSON array.
fn print_list(rows: &[RejectedEvent], json: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<_> = rows.iter().map(|row| summary(row, false)).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for row in rows {
        println!(
            "{:>8}  {}  {:<16} {:<20} {:<24} {}{}",
            row.id,
            row.stored.received_at.format("%Y-%m-%d %H:%M:%S"),
            row.stored.source,
            row.stored.tracking_number.as_deref().unwrap_or("-"),
            row.stored.kind,
            row.stored.path,
            if row.replayed_at.is_some() {
                "  (replayed)"
            } else {
                ""
            }
        );
    }
    println!("{} rejected event(s) shown", rows.len());
    Ok(())
}

/// `show`: one rejected event, its raw element only when asked for.
fn print_one(row: &RejectedEvent, element: bool, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&summary(row, element))?);
        return Ok(());
    }
    let s = &row.stored;
    println!("id               {}", row.id);
    println!(
        "source           {} (profile {}, tenant {})",
        s.source, s.profile, s.tenant
    );
    println!("received         {}", s.received_at.to_rfc3339());
    println!(
        "tracking number  {}",
        s.tracking_number.as_deref().unwrap_or("-")
    );
    println!("path             {}", s.path);
    println!("reason           {} ({})", s.reason, s.kind);
    match row.replayed_at {
        Some(at) => println!("replayed         {}", at.to_rfc3339()),
        None => println!("replayed         no"),
    }
    if element {
        println!(
            "── element ──\n{}",
            serde_json::to_string_pretty(&s.element)?
        );
    } else {
        println!("(element not shown: it carries personal data; add --element to print it)");
    }
    Ok(())
}

/// `replay`'s rows: every pending one of `source`, or the given ids (an unknown id is reported
/// and skipped).
async fn replay_selection(
    conn: &mut waybill_store::PgConnection,
    ids: Vec<i64>,
    source: Option<String>,
) -> anyhow::Result<Vec<RejectedEvent>> {
    if let Some(source) = source {
        let filter = RejectedFilter {
            source: Some(source),
            include_replayed: false,
            limit: i64::MAX,
        };
        return Ok(rejected::list(conn, &filter).await?);
    }
    let mut rows = Vec::new();
    for id in ids {
        match rejected::get(conn, id).await? {
            Some(row) => rows.push(row),
            None => eprintln!("not replayed {id}: no such rejected event"),
        }
    }
    Ok(rows)
}

fn summary(row: &RejectedEvent, element: bool) -> serde_json::Value {
    let s = &row.stored;
    let mut value = json!({
        "id": row.id,
        "source": s.source,
        "profile": s.profile,
        "tenant": s.tenant,
        "received_at": s.received_at,
        "tracking_number": s.tracking_number,
        "path": s.path,
        "kind": s.kind,
        "reason": s.reason,
        "replayed_at": row.replayed_at,
    });
    if element {
        value["element"] = s.element.clone();
    }
    value
}

/// What `replay` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    /// Mapped now, published and marked replayed.
    pub replayed: usize,
    /// Still failing with the current profile (left as they are).
    pub still_rejected: usize,
    /// Could not be replayed (unknown source, broker refused).
    pub failed: usize,
}

/// Maps each row's stored body again with its source's current profile and publishes the
/// events; marks a row replayed when its element no longer fails.
pub async fn replay(
    settings: &Settings,
    conn: &mut waybill_store::PgConnection,
    rows: &[RejectedEvent],
) -> anyhow::Result<ReplayReport> {
    let mut report = ReplayReport::default();
    if rows.is_empty() {
        return Ok(report);
    }
    let profiles = settings.profiles()?;
    let topology = topology(settings);
    let publisher = CommandPublisher::start(settings, &topology, "waybill-cli-rejected").await?;
    for row in rows {
        let s = &row.stored;
        let outcome = async {
            let source = settings
                .source(&s.source)
                .ok_or_else(|| anyhow::anyhow!("source `{}` is no longer configured", s.source))?;
            let profile = profiles
                .get(&source.profile)
                .ok_or_else(|| anyhow::anyhow!("no profile `{}`", source.profile))?;
            let mapped = profile
                .map_stored_body(s.raw_body.as_bytes(), s.received_at)
                .map_err(|error| anyhow::anyhow!("the body is refused as a whole: {error}"))?;
            if let Some(still) = mapped.rejected.iter().find(|r| r.path == s.path) {
                return Ok::<_, anyhow::Error>(Some(still.reason.clone()));
            }
            if !mapped.events.is_empty() {
                let envelope = InboundEnvelope::WebhookV1(WebhookV1::new(
                    SourceId::parse(&s.source).context("stored source id")?,
                    TenantId::parse(&s.tenant).context("stored tenant")?,
                    source.require_registration,
                    s.received_at,
                    mapped.provider_event_id.clone(),
                    mapped.events,
                    s.raw_body.clone(),
                    None,
                ));
                publisher
                    .publisher()
                    .publish(envelope.to_message(&topology))
                    .await
                    .context("the broker did not confirm the replay")?;
            }
            rejected::mark_replayed(conn, row.id, Utc::now()).await?;
            Ok(None)
        }
        .await;
        match outcome {
            Ok(None) => {
                report.replayed += 1;
                println!("replayed {}", row.id);
            }
            Ok(Some(reason)) => {
                report.still_rejected += 1;
                println!("still rejected {}: {reason}", row.id);
            }
            Err(error) => {
                report.failed += 1;
                eprintln!("not replayed {}: {error:#}", row.id);
            }
        }
    }
    publisher.close().await;
    Ok(report)
}
