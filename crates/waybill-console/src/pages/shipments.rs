//! Shipments: search by tracking number, order number or carrier, and a shipment's timeline —
//! canonical and raw status, where each time came from, webhook or poll, which events arrived
//! outdated, and the next scheduled poll.

use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use waybill_core::{CarrierCode, EventId, Origin, TenantId, TimeProvenance, TrackingNumber};
use waybill_store::console::{ShipmentSchedule, ShipmentSearch};
use waybill_store::{HistoryEntry, ShipmentSummary, ShipmentView};

use crate::auth::Viewer;
use crate::error::PageError;
use crate::view::Heading::Text;
use crate::{BASE, Console, shell, view};

/// The search form's fields.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    tracking_number: String,
    #[serde(default)]
    order_number: String,
    #[serde(default)]
    carrier: String,
}

/// `GET /console/shipments`.
pub(crate) async fn search(
    State(console): State<Console>,
    viewer: Viewer,
    Query(query): Query<SearchQuery>,
) -> Result<Markup, PageError> {
    let bad = |what: &str, error: &dyn std::fmt::Display| {
        PageError::BadRequest(format!("{what}: {error}"))
    };
    let number = non_empty(&query.tracking_number)
        .map(TrackingNumber::parse)
        .transpose()
        .map_err(|e| bad("tracking number", &e))?;
    let carrier = non_empty(&query.carrier)
        .map(|c| CarrierCode::parse(&c.to_ascii_lowercase()))
        .transpose()
        .map_err(|e| bad("carrier", &e))?;
    let order = non_empty(&query.order_number);
    let tenant = viewer.tenant_scope();
    let searched = number.is_some() || order.is_some() || carrier.is_some();
    let found = if searched {
        let mut connection = console.store().acquire().await?;
        let search = ShipmentSearch {
            tenant: tenant.as_ref(),
            tracking_number: number.as_ref(),
            order_number: order,
            carrier: carrier.as_ref(),
            limit: 50,
        };
        waybill_store::console::search_shipments(&mut connection, &search).await?
    } else {
        Vec::new()
    };
    Ok(shell::page(
        &viewer,
        "/shipments",
        "Shipments",
        html! {
            form method="get" action={(BASE) "/shipments"} class="search" role="search" {
                label { "Tracking number" input name="tracking_number" value=(query.tracking_number) autocomplete="off"; }
                label { "Order number" input name="order_number" value=(query.order_number) autocomplete="off"; }
                label { "Carrier" input name="carrier" value=(query.carrier) size="12" autocomplete="off"; }
                button type="submit" { "Search" }
            }
            @if searched { (results(&found)) } @else {
                p class="hint" { "Search by an exact tracking number or order number, or list a carrier's shipments (first 50 by tracking number)." }
            }
        },
    ))
}

fn non_empty(value: &str) -> Option<&str> {
    Some(value.trim()).filter(|v| !v.is_empty())
}

fn results(found: &[ShipmentSummary]) -> Markup {
    if found.is_empty() {
        return html! { p role="status" { "No shipment matches." } };
    }
    view::table(
        "Shipments found",
        html! {
            (view::header_row(&[Text("Tracking number"), Text("Carrier"), Text("Tenant"), Text("Order"), Text("Status"), Text("Last event")], false))
            tbody {
                @for s in found {
                    tr {
                        td { a href=(timeline_href(&s.tenant, &s.carrier, &s.tracking_number)) { (s.tracking_number) } }
                        td { (s.carrier) } td { (s.tenant) }
                        td class="break" { (s.order_number.as_deref().unwrap_or("—")) }
                        td { (s.status.as_str()) @if let Some(raw) = &s.raw_status { span class="muted" { " (" (raw) ")" } } }
                        td { (view::time(s.last_event_at)) }
                    }
                }
            }
        },
    )
}

/// The link to a shipment's timeline.
pub(crate) fn timeline_href(
    tenant: &TenantId,
    carrier: &CarrierCode,
    number: &TrackingNumber,
) -> String {
    format!("{BASE}/shipments/{tenant}/{carrier}/{number}")
}

