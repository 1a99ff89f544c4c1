//! "200 means stored": the storage rule of `waybill_core::storable` applied to what a request
//! carries, before the broker sees it and before the answer.

use waybill_core::TrackingEvent;
use waybill_core::storable::{self, NotStorable};

use crate::ApiError;

/// Makes every event storable (U+0000 replaced by U+FFFD), or refuses the request with 400
/// naming the first event PostgreSQL cannot hold at all (a time before 4714 BC, an order number
/// over the limit). Counts the replacements in `waybill_nul_replaced_total{input}`.
pub(crate) fn events(events: &mut [TrackingEvent]) -> Result<(), ApiError> {
    let mut replaced = 0;
    for (index, event) in events.iter_mut().enumerate() {
        replaced += event
            .make_storable()
            .map_err(|error| refusal(&format!("tracking event {index}"), &error))?;
    }
    count(replaced, "webhook");
    Ok(())
}

/// A registration's order number and metadata made storable (U+0000 replaced), or refused
/// with the reason.
pub(crate) fn registration(
    order_number: &mut Option<String>,
    metadata: &mut serde_json::Value,
) -> Result<(), String> {
    let replaced = storable::replace_in_option(order_number)
        + storable::replace_in_json(metadata).map_err(|error| format!("`metadata`: {error}"))?;
    count(replaced, "registration");
    Ok(())
}

fn refusal(what: &str, error: &NotStorable) -> ApiError {
    ApiError::BadRequest(format!("{what}: {error}"))
}

fn count(replaced: usize, input: &'static str) {
    if replaced > 0 {
        metrics::counter!("waybill_nul_replaced_total", "input" => input)
            .increment(replaced as u64);
    }
}
