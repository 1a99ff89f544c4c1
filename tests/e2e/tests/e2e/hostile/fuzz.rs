//! The ingress fuzzed end to end: random bodies (signed, so they reach the mappers), headers,
//! paths, methods, encodings, huge headers and raw protocol garbage. Every answer must be 2xx or
//! 4xx — the broker is healthy, so a 5xx can only be caused by the input — and the processes
//! must still be alive and ready at the end.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{hostile_stack, post, signature};
use waybill_e2e::stack::{SECRETS, Stack, is_ready};

/// What one fuzz case got back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Status(u16),
    /// The connection closed without an answer (acceptable only for protocol garbage).
    Closed,
    /// No answer in time.
    Hung,
    /// The HTTP client would not send it.
    NotSent,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn fuzzed_requests_get_2xx_or_4xx_and_never_crash_the_ingress() {
    let count: usize = std::env::var("WAYBILL_FUZZ_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("WAYBILL_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    let stack_ref = Arc::new(hostile_stack("fuzz", "warn").await);
    let corpus = Arc::new(Corpus::load());
    let tasks = 16;
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let stack = stack_ref.clone();
        let corpus = corpus.clone();
        let cases = count / tasks + usize::from(task < count % tasks);
        set.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(task as u64));
            // A connection per request: when the server closes a kept-alive connection after
            // answering (as HTTP servers may after refusing a body they did not read), the
            // client can race it with the next request, whose "closed" would then be charged
            // to a request the ingress never saw.
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .pool_max_idle_per_host(0)
                .build()
                .expect("client");
            let mut seen: Vec<(String, Answer)> = Vec::with_capacity(cases);
            for _ in 0..cases {
                let (kind, answer) = one_case(&mut rng, &http, &stack, &corpus).await;
                seen.push((kind, answer));
            }
            seen
        });
    }
    let mut by_kind: BTreeMap<String, BTreeMap<Answer, u64>> = BTreeMap::new();
    let mut bad = Vec::new();
    while let Some(joined) = set.join_next().await {
        for (kind, answer) in joined.expect("a fuzz task panicked") {
            let acceptable = match &answer {
                Answer::Status(code) => (200..300).contains(code) || (400..500).contains(code),
                Answer::Closed => kind.starts_with("raw"),
                Answer::Hung => false,
                Answer::NotSent => true,
            };
            if !acceptable && bad.len() < 20 {
                bad.push(format!("{kind}: {answer:?}"));
            }
            *by_kind.entry(kind).or_default().entry(answer).or_default() += 1;
        }
    }
    let mut stack = Arc::try_unwrap(stack_ref).unwrap_or_else(|_| panic!("tasks hold the stack"));
    let http = reqwest::Client::new();
    let ingress_alive =
        stack.ingress_alive() && is_ready(&http, &format!("{}/readyz", stack.ingress_url())).await;
    let worker_alive =
        stack.worker_alive(0) && is_ready(&http, &format!("{}/readyz", stack.worker_url(0))).await;
    // And it still does its job.
    let after = post(
        &http,
        &stack,
        "direct",
        &super::direct_event(&format!("FZ{}", super::unique()), "InTransit", "Depot"),
        true,
    )
    .await
    .map(|response| response.status().as_u16());

    println!("fuzz: {count} requests, seed {seed}");
    for (kind, answers) in &by_kind {
        let line: Vec<String> = answers.iter().map(|(a, n)| format!("{a:?}×{n}")).collect();
        println!("  {kind:<22} {}", line.join(" "));
    }
    let logs_dir = stack.log_dir().display().to_string();
    let failed = !bad.is_empty() || !ingress_alive || !worker_alive || !matches!(after, Ok(200));
    if failed {
        stack.destroy_keeping_logs().await;
    } else {
        stack.destroy().await;
    }
    assert!(
        bad.is_empty(),
        "unacceptable answers (seed {seed}, logs {logs_dir}):\n{}",
        bad.join("\n")
    );
    assert!(
        ingress_alive,
        "the ingress died or is not ready after the fuzz (logs {logs_dir})"
    );
    assert!(
        worker_alive,
        "the worker died or is not ready after the fuzz (logs {logs_dir})"
    );
    assert!(
        matches!(after, Ok(200)),
        "a valid webhook after the fuzz got {after:?}"
    );
}

