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
        writeln!(
            f,
            "── requests ─────────────────────────────────────────────"
        )?;
        writeln!(
            f,
            "sent               {:>10}   (attempts {}, retried {})",
            r.sent, r.attempts, r.retried
        )?;
        writeln!(
            f,
            "accepted (2xx)     {:>10}   (fresh {}, duplicates {})",
            r.accepted, r.accepted_fresh, r.accepted_duplicates
        )?;
        for (code, count) in &r.rejected {
            writeln!(f, "rejected {code}       {count:>10}")?;
        }
        writeln!(f, "invalid refused    {:>10}", r.invalid_refused)?;
        writeln!(f, "5xx after retries  {:>10}", r.server_errors)?;
        writeln!(f, "transport errors   {:>10}", r.transport_errors)?;
        writeln!(f, "unexpected answers {:>10}", r.unexpected)?;
        writeln!(
            f,
            "accepted/s         {:>10.0}   over {:.1} s",
            r.accepted_per_sec, r.duration_secs
        )?;
        writeln!(f, "ack latency        {}", r.ack_latency_ms)?;
        if let Some(d) = &self.drain {
            writeln!(
                f,
                "── postgres ─────────────────────────────────────────────"
            )?;
            writeln!(f, "expected events    {:>10}", d.expected_events)?;
            writeln!(
                f,
                "found events       {:>10}   (drained {:.1} s after sending)",
                d.found_events, d.drain_secs
            )?;
            writeln!(f, "shipments touched  {:>10}", d.shipments_touched)?;
            if let Some(outcomes) = &d.merge_outcomes {
                let line: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
                writeln!(f, "merge outcomes     {}", line.join(", "))?;
            }
            writeln!(f, "merged/s           {:>10.0}", d.merged_per_sec)?;
            writeln!(f, "end-to-end latency {}", d.end_to_end_latency_ms)?;
            writeln!(
                f,
                "LOST               {:>10}   (accepted − accounted for; must be 0)",
                d.lost
            )?;
        }
        Ok(())
    }
}
