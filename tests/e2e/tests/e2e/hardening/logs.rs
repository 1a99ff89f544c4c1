//! Log injection against the real binaries: request-derived values carrying LF, CR, ESC, NUL,
//! a C1 control, a line separator and a bidi override — in the URL path, a header, a signed
//! body whose refusal quotes it, a query string — at `RUST_LOG=debug`, with the ingress in both
//! log formats and the worker in JSON (the text format is the same code for both binaries, and
//! `crates/waybill-telemetry/tests/log_lines.rs` checks it with every kind of field). Every line the processes wrote must be one whole event
//! (a timestamped text line, or a JSON object) with no raw control character, and the injected
//! values must be there, escaped (so the test saw the paths that log them).

use std::path::{Path, PathBuf};

use chrono::Utc;

use waybill_e2e::stack::{SECRETS, Stack};

/// Percent-encoded into paths and queries: LF, CR, ESC `[31m`, NUL, NEL, U+2028, U+202E.
const INJECTED_PATH: &str =
    "inj%0AERROR%20forged%0D%1B%5B31mred%00nul%C2%85nel%E2%80%A8sep%E2%80%AEbidi";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn request_values_cannot_forge_or_colour_a_log_line_in_either_format() {
    let mut pretty_lines = 0;
    let mut json_lines = 0;
    let mut injected_seen = 0;
    // The ingress in each format (the worker writes JSON, the configuration file's format);
    // each installation is stopped with SIGTERM, so every process ends its last line.
    for format in ["pretty", "json"] {
        let mut stack = Stack::create(&format!("log-injection-{format}"), 1, "debug")
            .await
            .expect("create the stack");
        stack.set_ingress_env("WAYBILL_LOG_FORMAT", format.to_owned());
        stack.start_all().await.expect("start the stack");
        inject(&reqwest::Client::new(), &stack).await;
        let dir = stack.destroy_keeping_logs().await;
        for (path, text) in log_files(&dir) {
            for line in text.lines() {
                check_line(&path, line);
                if line.starts_with('{') {
                    json_lines += 1;
                } else {
                    pretty_lines += 1;
                }
                if line.contains("forged") {
                    injected_seen += 1;
                }
            }
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "{}",
                path.display()
            );
        }
        // Kept when a check failed, for reading.
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(
        pretty_lines > 0 && json_lines > 0,
        "both formats were written"
    );
    assert!(
        injected_seen >= 2,
        "the injected values reached the logs (escaped) in both formats: {injected_seen} lines"
    );
}

/// One whole event: a JSON object, or a line that starts with its timestamp; no raw control
/// character either way.
fn check_line(path: &Path, line: &str) {
    let raw: Vec<char> = line
        .chars()
        .filter(|&c| waybill_telemetry::escape::needs_escape(c))
        .collect();
    assert!(
        raw.is_empty(),
        "{}: raw {raw:?} in {line:?}",
        path.display()
    );
    if line.starts_with('{') {
        if let Err(error) = serde_json::from_str::<serde_json::Value>(line) {
            panic!(
                "{}: a line is not a whole JSON event ({error}): {line}",
                path.display()
            );
        }
    } else {
        assert!(
            starts_with_timestamp(line),
            "{}: a line that is not an event (forged or split): {line:?}",
            path.display()
        );
    }
}

/// Sends the hostile requests: to the ingress (unknown source, a signed body whose refusal
/// quotes a key, a header with a C1 control, a registration) and to the worker (path and query).
async fn inject(http: &reqwest::Client, stack: &Stack) {
    let ingress = stack.ingress_url();
    let unknown = http
        .post(format!("{ingress}/v1/webhooks/{INJECTED_PATH}"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("ingress reachable");
    assert_eq!(unknown.status(), 404);

    // A signed body with a key given twice: the refusal names the key, which carries the
    // injection.
    let body =
        "{\"k\\nERROR forged\\u001b[31m\\u0000\":1,\"k\\nERROR forged\\u001b[31m\\u0000\":2}";
    let (_, profile, secret) = SECRETS[4];
    let profiles = stack.settings.profiles().expect("profiles");
    let (name, value) = profiles
        .get(profile)
        .expect("profile")
        .sign(body.as_bytes(), secret, Utc::now())
        .expect("the direct source signs");
    let duplicate = http
        .post(format!("{ingress}/v1/webhooks/direct"))
        .header("content-type", "application/json")
        .header(name, value)
        .body(body)
        .send()
        .await
        .expect("ingress reachable");
    assert_eq!(duplicate.status(), 400);

    // A C1 control (NEL, as UTF-8) in a signature header, and in an Authorization header.
    let nel =
        reqwest::header::HeaderValue::from_bytes(b"t=1,v1=ab\xc2\x85forged").expect("obs-text");
    let _ = http
        .post(format!("{ingress}/v1/webhooks/direct"))
        .header("waybill-signature", nel.clone())
        .body("{}")
        .send()
        .await;
    let _ = http
        .post(format!("{ingress}/v1/shipments"))
        .header("authorization", nel)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await;

    let worker = stack.worker_url(0);
    let _ = http
        .get(format!(
            "{worker}/v1/shipments/{INJECTED_PATH}/{INJECTED_PATH}?tenant={INJECTED_PATH}"
        ))
        .send()
        .await;
}

fn starts_with_timestamp(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.len() > 20
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[10] == b'T'
}

fn log_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(dir)
        .expect("log directory")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("logs are UTF-8");
            (path, text)
        })
        .collect();
    files.sort();
    files
}
