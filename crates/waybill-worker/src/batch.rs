//! Turning decoded envelopes into one store batch and applying it in one transaction.

use std::sync::Arc;

use tracing::Instrument as _;
use waybill_bus::envelope::InboundEnvelope;
use waybill_core::TrackingEvent;
use waybill_core::storable;
use waybill_store::rejected::NewRejectedEvent;
use waybill_store::{
    BatchReport, EncodedBodies, InboundBatch, InboundItem, Registration, Store, StoreError,
};

/// What happened to a batch.
#[derive(Debug)]
pub enum BatchOutcome {
    /// Committed; acknowledge every message of the batch.
    Applied(BatchReport),
    /// The database is unreachable or timed out; retry the same batch later (nothing was applied).
    Transient(StoreError),
    /// The batch cannot be applied as it is (a data error or a panic); apply its messages one by
    /// one to find the poison.
    Failed(String),
}

/// Applies batches of envelopes to the store. Each batch runs in its own spawned task, so the
/// transaction is never held by a future that can be dropped half-way.
#[derive(Clone)]
pub struct Batcher {
    store: Store,
    bodies: EncodedBodies,
}

impl Batcher {
    /// A batcher over `store`, offering the published bytes of the changes it commits to
    /// `bodies` (this process's relay takes them from there).
    pub fn new(store: Store, bodies: EncodedBodies) -> Batcher {
        Batcher { store, bodies }
    }

    /// Applies the envelopes (and keeps their rejected events) in one transaction.
    pub async fn apply(&self, envelopes: &[InboundEnvelope]) -> BatchOutcome {
        self.apply_with_rejected(
            Arc::new(to_store_batch(envelopes)),
            Arc::new(rejected_of(envelopes)),
        )
        .await
    }

    /// Applies a batch already in the store's shape in one transaction. Shared, so that a retry
    /// does not convert the envelopes again.
    pub async fn apply_shared(&self, batch: Arc<InboundBatch>) -> BatchOutcome {
        self.apply_with_rejected(batch, Arc::new(Vec::new())).await
    }

    /// [`Batcher::apply_shared`], also storing the batch's rejected events in the same
    /// transaction: a webhook's good events and its rejected ones commit together (200 means
    /// stored, for both).
    pub async fn apply_with_rejected(
        &self,
        batch: Arc<InboundBatch>,
        rejected: Arc<Vec<NewRejectedEvent>>,
    ) -> BatchOutcome {
        let store = self.store.clone();
        let bodies = self.bodies.clone();
        let task = tokio::spawn(
            async move {
                let mut tx = store.begin().await?;
                let mut report = waybill_store::apply_batch(&mut tx, &batch).await?;
                let kept = waybill_store::rejected::insert(&mut tx, &rejected).await?;
                tx.commit().await.map_err(StoreError::from)?;
                bodies.offer(std::mem::take(&mut report.encoded_bodies));
                Ok::<_, StoreError>((report, kept))
            }
            // The store's spans belong to the caller's (the batch's), not to a trace of their own.
            .instrument(tracing::Span::current()),
        );
        match task.await {
            Ok(Ok((report, kept))) => {
                for (source, kind) in kept {
                    metrics::counter!(
                        "waybill_events_rejected_total",
                        "source" => source,
                        "reason" => reason_label(&kind)
                    )
                    .increment(1);
                }
                BatchOutcome::Applied(report)
            }
            Ok(Err(error)) if error.is_transient() => BatchOutcome::Transient(error),
            Ok(Err(error)) => BatchOutcome::Failed(error.to_string()),
            Err(join_error) if join_error.is_panic() => {
                BatchOutcome::Failed("applying the batch panicked".to_owned())
            }
            Err(_) => BatchOutcome::Failed("the batch task was cancelled".to_owned()),
        }
    }
}

/// The `reason` label of `waybill_events_rejected_total`: the mapping error kinds the ingress
/// writes, anything else (a newer producer's) as `other`, so the label set stays closed.
fn reason_label(kind: &str) -> &'static str {
    const KINDS: [&str; 9] = [
        "missing_field",
        "missing_status",
        "missing_tracking_number",
        "wrong_type",
        "invalid_tracking_number",
        "invalid_carrier",
        "invalid_timestamp",
        "invalid_zone",
        "absurd_timestamp",
    ];
    KINDS
        .into_iter()
        .find(|known| *known == kind)
        .unwrap_or("other")
}

/// The rejected events the webhook envelopes carry, as rows to store.
pub fn rejected_of<'a>(
    envelopes: impl IntoIterator<Item = &'a InboundEnvelope>,
) -> Vec<NewRejectedEvent> {
    let mut rows = Vec::new();
    for envelope in envelopes {
        let InboundEnvelope::WebhookV1(webhook) = envelope else {
            continue;
        };
        for (position, rejected) in webhook.rejected.iter().enumerate() {
            rows.push(NewRejectedEvent {
                envelope_id: webhook.id.as_str().to_owned(),
                position: i32::try_from(position).unwrap_or(i32::MAX),
                tenant: webhook.tenant.as_str().to_owned(),
                source: webhook.source.as_str().to_owned(),
                profile: webhook.profile.clone().unwrap_or_default(),
                path: rejected.path.clone(),
                kind: rejected.kind.clone(),
                reason: rejected.reason.clone(),
                element: rejected.element.clone(),
                tracking_number: rejected.tracking_number.clone(),
                raw_body: webhook.raw_body.clone(),
                received_at: webhook.received_at,
            });
        }
    }
    rows
}

/// Converts envelopes into the store's batch shape.
pub fn to_store_batch<'a>(
    envelopes: impl IntoIterator<Item = &'a InboundEnvelope>,
) -> InboundBatch {
    let mut batch = InboundBatch::default();
    for envelope in envelopes {
        match envelope {
            InboundEnvelope::WebhookV1(webhook) => batch.items.push(InboundItem {
                tenant: webhook.tenant.clone(),
                source: webhook.source.clone(),
                require_registration: webhook.require_registration,
                events: with_nul_replaced(webhook.events.iter().cloned(), "envelope"),
                received_at: webhook.received_at,
                traceparent: webhook.traceparent.clone(),
            }),
            InboundEnvelope::RegisterV1(registration) => batch.registrations.push(Registration {
                tenant: registration.tenant.clone(),
                source: registration.source.clone(),
                carrier: registration.carrier.clone(),
                tracking_number: registration.tracking_number.clone(),
                order_number: registration
                    .order_number
                    .as_deref()
                    .map(storable::text)
                    .map(Into::into),
                // Metadata whose keys would collide is left as it is: the ingress refuses it
                // since the rule exists, so only a message queued before can carry it.
                metadata: {
                    let mut metadata = registration.metadata.clone();
                    let _ = storable::replace_in_json(&mut metadata);
                    metadata
                },
            }),
        }
    }
    batch
}

/// The events with every U+0000 replaced (`waybill_core::storable`): the ingress does it
/// before accepting a webhook, so this covers messages queued before the rule existed and poll
/// answers, whose merge would otherwise fail on every attempt. Counted like the ingress counts.
pub(crate) fn with_nul_replaced(
    events: impl IntoIterator<Item = TrackingEvent>,
    input: &'static str,
) -> Vec<TrackingEvent> {
    let mut replaced = 0;
    let events = events
        .into_iter()
        .map(|mut event| {
            replaced += event.replace_nul();
            event
        })
        .collect();
    if replaced > 0 {
        metrics::counter!("waybill_nul_replaced_total", "input" => input)
            .increment(replaced as u64);
    }
    events
}
