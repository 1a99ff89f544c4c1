//! HTTP subscriptions: create, list, enable and disable, rotate the signing secret, remove.
//! The rules (what a secret looks like, which destinations are allowed) are the caller's; this
//! module reads and writes what it decides.

use std::fmt;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgRow, PgTypeInfo, PgValueRef};
use sqlx::{PgConnection, Postgres, Row};
use waybill_core::{CarrierCode, Status, TenantId};

use crate::decode::parse_status;
use crate::error::StoreError;
use crate::fetch::RunQuery;

/// A signing secret as stored (`whsec_<base64>`), held in a redacting [`SecretString`] (wiped
/// when dropped). Its `Debug` never shows it.
#[derive(Clone)]
pub struct SecretText(SecretString);

impl SecretText {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> SecretText {
        SecretText(SecretString::from(secret.into()))
    }

    /// The secret itself, for signing or for showing once to its owner.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for SecretText {
    fn eq(&self, other: &SecretText) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for SecretText {}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// A secret reads from a `text` column, straight into its wrapper.
impl sqlx::Type<Postgres> for SecretText {
    fn type_info() -> PgTypeInfo {
        <String as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <String as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for SecretText {
    fn decode(value: PgValueRef<'r>) -> Result<SecretText, BoxDynError> {
        Ok(SecretText::new(
            <String as sqlx::Decode<'r, Postgres>>::decode(value)?,
        ))
    }
}

/// Why a subscription is disabled (the `disabled_reason` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisabledReason {
    /// By `waybill subscriptions disable`.
    Manual,
    /// The receiver answered `410 Gone`.
    Gone,
    /// Every attempt failed for longer than `fanout.disable_after`.
    Failing,
}

impl DisabledReason {
    /// The stored name (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Manual => "manual",
            DisabledReason::Gone => "gone",
            DisabledReason::Failing => "failing",
        }
    }

    pub(crate) fn parse(raw: &str) -> Result<DisabledReason, StoreError> {
        match raw {
            "manual" => Ok(DisabledReason::Manual),
            "gone" => Ok(DisabledReason::Gone),
            "failing" => Ok(DisabledReason::Failing),
            other => Err(StoreError::corrupt("subscriptions.disabled_reason", other)),
        }
    }
}

/// A subscription to store.
#[derive(Debug, Clone)]
pub struct NewSubscription<'a> {
    /// The tenant whose changes it receives.
    pub tenant: &'a TenantId,
    /// The destination (validated by the caller).
    pub url: &'a str,
    /// A label for people.
    pub description: &'a str,
    /// Only these carriers; empty: all.
    pub carriers: &'a [CarrierCode],
    /// Only changes to these statuses; empty: all.
    pub statuses: &'a [Status],
    /// The signing secret (`whsec_…`).
    pub secret: &'a SecretText,
}

/// A stored subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its id.
    pub id: i64,
    /// The tenant whose changes it receives.
    pub tenant: TenantId,
    /// The destination.
    pub url: String,
    /// A label for people.
    pub description: String,
    /// Only these carriers; empty: all.
    pub carriers: Vec<CarrierCode>,
    /// Only changes to these statuses; empty: all.
    pub statuses: Vec<Status>,
    /// The current signing secret.
    pub secret: SecretText,
    /// The secret before the last rotation, still signed with until
    /// [`Subscription::previous_secret_expires_at`].
    pub previous_secret: Option<SecretText>,
    /// When the previous secret stops being signed with.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Whether deliveries are attempted.
    pub enabled: bool,
    /// Why it is disabled (`None` while enabled).
    pub disabled_reason: Option<DisabledReason>,
    /// When it was disabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// The first failed attempt since the last success.
    pub failing_since: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, tenant, url, description, carriers, statuses, secret, previous_secret,
     previous_secret_expires_at, enabled, disabled_reason, disabled_at, failing_since,
     created_at, updated_at";

/// Stores a new, enabled subscription.
#[tracing::instrument(skip_all, fields(tenant = %subscription.tenant))]
pub async fn insert_subscription(
    conn: &mut PgConnection,
    subscription: &NewSubscription<'_>,
) -> Result<Subscription, StoreError> {
    let carriers: Vec<&str> = subscription
        .carriers
        .iter()
        .map(CarrierCode::as_str)
        .collect();
    let statuses: Vec<&str> = subscription.statuses.iter().map(|s| s.as_str()).collect();
    let row = sqlx::query(&format!(
        "insert into subscriptions (tenant, url, description, carriers, statuses, secret)
         values ($1, $2, $3, $4, $5, $6)
         returning {COLUMNS}"
    ))
    .bind(subscription.tenant.as_str())
    .bind(subscription.url)
    .bind(subscription.description)
    .bind(carriers)
    .bind(statuses)
    .bind(subscription.secret.expose())
    .fetch_one(conn)
    .await?;
    subscription_from(&row)
}

/// Subscriptions by id; only `tenant`'s when given.
#[tracing::instrument(skip_all)]
pub async fn list_subscriptions(
    conn: &mut PgConnection,
    tenant: Option<&TenantId>,
) -> Result<Vec<Subscription>, StoreError> {
    sqlx::query(&format!(
        "select {COLUMNS} from subscriptions
         where ($1::text is null or tenant = $1)
         order by id"
    ))
    .bind(tenant.map(TenantId::as_str))
    .fetch_all_with(conn, subscription_from)
    .await
}