/// `GET /console/shipments/{tenant}/{carrier}/{tracking_number}`.
pub(crate) async fn timeline(
    State(console): State<Console>,
    viewer: Viewer,
    Path((tenant, carrier, number)): Path<(String, String, String)>,
) -> Result<Markup, PageError> {
    let not_found = || PageError::NotFound("no such shipment for this key");
    let tenant = TenantId::parse(&tenant).map_err(|_| not_found())?;
    if !viewer.sees(tenant.as_str()) {
        return Err(not_found());
    }
    let carrier = CarrierCode::parse(&carrier).map_err(|_| not_found())?;
    let number = TrackingNumber::parse(&number).map_err(|_| not_found())?;
    let mut connection = console.store().acquire().await?;
    let shipment = waybill_store::get_shipment(&mut connection, &tenant, &carrier, &number)
        .await?
        .ok_or_else(not_found)?;
    let schedule =
        waybill_store::console::shipment_schedule(&mut connection, &tenant, &carrier, &number)
            .await?;
    let title = format!("Shipment {number}");
    Ok(shell::page(
        &viewer,
        "/shipments",
        &title,
        html! {
            (facts(&shipment, schedule.as_ref()))
            h2 { "Timeline, newest first" }
            (history_table(&shipment))
            p class="hint" {
                "A scan that arrives again (a courier retry, or the same scan by webhook and by poll) has the same event id and is ignored as a duplicate: it is counted in the metric "
                code { "waybill_merge_events_total{outcome=\"duplicate\"}" } " but not stored per shipment."
            }
        },
    ))
}

fn facts(shipment: &ShipmentView, schedule: Option<&ShipmentSchedule>) -> Markup {
    html! {
        dl class="facts" {
            dt { "Carrier" } dd { (shipment.carrier) }
            dt { "Tenant" } dd { (shipment.tenant) }
            dt { "Status" } dd { strong { (shipment.status.as_str()) }
                @if let Some(raw) = &shipment.raw_status { " — raw " code { (raw.code) } @if let Some(d) = &raw.description { " " (d) } }
                @if let Some(sub) = &shipment.sub_status { " — " (sub) } }
            dt { "Order number" } dd { (shipment.order_number.as_deref().unwrap_or("—")) }
            dt { "Registered" } dd { (if shipment.registered { "yes" } else { "no (created by an event)" }) }
            dt { "Version" } dd { (shipment.version) }
            @if let Some(schedule) = schedule {
                dt { "Source" } dd { (schedule.source.as_deref().unwrap_or("—")) }
                dt { "Polling" } dd { (schedule.poll_state.as_deref().unwrap_or("not yet scheduled"))
                    @if schedule.poll_failures > 0 { " — " (schedule.poll_failures) " failed polls in a row" } }
                dt { "Next poll" } dd { (view::time(schedule.next_poll_at)) }
                dt { "Last polled" } dd { (view::time(schedule.last_polled_at)) }
                dt { "Last webhook" } dd { (view::time(schedule.last_webhook_at)) }
            }
            dt { "Created" } dd { (view::time(Some(shipment.created_at))) }
        }
    }
}

fn history_table(shipment: &ShipmentView) -> Markup {
    let outdated = arrived_outdated(&shipment.history);
    view::table(
        "Tracking events",
        html! {
            (view::header_row(&[Text("Occurred at"), Text("Status"), Text("Raw status"), Text("Location"), Text("Message"), Text("Arrived by"), Text("Received"), Text("Merge")], false))
            tbody {
                @for (index, event) in shipment.history.iter().enumerate() {
                    tr {
                        td { (event.occurred_at.format("%Y-%m-%d %H:%M:%SZ")) br; span class="muted" { (provenance(&event.time_provenance)) } }
                        td { (event.status.as_str()) @if let Some(sub) = &event.sub_status { br; span class="muted" { (sub) } } }
                        td class="break" { code { (event.raw_status.code) } @if let Some(d) = &event.raw_status.description { br; (d) } }
                        td class="break" { (event.location.as_deref().unwrap_or("—")) }
                        td class="break" { (event.message.as_deref().unwrap_or("—")) }
                        td { (origin_badge(event.origin)) }
                        td { (view::time(Some(event.received_at))) }
                        td { (merge_role(shipment.current_event_id.as_ref(), event, outdated[index])) }
                    }
                }
            }
        },
    )
}

