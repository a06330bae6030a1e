//! The table of open stream connections, and what bounds it.
//!
//! Every stream connection, accepted or opened by us, holds a [`Slot`] in
//! the table for exactly as long as its task runs: when either side
//! closes, an error, the idle timeout or a limit ends the task, the
//! socket, its queue and its entry go away together. (Before this table
//! the writer outlived a closed connection, and every closed TCP
//! connection stayed in CLOSE-WAIT.)

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use super::limits::ConnectionLimits;
use super::Transport;

/// Why a connection was refused or closed, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `max` connections were open.
    Max,
    /// `max_per_ip` connections from that address were open.
    MaxPerIp,
    /// The peer closed it.
    Peer,
    /// Nothing arrived for `idle_timeout_s`.
    Idle,
    /// A message stayed incomplete past `message_timeout_ms`.
    Slow,
    /// Too large or without Content-Length: the stream cannot be framed.
    Unframeable,
    /// A read or write failed.
    Error,
    /// Opening it failed or timed out.
    ConnectFailed,
    /// The TLS handshake of an accepted connection failed or timed out.
    Handshake,
    /// wisp stopped taking messages.
    Shutdown,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Max => "max",
            Reason::MaxPerIp => "max_per_ip",
            Reason::Peer => "peer",
            Reason::Idle => "idle",
            Reason::Slow => "slow",
            Reason::Unframeable => "unframeable",
            Reason::Error => "error",
            Reason::ConnectFailed => "connect_failed",
            Reason::Handshake => "handshake",
            Reason::Shutdown => "shutdown",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    transport: &'static str,
    reason: &'static str,
}

/// The connection metrics, registered with the others by the server.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    open: Family<TransportLabel, Gauge>,
    refused: Family<ReasonLabel, Counter>,
    closed: Family<ReasonLabel, Counter>,
    not_queued: Family<TransportLabel, Counter>,
}

impl ConnectionMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_open",
            "Stream connections open, by transport",
            self.open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused at accept, by reason: max, max_per_ip",
            self.refused.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed, by reason: peer, idle, slow, unframeable, error, connect_failed, handshake, shutdown",
            self.closed.clone(),
        );
        registry.register(
            "messages_not_queued",
            "Messages not sent because their connection had max_queued_bytes waiting",
            self.not_queued.clone(),
        );
    }

    fn open(&self, transport: Transport) -> Gauge {
        self.open
            .get_or_create(&TransportLabel {
                transport: transport.name(),
            })
            .clone()
    }

    fn count(family: &Family<ReasonLabel, Counter>, transport: Transport, reason: Reason) {
        family
            .get_or_create(&ReasonLabel {
                transport: transport.name(),
                reason: reason.as_str(),
            })
            .inc();
    }
}

/// Why a message was not queued for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotQueued {
    /// `max_queued_bytes` are waiting: the peer is not reading.
    Full,
    /// The connection is gone.
    Closed,
}

/// Queues messages for one connection's writer; bounded in bytes.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

impl Writer {
    /// Queues `data`, unless `max_queued_bytes` would be passed (a single
    /// message larger than that still goes when nothing waits).
    pub fn send(&self, data: Bytes) -> Result<(), NotQueued> {
        let len = data.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.limit {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(NotQueued::Full);
        }
        self.queue.send(data).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            NotQueued::Closed
        })
    }
}

/// What a connection's writer takes from.
pub struct Queue {
    queue: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

impl Queue {
    pub async fn next(&mut self) -> Option<Bytes> {
        self.queue.recv().await
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// `len` bytes taken by [`Queue::next`] are written (or given up).
    pub fn done(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::AcqRel);
    }
}

type Key = (Transport, SocketAddr);

struct Entry {
    id: u64,
    writer: Writer,
}

#[derive(Default)]
struct Table {
    by_peer: HashMap<Key, Entry>,
    /// RFC 5923: another address a connection answers for (the sent-by
    /// of its peer's Via `alias`), to the connection's key and id.
    aliases: HashMap<Key, (Key, u64)>,
    /// Accepted connections by source address.
    per_ip: HashMap<IpAddr, usize>,
    open: usize,
    next_id: u64,
}

/// Every open stream connection.
pub struct Connections {
    limits: ConnectionLimits,
    table: Mutex<Table>,
    metrics: ConnectionMetrics,
}

/// A connection's place in the table; leaving it (dropping) removes the
/// entry and gives back what it counted.
pub struct Slot {
    connections: Arc<Connections>,
    key: Key,
    id: u64,
    /// Accepted: counted against its address's `max_per_ip`.
    accepted: bool,
}

/// A new connection's slot, writer and queue.
pub struct Opened {
    pub slot: Slot,
    pub writer: Writer,
    pub queue: Queue,
}

impl Connections {
    pub fn new(limits: ConnectionLimits, metrics: ConnectionMetrics) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            table: Mutex::new(Table::default()),
            metrics,
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer of the open connection to `peer` (or aliased to it),
    /// if any.
    pub fn get(&self, transport: Transport, peer: SocketAddr) -> Option<Writer> {
        let table = self.lock();
        let key = (transport, peer);
        if let Some(e) = table.by_peer.get(&key) {
            return Some(e.writer.clone());
        }
        let (real, id) = table.aliases.get(&key)?;
        table
            .by_peer
            .get(real)
            .filter(|e| e.id == *id)
            .map(|e| e.writer.clone())
    }

