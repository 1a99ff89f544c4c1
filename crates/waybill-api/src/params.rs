//! The path, query and header parameters of both APIs, as the handlers extract them and as the
//! OpenAPI documents state them — with the constraints of [`crate::patterns`], which are the
//! parsers' own.

use serde::Deserialize;
use utoipa::IntoParams;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Required, Schema};

use crate::patterns;

/// `/v1/shipments/{carrier}/{tracking_number}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ShipmentPath {
    /// The carrier code.
    pub carrier: String,
    /// The tracking number.
    pub tracking_number: String,
}

impl IntoParams for ShipmentPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            parameter(
                "carrier",
                ParameterIn::Path,
                true,
                pattern(patterns::SLUG),
                "Carrier code, e.g. `starshipit` (white space around it is trimmed, letters are lower-cased)",
            ),
            parameter(
                "tracking_number",
                ParameterIn::Path,
                true,
                pattern(patterns::TRACKING_NUMBER),
                "Tracking number (white space is dropped, letters are upper-cased)",
            ),
        ]
    }
}

/// `?tenant=`: another tenant, for `admin` keys.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TenantQuery {
    /// The tenant to read instead of the key's own.
    pub tenant: Option<String>,
}

impl IntoParams for TenantQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![tenant_parameter()]
    }
}

/// `GET /v1/shipments?order_number=…[&tenant=…]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OrderQuery {
    /// The merchant's order number (required; white space around it is trimmed).
    pub order_number: Option<String>,
    /// The tenant to read instead of the key's own.
    pub tenant: Option<String>,
}

impl IntoParams for OrderQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            parameter(
                "order_number",
                ParameterIn::Query,
                true,
                pattern(patterns::NOT_BLANK),
                "The merchant's order number (white space around it is trimmed)",
            ),
            tenant_parameter(),
        ]
    }
}

/// `POST /v1/webhooks/{source}` and the trace context a courier may send.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookPath {
    /// A configured source id, exactly as configured.
    pub source: String,
}

impl IntoParams for WebhookPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            parameter(
                "source",
                ParameterIn::Path,
                true,
                pattern(patterns::SOURCE_ID),
                "A configured source id, exactly as configured (anything else: 404)",
            ),
            parameter(
                "traceparent",
                ParameterIn::Header,
                false,
                ObjectBuilder::new().schema_type(Type::String).into(),
                "W3C trace context to continue (ignored unless well-formed)",
            ),
        ]
    }
}

fn tenant_parameter() -> Parameter {
    parameter(
        "tenant",
        ParameterIn::Query,
        false,
        pattern(patterns::SLUG),
        "Another tenant (admin keys only; others get 403)",
    )
}

fn pattern(pattern: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .into()
}

fn parameter(
    name: &str,
    location: ParameterIn,
    required: bool,
    schema: Schema,
    description: &str,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}
