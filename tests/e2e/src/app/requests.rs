//! What a test does to a [`TestApp`] over HTTP and reads back: webhooks, registrations,
//! shipments, queue depths and poll schedules.

use std::time::Duration;

use serde_json::Value;
use waybill_config::ExposeSecret;

use super::TestApp;
use crate::{eventually, sources};

/// How long a shipment may take to reach the state a test waits for.
const SHIPMENT_WAIT: Duration = Duration::from_secs(20);

impl TestApp {
    /// Posts `body` to `/v1/webhooks/{source}` with `headers`.
    pub async fn post_webhook(
        &self,
        source: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/v1/webhooks/{source}", self.ingress))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.expect("ingress reachable")
    }

    /// Posts `body` signed the way `source`'s courier signs it ([`sources::sign`]).
    pub async fn post_signed(&self, source: &str, body: &[u8]) -> reqwest::Response {
        self.post_webhook(source, body, &sources::sign(source, body))
            .await
    }

    /// Posts a starshipit webhook to `source`, signed with the starshipit secret.
    pub async fn post_starshipit(&self, source: &str, body: &[u8]) -> reqwest::Response {
        self.post_webhook(source, body, &sources::sign("starshipit", body))
            .await
    }

    /// `POST /v1/shipments` with a JSON body.
    pub async fn register(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/shipments", self.ingress))
            .json(body)
            .send()
            .await
            .expect("ingress reachable")
    }

    /// `POST /v1/shipments` with a JSON body, expecting 202.
    pub async fn register_ok(&self, body: &Value) {
        let response = self.register(body).await;
        let status = response.status();
        let answer = response.text().await.unwrap_or_default();
        assert_eq!(status, 202, "POST /v1/shipments answered {answer}");
    }

    /// `POST /v1/shipments` with raw bytes.
    pub async fn register_raw(&self, body: &[u8]) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/shipments", self.ingress))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("ingress reachable")
    }

    /// `GET /v1/shipments/{carrier}/{tracking_number}` on the first worker; `None` on 404.
    pub async fn shipment(&self, carrier: &str, tracking_number: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!(
                "{}/v1/shipments/{carrier}/{tracking_number}",
                self.worker()
            ))
            .send()
            .await
            .expect("worker reachable");
        match response.status().as_u16() {
            200 => Some(response.json().await.expect("shipment JSON")),
            404 => None,
            other => panic!("unexpected status {other} from the shipments API"),
        }
    }

    /// Waits until the shipment exists and `done` holds for it.
    pub async fn wait_for_shipment(
        &self,
        carrier: &str,
        tracking_number: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_shipment_within(carrier, tracking_number, SHIPMENT_WAIT, done)
            .await
    }

    /// [`TestApp::wait_for_shipment`] with its own deadline.
    pub async fn wait_for_shipment_within(
        &self,
        carrier: &str,
        tracking_number: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let what = format!("shipment {carrier}/{tracking_number} reaches the expected state");
        eventually(within, &what, async || {
            self.shipment(carrier, tracking_number)
                .await
                .filter(|shipment| done(shipment))
        })
        .await
    }

    /// Waits until the webhooks queue has been empty three times in a row, i.e. the worker has
    /// applied everything published so far.
    pub async fn drain(&self) {
        let queue = self.topology().webhooks_queue();
        let mut settled = 0;
        eventually(
            Duration::from_secs(20),
            "the webhooks queue drains",
            async || {
                settled = if self.queue_depth(&queue).await == 0 {
                    settled + 1
                } else {
                    0
                };
                // The three looks must be apart: a batch may be in flight between two of them.
                tokio::time::sleep(Duration::from_millis(80)).await;
                settled >= 3
            },
        )
        .await;
    }

    /// Messages ready in the webhooks queue.
    pub async fn queued(&self) -> u32 {
        self.queue_depth(&self.topology().webhooks_queue()).await
    }

    /// Messages ready in a queue of this app's topology.
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let connection = waybill_bus::BusConnection::connect(
            self.settings.bus.url.expose_secret(),
            "waybill-test-depth",
        )
        .await
        .expect("broker reachable");
        let depth = connection.queue_stats(queue).await.expect("queue depth");
        let _ = connection.close().await;
        depth.messages
    }

    /// The poll schedule of a shipment of the default tenant (which must exist).
    pub async fn schedule(
        &self,
        carrier: &str,
        tracking_number: &str,
    ) -> waybill_store::polling::PollSchedule {
        self.maybe_schedule(carrier, tracking_number)
            .await
            .expect("shipment exists")
    }

    /// Waits up to `within` until the poll schedule of a shipment of the default tenant is
    /// as `wanted` says, and returns it.
    pub async fn wait_for_schedule(
        &self,
        carrier: &str,
        tracking_number: &str,
        within: Duration,
        wanted: impl Fn(&waybill_store::polling::PollSchedule) -> bool,
    ) -> waybill_store::polling::PollSchedule {
        eventually(within, "the expected poll outcome", async || {
            let schedule = self.schedule(carrier, tracking_number).await;
            wanted(&schedule).then_some(schedule)
        })
        .await
    }

    /// The poll schedule of a shipment of the default tenant, if it exists.
    pub async fn maybe_schedule(
        &self,
        carrier: &str,
        tracking_number: &str,
    ) -> Option<waybill_store::polling::PollSchedule> {
        let key = waybill_store::ShipmentKey {
            tenant: waybill_core::TenantId::default_tenant(),
            carrier: waybill_core::CarrierCode::parse(carrier).expect("a carrier code"),
            tracking_number: waybill_core::TrackingNumber::parse(tracking_number)
                .expect("a tracking number"),
        };
        let mut conn = self.db.store().acquire().await.expect("connection");
        waybill_store::polling::poll_schedule(&mut conn, &key)
            .await
            .expect("schedule")
    }
}
