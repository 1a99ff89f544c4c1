//! Running a query and decoding its rows with a module's row decoder, so each query function
//! says only its SQL, its binds and how a row reads. A leaf: it depends on no other module of
//! the crate but the error type.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};

use crate::error::StoreError;

/// [`Query::fetch_all`] and [`Query::fetch_optional`], each row decoded by `decode`.
pub(crate) trait FetchDecoded {
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
}

impl FetchDecoded for Query<'_, Postgres, PgArguments> {
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
}
