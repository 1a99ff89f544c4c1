//! One error shape everywhere: every way either server refuses a request — its handlers, its
//! extractors (a path segment that is not UTF-8, a query parameter given twice, an unreadable or
//! mistyped body), its limits (a declared or streamed body over the limit, a body that trickles)
//! and its router (unknown routes, unknown methods) — answers `application/json`
//! `{"error": code, "message": sentence}` with the right status and nothing else.

use std::time::Duration;

use reqwest::Response;
use reqwest::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tenancy::helpers::{ACME_READ, ACME_WRITE, TestApp, sign_direct, spawn_app_with_keys};

/// One refusal to provoke: what to send, and the status and code it must get.
struct Refusal {
    what: &'static str,
    status: u16,
    error: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_of_both_servers_is_json_with_its_status_and_code() {
    let (app, [reader, writer]) = spawn_app_with_keys([ACME_READ, ACME_WRITE]).await;
    // The slow body takes the request deadline to be refused: run it beside the rest.
    let (slow, ()) = tokio::join!(trickled_body(&app), walk(&app, &reader, &writer));
    let deadline = "ingress: a body that trickles past the request deadline";
    expect_raw(&refusal(deadline, 408, "request_timeout"), &slow);
    app.shutdown().await;
}

async fn walk(app: &TestApp, reader: &str, writer: &str) {
    let http = &app.http;
    let (ingress, worker) = (app.ingress.as_str(), app.worker());
    let webhook = format!("{ingress}/v1/webhooks/acme-direct");
    let register = format!("{ingress}/v1/shipments");
    let mut cases: Vec<(Refusal, reqwest::RequestBuilder)> = vec![
        (
            refusal("ingress: unknown route", 404, "not_found"),
            http.get(format!("{ingress}/v2/nothing")),
        ),
        (
            refusal("ingress: unknown method", 405, "method_not_allowed"),
            http.get(&webhook),
        ),
        (
            refusal(
                "ingress: unknown method on registrations",
                405,
                "method_not_allowed",
            ),
            http.delete(&register),
        ),
        (
            refusal("ingress: %FF in a path segment", 400, "bad_request"),
            http.post(format!("{ingress}/v1/webhooks/%FF")).body("{}"),
        ),
        (
            refusal("ingress: unknown source", 404, "unknown_source"),
            http.post(format!("{ingress}/v1/webhooks/nobody"))
                .body("{}"),
        ),
        (
            refusal("ingress: unsigned webhook", 401, "unauthorized"),
            http.post(&webhook).body("{}"),
        ),
        (
            refusal(
                "ingress: signed webhook that is not JSON",
                400,
                "bad_request",
            ),
            http.post(&webhook)
                .header("waybill-signature", sign_direct(b"{nope"))
                .body("{nope"),
        ),
        (
            refusal(
                "ingress: signed webhook whose document is a number",
                400,
                "bad_request",
            ),
            http.post(&webhook)
                .header("waybill-signature", sign_direct(b"3"))
                .body("3"),
        ),
        (
            refusal(
                "ingress: signed webhook whose document is null",
                400,
                "bad_request",
            ),
            http.post(&webhook)
                .header("waybill-signature", sign_direct(b"null"))
                .body("null"),
        ),
        (
            refusal("ingress: registration without a key", 401, "unauthorized"),
            http.post(&register).json(&serde_json::json!({})),
        ),
        (
            refusal(
                "ingress: registration with a read-only key",
                403,
                "forbidden",
            ),
            http.post(&register)
                .bearer_auth(reader)
                .json(&serde_json::json!({})),
        ),
        (
            refusal(
                "ingress: registration that is not declared JSON",
                415,
                "unsupported_media_type",
            ),
            http.post(&register)
                .bearer_auth(writer)
                .header(CONTENT_TYPE, "text/plain")
                .body("{}"),
        ),
        (
            refusal("ingress: registration that is not JSON", 400, "bad_request"),
            http.post(&register)
                .bearer_auth(writer)
                .header(CONTENT_TYPE, "application/json")
                .body("{\"tracking_number\": "),
        ),
        (
            refusal(
                "ingress: registration of the wrong shape",
                400,
                "bad_request",
            ),
            http.post(&register)
                .bearer_auth(writer)
                .json(&serde_json::json!({"tracking_number": 7})),
        ),
        (
            refusal("worker: unknown route", 404, "not_found"),
            http.get(format!("{worker}/v2/nothing")),
        ),
        (
            refusal("worker: unknown method", 405, "method_not_allowed"),
            http.post(format!("{worker}/v1/shipments/acme-post/X1")),
        ),
    ];
    let read = |path: &str, key: &str| http.get(format!("{worker}{path}")).bearer_auth(key);
    let shipments = "/v1/shipments?order_number=1";
    cases.extend([
        (
            refusal("worker: no key", 401, "unauthorized"),
            http.get(format!("{worker}{shipments}")),
        ),
        (
            refusal("worker: a key without the scope", 403, "forbidden"),
            read(shipments, writer),
        ),
    ]);
    // With the read key: (what, status, code, path).
    for (what, status, error, path) in [
        (
            "worker: %FF in a path segment",
            400,
            "bad_request",
            "/v1/shipments/%FF/X1",
        ),
        (
            "worker: a query parameter given twice",
            400,
            "bad_request",
            "/v1/shipments?order_number=1&order_number=2",
        ),
        (
            "worker: a missing query parameter",
            400,
            "bad_request",
            "/v1/shipments",
        ),
        (
            "worker: an invalid carrier",
            400,
            "bad_request",
            "/v1/shipments/no%20such!/X1",
        ),
        (
            "worker: an invalid tenant",
            400,
            "bad_request",
            "/v1/shipments?order_number=1&tenant=%21",
        ),
        (
            "worker: another tenant without admin",
            403,
            "forbidden",
            "/v1/shipments?order_number=1&tenant=globex",
        ),
        (
            "worker: an unknown shipment",
            404,
            "not_found",
            "/v1/shipments/acme-post/NOSUCH1",
        ),
    ] {
        cases.push((refusal(what, status, error), read(path, reader)));
    }
    for (refusal, request) in cases {
        expect(&refusal, request.send().await.expect("server reachable")).await;
    }
    let limit = app.settings.ingress.body_limit_bytes;
    for (what, path, authorization) in [
        (
            "ingress: a webhook declaring a body over the limit",
            "/v1/webhooks/acme-direct",
            None,
        ),
        (
            "ingress: a registration declaring a body over the limit",
            "/v1/shipments",
            Some(writer),
        ),
    ] {
        let answer = raw(ingress, &declared_oversize(path, limit, authorization)).await;
        expect_raw(&refusal(what, 413, "payload_too_large"), &answer);
    }
    let answer = raw(
        ingress,
        &chunked_oversize("/v1/webhooks/acme-direct", limit),
    )
    .await;
    expect_raw(
        &refusal(
            "ingress: a chunked webhook over the limit",
            413,
            "payload_too_large",
        ),
        &answer,
    );
}

fn refusal(what: &'static str, status: u16, error: &'static str) -> Refusal {
    Refusal {
        what,
        status,
        error,
    }
}

/// Checks one answer: the status, `application/json`, exactly `error` and `message`, the code,
/// and the headers the status owes.
async fn expect(refusal: &Refusal, response: Response) {
    let what = refusal.what;
    assert_eq!(response.status().as_u16(), refusal.status, "{what}");
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {content_type:?}"
    );
    if refusal.status == 401 && what.contains("key") {
        // API keys are bearer tokens: a 401 says so (a webhook's signature has no challenge).
        assert!(response.headers().contains_key(WWW_AUTHENTICATE), "{what}");
    }
    if refusal.status == 405 {
        assert!(
            response.headers().contains_key(ALLOW),
            "{what}: 405 lists the allowed methods"
        );
    }
    let body = response.text().await.expect("a body");
    check_body(refusal, &body);
}

