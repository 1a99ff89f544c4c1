//! `[auth]`: API keys on the platform-facing endpoints (see `docs/security.md`).

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// `keys` (the default): platform endpoints need an API key. `none`: no keys, every caller
    /// is the default tenant with every scope — for local development only.
    pub mode: AuthMode,
    /// How often each worker publishes the whole key set to the ingresses (and other workers).
    /// A revocation reaches every process within this plus one publish.
    pub refresh_secs: u64,
    /// A process that has received no key set for this long stops trusting the one it has and
    /// answers 503 on key-protected endpoints (fail closed while the publishing side is down).
    /// At least twice `refresh_secs`.
    pub max_snapshot_age_secs: u64,
}

/// Whether platform endpoints need an API key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// `Authorization: Bearer <key>` required; 401 without, 403 without the scope.
    #[default]
    Keys,
    /// No authentication: local development only.
    None,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            mode: AuthMode::Keys,
            refresh_secs: 10,
            max_snapshot_age_secs: 60,
        }
    }
}

pub(crate) fn validate(auth: &AuthSettings) -> Result<(), ConfigError> {
    let rule = |key: &str, reason: &str| ConfigError::Rule {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    if auth.refresh_secs == 0 {
        return Err(rule("auth.refresh_secs", "must be at least 1"));
    }
    if auth.max_snapshot_age_secs < auth.refresh_secs.saturating_mul(2) {
        return Err(rule(
            "auth.max_snapshot_age_secs",
            "must be at least twice auth.refresh_secs, or one late publish locks every client out",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Settings;

    use super::*;

    #[test]
    fn keys_are_the_default() {
        let settings = Settings::from_toml_str("").unwrap();
        assert_eq!(settings.auth.mode, AuthMode::Keys);
        assert_eq!(settings.auth.refresh_secs, 10);
    }

    #[test]
    fn auth_settings_parse_and_validate() {
        let settings = Settings::from_toml_str("[auth]\nmode = \"none\"").unwrap();
        assert_eq!(settings.auth.mode, AuthMode::None);
        let error = Settings::from_toml_str("[auth]\nrefresh_secs = 40").unwrap_err();
        assert!(error.to_string().contains("auth.max_snapshot_age_secs"));
        let error = Settings::from_toml_str("[auth]\nmode = \"open\"").unwrap_err();
        assert!(error.to_string().contains("mode"));
    }
}
