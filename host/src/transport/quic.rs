//! SIP over QUIC (quinn), for trunks between proxies; experimental.
//!
//! Messages are SIP/2.0 text framed by Content-Length, as on TCP, but each
//! transaction has a bidirectional stream of its own: the request opens
//! it, its responses (and a CANCEL or the ACK of a non-2xx answer, which
//! share its branch) travel on it. A lost packet holds up one transaction,
//! never the others on the connection, as it would on one TCP stream.
//!
//! The ALPN token is [`ALPN`], our own: draft-hurst-sip-quic defines a
//! binary SIP version 3 (HTTP/3-style frames and QPACK) that no SIP peer
//! implements; we keep SIP/2.0 on the wire so that what crosses a QUIC hop
//! is what crosses a TCP one, and a peer needs nothing but wisp.
//!
//! A connection holds one slot in the table like any stream, keyed by the
//! peer's address, with the same queue and limits. QUIC keep-alives every
//! [`KEEP_ALIVE`] notice a dead peer within [`DEAD_AFTER`]; then the slot
//! goes, and the next message to the peer opens a new connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};

use super::connections::{Opened, Reason};
use super::framing::{Frame, Framer};
use super::limits::ConnectionLimits;
use super::stream::Peer;
use super::tls::{self, ServerFiles, TlsError};
use super::{Inbound, Target, Transport, Transports};
use crate::sip::{self, Message, Method};

/// The ALPN token of SIP/2.0 over QUIC as wisp speaks it.
pub const ALPN: &[u8] = b"wisp-sip/2.0";

/// A QUIC keep-alive goes out this often on an idle connection.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// A peer silent this long (keep-alives unanswered) is gone.
const DEAD_AFTER: Duration = Duration::from_secs(15);
/// Transactions open at once on one connection, each way.
const MAX_STREAMS: u32 = 4096;
/// A stream whose transaction never ended (a lost final answer) is
/// dropped after this long: longer than any transaction lives.
const STREAM_LIFETIME: Duration = Duration::from_secs(300);

/// A QUIC listener: its endpoint (which also opens our connections) and
/// the files its certificates come from.
pub(super) struct QuicListener {
    pub endpoint: quinn::Endpoint,
    files: ServerFiles,
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    config
        .max_concurrent_bidi_streams(MAX_STREAMS.into())
        .max_concurrent_uni_streams(0u32.into())
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(quinn::IdleTimeout::try_from(DEAD_AFTER).ok());
    Arc::new(config)
}

fn server_config(files: &ServerFiles) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = tls::quic_server_config(files, ALPN)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

impl QuicListener {
    /// Binds `address` (a UDP socket) with the listener's certificates;
    /// the peers we connect to are verified against `ca` (or the system's
    /// roots).
    pub(super) fn bind(
        address: SocketAddr,
        files: ServerFiles,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<QuicListener> {
        let mut endpoint = quinn::Endpoint::server(server_config(&files)?, address)?;
        let crypto = tls::quic_client_config(ca, ALPN)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport_config());
        endpoint.set_default_client_config(client);
        Ok(QuicListener { endpoint, files })
    }

    /// Reads the certificates again: new handshakes get them, connections
    /// keep theirs.
    pub(super) fn reload(&self) -> Result<(), TlsError> {
        self.endpoint
            .set_server_config(Some(server_config(&self.files)?));
        Ok(())
    }
}

/// Accepts connections for ever, each served in its own task.
pub(super) async fn accept(endpoint: quinn::Endpoint, index: usize, transports: Arc<Transports>) {
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let Ok(opened) = transports.connections.admit(Transport::Quic, remote) else {
            incoming.refuse();
            continue;
        };
        let limits = transports.connections.limits().clone();
        let inbound = transports.inbound.clone();
        tokio::spawn(async move {
            let peer = Peer {
                transport: Transport::Quic,
                remote,
                listener: index,
            };
            match tokio::time::timeout(limits.connect_timeout(), incoming).await {
                Ok(Ok(connection)) => serve(connection, opened, peer, limits, inbound).await,
                Ok(Err(err)) => {
                    tracing::info!(%remote, %err, "quic handshake failed");
                    opened.slot.close(Reason::Handshake);
                }
                Err(_) => {
                    tracing::info!(%remote, "quic handshake timed out");
                    opened.slot.close(Reason::Handshake);
                }
            }
        });
    }
}

