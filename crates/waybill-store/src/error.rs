//! The store's one error type and the retry decision that goes with it.

/// Everything that can go wrong in the store.
///
/// [`StoreError::is_transient`] is the worker's retry decision: a transient error is retried
/// with backoff (the message is nacked and redelivered); anything else will fail the same way
/// again and goes to the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query, connection or pool error from the database driver.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// Applying the embedded migrations failed.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// A stored value could not be read back into a domain type (a status nobody knows, an
    /// event id of the wrong shape). Points at data written outside Waybill or by a newer
    /// version; retrying does not help.
    #[error("stored {what} is not valid: {detail}")]
    Corrupt {
        /// Which column or value.
        what: &'static str,
        /// Why it did not parse.
        detail: String,
    },

    /// The caller asked for something the store refuses before touching the database (e.g. a
    /// key without a scope).
    #[error("{0}")]
    Invalid(&'static str),

    /// The task that ran a batch transaction panicked or was cancelled by a runtime shutdown.
    #[error("the batch task did not complete")]
    Task(#[from] tokio::task::JoinError),
}

impl StoreError {
    /// Whether retrying the same work later may succeed: lost connections, I/O and TLS errors,
    /// pool timeouts, deadlocks, serialization failures, statement timeouts and a server that is
    /// shutting down or full. Constraint violations, bad data and bugs are not transient.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(error) => sqlx_error_is_transient(error),
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(error)) => {
                sqlx_error_is_transient(error)
            }
            StoreError::Migrate(_) => false,
            StoreError::Corrupt { .. } | StoreError::Invalid(_) => false,
            // A cancelled task means the runtime is shutting down: the work was not done and
            // another worker can do it. A panic will panic again.
            StoreError::Task(error) => error.is_cancelled(),
        }
    }

    pub(crate) fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

fn sqlx_error_is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(database) => database
            .code()
            .is_some_and(|code| sqlstate_is_transient(&code)),
        _ => false,
    }
}

/// SQLSTATEs worth retrying (PostgreSQL appendix A).
fn sqlstate_is_transient(code: &str) -> bool {
    // Class 08: connection exception; class 53: insufficient resources (too many connections,
    // out of memory, disk full — the operator fixes it, the message waits).
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "40001" // serialization_failure
                | "40P01" // deadlock_detected
                | "55P03" // lock_not_available (lock_timeout)
                | "57014" // query_canceled (statement_timeout)
                | "57P01" // admin_shutdown
                | "57P02" // crash_shutdown
                | "57P03" // cannot_connect_now (starting up, in recovery)
                | "25P03" // idle_in_transaction_session_timeout
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_class_errors_are_transient_and_data_errors_are_not() {
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(
            StoreError::Database(sqlx::Error::Io(std::io::Error::from(
                std::io::ErrorKind::ConnectionReset
            )))
            .is_transient()
        );
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::corrupt("status", "Teleported").is_transient());
        assert!(sqlstate_is_transient("40P01"));
        assert!(sqlstate_is_transient("08006"));
        assert!(!sqlstate_is_transient("23505"));
        assert!(!sqlstate_is_transient("22P02"));
    }
}
