//! Subscriptions and deliveries: each endpoint's health, why a disabled one is disabled,
//! re-enabling it, a subscription's recent deliveries with their attempts, and replaying a
//! dead delivery (same `webhook-id`, same bytes).

use axum::extract::{Path, State};
use chrono::Utc;
use maud::{Markup, html};
use waybill_store::console::{COUNT_CAP, SubscriptionHealth};
use waybill_store::fanout::DisabledReason;
use waybill_store::fanout::{DeliveryRecord, DeliveryStatus};

use crate::auth::{AdminForm, Viewer, csrf_field};
use crate::error::PageError;
use crate::view::Heading::{Num, Text};
use crate::{BASE, Console, shell, view};

/// `GET /console/subscriptions`.
pub(crate) async fn list(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Markup, PageError> {
    list_page(&console, &viewer, None).await
}

async fn list_page(
    console: &Console,
    viewer: &Viewer,
    notice: Option<&str>,
) -> Result<Markup, PageError> {
    let tenant = viewer.tenant_scope();
    let mut connection = console.store().acquire().await?;
    let subscriptions =
        waybill_store::console::subscription_health(&mut connection, tenant.as_ref()).await?;
    Ok(shell::page(
        viewer,
        "/subscriptions",
        "Subscriptions",
        html! {
            @if let Some(text) = notice { (view::notice(text)) }
            @if subscriptions.is_empty() { p class="muted" { "No subscriptions." } } @else {
                (view::table("Subscriptions", html! {
                    (view::header_row(&[Text("Id"), Text("Endpoint"), Text("Tenant"), Text("State"), Num("Success (recent)"), Num("Pending"), Num("Dead"), Text("Last attempt")], viewer.can_act()))
                    tbody {
                        @for s in &subscriptions {
                            tr {
                                td { a href={(BASE) "/subscriptions/" (s.id)} { "#" (s.id) } }
                                td class="break" { (s.url) @if !s.description.is_empty() { br; span class="muted" { (s.description) } } }
                                td { (s.tenant) }
                                td { (state_badge(s)) }
                                td class="num" { (success_rate(s)) }
                                td class="num" { (view::capped(s.pending, COUNT_CAP)) }
                                td class="num" { (view::capped(s.dead, COUNT_CAP)) }
                                td { (view::time(s.last_attempt_at)) }
                                @if viewer.can_act() { td { @if !s.enabled { (enable_form(viewer, s.id)) } } }
                            }
                        }
                    }
                }))
            }
        },
    ))
}

fn enable_form(viewer: &Viewer, id: i64) -> Markup {
    html! {
        form method="post" action={(BASE) "/subscriptions/" (id) "/enable"} class="inline" {
            (csrf_field(viewer))
            button type="submit" aria-label={"Re-enable subscription " (id)} { "Re-enable" }
        }
    }
}

/// Enabled, failing, or disabled and why.
pub(crate) fn state_badge(s: &SubscriptionHealth) -> Markup {
    match (s.enabled, s.disabled_reason) {
        (true, _) if s.failing_since.is_some() => {
            html! { span class="badge warn" { "failing since " (s.failing_since.map(|at| view::relative(at, Utc::now())).unwrap_or_default()) } }
        }
        (true, _) => html! { span class="badge ok" { "enabled" } },
        (false, reason) => html! { span class="badge bad" { "disabled: " (reason_text(reason)) } },
    }
}

/// Delivered share of the finished recent deliveries.
pub(crate) fn success_rate(s: &SubscriptionHealth) -> String {
    let finished = s.recent_delivered + s.recent_dead;
    if finished == 0 {
        return "—".to_owned();
    }
    format!(
        "{:.1} %",
        100.0 * s.recent_delivered as f64 / finished as f64
    )
}

fn reason_text(reason: Option<DisabledReason>) -> &'static str {
    match reason {
        Some(DisabledReason::Manual) => "by an operator",
        Some(DisabledReason::Gone) => "the receiver answered 410 Gone",
        Some(DisabledReason::Failing) => "every attempt failed for too long",
        None => "no reason recorded",
    }
}

/// `GET /console/subscriptions/{id}`.
pub(crate) async fn show(
    State(console): State<Console>,
    viewer: Viewer,
    Path(id): Path<i64>,
) -> Result<Markup, PageError> {
    show_page(&console, &viewer, id, None).await
}

