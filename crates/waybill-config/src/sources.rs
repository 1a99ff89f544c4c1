//! `[[sources]]`: the configured inbound endpoints.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use waybill_core::{SourceId, TenantId};

use crate::ConfigError;

/// One inbound source: `POST /v1/webhooks/{id}` verified and mapped by `profile`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// The `{source}` path segment.
    pub id: SourceId,
    /// A built-in profile name (`starshipit`, `clickpost`, `aftership`, `easypost`, `waybill`)
    /// or the name of a profile in `profiles_dir`.
    pub profile: String,
    /// Webhook secrets; any of them verifies a request (list several to rotate).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The tenant this source's shipments belong to.
    #[serde(default)]
    pub tenant: TenantId,
    /// When true, events for shipments nobody registered are parked in `unmatched_events`
    /// until the shipment is registered; when false they create the shipment.
    #[serde(default)]
    pub require_registration: bool,
    /// Whether this source is fed by webhooks, polling, or both.
    #[serde(default)]
    pub mode: PollMode,
    /// Credentials for the carrier's tracking API (names used by the profile's poll templates).
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
    /// Overrides the profile's tracking-API base URL.
    #[serde(default)]
    pub poll_base_url: Option<String>,
}

/// How a source's shipments are kept up to date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PollMode {
    /// Webhooks first, polling fills the gaps.
    #[default]
    Hybrid,
    /// Webhooks only; never polled.
    WebhookOnly,
    /// Polling only; webhooks for this source are refused.
    PollOnly,
}

pub(crate) fn validate(
    sources: &[SourceSettings],
    profiles: &waybill_carriers::ProfileRegistry,
) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for (index, source) in sources.iter().enumerate() {
        if !seen.insert(source.id.as_str()) {
            return Err(ConfigError::Rule {
                key: format!("sources[{index}].id"),
                reason: format!("source id `{}` is configured twice", source.id),
            });
        }
        if profiles.get(&source.profile).is_none() {
            return Err(ConfigError::Rule {
                key: format!("sources[{index}].profile"),
                reason: format!(
                    "no carrier profile named `{}` (built-in or in profiles_dir)",
                    source.profile
                ),
            });
        }
        if source.secrets.iter().any(String::is_empty) {
            return Err(ConfigError::Rule {
                key: format!("sources[{index}].secrets"),
                reason: "a secret is empty".to_owned(),
            });
        }
    }
    Ok(())
}
