//! The API contract, checked from outside: Schemathesis reads each server's own
//! `GET /openapi.json` and sends it generated requests — schema-valid and schema-invalid, every
//! check it has (no 5xx; statuses, content types, headers and bodies as documented;
//! schema-valid data accepted and schema-invalid data refused; authentication enforced) —
//! against the real binaries with a real API key. Any failure fails the test.
//!
//! Schemathesis is a Python tool: `scripts/test.sh` installs it into `target/schemathesis`
//! (a virtual environment) when it is missing; `WAYBILL_SCHEMATHESIS` names another `st`.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;
use waybill_core::TenantId;
use waybill_core::access::Scope;

use waybill_e2e::stack::Stack;

/// Generated cases per operation and mode (`WAYBILL_CONTRACT_EXAMPLES` overrides).
const EXAMPLES: u32 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built and Schemathesis installed; scripts/test.sh runs it"]
async fn both_served_documents_hold_against_schemathesis() {
    let st = schemathesis();
    let mut stack = Stack::create("contract", 1, "warn")
        .await
        .expect("create the stack");
    stack.start_all().await.expect("start the stack");
    let key = waybill_cli::keys::create(
        &stack.settings,
        &TenantId::default_tenant(),
        &[Scope::ShipmentsRead, Scope::ShipmentsWrite],
        "contract",
    )
    .await
    .expect("create a key")
    .key
    .expose();
    wait_until_known(&stack, &key).await;
    // Configured source ids, so generated webhooks reach signature checks as well as 404s.
    let sources: Vec<String> = stack
        .settings
        .sources
        .iter()
        .map(|source| format!("{:?}", source.id.as_str()))
        .collect();
    let config = format!(
        "[dictionaries.sources]\nvalues = [{}]\n\n[parameters]\n\"path.source\" = {{ dictionary = \"sources\", probability = 0.5 }}\n",
        sources.join(", ")
    );
    std::fs::write(stack.log_dir().join("schemathesis.toml"), config).expect("write the config");
    let examples = std::env::var("WAYBILL_CONTRACT_EXAMPLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(EXAMPLES);
    let mut failed = Vec::new();
    for (name, base) in [
        ("ingress", stack.ingress_url()),
        ("worker", stack.worker_url(0)),
    ] {
        if !run(&st, name, &base, &key, examples, &stack).await {
            failed.push(name);
        }
    }
    let logs = stack.destroy_keeping_logs().await;
    if failed.is_empty() {
        let _ = std::fs::remove_dir_all(&logs);
    }
    assert!(
        failed.is_empty(),
        "Schemathesis found failures on {failed:?} (its report is above; server logs in {})",
        logs.display()
    );
}

/// The `st` to run.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("WAYBILL_SCHEMATHESIS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/schemathesis/bin/st"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "Schemathesis is not installed at {} (scripts/test.sh installs it; or set WAYBILL_SCHEMATHESIS)",
        path.display()
    );
    path
}

/// Runs Schemathesis against one server; true when it found nothing.
async fn run(
    st: &PathBuf,
    name: &str,
    base: &str,
    key: &str,
    examples: u32,
    stack: &Stack,
) -> bool {
    eprintln!("schemathesis: {name} at {base}/openapi.json");
    let status = Command::new(st)
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--url", base])
        .args(["--checks", "all"])
        .args(["--mode", "all"])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", "1"])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "20"])
        .arg("--no-color")
        .current_dir(stack.log_dir())
        .stdin(Stdio::null())
        .status()
        .await
        .expect("Schemathesis runs");
    status.success()
}

/// Waits (bounded) until the worker's key set holds `key`: `waybill keys create` publishes it,
/// but the servers take it from the broker.
async fn wait_until_known(stack: &Stack, key: &str) {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = http
            .get(format!(
                "{}/v1/shipments?order_number=probe",
                stack.worker_url(0)
            ))
            .bearer_auth(key)
            .send()
            .await
            .map_or(0, |response| response.status().as_u16());
        if status == 200 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key never became known (last status {status})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
