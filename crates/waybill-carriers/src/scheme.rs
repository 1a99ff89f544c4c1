//! Composed verification: a scheme is an *algorithm*, a *signed template*, and *where* the
//! signature, timestamp, key id and message id come from. Standard Webhooks, Stripe, Slack,
//! GitHub, a plain digest of the body and a secret, and RSA/ECDSA/Ed25519 signatures with keys
//! named by a key id are all spellings of one table, not code.

use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use http::{HeaderMap, HeaderName};
use rsa::signature::Verifier as _;
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;
use unicode_normalization::UnicodeNormalization;

use crate::error::VerifyError;
use crate::keys::{KeyMaterial, KeySet};
use crate::template::{Part, SignedTemplate, TemplateValues};

/// The signature algorithms of a composed scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Algorithm {
    HmacSha1,
    HmacSha256,
    HmacSha512,
    /// A plain SHA-256 digest of the template (which usually contains `{secret}`).
    Sha256,
    /// A plain SHA-512 digest of the template.
    Sha512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (JWS `RS256`).
    RsaSha256,
    /// RSASSA-PSS with SHA-256 and MGF1-SHA-256 (JWS `PS256`).
    RsaPssSha256,
    /// ECDSA on P-256 with SHA-256 (JWS `ES256`); DER or fixed 64-byte signatures.
    EcdsaP256Sha256,
    /// Ed25519 (JWS `EdDSA`).
    Ed25519,
    /// The value equals a secret (compared as SHA-256 digests, in constant time).
    Token,
}

impl Algorithm {
    fn is_asymmetric(self) -> bool {
        matches!(
            self,
            Algorithm::RsaSha256
                | Algorithm::RsaPssSha256
                | Algorithm::EcdsaP256Sha256
                | Algorithm::Ed25519
        )
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha1 => "hmac_sha1",
            Algorithm::HmacSha256 => "hmac_sha256",
            Algorithm::HmacSha512 => "hmac_sha512",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::RsaSha256 => "rsa_sha256",
            Algorithm::RsaPssSha256 => "rsa_pss_sha256",
            Algorithm::EcdsaP256Sha256 => "ecdsa_p256_sha256",
            Algorithm::Ed25519 => "ed25519",
            Algorithm::Token => "token",
        }
    }
}

/// How the signature's bytes are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SignatureEncoding {
    /// Hex if every character is a hex digit and the length is even, else base64 (standard or
    /// URL-safe, padded or not).
    #[default]
    Any,
    Hex,
    Base64,
    Base64url,
}

/// How a configured secret becomes key bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SecretEncoding {
    /// The secret's UTF-8 bytes.
    #[default]
    Utf8,
    /// Base64 of the key bytes.
    Base64,
    /// Hex of the key bytes.
    Hex,
    /// Standard Webhooks: `whsec_` then base64 of the key bytes (the prefix is optional).
    Whsec,
}

/// Where a value is in the request: a header or a query parameter, optionally one item of a
/// list (`t=…,v1=…`; `v1,sig v1,sig`), after an optional prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValueSource {
    header: Option<HeaderName>,
    query: Option<String>,
    /// Splits the value into items (`,` for Stripe, ` ` for Standard Webhooks).
    separator: Option<String>,
    /// Keeps the items named so (`v1`), without the name.
    item: Option<String>,
    /// Between an item's name and its value (`=` by default; `,` for Standard Webhooks).
    item_separator: String,
    /// A prefix before the value (`sha256=`, `v0=`), matched ignoring ASCII case.
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueSourceTable {
    header: Option<String>,
    query: Option<String>,
    separator: Option<String>,
    item: Option<String>,
    item_separator: Option<String>,
    prefix: Option<String>,
}

impl<'de> Deserialize<'de> for ValueSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Header(String),
            Table(ValueSourceTable),
        }
        let table = match Written::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "expected a header name or a table { header | query, separator, item, item_separator, prefix }",
            )
        })? {
            Written::Header(header) => ValueSourceTable {
                header: Some(header),
                query: None,
                separator: None,
                item: None,
                item_separator: None,
                prefix: None,
            },
            Written::Table(table) => table,
        };
        ValueSource::from_table(table).map_err(serde::de::Error::custom)
    }
}

