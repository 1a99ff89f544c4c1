//! Probes of the ingress, shared by the single-node and the cluster fault suites: signed
//! webhooks of the suite's own, and the ingress's count of `503` answers.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::effects;
use waybill_e2e::stack::{SECRETS, Stack};

/// The `503`s the ingress has answered so far (`waybill_webhooks_received_total` with outcome
/// `unavailable`, over every source).
pub async fn unavailable_answers(stack: &Stack) -> Option<u64> {
    let text = waybill_bench::loadgen::metrics_text(&http(), &stack.ingress_url()).await?;
    let total = text
        .lines()
        .filter(|line| {
            line.starts_with("waybill_webhooks_received_total{")
                && line.contains("outcome=\"unavailable\"")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(total as u64)
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// A signature header: name and value.
pub type Signature = Option<(String, String)>;

/// A fresh, valid, signed webhook body for the `direct` source.
pub fn signed_probe(stack: &Stack) -> anyhow::Result<(Vec<u8>, Signature)> {
    let (_, profile_name, secret) = SECRETS[4];
    let profiles = stack.settings.profiles()?;
    let profile = profiles
        .get(profile_name)
        .ok_or_else(|| anyhow::anyhow!("no waybill profile"))?;
    let body = serde_json::to_vec(&serde_json::json!({
        "carrier": "probe",
        "tracking_number": format!("CHECK{:010}", rand::random::<u32>()),
        "status": "InTransit",
        "raw_status": "InTransit",
        "occurred_at": Utc::now().to_rfc3339(),
        "location": "Check Depot",
    }))?;
    let signature = profile.sign(&body, secret, Utc::now());
    Ok((body, signature))
}

pub async fn post_probe(stack: &Stack) -> anyhow::Result<reqwest::Response> {
    Ok(probe_request(stack)?.send().await?)
}

/// A signed probe, ready to send (building a client and signing are not part of any timing).
pub fn probe_request(stack: &Stack) -> anyhow::Result<reqwest::RequestBuilder> {
    let (body, signature) = signed_probe(stack)?;
    let mut request = http()
        .post(format!(
            "{}/v1/webhooks/{}",
            stack.ingress_url(),
            SECRETS[4].0
        ))
        .header("content-type", "application/json")
        .body(body);
    if let Some((name, value)) = signature {
        request = request.header(name, value);
    }
    Ok(request)
}

/// Whether the ingress accepts a webhook right now.
pub async fn accepted_now(stack: &Stack) -> bool {
    match post_probe(stack).await {
        Ok(response) => {
            effects::count_probe_answer(response.status().as_u16());
            response.status().is_success()
        }
        Err(_) => false,
    }
}

/// Sends one webhook that cannot be confirmed now; `Ok(latency)` when it was answered 503 with
/// `Retry-After` within the publish timeout (plus a second), else what happened instead.
pub async fn unavailable_answer(stack: &Stack) -> Result<Duration, String> {
    let bound =
        Duration::from_millis(stack.settings.ingress.publish_timeout_ms) + Duration::from_secs(1);
    let request = probe_request(stack).map_err(|error| format!("no request: {error:#}"))?;
    let started = Instant::now();
    match request.send().await {
        Ok(response) => {
            let took = started.elapsed();
            let status = response.status().as_u16();
            effects::count_probe_answer(status);
            let retry_after = response.headers().contains_key("retry-after");
            if status == 503 && retry_after && took <= bound {
                Ok(took)
            } else {
                Err(format!(
                    "{status} (Retry-After: {retry_after}) after {} ms",
                    took.as_millis()
                ))
            }
        }
        Err(error) => Err(format!("no answer: {error:#}")),
    }
}
