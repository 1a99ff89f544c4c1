//! The ledger: what was sent, what was answered, what arrived in Postgres, and what is missing.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
    /// Samples.
    pub samples: u64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
            samples: histogram.len(),
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            self.p50, self.p90, self.p99, self.max
        )
    }
}

/// The request side of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestLedger {
    /// Logical requests sent (a retried request counts once).
    pub sent: u64,
    /// HTTP attempts, retries included.
    pub attempts: u64,
    /// Requests finally answered 2xx.
    pub accepted: u64,
    /// Of those, fresh scans, exact duplicates.
    pub accepted_fresh: u64,
    /// Exact duplicates accepted.
    pub accepted_duplicates: u64,
    /// Requests finally answered 4xx, by status code.
    pub rejected: BTreeMap<u16, u64>,
    /// Invalid requests (bad signature, malformed) that were refused as they should be.
    pub invalid_refused: u64,
    /// Requests finally answered 5xx after all retries.
    pub server_errors: u64,
    /// Requests that finally failed without an HTTP answer.
    pub transport_errors: u64,
    /// Requests that needed more than one attempt (503 or connection errors, like a courier's retry).
    pub retried: u64,
    /// Answers that contradict the intent: an invalid request accepted, a valid one refused.
    pub unexpected: u64,
    /// Wall-clock seconds of the sending phase.
    pub duration_secs: f64,
    /// Accepted requests per second.
    pub accepted_per_sec: f64,
    /// Time from sending a request to its final answer.
    pub ack_latency_ms: Percentiles,
}

/// The Postgres side of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrainLedger {
    /// Distinct event ids carried by accepted requests.
    pub expected_events: u64,
    /// Of those, found in `tracking_events`.
    pub found_events: u64,
    /// `expected_events - found_events`: accepted but not accounted for. Must be 0.
    pub lost: u64,
    /// Distinct shipments the accepted requests were about.
    pub shipments_touched: u64,
    /// Seconds from the end of sending until everything was found (or the wait gave up).
    pub drain_secs: f64,
    /// Merge outcomes counted by the worker during the run (from its `/metrics`), if reachable.
    pub merge_outcomes: Option<BTreeMap<String, u64>>,
    /// Time from sending an event's first request to its row being written.
    pub end_to_end_latency_ms: Percentiles,
    /// Merged events per second over the whole run (found events / time from first send to last store).
    pub merged_per_sec: f64,
    /// Events stored per second after sending ended (what the worker does with a backlog).
    pub drain_rate_per_sec: f64,
    /// CPU seconds the Postgres server process of these lookups spent (0 where `/proc` is not
    /// readable): the accounting's share of Postgres' time.
    pub accounting_cpu_secs: f64,
}

/// Everything a run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ledger {
    /// Requests and answers.
    pub requests: RequestLedger,
    /// What reached Postgres.
    pub drain: Option<DrainLedger>,
}

impl Ledger {
    /// True when nothing accepted is missing and no answer contradicted its intent.
    pub fn balanced(&self) -> bool {
        self.requests.unexpected == 0 && self.drain.as_ref().is_none_or(|drain| drain.lost == 0)
    }
}