async fn show_page(
    console: &Console,
    viewer: &Viewer,
    id: i64,
    notice: Option<&str>,
) -> Result<Markup, PageError> {
    let not_found = PageError::NotFound("no such subscription for this key");
    let tenant = viewer.tenant_scope();
    let mut connection = console.store().acquire().await?;
    let subscription =
        waybill_store::console::subscription_health(&mut connection, tenant.as_ref())
            .await?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or(not_found)?;
    let deliveries = waybill_store::console::recent_deliveries(&mut connection, id, 50).await?;
    let title = format!("Subscription #{id}");
    Ok(shell::page(
        viewer,
        "/subscriptions",
        &title,
        html! {
            @if let Some(text) = notice { (view::notice(text)) }
            dl class="facts" {
                dt { "Endpoint" } dd { (subscription.url) }
                dt { "Description" } dd { (subscription.description) }
                dt { "Tenant" } dd { (subscription.tenant) }
                dt { "State" } dd { (state_badge(&subscription)) @if let Some(at) = subscription.disabled_at { " since " (view::time(Some(at))) } }
                dt { "Success" } dd { (success_rate(&subscription)) " of the last " (waybill_store::console::RECENT_WINDOW) " deliveries that finished" }
            }
            @if viewer.can_act() && !subscription.enabled { (enable_form(viewer, id)) }
            h2 { "Recent deliveries" }
            p class="hint" { "Each delivery's last attempt is recorded (its HTTP status or error and time), not every attempt." }
            (deliveries_table(viewer, &deliveries))
        },
    ))
}

fn deliveries_table(viewer: &Viewer, deliveries: &[DeliveryRecord]) -> Markup {
    if deliveries.is_empty() {
        return html! { p class="muted" { "No deliveries yet." } };
    }
    view::table(
        "Deliveries",
        html! {
            (view::header_row(&[Text("Delivery"), Text("Status"), Num("Attempts"), Text("Last answer"), Text("Last attempt"), Text("Created"), Text("Finished"), Text("Next attempt")], viewer.can_act()))
            tbody {
                @for d in deliveries {
                    tr {
                        td { "#" (d.id) br; code class="break" { (d.webhook_id) } }
                        td { (d.status.as_str()) @if d.replays > 0 { br; span class="muted" { "replayed " (d.replays) "×" } } }
                        td class="num" { (d.attempts) }
                        td class="break" {
                            @if let Some(status) = d.last_status { "HTTP " (status) }
                            @if let Some(error) = &d.last_error { br; span class="muted" { (error) } }
                        }
                        td { (view::time(d.last_attempt_at)) }
                        td { (view::time(Some(d.created_at))) }
                        td { (view::time(d.delivered_at.or(d.dead_at))) }
                        td { (view::time(d.next_attempt_at)) }
                        @if viewer.can_act() {
                            td { @if d.status == DeliveryStatus::Dead {
                                form method="post" action={(BASE) "/deliveries/" (d.id) "/replay"} class="inline" {
                                    (csrf_field(viewer))
                                    button type="submit" aria-label={"Replay delivery " (d.id)} { "Replay" }
                                }
                            } }
                        }
                    }
                }
            }
        },
    )
}

/// `POST /console/subscriptions/{id}/enable`.
pub(crate) async fn enable(
    State(console): State<Console>,
    Path(id): Path<i64>,
    AdminForm(form): AdminForm,
) -> Result<Markup, PageError> {
    let mut connection = console.store().acquire().await?;
    let enabled = waybill_store::fanout::enable_subscription(&mut connection, id, Utc::now())
        .await?
        .ok_or(PageError::NotFound("no such subscription"))?;
    drop(connection);
    tracing::info!(key.id = %form.viewer.session.key_id, subscription.id = enabled.id, "console: subscription re-enabled");
    let text = format!("Subscription #{id} is enabled again; its pending deliveries are due now.");
    list_page(&console, &form.viewer, Some(&text)).await
}

/// `POST /console/deliveries/{id}/replay`: a dead delivery back to pending, due now.
pub(crate) async fn replay_delivery(
    State(console): State<Console>,
    Path(id): Path<i64>,
    AdminForm(form): AdminForm,
) -> Result<Markup, PageError> {
    let mut connection = console.store().acquire().await?;
    let delivery = waybill_store::fanout::get_delivery(&mut connection, id)
        .await?
        .ok_or(PageError::NotFound("no such delivery"))?;
    let replayed = waybill_store::fanout::replay_dead(&mut connection, &[id], Utc::now()).await?;
    drop(connection);
    tracing::info!(key.id = %form.viewer.session.key_id, delivery.id = id, "console: delivery replayed");
    let text = if replayed.is_empty() {
        format!("Delivery #{id} is not dead; nothing to replay.")
    } else {
        format!("Delivery #{id} is pending again with the same webhook-id; it is sent now.")
    };
    show_page(
        &console,
        &form.viewer,
        delivery.subscription_id,
        Some(&text),
    )
    .await
}
