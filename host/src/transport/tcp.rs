//! TCP and TLS over it: accepting and opening connections; each is then
//! served by [`super::stream`] under the table's limits.

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

/// Accepts connections for ever; with `tls`, each does its handshake in
/// its own task (a slow client holds up nobody), within
/// `connect_timeout_ms`.
pub(super) async fn accept(
    listener: TcpListener,
    index: usize,
    tls: Option<Arc<TlsServer>>,
    transports: Arc<Transports>,
) {
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
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
                match &tls {
                    None => {
                        tokio::spawn(stream::serve(stream, opened, peer, limits, inbound));
                    }
                    Some(tls) => {
                        let acceptor = tls.acceptor();
                        tokio::spawn(async move {
                            let handshake = tokio::time::timeout(
                                limits.connect_timeout(),
                                acceptor.accept(stream),
                            )
                            .await;
                            match handshake {
                                Ok(Ok(stream)) => {
                                    stream::serve(stream, opened, peer, limits, inbound).await
                                }
                                Ok(Err(err)) => {
                                    tracing::info!(%remote, %err, "tls handshake failed");
                                    opened.slot.close(Reason::Handshake);
                                }
                                Err(_) => {
                                    tracing::info!(%remote, "tls handshake timed out");
                                    opened.slot.close(Reason::Handshake);
                                }
                            }
                        });
                    }
                }
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
    let tls = (target.transport == Transport::Tls).then(|| transports.tls_client.clone());
    let peer = Peer {
        transport: target.transport,
        remote: target.addr,
        listener,
    };
    transports
        .runtime
        .spawn(open(peer, tls, opened, limits, inbound));
    Ok(writer)
}

async fn open(
    peer: Peer,
    tls: Option<Arc<rustls::ClientConfig>>,
    opened: Opened,
    limits: ConnectionLimits,
    inbound: tokio::sync::mpsc::Sender<Inbound>,
) {
    let remote = peer.remote;
    let connecting = async {
        let stream = TcpStream::connect(remote)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let Some(config) = tls else {
            return Ok(Connected::Tcp(stream));
        };
        // The peer is known by its address here: its certificate must
        // name that IP address.
        let name = ServerName::IpAddress(remote.ip().into());
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
        }
        Err(_) => {
            tracing::info!(%remote, transport = %peer.transport, "connecting timed out");
            opened.slot.close(Reason::ConnectFailed);
        }
    }
}

enum Connected {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}