/// One subscription.
#[tracing::instrument(skip_all, fields(subscription.id = id))]
pub async fn get_subscription(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<Subscription>, StoreError> {
    sqlx::query(&format!(
        "select {COLUMNS} from subscriptions where id = $1"
    ))
    .bind(id)
    .fetch_optional_with(conn, subscription_from)
    .await
}

/// Disables a subscription for `reason`. A subscription already disabled keeps its first
/// reason and time. `None` if there is no such subscription.
#[tracing::instrument(skip_all, fields(subscription.id = id, reason = reason.as_str()))]
pub async fn disable_subscription(
    conn: &mut PgConnection,
    id: i64,
    reason: DisabledReason,
    now: DateTime<Utc>,
) -> Result<Option<Subscription>, StoreError> {
    sqlx::query(
        "update subscriptions
         set enabled = false, disabled_reason = $2, disabled_at = $3, updated_at = now()
         where id = $1 and enabled",
    )
    .bind(id)
    .bind(reason.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    get_subscription(conn, id).await
}

/// Enables a subscription and forgets its failures; its pending deliveries are due at `now`
/// (rather than at the later times of their schedules: whoever enables it has usually just
/// fixed the receiver). `None` if there is no such subscription.
#[tracing::instrument(skip_all, fields(subscription.id = id))]
pub async fn enable_subscription(
    conn: &mut PgConnection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Option<Subscription>, StoreError> {
    sqlx::query(&format!(
        "with pending as (
             update deliveries set next_attempt_at = least(next_attempt_at, $2)
             where subscription_id = $1 and status = 'pending')
         update subscriptions
         set enabled = true, disabled_reason = null, disabled_at = null, failing_since = null,
             updated_at = now()
         where id = $1
         returning {COLUMNS}"
    ))
    .bind(id)
    .bind(now)
    .fetch_optional_with(conn, subscription_from)
    .await
}

/// Replaces the signing secret with `secret`; the old one is still signed with until
/// `previous_valid_until`. `None` if there is no such subscription.
#[tracing::instrument(skip_all, fields(subscription.id = id))]
pub async fn rotate_secret(
    conn: &mut PgConnection,
    id: i64,
    secret: &SecretText,
    previous_valid_until: DateTime<Utc>,
) -> Result<Option<Subscription>, StoreError> {
    sqlx::query(&format!(
        "update subscriptions
         set previous_secret = secret, previous_secret_expires_at = $3, secret = $2,
             updated_at = now()
         where id = $1
         returning {COLUMNS}"
    ))
    .bind(id)
    .bind(secret.expose())
    .bind(previous_valid_until)
    .fetch_optional_with(conn, subscription_from)
    .await
}

/// Removes a subscription with all its deliveries, dead ones included. Returns how many
/// deliveries went with it, or `None` if there is no such subscription.
#[tracing::instrument(skip_all, fields(subscription.id = id))]
pub async fn delete_subscription(
    conn: &mut PgConnection,
    id: i64,
) -> Result<Option<u64>, StoreError> {
    let row = sqlx::query(
        "with gone as (delete from subscriptions where id = $1 returning id)
         select (select count(*) from gone) as subscriptions,
                (select count(*) from deliveries where subscription_id = $1) as deliveries",
    )
    .bind(id)
    .fetch_one(conn)
    .await?;
    if crate::decode::count(&row, "subscriptions")? == 0 {
        return Ok(None);
    }
    Ok(Some(crate::decode::count(&row, "deliveries")?))
}

/// Disabled subscriptions by reason (for the `waybill_subscriptions_disabled` gauge).
pub async fn count_disabled_subscriptions(
    conn: &mut PgConnection,
) -> Result<Vec<(DisabledReason, u64)>, StoreError> {
    sqlx::query(
        "select disabled_reason, count(*) as n from subscriptions
         where not enabled group by disabled_reason",
    )
    .fetch_all_with(conn, |row| {
        let reason: String = row.try_get("disabled_reason")?;
        Ok((
            DisabledReason::parse(&reason)?,
            crate::decode::count(row, "n")?,
        ))
    })
    .await
}

fn subscription_from(row: &PgRow) -> Result<Subscription, StoreError> {
    let tenant: String = row.try_get("tenant")?;
    let carriers: Vec<String> = row.try_get("carriers")?;
    let statuses: Vec<String> = row.try_get("statuses")?;
    let reason: Option<String> = row.try_get("disabled_reason")?;
    Ok(Subscription {
        id: row.try_get("id")?,
        tenant: TenantId::parse(&tenant)
            .map_err(|e| StoreError::corrupt("subscriptions.tenant", e))?,
        url: row.try_get("url")?,
        description: row.try_get("description")?,
        carriers: carriers
            .iter()
            .map(|c| CarrierCode::parse(c))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::corrupt("subscriptions.carriers", e))?,
        statuses: statuses
            .iter()
            .map(|s| parse_status(s))
            .collect::<Result<_, _>>()?,
        secret: SecretText::new(row.try_get::<String, _>("secret")?),
        previous_secret: row
            .try_get::<Option<String>, _>("previous_secret")?
            .map(SecretText::new),
        previous_secret_expires_at: row.try_get("previous_secret_expires_at")?,
        enabled: row.try_get("enabled")?,
        disabled_reason: reason.as_deref().map(DisabledReason::parse).transpose()?,
        disabled_at: row.try_get("disabled_at")?,
        failing_since: row.try_get("failing_since")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_text_never_shows_its_secret_in_debug() {
        let secret = "whsec_c2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw==";
        let text = SecretText::new(secret);
        assert!(!format!("{text:?}").contains("c2VjcmV0"));
        assert!(!format!("{:?}", Some(text.clone())).contains("c2VjcmV0"));
        assert_eq!(text.expose(), secret);
        assert_eq!(text, SecretText::new(secret));
        assert_ne!(text, SecretText::new("whsec_b3RoZXI="));
    }
}
