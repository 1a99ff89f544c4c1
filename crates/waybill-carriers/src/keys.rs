//! Public keys for asymmetric webhook signatures (RSA, ECDSA P-256, Ed25519): parsed from PEM
//! or JWK text in a source's configuration, or from a JWKS document a key server publishes.
//!
//! This module only *parses* and *holds* keys; fetching a JWKS document is IO and belongs to
//! the ingress, which hands the parsed [`KeySet`] to verification.

use std::fmt;

use ed25519_dalek::pkcs8::DecodePublicKey as _;
use jose_jwk::{EcCurves, Jwk, Key, OkpCurves};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use serde::Deserialize;
use serde_json::Value;

/// The largest RSA modulus accepted, in bits (larger keys only cost verification time).
const MAX_RSA_BITS: usize = 8192;

/// The smallest RSA modulus accepted, in bits (smaller keys can be factored).
const MIN_RSA_BITS: usize = 1024;

/// A key that cannot be used, with the reason (never the key material).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct KeyError {
    /// What is wrong.
    pub reason: String,
}

fn key_error(reason: impl Into<String>) -> KeyError {
    KeyError {
        reason: reason.into(),
    }
}

/// The algorithm family of a key.
#[derive(Clone)]
pub(crate) enum KeyMaterial {
    Rsa(rsa::PublicKey),
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// One public key and its key id (`kid`), if it has one.
#[derive(Clone)]
pub struct PublicKey {
    key_id: Option<String>,
    pub(crate) material: KeyMaterial,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("key_id", &self.key_id)
            .field("kind", &self.kind())
            .finish()
    }
}

impl PublicKey {
    /// The key id, if the key has one.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    /// `rsa`, `p256` or `ed25519`.
    pub fn kind(&self) -> &'static str {
        match self.material {
            KeyMaterial::Rsa(_) => "rsa",
            KeyMaterial::P256(_) => "p256",
            KeyMaterial::Ed25519(_) => "ed25519",
        }
    }

    /// Reads a PEM public key (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo, or
    /// `-----BEGIN RSA PUBLIC KEY-----`, PKCS#1).
    pub fn from_pem(pem: &str, key_id: Option<String>) -> Result<PublicKey, KeyError> {
        let material = if let Ok(key) = rsa::PublicKey::from_public_key_pem(pem) {
            KeyMaterial::Rsa(key)
        } else if let Ok(key) = rsa::PublicKey::from_pkcs1_pem(pem) {
            KeyMaterial::Rsa(key)
        } else if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            KeyMaterial::P256(key)
        } else if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
            KeyMaterial::Ed25519(key)
        } else {
            return Err(key_error(
                "not a PEM public key of a supported kind (RSA, EC P-256 or Ed25519)",
            ));
        };
        check_rsa_size(&material)?;
        Ok(PublicKey { key_id, material })
    }

    /// Reads one JWK (RFC 7517): `kty` `RSA`, `EC` with `crv` `P-256`, or `OKP` with `crv`
    /// `Ed25519`.
    pub fn from_jwk(value: &Value) -> Result<PublicKey, KeyError> {
        let jwk = Jwk::deserialize(value)
            .map_err(|error| key_error(format!("not a JSON Web Key: {error}")))?;
        let material = match &jwk.key {
            Key::Rsa(key) => {
                let n = rsa::BoxedUint::from_be_slice_vartime(key.n.as_ref());
                let e = rsa::BoxedUint::from_be_slice_vartime(key.e.as_ref());
                KeyMaterial::Rsa(
                    rsa::PublicKey::new_with_size_limits(n, e, MIN_RSA_BITS..=MAX_RSA_BITS)
                        .map_err(|error| key_error(format!("an unusable RSA key: {error}")))?,
                )
            }
            Key::Ec(key) if key.crv == EcCurves::P256 => {
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(key.x.as_ref());
                point.extend_from_slice(key.y.as_ref());
                KeyMaterial::P256(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                        .map_err(|_| key_error("an EC key whose point is not on P-256"))?,
                )
            }
            Key::Okp(key) if key.crv == OkpCurves::Ed25519 => {
                let bytes: [u8; 32] = key
                    .x
                    .as_ref()
                    .try_into()
                    .map_err(|_| key_error("an Ed25519 key is 32 bytes"))?;
                KeyMaterial::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                        .map_err(|_| key_error("an Ed25519 key that is not a curve point"))?,
                )
            }
            _ => {
                return Err(key_error(
                    "an unsupported key type (supported: RSA, EC P-256, OKP Ed25519)",
                ));
            }
        };
        Ok(PublicKey {
            key_id: jwk.prm.kid.clone(),
            material,
        })
    }
}

