//! Ratio sampling decided once per trace and honoured downstream: with
//! `parentbased_traceidratio` at 0, a courier that samples its request gets the whole trace, one
//! that does not gets none of it, and a request without a courier trace is dropped by the ratio;
//! each decision reaches the subscriber in the delivery's `traceparent`, across the queue.

use std::time::Duration;

use super::traced::{Options, Traced, parse_traceparent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn a_sampling_decision_travels_from_the_courier_to_the_subscriber() {
    let traced = Traced::start(
        "sampling",
        Options {
            rust_log: "warn",
            sampler: ("parentbased_traceidratio", "0"),
            ..Options::default()
        },
    )
    .await;
    let sampled = format!("{:032x}", rand::random::<u128>());
    let unsampled = format!("{:032x}", rand::random::<u128>());
    let span = format!("{:016x}", rand::random::<u64>());
    for (number, traceparent) in [
        (1, Some(format!("00-{sampled}-{span}-01"))),
        (2, Some(format!("00-{unsampled}-{span}-00"))),
        (3, None),
    ] {
        traced
            .post_webhook(
                &format!("OTLPS{number}{:06}", rand::random::<u32>() % 1_000_000),
                traceparent.as_deref(),
            )
            .await;
    }
    traced
        .subscriber
        .wait_requests(3, Duration::from_secs(30))
        .await;
    let deliveries: Vec<(String, String, bool)> = traced
        .subscriber
        .headers("traceparent")
        .iter()
        .map(|value| parse_traceparent(value))
        .collect();
    // The courier's decision reached the subscriber, both ways; the third was drawn (never, at 0).
    let flag_of = |trace: &str| {
        deliveries
            .iter()
            .find(|(t, _, _)| t == trace)
            .map(|(_, _, s)| *s)
    };
    assert_eq!(flag_of(&sampled), Some(true));
    assert_eq!(flag_of(&unsampled), Some(false));
    let drawn: Vec<&(String, String, bool)> = deliveries
        .iter()
        .filter(|(trace, _, _)| *trace != sampled && *trace != unsampled)
        .collect();
    assert_eq!(
        drawn.len(),
        1,
        "one delivery of the untraced webhook: {deliveries:?}"
    );
    assert!(!drawn[0].2, "the ratio 0 drew the untraced webhook out");

    // What was exported: the sampled trace, and passes only where they link to it.
    traced
        .otlp
        .wait_until(Duration::from_secs(10), |spans| {
            spans
                .iter()
                .any(|span| span.trace_id == sampled && span.name == "record_delivered")
        })
        .await;
    // The passes of the unsampled changes would be exported by now too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = traced.otlp.spans();
    assert!(
        spans
            .iter()
            .any(|span| span.trace_id == sampled && span.name == "waybill.deliver")
    );
    for span in &spans {
        assert_ne!(
            span.trace_id, unsampled,
            "{} of the unsampled trace was exported",
            span.name
        );
        assert_ne!(
            span.trace_id, drawn[0].0,
            "{} of a trace drawn out was exported",
            span.name
        );
        if span.trace_id != sampled && span.is_root() && !span.links.is_empty() {
            assert!(
                span.links.iter().any(|link| link.trace_id == sampled),
                "{} was exported though it links to no sampled trace",
                span.name
            );
        }
    }
    println!(
        "ratio 0: {} spans exported, {} of the sampled trace",
        spans.len(),
        spans.iter().filter(|span| span.trace_id == sampled).count()
    );
    traced.destroy().await;
}
