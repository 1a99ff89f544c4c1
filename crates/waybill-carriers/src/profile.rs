//! A carrier profile: one provider's wire format as data. The TOML file model lives here, with
//! the checks serde cannot express, and the three operations the rest of Waybill calls:
//! verify a webhook, map a verified webhook, map a poll response.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use waybill_core::{CarrierCode, Origin, TrackingNumber};

use crate::error::{MapError, ProfileError, VerifyError};
use crate::fields::{FieldSpec, Source};
use crate::mapping::{Isolation, MapContext, Mapped, MappingSpec};
use crate::poll::PollSpec;
use crate::scheme::DEFAULT_TOLERANCE_SECONDS;
use crate::scheme::SignatureEncoding;
use crate::verify::{
    Credentials, Encoding, SchemeName, UnverifiedRequest, Verification, VerifiedRequest,
    VerifySpec, VerifyTable,
};

/// The profile file format written when a file names none.
const FORMAT_VERSION: u32 = 1;

/// The newest profile file format this crate reads.
pub(crate) const LATEST_FORMAT_VERSION: u32 = 2;

/// One provider's wire format: how to verify its webhooks, how to map its payloads, how to
/// poll it. Built from a TOML profile by [`CarrierProfile::from_toml`] or the
/// [`crate::ProfileRegistry`].
#[derive(Debug, Clone)]
pub struct CarrierProfile {
    /// The profile name, a slug (`aftership`); sources refer to profiles by it.
    pub name: String,
    /// A human description, if the file has one.
    pub description: Option<String>,
    verification: Verification,
    mapping: MappingSpec,
    /// The carrier field used when the mapping names none: the profile name as a fixed code.
    carrier_default: FieldSpec,
    poll: Option<PollSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default = "default_format_version")]
    format_version: u32,
    name: String,
    #[serde(default)]
    description: Option<String>,
    verify: VerifySpec,
    mapping: MappingSpec,
    #[serde(default)]
    poll: Option<PollSpec>,
}

fn default_format_version() -> u32 {
    FORMAT_VERSION
}

impl CarrierProfile {
    /// Parses and checks a profile. `origin` names the text in errors (a file path, or
    /// `builtin:<name>`).
    pub fn from_toml(origin: &str, text: &str) -> Result<CarrierProfile, ProfileError> {
        let deserializer = toml::Deserializer::new(text);
        let file: ProfileFile =
            serde_path_to_error::deserialize(deserializer).map_err(|error| {
                let field = error.path().to_string();
                let inner = error.into_inner();
                let (line, column) = inner
                    .span()
                    .map_or((1, 1), |span| line_and_column(text, span.start));
                ProfileError::Parse {
                    file: origin.to_owned(),
                    field: if field == "." {
                        "(root)".to_owned()
                    } else {
                        field
                    },
                    line,
                    column,
                    reason: inner.message().trim_end().replace('\n', "; "),
                }
            })?;
        let invalid = |field: &str, reason: String| ProfileError::Invalid {
            file: origin.to_owned(),
            field: field.to_owned(),
            reason,
        };

        if !(1..=LATEST_FORMAT_VERSION).contains(&file.format_version) {
            return Err(invalid(
                "format_version",
                format!(
                    "version {} is not supported (this build reads 1 to {LATEST_FORMAT_VERSION})",
                    file.format_version
                ),
            ));
        }
        let mut file = file;
        file.mapping.format_version = file.format_version;
        let name = CarrierCode::parse(&file.name)
            .map_err(|error| invalid("name", format!("{error}")))?
            .as_str()
            .to_owned();
        let verification =
            check_verify_spec(file.verify).map_err(|(field, reason)| invalid(field, reason))?;
        check_mapping(&file.mapping).map_err(|(field, reason)| invalid(field, reason))?;
        if let Some(poll) = &file.poll {
            poll.validate()
                .map_err(|(field, reason)| invalid(field, reason))?;
        }
        Ok(CarrierProfile {
            carrier_default: FieldSpec::fixed(&name),
            name,
            description: file.description,
            verification,
            mapping: file.mapping,
            poll: file.poll,
        })
    }

