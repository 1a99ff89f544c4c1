//! A TCP relay between the ingress and the broker whose connections can be silenced: bytes stop
//! flowing both ways while every connection stays open — no FIN, no RST — as in a network
//! partition or behind a NAT that forgot the connection. A publish in flight then never gets its
//! confirm, and nothing but heartbeats can tell the client that the connection is dead.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The relay. Dropping it stops accepting and closes every relayed connection.
pub struct Blackhole {
    pub addr: SocketAddr,
    /// Silences every connection, present and future (a partition).
    partition: watch::Sender<bool>,
    /// One switch per connection made so far.
    connections: Arc<Mutex<Vec<watch::Sender<bool>>>>,
    accept: JoinHandle<()>,
}

impl Blackhole {
    /// Relays connections on a fresh loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Blackhole> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (partition, _) = watch::channel(false);
        let connections: Arc<Mutex<Vec<watch::Sender<bool>>>> = Arc::default();
        let (global, registry) = (partition.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (own, _) = watch::channel(false);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                pumps.spawn(pump(
                    client_read,
                    server_write,
                    global.subscribe(),
                    own.subscribe(),
                ));
                pumps.spawn(pump(
                    server_read,
                    client_write,
                    global.subscribe(),
                    own.subscribe(),
                ));
                registry
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(own);
            }
        });
        Ok(Blackhole {
            addr,
            partition,
            connections,
            accept,
        })
    }

    /// Silences every connection, present and future, until [`Blackhole::heal`].
    pub fn partition(&self) {
        self.partition.send_replace(true);
    }

    /// Ends the partition: what was held is delivered late.
    pub fn heal(&self) {
        self.partition.send_replace(false);
    }

    /// Silences the connections made so far, for good; new connections work.
    pub fn strand_existing(&self) -> usize {
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for connection in connections.iter() {
            connection.send_replace(true);
        }
        connections.len()
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every pump.
        self.accept.abort();
    }
}

/// Waits until neither switch is on; false once a switch is gone.
async fn open(global: &mut watch::Receiver<bool>, own: &mut watch::Receiver<bool>) -> bool {
    loop {
        if global.wait_for(|silenced| !silenced).await.is_err() {
            return false;
        }
        if own.wait_for(|silenced| !silenced).await.is_err() {
            return false;
        }
        if !*global.borrow() && !*own.borrow() {
            return true;
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut global: watch::Receiver<bool>,
    mut own: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if !open(&mut global, &mut own).await {
            return;
        }
        let read = from.read(&mut buffer).await.unwrap_or(0);
        // Silenced meanwhile: hold what was read — even an end of stream — until it is not.
        if !open(&mut global, &mut own).await {
            return;
        }
        if read == 0 || to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
