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
//! - `lossy_uas.rs`: a callee that loses packets on purpose.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

mod config;
mod digest;
mod dns;
mod guests;
mod kamailio;
mod lossy_uas;
mod message;
mod peers;
mod sipp;
mod wisp;

pub use config::{Tenant, WispBuilder};
pub use digest::{challenge_param, credentials};
pub use dns::{Asked, DnsServer, SilentDns, Zone};
pub use guests::{build_guest, build_js_guest, cached_js_build, default_js_component, Routing};
pub use kamailio::Kamailio;
pub use lossy_uas::{LossyUas, UasReport};
pub use message::{header_of, headers_of, request, response_to, Request};
pub use peers::{tcp_exchange, udp_exchange, udp_reply, SilentPeer, Ua};
pub use sipp::{assert_all_successful, scenario, Sipp, SippOutcome, SippProcess, Transport};
pub use wisp::{wisp_binary, CtlOutput, Wisp};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A free loopback port for both UDP and TCP (the OS picks; a race with
/// another process taking it in between is possible but rare).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = udp.local_addr() else { continue };
        if TcpListener::bind(addr).is_ok() {
            return addr.port();
        }
    }
    panic!("no free loopback port");
}
