//! A webhook and a poll, each one connected trace from its start to the subscriber's delivery,
//! with logs at `warn` (quiet) and at `info`; the passes that moved them link to them; and no
//! span anywhere holds a secret, a signature or the payloads' personal data.

use std::time::Duration;

use waybill_e2e::otlp::{ReceivedSpan, render_tree};

use super::traced::{Options, Traced, linking_to, one, parse_traceparent};

/// The spans of a webhook's trace, each under the one before it (the last two under the merge).
const WEBHOOK_PATH: [&str; 6] = [
    "waybill.webhook",
    "waybill.publish",
    "waybill.merge",
    "waybill.event_publish",
    "waybill.deliver",
    "record_delivered",
];

/// The spans of a poll's trace.
const POLL_PATH: [&str; 7] = [
    "waybill.poll_job",
    "waybill.poll",
    "waybill.poll_request",
    "waybill.merge",
    "waybill.event_publish",
    "waybill.deliver",
    "record_delivered",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn webhook_and_poll_are_whole_traces_with_logs_at_warn() {
    whole_traces("warn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn webhook_and_poll_are_whole_traces_with_logs_at_info() {
    whole_traces("info").await;
}

async fn whole_traces(rust_log: &'static str) {
    let traced = Traced::start(
        &format!("flows-{rust_log}"),
        Options {
            rust_log,
            ..Options::default()
        },
    )
    .await;
    // Start-up (connections, topology) is traced too; the test looks at what follows.
    tokio::time::sleep(Duration::from_millis(500)).await;
    traced.otlp.clear();
    let courier_trace = format!("{:032x}", rand::random::<u128>());
    let courier_span = format!("{:016x}", rand::random::<u64>());
    let signature = traced
        .post_webhook(
            &format!("OTLPW{:08}", rand::random::<u32>() % 100_000_000),
            Some(&format!("00-{courier_trace}-{courier_span}-01")),
        )
        .await;
    traced
        .register_poll(&format!("OTLPP{:08}", rand::random::<u32>() % 100_000_000))
        .await;

    // The third parties saw the traces: the subscriber the webhook's, the courier the poll's.
    let within = Duration::from_secs(30);
    traced
        .subscriber
        .traceparent(within, |value| value.contains(&courier_trace))
        .await;
    let (poll_trace, poll_request_id, sampled) =
        parse_traceparent(&traced.courier.traceparent(within, |_| true).await);
    assert!(sampled, "the poll request is sampled");
    traced
        .subscriber
        .traceparent(within, |value| value.contains(&poll_trace))
        .await;

    let spans = traced
        .otlp
        .wait_until(Duration::from_secs(20), |spans| {
            complete(spans, &courier_trace, &WEBHOOK_PATH)
                && complete(spans, &poll_trace, &POLL_PATH)
        })
        .await;
    let webhook = webhook_tree(&spans, &courier_trace, &courier_span);
    let poll = poll_tree(&spans, &poll_trace, &poll_request_id);
    assert_no_orphans(&spans);
    assert_delivery_carried(&traced, &spans, &courier_trace);
    assert_delivery_carried(&traced, &spans, &poll_trace);
    assert_nothing_private(&spans, &traced.needles(&[signature]));
    if rust_log == "warn" {
        let logs = traced.stack.logs();
        assert!(
            !logs.contains("\"level\":\"INFO\""),
            "RUST_LOG=warn let info lines through"
        );
    }
    println!("RUST_LOG={rust_log}: {} spans exported in all", spans.len());
    println!("webhook trace {courier_trace}:\n{webhook}");
    println!("poll trace {poll_trace}:\n{poll}");
    traced.destroy().await;
}

/// Whether trace `trace_id` has every span of `path` and the merge is linked from the batch,
/// relay, fan-out and delivery passes (those are exported a little later than the trace).
fn complete(spans: &[ReceivedSpan], trace_id: &str, path: &[&str]) -> bool {
    let has = |name: &str| {
        spans
            .iter()
            .any(|span| span.trace_id == trace_id && span.name == name)
    };
    if !path.iter().all(|name| has(name)) {
        return false;
    }
    let Some(merge) = spans
        .iter()
        .find(|span| span.trace_id == trace_id && span.name == "waybill.merge")
    else {
        return false;
    };
    let passes: Vec<&str> = linking_to(spans, &merge.span_id)
        .iter()
        .map(|span| span.name.as_str())
        .collect();
    [
        "waybill.relay_publish",
        "waybill.relay_fan_out",
        "waybill.dispatch",
    ]
    .iter()
    .all(|pass| passes.contains(pass))
}

/// Asserts the webhook's tree (see [`WEBHOOK_PATH`]) under the courier's span, and the passes
/// linking into it; returns it drawn.
fn webhook_tree(spans: &[ReceivedSpan], trace: &str, courier_span: &str) -> String {
    let webhook = one(spans, trace, "waybill.webhook");
    assert_eq!(
        webhook.parent_span_id, courier_span,
        "the courier's span is the parent"
    );
    assert_eq!(webhook.service, "waybill-ingress");
    let publish = one(spans, trace, "waybill.publish");
    assert_eq!(publish.parent_span_id, webhook.span_id);
    let merge = one(spans, trace, "waybill.merge");
    assert_eq!(merge.parent_span_id, publish.span_id);
    assert_eq!(merge.service, "waybill-worker");
    assert_passes(spans, &publish.span_id, &["waybill.merge_batch"]);
    downstream_tree(spans, trace, merge);
    assert_connected(spans, trace, courier_span);
    draw(spans, trace)
}

/// Asserts the poll's tree (see [`POLL_PATH`]), from the scheduler's job to the delivery, the
/// courier's answer on the request span, and the passes; returns it drawn.
fn poll_tree(spans: &[ReceivedSpan], trace: &str, request_id: &str) -> String {
    let job = one(spans, trace, "waybill.poll_job");
    assert!(job.is_root(), "a poll job starts its trace");
    assert_passes(spans, &job.span_id, &["waybill.poll_schedule"]);
    let poll = one(spans, trace, "waybill.poll");
    assert_eq!(poll.parent_span_id, job.span_id);
    let request = one(spans, trace, "waybill.poll_request");
    assert_eq!(request.parent_span_id, poll.span_id);
    assert_eq!(
        request.span_id, request_id,
        "the courier saw the request span"
    );
    assert_eq!(request.attribute("http.response.status_code"), Some("200"));
    let merge = one(spans, trace, "waybill.merge");
    assert_eq!(merge.parent_span_id, poll.span_id);
    downstream_tree(spans, trace, merge);
    assert_connected(spans, trace, "");
    draw(spans, trace)
}

/// The part both paths share: the change's topic publish and delivery under the merge, and the
/// relay, fan-out and delivery passes linking to the merge.
fn downstream_tree(spans: &[ReceivedSpan], trace: &str, merge: &ReceivedSpan) {
    let event_publish = one(spans, trace, "waybill.event_publish");
    assert_eq!(event_publish.parent_span_id, merge.span_id);
    let deliver = one(spans, trace, "waybill.deliver");
    assert_eq!(deliver.parent_span_id, merge.span_id);
    assert_eq!(deliver.attribute("http.response.status_code"), Some("204"));
    let recorded = one(spans, trace, "record_delivered");
    assert_eq!(recorded.parent_span_id, deliver.span_id);
    assert_passes(
        spans,
        &merge.span_id,
        &[
            "waybill.relay_publish",
            "waybill.relay_fan_out",
            "waybill.dispatch",
        ],
    );
}

/// Asserts every span of `trace` hangs from another of it, but its root, whose parent is
/// `root_parent` (the courier's span, or none).
fn assert_connected(spans: &[ReceivedSpan], trace: &str, root_parent: &str) {
    let members: Vec<&ReceivedSpan> = spans.iter().filter(|span| span.trace_id == trace).collect();
    let roots: Vec<&str> = members
        .iter()
        .filter(|span| {
            !members
                .iter()
                .any(|other| other.span_id == span.parent_span_id)
        })
        .map(|span| span.name.as_str())
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "trace {trace} is not one tree; its roots: {roots:?}"
    );
    assert!(
        members
            .iter()
            .any(|span| span.parent_span_id == root_parent && span.name == roots[0]),
        "the root of trace {trace} is {} but does not hang from {root_parent:?}",
        roots[0]
    );
}

/// Asserts that each pass in `names` links to `span_id`, from a trace of its own.
fn assert_passes(spans: &[ReceivedSpan], span_id: &str, names: &[&str]) {
    let linking = linking_to(spans, span_id);
    for name in names {
        let pass = linking
            .iter()
            .find(|span| span.name == *name)
            .unwrap_or_else(|| panic!("no {name} links to span {span_id}"));
        assert!(pass.is_root(), "{name} is a trace of its own");
    }
}

/// Asserts every trace exported starts at one of Waybill's entry points (a request, a pass, a
/// poll job): a span that lost its parent would start a trace of its own.
fn assert_no_orphans(spans: &[ReceivedSpan]) {
    let orphans: Vec<&str> = spans
        .iter()
        .filter(|span| span.is_root() && !span.name.starts_with("waybill."))
        .map(|span| span.name.as_str())
        .collect();
    assert!(
        orphans.is_empty(),
        "spans without their parent: {orphans:?}"
    );
}

/// Asserts the subscriber's delivery named the delivery span of `trace`.
fn assert_delivery_carried(traced: &Traced, spans: &[ReceivedSpan], trace: &str) {
    let deliver = one(spans, trace, "waybill.deliver");
    let expected = format!("00-{trace}-{}-01", deliver.span_id);
    assert!(
        traced.subscriber.headers("traceparent").contains(&expected),
        "the delivery did not carry {expected}"
    );
}

/// Asserts no attribute, event or link of any span holds one of `needles`.
fn assert_nothing_private(spans: &[ReceivedSpan], needles: &[String]) {
    let mut found = Vec::new();
    for span in spans {
        for text in span.texts() {
            for needle in needles
                .iter()
                .filter(|needle| text.contains(needle.as_str()))
            {
                found.push(format!("{} holds {needle:?}", span.name));
            }
        }
    }
    assert!(
        found.is_empty(),
        "spans hold secrets, signatures or personal data: {found:?}"
    );
    assert!(needles.len() >= 12, "too few needles to prove anything");
}

/// The trace drawn as a tree, followed by the passes linking into it.
fn draw(spans: &[ReceivedSpan], trace: &str) -> String {
    let members: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|span| span.trace_id == trace)
        .cloned()
        .collect();
    let mut out = render_tree(&members, spans);
    let ids: Vec<&str> = members.iter().map(|span| span.span_id.as_str()).collect();
    let mut passes: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|span| span.trace_id != trace)
        .filter(|span| {
            span.links
                .iter()
                .any(|link| ids.contains(&link.span_id.as_str()))
        })
        .collect();
    passes.sort_by_key(|span| span.start_unix_nano);
    for pass in passes {
        let subtree: Vec<ReceivedSpan> = spans
            .iter()
            .filter(|span| span.trace_id == pass.trace_id)
            .cloned()
            .collect();
        out.push_str(&render_tree(&subtree, spans));
    }
    out
}
