//! TCP: a byte stream cut into messages by Content-Length, with CRLF
//! keepalives (RFC 5626 §3.5.1) answered and connections kept for reuse.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Inbound, Transport, Transports};
use crate::sip;

/// A connection silent this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages queued for one connection before senders wait.
const WRITE_QUEUE: usize = 256;

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
                let _ = stream.set_nodelay(true);
                let writer = serve(stream, remote, index, transports.clone());
                transports.register_connection(remote, writer);
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
/// accepted one, so the peer's replies come back on it. The connection is
/// registered at once and connects in the background: messages queue in
/// order meanwhile, and the caller never waits for the handshake.
pub(super) fn connect(
    peer: SocketAddr,
    listener: usize,
    transports: &Transports,
) -> mpsc::Sender<Bytes> {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    transports.register_connection(peer, tx.clone());
    let inbound = transports.inbound.clone();
    let keepalive = tx.clone();
    transports.runtime.spawn(async move {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(peer)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::info!(%peer, %err, "tcp connect failed");
                return; // dropping rx closes the queue: later sends fail
            }
            Err(_) => {
                tracing::info!(%peer, "tcp connect timed out");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        tokio::spawn(write_loop(write, rx, peer));
        read_loop(read, peer, listener, inbound, keepalive).await;
    });
    tx
}

fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    listener: usize,
    transports: Arc<Transports>,
) -> mpsc::Sender<Bytes> {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let (read, write) = stream.into_split();
    tokio::spawn(write_loop(write, rx, remote));
    let inbound = transports.inbound.clone();
    let keepalive = tx.clone();
    tokio::spawn(async move {
        read_loop(read, remote, listener, inbound, keepalive).await;
        transports.forget_connection(remote);
    });
    tx
}

async fn write_loop(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    mut queue: mpsc::Receiver<Bytes>,
    peer: SocketAddr,
) {
    while let Some(data) = queue.recv().await {
        if let Err(err) = write.write_all(&data).await {
            tracing::debug!(%peer, %err, "tcp write failed; closing");
            break;
        }
    }
    let _ = write.shutdown().await;
}

async fn read_loop(
    mut read: tokio::net::tcp::OwnedReadHalf,
    remote: SocketAddr,
    listener: usize,
    to_proxy: mpsc::Sender<Inbound>,
    writer: mpsc::Sender<Bytes>,
) {
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        // Cut every complete message out of what we have.
        loop {
            // A double CRLF alone is a keepalive ping: answer with a pong.
            if buf.starts_with(b"\r\n\r\n") {
                buf.advance(4);
                let _ = writer.try_send(Bytes::from_static(b"\r\n"));
                continue;
            }
            let skip = buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if skip == buf.len() {
                break; // only CRLFs so far: wait for more
            }
            match sip::frame(&buf) {
                Ok(Some(len)) => {
                    let mut message = buf.split_to(len);
                    message.advance(skip.min(message.len()));
                    let inbound = Inbound {
                        data: message.freeze(),
                        transport: Transport::Tcp,
                        remote,
                        listener,
                    };
                    if to_proxy.send(inbound).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    // A stream we cannot frame cannot be resynchronised.
                    tracing::info!(%remote, %err, "closing tcp connection: unframeable data");
                    return;
                }
            }
        }
        match tokio::time::timeout(IDLE_TIMEOUT, read.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
    }
}
