//! Webhook authentication. The raw request becomes a [`VerifiedRequest`] only through
//! [`crate::CarrierProfile::verify`]: the type change is the proof, so code that maps a payload
//! cannot forget to check it. Signatures are always checked over the raw body bytes, never over
//! re-serialised JSON, and every comparison is constant-time.

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use http::{HeaderMap, HeaderName};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::VerifyError;
use crate::keys::KeySet;
use crate::scheme::{
    Algorithm, Request, Scheme, SchemeTable, SecretNormalization, SignatureEncoding, TimestampUnit,
    ValueSource, normalize,
};

type HmacSha256 = hmac::Hmac<Sha256>;

/// A request as it arrived: headers and raw body, not yet proven to come from the carrier.
#[derive(Debug, Clone, Copy)]
pub struct UnverifiedRequest<'a> {
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw body, exactly as received.
    pub body: &'a [u8],
}

/// A request whose signature (or token) was checked by a profile. There is no public
/// constructor: the only way to get one is [`crate::CarrierProfile::verify`].
#[derive(Debug, Clone, Copy)]
pub struct VerifiedRequest<'a> {
    headers: &'a HeaderMap,
    body: &'a [u8],
    matched_secret: Option<usize>,
}

impl<'a> VerifiedRequest<'a> {
    /// `request`, once proven; `matched_secret` is the index of the secret that matched, `None`
    /// when no secret was involved.
    pub(crate) fn new(request: UnverifiedRequest<'a>, matched_secret: Option<usize>) -> Self {
        VerifiedRequest {
            headers: request.headers,
            body: request.body,
            matched_secret,
        }
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The raw body, exactly as received and verified.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Which of the configured secrets matched (its index), or `None` for the `none` scheme.
    /// Lets operators see when the old secret of a rotation stops being used.
    pub fn matched_secret(&self) -> Option<usize> {
        self.matched_secret
    }
}

/// What a request is verified with besides its own bytes: the source's secrets and public
/// keys, a JWKS key set fetched by the caller, and the URL the request was sent to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// Shared secrets (HMAC, digest and token schemes); several during a rotation.
    pub secrets: &'a [String],
    /// Public keys from the source's configuration (`public_keys`).
    pub public_keys: Option<&'a KeySet>,
    /// Public keys from the source's JWKS URL, as last fetched.
    pub jwks: Option<&'a KeySet>,
    /// The request's URL as received (path and query at least), for `{url}`, `{query:…}` and
    /// query-parameter signatures.
    pub url: Option<&'a str>,
}

/// One `[verify]` table as written in a profile file: the keys of the named schemes of format 1
/// (`scheme`, `header`, `prefix`) and of composed schemes (`algorithm`, `signed`, `signature`,
/// …); checked into a [`Verification`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyTable {
    #[serde(default)]
    pub scheme: Option<SchemeName>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub encoding: Option<SignatureEncoding>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub secret_normalization: SecretNormalization,
    #[serde(default)]
    pub tolerance_seconds: Option<u64>,
    #[serde(default)]
    pub algorithm: Option<Algorithm>,
    #[serde(default)]
    pub signed: Option<String>,
    #[serde(default)]
    pub signature: Option<ValueSource>,
    #[serde(default)]
    pub timestamp: Option<ValueSource>,
    #[serde(default)]
    pub timestamp_unit: Option<TimestampUnit>,
    #[serde(default)]
    pub id: Option<ValueSource>,
    #[serde(default)]
    pub key_id: Option<ValueSource>,
    #[serde(default)]
    pub secret_encoding: Option<crate::scheme::SecretEncoding>,
}

/// `[verify]`: one table, or (`[[verify]]`) several schemes of which any may pass, e.g. during
/// a carrier's migration from one scheme to another.
#[derive(Debug, Clone)]
pub(crate) struct VerifySpec(pub Vec<VerifyTable>);

impl<'de> Deserialize<'de> for VerifySpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer};
        struct SpecVisitor;
        impl<'de> Visitor<'de> for SpecVisitor {
            type Value = VerifySpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a [verify] table or a list of [[verify]] tables")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<VerifySpec, A::Error> {
                VerifyTable::deserialize(MapAccessDeserializer::new(map))
                    .map(|t| VerifySpec(vec![t]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VerifySpec, A::Error> {
                let mut tables = Vec::new();
                while let Some(table) = seq.next_element::<VerifyTable>()? {
                    tables.push(table);
                }
                if tables.is_empty() {
                    return Err(serde::de::Error::custom(
                        "[[verify]] needs at least one scheme",
                    ));
                }
                Ok(VerifySpec(tables))
            }
        }
        deserializer.deserialize_any(SpecVisitor)
    }
}

