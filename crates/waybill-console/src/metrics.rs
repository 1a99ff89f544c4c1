//! Figures for the overview and sources pages, from Prometheus text: this process's registry
//! and the `console.metrics_urls` (each ingress's `/metrics`, or a Prometheus server's
//! `/federate`). Ingress figures exist only in the ingresses' registries, and the console runs
//! in a worker, so it reads them the way Prometheus does — but only while a page is open.
//!
//! Counters are totals since each process started; rates and "in the last hour" come from the
//! snapshots this module keeps while pages are open (at most one every few seconds, for an hour,
//! in memory). A page opened after a quiet hour therefore shows totals since start and rates from
//! its own refreshes onwards, and says so.
//!
//! The text format is parsed here rather than with a crate: the one maintained parser pulls a
//! regex engine into the worker for ~80 lines of grammar, and only the sample lines matter
//! (`name{label="value",…} value [timestamp]`; `#` lines are skipped).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// How long snapshots are kept.
const HISTORY: Duration = Duration::from_secs(3600);
/// A page refresh younger than this reuses the last snapshot (several viewers, one scrape).
const MIN_SPACING: Duration = Duration::from_secs(2);
/// Labels that name where a sample came from, summed away (several ingress replicas).
const ORIGIN_LABELS: [&str; 3] = ["instance", "job", "pod"];
/// Gauges combined by maximum across processes instead of summed (timestamps).
const MAX_GAUGES: [&str; 1] = ["waybill_webhook_secret_last_matched_seconds"];

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Its labels, as written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

/// The samples of a Prometheus text document. Lines that do not parse are skipped: a scrape of
/// someone else's endpoint must not fail a page.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    if name.is_empty() {
        return None;
    }
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    let value = rest.split_whitespace().next()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value: value.parse().ok()?,
    })
}

/// Parses `name="value",…}`; returns what follows the closing brace.
fn parse_labels<'a>(mut rest: &'a str, labels: &mut Vec<(String, String)>) -> Option<&'a str> {
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some(after);
        }
        let (name, after_name) = rest.split_once('=')?;
        let mut chars = after_name.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (at, '"') => break at,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.trim().to_owned(), value));
        rest = &after_name[1 + end + 1..];
    }
}

/// A series: a name and its labels (sorted, origin labels removed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SeriesKey {
    name: String,
    labels: Vec<(String, String)>,
}

impl SeriesKey {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Every figure at one moment, summed over the processes read.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// When it was taken.
    pub at: DateTime<Utc>,
    series: HashMap<SeriesKey, f64>,
    /// `metrics_urls` that did not answer this time.
    pub unreachable: Vec<String>,
}

impl Snapshot {
    /// A snapshot of these samples (only Waybill's own series are kept).
    pub(crate) fn from_samples(
        at: DateTime<Utc>,
        samples: impl IntoIterator<Item = Sample>,
        unreachable: Vec<String>,
    ) -> Snapshot {
        let mut series: HashMap<SeriesKey, f64> = HashMap::new();
        for sample in samples {
            if !sample.name.starts_with("waybill_") || !sample.value.is_finite() {
                continue;
            }
            let mut labels: Vec<(String, String)> = sample
                .labels
                .into_iter()
                .filter(|(name, _)| !ORIGIN_LABELS.contains(&name.as_str()))
                .collect();
            labels.sort();
            let is_max = MAX_GAUGES.contains(&sample.name.as_str());
            let key = SeriesKey {
                name: sample.name,
                labels,
            };
            let slot = series.entry(key).or_insert(0.0);
            *slot = if is_max {
                slot.max(sample.value)
            } else {
                *slot + sample.value
            };
        }
        Snapshot {
            at,
            series,
            unreachable,
        }
    }

    /// Sets a gauge of the console's own (queue depths).
    pub(crate) fn set(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.sort();
        self.series.insert(
            SeriesKey {
                name: name.to_owned(),
                labels,
            },
            value,
        );
    }

