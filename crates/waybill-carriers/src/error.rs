//! The three ways this crate says no, one enum per concern: a profile file that does not load
//! ([`ProfileError`]), a request that is not authentic ([`VerifyError`], HTTP 401) and a payload
//! that cannot be turned into events ([`MapError`], HTTP 400).
//!
//! Every `Display` is one sentence that names the file, header, field or JSON path at fault. None
//! of them ever contains a secret, a signature, or a value taken from the payload (payloads carry
//! names and addresses); they name *where* the problem is, not *what* was there.

use std::path::PathBuf;

use waybill_core::IdError;

/// A profile file (or embedded built-in) that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file or directory could not be read.
    #[error("cannot read carrier profile {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key has the wrong type, an unknown name or a bad value.
    #[error("carrier profile {file}: field `{field}` (line {line}, column {column}): {reason}")]
    Parse {
        /// The file (or `builtin:<name>`).
        file: String,
        /// The dotted key path of the offending field, `(root)` for the document itself.
        field: String,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column of the offending text.
        column: usize,
        /// What is wrong, as the TOML reader or a validator said it.
        reason: String,
    },
    /// The file parsed, but two fields contradict each other or a field is missing for the
    /// chosen options (e.g. a `timestamped` scheme without a header).
    #[error("carrier profile {file}: field `{field}`: {reason}")]
    Invalid {
        /// The file (or `builtin:<name>`).
        file: String,
        /// The dotted key path of the offending field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Two files in one directory declare the same profile name.
    #[error("carrier profile `{name}` is defined twice, in {} and {}", first.display(), second.display())]
    Duplicate {
        /// The profile name.
        name: String,
        /// The first file that declared it.
        first: PathBuf,
        /// The second file that declared it.
        second: PathBuf,
    },
}

/// Why a request is not accepted as coming from the carrier. Every variant means HTTP 401,
/// except that [`VerifyError::NoSecretsConfigured`] is an operator's mistake worth an alert
/// (it still answers 401: failing closed is the safe side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature (or token) header is absent.
    #[error("the request has no `{header}` header")]
    MissingSignature {
        /// The header the profile expects.
        header: String,
    },
    /// The header is present but cannot be read as a signature of the expected shape.
    #[error("the `{header}` header is malformed: {reason}")]
    MalformedSignature {
        /// The header the profile expects.
        header: String,
        /// What shape was expected (never the received value).
        reason: &'static str,
    },
    /// The signature does not match the body under any configured secret.
    #[error("the `{header}` signature does not match the request body under any configured secret")]
    BadSignature {
        /// The header the profile expects.
        header: String,
    },
    /// A timestamped signature is valid but too old (or too far in the future): a replay.
    #[error("the `{header}` timestamp is more than {tolerance_seconds} seconds away from now")]
    TimestampOutsideTolerance {
        /// The header the profile expects.
        header: String,
        /// The accepted distance from now, in seconds.
        tolerance_seconds: u64,
    },
    /// The profile needs a secret and the source has none configured.
    #[error("the source has no secret configured, so no request can be verified")]
    NoSecretsConfigured,
    /// The profile verifies with public keys and the source has none (no `public_keys`, no
    /// `jwks_url`, or its key set was never fetched).
    #[error("the source has no public key configured, so no request can be verified")]
    NoKeysConfigured,
    /// The request names a key id that no known key has. The key server may have a new key
    /// the ingress has not fetched yet: HTTP 503 with `Retry-After`, so the sender retries.
    #[error("the request names key id `{key_id}`, which is not among the source's keys")]
    UnknownKey {
        /// The key id, cut to 64 characters with anything but visible ASCII replaced.
        key_id: String,
    },
}

impl VerifyError {
    /// The HTTP status the ingress answers with: 401, except 503 for an unknown key id (the
    /// key may appear after a refresh of the key set).
    pub fn http_status(&self) -> u16 {
        match self {
            VerifyError::UnknownKey { .. } => 503,
            _ => 401,
        }
    }

    /// A closed-set label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyError::MissingSignature { .. } => "missing_signature",
            VerifyError::MalformedSignature { .. } => "malformed_signature",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::TimestampOutsideTolerance { .. } => "timestamp_outside_tolerance",
            VerifyError::NoSecretsConfigured => "no_secrets_configured",
            VerifyError::NoKeysConfigured => "no_keys_configured",
            VerifyError::UnknownKey { .. } => "unknown_key",
        }
    }
}

