//! wisp's RFC 3263 resolver against real DNS servers on loopback: the
//! harness's `DnsServer` (a zone in code) and `SilentDns` (never answers).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use wisp::dns::{DnsConfig, DnsError, Locate, Resolver};
use wisp::transport::{Target, Transport};
use wisp_tests::{Asked, DnsServer, SilentDns, Zone};

const TIMEOUT_MS: u64 = 500;

fn resolver(server: SocketAddr) -> Resolver {
    Resolver::new(&DnsConfig {
        servers: vec![server],
        timeout_ms: TIMEOUT_MS,
    })
    .expect("resolver")
}

fn locate(host: &str) -> Locate {
    Locate {
        host: host.to_string(),
        port: None,
        transport: None,
        secure: false,
        response: false,
    }
}

fn target(transport: Transport, last: u8, port: u16) -> Target {
    Target {
        transport,
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), port),
    }
}

fn asked(name: &str, record_type: &str) -> Asked {
    Asked {
        name: name.to_string(),
        record_type: record_type.to_string(),
    }
}

/// example.test: NAPTR to UDP (order 10) and TCP (order 20); the UDP SRV
/// lists the priority-20 UAS before the priority-10 one, so the order of
/// the result is the resolver's doing, not the server's.
fn sip_zone() -> Zone {
    Zone::new()
        .naptr(
            "example.test",
            20,
            10,
            "s",
            "SIP+D2T",
            "_sip._tcp.example.test",
        )
        .naptr(
            "example.test",
            10,
            10,
            "S",
            "SIP+D2U",
            "_sip._udp.example.test",
        )
        .naptr(
            "example.test",
            5,
            10,
            "s",
            "SIPS+D2T",
            "_sips._tcp.example.test",
        )
        .srv("_sip._udp.example.test", 20, 10, 5072, "uas2.example.test")
        .srv("_sip._udp.example.test", 10, 10, 5071, "uas1.example.test")
        .srv("_sip._tcp.example.test", 10, 10, 5073, "uas1.example.test")
        .a("uas1.example.test", Ipv4Addr::new(127, 0, 0, 1))
        .a("uas2.example.test", Ipv4Addr::new(127, 0, 0, 2))
        // No NAPTR here: SRV for UDP and TCP are asked directly.
        .srv("_sip._udp.srv-only.test", 10, 0, 5081, "uas1.example.test")
        .srv("_sip._tcp.srv-only.test", 10, 0, 5082, "uas2.example.test")
        // Neither NAPTR nor SRV: A on 5060.
        .a("plain.test", Ipv4Addr::new(127, 0, 0, 3))
}

#[tokio::test]
async fn naptr_then_srv_then_a_in_priority_order() {
    let dns = DnsServer::start(sip_zone()).expect("dns server");
    let targets = resolver(dns.addr())
        .locate(&locate("example.test"))
        .await
        .expect("located");
    assert_eq!(
        targets,
        vec![
            target(Transport::Udp, 1, 5071),
            target(Transport::Udp, 2, 5072),
            target(Transport::Tcp, 1, 5073),
        ]
    );
    let questions = dns.asked();
    assert_eq!(questions[0], asked("example.test", "NAPTR"));
    // The SIPS NAPTR is not followed (no TLS in wisp).
    assert!(
        !questions.iter().any(|q| q.name.starts_with("_sips")),
        "{questions:?}"
    );
}

#[tokio::test]
async fn srv_without_naptr_udp_first_then_tcp() {
    let dns = DnsServer::start(sip_zone()).expect("dns server");
    let resolver = resolver(dns.addr());
    let targets = resolver
        .locate(&locate("srv-only.test"))
        .await
        .expect("located");
    assert_eq!(
        targets,
        vec![
            target(Transport::Udp, 1, 5081),
            target(Transport::Tcp, 2, 5082)
        ]
    );

    let targets = resolver
        .locate(&locate("plain.test"))
        .await
        .expect("located");
    assert_eq!(targets, vec![target(Transport::Udp, 3, 5060)]);
}

#[tokio::test]
async fn explicit_port_asks_a_and_aaaa_only() {
    let dns = DnsServer::start(sip_zone()).expect("dns server");
    let mut query = locate("uas2.example.test");
    query.port = Some(5090);
    query.transport = Some(Transport::Tcp);
    let targets = resolver(dns.addr()).locate(&query).await.expect("located");
    assert_eq!(targets, vec![target(Transport::Tcp, 2, 5090)]);
    let questions = dns.asked();
    assert!(
        questions
            .iter()
            .all(|q| q.name == "uas2.example.test"
                && (q.record_type == "A" || q.record_type == "AAAA")),
        "{questions:?}"
    );
}

