//! Sources: each configured inbound endpoint, its profile, its last webhook, signature failures
//! and which of its secrets matched recently; and "send test event", which maps a pasted sample
//! with the source's own profile — verification included — and stores nothing.

use axum::extract::{Path, State};
use chrono::{DateTime, TimeZone, Utc};
use maud::{Markup, html};
use waybill_carriers::UnverifiedRequest;
use waybill_config::SourceSettings;

use super::shipments::provenance;
use super::visible_sources;
use crate::auth::{CheckedForm, Viewer, csrf_field};
use crate::error::PageError;
use crate::metrics::{Snapshot, scrape};
use crate::view::Heading::{Num, Text};
use crate::{BASE, Console, shell, view};

const MATCHED: &str = "waybill_webhook_secret_last_matched_seconds";
const RECEIVED: &str = "waybill_webhooks_received_total";

/// Largest sample the test form maps (the ingress's own body limit applies to couriers).
const MAX_SAMPLE_BYTES: usize = 256 * 1024;

/// `GET /console/sources`.
pub(crate) async fn list(State(console): State<Console>, viewer: Viewer) -> Markup {
    let figures = figures(&console).await;
    let sources = visible_sources(&console, &viewer);
    shell::page(
        &viewer,
        "/sources",
        "Sources",
        html! {
            @if sources.is_empty() {
                p class="muted" { "No source is configured for this tenant." }
            } @else {
                (view::table("Sources", html! {
                    (view::header_row(&[Text("Source"), Text("Profile"), Text("Tenant"), Text("Mode"), Text("Last webhook"), Num("Signature failures"), Text("Secrets")], false))
                    tbody {
                        @for source in &sources {
                            tr {
                                td { a href={(BASE) "/sources/" (source.id)} { (source.id) } }
                                td { (source.profile) }
                                td { (source.tenant) }
                                td { (mode(source)) }
                                td { (view::time(last_webhook(&figures, source))) }
                                td class="num" { (view::thousands(signature_failures(&figures, source))) }
                                td { (secrets_summary(&figures, source)) }
                            }
                        }
                    }
                }))
                p class="hint" { "Last webhook and signature failures come from the ingresses' metrics, since each ingress started." }
            }
        },
    )
}

/// `GET /console/sources/{id}`.
pub(crate) async fn show(
    State(console): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let source = find(&console, &viewer, &id)?;
    let figures = figures(&console).await;
    Ok(source_page(&console, &viewer, source, &figures, None, ""))
}

/// `POST /console/sources/{id}/test`: maps the pasted sample; nothing is stored or published.
/// Allowed to `read` keys too: it changes nothing.
pub(crate) async fn test_event(
    State(console): State<Console>,
    Path(id): Path<String>,
    form: CheckedForm,
) -> Result<Markup, PageError> {
    let viewer = &form.viewer;
    let source = find(&console, viewer, &id)?;
    let sample = form.get("sample").unwrap_or("");
    if sample.len() > MAX_SAMPLE_BYTES {
        return Err(PageError::BadRequest(format!(
            "the sample is larger than {MAX_SAMPLE_BYTES} bytes"
        )));
    }
    let result = map_sample(&console, source, sample.as_bytes());
    let figures = figures(&console).await;
    Ok(source_page(
        &console,
        viewer,
        source,
        &figures,
        Some(result),
        sample,
    ))
}

fn find<'a>(
    console: &'a Console,
    viewer: &Viewer,
    id: &str,
) -> Result<&'a SourceSettings, PageError> {
    visible_sources(console, viewer)
        .into_iter()
        .find(|source| source.id.as_str() == id)
        .ok_or(PageError::NotFound("no such source for this key"))
}

/// The sample through the source's profile: signed with its first secret and verified (so a
/// profile that needs headers of its own behaves as for a courier), then mapped.
fn map_sample(
    console: &Console,
    source: &SourceSettings,
    sample: &[u8],
) -> Result<waybill_carriers::Mapped, String> {
    let profile = console
        .profiles()
        .get(&source.profile)
        .ok_or_else(|| format!("the profile {} is not loaded", source.profile))?;
    let now = Utc::now();
    let mut headers = axum::http::HeaderMap::new();
    let secrets = waybill_config::expose_list(&source.secrets);
    if let Some(secret) = secrets.first()
        && let Some((name, value)) = profile.sign(sample, secret, now)
        && let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        )
    {
        headers.insert(name, value);
    }
    let request = UnverifiedRequest {
        headers: &headers,
        body: sample,
    };
    let verified = profile
        .verify(request, &secrets, now)
        .map_err(|error| format!("verification: {error}"))?;
    profile
        .map_webhook(&verified, now)
        .map_err(|error| format!("mapping: {error}"))
}

