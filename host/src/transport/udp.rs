//! UDP: one datagram is one message.
//!
//! Datagrams are received by plain threads blocked in `recv_from` on the
//! listener's socket, several per socket: the kernel wakes one waiter per
//! datagram, so a burst spreads over every core with no hand-off between
//! threads, and the thread that received a message handles it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};

use super::{Inbound, Transport};

/// Largest datagram we accept; SIP over UDP stays far below this.
const MAX_DATAGRAM: usize = 65_535;
/// Receive buffer asked of the kernel: bursts of retransmissions must not
/// be dropped before we read them.
const RECV_BUFFER: usize = 4 << 20;

/// A blocking socket: receivers block in `recv_from`, and a send waits only
/// while the kernel's send buffer is full, which a datagram socket drains at
/// once.
pub(super) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // An IPv6 listener serves IPv6 only; IPv4 has listeners of its own.
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(RECV_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Receives datagrams for ever and hands each to `deliver`, on the calling
/// thread.
pub(super) fn receive(socket: Arc<UdpSocket>, listener: usize, deliver: &dyn Fn(Inbound)) {
    // One receive buffer, reused; each datagram is copied out at its own
    // size. (Splitting datagrams off a shared BytesMut made every message
    // keep a 64 KiB allocation alive for as long as its transaction.)
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, remote) = match socket.recv_from(&mut buf) {
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
        deliver(Inbound {
            data: Bytes::copy_from_slice(datagram),
            transport: Transport::Udp,
            remote,
            listener,
        });
    }
}
