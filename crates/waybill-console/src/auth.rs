//! Who is looking: sign-in with an API key, the session extractor, CSRF-checked forms, and the
//! tenant filter of admin keys.

use axum::extract::{Form, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use waybill_core::TenantId;
use waybill_core::access::{ApiKey, Denied, Principal, Scope};

use crate::error::PageError;
use crate::session::{
    LOGIN_COOKIE, SESSION_COOKIE, Session, cookie_value, random_token, tokens_match,
};
use crate::{BASE, Console, view};

/// The signed-in viewer of a page: the principal the key ring says the session's key is now.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// The key's tenant and scopes.
    pub principal: Principal,
    /// The session (its CSRF token and filter).
    pub session: Session,
    /// The session id (the cookie).
    pub session_id: String,
}

impl Viewer {
    /// True for an `admin` key: sees every tenant and may change things.
    pub(crate) fn can_act(&self) -> bool {
        self.principal.is_admin()
    }

    /// The tenant the page shows: the key's own for a `read` key; an admin's filter (`None`:
    /// every tenant).
    pub(crate) fn tenant_scope(&self) -> Option<TenantId> {
        if self.principal.is_admin() {
            self.session.tenant_filter.clone()
        } else {
            Some(self.principal.tenant().clone())
        }
    }

    /// Whether the viewer may see something of `tenant`.
    pub(crate) fn sees(&self, tenant: &str) -> bool {
        self.principal.is_admin() || self.principal.tenant().as_str() == tenant
    }

    /// `Ok` for an admin; the 403 page for a `read` key.
    pub(crate) fn require_admin(&self) -> Result<(), PageError> {
        if self.can_act() {
            Ok(())
        } else {
            Err(PageError::Forbidden(
                "this key may look but not change anything (scope `read`)",
            ))
        }
    }
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        // An in-place refresh (htmx) is told to load the sign-in page instead of swapping it in.
        let in_place = parts.headers.contains_key("hx-request");
        let to_login = || {
            let login = format!("{BASE}/login");
            if in_place {
                ([("hx-redirect", login)], StatusCode::OK).into_response()
            } else {
                Redirect::to(&login).into_response()
            }
        };
        let cookies = parts
            .headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok());
        let Some(session_id) = cookie_value(cookies, SESSION_COOKIE) else {
            return Err(to_login());
        };
        let Some(session) = console.sessions().touch(&session_id) else {
            return Err(to_login());
        };
        let keys = console
            .parts()
            .keys
            .current()
            .map_err(|_| PageError::KeysUnavailable.into_response())?;
        match keys.recheck(&session.key_id, &session.secret_sha256) {
            Ok(principal) if may_sign_in(&principal) => Ok(Viewer {
                principal,
                session,
                session_id,
            }),
            Ok(_) | Err(_) => {
                // Revoked, gone, or no longer a console key: the session ends here.
                tracing::info!(key.id = %session.key_id, "console session ended: the key is no longer valid");
                console.sessions().end(&session_id);
                Err(to_login())
            }
        }
    }
}

/// A form whose `csrf` field matched the session's token (from any viewer; [`AdminForm`] is one
/// from a viewer that may act). The fields as sent, in order.
pub(crate) struct CheckedForm {
    /// Who posted it.
    pub viewer: Viewer,
    /// Every field but `csrf`.
    pub fields: Vec<(String, String)>,
}

impl CheckedForm {
    /// The first value of a field.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every value of a repeated field.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }
}

impl FromRequest<Console> for CheckedForm {
    type Rejection = Response;

    async fn from_request(request: Request, console: &Console) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, console).await?;
        let request = Request::from_parts(parts, body);
        let Form(mut fields) = Form::<Vec<(String, String)>>::from_request(request, console)
            .await
            .map_err(|_| {
                PageError::BadRequest("the form could not be read".into()).into_response()
            })?;
        let sent = fields
            .iter()
            .position(|(key, _)| key == "csrf")
            .map(|at| fields.remove(at).1);
        let valid = sent.is_some_and(|token| tokens_match(&token, &viewer.session.csrf));
        if !valid {
            tracing::info!(key.id = %viewer.session.key_id, "console form refused: missing or wrong CSRF token");
            return Err(PageError::Forbidden(
                "the form's security token is missing or out of date; reload the page and try again",
            )
            .into_response());
        }
        Ok(CheckedForm { viewer, fields })
    }
}

/// A [`CheckedForm`] from a viewer that may act (an admin key): any other viewer is refused
/// before the handler runs.
pub(crate) struct AdminForm(pub CheckedForm);

impl FromRequest<Console> for AdminForm {
    type Rejection = Response;

    async fn from_request(request: Request, console: &Console) -> Result<Self, Response> {
        let form = CheckedForm::from_request(request, console).await?;
        form.viewer
            .require_admin()
            .map_err(IntoResponse::into_response)?;
        Ok(AdminForm(form))
    }
}

/// Whether a principal may sign in to the console: `admin` or `read`.
fn may_sign_in(principal: &Principal) -> bool {
    principal.is_admin() || principal.scopes().contains(&Scope::Read)
}