/// Opens a connection to `target` from the listener's endpoint, in the
/// table at once; messages queue while it connects.
pub(super) fn connect(
    transports: &Transports,
    endpoint: quinn::Endpoint,
    target: Target,
    listener: usize,
) -> Result<super::connections::Writer, Reason> {
    let opened = transports.connections.open(Transport::Quic, target.addr)?;
    let writer = opened.writer.clone();
    let limits = transports.connections.limits().clone();
    let inbound = transports.inbound.clone();
    let peer = Peer {
        transport: Transport::Quic,
        remote: target.addr,
        listener,
    };
    let report = transports.report_connect_failed();
    transports.runtime.spawn(async move {
        let remote = peer.remote;
        // The peer is known by its address: its certificate must name it.
        let connecting = endpoint
            .connect(remote, &remote.ip().to_string())
            .map_err(|e| e.to_string());
        let connected = match connecting {
            Ok(connecting) => tokio::time::timeout(limits.connect_timeout(), connecting)
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(err) => Err(err),
        };
        match connected {
            Ok(connection) => serve(connection, opened, peer, limits, inbound).await,
            Err(err) => {
                tracing::info!(%remote, transport = "quic", %err, "connecting failed");
                opened.slot.close(Reason::ConnectFailed);
                if let Some(report) = report {
                    report(target);
                }
            }
        }
    });
    Ok(writer)
}

/// What a stream's reader tells its connection's task.
enum StreamEvent {
    /// A transaction the peer opened: answer on `send`.
    Opened {
        branch: String,
        send: quinn::SendStream,
    },
    /// A final answer to a request of ours arrived on its stream.
    Answered { branch: String, code: u16 },
}

/// A transaction's stream, as the connection's task writes to it.
struct Stream {
    /// Messages for its writer task; dropping it finishes the stream.
    queue: mpsc::UnboundedSender<Bytes>,
    opened: Instant,
    /// Ours (we sent the request) or the peer's.
    ours: bool,
    /// Ours, an INVITE answered non-2xx: ends with our ACK.
    awaiting_ack: bool,
}

/// Serves one connection until it closes, the peer is gone, nothing was
/// exchanged for the idle timeout, or a stream cannot be framed.
async fn serve(
    connection: quinn::Connection,
    opened: Opened,
    peer: Peer,
    limits: ConnectionLimits,
    to_proxy: mpsc::Sender<Inbound>,
) {
    let Opened {
        slot,
        writer,
        mut queue,
    } = opened;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (failed_tx, mut failed) = mpsc::unbounded_channel::<Reason>();
    let reading = Reading {
        peer,
        limits: limits.clone(),
        to_proxy: to_proxy.clone(),
        events: events_tx,
        failed: failed_tx,
    };
    let mut streams: HashMap<String, Stream> = HashMap::new();
    let mut idle_until = Instant::now() + limits.idle_timeout();
    let mut purge = tokio::time::interval(Duration::from_secs(30));
    let reason = loop {
        tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    idle_until = Instant::now() + limits.idle_timeout();
                    tokio::spawn(reading.clone().read(recv, Some(send)));
                }
                Err(err) => break closed_reason(&err),
            },
            data = queue.next() => {
                let Some(data) = data else { break Reason::Shutdown };
                idle_until = Instant::now() + limits.idle_timeout();
                let len = data.len();
                let sent = send(&connection, &mut streams, &reading, data).await;
                queue.done(len);
                if let Err(reason) = sent {
                    break reason;
                }
            }
            Some(event) = events.recv() => match event {
                StreamEvent::Opened { branch, send } => {
                    let stream = Stream {
                        queue: spawn_writer(send),
                        opened: Instant::now(),
                        ours: false,
                        awaiting_ack: false,
                    };
                    streams.insert(branch, stream);
                }
                StreamEvent::Answered { branch, code } => {
                    if let Some(s) = streams.get_mut(&branch).filter(|s| s.ours) {
                        if (200..300).contains(&code) {
                            // The ACK of a 2xx is a transaction of its own.
                            streams.remove(&branch);
                        } else {
                            s.awaiting_ack = true;
                        }
                    }
                }
            },
            Some(reason) = failed.recv() => break reason,
            _ = purge.tick() => {
                streams.retain(|_, s| s.opened.elapsed() < STREAM_LIFETIME);
            }
            _ = tokio::time::sleep_until(idle_until) => break Reason::Idle,
        }
    };
    tracing::debug!(remote = %peer.remote, transport = "quic", reason = reason.as_str(), "connection closed");
    drop(writer);
    drop(queue);
    slot.close(reason);
    connection.close(0u32.into(), b"");
}