fn source_page(
    console: &Console,
    viewer: &Viewer,
    source: &SourceSettings,
    figures: &Snapshot,
    result: Option<Result<waybill_carriers::Mapped, String>>,
    sample: &str,
) -> Markup {
    let profile = console.profiles().get(&source.profile);
    let title = format!("Source {}", source.id);
    shell::page(
        viewer,
        "/sources",
        &title,
        html! {
            dl class="facts" {
                dt { "Profile" } dd { (source.profile) @if let Some(d) = profile.as_ref().and_then(|p| p.description.clone()) { " — " (d) } }
                dt { "Verification" } dd { (profile.as_ref().map_or("?", |p| p.verification_scheme()))
                    @if let Some(header) = profile.as_ref().and_then(|p| p.signature_header().map(str::to_owned)) { " in " code { (header) } } }
                dt { "Tenant" } dd { (source.tenant) }
                dt { "Mode" } dd { (mode(source)) }
                dt { "Registration required" } dd { (if source.require_registration { "yes" } else { "no" }) }
                dt { "Last webhook" } dd { (view::time(last_webhook(figures, source))) }
                dt { "Signature failures" } dd { (view::thousands(signature_failures(figures, source))) " since the ingresses started" }
            }
            h2 { "Secrets" }
            p class="hint" { "Secrets are never shown. During a rotation, an old secret can be removed once it stops matching." }
            (view::table("Secret rotation", html! {
                (view::header_row(&[Text("Secret"), Text("Last matched")], false))
                tbody {
                    @for position in 1..=source.secrets.len() {
                        tr { td { "#" (position) } td { (view::time(secret_matched(figures, source, &position.to_string()))) } }
                    }
                }
            }))
            h2 { "Send a test event" }
            p class="hint" { "Paste a sample body: it is verified and mapped with this source's profile exactly as a webhook would be. Nothing is stored or published." }
            form method="post" action={(BASE) "/sources/" (source.id) "/test"} class="stack" {
                (csrf_field(viewer))
                label for="sample" { "Sample body" }
                textarea id="sample" name="sample" required { (sample) }
                button type="submit" { "Map it" }
            }
            @if let Some(result) = result { (mapped(result)) }
        },
    )
}

fn mapped(result: Result<waybill_carriers::Mapped, String>) -> Markup {
    match result {
        Err(reason) => {
            html! { p class="problem" role="alert" { "The sample was refused — " (reason) } }
        }
        Ok(mapped) => html! {
            h2 { "It maps to " (mapped.events.len()) " event(s)" }
            @if !mapped.unmapped_statuses.is_empty() {
                p class="problem" { "Raw statuses no mapping knows (stored as Unknown): " (mapped.unmapped_statuses.join(", ")) }
            }
            (view::table("Mapped events", html! {
                (view::header_row(&[Text("Carrier"), Text("Tracking number"), Text("Status"), Text("Raw status"), Text("Occurred at"), Text("Location"), Text("Message"), Text("Event id")], false))
                tbody {
                    @for event in &mapped.events {
                        tr {
                            td { (event.carrier) } td { (event.tracking_number) } td { (event.status.as_str()) }
                            td class="break" { (event.raw_status.code) @if let Some(d) = &event.raw_status.description { " — " (d) } }
                            td { (event.occurred_at.format("%Y-%m-%d %H:%M:%SZ")) br; span class="muted" { (provenance(&event.time_provenance)) } }
                            td class="break" { (event.location.as_deref().unwrap_or("—")) }
                            td class="break" { (event.message.as_deref().unwrap_or("—")) }
                            td { code { (event.id.as_str()) } }
                        }
                    }
                }
            }))
        },
    }
}

/// The metrics now (reusing a fresh snapshot of the overview's, else reading them).
async fn figures(console: &Console) -> Snapshot {
    if let Some(fresh) = console.sampler().fresh(Utc::now()) {
        return fresh;
    }
    scrape(console.http(), &console.settings().console.metrics_urls).await
}

fn mode(source: &SourceSettings) -> &'static str {
    match source.mode {
        waybill_config::PollMode::Hybrid => "webhooks and polling",
        waybill_config::PollMode::WebhookOnly => "webhooks only",
        waybill_config::PollMode::PollOnly => "polling only",
    }
}

fn at(seconds: f64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(seconds as i64, 0).single()
}

fn last_webhook(figures: &Snapshot, source: &SourceSettings) -> Option<DateTime<Utc>> {
    figures
        .max(MATCHED, |l| {
            l("source").as_deref() == Some(source.id.as_str())
        })
        .and_then(at)
}

fn secret_matched(
    figures: &Snapshot,
    source: &SourceSettings,
    position: &str,
) -> Option<DateTime<Utc>> {
    figures
        .max(MATCHED, |l| {
            l("source").as_deref() == Some(source.id.as_str())
                && l("secret").as_deref() == Some(position)
        })
        .and_then(at)
}

fn signature_failures(figures: &Snapshot, source: &SourceSettings) -> u64 {
    figures.total(RECEIVED, |l| {
        l("source").as_deref() == Some(source.id.as_str())
            && l("outcome").as_deref() == Some("unauthorized")
    }) as u64
}

fn secrets_summary(figures: &Snapshot, source: &SourceSettings) -> Markup {
    let now = Utc::now();
    html! {
        @if source.secrets.is_empty() { span class="muted" { "none" } }
        @for position in 1..=source.secrets.len() {
            @let seen = secret_matched(figures, source, &position.to_string());
            span class="badge" {
                "#" (position) ": "
                @match seen { Some(at) => { (view::relative(at, now)) }, None => { "not seen" } }
            }
            " "
        }
    }
}
