//! The ingress's OpenAPI 3.1 document, generated from the handlers' annotations and the wire
//! types of `waybill-api`. The combined document of both binaries is committed at
//! `docs/openapi.json` and checked by a test.

use utoipa::OpenApi;
use utoipa::openapi::RefOr;
use waybill_api::RegistrationBody;
use waybill_http::openapi::ApiKeySecurity;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Waybill ingress",
        description = "Courier webhooks in; every 200 means RabbitMQ confirmed the message.",
        license(name = "Apache-2.0")
    ),
    paths(
        crate::webhooks::receive,
        crate::registration::register,
        waybill_http::operations::healthz,
        waybill_http::operations::readiness,
        waybill_http::operations::metrics
    ),
    components(schemas(
        waybill_api::Accepted,
        waybill_api::AcceptedStatus,
        waybill_api::ErrorBody,
        waybill_api::health::Health,
        waybill_api::health::Readiness,
        RegistrationBody,
        waybill_api::RegistrationRequest,
        waybill_api::Registered,
        waybill_api::RegisteredShipment
    )),
    modifiers(&ApiKeySecurity)
)]
struct IngressApi;

/// The ingress's OpenAPI document, with the defaults of its configurable bounds.
pub fn document() -> utoipa::openapi::OpenApi {
    IngressApi::openapi()
}

/// The document a server serves: [`document`] with this server's own bounds (the most
/// shipments one registration request may carry).
pub fn served_document(max_registrations: usize) -> utoipa::openapi::OpenApi {
    let mut document = document();
    if let Some(components) = document.components.as_mut() {
        components.schemas.insert(
            "RegistrationBody".to_owned(),
            RefOr::T(RegistrationBody::schema_with_max(max_registrations)),
        );
    }
    document
}
