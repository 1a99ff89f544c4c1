//! Waiting for what happens in the background, with a deadline, instead of sleeping.

use std::time::Duration;

use tokio::time::Instant;

/// How often a probe is asked again.
const INTERVAL: Duration = Duration::from_millis(20);

/// What a probe answers: `true` or `Some(value)` when the condition holds.
pub trait Settled {
    /// What [`eventually`] returns once the condition holds.
    type Value;
    /// The value, if the condition holds.
    fn settled(self) -> Option<Self::Value>;
}

impl Settled for bool {
    type Value = ();
    fn settled(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Settled for Option<T> {
    type Value = T;
    fn settled(self) -> Option<T> {
        self
    }
}

/// Asks `probe` every 20 ms until it answers `true` (or `Some`), and returns what it answered;
/// panics naming `what` if `within` passes first.
///
/// ```ignore
/// let shipment = eventually(Duration::from_secs(20), "the shipment is stored", async || {
///     app.shipment("acme", "T1").await
/// })
/// .await;
/// ```
pub async fn eventually<S: Settled>(
    within: Duration,
    what: &str,
    probe: impl AsyncFnMut() -> S,
) -> S::Value {
    match eventually_or(within, probe).await {
        Some(value) => value,
        None => panic!("timed out after {within:?} waiting until {what}"),
    }
}

/// [`eventually`] that answers `None` instead of panicking when `within` passes.
pub async fn eventually_or<S: Settled>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> S,
) -> Option<S::Value> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await.settled() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