impl ValueSource {
    fn from_table(table: ValueSourceTable) -> Result<ValueSource, String> {
        let header = match (&table.header, &table.query) {
            (Some(name), None) => Some(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?,
            ),
            (None, Some(_)) => None,
            _ => return Err("give exactly one of `header` or `query`".to_owned()),
        };
        if table.item.is_some() && table.separator.is_none() {
            return Err("`item` needs `separator` (what splits the list)".to_owned());
        }
        if table.separator.as_deref() == Some("") || table.item_separator.as_deref() == Some("") {
            return Err("separators cannot be empty".to_owned());
        }
        Ok(ValueSource {
            header,
            query: table.query,
            separator: table.separator,
            item: table.item,
            item_separator: table.item_separator.unwrap_or_else(|| "=".to_owned()),
            prefix: table.prefix.filter(|prefix| !prefix.is_empty()),
        })
    }

    /// How the source is named in error messages.
    pub fn describe(&self) -> String {
        match (&self.header, &self.query) {
            (Some(header), _) => header.as_str().to_owned(),
            (None, Some(query)) => format!("query parameter {query}"),
            (None, None) => "(nowhere)".to_owned(),
        }
    }

    /// The header, if the value comes from one.
    pub fn header(&self) -> Option<&HeaderName> {
        self.header.as_ref()
    }

    /// Every value found: raw values split into items, filtered by item name, prefix removed.
    /// `Err` when a value is not visible ASCII or lacks the prefix.
    fn values(&self, request: &Request<'_>) -> Result<Vec<String>, &'static str> {
        let raw: Vec<String> = match (&self.header, &self.query) {
            (Some(header), _) => request
                .headers
                .get_all(header)
                .iter()
                .map(|value| {
                    value
                        .to_str()
                        .map(str::to_owned)
                        .map_err(|_| "it is not visible ASCII")
                })
                .collect::<Result<_, _>>()?,
            (None, Some(name)) => request
                .url
                .and_then(|url| url.split_once('?'))
                .map(|(_, query)| {
                    form_urlencoded::parse(query.as_bytes())
                        .filter(|(key, _)| key == name)
                        .map(|(_, value)| value.into_owned())
                        .collect()
                })
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        let mut values = Vec::new();
        for value in raw {
            let items: Vec<&str> = match &self.separator {
                Some(separator) => value.split(separator.as_str()).map(str::trim).collect(),
                None => vec![value.trim()],
            };
            for item in items.into_iter().filter(|item| !item.is_empty()) {
                let item = match &self.item {
                    Some(name) => match item.split_once(self.item_separator.as_str()) {
                        Some((key, rest)) if key.trim() == name => rest.trim(),
                        _ => continue,
                    },
                    None => item,
                };
                let item = match &self.prefix {
                    Some(prefix) => strip_prefix_ignore_case(item, prefix)
                        .ok_or("it does not start with the expected prefix")?,
                    None => item,
                };
                values.push(item.to_owned());
            }
        }
        Ok(values)
    }
}

fn strip_prefix_ignore_case<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// The format 2 keys of one `[verify]` table, with their defaults filled in (see
/// [`crate::verify::VerifyTable::composed`]); checked into a [`Scheme`] by [`Scheme::from_table`].
#[derive(Debug, Clone)]
pub(crate) struct SchemeTable {
    pub algorithm: Algorithm,
    pub signed: Option<String>,
    pub signature: Option<ValueSource>,
    pub encoding: SignatureEncoding,
    pub timestamp: Option<ValueSource>,
    pub timestamp_unit: TimestampUnit,
    pub tolerance_seconds: Option<u64>,
    pub id: Option<ValueSource>,
    pub key_id: Option<ValueSource>,
    pub secret_encoding: SecretEncoding,
    pub secret_normalization: SecretNormalization,
}

/// The unit of a signed timestamp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TimestampUnit {
    #[default]
    Seconds,
    Millis,
}

/// A checked composed scheme.
#[derive(Debug, Clone)]
pub(crate) struct Scheme {
    algorithm: Algorithm,
    signed: SignedTemplate,
    signature: ValueSource,
    encoding: SignatureEncoding,
    timestamp: Option<(ValueSource, TimestampUnit, u64)>,
    id: Option<ValueSource>,
    key_id: Option<ValueSource>,
    secret_encoding: SecretEncoding,
    normalization: SecretNormalization,
}

/// The request and the credentials a scheme is checked against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub url: Option<&'a str>,
    pub secrets: &'a [String],
    pub keys: &'a [&'a KeySet],
    pub now: DateTime<Utc>,
}