/// Sends one queued message on its transaction's stream, opening one for
/// a new request.
async fn send(
    connection: &quinn::Connection,
    streams: &mut HashMap<String, Stream>,
    reading: &Reading,
    data: Bytes,
) -> Result<(), Reason> {
    let Ok(msg) = sip::parse(data.clone()) else {
        // We only send what we parsed or built.
        return Ok(());
    };
    let branch = branch_of(&msg);
    if let Some(code) = msg.status() {
        let final_ = code >= 200 && cseq_method(&msg) != Some(Method::Cancel);
        match streams.get(&branch) {
            Some(s) if !s.ours => {
                let _ = s.queue.send(data);
                if final_ {
                    // Our side of the peer's transaction is done.
                    streams.remove(&branch);
                }
                return Ok(());
            }
            // Its stream is gone (purged): a stream of its own.
            _ => {
                return open_and_send(connection, reading, data, None)
                    .await
                    .map(drop)
            }
        }
    }
    let method = msg.method().cloned();
    if let Some(s) = streams.get(&branch).filter(|s| s.ours) {
        let _ = s.queue.send(data);
        if method == Some(Method::Ack) && s.awaiting_ack {
            streams.remove(&branch);
        }
        return Ok(());
    }
    let queue = open_and_send(connection, reading, data, Some(branch.clone())).await?;
    // Only an INVITE's stream carries more of ours (CANCEL, ACK).
    if let (Some(queue), Some(Method::Invite)) = (queue, method) {
        streams.insert(
            branch,
            Stream {
                queue,
                opened: Instant::now(),
                ours: true,
                awaiting_ack: false,
            },
        );
    }
    Ok(())
}

/// Opens a stream, sends `data` on it and reads what comes back; the
/// writer's queue when the stream stays open for a transaction (`branch`).
async fn open_and_send(
    connection: &quinn::Connection,
    reading: &Reading,
    data: Bytes,
    branch: Option<String>,
) -> Result<Option<mpsc::UnboundedSender<Bytes>>, Reason> {
    let (send, recv) = match connection.open_bi().await {
        Ok(pair) => pair,
        Err(err) => return Err(closed_reason(&err)),
    };
    tokio::spawn(reading.clone().read(recv, None));
    let queue = spawn_writer(send);
    let _ = queue.send(data);
    Ok(branch.map(|_| queue))
}

/// A stream's writer: writes what it is given, finishes the stream when
/// its queue is dropped.
fn spawn_writer(mut send: quinn::SendStream) -> mpsc::UnboundedSender<Bytes> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            if send.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = send.finish();
    });
    tx
}

/// What every stream reader of a connection shares.
#[derive(Clone)]
struct Reading {
    peer: Peer,
    limits: ConnectionLimits,
    to_proxy: mpsc::Sender<Inbound>,
    events: mpsc::UnboundedSender<StreamEvent>,
    failed: mpsc::UnboundedSender<Reason>,
}

impl Reading {
    /// Reads the messages of one stream; `answer_on` for a stream the peer
    /// opened (its first request's branch names it).
    async fn read(self, mut recv: quinn::RecvStream, mut answer_on: Option<quinn::SendStream>) {
        let mut framer = Framer::new(self.limits.max_header_bytes, self.limits.max_body_bytes);
        loop {
            loop {
                match framer.next() {
                    Ok(Some(Frame::Message(data))) => {
                        if let Ok(msg) = sip::parse(data.clone()) {
                            let branch = branch_of(&msg);
                            if let Some(send) = answer_on.take() {
                                let _ = self.events.send(StreamEvent::Opened {
                                    branch: branch.clone(),
                                    send,
                                });
                            }
                            if let Some(code) = msg.status() {
                                if code >= 200 && cseq_method(&msg) == Some(Method::Invite) {
                                    let _ =
                                        self.events.send(StreamEvent::Answered { branch, code });
                                }
                            }
                        }
                        let inbound = Inbound {
                            data,
                            transport: Transport::Quic,
                            remote: self.peer.remote,
                            listener: self.peer.listener,
                        };
                        if self.to_proxy.send(inbound).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(Frame::Ping)) => {}
                    Ok(None) => break,
                    Err(err) => {
                        tracing::info!(remote = %self.peer.remote, %err, "closing a quic connection: cannot frame a stream");
                        let _ = self.failed.send(Reason::Unframeable);
                        return;
                    }
                }
            }
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => framer.buffer().extend_from_slice(&chunk.bytes),
                // Finished, reset, or the connection went: the
                // connection's task learns the latter by itself.
                Ok(None) | Err(_) => return,
            }
        }
    }
}

fn branch_of(msg: &Message) -> String {
    msg.top_via()
        .ok()
        .and_then(|v| v.branch().map(str::to_owned))
        .unwrap_or_default()
}

fn cseq_method(msg: &Message) -> Option<Method> {
    msg.cseq().ok().map(|c| c.method.clone())
}

fn closed_reason(err: &quinn::ConnectionError) -> Reason {
    match err {
        quinn::ConnectionError::ApplicationClosed(_)
        | quinn::ConnectionError::ConnectionClosed(_)
        | quinn::ConnectionError::Reset => Reason::Peer,
        quinn::ConnectionError::TimedOut => Reason::Idle,
        quinn::ConnectionError::LocallyClosed => Reason::Shutdown,
        _ => Reason::Error,
    }
}
