//! The metric series every accepted webhook updates, registered on first use and kept.
//!
//! `metrics::counter!` with labels builds its key, copies its labels into it and looks the
//! series up in the recorder's registry on every call: four times a webhook. A handle kept
//! here is one atomic update. A series is still registered only when first updated, so
//! `/metrics` shows the same series as before (no zero-valued gauge for a secret that never
//! matched).

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram};

/// The `secret` label: the 1-based position of the configured secret that matched (`"1"` …
/// `"9"`, then `"10+"`), or `"none"` for a profile that verifies nothing.
const SECRET_LABELS: [&str; 11] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10+", "none"];

/// One source's series.
#[derive(Debug, Default)]
pub(crate) struct SourceSeries {
    /// `waybill_webhooks_received_total{source, outcome="accepted"}`.
    accepted: OnceLock<Counter>,
    /// `waybill_webhook_secret_last_matched_seconds{source, secret}`, by [`SECRET_LABELS`].
    secret_matched: [OnceLock<Gauge>; SECRET_LABELS.len()],
}

impl SourceSeries {
    /// The count of the source's accepted webhooks.
    pub fn accepted(&self, source: &str) -> &Counter {
        self.accepted.get_or_init(|| {
            metrics::counter!(
                "waybill_webhooks_received_total",
                "source" => source.to_owned(),
                "outcome" => "accepted"
            )
        })
    }

    /// When the secret at `matched` (its index among the source's secrets; `None` without a
    /// secret) last verified a request.
    pub fn secret_matched(&self, source: &str, matched: Option<usize>) -> &Gauge {
        let position = secret_position(matched);
        self.secret_matched[position].get_or_init(|| {
            metrics::gauge!(
                "waybill_webhook_secret_last_matched_seconds",
                "source" => source.to_owned(),
                "secret" => SECRET_LABELS[position]
            )
        })
    }
}

/// The index in [`SECRET_LABELS`] of the secret at `matched`.
fn secret_position(matched: Option<usize>) -> usize {
    match matched {
        None => SECRET_LABELS.len() - 1,
        Some(index) => index.min(SECRET_LABELS.len() - 2),
    }
}

/// `waybill_webhook_ack_seconds`.
pub(crate) fn ack_seconds() -> &'static Histogram {
    static SERIES: OnceLock<Histogram> = OnceLock::new();
    SERIES.get_or_init(|| metrics::histogram!("waybill_webhook_ack_seconds"))
}

/// `waybill_publish_confirm_seconds`.
pub(crate) fn publish_confirm_seconds() -> &'static Histogram {
    static SERIES: OnceLock<Histogram> = OnceLock::new();
    SERIES.get_or_init(|| metrics::histogram!("waybill_publish_confirm_seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_labelled_by_position_then_ten_plus_then_none() {
        let label = |matched| SECRET_LABELS[secret_position(matched)];
        assert_eq!(label(Some(0)), "1");
        assert_eq!(label(Some(8)), "9");
        assert_eq!(label(Some(9)), "10+");
        assert_eq!(label(Some(40)), "10+");
        assert_eq!(label(None), "none");
    }
}