#[tokio::test]
async fn given_transport_and_responses_skip_naptr() {
    let dns = DnsServer::start(sip_zone()).expect("dns server");
    let resolver = resolver(dns.addr());
    let mut query = locate("example.test");
    query.transport = Some(Transport::Tcp);
    let targets = resolver.locate(&query).await.expect("located");
    assert_eq!(targets, vec![target(Transport::Tcp, 1, 5073)]);

    // RFC 3263 §5: a Via sent-by without a port, over UDP.
    let mut query = locate("example.test");
    query.transport = Some(Transport::Udp);
    query.response = true;
    let targets = resolver.locate(&query).await.expect("located");
    assert_eq!(
        targets,
        vec![
            target(Transport::Udp, 1, 5071),
            target(Transport::Udp, 2, 5072)
        ]
    );
    assert!(
        !dns.asked().iter().any(|q| q.record_type == "NAPTR"),
        "{:?}",
        dns.asked()
    );
}

#[tokio::test]
async fn unknown_name_is_an_error_and_sips_never_takes_plain_sip() {
    let dns = DnsServer::start(sip_zone()).expect("dns server");
    let resolver = resolver(dns.addr());
    let result = resolver.locate(&locate("nowhere.test")).await;
    assert!(
        matches!(&result, Err(DnsError::NoRecords(name)) if name == "nowhere.test"),
        "{result:?}"
    );

    // example.test has SIP records for UDP and TCP only: a sips: URI
    // finds no target rather than falling back to plain SIP.
    let mut query = locate("example.test");
    query.secure = true;
    let result = resolver.locate(&query).await;
    assert!(
        matches!(&result, Err(DnsError::NoRecords(name)) if name == "example.test"),
        "{result:?}"
    );
    assert!(dns
        .asked()
        .iter()
        .any(|q| format!("{q:?}").contains("_sips._tcp.example.test")));
}

#[tokio::test]
async fn answers_are_cached_by_ttl() {
    let dns = DnsServer::start(sip_zone()).expect("dns server");
    let resolver = resolver(dns.addr());
    let first = resolver
        .locate(&locate("example.test"))
        .await
        .expect("located");
    let queries = dns.queries();
    let again = resolver
        .locate(&locate("example.test"))
        .await
        .expect("located");
    assert_eq!(first.len(), again.len());
    assert_eq!(dns.queries(), queries, "{:?}", dns.asked());
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let silent = SilentDns::start().expect("silent dns");
    let started = Instant::now();
    let result = resolver(silent.addr())
        .locate(&locate("example.test"))
        .await;
    // Machines are noisy: print the time, assert only the outcome.
    println!(
        "silent DNS: {:?} after {:?} (timeout_ms = {TIMEOUT_MS}), {} queries received",
        result,
        started.elapsed(),
        silent.queries()
    );
    assert!(matches!(result, Err(DnsError::Timeout(_))), "{result:?}");
    assert!(silent.queries() >= 1);
}

#[tokio::test]
async fn long_answers_come_over_tcp() {
    // 100 SRV records do not fit a datagram: the server sets TC and the
    // resolver asks again over TCP.
    let mut zone = Zone::new();
    for i in 0..100u16 {
        let host = format!("a-rather-long-target-name-{i}.example.test");
        zone = zone
            .srv("_sip._tcp.big.test", 100 - i, 0, 6000 + i, &host)
            .a(&host, Ipv4Addr::new(127, 0, 0, 1));
    }
    let dns = DnsServer::start(zone).expect("dns server");
    let mut query = locate("big.test");
    query.transport = Some(Transport::Tcp);
    let targets = resolver(dns.addr()).locate(&query).await.expect("located");
    // The best priorities are the last records: ports 6099, 6098, ...
    let ports: Vec<u16> = targets.iter().map(|t| t.addr.port()).collect();
    assert_eq!(ports[..3], [6099, 6098, 6097], "{ports:?}");
    let srv_asked = dns
        .asked()
        .iter()
        .filter(|q| q.record_type == "SRV")
        .count();
    assert!(srv_asked >= 2, "asked SRV {srv_asked} times: no TCP retry?");
}

#[tokio::test]
async fn names_from_the_hosts_file_resolve() {
    // The test DNS knows no "localhost"; /etc/hosts does.
    let dns = DnsServer::start(Zone::new()).expect("dns server");
    let targets = resolver(dns.addr())
        .locate(&locate("localhost"))
        .await
        .expect("located");
    assert!(
        targets.contains(&target(Transport::Udp, 1, 5060)),
        "{targets:?}"
    );
}
