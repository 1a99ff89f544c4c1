//! Poison messages land in the dead-letter queue with their reason, and `waybill deadletters`
//! lists them without their bodies, shows a body only when asked, replays through the normal
//! path and purges.

use std::time::Duration;

use waybill_cli::deadletters::{self, Selection};

use super::logs::publish_raw;
use super::{bus_connection, direct_event, post, ready_publisher, unique};
use waybill_e2e::eventually;
use waybill_e2e::stack::{Stack, bin_dir};

/// A name in the poison body that must never be printed unless asked for.
const CANARY: &str = "Philomena Cunk-Bassington";

async fn wait_letters(stack: &Stack, want: usize) -> Vec<deadletters::DeadLetterSummary> {
    let what = format!("{want} dead letters are listed");
    eventually(Duration::from_secs(30), &what, async || {
        let (letters, _) = deadletters::list(&stack.settings, 100).await.expect("list");
        (letters.len() >= want).then_some(letters)
    })
    .await
}

fn cli(stack: &Stack, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(bin_dir().expect("binaries").join("waybill"))
        .args(args)
        .env("WAYBILL_CONFIG", stack.log_dir().join("waybill.toml"))
        .env("RUST_LOG", "warn")
        .env_remove("WAYBILL_BUS_PREFIX")
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run waybill");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn poison_is_dead_lettered_with_its_reason_and_the_cli_lists_shows_replays_and_purges() {
    // No worker yet: a valid message is parked in the dead-letter queue by hand, the way the
    // worker does it for a message that failed for a reason since fixed.
    let mut stack = Stack::create_with("deadletters", 1, "warn", super::EXTRA_SOURCES)
        .await
        .expect("stack");
    stack.start_ingress().await.expect("ingress");
    let http = reqwest::Client::new();
    let tracking_number = format!("DL{}", unique());
    let body = direct_event(&tracking_number, "InTransit", "Dead Letter Depot");
    assert_eq!(
        post(&http, &stack, "direct", &body, true)
            .await
            .expect("answer")
            .status(),
        200
    );
    park_as_failed(&stack, "simulated: the database rejected it before a fix").await;

    // A real poison message: the worker cannot decode it and dead-letters it itself.
    let poison = format!(r#"{{"type":"webhook.v0","customer_name":"{CANARY}"}}"#);
    publish_raw(&stack, poison.as_bytes()).await;
    stack.start_worker(0).await.expect("worker");

    let letters = wait_letters(&stack, 2).await;
    let queue = stack.webhooks_queue();
    let with_reason = |wanted: fn(&str) -> bool| {
        letters
            .iter()
            .find(|l| l.reason.as_deref().is_some_and(wanted))
            .cloned()
    };
    let valid = with_reason(|r| r.starts_with("simulated")).expect("the parked message");
    let undecodable = with_reason(|r| r.contains("undecodable"))
        .unwrap_or_else(|| panic!("the worker's dead letter with its reason: {letters:?}"));
    assert_eq!(undecodable.size, poison.len());
    for letter in [&valid, &undecodable] {
        assert_eq!(
            letter.original_queue.as_deref(),
            Some(queue.as_str()),
            "{letter:?}"
        );
        assert!(letter.original_exchange.is_some(), "replayable: {letter:?}");
    }

    // The CLI: list and show never print the body; show --body does.
    let (ok, listed) = cli(&stack, &["deadletters", "list"]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains(&undecodable.id) && listed.contains("undecodable"),
        "{listed}"
    );
    assert!(!listed.contains(CANARY), "list printed a body:\n{listed}");
    let (ok, shown) = cli(&stack, &["deadletters", "show", &undecodable.id]);
    assert!(ok && shown.contains("body not shown"), "{shown}");
    assert!(
        !shown.contains(CANARY),
        "show printed the body without --body:\n{shown}"
    );
    let (ok, shown) = cli(&stack, &["deadletters", "show", &undecodable.id, "--body"]);
    assert!(ok && shown.contains(CANARY), "show --body:\n{shown}");

    // Replay: the fixed one goes through the normal path and is merged.
    let report = deadletters::replay(&stack.settings, &Selection::Ids(vec![valid.id.clone()]))
        .await
        .expect("replay");
    assert_eq!(report.replayed, vec![valid.id.clone()], "{report:?}");
    let store = waybill_store::Store::connect(&stack.database_url(), 1)
        .await
        .expect("db");
    eventually(
        Duration::from_secs(20),
        "the replayed message is merged",
        async || {
            store
                .get_shipment(
                    &waybill_core::TenantId::default_tenant(),
                    &waybill_core::CarrierCode::parse("acme").expect("carrier"),
                    &waybill_core::TrackingNumber::parse(&tracking_number)
                        .expect("tracking number"),
                )
                .await
                .expect("query")
                .is_some()
        },
    )
    .await;
    store.close().await;

    // Replaying the poison sends it through the worker again, which dead-letters it again.
    let (ok, replayed) = cli(&stack, &["deadletters", "replay", &undecodable.id]);
    assert!(ok, "{replayed}");
    let letters = wait_letters(&stack, 1).await;
    assert!(
        letters.iter().any(|l| l.id == undecodable.id),
        "{letters:?}"
    );

    // Purge.
    let (ok, purged) = cli(&stack, &["deadletters", "purge", "--all"]);
    assert!(ok && purged.contains(&undecodable.id), "{purged}");
    let (letters, total) = deadletters::list(&stack.settings, 100).await.expect("list");
    assert!(letters.is_empty() && total == 0, "{letters:?}");
    stack.destroy().await;
}

/// Takes the one message waiting in the webhooks queue and dead-letters it with `reason`,
/// exactly as the worker does (`waybill_bus::dead::publish_dead`).
async fn park_as_failed(stack: &Stack, reason: &str) {
    let topology = stack.topology();
    let connection = bus_connection(stack, "waybill-hostile-park").await;
    let mut consumer = waybill_bus::Consumer::start(&connection, &topology.webhooks_queue(), 1, "")
        .await
        .expect("consumer");
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("a message within 10 s")
        .expect("a delivery")
        .expect("no error");
    let (publisher, stop) = ready_publisher(stack, &topology, "waybill-hostile-park").await;
    waybill_bus::dead::publish_dead(
        &publisher,
        &topology,
        &topology.webhooks_queue(),
        &delivery,
        reason,
    )
    .await
    .expect("dead-lettered");
    consumer
        .acker()
        .ack(delivery.delivery_tag)
        .await
        .expect("acked");
    consumer.cancel().await;
    stop.cancel();
    publisher.close().await;
    let _ = connection.close().await;
}
