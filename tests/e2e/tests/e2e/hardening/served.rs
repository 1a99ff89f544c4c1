//! The documents the servers serve are the committed contract: each path, component and
//! security scheme of both `GET /openapi.json` answers is exactly the one in
//! `docs/openapi.json`, and together they are all of it (with the default configuration; a
//! server states its own configured bounds).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::pipeline::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_documents_are_the_committed_contract() {
    let app = spawn_app().await;
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json"),
        )
        .expect("docs/openapi.json"),
    )
    .expect("JSON");
    let mut served_paths = BTreeSet::new();
    for base in [app.ingress.as_str(), app.worker()] {
        let response = app
            .http
            .get(format!("{base}/openapi.json"))
            .send()
            .await
            .expect("server reachable");
        assert_eq!(response.status(), 200);
        let served: Value = response.json().await.expect("JSON");
        assert_eq!(served["openapi"], committed["openapi"]);
        // Operations one by one: both servers serve `/v1/shipments` (POST on the ingress, GET
        // on the worker), and the committed document holds both.
        let mut entries: Vec<String> = Vec::new();
        for (path, operations) in served["paths"].as_object().into_iter().flatten() {
            served_paths.insert(path.clone());
            for method in operations.as_object().into_iter().flatten().map(|(m, _)| m) {
                entries.push(format!("/paths/{}/{method}", escape(path)));
            }
        }
        for section in ["schemas", "securitySchemes"] {
            for (name, _) in served["components"][section]
                .as_object()
                .into_iter()
                .flatten()
            {
                entries.push(format!("/components/{section}/{}", escape(name)));
            }
        }
        for pointer in entries {
            assert_eq!(
                committed.pointer(&pointer),
                served.pointer(&pointer),
                "{base}: {pointer} differs from docs/openapi.json (regenerate it with WAYBILL_UPDATE_OPENAPI=1 cargo test -p waybill-e2e --test e2e openapi::)"
            );
        }
    }
    let committed_paths: BTreeSet<String> = committed["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        served_paths, committed_paths,
        "every committed path is served"
    );
    app.shutdown().await;
}

/// A JSON Pointer token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