/// Whether the request arrived over HTTPS as a proxy in front says.
pub(crate) fn arrived_over_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

/// `GET /console/login`: the sign-in form, with a fresh double-submit token.
pub(crate) async fn login_page(State(console): State<Console>, headers: HeaderMap) -> Response {
    login_form(&console, &headers, None, StatusCode::OK)
}

fn login_form(
    console: &Console,
    headers: &HeaderMap,
    problem: Option<&str>,
    status: StatusCode,
) -> Response {
    let token = random_token();
    let cookie = console.sessions().cookie(
        LOGIN_COOKIE,
        Some(token.clone()),
        arrived_over_https(headers),
    );
    let body = view::bare_page(
        "Sign in",
        html! {
            h1 { "Sign in to the Waybill console" }
            @if let Some(problem) = problem {
                p class="problem" role="alert" { (problem) }
            }
            form method="post" action={(BASE) "/login"} class="stack" {
                input type="hidden" name="csrf" value=(token);
                label for="key" { "API key (scope " code { "admin" } " or " code { "read" } ")" }
                input id="key" name="key" type="password" autocomplete="off" required
                    spellcheck="false" placeholder="wbk_…";
                button type="submit" { "Sign in" }
            }
            p class="hint" {
                "Create a key with " code { "waybill keys create --scope read" }
                " (or " code { "--scope admin" } "). The key is not stored by the console; "
                "the session ends when you sign out, after inactivity, or when the key is revoked."
            }
        },
    );
    (status, [(header::SET_COOKIE, cookie)], body).into_response()
}

/// The sign-in form's fields.
#[derive(serde::Deserialize)]
pub(crate) struct LoginForm {
    csrf: String,
    key: String,
}

/// `POST /console/login`: checks the form's token and the key, starts a session.
pub(crate) async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    let expected = cookie_value(cookies, LOGIN_COOKIE);
    if !expected.is_some_and(|token| tokens_match(&token, &form.csrf)) {
        return login_form(
            &console,
            &headers,
            Some("The sign-in form expired; please try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let Ok(keys) = console.parts().keys.current() else {
        return PageError::KeysUnavailable.into_response();
    };
    let presented = ApiKey::parse(&form.key);
    let principal = presented
        .as_ref()
        .map_err(|_| Denied::MalformedCredentials)
        .and_then(|key| keys.recheck(key.id(), &key.secret_sha256()));
    let (key, principal) = match (presented, principal) {
        (Ok(key), Ok(principal)) if may_sign_in(&principal) => (key, principal),
        (_, Ok(_)) => {
            return login_form(
                &console,
                &headers,
                Some("This key has neither the admin nor the read scope."),
                StatusCode::FORBIDDEN,
            );
        }
        (_, Err(denied)) => {
            tracing::info!(
                reason = denied.reason(),
                key.id = denied.key_id().map(|id| id.as_str()),
                "console sign-in refused"
            );
            return login_form(
                &console,
                &headers,
                Some("That key is not valid (unknown, wrong or revoked)."),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    tracing::info!(key.id = %key.id(), tenant = %principal.tenant(), "console sign-in");
    let session = console
        .sessions()
        .create(key.id().clone(), key.secret_sha256());
    let https = arrived_over_https(&headers);
    let sessions = console.sessions();
    let mut response = Redirect::to(&format!("{BASE}/overview")).into_response();
    let set = [
        sessions.cookie(SESSION_COOKIE, Some(session), https),
        sessions.cookie(LOGIN_COOKIE, None, https),
    ];
    for cookie in set {
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// `POST /console/logout`: ends the session.
pub(crate) async fn logout(
    State(console): State<Console>,
    headers: HeaderMap,
    form: CheckedForm,
) -> Response {
    console.sessions().end(&form.viewer.session_id);
    let cookie = console
        .sessions()
        .cookie(SESSION_COOKIE, None, arrived_over_https(&headers));
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&format!("{BASE}/login")),
    )
        .into_response()
}

/// `POST /console/tenant`: an admin's tenant filter (empty: every tenant).
pub(crate) async fn set_tenant_filter(
    State(console): State<Console>,
    AdminForm(form): AdminForm,
) -> Result<Response, PageError> {
    let raw = form.get("tenant").unwrap_or("").trim();
    let tenant = if raw.is_empty() {
        None
    } else {
        Some(
            TenantId::parse(raw)
                .map_err(|error| PageError::BadRequest(format!("tenant: {error}")))?,
        )
    };
    console
        .sessions()
        .set_tenant_filter(&form.viewer.session_id, tenant);
    let back = form
        .get("back")
        .filter(|path| path.starts_with(BASE) && !path.starts_with("//"))
        .unwrap_or("/console/overview");
    Ok(Redirect::to(back).into_response())
}

/// A hidden CSRF field for a form of this viewer.
pub(crate) fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.session.csrf); }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn https_is_what_the_proxy_says() {
        let mut headers = HeaderMap::new();
        assert!(!arrived_over_https(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(arrived_over_https(&headers));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=1.2.3.4;proto=https"),
        );
        assert!(arrived_over_https(&headers));
    }
}
