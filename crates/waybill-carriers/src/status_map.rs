//! Raw carrier status → canonical [`Status`]. An unmapped raw status is never a rejection: it
//! becomes [`Status::Unknown`] and is reported so a metric can show what to map next.
//!
//! Lookup order: the `pairs` rules on (status, sub-status), first match wins, `*` a wildcard;
//! then the plain `map` on the status alone; then canonical names.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use waybill_core::Status;

/// The `[mapping.status]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusSpec {
    /// Match raw statuses ignoring ASCII case (`"DELIVERED"` finds the key `Delivered`).
    #[serde(default)]
    pub case_insensitive: bool,
    /// A raw status that is itself a canonical name (`InTransit`, `in_transit`) maps to that
    /// status when no key matches. For formats that speak the canonical vocabulary.
    #[serde(default)]
    pub canonical_names: bool,
    /// Raw status → canonical status name.
    #[serde(default)]
    pub map: BTreeMap<String, CanonicalName>,
    /// (status, sub-status) rules, tried in order before `map`.
    #[serde(default)]
    pub pairs: Vec<PairRule>,
}

/// One `[[mapping.status.pairs]]` rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PairRule {
    /// The raw status; `*` matches any run of characters.
    pub status: String,
    /// The sub-status; `*` alone also matches an absent one.
    pub sub_status: String,
    /// The canonical status.
    pub to: CanonicalName,
}

/// Whether `text` matches a pattern where `*` stands for any run of characters.
fn glob(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    let (pattern, text) = if case_insensitive {
        (pattern.to_ascii_lowercase(), text.to_ascii_lowercase())
    } else {
        (pattern.to_owned(), text.to_owned())
    };
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A canonical status name, checked when the profile loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CanonicalName(pub Status);

impl<'de> Deserialize<'de> for CanonicalName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<Status>()
            .map(CanonicalName)
            .map_err(serde::de::Error::custom)
    }
}

impl StatusSpec {
    /// Keys that collide once case is ignored (checked at load, reported as a profile error).
    pub fn case_collision(&self) -> Option<String> {
        if !self.case_insensitive {
            return None;
        }
        let mut seen = BTreeMap::new();
        for key in self.map.keys() {
            if let Some(previous) = seen.insert(key.to_ascii_lowercase(), key) {
                return Some(format!(
                    "`{previous}` and `{key}` are the same key when case is ignored"
                ));
            }
        }
        None
    }

    /// The canonical status of a (raw status, sub-status) pair: the first matching pair rule,
    /// else [`StatusSpec::lookup`] on the status alone.
    pub fn lookup_pair(&self, raw: &str, sub_status: Option<&str>) -> Option<Status> {
        let raw = raw.trim();
        let sub_status = sub_status.map(str::trim);
        let rule = self.pairs.iter().find(|rule| {
            glob(&rule.status, raw, self.case_insensitive)
                && match sub_status {
                    Some(sub) => glob(&rule.sub_status, sub, self.case_insensitive),
                    None => rule.sub_status == "*",
                }
        });
        match rule {
            Some(rule) => Some(rule.to.0),
            None => self.lookup(raw),
        }
    }

    /// The canonical status of a raw status, or `None` when nothing maps it.
    pub fn lookup(&self, raw: &str) -> Option<Status> {
        let raw = raw.trim();
        if let Some(CanonicalName(status)) = self.map.get(raw) {
            return Some(*status);
        }
        if self.case_insensitive
            && let Some((_, CanonicalName(status))) = self
                .map
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(raw))
        {
            return Some(*status);
        }
        if self.canonical_names {
            return raw.parse::<Status>().ok();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(case_insensitive: bool, canonical_names: bool) -> StatusSpec {
        let map = [
            ("Dispatched", Status::InTransit),
            ("6", Status::OutForDelivery),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), CanonicalName(v)))
        .collect();
        StatusSpec {
            case_insensitive,
            canonical_names,
            map,
            pairs: Vec::new(),
        }
    }

    #[test]
    fn pairs_first_then_fallback() {
        let spec: StatusSpec = toml::from_str(
            r#"
            case_insensitive = true
            [map]
            Exception = "Exception"
            [[pairs]]
            status = "Exception"
            sub_status = "DeliveryRefused"
            to = "Returned"
            [[pairs]]
            status = "Exception"
            sub_status = "Address*"
            to = "AttemptFail"
            [[pairs]]
            status = "Held*"
            sub_status = "*"
            to = "AvailableForPickup"
            "#,
        )
        .unwrap();
        assert_eq!(
            spec.lookup_pair("Exception", Some("DeliveryRefused")),
            Some(Status::Returned)
        );
        assert_eq!(
            spec.lookup_pair("exception", Some("addressissue")),
            Some(Status::AttemptFail)
        );
        assert_eq!(
            spec.lookup_pair("Exception", Some("Weather")),
            Some(Status::Exception)
        );
        assert_eq!(spec.lookup_pair("Exception", None), Some(Status::Exception));
        assert_eq!(
            spec.lookup_pair("HeldAtDepot", None),
            Some(Status::AvailableForPickup)
        );
        assert_eq!(spec.lookup_pair("Other", Some("x")), None);
    }

    #[test]
    fn globs() {
        assert!(glob("*", "", false));
        assert!(glob("a*c", "abbbc", false));
        assert!(glob("a*b*c", "aXbYc", false));
        assert!(!glob("a*c", "ab", false));
        assert!(!glob("ab*ba", "aba", false));
        assert!(glob("AB", "ab", true));
    }

    #[test]
    fn exact_then_case_then_canonical() {
        // (case-insensitive, canonical names accepted, raw status, lookup)
        let cases = [
            (false, false, "Dispatched", Some(Status::InTransit)),
            (false, false, " 6 ", Some(Status::OutForDelivery)),
            (false, false, "DISPATCHED", None),
            (true, false, "DISPATCHED", Some(Status::InTransit)),
            (true, false, "delivered", None),
            (true, true, "delivered", Some(Status::Delivered)),
            (true, true, "out_for_delivery", Some(Status::OutForDelivery)),
        ];
        for (case_insensitive, canonical, raw, want) in cases {
            assert_eq!(
                spec(case_insensitive, canonical).lookup(raw),
                want,
                "{raw:?} (case-insensitive {case_insensitive}, canonical {canonical})"
            );
        }
    }

    #[test]
    fn detects_case_collisions() {
        let mut spec = spec(true, false);
        assert_eq!(spec.case_collision(), None);
        spec.map
            .insert("DISPATCHED".into(), CanonicalName(Status::Exception));
        assert!(spec.case_collision().is_some());
    }
}
