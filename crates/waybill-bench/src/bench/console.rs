//! `waybill-bench bench --console EVERY`: an operator console kept open on the bench's worker
//! while the phases run, to measure what an open console costs the pipeline. It signs in with an
//! admin key created in the run's database and fetches what an open overview fetches
//! (`/console/overview/live`, with its metric reads, passive queue declares and Postgres
//! queries) every `EVERY`, as the page's in-place refresh does. While the worker is stopped (the
//! ingress-only phase) the refreshes fail and are counted; the watcher signs in again when the
//! worker is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, HeaderMap, SET_COOKIE};
use tokio::task::JoinHandle;
use waybill_core::TenantId;
use waybill_core::access::Scope;

/// Refreshes made and failed by one watcher.
#[derive(Debug, Default)]
pub struct ConsoleCounts {
    /// Overview refreshes answered 200.
    pub refreshes: AtomicU64,
    /// Sign-ins or refreshes that failed (the worker down, a refused session).
    pub failures: AtomicU64,
}

/// A console page kept open in the background; stopped when dropped.
pub struct ConsoleWatcher {
    task: JoinHandle<()>,
    counts: Arc<ConsoleCounts>,
}

impl ConsoleWatcher {
    /// Creates an admin key in the run's database and starts refreshing the overview of the
    /// worker at `worker` (`host:port`) every `every`.
    pub async fn start(
        database_url: &str,
        worker: std::net::SocketAddr,
        every: Duration,
    ) -> anyhow::Result<ConsoleWatcher> {
        let key = admin_key(database_url).await?;
        let counts = Arc::new(ConsoleCounts::default());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        let base = format!("http://{worker}/console");
        let task = tokio::spawn(refresh_loop(client, base, key, every, counts.clone()));
        Ok(ConsoleWatcher { task, counts })
    }

    /// The refreshes made so far, and the failed ones.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.refreshes.load(Ordering::Relaxed),
            self.counts.failures.load(Ordering::Relaxed),
        )
    }
}

impl Drop for ConsoleWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn admin_key(database_url: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(database_url).await?;
    let (key, _) = waybill_store::keys::create_api_key(
        &mut conn,
        &TenantId::default_tenant(),
        &[Scope::Admin],
        "bench-console",
    )
    .await?;
    conn.close().await?;
    Ok(key.expose())
}

async fn refresh_loop(
    client: reqwest::Client,
    base: String,
    key: String,
    every: Duration,
    counts: Arc<ConsoleCounts>,
) {
    let mut session: Option<String> = None;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if session.is_none() {
            session = sign_in(&client, &base, &key).await;
        }
        let refreshed = match &session {
            Some(cookie) => refresh(&client, &base, cookie).await,
            None => false,
        };
        if refreshed {
            counts.refreshes.fetch_add(1, Ordering::Relaxed);
        } else {
            counts.failures.fetch_add(1, Ordering::Relaxed);
            session = None;
        }
    }
}

/// The sign-in form's double-submit token, then the key: the session cookie, or `None`.
async fn sign_in(client: &reqwest::Client, base: &str, key: &str) -> Option<String> {
    let form = client.get(format!("{base}/login")).send().await.ok()?;
    let login_cookie = cookies(form.headers());
    let page = form.text().await.ok()?;
    let token = hidden_value(&page, "csrf")?;
    let answer = client
        .post(format!("{base}/login"))
        .header(COOKIE, login_cookie)
        .form(&[("csrf", token.as_str()), ("key", key)])
        .send()
        .await
        .ok()?;
    (answer.status() == StatusCode::SEE_OTHER).then(|| cookies(answer.headers()))
}

async fn refresh(client: &reqwest::Client, base: &str, cookie: &str) -> bool {
    let answer = client
        .get(format!("{base}/overview/live"))
        .header(COOKIE, cookie)
        .header("HX-Request", "true")
        .send()
        .await;
    match answer {
        Ok(answer) if answer.status() == StatusCode::OK => answer.bytes().await.is_ok(),
        _ => false,
    }
}

/// The `name=value` pairs of every `Set-Cookie`, as one `Cookie` header value (emptied cookies
/// left out).
fn cookies(headers: &HeaderMap) -> String {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next())
        .filter(|pair| {
            pair.split_once('=')
                .is_some_and(|(_, value)| !value.is_empty())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The value of the form field `name="<name>" value="…"` in a page.
fn hidden_value(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    let length = page[start..].find('"')?;
    Some(page[start..start + length].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_keeps_the_pairs_and_drops_attributes_and_emptied_ones() {
        let mut headers = HeaderMap::new();
        headers.append(
            SET_COOKIE,
            "waybill_console=abc; HttpOnly; SameSite=Strict; Path=/console"
                .parse()
                .unwrap(),
        );
        headers.append(
            SET_COOKIE,
            "waybill_console_login=; Max-Age=0".parse().unwrap(),
        );
        headers.append(SET_COOKIE, "other=x=y; Path=/".parse().unwrap());
        assert_eq!(cookies(&headers), "waybill_console=abc; other=x=y");
    }

    #[test]
    fn hidden_value_reads_the_named_field_only() {
        let page = r#"<input type="hidden" name="other" value="no"><input type="hidden" name="csrf" value="t0k-en_">"#;
        assert_eq!(hidden_value(page, "csrf").as_deref(), Some("t0k-en_"));
        assert_eq!(hidden_value(page, "missing"), None);
        assert_eq!(
            hidden_value(r#"name="csrf" value="unterminated"#, "csrf"),
            None
        );
    }
}
