//! What the commands that talk to RabbitMQ share: the topology of the configuration, and a
//! confirmed publisher that lives as long as one command.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use waybill_bus::{Publisher, PublisherConfig, Topology};
use waybill_config::{ExposeSecret, Settings};

/// How long a command waits for its publisher to connect.
const PUBLISHER_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The configured topology (name prefix and delivery limit).
pub fn topology(settings: &Settings) -> Topology {
    Topology::new(&settings.bus.prefix).with_delivery_limit(settings.bus.delivery_limit)
}

/// A publisher for one command, connected and ready to publish with confirms.
pub(crate) struct CommandPublisher {
    publisher: Publisher,
    stop: CancellationToken,
}

impl CommandPublisher {
    /// Starts a publisher named `connection_name` and waits until it can publish; fails when
    /// it cannot within [`PUBLISHER_READY_TIMEOUT`].
    pub(crate) async fn start(
        settings: &Settings,
        topology: &Topology,
        connection_name: &str,
    ) -> anyhow::Result<CommandPublisher> {
        let stop = CancellationToken::new();
        let config = PublisherConfig::new(
            settings.bus.url.expose_secret(),
            connection_name,
            topology.clone(),
        );
        let publisher = CommandPublisher {
            publisher: Publisher::start(config, stop.clone()).await?,
            stop,
        };
        if !publisher
            .publisher
            .wait_ready(PUBLISHER_READY_TIMEOUT)
            .await
        {
            publisher.close().await;
            anyhow::bail!("cannot publish to the broker (not connected, or publishing is blocked)");
        }
        Ok(publisher)
    }

    /// The publisher.
    pub(crate) fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Stops the publisher (after its outstanding confirms).
    pub(crate) async fn close(self) {
        self.stop.cancel();
        self.publisher.close().await;
    }
}