fn check_rsa_size(material: &KeyMaterial) -> Result<(), KeyError> {
    use rsa::traits::PublicKeyParts as _;
    if let KeyMaterial::Rsa(key) = material
        && key.n().bit_width() as usize > MAX_RSA_BITS
    {
        return Err(key_error(format!("an RSA key above {MAX_RSA_BITS} bits")));
    }
    Ok(())
}

/// A set of public keys: a source's configured keys, or a JWKS document. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys of unsupported types or with bad
    /// parameters are skipped (a key server may publish keys for other uses); the second value
    /// counts them. A document that is not a JWKS at all is an error.
    pub fn from_jwks(body: &[u8]) -> Result<(KeySet, usize), KeyError> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let document: Document = serde_json::from_slice(body)
            .map_err(|error| key_error(format!("not a JWKS document: {error}")))?;
        let mut keys = Vec::new();
        let mut skipped = 0;
        for value in &document.keys {
            // Keys meant for encryption are not signature keys.
            if value.get("use").and_then(Value::as_str) == Some("enc") {
                skipped += 1;
                continue;
            }
            match PublicKey::from_jwk(value) {
                Ok(key) => keys.push(key),
                Err(_) => skipped += 1,
            }
        }
        Ok((KeySet { keys }, skipped))
    }

    /// Parses a source's `public_keys`: each entry is a PEM public key, a JWK object or a JWKS
    /// document. A PEM entry may be preceded by a line `kid: <id>` to give it a key id.
    pub fn from_config(entries: &[String]) -> Result<KeySet, KeyError> {
        let mut keys = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let at = |error: KeyError| key_error(format!("public key {index}: {}", error.reason));
            let text = entry.trim();
            if text.starts_with('{') {
                let value: Value = serde_json::from_str(text)
                    .map_err(|error| at(key_error(format!("not JSON: {error}"))))?;
                if value.get("keys").is_some() {
                    let (set, _) = KeySet::from_jwks(text.as_bytes()).map_err(at)?;
                    keys.extend(set.keys);
                } else {
                    keys.push(PublicKey::from_jwk(&value).map_err(at)?);
                }
            } else {
                let (key_id, pem) = match text.strip_prefix("kid:") {
                    Some(rest) => {
                        let (id, pem) = rest.split_once('\n').unwrap_or((rest, ""));
                        (Some(id.trim().to_owned()), pem.trim())
                    }
                    None => (None, text),
                };
                keys.push(PublicKey::from_pem(pem, key_id).map_err(at)?);
            }
        }
        Ok(KeySet { keys })
    }

    /// A set of the given keys.
    pub fn from_keys(keys: Vec<PublicKey>) -> KeySet {
        KeySet { keys }
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key has this id.
    pub fn contains_key_id(&self, key_id: &str) -> bool {
        self.keys.iter().any(|key| key.key_id() == Some(key_id))
    }

    /// The keys to try for a request naming `key_id`: the ones with that id, plus keys without
    /// an id (configured PEM keys). For a request naming none: every key.
    pub(crate) fn candidates<'s>(
        &'s self,
        key_id: Option<&'s str>,
    ) -> impl Iterator<Item = &'s PublicKey> {
        self.keys
            .iter()
            .filter(move |key| match (key_id, key.key_id()) {
                (Some(wanted), Some(id)) => wanted == id,
                _ => true,
            })
    }
}