    /// The sum of `name`'s series whose labels pass `keep`, by the value of label `by`.
    pub(crate) fn by_label(
        &self,
        name: &str,
        by: &str,
        keep: impl Fn(&dyn Fn(&str) -> Option<String>) -> bool,
    ) -> HashMap<String, f64> {
        let mut out = HashMap::new();
        for (key, value) in &self.series {
            if key.name != name {
                continue;
            }
            let lookup = |label: &str| key.label(label).map(str::to_owned);
            if !keep(&lookup) {
                continue;
            }
            if let Some(group) = key.label(by) {
                *out.entry(group.to_owned()).or_insert(0.0) += value;
            }
        }
        out
    }

    /// The sum of `name`'s series whose labels pass `keep`.
    pub(crate) fn total(
        &self,
        name: &str,
        keep: impl Fn(&dyn Fn(&str) -> Option<String>) -> bool,
    ) -> f64 {
        self.series
            .iter()
            .filter(|(key, _)| key.name == name)
            .filter(|(key, _)| keep(&|label: &str| key.label(label).map(str::to_owned)))
            .map(|(_, value)| value)
            .sum()
    }

    /// The largest value of `name`'s series whose labels pass `keep` (timestamps).
    pub(crate) fn max(
        &self,
        name: &str,
        keep: impl Fn(&dyn Fn(&str) -> Option<String>) -> bool,
    ) -> Option<f64> {
        self.series
            .iter()
            .filter(|(key, _)| key.name == name)
            .filter(|(key, _)| keep(&|label: &str| key.label(label).map(str::to_owned)))
            .map(|(_, value)| *value)
            .reduce(f64::max)
    }

    /// Cumulative histogram buckets of `name` (`_bucket` series), by upper bound.
    pub(crate) fn buckets(&self, name: &str) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = self
            .by_label(&bucket, "le", |_| true)
            .into_iter()
            .filter_map(|(le, count)| Some((le.parse::<f64>().ok()?, count)))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        buckets
    }
}

/// The increase of a counter between two readings, a restart (a lower reading) counting from 0.
pub(crate) fn increase(earlier: f64, later: f64) -> f64 {
    if later >= earlier {
        later - earlier
    } else {
        later
    }
}

/// The `q` quantile (0..1) of the observations between two cumulative bucket readings, as the
/// upper bound of the bucket it falls in (`None` with no observation).
pub(crate) fn quantile(earlier: &[(f64, f64)], later: &[(f64, f64)], q: f64) -> Option<f64> {
    let before = |bound: f64| {
        earlier
            .iter()
            .find(|(le, _)| *le == bound)
            .map_or(0.0, |(_, count)| *count)
    };
    let deltas: Vec<(f64, f64)> = later
        .iter()
        .map(|(le, count)| (*le, increase(before(*le), *count)))
        .collect();
    let total = deltas.last()?.1;
    if total <= 0.0 {
        return None;
    }
    deltas
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(le, _)| *le)
}

/// The snapshots taken while pages were open, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    history: Mutex<VecDeque<Snapshot>>,
}

impl Sampler {
    pub(crate) fn new() -> Sampler {
        Sampler::default()
    }

    /// The newest snapshot if it is recent enough to reuse.
    pub(crate) fn fresh(&self, now: DateTime<Utc>) -> Option<Snapshot> {
        let history = self.lock();
        let last = history.back()?;
        let age = (now - last.at).to_std().unwrap_or_default();
        (age < MIN_SPACING).then(|| last.clone())
    }

    /// Keeps `snapshot` and forgets those older than an hour.
    pub(crate) fn record(&self, snapshot: Snapshot) {
        let mut history = self.lock();
        let horizon = snapshot.at - chrono::Duration::from_std(HISTORY).unwrap_or_default();
        while history.front().is_some_and(|oldest| oldest.at < horizon) {
            history.pop_front();
        }
        history.push_back(snapshot);
    }