impl Scheme {
    /// Checks a table's fields against each other.
    pub fn from_table(table: SchemeTable) -> Result<Scheme, (&'static str, String)> {
        let signed = match &table.signed {
            Some(text) => {
                SignedTemplate::parse(text).map_err(|reason| ("verify.signed", reason))?
            }
            None => SignedTemplate::body(),
        };
        let signature = table.signature.ok_or((
            "verify.signature",
            "every algorithm needs to know where the signature is".to_owned(),
        ))?;
        if signed.uses(&Part::Timestamp) && table.timestamp.is_none() {
            return Err((
                "verify.timestamp",
                "the signed template uses {timestamp}: say where it is".to_owned(),
            ));
        }
        if signed.uses(&Part::Id) && table.id.is_none() {
            return Err((
                "verify.id",
                "the signed template uses {id}: say where it is".to_owned(),
            ));
        }
        if table.algorithm.is_asymmetric() && signed.uses(&Part::Secret) {
            return Err((
                "verify.signed",
                "public-key algorithms have no secret to sign".to_owned(),
            ));
        }
        if !table.algorithm.is_asymmetric() && table.key_id.is_some() {
            return Err((
                "verify.key_id",
                "only public-key algorithms choose keys by id".to_owned(),
            ));
        }
        if table.algorithm == Algorithm::Token && table.signed.is_some() {
            return Err((
                "verify.signed",
                "a token is compared, not signed".to_owned(),
            ));
        }
        if table.tolerance_seconds.is_some() && table.timestamp.is_none() {
            return Err((
                "verify.tolerance_seconds",
                "there is no timestamp to bound".to_owned(),
            ));
        }
        Ok(Scheme {
            algorithm: table.algorithm,
            signed,
            signature,
            encoding: table.encoding,
            timestamp: table.timestamp.map(|source| {
                (
                    source,
                    table.timestamp_unit,
                    table.tolerance_seconds.unwrap_or(DEFAULT_TOLERANCE_SECONDS),
                )
            }),
            id: table.id,
            key_id: table.key_id,
            secret_encoding: table.secret_encoding,
            normalization: table.secret_normalization,
        })
    }

    /// The signature's header, if it is in one.
    pub fn header(&self) -> Option<&HeaderName> {
        self.signature.header()
    }

