//! API keys, their scopes, and the callers they authenticate. Pure: the key set is a value handed
//! in by whoever keeps it (the ingress and the worker receive it from the bus; see
//! `docs/security.md`), so every rule here is a function of values.
//!
//! A key is `wbk_<id>_<secret>`: `wbk_` marks it as a Waybill key (secret scanners can match
//! it), `<id>` is 12 characters of `a-z 0-9` that name the key publicly (shown by
//! `waybill keys list`, logged), and `<secret>` is 32 random bytes in unpadded base64url (43
//! characters). Only SHA-256 of the secret is stored: the secret has 256 bits of entropy, so a
//! fast hash is as good as a slow KDF against guessing, and verification costs microseconds.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::TenantId;

/// What every Waybill API key starts with.
pub const KEY_PREFIX: &str = "wbk_";

/// A permission a key carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Register shipments (`POST /v1/shipments` on the ingress).
    #[serde(rename = "shipments:write")]
    ShipmentsWrite,
    /// Read shipments and their histories (the worker's `GET /v1/shipments…`).
    #[serde(rename = "shipments:read")]
    ShipmentsRead,
    /// Everything, for any tenant: implies every other scope and lets the caller name another
    /// tenant (`?tenant=`). For the installation's operators only.
    #[serde(rename = "admin")]
    Admin,
    /// See everything of the key's tenant in the operator console, change nothing. Console
    /// only: it does not open the platform API (that takes `shipments:read`).
    #[serde(rename = "read")]
    Read,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [
        Scope::ShipmentsWrite,
        Scope::ShipmentsRead,
        Scope::Admin,
        Scope::Read,
    ];

    /// The scope's name: `shipments:write`, `shipments:read`, `admin`, `read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ShipmentsWrite => "shipments:write",
            Scope::ShipmentsRead => "shipments:read",
            Scope::Admin => "admin",
            Scope::Read => "read",
        }
    }

    /// Parses a scope name.
    pub fn parse(raw: &str) -> Result<Scope, KeyFormatError> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == raw.trim())
            .ok_or_else(|| KeyFormatError::UnknownScope(raw.to_owned()))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a key, a key id or a scope. Messages never repeat the input's secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// Not `wbk_<12 characters>_<43 characters>`.
    #[error("an API key looks like wbk_<12-character id>_<43-character secret>")]
    Malformed,
    /// Not 12 characters of `a-z 0-9` (optionally after `wbk_`).
    #[error("a key id is 12 characters of a-z and 0-9, optionally prefixed with wbk_")]
    BadId,
    /// A scope nobody knows.
    #[error("unknown scope `{0}` (known: shipments:write, shipments:read, admin, read)")]
    UnknownScope(String),
}

/// The public name of a key: 12 characters of `a-z 0-9`. Not a secret; shown and logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// Length of a key id.
    pub const LEN: usize = 12;

    /// Parses a key id, accepted bare (`ab12cd34ef56`) or as the key's public prefix
    /// (`wbk_ab12cd34ef56`).
    pub fn parse(raw: &str) -> Result<KeyId, KeyFormatError> {
        let raw = raw.trim();
        let bare = raw.strip_prefix(KEY_PREFIX).unwrap_or(raw);
        let bare = bare.strip_suffix('_').unwrap_or(bare);
        if bare.len() == Self::LEN
            && bare
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            Ok(KeyId(bare.to_owned()))
        } else {
            Err(KeyFormatError::BadId)
        }
    }

    /// The bare id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's public prefix, `wbk_<id>`: what `waybill keys list` shows.
    pub fn public_prefix(&self) -> String {
        format!("{KEY_PREFIX}{}", self.0)
    }
}

crate::string_conversions!(KeyId, KeyFormatError);

/// A whole API key, secret included. Its `Debug` shows the id only; the secret, held in a
/// redacting [`SecretString`] (wiped when dropped), leaves this type only through
/// [`ApiKey::expose`] (to show it once at creation) and as its hash.
#[derive(Clone)]
pub struct ApiKey {
    id: KeyId,
    secret: SecretString,
}

