//! What a run left in Postgres, checked for effects that happened twice; and the recovery probe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use sqlx::Row;
use waybill_store::Store;

use waybill_e2e::stack::{SECRETS, Stack};

/// Effects that happened more than once, or state that contradicts its own history.
#[derive(Debug, Default, Clone, Copy)]
pub struct Effects {
    /// Event ids stored more than once for one tenant (the primary key should make it 0).
    pub duplicate_events: i64,
    /// Shipments whose `version` is not the number of their outbox rows, or whose outbox
    /// versions are not exactly 1..=version (one notification per change, no more, no less).
    pub version_outbox_mismatches: i64,
    /// Shipments whose current event is not in their own history.
    pub orphan_current_events: i64,
    /// Shipments and events stored (for the record).
    pub shipments: i64,
    pub events: i64,
}

impl Effects {
    /// Everything that must be 0.
    pub fn duplicated(&self) -> i64 {
        self.duplicate_events + self.version_outbox_mismatches + self.orphan_current_events
    }
}

/// Reads the effects checks from the stack's database (retrying while Postgres comes back).
pub async fn check(database_url: &str) -> anyhow::Result<Effects> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match try_check(database_url).await {
            Ok(effects) => return Ok(effects),
            Err(error) if Instant::now() < deadline => {
                eprintln!("effects check failed, retrying: {error:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn try_check(database_url: &str) -> anyhow::Result<Effects> {
    let store = Store::connect(database_url, 1).await?;
    let pool = store.pool();
    let count = |sql: &'static str| async move {
        let row = sqlx::query(sql).fetch_one(pool).await?;
        row.try_get::<i64, _>(0)
    };
    let effects = Effects {
        duplicate_events: count(
            "select count(*) from (select tenant, event_id from tracking_events
               group by tenant, event_id having count(*) > 1) d",
        )
        .await?,
        version_outbox_mismatches: count(
            "select count(*) from shipments s
               left join (select shipment_id, count(*) as n, min(version) as lo, max(version) as hi
                            from outbox group by shipment_id) o on o.shipment_id = s.id
              where coalesce(o.n, 0) <> s.version
                 or (s.version > 0 and (o.lo <> 1 or o.hi <> s.version))",
        )
        .await?,
        orphan_current_events: count(
            "select count(*) from shipments s
              where s.current_event_id is not null
                and not exists (select 1 from tracking_events e
                                 where e.shipment_id = s.id and e.event_id = s.current_event_id)",
        )
        .await?,
        shipments: count("select count(*) from shipments").await?,
        events: count("select count(*) from tracking_events").await?,
    };
    store.close().await;
    Ok(effects)
}

/// `503`s answered to the suite's own probes (not to the couriers), since last taken.
pub static PROBE_UNAVAILABLE: AtomicU64 = AtomicU64::new(0);

/// Counts a probe's answer if it was a `503`.
pub fn count_probe_answer(status: u16) {
    if status == 503 {
        PROBE_UNAVAILABLE.fetch_add(1, Ordering::Relaxed);
    }
}

/// Recovery: from `since` until a fresh webhook is both accepted by the ingress and stored by a
/// worker. Retries like a courier (every 100 ms) for at most `within`.
pub async fn probe(stack: &Stack, since: Instant, within: Duration) -> anyhow::Result<Duration> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let (source, profile_name, secret) = SECRETS[4];
    let profiles = stack.settings.profiles()?;
    let profile = profiles.get(profile_name).context("the waybill profile")?;
    let tracking_number = format!("PROBE{:010}", rand::random::<u32>());
    let body = serde_json::to_vec(&serde_json::json!({
        "carrier": "probe",
        "tracking_number": tracking_number,
        "status": "InTransit",
        "raw_status": "InTransit",
        "occurred_at": Utc::now().to_rfc3339(),
        "location": "Probe Depot",
    }))?;
    let deadline = since + within;
    loop {
        let mut request = http
            .post(format!("{}/v1/webhooks/{source}", stack.ingress_url()))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some((name, value)) = profile.sign(&body, secret, Utc::now()) {
            request = request.header(name, value);
        }
        if let Ok(response) = request.send().await {
            count_probe_answer(response.status().as_u16());
            if response.status().is_success() {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the ingress did not accept a webhook within {} s",
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        if stored(&stack.database_url(), &tracking_number)
            .await
            .unwrap_or(false)
        {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            bail!(
                "an accepted probe was not stored within {} s",
                within.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stored(database_url: &str, tracking_number: &str) -> anyhow::Result<bool> {
    let store = Store::connect(database_url, 1).await?;
    let row = sqlx::query(
        "select count(*) from tracking_events e join shipments s on s.id = e.shipment_id
          where s.tracking_number = $1",
    )
    .bind(tracking_number)
    .fetch_one(store.pool())
    .await?;
    store.close().await;
    Ok(row.try_get::<i64, _>(0)? > 0)
}

/// Terminates the worker's sessions (`application_name = 'waybill'`) on the stack's database;
/// returns how many were terminated.
pub async fn terminate_worker_backends(database_url: &str, database: &str) -> anyhow::Result<i64> {
    let store = Store::connect(database_url, 1).await?;
    let row = sqlx::query(
        "select count(pg_terminate_backend(pid)) from pg_stat_activity
          where datname = $1 and application_name = 'waybill' and pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_one(store.pool())
    .await?;
    store.close().await;
    Ok(row.try_get::<i64, _>(0)?)
}
