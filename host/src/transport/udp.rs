//! UDP: one datagram is one message.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
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
    // One receive buffer, reused; each datagram is copied out at its own
    // size. (Splitting datagrams off a shared BytesMut made every message
    // keep a 64 KiB allocation alive for as long as its transaction, and
    // allocate and fault in a fresh one per datagram.)
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, remote) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(err) => {
                // ICMP errors from earlier sends surface here on some
                // systems; they concern one peer, not the socket.
                tracing::debug!(%err, "udp receive error");
                continue;
            }
        };
        let datagram = &buf[..len];
        if datagram.iter().all(|b| b.is_ascii_whitespace()) {
            continue; // keepalive (CRLF) or empty datagram
        }
        let data = Bytes::copy_from_slice(datagram);
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
