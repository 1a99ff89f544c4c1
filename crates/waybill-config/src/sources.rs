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
    /// Most webhook requests per second this source may make (a token bucket holding one
    /// second's worth, at least 1); more get `429` with `Retry-After`. Unset: no limit.
    #[serde(default)]
    pub rate_limit_per_second: Option<f64>,
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
        if source
            .rate_limit_per_second
            .is_some_and(|rate| !rate.is_finite() || rate <= 0.0)
        {
            return Err(ConfigError::Rule {
                key: format!("sources[{index}].rate_limit_per_second"),
                reason: "must be a positive number of requests per second".to_owned(),
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

#[cfg(test)]
mod tests {
    use crate::Settings;

    #[test]
    fn rate_limits_are_positive_and_optional() {
        let source = |extra: &str| {
            Settings::from_toml_str(&format!(
                "[[sources]]\nid = \"a\"\nprofile = \"waybill\"\n{extra}"
            ))
        };
        let unlimited = source("").map(|s| s.sources[0].rate_limit_per_second);
        assert!(matches!(unlimited, Ok(None)));
        let limited =
            source("rate_limit_per_second = 50").map(|s| s.sources[0].rate_limit_per_second);
        assert!(matches!(limited, Ok(Some(rate)) if rate == 50.0));
        for bad in ["0", "-1", "nan"] {
            let error = source(&format!("rate_limit_per_second = {bad}")).map(|_| ());
            let message = error.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                message.contains("sources[0].rate_limit_per_second"),
                "{bad}: {message}"
            );
        }
    }
}