    /// Reads and parses one profile file.
    pub fn from_file(path: &Path) -> Result<CarrierProfile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.to_owned(),
            source,
        })?;
        CarrierProfile::from_toml(&path.display().to_string(), &text)
    }

    /// Proves a request comes from the carrier: checks its signature (or token) over the raw
    /// body against each of `secrets` (several during a rotation; any match passes). `now`
    /// bounds the replay window of timestamped schemes.
    pub fn verify<'a>(
        &self,
        request: UnverifiedRequest<'a>,
        secrets: &[String],
        now: DateTime<Utc>,
    ) -> Result<VerifiedRequest<'a>, VerifyError> {
        let credentials = Credentials {
            secrets,
            ..Credentials::default()
        };
        self.verify_with(request, &credentials, now)
    }

    /// Proves a request comes from the carrier with every kind of credential: shared secrets,
    /// configured public keys, a fetched JWKS key set, and the request URL (for schemes that
    /// sign it or carry the signature in the query). [`CarrierProfile::verify`] is this with
    /// secrets only. An unknown key id is [`VerifyError::UnknownKey`] (HTTP 503): the caller
    /// may refresh its key set and try again.
    pub fn verify_with<'a>(
        &self,
        request: UnverifiedRequest<'a>,
        credentials: &Credentials<'_>,
        now: DateTime<Utc>,
    ) -> Result<VerifiedRequest<'a>, VerifyError> {
        let matched_secret = self.verification.check(&request, credentials, now)?;
        Ok(VerifiedRequest::new(request, matched_secret))
    }

    /// Maps a verified webhook body to events (origin [`Origin::Webhook`]). Events without a
    /// time of their own get `received_at`, which also bounds plausible times. The first event
    /// that cannot be mapped fails the whole payload; see
    /// [`CarrierProfile::map_webhook_isolated`] for what the ingress does.
    pub fn map_webhook(
        &self,
        request: &VerifiedRequest<'_>,
        received_at: DateTime<Utc>,
    ) -> Result<Mapped, MapError> {
        self.map_body(request.body(), received_at, Isolation::Strict)
    }

    /// Maps a verified webhook body with per-event isolation: an event that cannot be mapped is
    /// set aside in [`Mapped::rejected`] (with its path, reason and raw element) and its
    /// siblings are kept. The whole payload is still refused when it cannot be read (not
    /// JSON/form/XML, too deep, too many events, the events are not where the profile says),
    /// when no event has a tracking number, or when no event has a status (it is not a
    /// tracking update at all).
    pub fn map_webhook_isolated(
        &self,
        request: &VerifiedRequest<'_>,
        received_at: DateTime<Utc>,
    ) -> Result<Mapped, MapError> {
        self.map_body(request.body(), received_at, Isolation::PerEvent)
    }

    /// Maps a raw body exactly as [`CarrierProfile::map_webhook_isolated`] would, without a
    /// signature check: for replaying stored bodies whose signature was checked when they
    /// arrived, and for the profile author's kit.
    pub fn map_stored_body(
        &self,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Mapped, MapError> {
        self.map_body(body, received_at, Isolation::PerEvent)
    }

    fn map_body(
        &self,
        body: &[u8],
        received_at: DateTime<Utc>,
        isolation: Isolation,
    ) -> Result<Mapped, MapError> {
        let document = self.mapping.body.parse(body)?;
        self.mapping.check_root(&document)?;
        let context = MapContext {
            origin: Origin::Webhook,
            received_at,
            polled: None,
            isolation,
        };
        let mut mapped = Mapped::default();
        self.mapping
            .map_document(&document, context, &self.carrier_default, &mut mapped)?;
        if mapped.events.is_empty()
            && let Some(first) = mapped.rejected.first()
        {
            let kind = |wanted: &str| mapped.rejected.iter().all(|r| r.kind == wanted);
            let no_tracking_number = mapped.rejected.iter().all(|r| r.tracking_number.is_none());
            if no_tracking_number || kind("missing_status") {
                return Err(first.error.clone());
            }
        }
        finish(&mut mapped);
        Ok(mapped)
    }

    /// How to poll this carrier, if it can be polled.
    pub fn poll(&self) -> Option<&PollSpec> {
        self.poll.as_ref()
    }

    /// Maps a poll response for `tracking_number` (origin [`Origin::Poll`]) with the same
    /// engine and field paths as webhooks, so a scan seen both ways has one event id. Items
    /// about another tracking number are skipped; items without one are about the polled one.
    pub fn map_poll_response(
        &self,
        body: &[u8],
        tracking_number: &TrackingNumber,
        received_at: DateTime<Utc>,
    ) -> Result<Mapped, MapError> {
        let response = self.mapping.body.parse(body)?;
        let documents = match &self.poll {
            Some(poll) => poll.response.documents(&response),
            None => vec![response],
        };
        let context = MapContext {
            origin: Origin::Poll,
            received_at,
            polled: Some(tracking_number),
            isolation: Isolation::Strict,
        };
        let mut mapped = Mapped::default();
        for document in &documents {
            self.mapping
                .map_document(document, context, &self.carrier_default, &mut mapped)?;
        }
        finish(&mut mapped);
        Ok(mapped)
    }

    /// The verification scheme's name (`hmac_sha256`, `timestamped`, `static_token`, `none`,
    /// a composed scheme's algorithm, or `composed` for several).
    pub fn verification_scheme(&self) -> &'static str {
        self.verification.scheme_name()
    }

    /// The header carrying the signature or token, if the scheme has one.
    pub fn signature_header(&self) -> Option<&str> {
        self.verification.header().map(http::HeaderName::as_str)
    }

    /// The header name and value that a sender holding `secret` attaches to `body` at `now`
    /// (`None` for the `none` scheme). For tests and load generators: it is the exact inverse
    /// of [`CarrierProfile::verify`].
    pub fn sign(&self, body: &[u8], secret: &str, now: DateTime<Utc>) -> Option<(String, String)> {
        self.verification.sign(body, secret, now)
    }

    /// Every header a sender holding `secret` attaches to `body` at `now` (a composed scheme
    /// may need several: id, timestamp, signature). Empty for `none` and public-key schemes.
    pub fn sign_headers(
        &self,
        body: &[u8],
        secret: &str,
        now: DateTime<Utc>,
    ) -> Vec<(String, String)> {
        self.verification.sign_headers(body, secret, now)
    }

    /// The profile file format version (1 or 2).
    pub fn format_version(&self) -> u32 {
        self.mapping.format_version
    }

    /// The most events one payload may yield.
    pub fn max_events(&self) -> usize {
        self.mapping.max_events
    }
}

