//! A fresh, migrated database per test, for this crate's tests and any other crate's that needs
//! Postgres. Compiled unconditionally (no feature to remember in each dependent's manifest); it
//! only ever drops the databases it created itself.
//!
//! ```ignore
//! let db = TestDatabase::create(&TestDatabase::admin_url()).await?;
//! let report = db.store().apply_batch(batch).await?;
//! db.drop_database().await?;
//! ```
//!
//! Databases are named `waybill_test_<pid>_<time>_<n>`; one a panicking test left behind can be
//! dropped by name.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor};

use crate::error::StoreError;
use crate::store::{Store, connect_one};

/// A uniquely named database created for one test (or one test binary), with its store.
#[derive(Debug)]
pub struct TestDatabase {
    store: Store,
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// The environment variable naming the administrative database URL.
    pub const ADMIN_URL_ENV: &'static str = "WAYBILL_TEST_DATABASE_URL";

    /// The URL used when [`TestDatabase::ADMIN_URL_ENV`] is not set.
    pub const DEFAULT_ADMIN_URL: &'static str = "postgres://postgres@127.0.0.1:5432/test";

    /// The administrative URL: the environment's, or the local default.
    pub fn admin_url() -> String {
        std::env::var(Self::ADMIN_URL_ENV).unwrap_or_else(|_| Self::DEFAULT_ADMIN_URL.to_owned())
    }

    /// Creates a database with a unique name through `admin_url` (whose user may create
    /// databases), migrates it, and connects a small store to it.
    pub async fn create(admin_url: &str) -> Result<TestDatabase, StoreError> {
        Self::create_with_pool(admin_url, 8).await
    }

    /// [`TestDatabase::create`] with a chosen pool size.
    pub async fn create_with_pool(
        admin_url: &str,
        max_connections: u32,
    ) -> Result<TestDatabase, StoreError> {
        let database = Self::create_empty(admin_url, max_connections).await?;
        database.store.migrate().await?;
        Ok(database)
    }

    /// Creates the database without migrating it (for tests of the migrations themselves).
    pub async fn create_empty(
        admin_url: &str,
        max_connections: u32,
    ) -> Result<TestDatabase, StoreError> {
        let name = unique_name();
        let mut admin = connect_one(admin_url).await?;
        admin
            .execute(format!(r#"create database "{name}""#).as_str())
            .await?;
        admin.close().await?;
        let url = with_database(admin_url, &name);
        let store = Store::connect(&url, max_connections).await?;
        Ok(TestDatabase {
            store,
            name,
            url,
            admin_url: admin_url.to_owned(),
        })
    }

    /// The store connected to the database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL of the database, for components configured by URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds `count` deliveries to `subscription`, due a minute ago, each as if fanned out from
    /// its own change (outbox ids 1 to `count`, body `{}`): a backlog for the dispatcher's
    /// tests, without merging the changes.
    pub async fn add_due_deliveries(
        &self,
        subscription: i64,
        count: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "insert into deliveries (subscription_id, outbox_id, tenant, webhook_id, body,
                                     next_attempt_at)
             select s.id, n, s.tenant, 'msg_' || n, convert_to('{}', 'UTF8'),
                    now() - interval '1 minute'
             from subscriptions s, generate_series(1, $2) as n
             where s.id = $1",
        )
        .bind(subscription)
        .bind(count)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }

    /// Closes the store and drops the database (forcibly ending any other session on it).
    pub async fn drop_database(self) -> Result<(), StoreError> {
        self.store.close().await;
        let mut admin = connect_one(&self.admin_url).await?;
        admin
            .execute(format!(r#"drop database if exists "{}" with (force)"#, self.name).as_str())
            .await?;
        admin.close().await?;
        Ok(())
    }
}

fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "waybill_test_{}_{:x}_{}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` with its database path replaced by `database` (query parameters kept).
fn with_database(url: &str, database: &str) -> String {
    let (without_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let authority_start = without_query.find("://").map_or(0, |i| i + 3);
    let base = match without_query[authority_start..].find('/') {
        Some(slash) => &without_query[..authority_start + slash],
        None => without_query,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_path_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}

/// A small deterministic generator (xorshift64*, no dependency), so a test or workload that
/// draws from it reproduces from its seed.
#[derive(Debug, Clone)]
pub struct Random(pub u64);

impl Random {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..bound`.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}