impl VerifyTable {
    /// The composed-scheme table of this entry, when it names an `algorithm`.
    pub fn composed(&self) -> Option<Result<Scheme, (&'static str, String)>> {
        let algorithm = self.algorithm?;
        if self.scheme.is_some() || self.header.is_some() || self.prefix.is_some() {
            return Some(Err((
                "verify.algorithm",
                "`algorithm` replaces `scheme`, `header` and `prefix`: say where the signature is with `signature = { header = …, prefix = … }`".to_owned(),
            )));
        }
        Some(Scheme::from_table(SchemeTable {
            algorithm,
            signed: self.signed.clone(),
            signature: self.signature.clone(),
            encoding: self.encoding.unwrap_or_default(),
            timestamp: self.timestamp.clone(),
            timestamp_unit: self.timestamp_unit.unwrap_or_default(),
            tolerance_seconds: self.tolerance_seconds,
            id: self.id.clone(),
            key_id: self.key_id.clone(),
            secret_encoding: self.secret_encoding.unwrap_or_default(),
            secret_normalization: self.secret_normalization,
        }))
    }

    /// Whether a composed-scheme key is used without `algorithm`.
    pub fn composed_key_without_algorithm(&self) -> Option<&'static str> {
        if self.algorithm.is_some() {
            return None;
        }
        [
            ("verify.signed", self.signed.is_some()),
            ("verify.signature", self.signature.is_some()),
            ("verify.timestamp", self.timestamp.is_some()),
            ("verify.timestamp_unit", self.timestamp_unit.is_some()),
            ("verify.id", self.id.is_some()),
            ("verify.key_id", self.key_id.is_some()),
            ("verify.secret_encoding", self.secret_encoding.is_some()),
        ]
        .into_iter()
        .find_map(|(key, present)| present.then_some(key))
    }
}

/// The verification scheme names of the profile format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SchemeName {
    HmacSha256,
    Timestamped,
    StaticToken,
    None,
}

/// How a signature's bytes are written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Encoding {
    /// Lower- or upper-case hex.
    Hex,
    /// Standard base64, padded or not.
    Base64,
    /// Either: 64 hex digits are read as hex, anything else as base64. Unambiguous for
    /// SHA-256 (hex is 64 characters, base64 43 or 44).
    Any,
}

/// A checked verification scheme.
#[derive(Debug, Clone)]
pub(crate) enum Verification {
    /// `hex|base64(HMAC-SHA256(secret, body))`, optionally after a fixed prefix.
    HmacSha256 {
        header: HeaderName,
        encoding: Encoding,
        prefix: Option<String>,
        normalization: SecretNormalization,
    },
    /// Stripe-style `t=<unix>,v1=<hex>[,v1=…]` over `"{t}.{body}"`, within a tolerance.
    Timestamped {
        header: HeaderName,
        encoding: Encoding,
        tolerance_seconds: u64,
        normalization: SecretNormalization,
    },
    /// The header equals one of the secrets.
    StaticToken {
        header: HeaderName,
        normalization: SecretNormalization,
    },
    /// No authentication (only for sources protected some other way).
    None,
    /// Composed schemes; any of them may pass.
    Composed(Vec<Scheme>),
}

impl Verification {
    /// The header carrying the signature or token, if the scheme has one.
    pub fn header(&self) -> Option<&HeaderName> {
        match self {
            Verification::HmacSha256 { header, .. }
            | Verification::Timestamped { header, .. }
            | Verification::StaticToken { header, .. } => Some(header),
            Verification::None => None,
            Verification::Composed(schemes) => schemes.iter().find_map(Scheme::header),
        }
    }

