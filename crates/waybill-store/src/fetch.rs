//! Running a query and decoding its rows with a module's row decoder (or counting the rows a
//! statement changed), so each query function says only its SQL, its binds and how a row reads.
//! A leaf: it depends on no other module of the crate but the error type.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};

use crate::error::StoreError;

/// [`Query::fetch_all`] and [`Query::fetch_optional`], each row decoded by `decode`, and
/// [`Query::execute`] answering how many rows it changed.
pub(crate) trait RunQuery {
    /// Every row, decoded.
    async fn fetch_all_with<T>(
        self,
        conn: &mut PgConnection,
        decode: impl Fn(&PgRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError>;

    /// The row if there is one, decoded.
    async fn fetch_optional_with<T>(
        self,
        conn: &mut PgConnection,
        decode: impl Fn(&PgRow) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError>;

    /// How many rows the statement changed.
    async fn execute_counting(self, conn: &mut PgConnection) -> Result<u64, StoreError>;
}

impl RunQuery for Query<'_, Postgres, PgArguments> {
    async fn fetch_all_with<T>(
        self,
        conn: &mut PgConnection,
        decode: impl Fn(&PgRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.fetch_all(conn).await?;
        rows.iter().map(decode).collect()
    }

    async fn fetch_optional_with<T>(
        self,
        conn: &mut PgConnection,
        decode: impl Fn(&PgRow) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let row = self.fetch_optional(conn).await?;
        row.as_ref().map(decode).transpose()
    }

    async fn execute_counting(self, conn: &mut PgConnection) -> Result<u64, StoreError> {
        Ok(self.execute(conn).await?.rows_affected())
    }
}