fn origin_badge(origin: Origin) -> Markup {
    let text = match origin {
        Origin::Webhook => "webhook",
        Origin::Poll => "poll",
        Origin::System => "system",
    };
    html! { span class="badge" { (text) } }
}

fn merge_role(current: Option<&EventId>, event: &HistoryEntry, outdated: bool) -> Markup {
    if current == Some(&event.event_id) {
        html! { span class="badge ok" { "current" } }
    } else if outdated {
        html! { span class="badge warn" title="It arrived after a newer scan: kept in history, the status did not go back." { "outdated" } }
    } else {
        html! { span class="muted" { "history" } }
    }
}

/// For each event of a newest-first history: whether it arrived (strictly) after an event that
/// ranks above it in merge order — the merge's "outdated": stored, but it could not change the
/// status.
pub(crate) fn arrived_outdated(history: &[HistoryEntry]) -> Vec<bool> {
    let mut by_arrival: Vec<(DateTime<Utc>, usize)> = history
        .iter()
        .enumerate()
        .map(|(rank, event)| (event.received_at, rank))
        .collect();
    by_arrival.sort();
    let mut outdated = vec![false; history.len()];
    let mut best_before = usize::MAX;
    let mut group_best = usize::MAX;
    let mut group_time: Option<DateTime<Utc>> = None;
    for (received, rank) in by_arrival {
        if group_time != Some(received) {
            best_before = best_before.min(group_best);
            group_best = usize::MAX;
            group_time = Some(received);
        }
        outdated[rank] = best_before < rank;
        group_best = group_best.min(rank);
    }
    outdated
}

/// Where an event's time came from, in words.
pub(crate) fn provenance(provenance: &TimeProvenance) -> String {
    match provenance {
        TimeProvenance::ExplicitOffset => "time with an explicit offset".to_owned(),
        TimeProvenance::AssumedZone { zone } => format!("local time, zone {zone} assumed"),
        TimeProvenance::DateOnly { zone } => format!("date only, zone {zone}"),
        TimeProvenance::UnixTime => "Unix time".to_owned(),
        TimeProvenance::ReceivedAt => "no time given: when received".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use waybill_core::{RawStatus, Status};

    use super::*;

    fn event(id: &str, received_minute: u32) -> HistoryEntry {
        HistoryEntry {
            event_id: EventId::parse(id).unwrap(),
            status: Status::InTransit,
            raw_status: RawStatus {
                code: "IT".into(),
                description: None,
            },
            sub_status: None,
            occurred_at: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            time_provenance: TimeProvenance::ExplicitOffset,
            location: None,
            message: None,
            origin: Origin::Webhook,
            provider_event_id: None,
            courier: None,
            received_at: Utc
                .with_ymd_and_hms(2026, 11, 2, 0, received_minute, 0)
                .unwrap(),
        }
    }

    #[test]
    fn events_that_arrived_after_a_newer_one_are_outdated() {
        // Newest first: rank 0 arrived at minute 5, rank 1 at minute 1, rank 2 at minute 9.
        let history = [
            event("00000000000000000000000000000003", 5),
            event("00000000000000000000000000000002", 1),
            event("00000000000000000000000000000001", 9),
        ];
        assert_eq!(arrived_outdated(&history), vec![false, false, true]);
        // Same batch: arriving together is not arriving late.
        let together = [
            event("00000000000000000000000000000003", 5),
            event("00000000000000000000000000000002", 5),
        ];
        assert_eq!(arrived_outdated(&together), vec![false, false]);
    }
}
