//! A carrier profile: one provider's wire format as data. The TOML file model lives here, with
//! the checks serde cannot express, and the three operations the rest of Waybill calls:
//! verify a webhook, map a verified webhook, map a poll response.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use waybill_core::{CarrierCode, Origin, TrackingNumber};

use crate::error::{MapError, ProfileError, VerifyError};
use crate::fields::{FieldSpec, Source};
use crate::mapping::{MapContext, Mapped, MappingSpec};
use crate::poll::PollSpec;
use crate::verify::{
    DEFAULT_TOLERANCE_SECONDS, Encoding, SchemeName, UnverifiedRequest, Verification,
    VerifiedRequest, VerifyTable,
};

/// The profile file format this crate reads.
const FORMAT_VERSION: u32 = 1;

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
    verify: VerifyTable,
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

        if file.format_version != FORMAT_VERSION {
            return Err(invalid(
                "format_version",
                format!(
                    "version {} is not supported (this build reads {FORMAT_VERSION})",
                    file.format_version
                ),
            ));
        }
        let name = CarrierCode::parse(&file.name)
            .map_err(|error| invalid("name", format!("{error}")))?
            .as_str()
            .to_owned();
        let verification =
            check_verification(file.verify).map_err(|(field, reason)| invalid(field, reason))?;
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
        self.verification.verify(request, secrets, now)
    }

    /// Maps a verified webhook body to events (origin [`Origin::Webhook`]). Events without a
    /// time of their own get `received_at`, which also bounds plausible times.
    pub fn map_webhook(
        &self,
        request: &VerifiedRequest<'_>,
        received_at: DateTime<Utc>,
    ) -> Result<Mapped, MapError> {
        let document = crate::json::parse(request.body())?;
        self.mapping.check_root(&document)?;
        let context = MapContext {
            origin: Origin::Webhook,
            received_at,
            polled: None,
        };
        let mut mapped = Mapped::default();
        self.mapping
            .map_document(&document, context, &self.carrier_default, &mut mapped)?;
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
        let response = crate::json::parse(body)?;
        let documents = match &self.poll {
            Some(poll) => poll.response.documents(&response),
            None => vec![response],
        };
        let context = MapContext {
            origin: Origin::Poll,
            received_at,
            polled: Some(tracking_number),
        };
        let mut mapped = Mapped::default();
        for document in &documents {
            self.mapping
                .map_document(document, context, &self.carrier_default, &mut mapped)?;
        }
        finish(&mut mapped);
        Ok(mapped)
    }

    /// The verification scheme's name (`hmac_sha256`, `timestamped`, `static_token`, `none`).
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

fn check_verification(table: VerifyTable) -> Result<Verification, (&'static str, String)> {
    let header = match (&table.scheme, &table.header) {
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
    let scheme = table.scheme;
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
    if table.encoding.is_some() && matches!(scheme, SchemeName::StaticToken | SchemeName::None) {
        return Err((
            "verify.encoding",
            "only signature schemes have an encoding".to_owned(),
        ));
    }
    Ok(match (scheme, header) {
        (SchemeName::HmacSha256, Some(header)) => Verification::HmacSha256 {
            header,
            encoding: table.encoding.unwrap_or(Encoding::Any),
            prefix: table.prefix.filter(|prefix| !prefix.is_empty()),
            normalization: table.secret_normalization,
        },
        (SchemeName::Timestamped, Some(header)) => Verification::Timestamped {
            header,
            encoding: table.encoding.unwrap_or(Encoding::Hex),
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
