//! TCP: accepting and opening connections; each is then served by
//! [`super::stream`] under the table's limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use super::connections::{Reason, Writer};
use super::stream::{self, Peer};
use super::{Transport, Transports};

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

pub(super) async fn accept(listener: TcpListener, index: usize, transports: Arc<Transports>) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                // Past a limit the connection is closed at once (counted).
                let Ok(opened) = transports.connections.admit(Transport::Tcp, remote) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let peer = Peer {
                    transport: Transport::Tcp,
                    remote,
                    listener: index,
                };
                let limits = transports.connections.limits().clone();
                tokio::spawn(stream::serve(
                    stream,
                    opened,
                    peer,
                    limits,
                    transports.inbound.clone(),
                ));
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
/// table at once and connects in the background: messages queue in order
/// meanwhile, and the caller never waits for the handshake.
pub(super) fn connect(
    transports: &Transports,
    remote: SocketAddr,
    listener: usize,
) -> Result<Writer, Reason> {
    let opened = transports.connections.open(Transport::Tcp, remote)?;
    let writer = opened.writer.clone();
    let limits = transports.connections.limits().clone();
    let inbound = transports.inbound.clone();
    transports.runtime.spawn(async move {
        let stream = match tokio::time::timeout(
            limits.connect_timeout(),
            TcpStream::connect(remote),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::info!(%remote, %err, "tcp connect failed");
                opened.slot.close(Reason::ConnectFailed);
                return;
            }
            Err(_) => {
                tracing::info!(%remote, "tcp connect timed out");
                opened.slot.close(Reason::ConnectFailed);
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            transport: Transport::Tcp,
            remote,
            listener,
        };
        stream::serve(stream, opened, peer, limits, inbound).await;
    });
    Ok(writer)
}