    /// The algorithm's name as written in profiles.
    pub fn algorithm_name(&self) -> &'static str {
        self.algorithm.name()
    }

    /// Checks a request. `Ok(Some(i))` names the secret that matched (symmetric algorithms).
    pub fn verify(&self, request: &Request<'_>) -> Result<Option<usize>, VerifyError> {
        let place = self.signature.describe();
        let malformed = |reason| VerifyError::MalformedSignature {
            header: place.clone(),
            reason,
        };
        let encoded = self.signature.values(request).map_err(malformed)?;
        if encoded.is_empty() {
            return Err(VerifyError::MissingSignature { header: place });
        }
        let timestamp = self.read_timestamp(request)?;
        let id = match &self.id {
            Some(source) => Some(single(source, request)?),
            None => None,
        };
        let values = TemplateValues {
            body: request.body,
            timestamp: timestamp.as_ref().map(|(text, _)| text.as_str()),
            id: id.as_deref(),
            secret: None,
            url: request.url,
            headers: request.headers,
        };
        let matched = if self.algorithm == Algorithm::Token {
            self.match_token(&encoded, request)?
        } else {
            let signatures: Vec<Vec<u8>> = encoded
                .iter()
                .map(|text| decode(text, self.encoding))
                .collect::<Option<_>>()
                .ok_or_else(|| malformed("it is not a signature in the expected encoding"))?;
            if self.algorithm.is_asymmetric() {
                self.match_public_key(&signatures, &values, request)?;
                None
            } else {
                Some(self.match_secret(&signatures, &values, request)?)
            }
        };
        // Checked after the signature, so a forgery is reported as a forgery; a genuine but
        // old signature is a replay.
        if let (Some((_, seconds)), Some((source, _, tolerance))) = (timestamp, &self.timestamp)
            && request.now.timestamp().abs_diff(seconds) > *tolerance
        {
            return Err(VerifyError::TimestampOutsideTolerance {
                header: source.describe(),
                tolerance_seconds: *tolerance,
            });
        }
        Ok(matched)
    }

    fn read_timestamp(&self, request: &Request<'_>) -> Result<Option<(String, i64)>, VerifyError> {
        let Some((source, unit, _)) = &self.timestamp else {
            return Ok(None);
        };
        let text = single(source, request)?;
        let number = (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<i64>().ok())
            .flatten()
            .ok_or(VerifyError::MalformedSignature {
                header: source.describe(),
                reason: "the timestamp is not a unix time in whole units",
            })?;
        let seconds = match unit {
            TimestampUnit::Seconds => number,
            TimestampUnit::Millis => number / 1000,
        };
        Ok(Some((text, seconds)))
    }

    fn secret_key(&self, secret: &str) -> Option<Vec<u8>> {
        use base64::Engine;
        let secret = normalize(secret, self.normalization);
        match self.secret_encoding {
            SecretEncoding::Utf8 => Some(secret.into_bytes()),
            SecretEncoding::Hex => hex::decode(secret.trim()).ok(),
            SecretEncoding::Base64 => base64_any(secret.trim()),
            SecretEncoding::Whsec => {
                let text = secret.trim();
                base64::engine::general_purpose::STANDARD
                    .decode(text.strip_prefix("whsec_").unwrap_or(text))
                    .ok()
            }
        }
    }

    fn match_secret(
        &self,
        signatures: &[Vec<u8>],
        values: &TemplateValues<'_>,
        request: &Request<'_>,
    ) -> Result<usize, VerifyError> {
        if request.secrets.is_empty() {
            return Err(VerifyError::NoSecretsConfigured);
        }
        let bad = || VerifyError::BadSignature {
            header: self.signature.describe(),
        };
        for (index, secret) in request.secrets.iter().enumerate() {
            let Some(key) = self.secret_key(secret) else {
                continue;
            };
            let with_secret = TemplateValues {
                secret: Some(&key),
                ..*values
            };
            let Some(message) = self.signed.render(&with_secret) else {
                return Err(VerifyError::MalformedSignature {
                    header: self.signature.describe(),
                    reason: "a value the signed template needs is missing from the request",
                });
            };
            let expected = match self.algorithm {
                Algorithm::HmacSha1 => mac::<hmac::Hmac<sha1::Sha1>>(&key, &message),
                Algorithm::HmacSha256 => mac::<hmac::Hmac<Sha256>>(&key, &message),
                Algorithm::HmacSha512 => mac::<hmac::Hmac<Sha512>>(&key, &message),
                Algorithm::Sha256 => Sha256::digest(&message).to_vec(),
                Algorithm::Sha512 => Sha512::digest(&message).to_vec(),
                _ => return Err(bad()),
            };
            // Every signature is compared, each in constant time, so timing does not tell which.
            let found = signatures.iter().fold(false, |found, signature| {
                bool::from(expected.ct_eq(signature)) | found
            });
            if found {
                return Ok(index);
            }
        }
        Err(bad())
    }

    fn match_token(
        &self,
        encoded: &[String],
        request: &Request<'_>,
    ) -> Result<Option<usize>, VerifyError> {
        if request.secrets.is_empty() {
            return Err(VerifyError::NoSecretsConfigured);
        }
        // Digests, not strings: constant-time even when the lengths differ.
        for value in encoded {
            let received = Sha256::digest(value.as_bytes());
            for (index, secret) in request.secrets.iter().enumerate() {
                let expected = Sha256::digest(normalize(secret, self.normalization).as_bytes());
                if bool::from(expected.ct_eq(&received)) {
                    return Ok(Some(index));
                }
            }
        }
        Err(VerifyError::BadSignature {
            header: self.signature.describe(),
        })
    }

    fn match_public_key(
        &self,
        signatures: &[Vec<u8>],
        values: &TemplateValues<'_>,
        request: &Request<'_>,
    ) -> Result<(), VerifyError> {
        let message = self
            .signed
            .render(values)
            .ok_or(VerifyError::MalformedSignature {
                header: self.signature.describe(),
                reason: "a value the signed template needs is missing from the request",
            })?;
        let key_id = match &self.key_id {
            Some(source) => Some(single(source, request)?),
            None => None,
        };
        if request.keys.iter().all(|set| set.is_empty()) {
            return Err(VerifyError::NoKeysConfigured);
        }
        let mut tried = 0;
        for set in request.keys {
            for key in set.candidates(key_id.as_deref()) {
                tried += 1;
                if signatures
                    .iter()
                    .any(|signature| self.verify_with(&key.material, &message, signature))
                {
                    return Ok(());
                }
            }
        }
        match key_id {
            Some(key_id) if tried == 0 => Err(VerifyError::UnknownKey {
                key_id: printable(&key_id),
            }),
            _ => Err(VerifyError::BadSignature {
                header: self.signature.describe(),
            }),
        }
    }

    fn verify_with(&self, key: &KeyMaterial, message: &[u8], signature: &[u8]) -> bool {
        match (self.algorithm, key) {
            (Algorithm::RsaSha256, KeyMaterial::Rsa(key)) => {
                let verifier = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone());
                rsa::pkcs1v15::Signature::try_from(signature)
                    .is_ok_and(|signature| verifier.verify(message, &signature).is_ok())
            }
            (Algorithm::RsaPssSha256, KeyMaterial::Rsa(key)) => {
                let verifier = rsa::pss::VerifyingKey::<Sha256>::new(key.clone());
                rsa::pss::Signature::try_from(signature)
                    .is_ok_and(|signature| verifier.verify(message, &signature).is_ok())
            }
            (Algorithm::EcdsaP256Sha256, KeyMaterial::P256(key)) => {
                let parsed = if signature.len() == 64 {
                    p256::ecdsa::Signature::from_slice(signature)
                } else {
                    p256::ecdsa::Signature::from_der(signature)
                };
                parsed.is_ok_and(|signature| key.verify(message, &signature).is_ok())
            }
            (Algorithm::Ed25519, KeyMaterial::Ed25519(key)) => {
                ed25519_dalek::Signature::from_slice(signature)
                    .is_ok_and(|signature| key.verify_strict(message, &signature).is_ok())
            }
            _ => false,
        }
    }

    /// The headers a sender holding `secret` attaches to `body` at `now` (symmetric algorithms
    /// with header sources only). For tests and load generators.
    pub fn sign(
        &self,
        body: &[u8],
        secret: &str,
        now: DateTime<Utc>,
    ) -> Option<Vec<(String, String)>> {
        use base64::Engine;
        let mut headers = Vec::new();
        let timestamp = self.timestamp.as_ref().map(|(source, unit, _)| {
            let value = match unit {
                TimestampUnit::Seconds => now.timestamp(),
                TimestampUnit::Millis => now.timestamp_millis(),
            };
            (source, value.to_string())
        });
        let id = self
            .id
            .as_ref()
            .map(|source| (source, format!("msg_{}", now.timestamp_micros())));
        let key = self.secret_key(secret)?;
        let empty = HeaderMap::new();
        let values = TemplateValues {
            body,
            timestamp: timestamp.as_ref().map(|(_, text)| text.as_str()),
            id: id.as_ref().map(|(_, text)| text.as_str()),
            secret: Some(&key),
            url: None,
            headers: &empty,
        };
        let digest = match self.algorithm {
            Algorithm::Token => key.clone(),
            Algorithm::HmacSha1 => {
                mac::<hmac::Hmac<sha1::Sha1>>(&key, &self.signed.render(&values)?)
            }
            Algorithm::HmacSha256 => mac::<hmac::Hmac<Sha256>>(&key, &self.signed.render(&values)?),
            Algorithm::HmacSha512 => mac::<hmac::Hmac<Sha512>>(&key, &self.signed.render(&values)?),
            Algorithm::Sha256 => Sha256::digest(self.signed.render(&values)?).to_vec(),
            Algorithm::Sha512 => Sha512::digest(self.signed.render(&values)?).to_vec(),
            _ => return None,
        };
        let encoded = match (self.algorithm, self.encoding) {
            (Algorithm::Token, _) => String::from_utf8(digest).ok()?,
            (_, SignatureEncoding::Any | SignatureEncoding::Hex) => hex::encode(digest),
            (_, SignatureEncoding::Base64) => {
                base64::engine::general_purpose::STANDARD.encode(digest)
            }
            (_, SignatureEncoding::Base64url) => {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
            }
        };
        let mut signature = format!(
            "{}{encoded}",
            self.signature.prefix.as_deref().unwrap_or("")
        );
        if let Some(item) = &self.signature.item {
            signature = format!("{item}{}{signature}", self.signature.item_separator);
        }
        let mut pending: Vec<(&ValueSource, String)> = Vec::new();
        if let Some((source, text)) = timestamp {
            pending.push((source, text));
        }
        if let Some((source, text)) = id {
            pending.push((source, text));
        }
        pending.push((&self.signature, signature));
        for (source, value) in pending {
            let header = source.header()?.as_str().to_owned();
            let value = match (&source.item, source == &self.signature) {
                (Some(item), false) => format!("{item}{}{value}", source.item_separator),
                _ => value,
            };
            // Items of one header (Stripe's `t=…,v1=…`) go into one value.
            match headers
                .iter_mut()
                .find(|(name, _): &&mut (String, String)| *name == header)
            {
                Some((_, existing)) => {
                    let separator = source.separator.as_deref().unwrap_or(",");
                    existing.push_str(separator);
                    existing.push_str(&value);
                }
                None => headers.push((header, value)),
            }
        }
        Some(headers)
    }
}

