//! API keys (`api_keys`, migration 0004): create, list, revoke, and read the whole key set as
//! one consistent snapshot for publishing. Only SHA-256 of a key's secret is ever written.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use waybill_core::TenantId;
use waybill_core::access::{ApiKey, KeyFormatError, KeyId, KeyRecord, Scope, SecretHash};

use crate::error::StoreError;
use crate::fetch::RunQuery;

/// A stored key: everything but the secret, which is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredApiKey {
    /// The public id (`wbk_<id>_…`).
    pub id: KeyId,
    /// The tenant the key acts for.
    pub tenant: TenantId,
    /// A label for people.
    pub name: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// SHA-256 of the secret.
    pub secret_sha256: SecretHash,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl StoredApiKey {
    /// The key as the in-memory key set holds it.
    pub fn to_record(&self) -> KeyRecord {
        KeyRecord {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            scopes: self.scopes.iter().copied().collect(),
            secret_sha256: self.secret_sha256,
            revoked: self.revoked_at.is_some(),
        }
    }
}

/// A new key to store (the caller drew the id and secret and hashed the secret).
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    /// The public id.
    pub id: &'a KeyId,
    /// The tenant.
    pub tenant: &'a TenantId,
    /// A label for people.
    pub name: &'a str,
    /// The scopes (at least one).
    pub scopes: &'a [Scope],
    /// SHA-256 of the secret.
    pub secret_sha256: &'a SecretHash,
}

/// Every key with the key set's version, read in one statement (one database snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetSnapshot {
    /// Drawn once per database: a different epoch is a different key set, not an older one.
    pub epoch: String,
    /// Bumped by every change to `api_keys`: a higher revision is newer.
    pub revision: i64,
    /// The database's clock when the snapshot was read.
    pub generated_at: DateTime<Utc>,
    /// Every key, revoked ones included, by id.
    pub keys: Vec<StoredApiKey>,
}

const COLUMNS: &str = "id, tenant, name, scopes, secret_sha256, created_at, revoked_at";

/// Creates a key with a fresh random id and secret and stores its hash: what `waybill keys
/// create` and the console's key page both do. Returns the whole key (show it once, then drop
/// it) and what was stored. Scopes are sorted and deduplicated; at least one is required.
pub async fn create_api_key(
    conn: &mut PgConnection,
    tenant: &TenantId,
    scopes: &[Scope],
    name: &str,
) -> Result<(ApiKey, StoredApiKey), StoreError> {
    let mut scopes = scopes.to_vec();
    scopes.sort_unstable();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(StoreError::Invalid("a key needs at least one scope"));
    }
    let key = generate_key().map_err(|_| StoreError::Invalid("a generated key was malformed"))?;
    let stored = insert_api_key(
        conn,
        &NewApiKey {
            id: key.id(),
            tenant,
            name,
            scopes: &scopes,
            secret_sha256: &key.secret_sha256(),
        },
    )
    .await?;
    Ok((key, stored))
}

/// A random key: a 12-character id of `a-z 0-9` and 32 random bytes as unpadded base64url.
fn generate_key() -> Result<ApiKey, KeyFormatError> {
    const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // ThreadRng is a CSPRNG seeded from the operating system.
    let mut rng = rand::rng();
    let id: String = (0..KeyId::LEN)
        .map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())]))
        .collect();
    let secret: [u8; 32] = rng.random();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    ApiKey::from_parts(KeyId::parse(&id)?, secret)
}

/// Stores a new key. Fails (a unique violation, not transient) if the id exists.
#[tracing::instrument(skip_all, fields(key.id = %key.id, tenant = %key.tenant))]
pub async fn insert_api_key(
    conn: &mut PgConnection,
    key: &NewApiKey<'_>,
) -> Result<StoredApiKey, StoreError> {
    let scopes: Vec<&str> = key.scopes.iter().map(|scope| scope.as_str()).collect();
    let row = sqlx::query(&format!(
        "insert into api_keys (id, tenant, name, scopes, secret_sha256)
         values ($1, $2, $3, $4, $5)
         returning {COLUMNS}"
    ))
    .bind(key.id.as_str())
    .bind(key.tenant.as_str())
    .bind(key.name)
    .bind(scopes)
    .bind(key.secret_sha256.as_bytes().as_slice())
    .fetch_one(conn)
    .await?;
    stored_key(&row)
}

