//! `[[sources]]`: the configured inbound endpoints.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use waybill_core::{SourceId, TenantId};

use crate::ConfigError;
use crate::secret::{ExposeSecret, SecretString};

/// One inbound source: `POST /v1/webhooks/{id}` verified and mapped by `profile`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// The `{source}` path segment.
    pub id: SourceId,
    /// A built-in profile name (`starshipit`, `easypost`, `17track`, … see
    /// `docs/carrier-profiles.md`) or the name of a profile in `profiles_dir`.
    pub profile: String,
    /// Webhook secrets; any of them verifies a request (list several to rotate).
    #[serde(default, serialize_with = "crate::secret::serialize_list")]
    pub secrets: Vec<SecretString>,
    /// Public keys for profiles that verify signatures with RSA, ECDSA P-256 or Ed25519: each
    /// a PEM public key (optionally after a line `kid: <key id>`), a JWK object or a JWKS
    /// document, as text.
    #[serde(default)]
    pub public_keys: Vec<String>,
    /// A JWKS URL the ingress fetches the carrier's public keys from, in the background, every
    /// `jwks_refresh_secs`, and again (at most every 30 s) when a request names an unknown key.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often the JWKS document is fetched again, in seconds (default 300).
    #[serde(default = "default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
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
    #[serde(default, serialize_with = "crate::secret::serialize_map")]
    pub credentials: BTreeMap<String, SecretString>,
    /// Overrides the profile's tracking-API base URL.
    #[serde(default)]
    pub poll_base_url: Option<String>,
    /// Most webhook requests per second this source may make (a token bucket holding one
    /// second's worth, at least 1); more get `429` with `Retry-After`. Unset: no limit.
    #[serde(default)]
    pub rate_limit_per_second: Option<f64>,
}

fn default_jwks_refresh_secs() -> u64 {
    300
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
        if let Err(error) = waybill_carriers::KeySet::from_config(&source.public_keys) {
            return Err(ConfigError::Rule {
                key: format!("sources[{index}].public_keys"),
                reason: error.to_string(),
            });
        }
        if let Some(url) = &source.jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::Rule {
                key: format!("sources[{index}].jwks_url"),
                reason: "must be an absolute http:// or https:// URL".to_owned(),
            });
        }
        if source.jwks_refresh_secs == 0 {
            return Err(ConfigError::Rule {
                key: format!("sources[{index}].jwks_refresh_secs"),
                reason: "must be at least 1 second".to_owned(),
            });
        }
        if source
            .secrets
            .iter()
            .any(|secret| secret.expose_secret().is_empty())
        {
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
    fn public_keys_and_jwks_urls_are_checked() {
        let source = |extra: &str| {
            Settings::from_toml_str(&format!(
                "[[sources]]\nid = \"a\"\nprofile = \"waybill\"\n{extra}"
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        assert!(source("jwks_url = \"https://keys.example/jwks.json\"").is_ok());
        let bad_url = source("jwks_url = \"ftp://x\"").unwrap_err();
        assert!(bad_url.contains("sources[0].jwks_url"), "{bad_url}");
        let bad_key = source("public_keys = [\"not a key\"]").unwrap_err();
        assert!(bad_key.contains("sources[0].public_keys"), "{bad_key}");
        assert!(
            !bad_key.contains("not a key"),
            "the key text is not echoed: {bad_key}"
        );
        let jwk = r#"public_keys = ['{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}']"#;
        assert!(source(jwk).is_ok(), "{:?}", source(jwk));
    }

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
