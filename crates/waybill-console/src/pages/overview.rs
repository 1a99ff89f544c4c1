//! The overview: webhooks accepted and rejected, queues, worker lag, poll backlog, outbox and
//! delivery health, refreshed in place while the page is open (htmx polls `/overview/live`).
//!
//! Where each figure comes from: webhook counts and rejections from the ingresses' metrics
//! (`console.metrics_urls`), lag from this worker's own histogram, queue depths and consumers
//! from passive declares, backlogs and delivery health from Postgres. Installation-wide figures
//! (queues, lag, outbox) are shown to admin keys only.

use axum::extract::State;
use chrono::Utc;
use maud::{Markup, html};
use waybill_bus::BusConnection;
use waybill_config::ExposeSecret;
use waybill_store::console::{COUNT_CAP, SubscriptionHealth};

use super::subscriptions::{state_badge, success_rate};
use super::visible_sources;
use crate::auth::Viewer;
use crate::error::PageError;
use crate::metrics::{Snapshot, increase, quantile, scrape};
use crate::view::Heading::{Num, Text};
use crate::{BASE, Console, shell, view};

const RECEIVED: &str = "waybill_webhooks_received_total";
const LAG: &str = "waybill_message_age_seconds";
const QUEUE_READY: &str = "waybill_console_queue_ready";
const QUEUE_CONSUMERS: &str = "waybill_console_queue_consumers";

