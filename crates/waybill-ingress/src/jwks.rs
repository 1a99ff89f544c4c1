//! Public keys fetched from a source's JWKS URL, kept fresh outside the request path.
//!
//! Each source with a `jwks_url` has one background task that fetches the document at start
//! and every `jwks_refresh_secs`, and earlier when a request names a key id the current set does
//! not have (a carrier that rotated its key) — but never more often than [`MIN_REFRESH`], so a
//! sender cannot make the ingress hammer the key server with made-up key ids. A failed fetch
//! keeps the previous set. A request never waits for the key server longer than
//! [`UNKNOWN_KEY_WAIT`]: if the key is still unknown it is answered 503 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use waybill_carriers::KeySet;
use waybill_config::SourceSettings;

/// The least time between two fetches of one source's JWKS triggered by unknown key ids.
pub const MIN_REFRESH: Duration = Duration::from_secs(30);

/// The longest a request with an unknown key id waits for a refresh before its 503.
pub const UNKNOWN_KEY_WAIT: Duration = Duration::from_secs(2);

/// The most a fetch may take, connection to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest JWKS document read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// The key sets of every source that has a `jwks_url`.
#[derive(Clone, Default)]
pub struct JwksCache {
    sources: Arc<HashMap<String, Arc<SourceKeys>>>,
}

struct SourceKeys {
    current: watch::Receiver<Arc<KeySet>>,
    wake: Notify,
}

impl JwksCache {
    /// Starts one refresh task per source with a `jwks_url`; they stop on `shutdown`.
    pub fn start(sources: &[SourceSettings], shutdown: &CancellationToken) -> JwksCache {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let mut map = HashMap::new();
        for source in sources {
            let Some(url) = source.jwks_url.clone() else {
                continue;
            };
            let (sender, receiver) = watch::channel(Arc::new(KeySet::default()));
            let keys = Arc::new(SourceKeys {
                current: receiver,
                wake: Notify::new(),
            });
            tokio::spawn(refresh_loop(
                client.clone(),
                source.id.as_str().to_owned(),
                url,
                Duration::from_secs(source.jwks_refresh_secs.max(1)),
                sender,
                keys.clone(),
                shutdown.clone(),
            ));
            map.insert(source.id.as_str().to_owned(), keys);
        }
        JwksCache {
            sources: Arc::new(map),
        }
    }

    /// The source's current key set, if it has a JWKS URL.
    pub fn keys(&self, source: &str) -> Option<Arc<KeySet>> {
        self.sources
            .get(source)
            .map(|keys| keys.current.borrow().clone())
    }

    /// Asks for a refresh (honoured at most every [`MIN_REFRESH`]) and waits up to
    /// [`UNKNOWN_KEY_WAIT`] for a new key set; `None` if none arrived in time.
    pub async fn refreshed(&self, source: &str) -> Option<Arc<KeySet>> {
        let keys = self.sources.get(source)?;
        let mut current = keys.current.clone();
        current.mark_unchanged();
        keys.wake.notify_one();
        match tokio::time::timeout(UNKNOWN_KEY_WAIT, current.changed()).await {
            Ok(Ok(())) => Some(current.borrow().clone()),
            _ => None,
        }
    }
}

async fn refresh_loop(
    client: reqwest::Client,
    source: String,
    url: String,
    every: Duration,
    sender: watch::Sender<Arc<KeySet>>,
    keys: Arc<SourceKeys>,
    shutdown: CancellationToken,
) {
    let mut last_fetch: Option<Instant> = None;
    loop {
        let due = last_fetch.is_none_or(|at| at.elapsed() >= MIN_REFRESH);
        if due {
            last_fetch = Some(Instant::now());
            match fetch(&client, &url).await {
                Ok((set, skipped)) => {
                    tracing::debug!(source = %source, keys = set.len(), skipped, "JWKS fetched");
                    metrics::counter!("waybill_jwks_fetches_total", "source" => source.clone(), "outcome" => "ok").increment(1);
                    sender.send_replace(Arc::new(set));
                }
                Err(reason) => {
                    tracing::warn!(source = %source, reason = %reason, "JWKS fetch failed; keeping the previous keys");
                    metrics::counter!("waybill_jwks_fetches_total", "source" => source.clone(), "outcome" => "error").increment(1);
                }
            }
        }
        let wait = if due {
            every
        } else {
            // Woken too early: wait out the rest of the minimum interval first.
            MIN_REFRESH.saturating_sub(last_fetch.map_or(Duration::ZERO, |at| at.elapsed()))
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => last_fetch = None,
            () = keys.wake.notified() => {}
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<(KeySet, usize), String> {
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|error| format!("request failed: {error}"))?;
    if !response.status().is_success() {
        return Err(format!("the key server answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| format!("reading the body failed: {error}"))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "the document is larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    KeySet::from_jwks(&body).map_err(|error| error.to_string())
}
