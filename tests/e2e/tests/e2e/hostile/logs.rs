//! A full run with every log turned up to `debug`, then a grep of what the processes wrote for
//! the secrets, the signatures sent (good and bad) and the personal data in the payloads: none
//! may appear.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{bus_connection, hostile_stack, ready_publisher, signature, unique};
use waybill_e2e::eventually;
use waybill_e2e::stack::{SECRETS, Stack};

/// Personal data planted in every payload (names, addresses, e-mail, phone).
const CANARIES: [&str; 5] = [
    "Zebedee Quartermaine",
    "42 Wallaby Way Sydney",
    "zebedee.quartermaine@example.org",
    "+61 400 123 987",
    "Quartermaine Lane",
];

/// Plants the canaries everywhere in a JSON payload: extra personal fields on every object, and
/// in the fields couriers put addresses and messages in.
fn plant(value: &mut Value, depth: usize) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match (key.as_str(), &field) {
                    ("location" | "city" | "address" | "address1", Value::String(_)) => {
                        *field = Value::String(format!("{}, {}", CANARIES[4], CANARIES[1]));
                    }
                    (
                        "message" | "remark" | "description" | "status_description",
                        Value::String(_),
                    ) => {
                        *field = Value::String(format!("Left with {}", CANARIES[0]));
                    }
                    _ => plant(field, depth + 1),
                }
            }
            if depth < 4 {
                map.insert("customer_name".into(), CANARIES[0].into());
                map.insert("delivery_address".into(), CANARIES[1].into());
                map.insert("emails".into(), serde_json::json!([CANARIES[2]]));
                map.insert("phone".into(), CANARIES[3].into());
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| plant(item, depth + 1)),
        _ => {}
    }
}

fn fixtures(profile: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/waybill-carriers/tests/fixtures")
        .join(profile);
    let mut bodies = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(mut json) = serde_json::from_slice::<Value>(&text) else {
                continue;
            };
            plant(&mut json, 0);
            bodies.push(serde_json::to_vec(&json).expect("serialisable"));
        }
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn debug_logs_of_a_full_run_hold_no_secret_signature_or_personal_data() {
    let stack = hostile_stack("logs", "debug").await;
    let http = reqwest::Client::new();
    let mut needles: Vec<String> = super::all_secrets()
        .into_iter()
        .map(str::to_owned)
        .collect();
    needles.extend(CANARIES.iter().map(|c| (*c).to_owned()));
    let mut outcomes: Vec<u16> = Vec::new();

    for (source, profile, _) in SECRETS {
        let mut bodies = fixtures(profile);
        let mut direct = serde_json::json!({
            "carrier": "acme", "tracking_number": format!("LG{}", unique()), "status": "Delivered",
            "raw_status": "Delivered", "occurred_at": chrono::Utc::now().to_rfc3339(),
            "location": CANARIES[1], "message": format!("Signed for by {}", CANARIES[0]),
        });
        plant(&mut direct, 0);
        if profile == "waybill" {
            bodies.push(serde_json::to_vec(&direct).expect("serialisable"));
        }
        for body in bodies {
            // Signed properly: accepted (or refused by the mapper), merged by the worker.
            let (name, value) = signature(&stack, source, &body).expect("the source signs");
            needles.push(value.clone());
            outcomes.push(send(&http, &stack, source, &body, Some((&name, &value))).await);
            // A forged signature and a missing one: refused.
            let forged = waybill_config::Settings::from_toml_str("")
                .expect("defaults")
                .profiles()
                .expect("profiles")
                .get(profile)
                .expect("profile")
                .sign(&body, "not-the-secret", chrono::Utc::now());
            if let Some((name, value)) = forged {
                needles.push(value.clone());
                outcomes.push(send(&http, &stack, source, &body, Some((&name, &value))).await);
            }
            outcomes.push(send(&http, &stack, source, &body, None).await);
            // Truncated: the parser's error must not quote it.
            let half = &body[..body.len() / 2];
            if let Some((name, value)) = signature(&stack, source, half) {
                outcomes.push(send(&http, &stack, source, half, Some((&name, &value))).await);
            }
        }
    }
    // A poison message straight onto the queue: the worker dead-letters it (with its reason,
    // never its body).
    let poison = format!(r#"{{"type":"nonsense","customer_name":"{}"}}"#, CANARIES[0]);
    publish_raw(&stack, poison.as_bytes()).await;
    // The shipments API answers with personal data; its logs must not.
    let _ = http
        .get(format!(
            "{}/v1/shipments?order_number=12345678",
            stack.worker_url(0)
        ))
        .send()
        .await;
    // Let the worker merge and dead-letter everything.
    wait_dead_lettered(&stack).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = outcomes.iter().filter(|code| **code == 200).count();
    let refused = outcomes.iter().filter(|code| **code == 401).count();
    assert!(
        accepted >= 5,
        "too little was accepted to prove anything: {outcomes:?}"
    );
    assert!(
        refused >= 5,
        "forged signatures were not refused: {outcomes:?}"
    );

    // SIGTERM: shutdown logs are written too.
    let dir = stack.destroy_keeping_logs().await;
    let logs: String = std::fs::read_dir(&dir)
        .expect("log dir")
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "log"))
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
        .collect();
    let lines = logs.lines().count();
    assert!(
        lines > 50,
        "debug logging produced only {lines} lines: is RUST_LOG honoured?"
    );
    let found: Vec<&String> = needles
        .iter()
        .filter(|needle| logs.contains(needle.as_str()))
        .collect();
    println!(
        "log grep: {lines} debug lines from {} requests ({accepted} accepted, {refused} refused), {} needles, {} found",
        outcomes.len(),
        needles.len(),
        found.len()
    );
    assert!(
        found.is_empty(),
        "the logs in {} contain secrets, signatures or personal data: {found:?}",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn send(
    http: &reqwest::Client,
    stack: &Stack,
    source: &str,
    body: &[u8],
    signature: Option<(&str, &str)>,
) -> u16 {
    let mut request = http
        .post(format!("{}/v1/webhooks/{source}", stack.ingress_url()))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some((name, value)) = signature {
        request = request.header(name, value);
    }
    request
        .send()
        .await
        .map_or(0, |response| response.status().as_u16())
}

/// Publishes `body` as-is to the stack's inbound exchange (as a broken producer would).
pub async fn publish_raw(stack: &Stack, body: &[u8]) {
    let topology = stack.topology();
    let (publisher, stop) = ready_publisher(stack, &topology, "waybill-hostile").await;
    let message = waybill_bus::OutboundMessage::new(
        topology.inbound_exchange(),
        waybill_bus::Topology::WEBHOOK_ROUTING_KEY,
        body.to_vec(),
    )
    .with_message_id(format!("poison-{}", unique()));
    publisher.publish(message).await.expect("published");
    stop.cancel();
    publisher.close().await;
}

/// Waits until the dead-letter queue holds something.
async fn wait_dead_lettered(stack: &Stack) {
    let queue = stack.topology().dead_queue();
    let connection = bus_connection(stack, "waybill-hostile-check").await;
    eventually(
        Duration::from_secs(20),
        "the poison message is dead-lettered",
        async || {
            connection
                .queue_stats(&queue)
                .await
                .map_or(0, |s| s.messages)
                > 0
        },
    )
    .await;
    let _ = connection.close().await;
}
