//! API keys and authenticated reads, for apps that require keys (`[auth] mode = "keys"`).

use std::time::Duration;

use waybill_core::TenantId;
use waybill_core::access::Scope;

use super::TestApp;
use crate::eventually;

impl TestApp {
    /// Creates a key the way `waybill keys create` does; returns the whole key.
    pub async fn create_key(&self, tenant: &str, scopes: &[Scope]) -> String {
        let tenant = TenantId::parse(tenant).expect("tenant id");
        let created = waybill_cli::keys::create(&self.settings, &tenant, scopes, "test")
            .await
            .expect("create a key");
        created.key.expose()
    }

    /// Creates a key for each `(tenant, scope)`, then waits until the worker knows them all.
    pub async fn create_known_keys<const N: usize>(
        &self,
        wanted: [(&str, Scope); N],
    ) -> [String; N] {
        let mut keys = Vec::with_capacity(N);
        for (tenant, scope) in wanted {
            keys.push(self.create_key(tenant, &[scope]).await);
        }
        for key in &keys {
            self.wait_until_known(key).await;
        }
        keys.try_into().expect("one key for each")
    }

    /// `GET {worker}{path}` with the key as a bearer token, if any.
    pub async fn get(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let authorization = key.map(|key| format!("Bearer {key}"));
        self.get_with(path, authorization.as_deref()).await
    }

    /// `GET {worker}{path}` with this `Authorization` header, if any.
    pub async fn get_with(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.worker()));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().await.expect("worker reachable")
    }

    /// Waits until the worker has a key set in which `key` is known, i.e. a request with it is
    /// neither 401 nor 503.
    pub async fn wait_until_known(&self, key: &str) {
        eventually(Duration::from_secs(15), "the key is known", async || {
            let status = self
                .get("/v1/shipments?order_number=probe", Some(key))
                .await
                .status()
                .as_u16();
            status != 401 && status != 503
        })
        .await;
    }

    /// Waits until `GET path` with `key` answers 200, and returns the JSON.
    pub async fn wait_for_json(&self, path: &str, key: &str) -> serde_json::Value {
        let response = eventually(
            Duration::from_secs(20),
            "the read answers 200",
            async || {
                let response = self.get(path, Some(key)).await;
                (response.status().as_u16() == 200).then_some(response)
            },
        )
        .await;
        response.json().await.expect("JSON")
    }
}
