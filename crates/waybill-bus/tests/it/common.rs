//! Shared helpers of the broker tests: a unique topology prefix per test, connections, and
//! closing a named connection from the broker side.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use waybill_bus::{BusConnection, Publisher, PublisherConfig, Topology};

/// The broker the tests run against (`WAYBILL_TEST_AMQP_URL` overrides).
pub use waybill_testkit::env::amqp_url as url;
/// A prefix no other test (or test run) uses.
pub use waybill_testkit::env::unique_prefix;

/// A connection and a declared topology of its own; delete it with [`TestBus::cleanup`]. A test
/// that fails before that still deletes it, when the `TestBus` is dropped.
pub struct TestBus {
    pub conn: BusConnection,
    pub topology: Topology,
    cleaned: bool,
}

/// What a test creates under its prefix beside the topology.
enum Extra {
    Queue,
    Exchange,
}

/// The names tests create under their prefix beside the topology.
const EXTRAS: &[(&str, Extra)] = &[("tiny", Extra::Queue), ("extra", Extra::Exchange)];

async fn delete_everything(topology: &Topology) -> anyhow::Result<()> {
    let conn = BusConnection::connect(&url(), "waybill-bus-test-cleanup").await?;
    topology.delete(&conn).await?;
    conn.close().await?;
    let raw = lapin::Connection::connect(&url(), lapin::ConnectionProperties::default()).await?;
    for (suffix, kind) in EXTRAS {
        // A channel each: a failed deletion closes its channel.
        let channel = raw.create_channel().await?;
        let name = format!("{}{suffix}", topology.prefix);
        let _ = match kind {
            Extra::Queue => channel
                .queue_delete(
                    name.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await
                .map(drop),
            Extra::Exchange => {
                channel
                    .exchange_delete(
                        name.as_str().into(),
                        lapin::options::ExchangeDeleteOptions::default(),
                    )
                    .await
            }
        };
    }
    let _ = raw.close(200, "bye".into()).await;
    Ok(())
}

impl Drop for TestBus {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // The test failed (or forgot): delete its topology from a thread with its own runtime,
        // since the test's runtime may be shutting down.
        let topology = self.topology.clone();
        let cleaning = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(delete_everything(&topology))
        });
        if let Ok(Err(error)) = cleaning.join() {
            eprintln!("could not delete the test topology: {error:#}");
        }
    }
}

impl TestBus {
    pub async fn new(test: &str) -> anyhow::Result<TestBus> {
        Self::with_topology(test, Topology::new(unique_prefix())).await
    }

    pub async fn with_topology(test: &str, topology: Topology) -> anyhow::Result<TestBus> {
        let conn = BusConnection::connect(&url(), &format!("waybill-bus-test-{test}"))
            .await
            .context("is RabbitMQ running? (`rabbitmq-server -detached`)")?;
        topology.declare(&conn).await?;
        Ok(TestBus {
            conn,
            topology,
            cleaned: false,
        })
    }

    /// A bus of its own for `test` and a publisher on it, named after the test.
    pub async fn with_publisher(
        test: &str,
        adjust: impl FnOnce(&mut PublisherConfig),
    ) -> anyhow::Result<(TestBus, Publisher)> {
        let bus = TestBus::new(test).await?;
        let publisher = bus.publisher(&unique_name(test), adjust).await?;
        Ok((bus, publisher))
    }

    /// A publisher on this topology under a unique connection name.
    pub async fn publisher(
        &self,
        name: &str,
        adjust: impl FnOnce(&mut PublisherConfig),
    ) -> anyhow::Result<Publisher> {
        let mut config = PublisherConfig::new(url(), name, self.topology.clone());
        adjust(&mut config);
        let publisher = Publisher::start(config, CancellationToken::new()).await?;
        anyhow::ensure!(
            publisher.wait_ready(Duration::from_secs(10)).await,
            "the publisher did not become ready"
        );
        Ok(publisher)
    }

    /// Declares `<prefix>tiny`, a quorum queue that holds one message and nacks publishes
    /// beyond it (`reject-publish`), reached through the default exchange.
    pub async fn tiny_queue(&self) -> anyhow::Result<TinyQueue> {
        use lapin::types::{AMQPValue, FieldTable};
        let name = format!("{}tiny", self.topology.prefix);
        let raw =
            lapin::Connection::connect(&url(), lapin::ConnectionProperties::default()).await?;
        let channel = raw.create_channel().await?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        arguments.insert("x-max-length".into(), AMQPValue::LongInt(1));
        arguments.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        channel
            .queue_declare(
                name.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await?;
        Ok(TinyQueue { raw, channel, name })
    }

    pub async fn ready_messages(&self, queue: &str) -> anyhow::Result<u32> {
        Ok(self.conn.queue_stats(queue).await?.messages)
    }

    /// Closes the test's publisher, then cleans up.
    pub async fn finish(self, publisher: Publisher) -> anyhow::Result<()> {
        publisher.close().await;
        self.cleanup().await
    }

    pub async fn cleanup(mut self) -> anyhow::Result<()> {
        self.cleaned = true;
        delete_everything(&self.topology).await?;
        self.conn.close().await?;
        Ok(())
    }
}

/// The queue of [`TestBus::tiny_queue`], with the raw connection and channel that declared it.
pub struct TinyQueue {
    raw: lapin::Connection,
    channel: lapin::Channel,
    pub name: String,
}

impl TinyQueue {
    /// Deletes the queue and closes its connection.
    pub async fn delete(self) -> anyhow::Result<()> {
        self.channel
            .queue_delete(
                self.name.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await?;
        self.raw.close(200, "bye".into()).await?;
        Ok(())
    }
}

/// A connection name no other test uses.
pub fn unique_name(test: &str) -> String {
    format!("waybill-bus-test-{test}-{:08x}", rand::random::<u32>())
}

/// Closes, from the broker side, every connection whose `connection_name` is `name`
/// (`rabbitmqctl close_connection`). Returns how many were closed.
pub async fn close_connections_named(name: &str) -> anyhow::Result<usize> {
    let listed = tokio::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--quiet",
            "--no-table-headers",
        ])
        .output()
        .await
        .context("running rabbitmqctl")?;
    anyhow::ensure!(
        listed.status.success(),
        "rabbitmqctl list_connections failed: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let needle = format!("{{\"connection_name\",\"{name}\"}}");
    let mut closed = 0;
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let Some((pid, properties)) = line.split_once('\t') else {
            continue;
        };
        if !properties.contains(&needle) {
            continue;
        }
        let status = tokio::process::Command::new("rabbitmqctl")
            .args([
                "close_connection",
                pid,
                "test: closing the connection",
                "--quiet",
            ])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "rabbitmqctl close_connection failed");
        closed += 1;
    }
    Ok(closed)
}

/// Whether `condition` comes to hold within `within` (the kit's wait, answering instead of
/// panicking, for tests that assert with their own message).
pub async fn eventually<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    waybill_testkit::eventually_or(within, async || condition().await)
        .await
        .is_some()
}
