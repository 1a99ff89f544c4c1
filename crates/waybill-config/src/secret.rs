//! Secrets in the configuration (the database and broker URLs, which carry passwords, sources'
//! webhook secrets and tracking-API credentials) are [`SecretString`]s: their `Debug` prints
//! `[REDACTED]`, so no `{:?}` of a settings value and no log line can show them, and reading
//! one takes an explicit [`ExposeSecret::expose_secret`] at the place that uses it.
//!
//! Serialising still writes the value: the defaults reach the loader that way.

use std::collections::BTreeMap;

pub use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;
use serde::ser::{SerializeMap, SerializeSeq};

/// Serialises a secret as its value.
pub(crate) fn serialize<S: Serializer>(
    secret: &SecretString,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose_secret())
}

/// Serialises a list of secrets as their values.
pub(crate) fn serialize_list<S: Serializer>(
    secrets: &[SecretString],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut seq = serializer.serialize_seq(Some(secrets.len()))?;
    for secret in secrets {
        seq.serialize_element(secret.expose_secret())?;
    }
    seq.end()
}

/// Serialises a map of named secrets as their values.
pub(crate) fn serialize_map<S: Serializer>(
    secrets: &BTreeMap<String, SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(secrets.len()))?;
    for (name, secret) in secrets {
        map.serialize_entry(name, secret.expose_secret())?;
    }
    map.end()
}

/// The values of named secrets, for an API that takes them in the clear (a poll request's
/// templates). Made where they are used, never kept.
pub fn expose_map(secrets: &BTreeMap<String, SecretString>) -> BTreeMap<String, String> {
    secrets
        .iter()
        .map(|(name, secret)| (name.clone(), secret.expose_secret().to_owned()))
        .collect()
}

/// The values of a list of secrets, for an API that takes them in the clear (webhook
/// verification). Made where they are used, never kept.
pub fn expose_list(secrets: &[SecretString]) -> Vec<String> {
    secrets
        .iter()
        .map(|secret| secret.expose_secret().to_owned())
        .collect()
}
