//! Which configured sources are polled, through which carrier account, with which intervals.
//!
//! A source is polled when its mode is not `webhook_only`, its profile has a `[poll]` section,
//! and a request can be built from its credentials and base URL (a missing credential is
//! reported once, at start, and the source is then not polled).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use waybill_carriers::CarrierProfile;
use waybill_config::{IntervalSettings, PollMode, Settings, SourceSettings};
use waybill_core::{CarrierCode, SourceId, TrackingNumber};
use waybill_store::polling::DefaultPollSource;

use super::rate_limit::Account;

/// The rate used when neither `[polling.sources.<id>]` nor the profile sets one.
const DEFAULT_RATE_PER_SECOND: f64 = 1.0;

/// One polled source.
#[derive(Debug)]
pub struct PolledSource {
    /// Its configuration.
    pub settings: SourceSettings,
    /// Its carrier profile (has a `[poll]` section).
    pub profile: Arc<CarrierProfile>,
    /// Its carrier account's budget (shared with sources of the same account).
    pub account: Arc<Account>,
    /// Its intervals: `[polling.intervals]` with the profile's overrides.
    pub intervals: IntervalSettings,
}

/// Every polled source of the configuration.
#[derive(Debug, Default)]
pub struct PollSources {
    by_id: HashMap<String, PolledSource>,
    ids: Vec<SourceId>,
    defaults: Vec<DefaultPollSource>,
}

impl PollSources {
    /// Resolves the configuration. Sources that cannot be polled are logged (once) and left out.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<PollSources> {
        let profiles = settings.profiles()?;
        let probe = TrackingNumber::parse("PROBE0000")?;
        let mut accounts: HashMap<u64, Arc<Account>> = HashMap::new();
        let mut polled = PollSources::default();
        for source in &settings.sources {
            if source.mode == PollMode::WebhookOnly {
                continue;
            }
            let Some(profile) = profiles.get(&source.profile) else {
                continue;
            };
            let Some(spec) = profile.poll() else {
                if source.mode == PollMode::PollOnly {
                    tracing::warn!(source = %source.id, profile = %profile.name, "source is poll_only but its profile has no [poll] section; it is not polled");
                }
                continue;
            };
            if let Err(error) = spec.build_request(
                source.poll_base_url.as_deref(),
                &probe,
                &waybill_config::expose_map(&source.credentials),
            ) {
                tracing::warn!(source = %source.id, error = %error, "source cannot be polled (fix its credentials or poll_base_url); its shipments are tracked by webhooks only");
                continue;
            }
            let rate = settings
                .polling
                .sources
                .get(source.id.as_str())
                .and_then(|s| s.rate_limit_per_second)
                .or(spec.rate_limit_per_second())
                .unwrap_or(DEFAULT_RATE_PER_SECOND);
            let account = accounts
                .entry(account_key(source, &profile.name))
                .or_insert_with(|| Arc::new(Account::new(source.id.as_str(), rate)))
                .clone();
            let intervals = settings
                .polling
                .intervals
                .with_overrides(settings.polling.profiles.get(&profile.name));
            polled.ids.push(source.id.clone());
            polled.by_id.insert(
                source.id.as_str().to_owned(),
                PolledSource {
                    settings: source.clone(),
                    profile,
                    account,
                    intervals,
                },
            );
        }
        // A shipment registered without a source is polled through the tenant's only source
        // for its carrier, when that source is polled.
        let mut by_carrier: BTreeMap<(String, String), Vec<&SourceSettings>> = BTreeMap::new();
        for source in &settings.sources {
            if let Some(profile) = profiles.get(&source.profile) {
                by_carrier
                    .entry((source.tenant.as_str().to_owned(), profile.name.clone()))
                    .or_default()
                    .push(source);
            }
        }
        for ((_, carrier), sources) in by_carrier {
            if let [only] = sources.as_slice()
                && polled.by_id.contains_key(only.id.as_str())
                && let Ok(carrier) = CarrierCode::parse(&carrier)
            {
                polled.defaults.push(DefaultPollSource {
                    tenant: only.tenant.clone(),
                    carrier,
                    source: only.id.clone(),
                });
            }
        }
        Ok(polled)
    }

    /// The polled source with this id.
    pub fn get(&self, id: &str) -> Option<&PolledSource> {
        self.by_id.get(id)
    }

    /// The ids of the polled sources, in configuration order.
    pub fn ids(&self) -> &[SourceId] {
        &self.ids
    }

    /// The default source per tenant and carrier.
    pub fn defaults(&self) -> &[DefaultPollSource] {
        &self.defaults
    }

    /// The polled sources.
    pub fn iter(&self) -> impl Iterator<Item = &PolledSource> {
        self.ids.iter().filter_map(|id| self.by_id.get(id.as_str()))
    }
}

/// Sources with the same profile, credentials and base URL are one carrier account. The key is
/// a hash kept in memory only (credentials never leave this function).
fn account_key(source: &SourceSettings, profile: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    profile.hash(&mut hasher);
    source.poll_base_url.hash(&mut hasher);
    waybill_config::expose_map(&source.credentials).hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_polled_only_with_a_poll_spec_credentials_and_not_webhook_only() {
        let settings = Settings::from_toml_str(
            r#"
            sources = [
                { id = "a", profile = "aftership", credentials = { api_key = "k" } },
                { id = "a-again", profile = "aftership", tenant = "other", credentials = { api_key = "k" } },
                { id = "no-credentials", profile = "easypost" },
                { id = "hooks", profile = "starshipit", mode = "webhook_only", credentials = { api_key = "k", subscription_key = "s" } },
            ]
            [polling.sources.a]
            rate_limit_per_second = 3.0
            "#,
        )
        .unwrap();
        let sources = PollSources::from_settings(&settings).unwrap();
        let ids: Vec<&str> = sources.ids().iter().map(SourceId::as_str).collect();
        assert_eq!(ids, ["a", "a-again"]);
        let a = sources.get("a").unwrap();
        assert!(Arc::ptr_eq(
            &a.account,
            &sources.get("a-again").unwrap().account
        ));
        assert_eq!(a.account.rate, 3.0);
        assert_eq!(sources.defaults().len(), 2, "one per tenant");
    }
}