/// The provider id of a single-event payload is its event's id when the envelope has none
/// (Waybill's own format carries `event_id` per event).
fn finish(mapped: &mut Mapped) {
    if mapped.provider_event_id.is_none()
        && let [only] = mapped.events.as_slice()
    {
        mapped.provider_event_id = only.provider_event_id.clone();
    }
}

fn check_verify_spec(spec: VerifySpec) -> Result<Verification, (&'static str, String)> {
    let tables = spec.0;
    if tables.len() == 1
        && let Some(table) = tables.first()
        && table.algorithm.is_none()
    {
        return check_verification(table.clone());
    }
    let mut schemes = Vec::with_capacity(tables.len());
    for table in &tables {
        match table.composed() {
            Some(scheme) => schemes.push(scheme?),
            None => {
                return Err((
                    "verify.algorithm",
                    "each of several [[verify]] schemes is written with `algorithm`".to_owned(),
                ));
            }
        }
    }
    Ok(Verification::Composed(schemes))
}

fn check_verification(table: VerifyTable) -> Result<Verification, (&'static str, String)> {
    if let Some(key) = table.composed_key_without_algorithm() {
        return Err((
            key,
            "this key belongs to a composed scheme: add `algorithm`".to_owned(),
        ));
    }
    let Some(scheme_name) = table.scheme else {
        return Err((
            "verify.scheme",
            "say how requests are verified: `scheme` (hmac_sha256, timestamped, static_token, none) or `algorithm`".to_owned(),
        ));
    };
    let encoding = match table.encoding {
        None => None,
        Some(SignatureEncoding::Hex) => Some(Encoding::Hex),
        Some(SignatureEncoding::Base64) => Some(Encoding::Base64),
        Some(SignatureEncoding::Any) => Some(Encoding::Any),
        Some(SignatureEncoding::Base64url) => {
            return Err((
                "verify.encoding",
                "`base64url` needs a composed scheme (`algorithm`)".to_owned(),
            ));
        }
    };
    let table = VerifyTable {
        encoding: None,
        ..table
    };
    let header = match (&scheme_name, &table.header) {
        (SchemeName::None, Some(_)) => {
            return Err(("verify.header", "scheme `none` has no header".to_owned()));
        }
        (SchemeName::None, None) => None,
        (_, None) => {
            return Err((
                "verify.header",
                "this scheme needs the header name".to_owned(),
            ));
        }
        (_, Some(name)) => Some(http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            (
                "verify.header",
                format!("`{name}` is not a valid HTTP header name"),
            )
        })?),
    };
    let only_for = |field: &'static str, present: bool, scheme: &str| {
        if present {
            Err((field, format!("only the `{scheme}` scheme uses this field")))
        } else {
            Ok(())
        }
    };
    let scheme = scheme_name;
    only_for(
        "verify.prefix",
        table.prefix.is_some() && scheme != SchemeName::HmacSha256,
        "hmac_sha256",
    )?;
    only_for(
        "verify.tolerance_seconds",
        table.tolerance_seconds.is_some() && scheme != SchemeName::Timestamped,
        "timestamped",
    )?;
    if encoding.is_some() && matches!(scheme, SchemeName::StaticToken | SchemeName::None) {
        return Err((
            "verify.encoding",
            "only signature schemes have an encoding".to_owned(),
        ));
    }
    Ok(match (scheme, header) {
        (SchemeName::HmacSha256, Some(header)) => Verification::HmacSha256 {
            header,
            encoding: encoding.unwrap_or(Encoding::Any),
            prefix: table.prefix.filter(|prefix| !prefix.is_empty()),
            normalization: table.secret_normalization,
        },
        (SchemeName::Timestamped, Some(header)) => Verification::Timestamped {
            header,
            encoding: encoding.unwrap_or(Encoding::Hex),
            tolerance_seconds: table.tolerance_seconds.unwrap_or(DEFAULT_TOLERANCE_SECONDS),
            normalization: table.secret_normalization,
        },
        (SchemeName::StaticToken, Some(header)) => Verification::StaticToken {
            header,
            normalization: table.secret_normalization,
        },
        _ => Verification::None,
    })
}

