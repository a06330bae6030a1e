//! End-to-end harness: the real `wisp` binary on loopback, driven by SIPp.
//!
//! Every process a test starts is killed by PID when its handle drops, and
//! every SIPp run is bounded in calls and in time. One file per idea:
//!
//! - `wisp.rs`: the wisp process (start from a configuration file, log,
//!   `wisp ctl`, a rewritten file);
//! - `config.rs`: what it starts with, put together by `WispBuilder`
//!   (listeners, tenants and their params, admin, subscribers, database);
//! - `message.rs`: SIP messages as text (a request to send, a response to
//!   one, headers read back);
//! - `peers.rs`: raw SIP peers over UDP and TCP (one-shot exchanges, a peer
//!   that only listens, a user agent with a call of its own);
//! - `digest.rs`: digest credentials computed from scratch;
//! - `sipp.rs`: SIPp runs, their statistics and scenarios;
//! - `kamailio.rs`: Kamailio as the neighbouring proxy;
//! - `guests.rs`: routing components built for the tests (Rust and
//!   TypeScript) and the choice of default routing;
//! - `dns.rs`: DNS servers on loopback (one serving a zone written in
//!   code, one that never answers);
//! - `lossy_uas.rs`: a callee that loses packets on purpose;
//! - `redis.rs`: a redis-server of its own for the cluster tests.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

mod config;
mod digest;
mod dns;
mod guests;
mod jssip;
mod kamailio;
mod lossy_uas;
mod message;
mod peers;
mod redis;
mod sipp;
mod tls;
mod wisp;

pub use config::{Tenant, WispBuilder};
pub use digest::{challenge_param, credentials};
pub use dns::{Asked, DnsServer, SilentDns, Zone};
pub use guests::{
    build_guest, build_js_guest, cached_js_build, default_js_component, precompile, Routing,
    TRUNK_GUEST,
};
pub use jssip::{events_named, JsSip};
pub use kamailio::{Kamailio, KamailioTls};
pub use lossy_uas::{LossyUas, UasReport};
pub use message::{header_of, headers_of, request, response_to, Request};
pub use peers::{tcp_exchange, udp_exchange, udp_reply, SilentPeer, Ua};
pub use redis::RedisServer;
pub use sipp::{assert_all_successful, scenario, Sipp, SippOutcome, SippProcess, Transport};
pub use tls::{certificate_der, CertFiles, Pki, TlsClient};
pub use wisp::{wisp_binary, CtlOutput, Wisp};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A free loopback port for both UDP and TCP, for a process a test starts
/// (wisp, SIPp, Kamailio) to bind a moment later.
///
/// Never one of the kernel's ephemeral ports: those are handed to every
/// outgoing connection meanwhile (wisp's to a TCP callee, SIPp's), and a
/// port the OS picked for us and we let go could be taken that way before
/// the process that should listen on it binds it. Ports come from below
/// the ephemeral range, in turn within this test process (never the same
/// twice), from a starting point of its own so that test binaries running
/// side by side seldom meet; a port something holds is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = unephemeral_ports();
    let span = u32::from(high - low);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
        let _ = NEXT.compare_exchange(0, seed % span + 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = low + offset as u16;
        let addr = (Ipv4Addr::LOCALHOST, port);
        if let Ok(udp) = UdpSocket::bind(addr) {
            if TcpListener::bind(addr).is_ok() {
                drop(udp);
                return port;
            }
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// The ports [`free_port`] chooses from: 10000 up to the start of the
/// kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn unephemeral_ports() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 12_000 {
        (10_000, ephemeral_low)
    } else {
        // An unusual range starting low: use the ports above it instead.
        (61_000, 65_000)
    }
}
