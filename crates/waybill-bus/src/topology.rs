//! Every exchange, queue, binding and queue argument Waybill uses, in one place.
//!
//! ```text
//! waybill.inbound (direct) ──"webhook"──▶ waybill.webhooks (quorum) ─┐ after the delivery limit
//!                          ──"register"─▶ waybill.webhooks           ├─▶ waybill.dead (fanout) ──▶ waybill.dead (quorum)
//!                          ──"poll"─────▶ waybill.polls    (quorum) ─┘
//! waybill.events (topic, `<carrier>.<status>`) ──(no binding matched)──▶ waybill.events.unrouted (fanout)
//!                                                                         ──▶ waybill.events.unrouted (quorum, capped)
//! waybill.keys (fanout) ──▶ waybill.keys.latest (classic, the last snapshot only)
//!                       ──▶ one exclusive auto-delete queue per ingress/worker process (declared by it)
//! ```
//!
//! Queue arguments are fixed at declaration: redeclaring with different ones fails with 406
//! PRECONDITION_FAILED. Every process therefore declares from the same [`Topology`] value, and a
//! change of, say, the delivery limit on a live system is made with a policy
//! (`rabbitmqctl set_policy … '{"delivery-limit": 20}' --apply-to queues`), not here.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use waybill_core::{CarrierCode, Status, TenantId};

use crate::connection::{BusConnection, OPERATION_TIMEOUT, close_channel};
use crate::error::{BusError, bounded, bounded_or, short_string};

/// Names and arguments of Waybill's exchanges and queues. Cheap to clone; pass the same value
/// to every declarer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Prepended to every exchange and queue name: empty in production, `t-<random>.` in tests
    /// so that tests share one vhost without seeing each other.
    pub prefix: String,
    /// Deliveries of one message on `waybill.webhooks` / `waybill.polls` before the broker
    /// dead-letters it (`x-delivery-limit`).
    pub delivery_limit: u32,
    /// Optional cap on the ready messages of `waybill.webhooks` and `waybill.polls`
    /// (`x-max-length`); beyond it publishes are nacked (`x-overflow: reject-publish`) and the
    /// ingress answers 503. `None`: bounded only by the broker's disk.
    pub inbound_max_length: Option<u32>,
}

/// What a declaration does when an entity already exists with other arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnMismatch {
    /// Fail: the operator must reconcile (used by explicit `declare`).
    Fail,
    /// Log an error and carry on with the existing entity (used by the publisher when it
    /// reconnects: the queue exists, so publishing is still safe).
    Tolerate,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new("")
    }
}

