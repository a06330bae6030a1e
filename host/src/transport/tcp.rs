//! TCP, and TLS and WebSocket over it: accepting and opening
//! connections; each is then served by [`super::stream`] (or
//! [`super::websocket`]) under the table's limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use rustls_pki_types::ServerName;

use super::connections::{Opened, Reason, Writer};
use super::limits::ConnectionLimits;
use super::stream::{self, Peer};
use super::tls::TlsServer;
use super::websocket::{self, Upgrade};
use super::{Inbound, Target, Transport, Transports};

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// What an accepting listener does with each connection.
pub(super) struct Accept {
    /// The listener's index.
    pub index: usize,
    pub transport: Transport,
    /// TLS first (tls, wss).
    pub tls: Option<Arc<TlsServer>>,
    /// Then the WebSocket upgrade (ws, wss).
    pub websocket: Option<Arc<Upgrade>>,
}

/// Accepts connections for ever. Each does its TLS handshake and its
/// WebSocket upgrade, when the listener has them, in its own task (a slow
/// client holds up nobody), within `connect_timeout_ms` together.
pub(super) async fn accept(listener: TcpListener, accept: Accept, transports: Arc<Transports>) {
    let Accept {
        index,
        transport,
        tls,
        websocket,
    } = accept;
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                // Past a limit the connection is closed at once (counted).
                let Ok(opened) = transports.connections.admit(transport, remote) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let peer = Peer {
                    transport,
                    remote,
                    listener: index,
                };
                let limits = transports.connections.limits().clone();
                let inbound = transports.inbound.clone();
                let (tls, websocket) = (tls.clone(), websocket.clone());
                tokio::spawn(async move {
                    let started = tokio::time::Instant::now();
                    match (tls, websocket) {
                        (None, None) => stream::serve(stream, opened, peer, limits, inbound).await,
                        (None, Some(upgrade)) => {
                            websocket::serve(
                                stream, upgrade, started, opened, peer, limits, inbound,
                            )
                            .await
                        }
                        (Some(tls), websocket) => {
                            let handshake = tokio::time::timeout(
                                limits.connect_timeout(),
                                tls.acceptor().accept(stream),
                            )
                            .await;
                            let stream = match handshake {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(err)) => {
                                    tracing::info!(%remote, %err, "tls handshake failed");
                                    opened.slot.close(Reason::Handshake);
                                    return;
                                }
                                Err(_) => {
                                    tracing::info!(%remote, "tls handshake timed out");
                                    opened.slot.close(Reason::Handshake);
                                    return;
                                }
                            };
                            match websocket {
                                None => stream::serve(stream, opened, peer, limits, inbound).await,
                                Some(upgrade) => {
                                    websocket::serve(
                                        stream, upgrade, started, opened, peer, limits, inbound,
                                    )
                                    .await
                                }
                            }
                        }
                    }
                });
            }
            Err(err) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(%err, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Opens a connection to a peer we must send to and serves it like an
/// accepted one, so the peer's replies come back on it. It is in the
/// table at once and connects (and does its TLS handshake) in the
/// background: messages queue in order meanwhile, and the caller never
/// waits for the network.
pub(super) fn connect(
    transports: &Transports,
    target: Target,
    listener: usize,
) -> Result<Writer, Reason> {
    let opened = transports.connections.open(target.transport, target.addr)?;
    let writer = opened.writer.clone();
    let limits = transports.connections.limits().clone();
    let inbound = transports.inbound.clone();
    let tls = (target.transport == Transport::Tls).then(|| {
        // Known by the name that led to it, else by its address.
        let name = transports
            .tls_name(target.addr)
            .and_then(|n| ServerName::try_from(n.to_string()).ok())
            .unwrap_or_else(|| ServerName::IpAddress(target.addr.ip().into()));
        (transports.tls_client.clone(), name)
    });
    let peer = Peer {
        transport: target.transport,
        remote: target.addr,
        listener,
    };
    let report = transports.report_connect_failed();
    transports
        .runtime
        .spawn(open(peer, tls, opened, limits, inbound, report));
    Ok(writer)
}

async fn open(
    peer: Peer,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    opened: Opened,
    limits: ConnectionLimits,
    inbound: tokio::sync::mpsc::Sender<Inbound>,
    report: Option<super::ConnectFailed>,
) {
    let remote = peer.remote;
    let target = Target {
        transport: peer.transport,
        addr: remote,
    };
    let connecting = async {
        let stream = TcpStream::connect(remote)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let Some((config, name)) = tls else {
            return Ok(Connected::Tcp(stream));
        };
        // Its certificate must be for that name (or address).
        tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map(|s| Connected::Tls(Box::new(s)))
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(limits.connect_timeout(), connecting).await {
        Ok(Ok(Connected::Tcp(stream))) => {
            stream::serve(stream, opened, peer, limits, inbound).await
        }
        Ok(Ok(Connected::Tls(stream))) => {
            stream::serve(*stream, opened, peer, limits, inbound).await
        }
        Ok(Err(err)) => {
            tracing::info!(%remote, transport = %peer.transport, %err, "connecting failed");
            opened.slot.close(Reason::ConnectFailed);
            if let Some(report) = report {
                report(target);
            }
        }
        Err(_) => {
            tracing::info!(%remote, transport = %peer.transport, "connecting timed out");
            opened.slot.close(Reason::ConnectFailed);
            if let Some(report) = report {
                report(target);
            }
        }
    }
}

enum Connected {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}