/// Keys, oldest first; only `tenant`'s when given, only ids starting with `id_prefix` when given
/// (bare, without `wbk_`).
#[tracing::instrument(skip_all)]
pub async fn list_api_keys(
    conn: &mut PgConnection,
    tenant: Option<&TenantId>,
    id_prefix: Option<&str>,
) -> Result<Vec<StoredApiKey>, StoreError> {
    sqlx::query(&format!(
        "select {COLUMNS} from api_keys
         where ($1::text is null or tenant = $1)
           and ($2::text is null or starts_with(id, $2))
         order by created_at, id"
    ))
    .bind(tenant.map(TenantId::as_str))
    .bind(id_prefix)
    .fetch_all_with(conn, stored_key)
    .await
}

/// Revokes a key (idempotent: revoking twice keeps the first time). `None` if no key has the id.
#[tracing::instrument(skip_all, fields(key.id = %id))]
pub async fn revoke_api_key(
    conn: &mut PgConnection,
    id: &KeyId,
) -> Result<Option<StoredApiKey>, StoreError> {
    sqlx::query(&format!(
        "update api_keys set revoked_at = coalesce(revoked_at, now())
         where id = $1
         returning {COLUMNS}"
    ))
    .bind(id.as_str())
    .fetch_optional_with(conn, stored_key)
    .await
}

/// The whole key set and its version, from one statement, so the revision always describes
/// exactly the keys read with it (no transaction needed).
#[tracing::instrument(skip_all)]
pub async fn key_set_snapshot(conn: &mut PgConnection) -> Result<KeySetSnapshot, StoreError> {
    let rows = sqlx::query(
        "select r.epoch, r.revision, now() as generated_at,
                k.id, k.tenant, k.name, k.scopes, k.secret_sha256, k.created_at, k.revoked_at
         from api_keys_revision r
         left join api_keys k on true
         order by k.id",
    )
    .fetch_all(conn)
    .await?;
    let Some(first) = rows.first() else {
        return Err(StoreError::corrupt(
            "api_keys_revision",
            "the row is missing (migration 0004 inserts it)",
        ));
    };
    let mut keys = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<String>, _>("id")?.is_some() {
            keys.push(stored_key(row)?);
        }
    }
    Ok(KeySetSnapshot {
        epoch: first.try_get("epoch")?,
        revision: first.try_get("revision")?,
        generated_at: first.try_get("generated_at")?,
        keys,
    })
}

fn stored_key(row: &PgRow) -> Result<StoredApiKey, StoreError> {
    let id: String = row.try_get("id")?;
    let tenant: String = row.try_get("tenant")?;
    let scopes: Vec<String> = row.try_get("scopes")?;
    let hash: Vec<u8> = row.try_get("secret_sha256")?;
    Ok(StoredApiKey {
        id: KeyId::parse(&id).map_err(|e| StoreError::corrupt("api_keys.id", e))?,
        tenant: TenantId::parse(&tenant).map_err(|e| StoreError::corrupt("api_keys.tenant", e))?,
        name: row.try_get("name")?,
        scopes: scopes
            .iter()
            .map(|scope| Scope::parse(scope))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::corrupt("api_keys.scopes", e))?,
        secret_sha256: SecretHash::from_slice(&hash)
            .ok_or_else(|| StoreError::corrupt("api_keys.secret_sha256", "not 32 bytes"))?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let first = generate_key().unwrap();
        let second = generate_key().unwrap();
        assert_ne!(first.id(), second.id());
        let token = first.expose();
        assert_eq!(token.len(), 4 + 12 + 1 + 43);
        assert_eq!(ApiKey::parse(&token).unwrap(), first);
    }
}