/// `GET /console/overview`.
pub(crate) async fn page(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Markup, PageError> {
    let live = live_content(&console, &viewer).await?;
    let every = console.settings().console.refresh_secs;
    Ok(shell::page(
        &viewer,
        "/overview",
        "Overview",
        html! {
            div id="live" hx-get={(BASE) "/overview/live"} hx-trigger={"every " (every) "s"}
                hx-swap="innerHTML" aria-live="off" { (live) }
            p class="hint" { "Refreshes every " (every) " s while this page is open; nothing is collected while no console page is open." }
        },
    ))
}

/// `GET /console/overview/live`: the overview's content alone, for the in-place refresh.
pub(crate) async fn live(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Markup, PageError> {
    live_content(&console, &viewer).await
}

/// What the Postgres side of the overview found.
struct Backlogs {
    polls: Vec<(String, u64, u64)>,
    outbox: Option<(u64, u64)>,
    parked: u64,
    subscriptions: Vec<SubscriptionHealth>,
}

async fn live_content(console: &Console, viewer: &Viewer) -> Result<Markup, PageError> {
    let latest = snapshot(console).await;
    let history = console.sampler().history();
    let earliest = history.first().unwrap_or(&latest);
    let backlogs = backlogs(console, viewer).await?;
    let sources: Vec<String> = visible_sources(console, viewer)
        .iter()
        .map(|source| source.id.to_string())
        .collect();
    let seconds = (latest.at - earliest.at).num_seconds();
    let span = if seconds < 120 {
        format!("{seconds} s")
    } else {
        format!("{} min", seconds / 60)
    };
    let window =
        format!("Window: the last {span}, since a console page was first opened (at most 1 h).");
    Ok(html! {
        @if !latest.unreachable.is_empty() && viewer.can_act() {
            p class="problem" { "Not answering: " (latest.unreachable.join(", ")) " — their figures are missing." }
        }
        div class="grid" {
            (webhooks_card(&latest, earliest, &sources, &window))
            (rejections_card(&latest, earliest, &sources, viewer.can_act()))
            @if viewer.can_act() {
                (queues_card(&latest, &console.settings().bus.prefix))
                (lag_card(&latest, earliest))
            }
            (backlog_card(&backlogs, viewer.can_act()))
        }
        div class="grid" {
            (chart_card("Webhooks accepted per second", &history, |s| accepted(s, &sources)))
            (chart_card("Webhooks rejected per second", &history, |s| rejected(s, &sources)))
            @if viewer.can_act() {
                (gauge_chart_card("Ready in the webhooks queue", &history, console))
            }
        }
        h2 { "Deliveries to subscribers" }
        (delivery_table(&backlogs.subscriptions))
    })
}

/// The figures now: a snapshot younger than a couple of seconds is reused, else the metrics
/// are read and the queues declared passively, and the snapshot is kept for the charts.
async fn snapshot(console: &Console) -> Snapshot {
    let now = Utc::now();
    if let Some(fresh) = console.sampler().fresh(now) {
        return fresh;
    }
    let mut snapshot = scrape(console.http(), &console.settings().console.metrics_urls).await;
    let topology = &console.parts().topology;
    let queues = [
        topology.webhooks_queue(),
        topology.polls_queue(),
        topology.dead_queue(),
    ];
    let url = console.settings().bus.url.expose_secret();
    let timeout = std::time::Duration::from_secs(2);
    match BusConnection::connect_with_timeout(url, "waybill-console", timeout).await {
        Ok(connection) => {
            for queue in &queues {
                if let Ok(stats) = connection.queue_stats(queue).await {
                    let labels = [("queue", queue.as_str())];
                    snapshot.set(QUEUE_READY, &labels, f64::from(stats.messages));
                    snapshot.set(QUEUE_CONSUMERS, &labels, f64::from(stats.consumers));
                }
            }
            let _ = connection.close().await;
        }
        Err(error) => tracing::debug!(error = %error, "console: queue depths unavailable"),
    }
    console.sampler().record(snapshot.clone());
    snapshot
}

async fn backlogs(console: &Console, viewer: &Viewer) -> Result<Backlogs, PageError> {
    let sources: Vec<&str> = visible_sources(console, viewer)
        .iter()
        .map(|source| source.id.as_str())
        .collect();
    let tenant = viewer.tenant_scope();
    let mut connection = console.store().acquire().await?;
    let polls = waybill_store::console::poll_backlog(&mut connection, &sources).await?;
    let outbox = if viewer.can_act() {
        Some(waybill_store::fanout::relay_backlog(&mut connection).await?)
    } else {
        None
    };
    let parked = waybill_store::console::parked_events(&mut connection, tenant.as_ref()).await?;
    let subscriptions =
        waybill_store::console::subscription_health(&mut connection, tenant.as_ref()).await?;
    Ok(Backlogs {
        polls,
        outbox,
        parked,
        subscriptions,
    })
}

fn accepted(snapshot: &Snapshot, sources: &[String]) -> f64 {
    snapshot.total(RECEIVED, |l| {
        l("outcome").as_deref() == Some("accepted")
            && l("source").is_some_and(|s| sources.contains(&s))
    })
}

fn rejected(snapshot: &Snapshot, sources: &[String]) -> f64 {
    snapshot.total(RECEIVED, |l| {
        l("outcome").as_deref() != Some("accepted")
            && l("source").is_some_and(|s| sources.contains(&s))
    })
}

fn webhooks_card(
    latest: &Snapshot,
    earliest: &Snapshot,
    sources: &[String],
    window: &str,
) -> Markup {
    let by_source = |s: &Snapshot| {
        s.by_label(RECEIVED, "source", |l| {
            l("outcome").as_deref() == Some("accepted")
        })
    };
    let (now, then) = (by_source(latest), by_source(earliest));
    html! {
        section class="card" aria-labelledby="accepted-h" {
            h2 id="accepted-h" { "Webhooks accepted" }
            p class="hint" { (window) }
            (window_table("Webhooks accepted per source", "Source", sources.iter().map(|source| {
                let link = html! { a href={(BASE) "/sources/" (source)} { (source) } };
                (link, then.get(source).copied().unwrap_or(0.0), now.get(source).copied().unwrap_or(0.0))
            })))
        }
    }
}

fn rejections_card(
    latest: &Snapshot,
    earliest: &Snapshot,
    sources: &[String],
    admin: bool,
) -> Markup {
    let by_reason = |s: &Snapshot| {
        s.by_label(RECEIVED, "outcome", |l| {
            l("outcome").as_deref() != Some("accepted")
                && l("source").is_some_and(|source| {
                    sources.contains(&source) || (admin && source == "unknown")
                })
        })
    };
    let (now, then) = (by_reason(latest), by_reason(earliest));
    let mut reasons: Vec<(&String, &f64)> = now.iter().collect();
    reasons.sort_by(|a, b| a.0.cmp(b.0));
    html! {
        section class="card" aria-labelledby="rejected-h" {
            h2 id="rejected-h" { "Webhooks rejected, by reason" }
            @if reasons.is_empty() {
                p class="muted" { "None since the ingresses started." }
            } @else {
                (window_table("Rejections by reason", "Reason", reasons.into_iter().map(|(reason, total)| {
                    (html! { (reason_label(reason)) }, then.get(reason).copied().unwrap_or(0.0), *total)
                })))
            }
        }
    }
}

/// A table of counters by name: each one's increase over the window and its total since start.
fn window_table(label: &str, name: &str, rows: impl Iterator<Item = (Markup, f64, f64)>) -> Markup {
    view::table(
        label,
        html! {
            (view::header_row(&[Text(name), Num("Window"), Num("Since start")], false))
            tbody {
                @for (name, before, total) in rows {
                    tr {
                        td { (name) }
                        td class="num" { (view::thousands(increase(before, total) as u64)) }
                        td class="num" { (view::thousands(total as u64)) }
                    }
                }
            }
        },
    )
}

/// A rejection outcome in words.
fn reason_label(outcome: &str) -> String {
    match outcome {
        "unauthorized" => "signature (401)".to_owned(),
        "payload_too_large" => "size (413)".to_owned(),
        "unknown_source" => "unknown source (404)".to_owned(),
        "rate_limited" => "rate limit (429)".to_owned(),
        "bad_request" => "malformed (400)".to_owned(),
        "unavailable" => "broker unavailable (503)".to_owned(),
        other => other.replace('_', " "),
    }
}

fn queues_card(latest: &Snapshot, prefix: &str) -> Markup {
    let ready = latest.by_label(QUEUE_READY, "queue", |_| true);
    let consumers = latest.by_label(QUEUE_CONSUMERS, "queue", |_| true);
    let mut queues: Vec<&String> = ready.keys().collect();
    queues.sort();
    html! {
        section class="card" aria-labelledby="queues-h" {
            h2 id="queues-h" { "Queues" }
            @if !prefix.is_empty() { p class="hint" { "Names prefixed with " code { (prefix) } "." } }
            @if queues.is_empty() {
                p class="problem" { "RabbitMQ did not answer." }
            } @else {
                (view::table("Queue depths", html! {
                    (view::header_row(&[Text("Queue"), Num("Ready"), Num("Consumers")], false))
                    tbody {
                        @for queue in queues {
                            tr {
                                td { code { (queue.strip_prefix(prefix).unwrap_or(queue)) } }
                                td class="num" { (view::thousands(ready[queue] as u64)) }
                                td class="num" { (consumers.get(queue).map_or(0, |c| *c as u64)) }
                            }
                        }
                    }
                }))
            }
        }
    }
}

fn lag_card(latest: &Snapshot, earliest: &Snapshot) -> Markup {
    let (now, then) = (latest.buckets(LAG), earliest.buckets(LAG));
    // The page's window when messages were merged in it, else everything since the start.
    let windowed = (quantile(&then, &now, 0.5), quantile(&then, &now, 0.99));
    let (p50, p99, scope) = match windowed {
        (Some(p50), Some(p99)) if !std::ptr::eq(latest, earliest) => {
            (Some(p50), Some(p99), "merged while this page was open")
        }
        _ => (
            quantile(&[], &now, 0.5),
            quantile(&[], &now, 0.99),
            "since this worker started",
        ),
    };
    let shown = |q: Option<f64>| match q {
        None => "—".to_owned(),
        Some(v) if v.is_infinite() => "> 10 s".to_owned(),
        Some(v) if v < 1.0 => format!("≤ {} ms", (v * 1000.0).round()),
        Some(v) => format!("≤ {v} s"),
    };
    html! {
        section class="card" aria-labelledby="lag-h" {
            h2 id="lag-h" { "Worker lag (this worker)" }
            p class="hint" { "From the ingress receiving a message to its merge committing; messages " (scope) "." }
            dl class="facts" {
                dt { "p50" } dd { (shown(p50)) }
                dt { "p99" } dd { (shown(p99)) }
            }
        }
    }
}

fn backlog_card(backlogs: &Backlogs, admin: bool) -> Markup {
    html! {
        section class="card" aria-labelledby="backlog-h" {
            h2 id="backlog-h" { "Backlogs" }
            dl class="facts" {
                @for (source, due, active) in &backlogs.polls {
                    @if *active > 0 {
                        dt { "Polls due, " (source) }
                        dd { (view::capped(*due, COUNT_CAP)) " of " (view::capped(*active, COUNT_CAP)) " polled" }
                    }
                }
                dt { "Events parked for registration" } dd { (view::capped(backlogs.parked, COUNT_CAP)) }
                @if admin {
                    @if let Some((unpublished, unfanned)) = backlogs.outbox {
                        dt { "Outbox not yet published" } dd { (view::thousands(unpublished)) }
                        dt { "Outbox not yet fanned out" } dd { (view::thousands(unfanned)) }
                    }
                }
            }
        }
    }
}

fn delivery_table(subscriptions: &[SubscriptionHealth]) -> Markup {
    if subscriptions.is_empty() {
        return html! { p class="muted" { "No subscriptions." } };
    }
    let success = format!("Success (last {})", waybill_store::console::RECENT_WINDOW);
    view::table(
        "Delivery success per subscription",
        html! {
            (view::header_row(&[Text("Subscription"), Text("State"), Num(&success), Num("Pending"), Num("Dead")], false))
            tbody {
                @for s in subscriptions {
                    tr {
                        td class="break" { a href={(BASE) "/subscriptions/" (s.id)} { "#" (s.id) } " " (s.url) }
                        td { (state_badge(s)) }
                        td class="num" { (success_rate(s)) }
                        td class="num" { (view::capped(s.pending, COUNT_CAP)) }
                        td class="num" { (view::capped(s.dead, COUNT_CAP)) }
                    }
                }
            }
        },
    )
}

/// A card with a line chart of a counter's rate over the kept snapshots.
fn chart_card(title: &str, history: &[Snapshot], value: impl Fn(&Snapshot) -> f64) -> Markup {
    let points: Vec<f64> = history
        .windows(2)
        .map(|pair| {
            let seconds = (pair[1].at - pair[0].at).num_milliseconds().max(1) as f64 / 1000.0;
            increase(value(&pair[0]), value(&pair[1])) / seconds
        })
        .collect();
    chart(title, &points, "/s")
}

fn gauge_chart_card(title: &str, history: &[Snapshot], console: &Console) -> Markup {
    let queue = console.parts().topology.webhooks_queue();
    let points: Vec<f64> = history
        .iter()
        .map(|s| {
            s.total(QUEUE_READY, |l| {
                l("queue").as_deref() == Some(queue.as_str())
            })
        })
        .collect();
    chart(title, &points, "")
}

/// A small inline SVG line chart (no script, no style attribute: CSP-clean).
fn chart(title: &str, points: &[f64], unit: &str) -> Markup {
    let max = points.iter().copied().fold(0.0_f64, f64::max);
    let last = points.last().copied().unwrap_or(0.0);
    let scale = if max > 0.0 { max } else { 1.0 };
    let step = if points.len() > 1 {
        100.0 / (points.len() - 1) as f64
    } else {
        100.0
    };
    let line: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.2},{:.2}", i as f64 * step, 38.0 - 36.0 * v / scale))
        .collect();
    let label = format!(
        "{title}: now {last:.1}{unit}, peak {max:.1}{unit} over {} readings",
        points.len()
    );
    html! {
        section class="card" {
            h2 { (title) }
            p class="big" { (format!("{last:.1}")) (unit) }
            @if points.len() < 2 {
                p class="muted" { "The chart fills in while this page stays open." }
            } @else {
                svg class="chart" viewBox="0 0 100 40" preserveAspectRatio="none" role="img" aria-label=(label) {
                    line class="axis" x1="0" y1="38" x2="100" y2="38" {}
                    polyline class="line" points=(line.join(" ")) {}
                }
                p class="hint" { "peak " (format!("{max:.1}")) (unit) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_table_shows_each_counters_increase_and_total() {
        let rows = [(html! { (reason_label("payload_too_large")) }, 3.0, 1_205.0)];
        let rendered = window_table("Rejections by reason", "Reason", rows.into_iter());
        assert_eq!(
            rendered.into_string(),
            concat!(
                r#"<div class="table-wrap" role="region" aria-label="Rejections by reason" tabindex="0"><table>"#,
                r#"<thead><tr><th scope="col">Reason</th><th scope="col" class="num">Window</th><th scope="col" class="num">Since start</th></tr></thead>"#,
                r#"<tbody><tr><td>size (413)</td><td class="num">1,202</td><td class="num">1,205</td></tr></tbody>"#,
                "</table></div>",
            )
        );
    }
}