/// Why a payload (webhook body or poll response) cannot be turned into tracking events.
/// Every variant of a webhook body means HTTP 400; the credential and URL variants come only from
/// [`crate::PollSpec::build_request`] and are configuration errors of the poller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The body is not UTF-8 (JSON must be).
    #[error("the body is not valid UTF-8 (first invalid byte at offset {valid_up_to})")]
    InvalidUtf8 {
        /// The length of the valid prefix.
        valid_up_to: usize,
    },
    /// The body is not JSON (truncated, trailing garbage, bad escape, number out of range).
    #[error("the body is not valid JSON: {reason} at line {line}, column {column}")]
    InvalidJson {
        /// The parser's reason, without the position.
        reason: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The body nests arrays and objects deeper than allowed.
    #[error(
        "the body nests arrays and objects deeper than {max} levels (line {line}, column {column})"
    )]
    TooDeep {
        /// The allowed depth.
        max: usize,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The body is not well-formed XML (or has a DTD, which is refused).
    #[error("the body is not valid XML: {reason} at line {line}, column {column}")]
    InvalidXml {
        /// The parser's reason, without the position.
        reason: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// An object repeats a key; parsers disagree on which copy wins, so the body is ambiguous.
    #[error("the body repeats the key `{key}` in one object (line {line}, column {column})")]
    DuplicateKey {
        /// The repeated key, cut to 64 characters.
        key: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// A required field is absent or null.
    #[error("the {field} is missing (looked at {path})")]
    MissingField {
        /// The field, e.g. `tracking number`.
        field: &'static str,
        /// The paths that were tried, e.g. `$/msg/tracking_number`.
        path: String,
    },
    /// A field holds the wrong JSON type.
    #[error("the {field} at {path} is {found}, expected {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// The concrete JSON path.
        path: String,
        /// The expected type(s).
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// The tracking number is empty, too long or has characters a tracking number cannot have.
    #[error("the tracking number at {path} is invalid: {source}")]
    InvalidTrackingNumber {
        /// The concrete JSON path.
        path: String,
        /// The rule it breaks.
        #[source]
        source: IdError,
    },
    /// The carrier code read from the payload is not a valid carrier code.
    #[error("the carrier at {path} is invalid: {source}")]
    InvalidCarrier {
        /// The concrete JSON path.
        path: String,
        /// The rule it breaks.
        #[source]
        source: IdError,
    },
    /// A timestamp is in none of the formats the profile accepts.
    #[error("the timestamp at {path} is invalid: {reason}")]
    InvalidTimestamp {
        /// The concrete JSON path.
        path: String,
        /// Which formats were expected.
        reason: &'static str,
    },
    /// The zone named by the payload for an event's time is neither an IANA zone nor an offset.
    #[error("the time zone at {path} is neither an IANA zone name nor an offset like +05:30")]
    InvalidZone {
        /// The concrete JSON path.
        path: String,
    },
    /// A timestamp parses but cannot be a real scan time.
    #[error(
        "the timestamp at {path} is before 2000-01-01 or more than 2 days after it was received"
    )]
    AbsurdTimestamp {
        /// The concrete JSON path.
        path: String,
    },
    /// The payload holds more events than the profile allows.
    #[error("the payload holds more than {max} events")]
    TooManyEvents {
        /// The profile's cap.
        max: usize,
    },
    /// A poll URL or header template names a credential the caller did not supply.
    #[error("the poll request needs the credential `{name}`, which is not configured")]
    MissingCredential {
        /// The template variable.
        name: String,
    },
    /// A credential would break the request (control characters in a header value).
    #[error("the credential `{name}` contains characters that cannot go into an HTTP header")]
    InvalidCredential {
        /// The template variable.
        name: String,
    },
    /// The poll base URL is not an absolute http(s) URL.
    #[error("the poll base URL is not an absolute http:// or https:// URL")]
    InvalidBaseUrl,
}

impl MapError {
    /// The HTTP status the ingress answers with for a webhook body: always 400.
    pub fn http_status(&self) -> u16 {
        400
    }

    /// A closed-set label for metrics and for the rejected-events table.
    pub fn kind(&self) -> &'static str {
        match self {
            MapError::InvalidUtf8 { .. } => "invalid_utf8",
            MapError::InvalidJson { .. } => "invalid_json",
            MapError::InvalidXml { .. } => "invalid_xml",
            MapError::TooDeep { .. } => "too_deep",
            MapError::DuplicateKey { .. } => "duplicate_key",
            MapError::MissingField {
                field: "tracking number",
                ..
            } => "missing_tracking_number",
            MapError::MissingField {
                field: "status", ..
            } => "missing_status",
            MapError::MissingField { .. } => "missing_field",
            MapError::WrongType { .. } => "wrong_type",
            MapError::InvalidTrackingNumber { .. } => "invalid_tracking_number",
            MapError::InvalidCarrier { .. } => "invalid_carrier",
            MapError::InvalidTimestamp { .. } => "invalid_timestamp",
            MapError::InvalidZone { .. } => "invalid_zone",
            MapError::AbsurdTimestamp { .. } => "absurd_timestamp",
            MapError::TooManyEvents { .. } => "too_many_events",
            MapError::MissingCredential { .. } => "missing_credential",
            MapError::InvalidCredential { .. } => "invalid_credential",
            MapError::InvalidBaseUrl => "invalid_base_url",
        }
    }

    /// Whether the error is about the payload as a whole (unreadable, too big, too deep), as
    /// opposed to one event in it: such an error always rejects the request.
    pub fn is_whole_payload(&self) -> bool {
        matches!(
            self,
            MapError::InvalidUtf8 { .. }
                | MapError::InvalidJson { .. }
                | MapError::InvalidXml { .. }
                | MapError::TooDeep { .. }
                | MapError::DuplicateKey { .. }
                | MapError::TooManyEvents { .. }
                | MapError::MissingCredential { .. }
                | MapError::InvalidCredential { .. }
                | MapError::InvalidBaseUrl
        )
    }
}
