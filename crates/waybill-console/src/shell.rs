//! The shell of a signed-in page: navigation, who is signed in, the tenant filter, the content.

use maud::{DOCTYPE, Markup, html};

use crate::BASE;
use crate::auth::{Viewer, csrf_field};
use crate::view::head;

/// The console's sections, in navigation order: (path, label).
const SECTIONS: [(&str, &str); 6] = [
    ("/overview", "Overview"),
    ("/sources", "Sources"),
    ("/shipments", "Shipments"),
    ("/deadletters", "Dead letters"),
    ("/subscriptions", "Subscriptions"),
    ("/keys", "Keys"),
];

/// A page of the signed-in console: navigation (current section marked), who is signed in, the
/// tenant filter for admins, and `content`.
pub(crate) fn page(viewer: &Viewer, section: &str, title: &str, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    p class="brand" { a href={(BASE) "/overview"} { "Waybill" } }
                    nav aria-label="Console sections" {
                        ul {
                            @for (path, label) in SECTIONS {
                                li {
                                    @if path == section {
                                        a href={(BASE) (path)} aria-current="page" { (label) }
                                    } @else {
                                        a href={(BASE) (path)} { (label) }
                                    }
                                }
                            }
                        }
                    }
                    (who(viewer, section))
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

fn who(viewer: &Viewer, section: &str) -> Markup {
    let key = viewer
        .principal
        .key_id()
        .map(|id| id.public_prefix())
        .unwrap_or_default();
    html! {
        div class="who" {
            span {
                (key) " · "
                @if viewer.can_act() { "admin" } @else { "read · tenant " (viewer.principal.tenant()) }
            }
            @if viewer.can_act() {
                form method="post" action={(BASE) "/tenant"} class="inline" {
                    (csrf_field(viewer))
                    input type="hidden" name="back" value={(BASE) (section)};
                    label for="tenant-filter" { "Tenant" }
                    input id="tenant-filter" name="tenant" size="10" placeholder="all"
                        value=[viewer.session.tenant_filter.as_ref().map(|t| t.as_str())];
                    button type="submit" { "Filter" }
                }
            }
            form method="post" action={(BASE) "/logout"} class="inline" {
                (csrf_field(viewer))
                button type="submit" { "Sign out" }
            }
        }
    }
}