impl fmt::Display for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.requests;
        section(f, "requests")?;
        let retries = format!("(attempts {}, retried {})", r.attempts, r.retried);
        figure(f, "sent", r.sent, &retries)?;
        let kinds = format!(
            "(fresh {}, duplicates {})",
            r.accepted_fresh, r.accepted_duplicates
        );
        figure(f, "accepted (2xx)", r.accepted, &kinds)?;
        for (code, count) in &r.rejected {
            figure(f, &format!("rejected {code}"), count, "")?;
        }
        figure(f, "invalid refused", r.invalid_refused, "")?;
        figure(f, "5xx after retries", r.server_errors, "")?;
        figure(f, "transport errors", r.transport_errors, "")?;
        figure(f, "unexpected answers", r.unexpected, "")?;
        let over = format!("over {:.1} s", r.duration_secs);
        figure(f, "accepted/s", format!("{:.0}", r.accepted_per_sec), &over)?;
        text(f, "ack latency", &r.ack_latency_ms)?;
        if let Some(d) = &self.drain {
            section(f, "postgres")?;
            figure(f, "expected events", d.expected_events, "")?;
            let drained = format!("(drained {:.1} s after sending)", d.drain_secs);
            figure(f, "found events", d.found_events, &drained)?;
            figure(f, "shipments touched", d.shipments_touched, "")?;
            if let Some(outcomes) = &d.merge_outcomes {
                let line: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
                text(f, "merge outcomes", &line.join(", "))?;
            }
            figure(f, "merged/s", format!("{:.0}", d.merged_per_sec), "")?;
            text(f, "end-to-end latency", &d.end_to_end_latency_ms)?;
            let must = "(accepted − accounted for; must be 0)";
            figure(f, "LOST", d.lost, must)?;
        }
        Ok(())
    }
}

/// The width of a ledger line's label.
const LABEL: usize = 19;

/// `── name ───…`, a section's rule, 57 characters wide.
fn section(f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    let rule = "─".repeat(57 - 4 - name.chars().count());
    writeln!(f, "── {name} {rule}")
}

/// A label, a figure right-aligned in 10 columns, and a note after it when there is one.
fn figure(
    f: &mut fmt::Formatter<'_>,
    label: &str,
    value: impl fmt::Display,
    note: &str,
) -> fmt::Result {
    write!(f, "{label:<LABEL$}{value:>10}")?;
    if note.is_empty() {
        writeln!(f)
    } else {
        writeln!(f, "   {note}")
    }
}

/// A label and free text after it.
fn text(f: &mut fmt::Formatter<'_>, label: &str, value: &dyn fmt::Display) -> fmt::Result {
    writeln!(f, "{label:<LABEL$}{value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_prints_one_aligned_figure_per_line() {
        let mut ledger = Ledger::default();
        ledger.requests.sent = 1200;
        ledger.requests.attempts = 1210;
        ledger.requests.retried = 10;
        ledger.requests.accepted = 1190;
        ledger.requests.accepted_fresh = 1100;
        ledger.requests.accepted_duplicates = 90;
        ledger.requests.rejected.insert(401, 7);
        ledger.requests.accepted_per_sec = 396.66;
        ledger.requests.duration_secs = 3.0;
        ledger.drain = Some(DrainLedger {
            expected_events: 1100,
            found_events: 1100,
            merge_outcomes: Some(BTreeMap::from([("applied".to_owned(), 1100)])),
            merged_per_sec: 366.6,
            drain_secs: 0.25,
            ..DrainLedger::default()
        });
        assert_eq!(ledger.to_string(), EXPECTED);
    }

    const EXPECTED: &str = concat!(
        "── requests ─────────────────────────────────────────────\n",
        "sent                     1200   (attempts 1210, retried 10)\n",
        "accepted (2xx)           1190   (fresh 1100, duplicates 90)\n",
        "rejected 401                7\n",
        "invalid refused             0\n",
        "5xx after retries           0\n",
        "transport errors            0\n",
        "unexpected answers          0\n",
        "accepted/s                397   over 3.0 s\n",
        "ack latency        p50 0.00 ms  p90 0.00 ms  p99 0.00 ms  max 0.00 ms\n",
        "── postgres ─────────────────────────────────────────────\n",
        "expected events          1100\n",
        "found events             1100   (drained 0.2 s after sending)\n",
        "shipments touched           0\n",
        "merge outcomes     applied 1100\n",
        "merged/s                  367\n",
        "end-to-end latency p50 0.00 ms  p90 0.00 ms  p99 0.00 ms  max 0.00 ms\n",
        "LOST                        0   (accepted − accounted for; must be 0)\n",
    );
}