impl PartialEq for ApiKey {
    fn eq(&self, other: &ApiKey) -> bool {
        self.id == other.id && self.secret.expose_secret() == other.secret.expose_secret()
    }
}

impl Eq for ApiKey {}

impl ApiKey {
    /// Length of the secret part: 32 bytes in unpadded base64url.
    pub const SECRET_LEN: usize = 43;

    /// Parses `wbk_<id>_<secret>` (surrounding white space ignored).
    pub fn parse(token: &str) -> Result<ApiKey, KeyFormatError> {
        let rest = token
            .trim()
            .strip_prefix(KEY_PREFIX)
            .ok_or(KeyFormatError::Malformed)?;
        // The id has no `_`; the secret may (base64url), so split at the first one only.
        let (id, secret) = rest.split_once('_').ok_or(KeyFormatError::Malformed)?;
        let id = KeyId::parse(id).map_err(|_| KeyFormatError::Malformed)?;
        ApiKey::from_parts(id, secret.to_owned())
    }

    /// Builds a key from an id and a secret of 43 base64url characters (the CLI draws both at
    /// random).
    pub fn from_parts(id: KeyId, secret: String) -> Result<ApiKey, KeyFormatError> {
        let well_formed = secret.len() == Self::SECRET_LEN
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if well_formed {
            Ok(ApiKey {
                id,
                secret: secret.into(),
            })
        } else {
            Err(KeyFormatError::Malformed)
        }
    }

    /// The key's public id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// SHA-256 of the secret: what is stored and distributed instead of the key.
    pub fn secret_sha256(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.secret.expose_secret().as_bytes()).into())
    }

    /// The whole key as the client sends it. Call it only to hand the key to its owner once.
    pub fn expose(&self) -> String {
        format!("{KEY_PREFIX}{}_{}", self.id, self.secret.expose_secret())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// SHA-256 of a key's secret. Serialised as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// From the 32 raw bytes (as stored in `api_keys.secret_sha256`).
    pub fn from_slice(bytes: &[u8]) -> Option<SecretHash> {
        Some(SecretHash(bytes.try_into().ok()?))
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Compares in time independent of where the hashes differ.
    pub fn matches(&self, other: &SecretHash) -> bool {
        let difference = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}…)", &hex::encode(self.0)[..8])
    }
}

impl TryFrom<String> for SecretHash {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        let bytes = hex::decode(&value).map_err(|error| format!("secret_sha256: {error}"))?;
        SecretHash::from_slice(&bytes).ok_or_else(|| "secret_sha256 is not 32 bytes".to_owned())
    }
}

impl From<SecretHash> for String {
    fn from(value: SecretHash) -> Self {
        hex::encode(value.0)
    }
}

/// What the key set knows about one key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key's id.
    pub id: KeyId,
    /// The tenant the key acts for.
    pub tenant: TenantId,
    /// What it may do.
    pub scopes: BTreeSet<Scope>,
    /// SHA-256 of its secret.
    pub secret_sha256: SecretHash,
    /// True once revoked: it authenticates nobody.
    pub revoked: bool,
}

/// Every key of the installation, looked up by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: HashMap<KeyId, KeyRecord>,
}

impl KeySet {
    /// A key set of these records (a later record with the same id wins).
    pub fn new(records: impl IntoIterator<Item = KeyRecord>) -> KeySet {
        KeySet {
            keys: records
                .into_iter()
                .map(|record| (record.id.clone(), record))
                .collect(),
        }
    }