    /// The scheme's name as written in profile files.
    pub fn scheme_name(&self) -> &'static str {
        match self {
            Verification::HmacSha256 { .. } => "hmac_sha256",
            Verification::Timestamped { .. } => "timestamped",
            Verification::StaticToken { .. } => "static_token",
            Verification::None => "none",
            Verification::Composed(schemes) => match schemes.as_slice() {
                [one] => one.algorithm_name(),
                _ => "composed",
            },
        }
    }

    /// Checks a request with every credential kind and says which secret matched, if any; see
    /// [`crate::CarrierProfile::verify_with`].
    pub fn check(
        &self,
        request: &UnverifiedRequest<'_>,
        credentials: &Credentials<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<usize>, VerifyError> {
        let Verification::Composed(schemes) = self else {
            return self.check_named(request, credentials.secrets, now);
        };
        let key_sets: Vec<&KeySet> = [credentials.public_keys, credentials.jwks]
            .into_iter()
            .flatten()
            .collect();
        let checked = Request {
            headers: request.headers,
            body: request.body,
            url: credentials.url,
            secrets: credentials.secrets,
            keys: &key_sets,
            now,
        };
        let mut first_error: Option<VerifyError> = None;
        for scheme in schemes {
            match scheme.verify(&checked) {
                Ok(matched_secret) => return Ok(matched_secret),
                // A scheme whose signature is absent says least: the request may simply use
                // another of the accepted schemes. Any other error is the one to report.
                Err(error) => match (&first_error, &error) {
                    (None, _) | (Some(VerifyError::MissingSignature { .. }), _)
                        if !matches!(error, VerifyError::MissingSignature { .. })
                            || first_error.is_none() =>
                    {
                        first_error = Some(error);
                    }
                    _ => {}
                },
            }
        }
        Err(first_error.unwrap_or(VerifyError::NoSecretsConfigured))
    }

    /// The headers a sender holding `secret` attaches to `body` at `now` (every header of the
    /// first scheme that can be signed with a secret).
    pub fn sign_headers(
        &self,
        body: &[u8],
        secret: &str,
        now: DateTime<Utc>,
    ) -> Vec<(String, String)> {
        match self {
            Verification::Composed(schemes) => schemes
                .iter()
                .find_map(|scheme| scheme.sign(body, secret, now))
                .unwrap_or_default(),
            other => other.sign(body, secret, now).into_iter().collect(),
        }
    }

    /// Checks a request against a named scheme of format 1 (shared secrets only).
    fn check_named(
        &self,
        request: &UnverifiedRequest<'_>,
        secrets: &[String],
        now: DateTime<Utc>,
    ) -> Result<Option<usize>, VerifyError> {
        let Some(header) = self.header() else {
            return Ok(None);
        };
        let errors = HeaderErrors(header);
        let values = signature_values(request, header, secrets, errors)?;
        let matched = match self {
            Verification::HmacSha256 {
                encoding,
                prefix,
                normalization,
                ..
            } => check_hmac(
                &values,
                prefix.as_deref(),
                *encoding,
                &keys(secrets, *normalization),
                request.body,
                errors,
            )?,
            Verification::Timestamped {
                encoding,
                tolerance_seconds,
                normalization,
                ..
            } => check_timestamped(
                &values,
                *encoding,
                *tolerance_seconds,
                &keys(secrets, *normalization),
                request.body,
                now,
                errors,
            )?,
            Verification::StaticToken { normalization, .. } => {
                check_token(&values, &keys(secrets, *normalization), errors)?
            }
            Verification::None | Verification::Composed(_) => return Ok(None),
        };
        Ok(Some(matched))
    }

    /// The header and value a sender holding `secret` would attach to `body` at `now`;
    /// `None` for the `none` scheme. For tests and for the e2e harness.
    pub fn sign(&self, body: &[u8], secret: &str, now: DateTime<Utc>) -> Option<(String, String)> {
        if let Verification::Composed(_) = self {
            return self.sign_headers(body, secret, now).into_iter().last();
        }
        let header = self.header()?.as_str().to_owned();
        let value = match self {
            Verification::HmacSha256 {
                encoding,
                prefix,
                normalization,
                ..
            } => {
                let digest = hmac(&key(secret, *normalization), &[body]);
                format!(
                    "{}{}",
                    prefix.as_deref().unwrap_or(""),
                    encode(&digest, *encoding)
                )
            }
            Verification::Timestamped {
                encoding,
                normalization,
                ..
            } => {
                let t = now.timestamp().to_string();
                let digest = hmac(&key(secret, *normalization), &[t.as_bytes(), b".", body]);
                format!("t={t},v1={}", encode(&digest, *encoding))
            }
            Verification::StaticToken { normalization, .. } => {
                String::from_utf8_lossy(&key(secret, *normalization)).into_owned()
            }
            Verification::None | Verification::Composed(_) => return None,
        };
        Some((header, value))
    }
}