/// The getters of the exchange and queue names, each `<prefix><name>`.
macro_rules! prefixed_names {
    ($($(#[$doc:meta])* $getter:ident => $name:literal,)*) => {
        impl Topology {
            $(
                $(#[$doc])*
                pub fn $getter(&self) -> String {
                    format!("{}{}", self.prefix, $name)
                }
            )*
        }
    };
}

prefixed_names! {
    /// The direct exchange the ingress and the poll scheduler publish to.
    inbound_exchange => "waybill.inbound",
    /// The quorum queue of webhook and registration envelopes.
    webhooks_queue => "waybill.webhooks",
    /// The quorum queue of poll jobs.
    polls_queue => "waybill.polls",
    /// The fanout exchange messages are dead-lettered to (by the broker or by the worker).
    dead_exchange => "waybill.dead",
    /// The quorum queue holding dead letters until they are inspected and replayed.
    dead_queue => "waybill.dead",
    /// The topic exchange of processed changes, routing key `<carrier>.<status>`.
    events_exchange => "waybill.events",
    /// The topic exchange of the same changes for tenants' consumers, routing key
    /// `<tenant>.<carrier>.<status>`: RabbitMQ's topic permissions can then confine a tenant's
    /// user to binding keys that start with its own tenant (docs/security.md).
    tenant_events_exchange => "waybill.tenant-events",
    /// The alternate exchange of `waybill.events`: receives events no downstream queue is
    /// bound for, so that they are neither returned to the relay nor silently lost.
    unrouted_events_exchange => "waybill.events.unrouted",
    /// The capped queue behind [`Topology::unrouted_events_exchange`].
    unrouted_events_queue => "waybill.events.unrouted",
    /// The fanout exchange the API key set is published to, as whole snapshots
    /// (see [`crate::keys`]): every ingress and worker binds its own exclusive queue to it.
    keys_exchange => "waybill.keys",
    /// The queue that keeps the last key-set snapshot published (length 1, the oldest dropped):
    /// it makes every publish routable, and a starting process reads it instead of waiting a
    /// whole refresh interval.
    keys_latest_queue => "waybill.keys.latest",
}

impl Topology {
    /// Routing key of webhook envelopes on the inbound exchange.
    pub const WEBHOOK_ROUTING_KEY: &'static str = "webhook";
    /// Routing key of registration envelopes on the inbound exchange.
    pub const REGISTER_ROUTING_KEY: &'static str = "register";
    /// Routing key of poll jobs on the inbound exchange.
    pub const POLL_ROUTING_KEY: &'static str = "poll";
    /// Routing key for messages Waybill dead-letters itself (the dead exchange is a fanout and
    /// ignores it; it only makes the message's origin readable).
    pub const DEAD_ROUTING_KEY: &'static str = "dead";
    /// The default delivery limit.
    pub const DEFAULT_DELIVERY_LIMIT: u32 = 10;
    /// How many unrouted events are kept for inspection before the oldest are dropped.
    pub const UNROUTED_EVENTS_MAX_LENGTH: u32 = 10_000;

    /// A topology with the given name prefix and default arguments.
    pub fn new(prefix: impl Into<String>) -> Topology {
        Topology {
            prefix: prefix.into(),
            delivery_limit: Self::DEFAULT_DELIVERY_LIMIT,
            inbound_max_length: None,
        }
    }

    /// The same topology with another delivery limit (at least 1).
    #[must_use]
    pub fn with_delivery_limit(mut self, delivery_limit: u32) -> Topology {
        self.delivery_limit = delivery_limit.max(1);
        self
    }

    /// The same topology with a cap on the inbound queues' ready messages.
    #[must_use]
    pub fn with_inbound_max_length(mut self, max_length: Option<u32>) -> Topology {
        self.inbound_max_length = max_length;
        self
    }

    /// The routing key of a change on the tenant events exchange: `<tenant>.<carrier>.<status>`
    /// (tenant ids and carrier codes contain no dots).
    pub fn tenant_event_routing_key(
        tenant: &TenantId,
        carrier: &CarrierCode,
        status: Status,
    ) -> String {
        format!(
            "{}.{}",
            tenant.as_str(),
            Topology::event_routing_key(carrier, status)
        )
    }

    /// The routing key of a change on the events exchange: `<carrier>.<status>`, lowercase
    /// (carrier codes contain no dots), e.g. `starshipit.out_for_delivery`.
    pub fn event_routing_key(carrier: &CarrierCode, status: Status) -> String {
        format!("{}.{}", carrier.as_str(), status.routing_name())
    }

    /// Declares every exchange, queue and binding. Idempotent: declaring an existing entity
    /// with the same arguments is a no-op. Fails with [`BusError::Declare`] (406) when an entity
    /// exists with other arguments.
    #[tracing::instrument(skip_all, fields(prefix = %self.prefix))]
    pub async fn declare(&self, conn: &BusConnection) -> Result<(), BusError> {
        self.declare_with(conn, OnMismatch::Fail).await
    }

    /// Like [`Topology::declare`], but an entity that exists with other arguments is used as it
    /// is, with an error logged, instead of failing. For long-running processes (the publisher
    /// on every reconnection, worker consumers): a drifted delivery limit must not stop
    /// ingestion, while `declare` (run by the CLI at deploy time) reports the drift.
    #[tracing::instrument(skip_all, fields(prefix = %self.prefix))]
    pub async fn declare_or_reuse(&self, conn: &BusConnection) -> Result<(), BusError> {
        self.declare_with(conn, OnMismatch::Tolerate).await
    }

    pub(crate) async fn declare_with(
        &self,
        conn: &BusConnection,
        on_mismatch: OnMismatch,
    ) -> Result<(), BusError> {
        let mut declarer = Declarer {
            conn,
            channel: conn.open_channel().await?,
            on_mismatch,
        };
        for (name, kind, arguments) in self.exchanges() {
            declarer.exchange(&name, kind, arguments).await?;
        }
        // The kept key-set snapshot is a convenience (a classic queue on one node): while its
        // node is down the rest of the topology must still serve, so it may be unavailable.
        let optional = self.keys_latest_queue();
        for (name, arguments) in self.queues() {
            let declared = declarer.queue(&name, arguments).await;
            declarer
                .allow_unavailable(declared, name == optional)
                .await?;
        }
        for (queue, exchange, routing_key) in self.bindings() {
            let bound = declarer.bind(&queue, &exchange, routing_key).await;
            declarer.allow_unavailable(bound, queue == optional).await?;
        }
        close_channel(&declarer.channel).await;
        tracing::debug!("topology declared");
        Ok(())
    }

    /// Deletes every queue and exchange of this topology, messages included. For tests and
    /// throw-away environments.
    #[tracing::instrument(skip_all, fields(prefix = %self.prefix))]
    pub async fn delete(&self, conn: &BusConnection) -> Result<(), BusError> {
        let channel = conn.open_channel().await?;
        for (name, _) in self.queues() {
            let options = QueueDeleteOptions {
                // Delete even while consumers are attached.
                if_unused: false,
                // Delete even when messages are left.
                if_empty: false,
                // Wait for delete-ok so that errors surface here.
                nowait: false,
            };
            let deletion = channel.queue_delete(short_string("queue name", &name)?, options);
            deleted("deleting a queue", format!("queue {name}"), deletion).await?;
        }
        for (name, _, _) in self.exchanges() {
            let options = ExchangeDeleteOptions {
                // Delete even while queues are bound.
                if_unused: false,
                // Wait for delete-ok so that errors surface here.
                nowait: false,
            };
            let deletion = channel.exchange_delete(short_string("exchange name", &name)?, options);
            deleted("deleting an exchange", format!("exchange {name}"), deletion).await?;
        }
        close_channel(&channel).await;
        Ok(())
    }

    /// The exchange names this topology declares (publishing to them needs no existence check).
    pub(crate) fn exchange_names(&self) -> Vec<String> {
        self.exchanges()
            .into_iter()
            .map(|(name, _, _)| name)
            .collect()
    }

    fn exchanges(&self) -> Vec<(String, ExchangeKind, FieldTable)> {
        let mut events_arguments = FieldTable::default();
        // Events no queue is bound for go to the unrouted exchange instead of being returned.
        events_arguments.insert(
            "alternate-exchange".into(),
            long_string(&self.unrouted_events_exchange()),
        );
        vec![
            // Webhook, registration and poll messages; the routing key picks the queue.
            (
                self.inbound_exchange(),
                ExchangeKind::Direct,
                FieldTable::default(),
            ),
            // Dead letters from every queue land in the one dead queue, whatever their key.
            (
                self.dead_exchange(),
                ExchangeKind::Fanout,
                FieldTable::default(),
            ),
            // Unrouted events, all into one capped queue.
            (
                self.unrouted_events_exchange(),
                ExchangeKind::Fanout,
                FieldTable::default(),
            ),
            // Processed changes; downstream systems bind their own queues by pattern.
            (
                self.events_exchange(),
                ExchangeKind::Topic,
                events_arguments,
            ),
            // The same changes keyed by tenant first, for tenants' consumers. No alternate
            // exchange: a copy no tenant binds is dropped (it is published with routing
            // optional); the change itself is on `waybill.events`, whose unrouted ones are kept.
            (
                self.tenant_events_exchange(),
                ExchangeKind::Topic,
                FieldTable::default(),
            ),
            // API key-set snapshots, to every ingress and worker.
            (
                self.keys_exchange(),
                ExchangeKind::Fanout,
                FieldTable::default(),
            ),
        ]
    }

    fn queues(&self) -> Vec<(String, FieldTable)> {
        vec![
            (self.webhooks_queue(), self.inbound_queue_arguments()),
            (self.polls_queue(), self.inbound_queue_arguments()),
            (self.dead_queue(), self.dead_queue_arguments()),
            (self.unrouted_events_queue(), unrouted_events_arguments()),
            (self.keys_latest_queue(), keys_latest_arguments()),
        ]
    }

    fn bindings(&self) -> Vec<(String, String, &'static str)> {
        vec![
            (
                self.webhooks_queue(),
                self.inbound_exchange(),
                Self::WEBHOOK_ROUTING_KEY,
            ),
            (
                self.webhooks_queue(),
                self.inbound_exchange(),
                Self::REGISTER_ROUTING_KEY,
            ),
            (
                self.polls_queue(),
                self.inbound_exchange(),
                Self::POLL_ROUTING_KEY,
            ),
            (self.dead_queue(), self.dead_exchange(), ""),
            (
                self.unrouted_events_queue(),
                self.unrouted_events_exchange(),
                "",
            ),
            (self.keys_latest_queue(), self.keys_exchange(), ""),
        ]
    }

    fn inbound_queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        // Replicated, durable, and fast with confirms (see DEPENDENCIES.md measurements).
        arguments.insert("x-queue-type".into(), long_string("quorum"));
        // After this many deliveries the broker dead-letters the message instead of looping.
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(clamp_i32(self.delivery_limit)),
        );
        // Where poison messages go.
        arguments.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.dead_exchange()),
        );
        // Dead-lettering is confirmed by the dead queue before the message leaves this one.
        arguments.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        // Refuse (nack) publishes over the limit; also required by at-least-once dead-lettering.
        arguments.insert("x-overflow".into(), long_string("reject-publish"));
        if let Some(max_length) = self.inbound_max_length {
            // Ready messages allowed before publishes are refused.
            arguments.insert(
                "x-max-length".into(),
                AMQPValue::LongInt(clamp_i32(max_length)),
            );
        }
        arguments
    }

    fn dead_queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        // Replicated and durable: dead letters are kept until replayed or discarded.
        arguments.insert("x-queue-type".into(), long_string("quorum"));
        arguments
    }
}

