//! Validated identifiers. Each is a newtype whose only constructor parses and normalises, so a
//! value of the type is proof that the rules below hold.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The value is empty (or only white space).
    #[error("{what} is empty")]
    Empty {
        /// Which identifier.
        what: &'static str,
    },
    /// The value is longer than allowed.
    #[error("{what} is longer than {max} characters")]
    TooLong {
        /// Which identifier.
        what: &'static str,
        /// The maximum length.
        max: usize,
    },
    /// The value holds a character that is not allowed.
    #[error("{what} contains the character {found:?}, which is not allowed ({allowed})")]
    BadCharacter {
        /// Which identifier.
        what: &'static str,
        /// The offending character.
        found: char,
        /// A description of what is allowed.
        allowed: &'static str,
    },
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The normalised value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::parse(s)
            }
        }
    };
}

string_newtype!(
    /// A carrier's tracking number (AWB, waybill, consignment number).
    ///
    /// Normalised: white space removed, ASCII letters upper-cased. Valid: 1 to 64 characters
    /// of ASCII letters, digits and `- _ . /`.
    TrackingNumber
);

string_newtype!(
    /// A carrier (or tracking platform) code, e.g. `starshipit`, `aftership`, `australia-post`.
    ///
    /// Normalised: lower-cased, spaces turned into `-`. Valid: 1 to 40 characters of
    /// `a-z 0-9 - _`. Used in routing keys, so no dots.
    CarrierCode
);

string_newtype!(
    /// A tenant: the owner of sources, shipments, subscriptions and keys. Same rules as
    /// [`CarrierCode`]; the single-tenant installation uses [`TenantId::default_tenant`].
    TenantId
);

string_newtype!(
    /// A configured inbound source (the `{source}` of `POST /v1/webhooks/{source}`).
    /// Same rules as [`CarrierCode`].
    SourceId
);

impl TrackingNumber {
    /// The longest tracking number accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses and normalises a tracking number.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        const WHAT: &str = "tracking number";
        let normalised: String = raw
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if normalised.is_empty() {
            return Err(IdError::Empty { what: WHAT });
        }
        if normalised.chars().count() > Self::MAX_LEN {
            return Err(IdError::TooLong {
                what: WHAT,
                max: Self::MAX_LEN,
            });
        }
        if let Some(found) = normalised
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
        {
            return Err(IdError::BadCharacter {
                what: WHAT,
                found,
                allowed: "ASCII letters, digits, '-', '_', '.', '/'",
            });
        }
        Ok(TrackingNumber(normalised))
    }
}

fn parse_slug(raw: &str, what: &'static str) -> Result<String, IdError> {
    const MAX: usize = 40;
    let normalised: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c == ' ' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if normalised.is_empty() {
        return Err(IdError::Empty { what });
    }
    if normalised.chars().count() > MAX {
        return Err(IdError::TooLong { what, max: MAX });
    }
    if let Some(found) = normalised
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_')))
    {
        return Err(IdError::BadCharacter {
            what,
            found,
            allowed: "ASCII letters, digits, '-', '_'",
        });
    }
    Ok(normalised)
}

impl CarrierCode {
    /// Parses and normalises a carrier code.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        parse_slug(raw, "carrier code").map(CarrierCode)
    }
}

impl TenantId {
    /// The name of the implicit tenant of a single-tenant installation.
    pub const DEFAULT: &'static str = "default";

    /// Parses and normalises a tenant id.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        parse_slug(raw, "tenant").map(TenantId)
    }

    /// The implicit tenant of a single-tenant installation.
    pub fn default_tenant() -> Self {
        TenantId(Self::DEFAULT.to_owned())
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::default_tenant()
    }
}

impl SourceId {
    /// Parses and normalises a source id.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        parse_slug(raw, "source id").map(SourceId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_numbers_are_normalised() {
        assert_eq!(
            TrackingNumber::parse(" 1z 999aa1 ").unwrap().as_str(),
            "1Z999AA1"
        );
        assert!(matches!(
            TrackingNumber::parse("  "),
            Err(IdError::Empty { .. })
        ));
        assert!(matches!(
            TrackingNumber::parse(&"9".repeat(65)),
            Err(IdError::TooLong { .. })
        ));
        assert!(matches!(
            TrackingNumber::parse("AB<script>"),
            Err(IdError::BadCharacter { found: '<', .. })
        ));
    }

    #[test]
    fn carrier_codes_are_slugs() {
        assert_eq!(
            CarrierCode::parse("Australia Post").unwrap().as_str(),
            "australia-post"
        );
        assert!(CarrierCode::parse("ups.ground").is_err());
        assert!(CarrierCode::parse("").is_err());
    }

    #[test]
    fn identifiers_validate_when_deserialised() {
        assert!(serde_json::from_str::<TrackingNumber>("\"\"").is_err());
        let tn: TrackingNumber = serde_json::from_str("\"abc123\"").unwrap();
        assert_eq!(tn.as_str(), "ABC123");
    }
}