/// The errors of a named scheme, each naming its header (never the received value).
#[derive(Clone, Copy)]
struct HeaderErrors<'h>(&'h HeaderName);

impl HeaderErrors<'_> {
    fn missing(self) -> VerifyError {
        VerifyError::MissingSignature {
            header: self.0.as_str().to_owned(),
        }
    }

    fn malformed(self, reason: &'static str) -> VerifyError {
        VerifyError::MalformedSignature {
            header: self.0.as_str().to_owned(),
            reason,
        }
    }

    fn bad(self) -> VerifyError {
        VerifyError::BadSignature {
            header: self.0.as_str().to_owned(),
        }
    }
}

/// Every value of the signature header (a repeated header is allowed: any value may pass).
fn signature_values<'r>(
    request: &UnverifiedRequest<'r>,
    header: &HeaderName,
    secrets: &[String],
    errors: HeaderErrors<'_>,
) -> Result<Vec<&'r str>, VerifyError> {
    let mut values = request.headers.get_all(header).iter().peekable();
    if values.peek().is_none() {
        return Err(errors.missing());
    }
    if secrets.is_empty() {
        return Err(VerifyError::NoSecretsConfigured);
    }
    values
        .map(|value| {
            value
                .to_str()
                .map_err(|_| errors.malformed("it is not visible ASCII"))
        })
        .collect()
}

/// `hmac_sha256`: the index of the secret whose HMAC of the body one of the values carries.
fn check_hmac(
    values: &[&str],
    prefix: Option<&str>,
    encoding: Encoding,
    keys: &[Vec<u8>],
    body: &[u8],
    errors: HeaderErrors<'_>,
) -> Result<usize, VerifyError> {
    let mut signatures = Vec::new();
    for value in values {
        let value = value.trim();
        let encoded = match prefix {
            Some(prefix) => strip_prefix_ignore_case(value, prefix)
                .ok_or_else(|| errors.malformed("it does not start with the expected prefix"))?,
            None => value,
        };
        signatures.push(decode(encoded, encoding).ok_or_else(|| {
            errors.malformed("it is not a SHA-256 digest in the expected encoding")
        })?);
    }
    matching_secret(keys, &signatures, &[body]).ok_or_else(|| errors.bad())
}

/// `timestamped`: the signature over `"{t}.{body}"` first, then the timestamp's age, so a
/// forgery is reported as a forgery and a genuine but old signature as a replay.
fn check_timestamped(
    values: &[&str],
    encoding: Encoding,
    tolerance_seconds: u64,
    keys: &[Vec<u8>],
    body: &[u8],
    now: DateTime<Utc>,
    errors: HeaderErrors<'_>,
) -> Result<usize, VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for value in values {
        let parsed =
            parse_timestamped(value, encoding).map_err(|reason| errors.malformed(reason))?;
        if timestamp.is_some_and(|t| t != parsed.0) {
            return Err(errors.malformed("repeated headers carry different timestamps"));
        }
        timestamp = Some(parsed.0);
        signatures.extend(parsed.1);
    }
    let Some(seconds) = timestamp else {
        return Err(errors.missing());
    };
    let seconds_text = seconds.to_string();
    let payload = [seconds_text.as_bytes(), b".", body];
    let index = matching_secret(keys, &signatures, &payload).ok_or_else(|| errors.bad())?;
    if now.timestamp().abs_diff(seconds) > tolerance_seconds {
        return Err(VerifyError::TimestampOutsideTolerance {
            header: errors.0.as_str().to_owned(),
            tolerance_seconds,
        });
    }
    Ok(index)
}

/// `static_token`: the index of the secret one of the values equals. Digests are compared, not
/// strings: constant-time even when the lengths differ.
fn check_token(
    values: &[&str],
    keys: &[Vec<u8>],
    errors: HeaderErrors<'_>,
) -> Result<usize, VerifyError> {
    for value in values {
        let received = Sha256::digest(value.trim().as_bytes());
        for (index, key) in keys.iter().enumerate() {
            if bool::from(Sha256::digest(key).ct_eq(&received)) {
                return Ok(index);
            }
        }
    }
    Err(errors.bad())
}

