//! Sockets: receiving datagrams and streams, and sending messages out.
//!
//! The transport layer knows framing and connections, nothing of SIP
//! routing. It hands each complete message to the proxy as an [`Inbound`]
//! (datagrams on the receiving thread, see [`Transports::receive_datagrams`];
//! stream messages through a channel) and sends whatever the proxy asks
//! through [`Transports::send`].

pub mod bans;
pub mod bounded;
mod connections;
pub mod flood;
mod framing;
mod limits;
mod quic;
mod stream;
mod tcp;
mod tls;
pub mod trusted;
mod udp;
mod websocket;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;

pub use connections::{ConnectionMetrics, Connections, NotQueued, Reason};
pub use flood::{Flood, FloodConfig};
pub use limits::ConnectionLimits;
pub use tls::{CertificateFiles, ServerFiles, TlsConfig, TlsError};
pub use trusted::Trusted;

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    /// WebSocket (RFC 7118): one SIP message per WebSocket message, over
    /// TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
    /// SIP/2.0 over QUIC, a stream per transaction (experimental; see
    /// `quic.rs`).
    Quic,
}

impl Transport {
    /// The name used in Via headers ("UDP") .
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Quic => "QUIC",
        }
    }

    /// Reads a `transport=` URI parameter or a Via transport, any case.
    pub fn from_name(name: &str) -> Option<Transport> {
        if name.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if name.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else if name.eq_ignore_ascii_case("tls") {
            Some(Transport::Tls)
        } else if name.eq_ignore_ascii_case("ws") {
            Some(Transport::Ws)
        } else if name.eq_ignore_ascii_case("wss") {
            Some(Transport::Wss)
        } else if name.eq_ignore_ascii_case("quic") {
            Some(Transport::Quic)
        } else {
            None
        }
    }

    /// Whether messages travel on a connection (reliable: nothing is
    /// retransmitted, and answers go back on the connection).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Whether we may open connections of it. A WebSocket is opened by
    /// the client (a browser) only: a peer on one is reachable while its
    /// connection lasts (a flow, RFC 5626), never after.
    pub fn can_connect(self) -> bool {
        !matches!(self, Transport::Ws | Transport::Wss)
    }

    /// Whether it runs on TLS (a certificate on its listener).
    pub fn is_secure(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss | Transport::Quic)
    }

    /// Whether its listeners are TCP sockets (else UDP ones); no two
    /// listeners of one kind can share an address.
    fn is_tcp(self) -> bool {
        matches!(
            self,
            Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss
        )
    }

    /// The port a URI without one means.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls | Transport::Quic => 5061,
            // RFC 7118 names none; these are HTTP's.
            Transport::Ws => 80,
            Transport::Wss => 443,
        }
    }
}

impl Transport {
    /// The name in the configuration and in metrics ("udp").
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
            Transport::Quic => "quic",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One message as it arrived.
#[derive(Debug)]
pub struct Inbound {
    pub data: Bytes,
    pub transport: Transport,
    /// The peer that sent it.
    pub remote: SocketAddr,
    /// The listener it arrived on (index into the listener list).
    pub listener: usize,
}

/// What the receiving threads do with datagrams, in two steps.
///
/// The threads of one socket take turns at it: the one whose turn it is
/// receives a batch and passes each datagram to [`Datagrams::sort`], in the
/// order the socket delivered them, before another may receive; then it
/// gives up its turn and calls [`Datagrams::handle`]. Whatever `sort` puts
/// in order (a call's queue) stays in arrival order.
pub trait Datagrams: Send + Sync + 'static {
    /// What sorting leaves for handling.
    type Sorted: Send;
    /// Takes one datagram while holding its socket's turn: keep it short
    /// (parse, queue), never wait here.
    fn sort(&self, inbound: Inbound) -> Option<Self::Sorted>;
    /// Handles a batch sorted by this thread, its turn given up.
    fn handle(&self, sorted: &mut Vec<Self::Sorted>);
    /// Before a thread sleeps: handles what other threads sorted and have
    /// not handled yet; whether there was any.
    fn help(&self) -> bool {
        false
    }
}

/// Where to send a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Target {
    /// As a destination URI (`sip:192.0.2.1:5070;transport=tcp`), the way
    /// a location binding's `received` and `$du` name it.
    pub fn uri(&self) -> String {
        let ip = match self.addr.ip() {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        match self.transport {
            Transport::Udp => format!("sip:{ip}:{}", self.addr.port()),
            t => format!("sip:{ip}:{};transport={t}", self.addr.port()),
        }
    }
}