    /// RFC 5923: the connection from `remote` may also carry what is sent
    /// to `alias` (its peer listens there). Only an alias on the peer's own
    /// IP address is taken, so that no peer can draw to itself what wisp
    /// sends to another machine; an open connection to `alias` itself
    /// keeps precedence. Aliases go with their connection.
    pub fn alias(&self, transport: Transport, remote: SocketAddr, alias: SocketAddr) -> bool {
        if alias == remote || alias.ip() != remote.ip() {
            return false;
        }
        let mut table = self.lock();
        let Some(id) = table.by_peer.get(&(transport, remote)).map(|e| e.id) else {
            return false;
        };
        if table.aliases.len() >= self.limits.max {
            return false;
        }
        table
            .aliases
            .insert((transport, alias), ((transport, remote), id));
        true
    }

    /// A connection accepted from `remote`, within `max` and `max_per_ip`.
    pub fn admit(
        self: &Arc<Self>,
        transport: Transport,
        remote: SocketAddr,
    ) -> Result<Opened, Reason> {
        let mut table = self.lock();
        let refused = if table.open >= self.limits.max {
            Some(Reason::Max)
        } else if table.per_ip.get(&remote.ip()).copied().unwrap_or(0) >= self.limits.max_per_ip {
            Some(Reason::MaxPerIp)
        } else {
            None
        };
        if let Some(reason) = refused {
            drop(table);
            ConnectionMetrics::count(&self.metrics.refused, transport, reason);
            return Err(reason);
        }
        *table.per_ip.entry(remote.ip()).or_insert(0) += 1;
        Ok(self.insert(table, transport, remote, true))
    }

    /// A connection we open to `peer`: within `max`, or Err(`Max`).
    pub fn open(
        self: &Arc<Self>,
        transport: Transport,
        peer: SocketAddr,
    ) -> Result<Opened, Reason> {
        let table = self.lock();
        if table.open >= self.limits.max {
            drop(table);
            ConnectionMetrics::count(&self.metrics.refused, transport, Reason::Max);
            return Err(Reason::Max);
        }
        Ok(self.insert(table, transport, peer, false))
    }

    fn insert(
        self: &Arc<Self>,
        mut table: MutexGuard<'_, Table>,
        transport: Transport,
        peer: SocketAddr,
        accepted: bool,
    ) -> Opened {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            queue: tx,
            queued: queued.clone(),
            limit: self.limits.max_queued_bytes,
        };
        table.next_id += 1;
        table.open += 1;
        let id = table.next_id;
        // A connection to the same peer still in the table is closing (or
        // raced us to open); the newest takes the peer's messages.
        table.by_peer.insert(
            (transport, peer),
            Entry {
                id,
                writer: writer.clone(),
            },
        );
        drop(table);
        self.metrics.open(transport).inc();
        Opened {
            slot: Slot {
                connections: self.clone(),
                key: (transport, peer),
                id,
                accepted,
            },
            writer,
            queue: Queue { queue: rx, queued },
        }
    }

    /// A message could not be queued (counted).
    pub fn not_queued(&self, transport: Transport) {
        self.metrics
            .not_queued
            .get_or_create(&TransportLabel {
                transport: transport.name(),
            })
            .inc();
    }

    /// Connections open now.
    pub fn open_count(&self) -> usize {
        self.lock().open
    }
}

