//! Callers that misbehave without sending garbage: replays, stale signatures, a courier far over
//! its rate limit, and callers that send their request slowly. None of them may cost another
//! courier anything.

use std::time::{Duration, Instant};

use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{direct_event, hostile_stack, post, signature, unique};
use waybill_e2e::eventually;
use waybill_e2e::stack::Stack;

async fn count(stack: &Stack, sql: &str, tracking_number: &str) -> i64 {
    let store = waybill_store::Store::connect(&stack.database_url(), 1)
        .await
        .expect("database");
    let row = sqlx::query(sql)
        .bind(tracking_number)
        .fetch_one(store.pool())
        .await
        .expect("query");
    store.close().await;
    row.try_get::<i64, _>(0).expect("a count")
}

async fn wait_stored(stack: &Stack, tracking_number: &str) {
    let what = format!("{tracking_number} is stored");
    eventually(Duration::from_secs(20), &what, async || {
        count(stack, EVENTS, tracking_number).await > 0
    })
    .await;
}

const EVENTS: &str = "select count(*) from tracking_events e join shipments s on s.id = e.shipment_id where s.tracking_number = $1";
const OUTBOX: &str = "select count(*) from outbox o join shipments s on s.id = o.shipment_id where s.tracking_number = $1";
const VERSION: &str = "select coalesce(max(version), 0) from shipments where tracking_number = $1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn a_replayed_request_has_no_effect_and_a_stale_signature_is_refused() {
    let stack = hostile_stack("replay", "warn").await;
    let http = reqwest::Client::new();
    let tracking_number = format!("RP{}", unique());
    let body = direct_event(&tracking_number, "InTransit", "Replay Depot");
    // The same signed request, replayed within the tolerance window, again and again.
    let (name, value) = signature(&stack, "direct", &body).expect("the direct source signs");
    for _ in 0..5 {
        let response = http
            .post(format!("{}/v1/webhooks/direct", stack.ingress_url()))
            .header("content-type", "application/json")
            .header(&name, &value)
            .body(body.clone())
            .send()
            .await
            .expect("ingress reachable");
        assert_eq!(response.status(), 200);
    }
    wait_stored(&stack, &tracking_number).await;
    // Give any straggling duplicate time to be merged (it must change nothing).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        count(&stack, EVENTS, &tracking_number).await,
        1,
        "one event"
    );
    assert_eq!(
        count(&stack, VERSION, &tracking_number).await,
        1,
        "one state change"
    );
    assert_eq!(
        count(&stack, OUTBOX, &tracking_number).await,
        1,
        "one downstream notification"
    );

    // A timestamped signature from outside the tolerance window (Waybill's format: 300 s).
    let stale = chrono::Utc::now() - chrono::Duration::seconds(600);
    let other = direct_event(&format!("ST{}", unique()), "InTransit", "Stale Depot");
    let profiles = stack.settings.profiles().expect("profiles");
    let (name, value) = profiles
        .get("waybill")
        .expect("waybill profile")
        .sign(&other, super::source("direct").1, stale)
        .expect("signs");
    let response = http
        .post(format!("{}/v1/webhooks/direct", stack.ingress_url()))
        .header(name, value)
        .body(other)
        .send()
        .await
        .expect("ingress reachable");
    assert_eq!(
        response.status(),
        401,
        "a signature 10 minutes old is refused"
    );
    stack.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn a_courier_over_its_rate_limit_gets_429_and_its_neighbour_is_untouched() {
    let stack = std::sync::Arc::new(hostile_stack("ratelimit", "warn").await);
    let http = reqwest::Client::new();
    // The noisy courier fires 200 requests at once (its limit: 5/s, burst 5).
    let noisy = {
        let (stack, http) = (stack.clone(), http.clone());
        tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..200 {
                let (stack, http) = (stack.clone(), http.clone());
                set.spawn(async move {
                    let body = direct_event(&format!("NZ{}", unique()), "InTransit", "Noisy Depot");
                    let response = post(&http, &stack, "noisy", &body, true)
                        .await
                        .expect("answer");
                    (
                        response.status().as_u16(),
                        response.headers().contains_key("retry-after"),
                    )
                });
            }
            let mut answers = Vec::new();
            while let Some(answer) = set.join_next().await {
                answers.push(answer.expect("task"));
            }
            answers
        })
    };
    // Meanwhile its neighbour sends at its own pace and is served as usual.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let (response, took) = post_timed(&http, &stack, "quiet", "QT", "Quiet Depot").await;
        slowest = slowest.max(took);
        assert_eq!(
            response.status(),
            200,
            "the quiet courier must not be limited"
        );
    }
    let answers = noisy.await.expect("noisy task");
    let accepted = answers.iter().filter(|(code, _)| *code == 200).count();
    let limited = answers
        .iter()
        .filter(|(code, retry)| *code == 429 && *retry)
        .count();
    println!(
        "rate limit: noisy courier 200 requests → {accepted} accepted, {limited} × 429 with Retry-After; \
         quiet courier 50 × 200, slowest {} ms, in {} ms",
        slowest.as_millis(),
        started.elapsed().as_millis()
    );
    assert_eq!(
        accepted + limited,
        200,
        "every noisy request got 200 or 429 + Retry-After: {answers:?}"
    );
    assert!(accepted <= 20, "the limit held: {accepted} accepted");
    assert!(
        slowest < Duration::from_secs(2),
        "the quiet courier was slowed down: {slowest:?}"
    );
    let stack = std::sync::Arc::try_unwrap(stack).unwrap_or_else(|_| panic!("stack still shared"));
    stack.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn slow_callers_are_cut_off_and_do_not_hold_up_others() {
    let stack = hostile_stack("slow", "warn").await;
    let http = reqwest::Client::new();
    let addr = stack.ingress_addr;
    // Slow headers: a byte a second, never finishing the header block.
    let slow_headers = tokio::spawn(trickle(
        addr,
        b"POST /v1/webhooks/direct HTTP/1.1\r\nhost: x\r\nx-slow: ".to_vec(),
        b"a",
    ));
    // Slow body: full headers, then ten bytes a second of a 2 kB body.
    let body = direct_event(&format!("SB{}", unique()), "InTransit", "Slow Depot");
    let signed = signature(&stack, "direct", &body).expect("signs");
    let head = format!(
        "POST /v1/webhooks/direct HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{}: {}\r\ncontent-length: {}\r\n\r\n",
        signed.0, signed.1, 2048
    );
    let slow_body = tokio::spawn(trickle(addr, head.into_bytes(), b"          "));
    // Others are served meanwhile.
    for _ in 0..20 {
        let (response, took) = post_timed(&http, &stack, "direct", "OK", "Depot").await;
        assert_eq!(response.status(), 200);
        assert!(took < Duration::from_secs(2));
        // Spread over the slow callers' lifetime on purpose.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (headers_answer, headers_took) = slow_headers.await.expect("task");
    let (body_answer, body_took) = slow_body.await.expect("task");
    println!(
        "slow headers: {headers_answer} after {} ms; slow body: {body_answer} after {} ms",
        headers_took.as_millis(),
        body_took.as_millis()
    );
    // Header read timeout 10 s; request deadline = publish timeout (2 s) + 10 s.
    assert!(
        headers_took < Duration::from_secs(16),
        "slow headers held on for {headers_took:?}"
    );
    assert!(
        !headers_answer.contains(" 2") && !headers_answer.contains(" 5"),
        "slow headers: {headers_answer}"
    );
    assert!(
        body_took < Duration::from_secs(16),
        "slow body held on for {body_took:?}"
    );
    assert!(
        body_answer.contains(" 408"),
        "slow body answered {body_answer}, expected 408"
    );
    stack.destroy().await;
}

/// Posts a signed scan of a new tracking number (`prefix` and a unique number) at `depot` to
/// `source`: the answer, and how long it took.
async fn post_timed(
    http: &reqwest::Client,
    stack: &Stack,
    source: &str,
    prefix: &str,
    depot: &str,
) -> (reqwest::Response, Duration) {
    let body = direct_event(&format!("{prefix}{}", unique()), "InTransit", depot);
    let sent = Instant::now();
    let response = post(http, stack, source, &body, true)
        .await
        .expect("answer");
    (response, sent.elapsed())
}

/// Connects, sends `head`, then `drip` once a second until the server answers or closes (or 40 s
/// pass): the first line of the answer (or how it ended), and when.
async fn trickle(
    addr: std::net::SocketAddr,
    head: Vec<u8>,
    drip: &'static [u8],
) -> (String, Duration) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    stream.write_all(&head).await.expect("write");
    let mut buffer = [0u8; 512];
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => {
                let answer = match read {
                    Ok(n) if n > 0 => String::from_utf8_lossy(&buffer[..n]).lines().next().unwrap_or_default().to_owned(),
                    _ => "closed".to_owned(),
                };
                return (answer, started.elapsed());
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if stream.write_all(drip).await.is_err() || started.elapsed() > Duration::from_secs(40) {
                    return ("closed while writing".to_owned(), started.elapsed());
                }
            }
        }
    }
}