/// One `[[listen]]` entry of the configuration file: a socket to open.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub transport: Transport,
    /// `IP:PORT`; IPv6 as `[::1]:5060`.
    pub address: SocketAddr,
    /// The `host:port` to put in Via and Record-Route instead of the bound
    /// address, for a proxy behind NAT or bound to a wildcard address.
    #[serde(default)]
    pub advertise: Option<String>,
    /// TLS and WSS: the certificate chain served (PEM), when no other is
    /// for the name the client asks for.
    #[serde(default)]
    pub certificate: Option<std::path::PathBuf>,
    /// TLS: the private key of `certificate` (PEM).
    #[serde(default)]
    pub private_key: Option<std::path::PathBuf>,
    /// TLS: more certificates, each served to clients asking for a name
    /// it is for (SNI).
    #[serde(default)]
    pub certificates: Vec<CertificateFiles>,
    /// TLS: clients must present a certificate issued by one of these
    /// CA certificates (PEM): mutual TLS.
    #[serde(default)]
    pub client_ca: Option<std::path::PathBuf>,
    /// WebSocket: the `Origin` values a browser may connect from (for
    /// example `"https://phone.example.com"`); empty: any.
    #[serde(default)]
    pub origins: Vec<String>,
}

impl Listen {
    /// Without a `[[listen]]`: UDP and TCP on 0.0.0.0:5060.
    pub fn defaults() -> Vec<Listen> {
        let any = SocketAddr::from(([0, 0, 0, 0], 5060));
        vec![
            Listen::plain(Transport::Udp, any),
            Listen::plain(Transport::Tcp, any),
        ]
    }

    /// A listener without TLS or advertised name.
    pub fn plain(transport: Transport, address: SocketAddr) -> Listen {
        Listen {
            transport,
            address,
            advertise: None,
            certificate: None,
            private_key: None,
            certificates: Vec::new(),
            client_ca: None,
            origins: Vec::new(),
        }
    }

    /// The TLS files of a TLS listener; an error names what is missing
    /// or out of place.
    pub fn tls_files(&self) -> Result<Option<ServerFiles>, String> {
        let where_ = format!("[[listen]] {} {}", self.transport, self.address);
        if !self.origins.is_empty() && !matches!(self.transport, Transport::Ws | Transport::Wss) {
            return Err(format!("{where_}: origins are for ws and wss listeners"));
        }
        if !self.transport.is_secure() {
            if self.certificate.is_some()
                || self.private_key.is_some()
                || self.client_ca.is_some()
                || !self.certificates.is_empty()
            {
                return Err(format!(
                    "{where_}: certificate, private_key, certificates and client_ca are for tls, wss and quic listeners"
                ));
            }
            return Ok(None);
        }
        let (Some(certificate), Some(private_key)) = (&self.certificate, &self.private_key) else {
            return Err(format!(
                "{where_}: {} needs certificate and private_key",
                self.transport
            ));
        };
        Ok(Some(ServerFiles {
            default: CertificateFiles {
                certificate: certificate.clone(),
                private_key: private_key.clone(),
            },
            more: self.certificates.clone(),
            client_ca: self.client_ca.clone(),
        }))
    }

    /// The checks serde cannot express, on the whole `[[listen]]` list: one
    /// socket at least, none twice, TLS files where TLS is and nowhere
    /// else. Certificates are read too: a TLS listener that could not serve
    /// them is an error before start.
    pub fn check_all(listen: &[Listen]) -> Result<(), String> {
        if listen.is_empty() {
            return Err("at least one [[listen]] is needed".into());
        }
        for (i, a) in listen.iter().enumerate() {
            if let Some(files) = a.tls_files()? {
                tls::server_config(&files)
                    .map_err(|e| format!("[[listen]] {} {}: {e}", a.transport, a.address))?;
            }
            if listen[..i]
                .iter()
                .any(|b| a.transport.is_tcp() == b.transport.is_tcp() && a.address == b.address)
            {
                return Err(format!(
                    "[[listen]] {} {} appears twice",
                    a.transport, a.address
                ));
            }
        }
        Ok(())
    }
}

