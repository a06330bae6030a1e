//! UDP: one datagram is one message.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{Inbound, Transport};

/// Largest datagram we accept; SIP over UDP stays far below this.
const MAX_DATAGRAM: usize = 65_535;
/// Receive buffer asked of the kernel: bursts of retransmissions must not
/// be dropped before we read them.
const RECV_BUFFER: usize = 4 << 20;

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // An IPv6 listener serves IPv6 only; IPv4 has listeners of its own.
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

pub(super) async fn receive(
    socket: Arc<UdpSocket>,
    listener: usize,
    to_proxy: mpsc::Sender<Inbound>,
) {
    let mut buf = BytesMut::with_capacity(MAX_DATAGRAM);
    loop {
        buf.reserve(MAX_DATAGRAM);
        let (len, remote) = match socket.recv_buf_from(&mut buf).await {
            Ok(got) => got,
            Err(err) => {
                // ICMP errors from earlier sends surface here on some
                // systems; they concern one peer, not the socket.
                tracing::debug!(%err, "udp receive error");
                continue;
            }
        };
        let data = buf.split_to(len).freeze();
        if data.iter().all(|b| b.is_ascii_whitespace()) {
            continue; // keepalive (CRLF) or empty datagram
        }
        let inbound = Inbound {
            data,
            transport: Transport::Udp,
            remote,
            listener,
        };
        if to_proxy.send(inbound).await.is_err() {
            return; // the proxy has shut down
        }
    }
}