    /// How many keys (revoked ones included).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Authenticates an `Authorization` header value (`Bearer wbk_…`; `None` when the header is
    /// absent or not visible ASCII).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, Denied> {
        let key = bearer_key(authorization)?;
        self.recheck(key.id(), &key.secret_sha256())
    }

    /// Checks a key already authenticated once, by its id and the SHA-256 of its secret (what a
    /// console session keeps instead of the key): the same answer [`KeySet::authenticate`]
    /// would give the whole key now, so a session ends at its next request once the key is
    /// revoked or gone.
    pub fn recheck(&self, id: &KeyId, secret_sha256: &SecretHash) -> Result<Principal, Denied> {
        let Some(record) = self.keys.get(id) else {
            return Err(Denied::UnknownKey(id.clone()));
        };
        // Compare even for a revoked key, so that timing tells nothing apart.
        if !record.secret_sha256.matches(secret_sha256) {
            return Err(Denied::WrongSecret(record.id.clone()));
        }
        if record.revoked {
            return Err(Denied::Revoked(record.id.clone()));
        }
        Ok(Principal {
            key_id: Some(record.id.clone()),
            tenant: record.tenant.clone(),
            scopes: record.scopes.clone(),
        })
    }
}

/// Extracts the key from `Bearer <key>` (scheme case-insensitive, RFC 6750).
fn bearer_key(authorization: Option<&str>) -> Result<ApiKey, Denied> {
    let header = authorization.ok_or(Denied::MissingCredentials)?.trim();
    let (scheme, token) = header.split_once(' ').ok_or(Denied::MalformedCredentials)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denied::MalformedCredentials);
    }
    ApiKey::parse(token).map_err(|_| Denied::MalformedCredentials)
}

/// Who is calling: the tenant and scopes of the key that authenticated the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    key_id: Option<KeyId>,
    tenant: TenantId,
    scopes: BTreeSet<Scope>,
}

impl Principal {
    /// The caller when authentication is off (`[auth] mode = "none"`, local development only):
    /// the default tenant with every scope, `admin` included.
    pub fn development() -> Principal {
        Principal {
            key_id: None,
            tenant: TenantId::default_tenant(),
            scopes: Scope::ALL.into_iter().collect(),
        }
    }

    /// The key's id (`None` when authentication is off).
    pub fn key_id(&self) -> Option<&KeyId> {
        self.key_id.as_ref()
    }

    /// The tenant the key belongs to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The key's scopes.
    pub fn scopes(&self) -> &BTreeSet<Scope> {
        &self.scopes
    }

    /// True for an `admin` key (or with authentication off).
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// Whether the key may do what `scope` covers (`admin` covers everything).
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.is_admin()
    }

    /// `Ok` when the key has `scope`, else [`Denied::MissingScope`].
    pub fn require(&self, scope: Scope) -> Result<(), Denied> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(Denied::MissingScope(scope))
        }
    }

    /// The tenant a request acts on: the key's own, unless the request names one. Naming another
    /// tenant is allowed to `admin` keys only ([`Denied::OtherTenant`] otherwise).
    pub fn tenant_for(&self, requested: Option<&TenantId>) -> Result<TenantId, Denied> {
        match requested {
            None => Ok(self.tenant.clone()),
            Some(tenant) if *tenant == self.tenant || self.is_admin() => Ok(tenant.clone()),
            Some(_) => Err(Denied::OtherTenant),
        }
    }
}

/// Why a request is refused. The first five are `401 Unauthorized`, the last two `403 Forbidden`.
/// [`Denied::message`] is what the client is told: it never says whether a key id exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no `Authorization` header.
    MissingCredentials,
    /// 401: not `Bearer wbk_…`.
    MalformedCredentials,
    /// 401: no key has this id.
    UnknownKey(KeyId),
    /// 401: the key's secret does not match.
    WrongSecret(KeyId),
    /// 401: the key was revoked.
    Revoked(KeyId),
    /// 403: the key lacks the scope.
    MissingScope(Scope),
    /// 403: the request names a tenant other than the key's, and the key is not `admin`.
    OtherTenant,
}

impl Denied {
    /// True for the 401 cases (the caller is not authenticated), false for the 403 ones.
    pub fn is_unauthenticated(&self) -> bool {
        !matches!(self, Denied::MissingScope(_) | Denied::OtherTenant)
    }

