//! The committed API contract (`docs/openapi.json`) is exactly what the code generates.
//! After changing a handler, regenerate it with
//! `WAYBILL_UPDATE_OPENAPI=1 cargo test -p waybill-e2e --test e2e openapi::`.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

fn generated() -> serde_json::Value {
    let mut document = waybill_ingress::openapi::document();
    document.merge(waybill_worker::openapi());
    document.info.title = "Waybill".to_owned();
    document.info.description = Some(
        "The ingress (port 8080: courier webhooks) and the worker (port 8081: shipments API) of Waybill. Each binary serves its own part at /openapi.json.".to_owned(),
    );
    serde_json::to_value(&document).expect("the document serialises")
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = generated();
    assert_eq!(
        generated["openapi"].as_str().map(|v| v.starts_with("3.1")),
        Some(true)
    );
    let path = committed_path();
    if std::env::var_os("WAYBILL_UPDATE_OPENAPI").is_some() {
        let text = serde_json::to_string_pretty(&generated).expect("pretty JSON") + "\n";
        std::fs::write(&path, text).expect("write docs/openapi.json");
    }
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("docs/openapi.json exists"))
            .expect("docs/openapi.json is JSON");
    assert!(
        committed == generated,
        "docs/openapi.json is stale: regenerate it with WAYBILL_UPDATE_OPENAPI=1 cargo test -p waybill-e2e --test e2e openapi::"
    );
}

#[test]
fn every_route_is_documented() {
    let generated = generated();
    let paths = generated["paths"].as_object().expect("paths");
    for path in [
        "/v1/webhooks/{source}",
        "/v1/shipments/{carrier}/{tracking_number}",
        "/v1/shipments",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} is missing from the OpenAPI document"
        );
    }
}
