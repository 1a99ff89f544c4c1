//! The pipeline suite's app: the standard courier sources (`waybill_e2e::sources`) and a 64 KiB
//! body limit, built by `waybill_e2e::TestApp::builder`.

pub use waybill_e2e::sign::hmac_hex;
pub use waybill_e2e::sources::*;
pub use waybill_e2e::{AppBuilder, TestApp};

/// API keys are not required here (the tenancy suite covers them); small body and pool.
const PIPELINE: &str = r#"
auth = { mode = "none" }
[database]
max_connections = 4
[ingress]
body_limit_bytes = 65536
"#;

/// The pipeline suite's builder: add components or configuration, then `start()`.
pub fn app() -> AppBuilder {
    TestApp::builder().couriers().config(PIPELINE)
}

/// Options for [`spawn_app_with`].
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Worker processes to run (0: ingress only, nothing consumes).
    pub workers: usize,
    /// Overrides the AMQP URL of the ingress (e.g. a closed port).
    pub ingress_amqp_url: Option<String>,
    /// Extra TOML merged over the configuration.
    pub extra_toml: String,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            workers: 1,
            ingress_amqp_url: None,
            extra_toml: String::new(),
        }
    }
}

pub async fn spawn_app() -> TestApp {
    app().start().await
}

pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let mut builder = app().workers(options.workers).config(&options.extra_toml);
    if let Some(url) = &options.ingress_amqp_url {
        builder = builder.ingress_amqp_url(url);
    }
    builder.start().await
}