    /// Every snapshot kept, oldest first.
    pub(crate) fn history(&self) -> Vec<Snapshot> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Snapshot>> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads this process's registry and every `urls` endpoint (concurrently, each bounded by the
/// client's timeout) into one snapshot.
pub(crate) async fn scrape(http: &reqwest::Client, urls: &[String]) -> Snapshot {
    let fetches = urls.iter().map(|url| async move {
        let text = async {
            let response = http.get(url).send().await?.error_for_status()?;
            response.text().await
        }
        .await;
        (url, text)
    });
    let mut samples = parse_metrics(&waybill_telemetry::render_metrics());
    let mut unreachable = Vec::new();
    for (url, text) in futures_util::future::join_all(fetches).await {
        match text {
            Ok(text) => samples.extend(parse_metrics(&text)),
            Err(error) => {
                tracing::debug!(error = %error, "console: a metrics URL did not answer");
                unreachable.push(url.clone());
            }
        }
    }
    Snapshot::from_samples(Utc::now(), samples, unreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
# HELP waybill_webhooks_received_total webhooks
# TYPE waybill_webhooks_received_total counter
waybill_webhooks_received_total{source="starshipit",outcome="accepted"} 12
waybill_webhooks_received_total{outcome="unauthorized",source="starshipit"} 3
waybill_webhooks_received_total{source="odd \"one\"\\n",outcome="accepted",instance="b"} 1 1700000000000
waybill_webhook_secret_last_matched_seconds{source="starshipit",secret="1"} 1700000000
waybill_message_age_seconds_bucket{le="0.01"} 4
waybill_message_age_seconds_bucket{le="0.1"} 9
waybill_message_age_seconds_bucket{le="+Inf"} 10
process_cpu_seconds_total 5
garbage line {
"#;

    #[test]
    fn sample_lines_parse_with_escapes_and_timestamps() {
        let samples = parse_metrics(TEXT);
        assert_eq!(samples.len(), 8);
        assert_eq!(samples[2].labels[0].1, "odd \"one\"\\n");
        assert_eq!(samples[2].value, 1.0);
        assert_eq!(samples[6].value, 10.0);
    }

    #[test]
    fn snapshots_sum_across_processes_and_group_by_label() {
        let mut samples = parse_metrics(TEXT);
        samples.extend(parse_metrics(
            "waybill_webhooks_received_total{source=\"starshipit\",outcome=\"accepted\",instance=\"a\"} 5\n\
             waybill_webhook_secret_last_matched_seconds{source=\"starshipit\",secret=\"1\"} 1600000000",
        ));
        let snapshot = Snapshot::from_samples(Utc::now(), samples, Vec::new());
        let accepted = snapshot.by_label("waybill_webhooks_received_total", "source", |l| {
            l("outcome").as_deref() == Some("accepted")
        });
        assert_eq!(accepted["starshipit"], 17.0);
        let rejected = snapshot.total("waybill_webhooks_received_total", |l| {
            l("outcome").as_deref() != Some("accepted")
        });
        assert_eq!(rejected, 3.0);
        let last = snapshot.max("waybill_webhook_secret_last_matched_seconds", |_| true);
        assert_eq!(last, Some(1_700_000_000.0), "timestamps combine by maximum");
        assert_eq!(snapshot.total("process_cpu_seconds_total", |_| true), 0.0);
    }

    #[test]
    fn increases_survive_restarts_and_quantiles_read_bucket_deltas() {
        assert_eq!(increase(10.0, 15.0), 5.0);
        assert_eq!(increase(10.0, 3.0), 3.0);
        let earlier = [(0.01, 4.0), (0.1, 9.0), (f64::INFINITY, 10.0)];
        let later = [(0.01, 4.0), (0.1, 18.0), (f64::INFINITY, 20.0)];
        assert_eq!(quantile(&earlier, &later, 0.5), Some(0.1));
        assert_eq!(quantile(&earlier, &later, 0.99), Some(f64::INFINITY));
        assert_eq!(quantile(&later, &later, 0.5), None);
    }

    #[test]
    fn the_sampler_keeps_an_hour_and_reuses_a_fresh_snapshot() {
        let sampler = Sampler::new();
        let now = Utc::now();
        sampler.record(Snapshot::from_samples(
            now - chrono::Duration::hours(2),
            Vec::new(),
            Vec::new(),
        ));
        sampler.record(Snapshot::from_samples(now, Vec::new(), Vec::new()));
        assert_eq!(sampler.history().len(), 1);
        assert!(sampler.fresh(now).is_some());
        assert!(sampler.fresh(now + chrono::Duration::seconds(5)).is_none());
    }
}
