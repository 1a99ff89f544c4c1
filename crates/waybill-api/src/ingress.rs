//! The ingress's bodies: the answer to a courier's webhook, and the shipment registrations of
//! `POST /v1/shipments` with their answer.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder,
    Schema, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::patterns;

/// The answer to an accepted webhook: `200` once RabbitMQ confirmed the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// Always `accepted`.
    pub status: AcceptedStatus,
    /// The id of the queued envelope (absent when the payload carried no tracking event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// How many tracking events the payload carried; every one of them will be stored.
    pub events: usize,
}

/// The status word of an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AcceptedStatus {
    /// Queued durably.
    Accepted,
}

/// One shipment to register, as the platform sends it. The body of `POST /v1/shipments` is one
/// of these or an array of them ([`RegistrationBody`]); `carrier` or `source` is required.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRequest {
    /// The carrier code; defaults to the source's carrier profile.
    pub carrier: Option<String>,
    /// The tracking number (white space is dropped, letters are upper-cased).
    pub tracking_number: String,
    /// The configured source whose events and polls the shipment belongs to. Without it, the
    /// tenant's only source whose profile is `carrier` is used, if there is exactly one.
    pub source: Option<String>,
    /// The merchant's order number, 1 to [`patterns::MAX_ORDER_NUMBER_CHARS`] characters.
    pub order_number: Option<String>,
    /// The tenant: the API key's own by default; another needs an `admin` key (403).
    pub tenant: Option<String>,
    /// Free-form metadata stored with the shipment (an object).
    pub metadata: Option<serde_json::Value>,
}

impl PartialSchema for RegistrationRequest {
    /// Written out rather than derived: the constraints are the parsers' (see [`patterns`]),
    /// and `carrier`-or-`source` needs an `anyOf` that derives cannot state.
    fn schema() -> RefOr<Schema> {
        let slug = |description: &str| nullable_string(description).pattern(Some(patterns::SLUG));
        let object = ObjectBuilder::new()
            .property("carrier", slug("The carrier code; defaults to the source's carrier profile."))
            .property(
                "tracking_number",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(patterns::TRACKING_NUMBER))
                    .description(Some(
                        "The tracking number (white space is dropped, letters are upper-cased).",
                    )),
            )
            .required("tracking_number")
            .property(
                "source",
                slug("The configured source the shipment belongs to; without it, the tenant's only source of `carrier`, if there is exactly one."),
            )
            .property(
                "order_number",
                nullable_string("The merchant's order number.")
                    .min_length(Some(1))
                    .max_length(Some(patterns::MAX_ORDER_NUMBER_CHARS)),
            )
            .property(
                "tenant",
                slug("The tenant: the API key's own by default; another needs an `admin` key."),
            )
            .property(
                "metadata",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
                    .description(Some("Free-form metadata stored with the shipment.")),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let carrier_or_source = AnyOfBuilder::new()
            .item(required_string("carrier"))
            .item(required_string("source"));
        RefOr::T(
            AllOfBuilder::new()
                .item(object)
                .item(carrier_or_source)
                .into(),
        )
    }
}

impl ToSchema for RegistrationRequest {}

/// The body of `POST /v1/shipments`: one [`RegistrationRequest`] or a non-empty array of up to
/// `polling.max_registrations_per_request` of them. Schema only: the ingress parses the body
/// itself, to name the failing item's index.
pub struct RegistrationBody;

impl RegistrationBody {
    /// `polling.max_registrations_per_request`'s default.
    pub const DEFAULT_MAX_ITEMS: usize = 500;

    /// The schema, with `max_items` as the array's bound (the served document states the
    /// server's configured value; the committed one the default).
    pub fn schema_with_max(max_items: usize) -> Schema {
        let item = || Ref::from_schema_name(RegistrationRequest::name());
        OneOfBuilder::new()
            .item(item())
            .item(
                ArrayBuilder::new()
                    .items(item())
                    .min_items(Some(1))
                    .max_items(Some(max_items)),
            )
            .into()
    }
}

impl PartialSchema for RegistrationBody {
    fn schema() -> RefOr<Schema> {
        RefOr::T(RegistrationBody::schema_with_max(
            RegistrationBody::DEFAULT_MAX_ITEMS,
        ))
    }
}

impl ToSchema for RegistrationBody {}

/// A string property that may also be `null`.
fn nullable_string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .description(Some(description))
}

/// `{"<field>": <a string of the slug pattern>}`, required: present and not `null`.
fn required_string(field: &str) -> Schema {
    ObjectBuilder::new()
        .property(
            field,
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(patterns::SLUG)),
        )
        .required(field)
        .into()
}

/// The answer to a registration: `202` once RabbitMQ confirmed every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// Always `accepted`.
    pub status: AcceptedStatus,
    /// The registered shipments, in request order.
    pub shipments: Vec<RegisteredShipment>,
}

/// One registered shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisteredShipment {
    /// The id of its queued registration message.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// Its carrier code.
    pub carrier: String,
    /// Its tracking number.
    pub tracking_number: String,
    /// The source it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}