/// A listening socket as the proxy sees it.
#[derive(Debug, Clone)]
pub struct Listener {
    pub transport: Transport,
    /// The bound address (port resolved if 0 was asked).
    pub local: SocketAddr,
    /// What to write in Via / Record-Route, when configured.
    pub advertise: Option<String>,
}

/// Sending failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no {0} listener for an {1} destination")]
    NoListener(Transport, &'static str),
    #[error("send to {0} failed: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("connection to {0} closed")]
    Closed(SocketAddr),
    #[error(
        "connection to {0} has [connections] max_queued_bytes waiting: the peer is not reading"
    )]
    QueueFull(SocketAddr),
    #[error("cannot open a connection to {0}: [connections] max connections are open")]
    TooMany(SocketAddr),
    #[error("no {0} connection with {1}, and only the client can open one (the flow is gone)")]
    NoFlow(Transport, SocketAddr),
}

/// The listener to send from towards `target`: same transport and
/// address family, preferring one bound to the same kind of address
/// (loopback to loopback).
pub fn listener_for(listeners: &[Listener], target: &Target) -> Result<usize, SendError> {
    let family = |a: &SocketAddr| a.is_ipv4();
    let candidates = listeners.iter().enumerate().filter(|(_, l)| {
        l.transport == target.transport && family(&l.local) == family(&target.addr)
    });
    let mut fallback = None;
    for (i, l) in candidates {
        let ip = l.local.ip();
        if ip.is_unspecified() || ip.is_loopback() == target.addr.ip().is_loopback() {
            return Ok(i);
        }
        fallback.get_or_insert(i);
    }
    fallback.ok_or(SendError::NoListener(
        target.transport,
        if target.addr.is_ipv4() {
            "IPv4"
        } else {
            "IPv6"
        },
    ))
}

/// All sockets of the process, and the open stream connections.
pub struct Transports {
    listeners: Vec<Listener>,
    udp: Vec<(usize, Arc<std::net::UdpSocket>)>,
    /// Open stream connections, keyed by transport and the peer's address, so that
    /// responses and later requests reuse the connection (RFC 3261 §18).
    connections: Arc<Connections>,
    inbound: mpsc::Sender<Inbound>,
    /// For the work a send cannot finish at once (connecting, a full buffer).
    runtime: tokio::runtime::Handle,
    /// The certificates of each TLS listener, by listener index.
    tls_servers: Vec<(usize, Arc<tls::TlsServer>)>,
    /// For the TLS connections we open.
    tls_client: Arc<rustls::ClientConfig>,
    /// QUIC listeners by listener index; each opens our QUIC connections
    /// too.
    quic: Vec<(usize, Arc<quic::QuicListener>)>,
    /// The name a TLS peer's certificate must carry, by address, when a
    /// name led to it (RFC 5922: the domain of the URI).
    tls_names: std::sync::Mutex<std::collections::HashMap<SocketAddr, Arc<str>>>,
    /// Told when a connection we opened could not be established.
    connect_failed: std::sync::OnceLock<ConnectFailed>,
}

/// What is told of a connection that could not be opened (its target):
/// the messages queued for it are lost, and whoever sent them should not
/// wait for answers.
pub type ConnectFailed = Arc<dyn Fn(Target) + Send + Sync>;

/// TLS peer names remembered at most; past it the oldest are forgotten
/// wholesale (the next lookup names them again).
const MAX_TLS_NAMES: usize = 4096;