impl Slot {
    /// The connection ends for `reason` (counted when the slot goes).
    pub fn close(self, reason: Reason) {
        ConnectionMetrics::count(&self.connections.metrics.closed, self.key.0, reason);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.connections.lock();
        if table
            .by_peer
            .get(&self.key)
            .is_some_and(|e| e.id == self.id)
        {
            table.by_peer.remove(&self.key);
        }
        let (key, id) = (self.key, self.id);
        if !table.aliases.is_empty() {
            table.aliases.retain(|_, real| *real != (key, id));
        }
        table.open -= 1;
        if self.accepted {
            let ip = self.key.1.ip();
            if let Some(n) = table.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    table.per_ip.remove(&ip);
                }
            }
        }
        drop(table);
        self.connections.metrics.open(self.key.0).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(max: usize, max_per_ip: usize, max_queued_bytes: usize) -> Arc<Connections> {
        Connections::new(
            ConnectionLimits {
                max,
                max_per_ip,
                max_queued_bytes,
                ..ConnectionLimits::default()
            },
            ConnectionMetrics::default(),
        )
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn limits_refuse_and_a_closed_slot_gives_its_place_back() {
        let c = connections(3, 2, 1024);
        let a = c
            .admit(Transport::Tcp, addr("10.0.0.1:1000"))
            .expect("first");
        let _b = c
            .admit(Transport::Tcp, addr("10.0.0.1:1001"))
            .expect("second");
        assert_eq!(
            c.admit(Transport::Tcp, addr("10.0.0.1:1002")).err(),
            Some(Reason::MaxPerIp)
        );
        let _d = c
            .admit(Transport::Tcp, addr("10.0.0.2:1000"))
            .expect("other ip");
        assert_eq!(
            c.open(Transport::Tcp, addr("10.0.0.3:5060")).err(),
            Some(Reason::Max)
        );
        assert!(c.get(Transport::Tcp, addr("10.0.0.1:1000")).is_some());
        a.slot.close(Reason::Peer);
        assert!(c.get(Transport::Tcp, addr("10.0.0.1:1000")).is_none());
        assert_eq!(c.open_count(), 2);
        let _e = c
            .admit(Transport::Tcp, addr("10.0.0.1:1003"))
            .expect("room again");
        assert!(c.lock().per_ip.len() == 2);
    }

    #[test]
    fn an_alias_on_the_peers_own_address_carries_its_messages_while_it_lasts() {
        let c = connections(10, 10, 1024);
        let peer = addr("10.0.0.1:40000");
        let listens = addr("10.0.0.1:5060");
        let opened = c.admit(Transport::Tls, peer).expect("admit");
        assert!(
            !c.alias(Transport::Tls, peer, addr("10.0.0.2:5060")),
            "another machine"
        );
        assert!(c.get(Transport::Tls, listens).is_none());
        assert!(c.alias(Transport::Tls, peer, listens));
        assert!(c.get(Transport::Tls, listens).is_some());
        assert!(c.get(Transport::Tcp, listens).is_none(), "per transport");
        opened.slot.close(Reason::Peer);
        assert!(c.get(Transport::Tls, listens).is_none());
        assert!(c.lock().aliases.is_empty());
    }

    #[test]
    fn a_replaced_entry_is_not_removed_by_the_old_slot() {
        let c = connections(10, 10, 1024);
        let old = c.open(Transport::Tcp, addr("10.0.0.9:5060")).expect("old");
        let _new = c.open(Transport::Tcp, addr("10.0.0.9:5060")).expect("new");
        drop(old);
        assert!(c.get(Transport::Tcp, addr("10.0.0.9:5060")).is_some());
        assert_eq!(c.open_count(), 1);
    }

    #[test]
    fn queued_bytes_are_bounded_and_given_back_when_written() {
        let c = connections(10, 10, 100);
        let mut opened = c.open(Transport::Tcp, addr("10.0.0.9:5060")).expect("open");
        let big = Bytes::from(vec![b'x'; 150]);
        // Alone in the queue, a message larger than the bound still goes.
        opened.writer.send(big.clone()).expect("first");
        assert_eq!(
            opened.writer.send(Bytes::from_static(b"x")),
            Err(NotQueued::Full)
        );
        let taken = opened.queue.queue.try_recv().expect("queued");
        opened.queue.done(taken.len());
        opened
            .writer
            .send(Bytes::from(vec![b'y'; 60]))
            .expect("room again");
        drop(opened.queue);
        assert_eq!(
            opened.writer.send(Bytes::from_static(b"z")),
            Err(NotQueued::Closed)
        );
    }
}
