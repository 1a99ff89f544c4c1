//! The connection pool and its settings.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres};
use tracing::Instrument;
use waybill_core::{CarrierCode, TenantId, TrackingNumber};

use crate::batch::{BatchReport, InboundBatch};
use crate::error::StoreError;
use waybill_api::shipments::{ShipmentSummary, ShipmentView};

/// A transaction on a pooled connection. Pass `&mut *tx` to the store's functions, then
/// `tx.commit()`; dropping it rolls back.
pub type Transaction = sqlx::Transaction<'static, Postgres>;

/// A connection checked out of the pool. Pass `&mut *conn` to the store's functions.
pub type PooledConnection = sqlx::pool::PoolConnection<Postgres>;

/// How long a request for a pooled connection waits before failing (transiently).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Server-side limit on one statement. A batch's statements take milliseconds; anything close
/// to this is a lock pile-up that is better failed and retried.
const STATEMENT_TIMEOUT: &str = "30s";

/// Server-side limit on a session sitting inside a transaction doing nothing. Waybill never
/// idles inside a transaction on purpose; this bounds the damage if a connection is ever
/// leaked mid-transaction (the sqlx 0.8 dropped-future bug): its locks go within a minute
/// instead of blocking every batch for that shipment until a restart.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";

/// The Postgres store: a connection pool plus the settings every connection gets.
///
/// Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// The options from the URL plus `application_name`, without the session timeouts (the
    /// migration connection must be free to run long statements).
    base_options: PgConnectOptions,
}

impl Store {
    /// Connects a pool of up to `max_connections` to `url` (a `postgres://` URL; libpq's
    /// `sslmode` and other parameters apply) and checks that one connection works.
    ///
    /// Every connection gets `application_name=waybill` (unless the URL sets one), a
    /// statement timeout and an idle-in-transaction timeout; acquiring a connection times out
    /// after a few seconds with a transient error.
    #[tracing::instrument(skip_all, fields(db.max_connections = max_connections))]
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let mut base_options = PgConnectOptions::from_str(url)?;
        if !url.contains("application_name=") {
            base_options = base_options.application_name("waybill");
        }
        let session_options = base_options.clone().options([
            ("statement_timeout", STATEMENT_TIMEOUT),
            (
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT,
            ),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A broken connection fails its statement with a transient error and the batch is
            // retried; pinging before every checkout would add a round trip to every batch.
            .test_before_acquire(false)
            .connect_with(session_options)
            .await?;
        Ok(Store { pool, base_options })
    }

    /// Brings the schema up to date (see [`crate::migrate`]). Safe to run from several
    /// processes at once: they serialise on an advisory lock.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let connection = self.base_options.connect().await?;
        crate::migrate::run(connection).await
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts a transaction on a pooled connection.
    pub async fn begin(&self) -> Result<Transaction, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Checks out a pooled connection (for reads outside a transaction).
    pub async fn acquire(&self) -> Result<PooledConnection, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// Checks that the database answers (for `/readyz`).
    #[tracing::instrument(skip_all)]
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await?;
        connection.ping().await?;
        Ok(())
    }

    /// Applies a batch in its own transaction and commits it, on a spawned task.
    ///
    /// Spawning is the point: if the caller's future is dropped (shutdown, a timeout), the
    /// transaction still runs to its commit or rollback instead of being abandoned mid-way
    /// with its connection, locks and all (the sqlx 0.8 dropped-future hazard). When this
    /// returns `Ok` the batch is committed; on `Err` it was rolled back.
    #[tracing::instrument(
        skip_all,
        fields(batch.items = batch.items.len(), batch.registrations = batch.registrations.len())
    )]
    pub async fn apply_batch(&self, batch: InboundBatch) -> Result<BatchReport, StoreError> {
        let pool = self.pool.clone();
        let work = async move {
            let mut transaction = pool.begin().await?;
            match crate::apply_batch(&mut transaction, &batch).await {
                Ok(report) => {
                    transaction.commit().await?;
                    Ok(report)
                }
                Err(error) => {
                    if let Err(rollback) = transaction.rollback().await {
                        tracing::debug!(error = %rollback, "rollback after a failed batch failed");
                    }
                    Err(error)
                }
            }
        };
        tokio::spawn(work.instrument(tracing::Span::current())).await?
    }

    /// [`get_shipment`](crate::get_shipment) on a pooled connection.
    pub async fn get_shipment(
        &self,
        tenant: &TenantId,
        carrier: &CarrierCode,
        tracking_number: &TrackingNumber,
    ) -> Result<Option<ShipmentView>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        crate::queries::get_shipment(&mut connection, tenant, carrier, tracking_number).await
    }

    /// [`find_by_order_number`](crate::find_by_order_number) on a pooled connection.
    pub async fn find_by_order_number(
        &self,
        tenant: &TenantId,
        order_number: &str,
    ) -> Result<Vec<ShipmentSummary>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        crate::queries::find_by_order_number(&mut connection, tenant, order_number).await
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Opens one connection to `url` without a pool (administration: creating databases).
pub(crate) async fn connect_one(url: &str) -> Result<PgConnection, StoreError> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name("waybill")
        .connect()
        .await?)
}
