//! An idle installation exports at most a handful of spans: its loops (outbox relay and
//! fan-out, delivery claims, poll scheduler ticks, key-set refresh, pruning) find nothing to do
//! and trace nothing, nor do the readiness probes and scrapes an orchestrator sends.
//!
//! The window and the loops' pace are bounded for the test suite (15 s, loops 5 to 10 times
//! faster than production); `WAYBILL_IDLE_SECS` and `WAYBILL_IDLE_INTERVALS=production` measure
//! a real idle minute instead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::traced::{Intervals, Options, Traced};

/// The most spans an idle window may export.
const HANDFUL: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the binaries built (cargo build --bins); scripts/test.sh runs it"]
async fn an_idle_installation_exports_at_most_a_handful_of_spans() {
    let window = Duration::from_secs(match std::env::var("WAYBILL_IDLE_SECS") {
        Ok(secs) => secs
            .parse()
            .expect("WAYBILL_IDLE_SECS is a number of seconds"),
        Err(_) => 15,
    });
    let intervals = match std::env::var("WAYBILL_IDLE_INTERVALS").as_deref() {
        Ok("production") => Intervals::Production,
        Ok("short") | Err(_) => Intervals::Short,
        Ok(other) => panic!("WAYBILL_IDLE_INTERVALS is `short` or `production`, not {other:?}"),
    };
    let traced = Traced::start(
        "idle",
        Options {
            intervals,
            api_keys: true,
            ..Options::default()
        },
    )
    .await;
    // Start-up is work (connections, topology, the first key set): let it be exported first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    traced.otlp.clear();

    let http = reqwest::Client::new();
    let probed = [
        format!("{}/readyz", traced.stack.ingress_url()),
        format!("{}/readyz", traced.stack.worker_url(0)),
        format!("{}/metrics", traced.stack.worker_url(0)),
    ];
    let started = Instant::now();
    let mut probes = 0;
    while started.elapsed() < window {
        // What an orchestrator and a metrics scraper send, a little more often than they would.
        for url in &probed {
            let answered = http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            assert!(answered, "{url} did not answer");
            probes += 1;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Spans ended in the window are exported within the exporter's delay (100 ms here).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spans = traced.otlp.spans();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for span in &spans {
        *by_name
            .entry(format!("{} [{}]", span.name, span.service))
            .or_default() += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "idle ({intervals:?} intervals, {probes} probes): {} spans in {secs:.0} s, {:.0} a minute: {by_name:?}",
        spans.len(),
        spans.len() as f64 * 60.0 / secs
    );
    assert!(
        spans.len() <= HANDFUL,
        "an idle installation exported {} spans in {secs:.0} s: {by_name:?}",
        spans.len()
    );
    traced.destroy().await;
}
