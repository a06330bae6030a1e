//! Raw SIP peers on loopback: one-shot UDP and TCP exchanges, a peer that
//! only listens, and a user agent with a call of its own.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::{credentials, free_port, Request};

/// [`udp_exchange`] with a 5 s wait: the reply, or "" when none came.
pub fn udp_reply(to: SocketAddr, message: &[u8]) -> String {
    udp_exchange(to, message, Duration::from_secs(5))
        .expect("udp socket")
        .unwrap_or_default()
}

/// Sends one message over UDP from a fresh socket and returns the first
/// reply, if one comes within `timeout`.
pub fn udp_exchange(to: SocketAddr, message: &[u8], timeout: Duration) -> Result<Option<String>> {
    let local: SocketAddr = if to.is_ipv4() {
        "127.0.0.1:0".parse()?
    } else {
        "[::1]:0".parse()?
    };
    let socket = UdpSocket::bind(local)?;
    socket.set_read_timeout(Some(timeout))?;
    socket.send_to(message, to)?;
    let mut buf = vec![0u8; 65_536];
    reply_or_timeout(socket.recv_from(&mut buf).map(|(len, _)| len), &buf)
}

/// Sends one message over a new TCP connection and returns the first reply.
pub fn tcp_exchange(to: SocketAddr, message: &[u8], timeout: Duration) -> Result<Option<String>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&to, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(message)?;
    let mut buf = vec![0u8; 65_536];
    reply_or_timeout(stream.read(&mut buf), &buf)
}

/// The text read, or None when nothing came before the read timeout.
fn reply_or_timeout(read: std::io::Result<usize>, buf: &[u8]) -> Result<Option<String>> {
    match read {
        Ok(0) => Ok(None),
        Ok(len) => Ok(Some(String::from_utf8_lossy(&buf[..len]).into_owned())),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// A UDP peer that never answers: it records what reaches it, as text.
pub struct SilentPeer {
    pub port: u16,
    received: std::sync::Arc<Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentPeer {
    pub fn start() -> Result<SilentPeer> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let port = socket.local_addr()?.port();
        let received = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rx, halt) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((len, _)) = socket.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                    rx.lock().unwrap_or_else(|e| e.into_inner()).push(text);
                }
            }
        });
        Ok(SilentPeer {
            port,
            received,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The first message received that contains `needle`, waiting for it
    /// up to `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.received().into_iter().find(|m| m.contains(needle)) {
                return Ok(m);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the peer got no message with {needle:?}: {:?}",
                    self.received()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A user agent on its own UDP socket, talking raw SIP to wisp: one
/// dialog-less call, each request of which takes the next CSeq and a
/// branch of its own. Reads wait up to 5 s.
pub struct Ua {
    socket: UdpSocket,
    wisp: SocketAddr,
    seq: u32,
    call_id: String,
}

impl Ua {
    const WAIT: Duration = Duration::from_secs(5);

    pub fn new(wisp: SocketAddr) -> Ua {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_read_timeout(Some(Ua::WAIT)).expect("timeout");
        Ua {
            socket,
            wisp,
            seq: 0,
            call_id: format!("ua-{}-{}", std::process::id(), free_port()),
        }
    }

    pub fn port(&self) -> u16 {
        self.socket.local_addr().expect("addr").port()
    }

    /// A request of this UA's call from `from` to `uri` (its To too), with
    /// Max-Forwards.
    pub fn request(&mut self, method: &str, uri: &str, from: &str) -> String {
        self.next_request(method, uri, from).to_string()
    }

    fn next_request(&mut self, method: &str, uri: &str, from: &str) -> Request {
        self.seq += 1;
        let mut request = Request::new(method, uri)
            .from(from)
            .headers("Max-Forwards: 70\r\n");
        request.via_port = self.port();
        request.branch = format!("z9hG4bK{}x{}", self.call_id, self.seq);
        request.from_tag = format!("f{}", self.seq);
        request.call_id = self.call_id.clone();
        request.cseq = self.seq;
        request
    }

    /// A REGISTER of `aor` (a SIP URI) with `extra` header lines (each
    /// ending in `\r\n`); returns the final answer.
    pub fn register(&mut self, aor: &str, extra: &str) -> String {
        let registrar = format!("sip:{}", self.wisp);
        let message = self
            .next_request("REGISTER", &registrar, aor)
            .to(aor)
            .headers(extra)
            .to_string();
        self.send(&message)
    }

    /// [`Ua::register`] answering `challenge` (a WWW-Authenticate value)
    /// as `user` with `password` and the nonce-count `nc`: `extra` and an
    /// Authorization header.
    pub fn register_answering(
        &mut self,
        aor: &str,
        extra: &str,
        challenge: &str,
        (user, password): (&str, &str),
        nc: u32,
    ) -> String {
        let registrar = format!("sip:{}", self.wisp);
        let auth = credentials(challenge, user, password, "REGISTER", &registrar, nc);
        self.register(aor, &format!("{extra}Authorization: {auth}\r\n"))
    }

    /// Sends a message to wisp and returns its final answer.
    pub fn send(&self, message: &str) -> String {
        self.send_no_wait(message);
        self.final_answer()
    }

    /// Sends a message to wisp, waiting for nothing.
    pub fn send_no_wait(&self, message: &str) {
        self.socket
            .send_to(message.as_bytes(), self.wisp)
            .expect("send");
    }

    /// The next final answer to a request already sent (provisionals skipped).
    pub fn final_answer(&self) -> String {
        let deadline = Instant::now() + Ua::WAIT;
        loop {
            assert!(Instant::now() < deadline, "no final answer in time");
            let text = self.receive();
            if !text.starts_with("SIP/2.0 1") {
                return text;
            }
        }
    }

    /// The next message that reaches this UA, request or response.
    pub fn receive(&self) -> String {
        let mut buf = vec![0u8; 65_536];
        match self.socket.recv(&mut buf) {
            Ok(len) => String::from_utf8_lossy(&buf[..len]).into_owned(),
            Err(err) => panic!("nothing reached the UA on port {}: {err}", self.port()),
        }
    }
}
