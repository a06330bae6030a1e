//! Raw SIP over loopback: one-shot UDP and TCP exchanges, a minimal
//! request, a peer that only listens, and reading headers from text.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;

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

/// A minimal request, `\r\n` line ends, for tests that talk raw SIP.
pub fn request(method: &str, uri: &str, extra_headers: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKtest{id}{nanos};rport\r\n\
         From: <sip:tester@127.0.0.1>;tag=t{id}\r\n\
         To: <{uri}>\r\n\
         Call-ID: {nanos}-{id}@test\r\n\
         CSeq: 1 {method}\r\n\
         {extra_headers}\
         Content-Length: 0\r\n\r\n",
        nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    )
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
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The value of the first header `name` (case-insensitive, long form) of a
/// message in text form.
pub fn header_of<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