    /// A closed label for metrics and logs: `missing`, `malformed`, `unknown_key`,
    /// `wrong_secret`, `revoked`, `missing_scope`, `other_tenant`.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::MissingCredentials => "missing",
            Denied::MalformedCredentials => "malformed",
            Denied::UnknownKey(_) => "unknown_key",
            Denied::WrongSecret(_) => "wrong_secret",
            Denied::Revoked(_) => "revoked",
            Denied::MissingScope(_) => "missing_scope",
            Denied::OtherTenant => "other_tenant",
        }
    }

    /// The key id involved, when one was presented (for logs; ids are not secret).
    pub fn key_id(&self) -> Option<&KeyId> {
        match self {
            Denied::UnknownKey(id) | Denied::WrongSecret(id) | Denied::Revoked(id) => Some(id),
            _ => None,
        }
    }

    /// The sentence the client gets.
    pub fn message(&self) -> String {
        match self {
            Denied::MissingCredentials => {
                "this endpoint needs an API key: send `Authorization: Bearer <key>`".to_owned()
            }
            Denied::MalformedCredentials => {
                "the Authorization header is not `Bearer wbk_<id>_<secret>`".to_owned()
            }
            Denied::UnknownKey(_) | Denied::WrongSecret(_) | Denied::Revoked(_) => {
                "the API key is not valid (unknown, wrong or revoked)".to_owned()
            }
            Denied::MissingScope(scope) => format!("the API key lacks the scope `{scope}`"),
            Denied::OtherTenant => {
                "the API key may act on its own tenant only; `tenant` names another".to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde";

    fn key() -> ApiKey {
        ApiKey::from_parts(KeyId::parse("ab12cd34ef56").unwrap(), SECRET.to_owned()).unwrap()
    }

    fn set(scopes: &[Scope], revoked: bool) -> KeySet {
        let key = key();
        KeySet::new([KeyRecord {
            id: key.id().clone(),
            tenant: TenantId::parse("acme").unwrap(),
            scopes: scopes.iter().copied().collect(),
            secret_sha256: key.secret_sha256(),
            revoked,
        }])
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_key_round_trips_and_hides_its_secret() {
        let key = key();
        let token = key.expose();
        assert_eq!(token, format!("wbk_ab12cd34ef56_{SECRET}"));
        assert_eq!(ApiKey::parse(&token).unwrap(), key);
        assert!(!format!("{key:?}").contains(SECRET));
        assert!(!format!("{:?}", key.secret_sha256()).contains(SECRET));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "wbk_",
            "wbk_ab12cd34ef56",
            "wbk_ab12cd34ef56_short",
            "xyz_ab12cd34ef56_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde",
            "wbk_AB12CD34EF56_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde",
            "wbk_ab12cd34ef56_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcd+",
        ] {
            assert_eq!(ApiKey::parse(bad), Err(KeyFormatError::Malformed), "{bad}");
        }
    }

    #[test]
    fn key_ids_parse_bare_or_prefixed() {
        assert_eq!(
            KeyId::parse("wbk_ab12cd34ef56").unwrap().as_str(),
            "ab12cd34ef56"
        );
        assert_eq!(
            KeyId::parse("ab12cd34ef56").unwrap().public_prefix(),
            "wbk_ab12cd34ef56"
        );
        assert!(KeyId::parse("ab12").is_err());
    }

    #[test]
    fn the_right_key_authenticates_its_tenant() {
        let principal = set(&[Scope::ShipmentsRead], false)
            .authenticate(Some(&bearer(&key().expose())))
            .unwrap();
        assert_eq!(principal.tenant().as_str(), "acme");
        assert!(principal.require(Scope::ShipmentsRead).is_ok());
        assert_eq!(
            principal.require(Scope::ShipmentsWrite),
            Err(Denied::MissingScope(Scope::ShipmentsWrite))
        );
        assert!(!Denied::MissingScope(Scope::ShipmentsWrite).is_unauthenticated());
    }

    #[test]
    fn wrong_missing_and_revoked_keys_are_unauthenticated() {
        let keys = set(&[Scope::ShipmentsRead], false);
        let wrong = format!("wbk_ab12cd34ef56_{}", "A".repeat(43));
        let unknown = format!("wbk_zzzzzzzzzzzz_{SECRET}");
        assert_eq!(keys.authenticate(None), Err(Denied::MissingCredentials));
        assert_eq!(
            keys.authenticate(Some("Basic abc")),
            Err(Denied::MalformedCredentials)
        );
        assert_eq!(
            keys.authenticate(Some(&key().expose())),
            Err(Denied::MalformedCredentials)
        );
        assert!(matches!(
            keys.authenticate(Some(&bearer(&wrong))),
            Err(Denied::WrongSecret(_))
        ));
        assert!(matches!(
            keys.authenticate(Some(&bearer(&unknown))),
            Err(Denied::UnknownKey(_))
        ));
        let revoked = set(&[Scope::ShipmentsRead], true);
        let denied = revoked
            .authenticate(Some(&bearer(&key().expose())))
            .unwrap_err();
        assert!(matches!(denied, Denied::Revoked(_)));
        assert!(denied.is_unauthenticated());
        assert!(!denied.message().contains(SECRET));
    }

    #[test]
    fn only_admin_keys_name_other_tenants() {
        let acme = TenantId::parse("acme").unwrap();
        let other = TenantId::parse("globex").unwrap();
        let reader = set(&[Scope::ShipmentsRead], false)
            .authenticate(Some(&bearer(&key().expose())))
            .unwrap();
        assert_eq!(reader.tenant_for(None).unwrap(), acme);
        assert_eq!(reader.tenant_for(Some(&acme)).unwrap(), acme);
        assert_eq!(reader.tenant_for(Some(&other)), Err(Denied::OtherTenant));
        let admin = set(&[Scope::Admin], false)
            .authenticate(Some(&bearer(&key().expose())))
            .unwrap();
        assert!(admin.has(Scope::ShipmentsWrite));
        assert_eq!(admin.tenant_for(Some(&other)).unwrap(), other);
        let development = Principal::development();
        assert_eq!(
            development.tenant_for(None).unwrap(),
            TenantId::default_tenant()
        );
        assert!(development.has(Scope::ShipmentsRead));
    }

    #[test]
    fn a_recheck_follows_revocation_and_the_secret() {
        let key = key();
        let live = set(&[Scope::Read], false);
        let principal = live.recheck(key.id(), &key.secret_sha256()).unwrap();
        assert_eq!(principal.tenant().as_str(), "acme");
        assert!(principal.has(Scope::Read));
        assert!(!principal.has(Scope::Admin));
        let other = SecretHash::from_slice(&[9; 32]).unwrap();
        assert!(matches!(
            live.recheck(key.id(), &other),
            Err(Denied::WrongSecret(_))
        ));
        let revoked = set(&[Scope::Read], true);
        assert!(matches!(
            revoked.recheck(key.id(), &key.secret_sha256()),
            Err(Denied::Revoked(_))
        ));
        assert!(matches!(
            KeySet::default().recheck(key.id(), &key.secret_sha256()),
            Err(Denied::UnknownKey(_))
        ));
    }

    #[test]
    fn read_is_console_only() {
        let reader = set(&[Scope::Read], false)
            .authenticate(Some(&bearer(&key().expose())))
            .unwrap();
        assert!(reader.has(Scope::Read));
        assert_eq!(
            reader.require(Scope::ShipmentsRead),
            Err(Denied::MissingScope(Scope::ShipmentsRead))
        );
        assert_eq!(Scope::parse("read").unwrap(), Scope::Read);
    }

    #[test]
    fn scopes_parse_by_name() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()).unwrap(), scope);
        }
        assert!(Scope::parse("shipments:delete").is_err());
        let json = serde_json::to_string(&Scope::ShipmentsWrite).unwrap();
        assert_eq!(json, "\"shipments:write\"");
    }

    #[test]
    fn hashes_serialise_as_hex() {
        let hash = key().secret_sha256();
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json.len(), 64 + 2);
        let back: SecretHash = serde_json::from_str(&json).unwrap();
        assert!(back.matches(&hash));
    }
}
