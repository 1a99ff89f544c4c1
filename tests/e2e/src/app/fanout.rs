//! The downstream side of a [`TestApp`]: subscriptions, deliveries, the outbox and queues bound
//! to the events exchanges.

use waybill_config::ExposeSecret;
use waybill_store::fanout::{self, DeliveryRecord};

use super::TestApp;
use crate::{Tap, env};

impl TestApp {
    /// Posts one event in Waybill's own format to `source` (signed), expecting 200.
    pub async fn post_event(&self, source: &str, event: &serde_json::Value) {
        let body = serde_json::to_vec(event).expect("JSON");
        let response = self.post_signed(source, &body).await;
        assert_eq!(response.status(), 200, "the ingress accepted the event");
    }

    /// Subscribes `url` for the default tenant through the CLI's library; returns the id and
    /// the secret.
    pub async fn subscribe(
        &self,
        url: &str,
        carriers: &[&str],
        statuses: &[&str],
    ) -> (i64, String) {
        self.subscribe_tenant(url, "default", carriers, statuses)
            .await
    }

    /// [`TestApp::subscribe`] for another tenant.
    pub async fn subscribe_tenant(
        &self,
        url: &str,
        tenant: &str,
        carriers: &[&str],
        statuses: &[&str],
    ) -> (i64, String) {
        let (subscription, secret) = waybill_cli::subscriptions::add(
            &self.settings,
            &waybill_cli::subscriptions::AddSubscription {
                url: url.to_owned(),
                tenant: tenant.to_owned(),
                carriers: carriers.iter().map(ToString::to_string).collect(),
                statuses: statuses.iter().map(ToString::to_string).collect(),
                description: "test".to_owned(),
                secret: None,
            },
        )
        .await
        .expect("subscription added");
        (subscription.id, secret)
    }

    /// Every delivery of a subscription, oldest first.
    pub async fn deliveries(&self, subscription: i64) -> Vec<DeliveryRecord> {
        let mut conn = self.db.store().acquire().await.expect("connection");
        fanout::list_deliveries(&mut conn, subscription)
            .await
            .expect("deliveries")
    }

    /// A subscription as `waybill subscriptions list` shows it.
    pub async fn listed(
        &self,
        subscription: i64,
    ) -> waybill_cli::subscriptions::ListedSubscription {
        waybill_cli::subscriptions::list(&self.settings, None)
            .await
            .expect("list")
            .into_iter()
            .find(|s| s.id == subscription)
            .expect("listed")
    }

    /// Rows in the outbox.
    pub async fn outbox_rows(&self) -> i64 {
        let mut conn = self.db.store().acquire().await.expect("connection");
        waybill_store::count_outbox(&mut conn).await.expect("count")
    }

    /// A queue bound to `waybill.events` with `binding` (e.g. `#`).
    pub async fn bind_events(&self, binding: &str) -> Tap {
        self.bind(&self.topology().events_exchange(), binding).await
    }

    /// A queue bound to `waybill.tenant-events` with `binding` (e.g. `acme.#`).
    pub async fn bind_tenant_events(&self, binding: &str) -> Tap {
        self.bind(&self.topology().tenant_events_exchange(), binding)
            .await
    }

    async fn bind(&self, exchange: &str, binding: &str) -> Tap {
        let queue = format!(
            "{}downstream.{}",
            self.settings.bus.prefix,
            env::random_suffix()
        );
        Tap::bind(
            self.settings.bus.url.expose_secret(),
            exchange,
            &queue,
            binding,
        )
        .await
        .expect("bind the downstream queue")
    }

    /// The process's metrics (the recorder is process-wide).
    pub fn metrics(&self) -> String {
        waybill_telemetry::render_metrics()
    }
}