fn unrouted_events_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    // Replicated and durable like the others.
    arguments.insert("x-queue-type".into(), long_string("quorum"));
    // Keep the most recent unrouted events only.
    arguments.insert(
        "x-max-length".into(),
        AMQPValue::LongInt(clamp_i32(Topology::UNROUTED_EVENTS_MAX_LENGTH)),
    );
    // Over the cap, drop the oldest rather than refusing the relay's publish.
    arguments.insert("x-overflow".into(), long_string("drop-head"));
    arguments
}

fn keys_latest_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    // A plain durable queue: it holds one small message, replication buys nothing (a lost one
    // is replaced by the next publish within `auth.refresh_secs`).
    arguments.insert("x-queue-type".into(), long_string("classic"));
    // Only the newest snapshot matters.
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(1));
    // Over the cap, drop the older snapshot rather than refusing the new one.
    arguments.insert("x-overflow".into(), long_string("drop-head"));
    arguments
}

/// Waits, within [`OPERATION_TIMEOUT`], for the deletion of `entity`.
async fn deleted<T>(
    operation: &'static str,
    entity: String,
    deletion: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<(), BusError> {
    bounded_or(operation, OPERATION_TIMEOUT, deletion, |source| {
        BusError::Delete { entity, source }
    })
    .await?;
    Ok(())
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes()))
}

