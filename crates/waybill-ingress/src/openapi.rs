//! The ingress's OpenAPI 3.1 document, generated from the handlers' annotations. The combined
//! document of both binaries is committed at `docs/openapi.json` and checked by a test.

use utoipa::OpenApi;

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
        crate::health::healthz,
        crate::health::readyz,
        crate::health::metrics
    ),
    components(schemas(
        crate::webhooks::Accepted,
        crate::error::ErrorBody,
        crate::registration::RegistrationRequest,
        crate::registration::Registered,
        crate::registration::RegisteredShipment
    ))
)]
struct IngressApi;

/// The ingress's OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    IngressApi::openapi()
}
