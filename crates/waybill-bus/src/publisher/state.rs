//! The publisher's shared state: its configuration, the current link (connection and channel
//! pool) and the breaker that reports a broken link. A leaf of the publisher: the publishing
//! half (`publisher`) and the supervisor both use it, and it uses neither.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::driver::Request;
use crate::connection::{BusConnection, DEFAULT_CONNECT_TIMEOUT};
use crate::topology::Topology;

/// How often the supervisor checks that the connection and every channel are still open
/// (connection errors are also reported at once through lapin's event stream).
pub(super) const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How a [`Publisher`] connects and behaves.
#[derive(Clone)]
pub struct PublisherConfig {
    /// The AMQP URL (may hold credentials; never logged).
    pub url: String,
    /// The connection name shown by `rabbitmqctl list_connections`.
    pub connection_name: String,
    /// The topology, re-declared on every (re)connection.
    pub topology: Topology,
    /// Channels in the pool, used round-robin (at least 1; default 4).
    pub channels: usize,
    /// How long a publish may wait for its confirm before failing with `Timeout` (default 5 s).
    pub confirm_timeout: Duration,
    /// Publishes in flight (sent, not yet confirmed) across the pool before new ones wait
    /// (within their own timeout) for room (default 4096).
    pub max_in_flight: usize,
    /// Bound on connecting (default 10 s).
    pub connect_timeout: Duration,
    /// Delay before the first reconnection attempt; doubled after each failure (default 100 ms).
    pub reconnect_delay: Duration,
    /// Cap of the reconnection delay (default 5 s).
    pub max_reconnect_delay: Duration,
}

impl PublisherConfig {
    /// The defaults for a URL, a connection name and a topology.
    pub fn new(
        url: impl Into<String>,
        connection_name: impl Into<String>,
        topology: Topology,
    ) -> Self {
        PublisherConfig {
            url: url.into(),
            connection_name: connection_name.into(),
            topology,
            channels: 4,
            confirm_timeout: Duration::from_secs(5),
            max_in_flight: 4096,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reconnect_delay: Duration::from_millis(100),
            max_reconnect_delay: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for PublisherConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_fields!(f, self, "PublisherConfig" {
            url = "<redacted>",
            connection_name, topology, channels, confirm_timeout, max_in_flight, connect_timeout,
            reconnect_delay, max_reconnect_delay,
        })
    }
}

pub(super) struct Shared {
    pub(super) config: PublisherConfig,
    /// The current connection and pool; `None` while (re)connecting or closed.
    pub(super) link: watch::Sender<Option<Arc<Link>>>,
    pub(super) next_channel: AtomicUsize,
    pub(super) next_publish_id: AtomicI64,
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) breaker: Breaker,
    pub(super) closing: AtomicBool,
    /// Tears everything down: cancelled by `close` or by the last clone's drop.
    pub(super) stop: CancellationToken,
    pub(super) tasks: TaskTracker,
}

/// One connection with its channel pool.
pub(super) struct Link {
    pub(super) generation: u64,
    pub(super) connection: BusConnection,
    pub(super) channels: Vec<PoolChannel>,
    /// Exchanges known to exist on this connection (declared or checked).
    pub(super) known_exchanges: Mutex<HashSet<String>>,
}

pub(super) struct PoolChannel {
    pub(super) channel: lapin::Channel,
    /// To the channel's driver task, which sends each publish and answers with its outcome.
    pub(super) requests: mpsc::UnboundedSender<Request>,
}

/// How publishers and trackers tell the supervisor that the current link is broken.
#[derive(Clone)]
pub(super) struct Breaker {
    pub(super) notify: Arc<Notify>,
    /// The newest link generation reported broken.
    pub(super) broken_generation: Arc<AtomicU64>,
}

impl Breaker {
    pub(super) fn trip(&self, generation: u64) {
        self.broken_generation
            .fetch_max(generation, Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub(super) fn is_tripped(&self, generation: u64) -> bool {
        self.broken_generation.load(Ordering::SeqCst) >= generation
    }
}
