//! One stream connection's task: reading messages out of it, writing its
//! queue into it, until either side closes, nothing arrives for the idle
//! timeout, or a limit is passed. Then the socket, the queue and the
//! table entry go together. The same for any byte stream (TCP, TLS).

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Duration, Instant};

use super::connections::{Opened, Queue, Reason, Writer};
use super::framing::{Frame, Framer};
use super::limits::ConnectionLimits;
use super::{Inbound, Transport};

/// How long a closing connection may take to say goodbye (FIN, TLS
/// close_notify) once its task is done.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Who the connection is, for the messages read from it.
#[derive(Clone, Copy)]
pub struct Peer {
    pub transport: Transport,
    pub remote: SocketAddr,
    pub listener: usize,
}

/// Serves `stream` until it ends; returns when its entry is gone.
pub async fn serve<S>(
    stream: S,
    opened: Opened,
    peer: Peer,
    limits: ConnectionLimits,
    to_proxy: mpsc::Sender<Inbound>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let Opened {
        slot,
        writer,
        mut queue,
    } = opened;
    let (mut read, mut write) = tokio::io::split(stream);
    let reason = tokio::select! {
        reason = read_messages(&mut read, peer, &limits, &to_proxy, &writer) => reason,
        reason = write_queue(&mut write, &mut queue) => reason,
    };
    tracing::debug!(remote = %peer.remote, transport = %peer.transport, reason = reason.as_str(), "connection closed");
    // Out of the table first: a peer that sees the close and connects
    // again finds its place free, and a send racing the close fails
    // rather than queueing for nobody.
    drop(writer);
    drop(queue);
    slot.close(reason);
    let _ = timeout(SHUTDOWN_GRACE, write.shutdown()).await;
}

async fn read_messages<R: AsyncRead + Unpin>(
    read: &mut R,
    peer: Peer,
    limits: &ConnectionLimits,
    to_proxy: &mpsc::Sender<Inbound>,
    pong: &Writer,
) -> Reason {
    let mut framer = Framer::new(limits.max_header_bytes, limits.max_body_bytes);
    let mut idle_until = Instant::now() + limits.idle_timeout();
    // When the message begun must be whole.
    let mut message_until: Option<Instant> = None;
    loop {
        loop {
            match framer.next() {
                Ok(Some(Frame::Message(data))) => {
                    message_until = None;
                    let inbound = Inbound {
                        data,
                        transport: peer.transport,
                        remote: peer.remote,
                        listener: peer.listener,
                    };
                    if to_proxy.send(inbound).await.is_err() {
                        return Reason::Shutdown;
                    }
                }
                Ok(Some(Frame::Ping)) => {
                    let _ = pong.send(Bytes::from_static(b"\r\n"));
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::info!(remote = %peer.remote, %err, "closing a connection: cannot frame its stream");
                    return Reason::Unframeable;
                }
            }
        }
        if framer.in_message() {
            message_until.get_or_insert_with(|| Instant::now() + limits.message_timeout());
        } else {
            message_until = None;
        }
        let until = message_until.map_or(idle_until, |m| m.min(idle_until));
        let buffer = framer.buffer();
        buffer.reserve(4096);
        match timeout_at(until, read.read_buf(buffer)).await {
            Err(_) if message_until.is_some_and(|m| m <= idle_until) => {
                tracing::info!(remote = %peer.remote, "closing a connection: a message came too slowly");
                return Reason::Slow;
            }
            Err(_) => return Reason::Idle,
            Ok(Ok(0)) => return Reason::Peer,
            Ok(Err(_)) => return Reason::Error,
            Ok(Ok(_)) => idle_until = Instant::now() + limits.idle_timeout(),
        }
    }
}

async fn write_queue<W: AsyncWrite + Unpin>(write: &mut W, queue: &mut Queue) -> Reason {
    while let Some(data) = queue.next().await {
        let written = write.write_all(&data).await;
        queue.done(data.len());
        if written.is_err() {
            return Reason::Error;
        }
        // Buffering writers (TLS) send once nothing more is waiting.
        if queue.is_empty() && write.flush().await.is_err() {
            return Reason::Error;
        }
    }
    // Every writer is gone: only the task's own can be, so it is ending.
    Reason::Shutdown
}
