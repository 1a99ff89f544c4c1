//! `[console]`: the operator console served under `/console` by the worker (see
//! `docs/console.md`).

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// `[console]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Serve the console under `/console` on the worker's listener (needs `[auth] mode =
    /// "keys"`: sign-in is with an API key).
    pub enabled: bool,
    /// A session ends after this long without a request.
    pub session_idle_secs: u64,
    /// A session ends this long after sign-in, however active.
    pub session_max_secs: u64,
    /// When the session cookie is marked `Secure`.
    pub secure_cookie: SecureCookie,
    /// How often an open overview page refreshes itself.
    pub refresh_secs: u64,
    /// Prometheus text endpoints read (only while a console page is open) for the overview and
    /// sources pages, besides the worker's own metrics: each ingress replica's `/metrics`, or a
    /// Prometheus server's `/federate?match[]=…` URL.
    pub metrics_urls: Vec<String>,
}

/// When the console's session cookie carries `Secure` (browsers then send it over HTTPS only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecureCookie {
    /// When the request arrived over HTTPS as a proxy in front says (`X-Forwarded-Proto:
    /// https` or `Forwarded: proto=https`). A forged header can only add `Secure`, which
    /// breaks the forger's own session and nobody else's.
    #[default]
    Auto,
    /// Always: for a console reached over TLS only.
    Always,
    /// Never: plain-HTTP development setups.
    Never,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            enabled: true,
            session_idle_secs: 30 * 60,
            session_max_secs: 12 * 60 * 60,
            secure_cookie: SecureCookie::Auto,
            refresh_secs: 5,
            metrics_urls: Vec::new(),
        }
    }
}

pub(crate) fn validate(console: &ConsoleSettings) -> Result<(), ConfigError> {
    let rule = |key: &str, reason: &str| ConfigError::Rule {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    if console.session_idle_secs < 60 {
        return Err(rule("console.session_idle_secs", "must be at least 60"));
    }
    if console.session_max_secs < console.session_idle_secs {
        return Err(rule(
            "console.session_max_secs",
            "must be at least console.session_idle_secs",
        ));
    }
    if !(1..=300).contains(&console.refresh_secs) {
        return Err(rule("console.refresh_secs", "must be between 1 and 300"));
    }
    for (index, url) in console.metrics_urls.iter().enumerate() {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(rule(
                &format!("console.metrics_urls[{index}]"),
                "must be an http:// or https:// URL",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Settings;

    use super::*;

    #[test]
    fn the_console_is_on_by_default_and_its_keys_validate() {
        let settings = Settings::from_toml_str("").unwrap();
        assert!(settings.console.enabled);
        assert_eq!(settings.console.secure_cookie, SecureCookie::Auto);
        let settings = Settings::from_toml_str(
            "[console]\nenabled = false\nsecure_cookie = \"always\"\nmetrics_urls = [\"http://ingress:8080/metrics\"]",
        )
        .unwrap();
        assert!(!settings.console.enabled);
        assert_eq!(settings.console.secure_cookie, SecureCookie::Always);
        let error = Settings::from_toml_str("[console]\nsession_idle_secs = 5").unwrap_err();
        assert!(error.to_string().contains("console.session_idle_secs"));
        let error = Settings::from_toml_str("[console]\nmetrics_urls = [\"ftp://x\"]").unwrap_err();
        assert!(error.to_string().contains("console.metrics_urls[0]"));
        let error = Settings::from_toml_str("[console]\nrefresh_secs = 0").unwrap_err();
        assert!(error.to_string().contains("console.refresh_secs"));
    }
}
