//! SIP over WebSocket (RFC 7118), what browser phones speak: the HTTP
//! upgrade with subprotocol `sip` (and, when configured, an allowed
//! `Origin`), then one SIP message per WebSocket message each way. The
//! connection holds its slot in the table like any stream and ends the
//! same ways; a ping every `ws_ping_interval_s` keeps NATs open, and a
//! browser's pongs count as traffic for the idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{timeout, timeout_at, Duration, Instant};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use super::connections::{Opened, Queue, Reason, Writer};
use super::limits::ConnectionLimits;
use super::stream::Peer;
use super::Inbound;

/// The subprotocol RFC 7118 registers.
const SUBPROTOCOL: &str = "sip";

/// How long a closing connection may take to send its Close frame.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What a WebSocket listener accepts in the upgrade request.
pub(super) struct Upgrade {
    /// Allowed `Origin` values; empty: any.
    origins: Vec<String>,
}

impl Upgrade {
    pub(super) fn new(origins: Vec<String>) -> Upgrade {
        Upgrade { origins }
    }

    /// Checks the upgrade request; a refusal says what is wrong (400 no
    /// `sip` subprotocol, 403 an Origin not allowed).
    fn check(&self, request: &Request) -> Result<(), (StatusCode, &'static str)> {
        let offers_sip = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == SUBPROTOCOL);
        if !offers_sip {
            return Err((
                StatusCode::BAD_REQUEST,
                "the WebSocket subprotocol must be sip (RFC 7118)",
            ));
        }
        if !self.origins.is_empty() {
            let origin = request
                .headers()
                .get("origin")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                return Err((StatusCode::FORBIDDEN, "origin not allowed"));
            }
        }
        Ok(())
    }

    /// The answer to the upgrade request (tungstenite's callback).
    #[allow(clippy::result_large_err)] // tungstenite's signature
    fn answer(&self, request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
        match self.check(request) {
            Ok(()) => {
                response.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_static(SUBPROTOCOL),
                );
                Ok(response)
            }
            Err((status, text)) => Err(refusal(status, text)),
        }
    }
}

fn refusal(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(text.to_owned()));
    *response.status_mut() = status;
    response
}

/// What tungstenite may hold for one connection: a message no larger than
/// the stream limits allow, small buffers (most connections idle).
fn config(limits: &ConnectionLimits) -> WebSocketConfig {
    let largest = limits.max_header_bytes + limits.max_body_bytes;
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(largest))
        .max_frame_size(Some(largest))
}

/// Upgrades `stream` (TCP, or TLS for wss) and serves it until it ends;
/// the upgrade must be done `connect_timeout_ms` after `started` (the
/// accept, so a TLS handshake counts too).
pub(super) async fn serve<S>(
    stream: S,
    upgrade: Arc<Upgrade>,
    started: Instant,
    opened: Opened,
    peer: Peer,
    limits: ConnectionLimits,
    to_proxy: mpsc::Sender<Inbound>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    #[allow(clippy::result_large_err)] // tungstenite's signature
    let answer = |request: &Request, response: Response| upgrade.answer(request, response);
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, answer, Some(config(&limits)));
    let ws = match timeout_at(started + limits.connect_timeout(), handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(err)) => {
            tracing::info!(remote = %peer.remote, %err, "websocket upgrade refused");
            opened.slot.close(Reason::Handshake);
            return;
        }
        Err(_) => {
            tracing::info!(remote = %peer.remote, "websocket upgrade timed out");
            opened.slot.close(Reason::Handshake);
            return;
        }
    };
    serve_upgraded(ws, opened, peer, limits, to_proxy).await;
}

async fn serve_upgraded<S>(
    ws: WebSocketStream<S>,
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
    let (mut sink, mut source) = ws.split();
    let reason = tokio::select! {
        reason = read_messages(&mut source, peer, &limits, &to_proxy, &writer) => reason,
        reason = write_queue(&mut sink, &mut queue, limits.ws_ping_interval()) => reason,
    };
    tracing::debug!(remote = %peer.remote, transport = %peer.transport, reason = reason.as_str(), "connection closed");
    // As for any stream: out of the table first, then goodbye.
    drop(writer);
    drop(queue);
    slot.close(reason);
    let _ = timeout(SHUTDOWN_GRACE, sink.close()).await;
}

async fn read_messages<R>(
    source: &mut R,
    peer: Peer,
    limits: &ConnectionLimits,
    to_proxy: &mpsc::Sender<Inbound>,
    pong: &Writer,
) -> Reason
where
    R: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        let data = match timeout(limits.idle_timeout(), source.next()).await {
            Err(_) => return Reason::Idle,
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Reason::Peer,
            Ok(Some(Err(err))) => return error_reason(err, peer.remote),
            Ok(Some(Ok(Message::Text(text)))) => Bytes::from(text),
            Ok(Some(Ok(Message::Binary(data)))) => data,
            // Pings are answered by tungstenite; pongs and pings are
            // traffic all the same (the idle timeout starts again).
            Ok(Some(Ok(_))) => continue,
        };
        // RFC 5626 §4.4.1 keepalive: a double CRLF is answered with one.
        if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            if data.as_ref() == b"\r\n\r\n" {
                let _ = pong.send(Bytes::from_static(b"\r\n"));
            }
            continue;
        }
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
}

fn error_reason(err: WsError, remote: SocketAddr) -> Reason {
    match err {
        WsError::ConnectionClosed | WsError::AlreadyClosed => Reason::Peer,
        WsError::Capacity(_) | WsError::Protocol(_) | WsError::Utf8(_) => {
            tracing::info!(%remote, %err, "closing a websocket: message too large or malformed");
            Reason::Unframeable
        }
        _ => Reason::Error,
    }
}

async fn write_queue<W>(sink: &mut W, queue: &mut Queue, ping_every: Duration) -> Reason
where
    W: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    loop {
        tokio::select! {
            data = queue.next() => {
                // Every writer is gone: only the task's own can be.
                let Some(data) = data else { return Reason::Shutdown };
                let len = data.len();
                // SIP is text; a body that is not UTF-8 goes as binary.
                let message = match Utf8Bytes::try_from(data.clone()) {
                    Ok(text) => Message::Text(text),
                    Err(_) => Message::Binary(data),
                };
                let fed = sink.feed(message).await;
                queue.done(len);
                if fed.is_err() || (queue.is_empty() && sink.flush().await.is_err()) {
                    return Reason::Error;
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    return Reason::Error;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(protocol: Option<&str>, origin: Option<&str>) -> Request {
        let mut builder = Request::builder().uri("/");
        if let Some(p) = protocol {
            builder = builder.header("Sec-WebSocket-Protocol", p);
        }
        if let Some(o) = origin {
            builder = builder.header("Origin", o);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn the_upgrade_needs_sip_and_an_allowed_origin() {
        let any = Upgrade::new(Vec::new());
        let ok = any
            .answer(&request(Some("chat, sip"), None), Response::default())
            .expect("sip offered");
        assert_eq!(ok.headers()["sec-websocket-protocol"], "sip");
        let refused = any
            .answer(&request(Some("chat"), None), Response::default())
            .unwrap_err();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(any.check(&request(None, None)).is_err());

        let only = Upgrade::new(vec!["https://phone.example.com".into()]);
        assert!(only
            .check(&request(Some("sip"), Some("https://PHONE.example.com")))
            .is_ok());
        let refused = only
            .answer(
                &request(Some("sip"), Some("https://evil.example")),
                Response::default(),
            )
            .unwrap_err();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(only.check(&request(Some("sip"), None)).is_err());
    }
}