/// Sample bodies per profile, to mutate.
struct Corpus {
    by_profile: BTreeMap<&'static str, Vec<Vec<u8>>>,
}

impl Corpus {
    fn load() -> Corpus {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../crates/waybill-carriers/tests/fixtures");
        let mut by_profile = BTreeMap::new();
        for (_, profile, _) in SECRETS {
            let mut samples = Vec::new();
            if let Ok(entries) = std::fs::read_dir(root.join(profile)) {
                for entry in entries.flatten() {
                    if let Ok(bytes) = std::fs::read(entry.path()) {
                        samples.push(bytes);
                    }
                }
            }
            samples.push(super::direct_event("FUZZ0001", "InTransit", "Depot"));
            by_profile.insert(profile, samples);
        }
        Corpus { by_profile }
    }

    fn sample(&self, rng: &mut StdRng, profile: &str) -> Vec<u8> {
        let samples = &self.by_profile[profile];
        samples[rng.random_range(0..samples.len())].clone()
    }
}

async fn one_case(
    rng: &mut StdRng,
    http: &reqwest::Client,
    stack: &Stack,
    corpus: &Corpus,
) -> (String, Answer) {
    let (source, profile, _) = SECRETS[rng.random_range(0..SECRETS.len())];
    match rng.random_range(0..100) {
        0..40 => {
            let body = mutated_body(rng, corpus, profile);
            let signed = rng.random_bool(0.85);
            let kind = if signed {
                "body-signed"
            } else {
                "body-unsigned"
            };
            (
                kind.to_owned(),
                answer_of(post(http, stack, source, &body, signed).await),
            )
        }
        40..55 => (
            "structured-json".to_owned(),
            answer_of(post(http, stack, source, &structured_json(rng), true).await),
        ),
        55..70 => {
            let body = corpus.sample(rng, profile);
            let mut request = http
                .post(format!("{}/v1/webhooks/{source}", stack.ingress_url()))
                .body(body.clone());
            if rng.random_bool(0.7)
                && let Some((name, value)) = signature(stack, source, &body)
            {
                request = request.header(name, value);
            }
            for _ in 0..rng.random_range(0..12) {
                let name = random_token(rng, 1..40);
                let value = random_header_value(rng);
                request = request.header(name, value);
            }
            ("headers".to_owned(), answer_of(request.send().await))
        }
        70..80 => {
            let method = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "POST"]
                [rng.random_range(0..7)];
            let path = random_path(rng);
            let request = http
                .request(
                    method.parse().expect("a method"),
                    format!("{}{path}", stack.ingress_url()),
                )
                .body(corpus.sample(rng, profile));
            ("paths-methods".to_owned(), answer_of(request.send().await))
        }
        80..88 => {
            let body = encoded_body(rng, corpus, profile);
            let content_type = [
                "application/json",
                "application/json; charset=utf-16",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json; charset=\"x\\\"y\"; q=0.1",
            ][rng.random_range(0..6)];
            let mut request = http
                .post(format!("{}/v1/webhooks/{source}", stack.ingress_url()))
                .header("content-type", content_type)
                .body(body.clone());
            if rng.random_bool(0.3) {
                request = request.header(
                    "content-encoding",
                    ["gzip", "br", "deflate", "x-nonsense"][rng.random_range(0..4)],
                );
            }
            if let Some((name, value)) = signature(stack, source, &body) {
                request = request.header(name, value);
            }
            ("encodings".to_owned(), answer_of(request.send().await))
        }
        88..93 => {
            // Huge headers: a single enormous value, or very many headers.
            let mut request = http
                .post(format!("{}/v1/webhooks/{source}", stack.ingress_url()))
                .body("{}");
            if rng.random_bool(0.5) {
                let len = rng.random_range(8_000..300_000);
                request = request.header("x-huge", "a".repeat(len));
            } else {
                for index in 0..rng.random_range(100..3000) {
                    request = request.header(format!("x-many-{index}"), "v");
                }
            }
            ("huge-headers".to_owned(), answer_of(request.send().await))
        }
        _ => ("raw-protocol".to_owned(), raw_case(rng, stack).await),
    }
}

