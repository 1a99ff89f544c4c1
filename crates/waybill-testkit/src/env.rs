//! The services the tests run against, and names no other test uses.

/// The administrative PostgreSQL URL: `WAYBILL_TEST_DATABASE_URL`, or the local default.
pub fn admin_database_url() -> String {
    std::env::var("WAYBILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The RabbitMQ URL: `WAYBILL_TEST_AMQP_URL`, or the local default.
pub fn amqp_url() -> String {
    std::env::var("WAYBILL_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Sixteen random hex digits.
pub fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A queue-name prefix no other test (or test run) uses, e.g. `t0123456789abcdef.`.
pub fn unique_prefix() -> String {
    format!("t{}.", random_suffix())
}
