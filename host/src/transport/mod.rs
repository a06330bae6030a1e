//! Sockets: receiving datagrams and streams, and sending messages out.
//!
//! The transport layer knows framing and connections, nothing of SIP
//! routing. It hands each complete message to the proxy as an [`Inbound`]
//! and sends whatever the proxy asks through [`Transports::send`].

mod tcp;
mod udp;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::config::Listen;

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// The name used in Via headers ("UDP") .
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// Reads a `transport=` URI parameter or a Via transport, any case.
    pub fn from_name(name: &str) -> Option<Transport> {
        if name.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if name.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else {
            None
        }
    }

    /// Whether messages travel on a byte stream (Content-Length framing).
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// One message as it arrived.
#[derive(Debug)]
pub struct Inbound {
    pub data: Bytes,
    pub transport: Transport,
    /// The peer that sent it.
    pub remote: SocketAddr,
    /// The listener it arrived on (index into the listener list).
    pub listener: usize,
}

/// Where to send a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// A listening socket as the proxy sees it.
#[derive(Debug, Clone)]
pub struct Listener {
    pub transport: Transport,
    /// The bound address (port resolved if 0 was asked).
    pub local: SocketAddr,
    /// What to write in Via / Record-Route, when configured.
    pub advertise: Option<String>,
}

/// Sending failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no {0} listener for an {1} destination")]
    NoListener(Transport, &'static str),
    #[error("send to {0} failed: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("connection to {0} closed")]
    Closed(SocketAddr),
}

/// All sockets of the process, and the open TCP connections.
pub struct Transports {
    listeners: Vec<Listener>,
    udp: Vec<(usize, Arc<tokio::net::UdpSocket>)>,
    /// Writers of open TCP connections, keyed by the peer's address, so that
    /// responses and later requests reuse the connection (RFC 3261 §18).
    connections: Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    inbound: mpsc::Sender<Inbound>,
    /// For the work a send cannot finish at once (connecting, a full buffer).
    runtime: tokio::runtime::Handle,
}

impl Transports {
    /// Binds every configured listener and starts receiving; complete
    /// messages go to the returned channel.
    pub async fn bind(
        listen: &[Listen],
    ) -> anyhow::Result<(Arc<Transports>, mpsc::Receiver<Inbound>)> {
        use anyhow::Context;
        let (tx, rx) = mpsc::channel(4096);
        let mut listeners = Vec::new();
        let mut udp_sockets = Vec::new();
        let mut tcp_listeners = Vec::new();
        for (index, l) in listen.iter().enumerate() {
            let local = match l.transport {
                Transport::Udp => {
                    let socket = udp::bind(l.address)
                        .with_context(|| format!("cannot listen on udp {}", l.address))?;
                    let local = socket.local_addr()?;
                    udp_sockets.push((index, Arc::new(socket)));
                    local
                }
                Transport::Tcp => {
                    let listener = tcp::bind(l.address)
                        .with_context(|| format!("cannot listen on tcp {}", l.address))?;
                    let local = listener.local_addr()?;
                    tcp_listeners.push((index, listener));
                    local
                }
            };
            listeners.push(Listener {
                transport: l.transport,
                local,
                advertise: l.advertise.clone(),
            });
        }
        let transports = Arc::new(Transports {
            listeners,
            udp: udp_sockets,
            connections: Mutex::new(HashMap::new()),
            inbound: tx,
            runtime: tokio::runtime::Handle::current(),
        });
        for (index, socket) in &transports.udp {
            tokio::spawn(udp::receive(
                socket.clone(),
                *index,
                transports.inbound.clone(),
            ));
        }
        for (index, listener) in tcp_listeners {
            tokio::spawn(tcp::accept(listener, index, transports.clone()));
        }
        Ok((transports, rx))
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The listener to send from towards `target`: same transport and
    /// address family, preferring one bound to the same kind of address
    /// (loopback to loopback).
    pub fn listener_for(&self, target: &Target) -> Result<usize, SendError> {
        let family = |a: &SocketAddr| a.is_ipv4();
        let candidates = self.listeners.iter().enumerate().filter(|(_, l)| {
            l.transport == target.transport && family(&l.local) == family(&target.addr)
        });
        let mut fallback = None;
        for (i, l) in candidates {
            let ip = l.local.ip();
            if ip.is_unspecified() || ip.is_loopback() == target.addr.ip().is_loopback() {
                return Ok(i);
            }
            fallback.get_or_insert(i);
        }
        fallback.ok_or(SendError::NoListener(
            target.transport,
            if target.addr.is_ipv4() {
                "IPv4"
            } else {
                "IPv6"
            },
        ))
    }

    /// Sends one message without waiting, from any thread. UDP goes out of
    /// the listener's socket so that the peer sees our well-known port; TCP
    /// reuses an open connection to the peer or opens one. Messages to one
    /// peer leave in the order they were sent.
    pub fn send(&self, target: Target, data: Bytes) -> Result<(), SendError> {
        match target.transport {
            Transport::Udp => {
                let listener = self.listener_for(&target)?;
                let socket = self
                    .udp
                    .iter()
                    .find(|(i, _)| *i == listener)
                    .map(|(_, s)| s)
                    .ok_or(SendError::NoListener(Transport::Udp, "any"))?;
                match socket.try_send_to(&data, target.addr) {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // The socket buffer is full: wait for room off this thread.
                        let socket = socket.clone();
                        self.runtime.spawn(async move {
                            if let Err(err) = socket.send_to(&data, target.addr).await {
                                tracing::debug!(addr = %target.addr, %err, "udp send failed");
                            }
                        });
                        Ok(())
                    }
                    Err(e) => Err(SendError::Io(target.addr, e)),
                }
            }
            Transport::Tcp => {
                let writer = match self.connection(target.addr) {
                    Some(w) => w,
                    None => {
                        let listener = self.listener_for(&target)?;
                        tcp::connect(target.addr, listener, self)
                    }
                };
                match writer.try_send(data) {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::TrySendError::Full(data)) => {
                        self.runtime.spawn(async move {
                            let _ = writer.send(data).await;
                        });
                        Ok(())
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        Err(SendError::Closed(target.addr))
                    }
                }
            }
        }
    }

    fn connection(&self, peer: SocketAddr) -> Option<mpsc::Sender<Bytes>> {
        let map = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&peer).filter(|w| !w.is_closed()).cloned()
    }

    fn register_connection(&self, peer: SocketAddr, writer: mpsc::Sender<Bytes>) {
        let mut map = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= 1024 {
            // Outgoing connections that failed or closed leave their entry.
            map.retain(|_, w| !w.is_closed());
        }
        map.insert(peer, writer);
    }

    fn forget_connection(&self, peer: SocketAddr) {
        let mut map = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&peer).is_some_and(|w| w.is_closed()) {
            map.remove(&peer);
        }
    }
}