fn answer_of(result: reqwest::Result<reqwest::Response>) -> Answer {
    match result {
        Ok(response) => Answer::Status(response.status().as_u16()),
        // The client refused to send it (an invalid header value): nothing reached the server.
        Err(error) if error.is_builder() => Answer::NotSent,
        Err(error) if error.is_timeout() => Answer::Hung,
        Err(_) => Answer::Closed,
    }
}

fn mutated_body(rng: &mut StdRng, corpus: &Corpus, profile: &str) -> Vec<u8> {
    let mut body = corpus.sample(rng, profile);
    match rng.random_range(0..6) {
        0 => {
            let len = rng.random_range(0..4096);
            (0..len).map(|_| rng.random()).collect()
        }
        1 => {
            body.truncate(rng.random_range(0..=body.len()));
            body
        }
        _ => {
            for _ in 0..rng.random_range(1..16) {
                if body.is_empty() {
                    body.push(rng.random());
                    continue;
                }
                let at = rng.random_range(0..body.len());
                match rng.random_range(0..4) {
                    0 => body[at] = rng.random(),
                    1 => {
                        body.remove(at);
                    }
                    2 => {
                        const PIECES: &[u8] = b"{}[]\",:0-e\\\x00\xff";
                        body.insert(at, PIECES[rng.random_range(0..PIECES.len())]);
                    }
                    _ => {
                        let end = rng.random_range(at..body.len());
                        let chunk = body[at..end].to_vec();
                        body.splice(at..at, chunk);
                    }
                }
            }
            body
        }
    }
}

fn random_string(rng: &mut StdRng) -> serde_json::Value {
    let choices = [
        String::new(),
        "x".repeat(rng.random_range(1..100_000)),
        "\u{0000}\u{202e}\u{feff}𝕏".to_owned(),
        "1970-01-01T00:00:00Z".to_owned(),
        "9999-12-31T23:59:59+14:00".to_owned(),
        "not a date".to_owned(),
        "../../etc/passwd".to_owned(),
        "'; drop table shipments; --".to_owned(),
        "${jndi:ldap://127.0.0.1/a}".to_owned(),
        random_token(rng, 1..300),
    ];
    serde_json::Value::String(choices[rng.random_range(0..choices.len())].clone())
}