/// A key id or message id as it may appear in an error: visible ASCII, at most 64 characters.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// The one value of a timestamp, id or key id source.
fn single(source: &ValueSource, request: &Request<'_>) -> Result<String, VerifyError> {
    let values = source
        .values(request)
        .map_err(|reason| VerifyError::MalformedSignature {
            header: source.describe(),
            reason,
        })?;
    match values.as_slice() {
        [] => Err(VerifyError::MissingSignature {
            header: source.describe(),
        }),
        [one] => Ok(one.clone()),
        [first, rest @ ..] if rest.iter().all(|value| value == first) => Ok(first.clone()),
        _ => Err(VerifyError::MalformedSignature {
            header: source.describe(),
            reason: "it carries different values",
        }),
    }
}

fn mac<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail; an empty tag would never verify.
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn base64_any(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

fn decode(text: &str, encoding: SignatureEncoding) -> Option<Vec<u8>> {
    use base64::Engine;
    match encoding {
        SignatureEncoding::Hex => hex::decode(text).ok(),
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .ok(),
        SignatureEncoding::Base64url => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .ok(),
        SignatureEncoding::Any
            if text.len().is_multiple_of(2)
                && !text.is_empty()
                && text.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            hex::decode(text).ok()
        }
        SignatureEncoding::Any => base64_any(text),
    }
}

/// The default replay window of `timestamped`: Stripe's and Standard Webhooks' 5 minutes.
pub(crate) const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

/// What is done to a secret before it is used as an HMAC key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SecretNormalization {
    /// The secret's UTF-8 bytes as configured.
    #[default]
    None,
    /// Unicode NFKD first (EasyPost's client libraries do this).
    Nfkd,
}

/// A secret after the profile's normalization.
pub(crate) fn normalize(secret: &str, normalization: SecretNormalization) -> String {
    match normalization {
        SecretNormalization::None => secret.to_owned(),
        SecretNormalization::Nfkd => secret.nfkd().collect(),
    }
}
