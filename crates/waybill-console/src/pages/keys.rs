//! Keys: the API keys by public prefix (never a secret), creating one (shown once, on the page
//! that answers the form, never again), and revoking one. After a change the key set is
//! published at once, as `waybill keys create|revoke` does, so every ingress and worker applies
//! it within one publish.

use axum::extract::{Path, State};
use maud::{Markup, html};
use waybill_core::TenantId;
use waybill_core::access::{KeyId, Scope};

use crate::auth::{AdminForm, Viewer, csrf_field};
use crate::error::PageError;
use crate::view::Heading::Text;
use crate::{BASE, Console, shell, view};

/// `GET /console/keys`.
pub(crate) async fn list(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Markup, PageError> {
    keys_page(&console, &viewer, None).await
}

/// What to show above the list after an action.
enum Outcome {
    Created { key: String, published: bool },
    Revoked { prefix: String, published: bool },
}

async fn keys_page(
    console: &Console,
    viewer: &Viewer,
    outcome: Option<Outcome>,
) -> Result<Markup, PageError> {
    let tenant = viewer.tenant_scope();
    let mut connection = console.store().acquire().await?;
    let keys = waybill_store::keys::list_api_keys(&mut connection, tenant.as_ref(), None).await?;
    drop(connection);
    Ok(shell::page(
        viewer,
        "/keys",
        "API keys",
        html! {
            @match &outcome {
                Some(Outcome::Created { key, published }) => {
                    div class="secret" role="status" {
                        p { strong { "The new key — shown only now; store it before leaving this page:" } }
                        p { code id="new-key" { (key) } }
                    }
                    (published_notice(*published))
                }
                Some(Outcome::Revoked { prefix, published }) => {
                    (view::notice(&format!("{prefix} is revoked.")))
                    (published_notice(*published))
                }
                None => {}
            }
            (view::table("API keys", html! {
                (view::header_row(&[Text("Key"), Text("Tenant"), Text("Scopes"), Text("Name"), Text("Created"), Text("State")], viewer.can_act()))
                tbody {
                    @for key in &keys {
                        tr {
                            td { code { (key.id.public_prefix()) } }
                            td { (key.tenant) }
                            td { (key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")) }
                            td class="break" { (key.name) }
                            td { (view::time(Some(key.created_at))) }
                            td { @if let Some(at) = key.revoked_at { span class="badge bad" { "revoked" } " " (view::time(Some(at))) } @else { span class="badge ok" { "active" } } }
                            @if viewer.can_act() {
                                td { @if key.revoked_at.is_none() {
                                    form method="post" action={(BASE) "/keys/" (key.id) "/revoke"} class="inline" {
                                        (csrf_field(viewer))
                                        button type="submit" class="danger" aria-label={"Revoke " (key.id.public_prefix())} { "Revoke" }
                                    }
                                } }
                            }
                        }
                    }
                }
            }))
            @if viewer.can_act() { (create_form(viewer)) }
        },
    ))
}

fn published_notice(published: bool) -> Markup {
    if published {
        html! { p class="hint" { "The new key set was published; ingresses and workers apply it now." } }
    } else {
        html! { p class="problem" { "The key set could not be published now; the workers publish it within auth.refresh_secs." } }
    }
}

fn create_form(viewer: &Viewer) -> Markup {
    html! {
        h2 { "Create a key" }
        form method="post" action={(BASE) "/keys"} class="stack" {
            (csrf_field(viewer))
            label for="key-tenant" { "Tenant" }
            input id="key-tenant" name="tenant" value=(TenantId::DEFAULT) required;
            fieldset {
                legend { "Scopes" }
                @for scope in Scope::ALL {
                    label { input type="checkbox" name="scope" value=(scope.as_str()); " " code { (scope.as_str()) } } " "
                }
            }
            label for="key-name" { "Name (for people)" }
            input id="key-name" name="name" maxlength="200";
            button type="submit" { "Create key" }
        }
    }
}

/// `POST /console/keys`: creates a key and shows it once.
pub(crate) async fn create(
    State(console): State<Console>,
    AdminForm(form): AdminForm,
) -> Result<Markup, PageError> {
    let bad = |text: String| PageError::BadRequest(text);
    let tenant = TenantId::parse(form.get("tenant").unwrap_or("").trim())
        .map_err(|e| bad(format!("tenant: {e}")))?;
    let scopes = form
        .all("scope")
        .iter()
        .map(|raw| Scope::parse(raw))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if scopes.is_empty() {
        return Err(bad("choose at least one scope".into()));
    }
    let name: String = form
        .get("name")
        .unwrap_or("")
        .trim()
        .chars()
        .take(200)
        .collect();
    let mut connection = console.store().acquire().await?;
    let (key, stored) =
        waybill_store::keys::create_api_key(&mut connection, &tenant, &scopes, &name).await?;
    drop(connection);
    tracing::info!(key.id = %form.viewer.session.key_id, created = %stored.id, tenant = %tenant, "console: API key created");
    let published = publish(&console).await;
    let outcome = Outcome::Created {
        key: key.expose(),
        published,
    };
    keys_page(&console, &form.viewer, Some(outcome)).await
}

/// `POST /console/keys/{id}/revoke`.
pub(crate) async fn revoke(
    State(console): State<Console>,
    Path(id): Path<String>,
    AdminForm(form): AdminForm,
) -> Result<Markup, PageError> {
    let id = KeyId::parse(&id).map_err(|_| PageError::NotFound("no such key"))?;
    let mut connection = console.store().acquire().await?;
    waybill_store::keys::revoke_api_key(&mut connection, &id)
        .await?
        .ok_or(PageError::NotFound("no such key"))?;
    drop(connection);
    tracing::info!(key.id = %form.viewer.session.key_id, revoked = %id, "console: API key revoked");
    let published = publish(&console).await;
    let outcome = Outcome::Revoked {
        prefix: id.public_prefix(),
        published,
    };
    keys_page(&console, &form.viewer, Some(outcome)).await
}

async fn publish(console: &Console) -> bool {
    match (console.parts().publish_key_set)().await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(error = %error, "console: could not publish the key set");
            false
        }
    }
}