fn check_mapping(mapping: &MappingSpec) -> Result<(), (&'static str, String)> {
    if mapping.events.array.is_none() && mapping.events.current.is_none() {
        return Err((
            "mapping.events",
            "needs `array`, `current` or both".to_owned(),
        ));
    }
    if mapping.events.single_object && mapping.events.array.is_none() {
        return Err((
            "mapping.events.single_object",
            "only applies with `array`".to_owned(),
        ));
    }
    if !(1..=100_000).contains(&mapping.max_events) {
        return Err((
            "mapping.max_events",
            "must be between 1 and 100000".to_owned(),
        ));
    }
    mapping.body.check()?;
    for filter in mapping.when.iter().chain(&mapping.ignore) {
        if filter.path.scope() != crate::path::Scope::Document {
            return Err((
                "mapping.when",
                format!(
                    "payload filters read the document: `{}` must start with `$`",
                    filter.path
                ),
            ));
        }
        filter.check().map_err(|reason| ("mapping.when", reason))?;
    }
    for filter in mapping.events.when.iter().chain(&mapping.events.ignore) {
        filter
            .check()
            .map_err(|reason| ("mapping.events.when", reason))?;
    }
    check_current_fields(mapping)?;
    if let Some(collision) = mapping.status.case_collision() {
        return Err(("mapping.status.map", collision));
    }
    if let Some(carrier) = &mapping.fields.carrier {
        for source in &carrier.0 {
            if let Source::Fixed(code) = source {
                CarrierCode::parse(code)
                    .map_err(|error| ("mapping.fields.carrier", format!("{error}")))?;
            }
        }
    }
    Ok(())
}

/// Format 2: with both `array` and `current`, the current event has its own fields, so that
/// candidates written for one kind of event are never read for the other.
fn check_current_fields(mapping: &MappingSpec) -> Result<(), (&'static str, String)> {
    let both = mapping.events.array.is_some() && mapping.events.current.is_some();
    match (mapping.format_version, &mapping.current_fields) {
        (1, Some(_)) => Err((
            "mapping.current_fields",
            "needs `format_version = 2`".to_owned(),
        )),
        (2, None) if both => Err((
            "mapping.current_fields",
            "format 2 with both `events.array` and `events.current`: give the current event its own `[mapping.current_fields]`, so array and current fields never mix".to_owned(),
        )),
        (_, Some(_)) if mapping.events.current.is_none() => Err((
            "mapping.current_fields",
            "only applies with `events.current`".to_owned(),
        )),
        _ => Ok(()),
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}