fn random_value(rng: &mut StdRng, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    match rng.random_range(0..if depth > 3 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.random()),
        2 => serde_json::json!(rng.random::<i64>()),
        3 => serde_json::json!(rng.random::<f64>() * 1e300),
        4 => random_string(rng),
        5 => Value::Array(
            (0..rng.random_range(0..5))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "tracking_number",
                "status",
                "occurred_at",
                "carrier",
                "location",
                "msg",
                "result",
                "checkpoints",
                "data",
                "tag",
                "event",
            ];
            Value::Object(
                (0..rng.random_range(0..8))
                    .map(|_| {
                        (
                            keys[rng.random_range(0..keys.len())].to_owned(),
                            random_value(rng, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
    }
}

fn structured_json(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..5) {
        // Deep nesting past any recursion limit.
        0 => {
            let depth = rng.random_range(100..5000);
            let mut text = "[".repeat(depth);
            text.push_str(&"]".repeat(depth));
            text.into_bytes()
        }
        // Many events in one request.
        1 => {
            let events: Vec<serde_json::Value> = (0..rng.random_range(100..3000))
                .map(|i| {
                    serde_json::json!({
                        "carrier": "acme", "tracking_number": format!("MANY{i}"), "status": "InTransit",
                        "occurred_at": "2026-01-01T00:00:00Z", "location": "X"
                    })
                })
                .collect();
            serde_json::to_vec(&events).expect("serialisable")
        }
        _ => serde_json::to_vec(&random_value(rng, 0)).expect("serialisable"),
    }
}

fn encoded_body(rng: &mut StdRng, corpus: &Corpus, profile: &str) -> Vec<u8> {
    let body = corpus.sample(rng, profile);
    match rng.random_range(0..4) {
        0 => [b"\xef\xbb\xbf".as_slice(), &body].concat(),
        1 => String::from_utf8_lossy(&body)
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect(),
        2 => body
            .iter()
            .map(|b| if *b == b'"' { b'\'' } else { *b })
            .collect(),
        _ => {
            let mut bytes = body;
            bytes.extend_from_slice(b"\xc3\x28\xa0\xa1");
            bytes
        }
    }
}

fn random_token(rng: &mut StdRng, len: std::ops::Range<usize>) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_!#$%&'*+.^`|~";
    (0..rng.random_range(len))
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

fn random_header_value(rng: &mut StdRng) -> String {
    let len = rng.random_range(0..2000);
    (0..len)
        .map(|_| char::from(rng.random_range(0x20u8..0x7f)))
        .collect()
}

fn random_path(rng: &mut StdRng) -> String {
    let segments = [
        "/v1/webhooks/".to_owned(),
        format!("/v1/webhooks/{}", random_token(rng, 1..64)),
        format!(
            "/v1/webhooks/{}",
            "%ff%00%2e%2e%2f".repeat(rng.random_range(1..20))
        ),
        format!("/v1/webhooks/{}", "a".repeat(rng.random_range(256..20_000))),
        "/v1/webhooks/starshipit/extra".to_owned(),
        "/v1/webhooks/%E2%80%AEstarshipit".to_owned(),
        "/v1/../v1/webhooks/starshipit".to_owned(),
        "/v1/webhooks/starshipit?x=1&x=2&signature=forged".to_owned(),
        "/".to_owned(),
        "/readyz".to_owned(),
        "/v1/shipments".to_owned(),
        "/v1/shipments?tenant=%00&order_number=".to_owned(),
        "/metrics".to_owned(),
        format!("/{}", random_token(rng, 1..200)),
    ];
    segments[rng.random_range(0..segments.len())].clone()
}

/// Protocol-level garbage over a raw connection.
async fn raw_case(rng: &mut StdRng, stack: &Stack) -> Answer {
    let source = SECRETS[rng.random_range(0..SECRETS.len())].0;
    let request: Vec<u8> = match rng.random_range(0..9) {
        0 => (0..rng.random_range(1..2000)).map(|_| rng.random()).collect(),
        1 => format!("POST /v1/webhooks/{source} HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n{{}}").into_bytes(),
        2 => format!("POST /v1/webhooks/{source} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\n{{}}").into_bytes(),
        3 => format!("POST /v1/webhooks/{source} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n").into_bytes(),
        4 => format!("POST /v1/webhooks/{source} HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n").into_bytes(),
        5 => format!("POST /v1/webhooks/{source} HTTP/1.1\r\nhost: x\r\nx-bin: \x01\x02\r\ncontent-length: 2\r\n\r\n{{}}").into_bytes(),
        6 => format!("POST /v1/webhooks/{source} HTTP/9.9\r\nhost: x\r\n\r\n").into_bytes(),
        7 => format!("POST http://127.0.0.1/v1/webhooks/{source} HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{{}}").into_bytes(),
        _ => format!("POST /v1/webhooks/{source} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n").into_bytes(),
    };
    let Ok(mut stream) = tokio::net::TcpStream::connect(stack.ingress_addr).await else {
        return Answer::Closed;
    };
    if stream.write_all(&request).await.is_err() {
        return Answer::Closed;
    }
    // No more input: a well-behaved server answers or closes.
    let _ = stream.shutdown().await;
    let mut buffer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut buffer)).await {
        Err(_) => Answer::Hung,
        Ok(_) => {
            let text = String::from_utf8_lossy(&buffer);
            text.lines()
                .next()
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|code| code.parse().ok())
                .map_or(Answer::Closed, Answer::Status)
        }
    }
}