impl Transports {
    /// Binds every configured listener and starts accepting connections;
    /// complete messages from streams go to the returned channel. Datagrams
    /// wait for [`Transports::receive_datagrams`].
    pub async fn bind(
        listen: &[Listen],
        limits: &ConnectionLimits,
        tls_config: &TlsConfig,
        metrics: ConnectionMetrics,
    ) -> anyhow::Result<(Arc<Transports>, mpsc::Receiver<Inbound>)> {
        use anyhow::Context;
        let (tx, rx) = mpsc::channel(4096);
        let mut listeners = Vec::new();
        let mut udp_sockets = Vec::new();
        let mut tcp_listeners = Vec::new();
        let mut tls_servers = Vec::new();
        let mut quic_listeners = Vec::new();
        for (index, l) in listen.iter().enumerate() {
            let files = l.tls_files().map_err(anyhow::Error::msg)?;
            if let (Some(files), Transport::Tls | Transport::Wss) = (&files, l.transport) {
                let server = tls::TlsServer::load(files.clone())
                    .with_context(|| format!("[[listen]] tls {}", l.address))?;
                tls_servers.push((index, Arc::new(server)));
            }
            let local = match l.transport {
                Transport::Quic => {
                    let files = files.context("quic needs certificate and private_key")?;
                    let listener =
                        quic::QuicListener::bind(l.address, files, tls_config.ca.as_deref())
                            .with_context(|| format!("cannot listen on quic {}", l.address))?;
                    let local = listener.endpoint.local_addr()?;
                    quic_listeners.push((index, Arc::new(listener)));
                    local
                }
                Transport::Udp => {
                    let socket = udp::bind(l.address)
                        .with_context(|| format!("cannot listen on udp {}", l.address))?;
                    let local = socket.local_addr()?;
                    udp_sockets.push((index, Arc::new(socket)));
                    local
                }
                Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => {
                    let listener = tcp::bind(l.address).with_context(|| {
                        format!("cannot listen on {} {}", l.transport, l.address)
                    })?;
                    let local = listener.local_addr()?;
                    tcp_listeners.push((index, l.transport, l.origins.clone(), listener));
                    local
                }
            };
            listeners.push(Listener {
                transport: l.transport,
                local,
                advertise: l.advertise.clone(),
            });
        }
        let transports = Arc::new(Transports {
            listeners,
            udp: udp_sockets,
            connections: Connections::new(limits.clone(), metrics),
            inbound: tx,
            runtime: tokio::runtime::Handle::current(),
            tls_servers,
            tls_client: tls::client_config(tls_config.ca.as_deref()).context("[tls] ca")?,
            quic: quic_listeners,
            tls_names: Default::default(),
            connect_failed: std::sync::OnceLock::new(),
        });
        for (index, listener) in &transports.quic {
            tokio::spawn(quic::accept(
                listener.endpoint.clone(),
                *index,
                transports.clone(),
            ));
        }
        for (index, transport, origins, listener) in tcp_listeners {
            let accept = tcp::Accept {
                index,
                transport,
                tls: transports.tls_server(index),
                websocket: matches!(transport, Transport::Ws | Transport::Wss)
                    .then(|| Arc::new(websocket::Upgrade::new(origins))),
            };
            tokio::spawn(tcp::accept(listener, accept, transports.clone()));
        }
        Ok((transports, rx))
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    fn tls_server(&self, listener: usize) -> Option<Arc<tls::TlsServer>> {
        self.tls_servers
            .iter()
            .find(|(i, _)| *i == listener)
            .map(|(_, s)| s.clone())
    }

    /// Reads every TLS listener's certificates again. Connections keep the
    /// session they have; new handshakes get the new certificates. A
    /// listener whose files fail keeps its certificates (the error says
    /// which).
    pub fn reload_certificates(&self) -> Result<usize, Vec<String>> {
        let mut errors = Vec::new();
        for (index, server) in &self.tls_servers {
            if let Err(err) = server.reload() {
                let l = &self.listeners[*index];
                errors.push(format!("[[listen]] {} {}: {err}", l.transport, l.local));
            }
        }
        for (index, listener) in &self.quic {
            if let Err(err) = listener.reload() {
                let l = &self.listeners[*index];
                errors.push(format!("[[listen]] quic {}: {err}", l.local));
            }
        }
        if errors.is_empty() {
            Ok(self.tls_servers.len() + self.quic.len())
        } else {
            Err(errors)
        }
    }

    /// Starts `threads` receiving threads per UDP listener; see
    /// [`Datagrams`] for what they do with what they receive.
    pub fn receive_datagrams<D: Datagrams>(
        &self,
        threads: usize,
        datagrams: Arc<D>,
    ) -> std::io::Result<()> {
        for (index, socket) in &self.udp {
            let turn = Arc::new(udp::Turn::new());
            for i in 0..threads.max(1) {
                let (socket, turn, datagrams, index) =
                    (socket.clone(), turn.clone(), datagrams.clone(), *index);
                let readable = udp::Readable::new(&socket)?;
                std::thread::Builder::new()
                    .name(format!("wisp-udp-{index}.{i}"))
                    .spawn(move || udp::receive(socket, readable, turn, index, &*datagrams))?;
            }
        }
        Ok(())
    }

    /// The listener to send from towards `target` (see [`listener_for`]).
    pub fn listener_for(&self, target: &Target) -> Result<usize, SendError> {
        listener_for(&self.listeners, target)
    }

    /// Sends one message, from any thread, without waiting for the network
    /// (a datagram waits only for room in the socket's send buffer). UDP goes out of
    /// the listener's socket so that the peer sees our well-known port; TCP
    /// reuses an open connection to the peer or opens one. Messages to one
    /// peer leave in the order they were sent.
    pub fn send(&self, target: Target, data: Bytes) -> Result<(), SendError> {
        match target.transport {
            Transport::Udp => {
                let listener = self.listener_for(&target)?;
                let socket = self
                    .udp
                    .iter()
                    .find(|(i, _)| *i == listener)
                    .map(|(_, s)| s)
                    .ok_or(SendError::NoListener(Transport::Udp, "any"))?;
                match socket.send_to(&data, target.addr) {
                    Ok(_) => Ok(()),
                    Err(e) => Err(SendError::Io(target.addr, e)),
                }
            }
            transport => {
                let writer = match self.connections.get(transport, target.addr) {
                    Some(writer) => writer,
                    None if !transport.can_connect() => {
                        return Err(SendError::NoFlow(transport, target.addr))
                    }
                    None if transport == Transport::Quic => {
                        let listener = self.listener_for(&target)?;
                        let endpoint = self
                            .quic
                            .iter()
                            .find(|(i, _)| *i == listener)
                            .map(|(_, q)| q.endpoint.clone())
                            .ok_or(SendError::NoListener(Transport::Quic, "any"))?;
                        quic::connect(self, endpoint, target, listener)
                            .map_err(|_| SendError::TooMany(target.addr))?
                    }
                    None => {
                        let listener = self.listener_for(&target)?;
                        tcp::connect(self, target, listener)
                            .map_err(|_| SendError::TooMany(target.addr))?
                    }
                };
                writer.send(data).map_err(|err| match err {
                    NotQueued::Full => {
                        self.connections.not_queued(target.transport);
                        SendError::QueueFull(target.addr)
                    }
                    NotQueued::Closed => SendError::Closed(target.addr),
                })
            }
        }
    }

    /// Whom to tell when a connection we open cannot be established (set
    /// once, by the server).
    pub fn on_connect_failed(&self, report: ConnectFailed) {
        let _ = self.connect_failed.set(report);
    }

    fn report_connect_failed(&self) -> Option<ConnectFailed> {
        self.connect_failed.get().cloned()
    }

    /// The TLS peer at `addr` was found by looking `name` up: a connection
    /// we open to it must present a certificate for `name` (and asks for
    /// it by SNI), not for the address.
    pub fn expect_tls_name(&self, addr: SocketAddr, name: &str) {
        let mut names = self.tls_names.lock().unwrap_or_else(|e| e.into_inner());
        if names.len() >= MAX_TLS_NAMES && !names.contains_key(&addr) {
            names.clear();
        }
        names.insert(addr, Arc::from(name));
    }

    /// The name a TLS connection to `addr` is for, when a name led to it.
    fn tls_name(&self, addr: SocketAddr) -> Option<Arc<str>> {
        let names = self.tls_names.lock().unwrap_or_else(|e| e.into_inner());
        names.get(&addr).cloned()
    }

    /// RFC 5923: a message from `remote` on a connection asked (Via
    /// `alias`) that what wisp sends to `alias` go on that connection;
    /// see [`Connections::alias`] for what is taken.
    pub fn alias(&self, transport: Transport, remote: SocketAddr, alias: SocketAddr) -> bool {
        transport.is_stream() && self.connections.alias(transport, remote, alias)
    }

    /// Stream connections open now.
    pub fn open_connections(&self) -> usize {
        self.connections.open_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_errors_say_what_is_wrong() {
        let err = toml::from_str::<Listen>("transport = \"smoke\"\naddress = \"1.2.3.4:5\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("smoke"), "{err}");
        let err = toml::from_str::<Listen>("transport = \"udp\"\naddress = \"nowhere\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("address"), "{err}");
    }

    #[test]
    fn each_socket_once() {
        assert_eq!(
            Listen::check_all(&[]).unwrap_err(),
            "at least one [[listen]] is needed"
        );
        assert!(Listen::check_all(&Listen::defaults()).is_ok());
        let mut twice = Listen::defaults();
        twice.push(twice[1].clone());
        assert_eq!(
            Listen::check_all(&twice).unwrap_err(),
            "[[listen]] tcp 0.0.0.0:5060 appears twice"
        );
    }
}