fn strip_prefix_ignore_case<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

fn key(secret: &str, normalization: SecretNormalization) -> Vec<u8> {
    normalize(secret, normalization).into_bytes()
}

fn keys(secrets: &[String], normalization: SecretNormalization) -> Vec<Vec<u8>> {
    secrets
        .iter()
        .map(|secret| key(secret, normalization))
        .collect()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail; an empty tag would never verify.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The index of the first secret under which any of the signatures verifies.
fn matching_secret(keys: &[Vec<u8>], signatures: &[Vec<u8>], parts: &[&[u8]]) -> Option<usize> {
    keys.iter().position(|key| {
        let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
            return false;
        };
        for part in parts {
            mac.update(part);
        }
        // Every signature is compared (constant-time each) so timing does not reveal which.
        signatures.iter().fold(false, |found, signature| {
            mac.clone().verify_slice(signature).is_ok() | found
        })
    })
}

fn decode(text: &str, encoding: Encoding) -> Option<Vec<u8>> {
    use base64::Engine;
    let hex = || hex::decode(text).ok();
    let base64 = || {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .ok()
    };
    let bytes = match encoding {
        Encoding::Hex => hex(),
        Encoding::Base64 => base64(),
        Encoding::Any if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) => hex(),
        Encoding::Any => base64(),
    }?;
    (bytes.len() == 32).then_some(bytes)
}

fn encode(digest: &[u8], encoding: Encoding) -> String {
    use base64::Engine;
    match encoding {
        Encoding::Hex | Encoding::Any => hex::encode(digest),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(digest),
    }
}

/// Parses `t=1712741696,v1=abc…,v1=def…` (spaces allowed, unknown keys such as `v0` ignored).
fn parse_timestamped(value: &str, encoding: Encoding) -> Result<(i64, Vec<Vec<u8>>), &'static str> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        let Some((name, content)) = item.trim().split_once('=') else {
            return Err("expected comma-separated `key=value` items");
        };
        match name.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err("it carries more than one `t=` item");
                }
                let content = content.trim();
                if content.is_empty() || !content.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("`t=` is not unix seconds");
                }
                timestamp = Some(
                    content
                        .parse::<i64>()
                        .map_err(|_| "`t=` is not unix seconds")?,
                );
            }
            "v1" => signatures.push(
                decode(content.trim(), encoding)
                    .ok_or("a `v1=` item is not a SHA-256 digest in the expected encoding")?,
            ),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("it has no `t=` item")?;
    if signatures.is_empty() {
        return Err("it has no `v1=` item");
    }
    Ok((timestamp, signatures))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_encoding_tells_hex_from_base64() {
        let digest = [7u8; 32];
        let hex = hex::encode(digest);
        let b64 = encode(&digest, Encoding::Base64);
        assert_eq!(decode(&hex, Encoding::Any).as_deref(), Some(&digest[..]));
        assert_eq!(
            decode(&hex.to_uppercase(), Encoding::Any).as_deref(),
            Some(&digest[..])
        );
        assert_eq!(decode(&b64, Encoding::Any).as_deref(), Some(&digest[..]));
        assert_eq!(
            decode(b64.trim_end_matches('='), Encoding::Any).as_deref(),
            Some(&digest[..])
        );
        assert_eq!(decode(&b64, Encoding::Hex), None);
        assert_eq!(decode("abcd", Encoding::Any), None);
        assert_eq!(decode("", Encoding::Any), None);
    }

    #[test]
    fn timestamped_header_grammar() {
        let sig = hex::encode([1u8; 32]);
        let ok =
            parse_timestamped(&format!("t=5, v0=zz, v1={sig},v1={sig}"), Encoding::Hex).unwrap();
        assert_eq!((ok.0, ok.1.len()), (5, 2));
        for bad in [
            format!("v1={sig}"),
            "t=5".to_owned(),
            format!("t=-5,v1={sig}"),
            format!("t=5,t=6,v1={sig}"),
            format!("t=99999999999999999999,v1={sig}"),
            "garbage".to_owned(),
            "t=5,v1=xyz".to_owned(),
        ] {
            assert!(parse_timestamped(&bad, Encoding::Hex).is_err(), "{bad}");
        }
    }
}