fn check_body(refusal: &Refusal, body: &str) {
    let what = refusal.what;
    let value: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|error| panic!("{what}: not JSON ({error}): {body:?}"));
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {body}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "message"], "{what}: {body}");
    assert_eq!(value["error"], refusal.error, "{what}: {body}");
    assert!(
        value["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{what}: {body}"
    );
}

/// Headers declaring `limit + 1 MiB` of body, followed by 7 bytes of it: the answer must come
/// without the rest.
fn declared_oversize(path: &str, limit: usize, bearer: Option<&str>) -> Vec<u8> {
    let authorization = bearer
        .map(|key| format!("Authorization: Bearer {key}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: waybill\r\nContent-Type: application/json\r\n{authorization}Content-Length: {}\r\n\r\n{{\"a\":1}}",
        limit + (1 << 20)
    )
    .into_bytes()
}

/// A chunked body larger than the limit, sent whole.
fn chunked_oversize(path: &str, limit: usize) -> Vec<u8> {
    let chunk = vec![b' '; 64 * 1024];
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: waybill\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..=limit / chunk.len() {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// Sends raw bytes and reads the answer until the server closes the connection or a whole
/// response arrived, within 10 s (a hang fails the test).
async fn raw(base: &str, request: &[u8]) -> String {
    raw_within(base, request, Duration::from_secs(10)).await
}

async fn raw_within(base: &str, request: &[u8], bound: Duration) -> String {
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    // The server may answer and close before taking everything: a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
            if complete(&answer) {
                break;
            }
        }
    };
    tokio::time::timeout(bound, read)
        .await
        .expect("an answer without the rest of the body");
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether `answer` holds a whole response (headers and the body its `content-length` says).
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .is_some_and(|length| body.len() >= length)
}

fn expect_raw(refusal: &Refusal, answer: &str) {
    let what = refusal.what;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{what}: no answer: {answer:?}"));
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    assert_eq!(status, refusal.status.to_string(), "{what}: {head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{what}: {head}"
    );
    check_body(refusal, body);
}

/// A webhook whose headers arrive at once and whose body never finishes: the request deadline
/// (`publish_timeout_ms` + 10 s) must answer it.
async fn trickled_body(app: &TestApp) -> String {
    let request = b"POST /v1/webhooks/acme-direct HTTP/1.1\r\nHost: waybill\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    raw_within(&app.ingress, request, Duration::from_secs(40)).await
}