fn clamp_i32(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Declares entities on one channel, opening a new one after a tolerated mismatch (a 406 closes
/// the channel it happened on).
struct Declarer<'a> {
    conn: &'a BusConnection,
    channel: Channel,
    on_mismatch: OnMismatch,
}

impl Declarer<'_> {
    async fn exchange(
        &mut self,
        name: &str,
        kind: ExchangeKind,
        arguments: FieldTable,
    ) -> Result<(), BusError> {
        let options = ExchangeDeclareOptions {
            // Create it when missing, check the arguments when present.
            passive: false,
            // Survive broker restarts.
            durable: true,
            // Keep it when the last binding goes away.
            auto_delete: false,
            // Clients publish to it directly.
            internal: false,
            // Wait for declare-ok so that a mismatch surfaces here.
            nowait: false,
        };
        let channel = self.channel.clone();
        let declaration = channel.exchange_declare(
            short_string("exchange name", name)?,
            kind,
            options,
            arguments,
        );
        self.settle("declaring an exchange", declaration, || {
            format!("exchange {name}")
        })
        .await
    }

    async fn queue(&mut self, name: &str, arguments: FieldTable) -> Result<(), BusError> {
        let options = QueueDeclareOptions {
            // Create it when missing, check the arguments when present.
            passive: false,
            // Survive broker restarts (quorum queues must be durable).
            durable: true,
            // Shared by every worker replica and connection.
            exclusive: false,
            // Keep it when the last consumer goes away.
            auto_delete: false,
            // Wait for declare-ok so that a mismatch surfaces here.
            nowait: false,
        };
        let channel = self.channel.clone();
        let declaration =
            channel.queue_declare(short_string("queue name", name)?, options, arguments);
        self.settle("declaring a queue", declaration, || format!("queue {name}"))
            .await
    }

    async fn bind(
        &mut self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), BusError> {
        let options = QueueBindOptions {
            // Wait for bind-ok so that errors surface here.
            nowait: false,
        };
        let channel = self.channel.clone();
        let declaration = channel.queue_bind(
            short_string("queue name", queue)?,
            short_string("exchange name", exchange)?,
            short_string("routing key", routing_key)?,
            options,
            FieldTable::default(),
        );
        self.settle("binding a queue", declaration, || {
            format!("binding {exchange} -[{routing_key}]-> {queue}")
        })
        .await
    }

    /// With `optional`, a queue whose node is down (404 NOT_FOUND, "home node … is down or
    /// inaccessible") is passed over with a warning; anything else stays an error.
    async fn allow_unavailable(
        &mut self,
        result: Result<(), BusError>,
        optional: bool,
    ) -> Result<(), BusError> {
        match result {
            Err(BusError::Declare { entity, source }) if optional && source.is_not_found() => {
                tracing::warn!(
                    entity = %entity,
                    error = %source,
                    "an optional queue is unavailable (its node is down?); carrying on without it"
                );
                // The broker closed the channel with the 404; carry on on a new one.
                self.channel = self.conn.open_channel().await?;
                Ok(())
            }
            other => other,
        }
    }

    /// Waits, within [`OPERATION_TIMEOUT`], for one declaration (or binding) of `entity`; a
    /// mismatch is an error or, when tolerated, logged.
    async fn settle<T>(
        &mut self,
        operation: &'static str,
        declaration: impl Future<Output = Result<T, lapin::Error>>,
        entity: impl Fn() -> String,
    ) -> Result<(), BusError> {
        let Err(source) = bounded(operation, OPERATION_TIMEOUT, declaration).await? else {
            return Ok(());
        };
        let error = BusError::Declare {
            entity: entity(),
            source: source.into(),
        };
        let precondition_failed =
            matches!(&error, BusError::Declare { source, .. } if source.is_precondition_failed());
        if precondition_failed && self.on_mismatch == OnMismatch::Tolerate {
            tracing::error!(
                error = %error,
                cause = %std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default(),
                "an exchange or queue exists with other arguments; using it as it is"
            );
            // The broker closed the channel with the 406; carry on on a new one.
            self.channel = self.conn.open_channel().await?;
            return Ok(());
        }
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let topology = Topology::new("t-1.");
        assert_eq!(topology.inbound_exchange(), "t-1.waybill.inbound");
        assert_eq!(topology.webhooks_queue(), "t-1.waybill.webhooks");
        assert_eq!(topology.polls_queue(), "t-1.waybill.polls");
        assert_eq!(topology.dead_exchange(), "t-1.waybill.dead");
        assert_eq!(topology.dead_queue(), "t-1.waybill.dead");
        assert_eq!(topology.events_exchange(), "t-1.waybill.events");
        assert_eq!(
            topology.tenant_events_exchange(),
            "t-1.waybill.tenant-events"
        );
        assert_eq!(
            Topology::tenant_event_routing_key(
                &TenantId::parse("acme").unwrap(),
                &CarrierCode::parse("starshipit").unwrap(),
                Status::OutForDelivery
            ),
            "acme.starshipit.out_for_delivery"
        );
        assert_eq!(topology.keys_exchange(), "t-1.waybill.keys");
        assert_eq!(topology.keys_latest_queue(), "t-1.waybill.keys.latest");
        assert_eq!(Topology::default().webhooks_queue(), "waybill.webhooks");
    }

    #[test]
    fn inbound_queues_dead_letter_at_least_once_after_the_limit() {
        let arguments = Topology::new("")
            .with_delivery_limit(3)
            .inbound_queue_arguments();
        let get = |name: &str| arguments.inner().get(name).cloned();
        assert_eq!(get("x-delivery-limit"), Some(AMQPValue::LongInt(3)));
        assert_eq!(
            get("x-dead-letter-exchange"),
            Some(long_string("waybill.dead"))
        );
        assert_eq!(
            get("x-dead-letter-strategy"),
            Some(long_string("at-least-once"))
        );
        assert_eq!(get("x-overflow"), Some(long_string("reject-publish")));
        assert_eq!(get("x-max-length"), None);
    }

    #[test]
    fn event_routing_keys_are_carrier_dot_status() {
        let carrier = CarrierCode::parse("Australia Post").unwrap();
        assert_eq!(
            Topology::event_routing_key(&carrier, Status::OutForDelivery),
            "australia-post.out_for_delivery"
        );
    }
}
