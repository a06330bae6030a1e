//! The RFC 3263 procedure as a sans-IO state machine: it asks questions
//! ([`Question`]), is told the answers ([`Answer`]) and ends with the
//! targets to try in order. The resolver in `mod.rs` only carries questions
//! to DNS and back, so every decision here is testable without a network.
//!
//! - §4.1–4.2, requests: an explicit port means A/AAAA only (transport as
//!   given, else UDP); a transport without a port means SRV for that
//!   transport, then A/AAAA on 5060; neither means NAPTR (services
//!   SIP+D2U/SIP+D2T), then SRV `_sip._udp`/`_sip._tcp` when no NAPTR is
//!   usable, then A/AAAA on 5060 over UDP when no SRV record exists.
//! - §5, responses (a Via sent-by that is a name): never NAPTR; SRV for the
//!   Via's transport when there is no port, then A/AAAA.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use super::naptr::{self, NaptrRecord};
use super::srv::{self, SrvRecord};
use super::{DnsError, Locate};
use crate::transport::{Target, Transport};

/// At most this many targets per locate: enough for every sensible
/// failover list, and a bound on what hostile DNS data can make us hold.
pub const MAX_TARGETS: usize = 16;
/// At most this many DNS questions per locate (NAPTR, SRV, A/AAAA): bounds
/// the time and load one request can cause.
pub const MAX_LOOKUPS: usize = 12;
/// NAPTR records followed per locate (wisp has two transports).
const MAX_NAPTR: usize = 4;
/// SRV records followed per SRV name.
const MAX_SRV: usize = 8;
/// RFC 3263 §4.2: the default SIP port; 5061 for TLS.
pub const DEFAULT_PORT: u16 = 5060;
pub const DEFAULT_TLS_PORT: u16 = 5061;

/// A DNS question; names carry no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    Naptr(String),
    Srv(String),
    /// A and AAAA together.
    Address(String),
}

impl Question {
    pub fn name(&self) -> &str {
        match self {
            Question::Naptr(name) | Question::Srv(name) | Question::Address(name) => name,
        }
    }
}

/// What DNS said to a [`Question`]. Lookup failures (timeout, SERVFAIL) are
/// not answers: the resolver ends the procedure on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Naptr(Vec<NaptrRecord>),
    Srv(Vec<SrvRecord>),
    Address(Vec<IpAddr>),
    /// The name exists but holds no record of the type asked (NODATA).
    Empty,
    /// The name does not exist (NXDOMAIN).
    NoName,
}

/// Work still to do; the question being asked is `Procedure::asking`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Naptr,
    Srv {
        name: String,
        transport: Transport,
    },
    Address {
        name: String,
        port: u16,
        transport: Transport,
    },
}

/// One run of RFC 3263 for one [`Locate`].
#[derive(Debug)]
pub struct Procedure {
    host: String,
    steps: VecDeque<Step>,
    /// A/AAAA on the default port, taken when SRV was asked and no SRV
    /// record at all exists (RFC 3263 §4.2, §5).
    fallback: Option<Step>,
    asking: Option<Step>,
    srv_found: bool,
    /// A sips: URI or `transport=tls`: TLS targets only (RFC 3263 §4.1).
    secure: bool,
    targets: Vec<Target>,
    lookups: usize,
}

impl Procedure {
    /// The first steps a locate implies. A host that is an IP literal needs
    /// no DNS at all: its one target is ready at once.
    pub fn new(query: &Locate) -> Result<Procedure, DnsError> {
        let host = query.host.trim_end_matches('.');
        if host.is_empty() {
            return Err(DnsError::InvalidName(query.host.clone()));
        }
        if matches!(query.transport, Some(Transport::Ws | Transport::Wss)) {
            // Browsers name themselves `*.invalid` (RFC 7118 §5.2): only the
            // connection they opened reaches them, never a lookup.
            return Err(DnsError::Unsupported {
                name: host.to_string(),
                what: "a WebSocket peer by name (only its own connection reaches it)",
            });
        }
        // TLS: NAPTR SIPS+D2T, SRV _sips._tcp, A/AAAA on 5061, and never
        // a fallback to plain SIP, which would break the demand for
        // security. (The peer's certificate is checked against `host`.)
        let secure = query.secure || query.transport == Some(Transport::Tls);
        let mut procedure = Procedure {
            host: host.to_string(),
            steps: VecDeque::new(),
            fallback: None,
            asking: None,
            srv_found: false,
            secure,
            targets: Vec::new(),
            lookups: 0,
        };
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse::<IpAddr>();
        if let Ok(ip) = literal {
            let transport = match secure {
                true => Transport::Tls,
                false => query.transport.unwrap_or(Transport::Udp),
            };
            procedure.targets.push(Target {
                transport,
                addr: SocketAddr::new(ip, query.port.unwrap_or(transport.default_port())),
            });
            return Ok(procedure);
        }
        let name = host.to_string();
        if secure {
            match query.port {
                Some(port) => procedure.steps.push_back(Step::Address {
                    name,
                    port,
                    transport: Transport::Tls,
                }),
                // A response's Via names its transport: SRV only (§5).
                None if query.response => {
                    procedure.steps.push_back(Step::Srv {
                        name: srv_name(Transport::Tls, host),
                        transport: Transport::Tls,
                    });
                    procedure.fallback = Some(Step::Address {
                        name,
                        port: DEFAULT_TLS_PORT,
                        transport: Transport::Tls,
                    });
                }
                None => {
                    procedure.steps.push_back(Step::Naptr);
                    procedure.fallback = Some(Step::Address {
                        name,
                        port: DEFAULT_TLS_PORT,
                        transport: Transport::Tls,
                    });
                }
            }
            return Ok(procedure);
        }
        match (query.port, query.transport) {
            (Some(port), transport) => procedure.steps.push_back(Step::Address {
                name,
                port,
                transport: transport.unwrap_or(Transport::Udp),
            }),
            (None, transport) if transport.is_some() || query.response => {
                let transport = transport.unwrap_or(Transport::Udp);
                procedure.steps.push_back(Step::Srv {
                    name: srv_name(transport, host),
                    transport,
                });
                procedure.fallback = Some(Step::Address {
                    name,
                    port: DEFAULT_PORT,
                    transport,
                });
            }
            (None, _) => {
                procedure.steps.push_back(Step::Naptr);
                procedure.fallback = Some(Step::Address {
                    name,
                    port: DEFAULT_PORT,
                    transport: Transport::Udp,
                });
            }
        }
        Ok(procedure)
    }

    /// The next question to ask, or None when the procedure is over: no
    /// work left, enough targets, or the lookup budget spent.
    pub fn next_question(&mut self) -> Option<Question> {
        if self.targets.len() >= MAX_TARGETS {
            return None;
        }
        if self.steps.is_empty() && !self.srv_found {
            if let Some(fallback) = self.fallback.take() {
                self.steps.push_back(fallback);
            }
        }
        if self.lookups >= MAX_LOOKUPS {
            if !self.steps.is_empty() {
                tracing::debug!(host = %self.host, "DNS lookup budget spent; {} steps left", self.steps.len());
            }
            return None;
        }
        let step = self.steps.pop_front()?;
        self.lookups += 1;
        let question = match &step {
            Step::Naptr => Question::Naptr(self.host.clone()),
            Step::Srv { name, .. } => Question::Srv(name.clone()),
            Step::Address { name, .. } => Question::Address(name.clone()),
        };
        self.asking = Some(step);
        Some(question)
    }

    /// The answer to the last question. `random` is RFC 2782's weighted
    /// choice among SRV records of one priority (see [`srv::order`]).
    pub fn answer(&mut self, answer: Answer, random: &mut impl FnMut(u32) -> u32) {
        let Some(step) = self.asking.take() else {
            return;
        };
        match (step, answer) {
            // The host does not exist in DNS: no SRV name under it does
            // either (RFC 8020). Only the A/AAAA fallback is left, which
            // still finds names that only /etc/hosts knows ("localhost").
            (Step::Naptr, Answer::NoName) => {}
            (Step::Naptr, answer) => {
                let leads: Vec<_> = match answer {
                    Answer::Naptr(records) => naptr::select(records, MAX_NAPTR),
                    _ => Vec::new(),
                }
                .into_iter()
                // §4.1: a sips: URI takes TLS records only; a sip: URI
                // the others (TLS would need a listener it may lack).
                .filter(|lead| (lead.transport == Transport::Tls) == self.secure)
                .collect();
                if leads.is_empty() {
                    // §4.1: no usable NAPTR: SRV for each transport wisp
                    // supports, UDP first (the RFC leaves the order to us).
                    let transports: &[Transport] = if self.secure {
                        &[Transport::Tls]
                    } else {
                        &[Transport::Udp, Transport::Tcp]
                    };
                    for &transport in transports {
                        self.steps.push_back(Step::Srv {
                            name: srv_name(transport, &self.host),
                            transport,
                        });
                    }
                } else {
                    for lead in leads {
                        self.steps.push_back(Step::Srv {
                            name: lead.srv_name,
                            transport: lead.transport,
                        });
                    }
                }
            }
            (Step::Srv { transport, .. }, Answer::Srv(records)) => {
                if !records.is_empty() {
                    // Even a "." target counts: it says the service is not
                    // offered, so the A/AAAA fallback must not be taken.
                    self.srv_found = true;
                }
                // Appended after the other SRV names already queued, so the
                // targets keep the order of the NAPTR (or transport) list.
                for record in srv::order(records, MAX_SRV, random) {
                    self.steps.push_back(Step::Address {
                        name: record.target.trim_end_matches('.').to_string(),
                        port: record.port,
                        transport,
                    });
                }
            }
            (
                Step::Address {
                    port, transport, ..
                },
                Answer::Address(mut ips),
            ) => {
                // IPv4 first: listeners are most often IPv4 only, and a
                // target wisp cannot send to costs a failover.
                ips.sort_by_key(IpAddr::is_ipv6);
                for ip in ips {
                    if self.targets.len() >= MAX_TARGETS {
                        break;
                    }
                    let target = Target {
                        transport,
                        addr: SocketAddr::new(ip, port),
                    };
                    if !self.targets.contains(&target) {
                        self.targets.push(target);
                    }
                }
            }
            // NODATA, NXDOMAIN, or an answer of another kind: nothing here.
            _ => {}
        }
    }

    /// Whether some targets are known already.
    pub fn has_targets(&self) -> bool {
        !self.targets.is_empty()
    }

    /// The targets in the order to try them.
    pub fn finish(self) -> Result<Vec<Target>, DnsError> {
        if self.targets.is_empty() {
            Err(DnsError::NoRecords(self.host))
        } else {
            Ok(self.targets)
        }
    }
}

/// `_sip._udp.example.com` (RFC 3263 §4.2), `_sips._tcp.example.com`
/// for TLS.
fn srv_name(transport: Transport, host: &str) -> String {
    match transport {
        Transport::Tls => format!("_sips._tcp.{host}"),
        t => format!("_sip._{t}.{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn locate(host: &str) -> Locate {
        Locate {
            host: host.to_string(),
            port: None,
            transport: None,
            secure: false,
            response: false,
        }
    }

    fn naptr(order: u16, services: &str, replacement: &str) -> NaptrRecord {
        NaptrRecord {
            order,
            preference: 10,
            flags: b"s".to_vec(),
            services: services.as_bytes().to_vec(),
            regexp: Vec::new(),
            replacement: replacement.to_string(),
        }
    }

    fn srv(priority: u16, port: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight: 10,
            port,
            target: target.to_string(),
        }
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    fn target(transport: Transport, ip: IpAddr, port: u16) -> Target {
        Target {
            transport,
            addr: SocketAddr::new(ip, port),
        }
    }

    /// Runs the procedure against a fake DNS; returns the questions asked
    /// and the outcome.
    fn run(
        query: &Locate,
        dns: impl Fn(&Question) -> Answer,
    ) -> (Vec<Question>, Result<Vec<Target>, DnsError>) {
        let mut procedure = match Procedure::new(query) {
            Ok(p) => p,
            Err(e) => return (Vec::new(), Err(e)),
        };
        let mut asked = Vec::new();
        while let Some(question) = procedure.next_question() {
            let answer = dns(&question);
            asked.push(question);
            // Deterministic: always the first by running weight.
            procedure.answer(answer, &mut |_| 0);
        }
        (asked, procedure.finish())
    }

    fn naptr_q(name: &str) -> Question {
        Question::Naptr(name.to_string())
    }
    fn srv_q(name: &str) -> Question {
        Question::Srv(name.to_string())
    }
    fn addr_q(name: &str) -> Question {
        Question::Address(name.to_string())
    }

    #[test]
    fn explicit_port_asks_for_addresses_only() {
        let mut query = locate("pbx.example.test");
        query.port = Some(5080);
        let (asked, targets) = run(&query, |_| Answer::Address(vec![v4(1)]));
        assert_eq!(asked, vec![addr_q("pbx.example.test")]);
        assert_eq!(targets.unwrap(), vec![target(Transport::Udp, v4(1), 5080)]);

        query.transport = Some(Transport::Tcp);
        let (_, targets) = run(&query, |_| Answer::Address(vec![v4(1)]));
        assert_eq!(targets.unwrap(), vec![target(Transport::Tcp, v4(1), 5080)]);
    }

    #[test]
    fn transport_without_port_asks_srv_of_that_transport_then_addresses() {
        let mut query = locate("example.test");
        query.transport = Some(Transport::Tcp);
        let (asked, targets) = run(&query, |q| match q {
            Question::Srv(_) => Answer::Srv(vec![srv(10, 5070, "uas.example.test.")]),
            Question::Address(_) => Answer::Address(vec![v4(2)]),
            _ => Answer::NoName,
        });
        assert_eq!(
            asked,
            vec![srv_q("_sip._tcp.example.test"), addr_q("uas.example.test")]
        );
        assert_eq!(targets.unwrap(), vec![target(Transport::Tcp, v4(2), 5070)]);

        // No SRV: A/AAAA on 5060 with the given transport.
        let (asked, targets) = run(&query, |q| match q {
            Question::Address(_) => Answer::Address(vec![v4(3)]),
            _ => Answer::NoName,
        });
        assert_eq!(
            asked,
            vec![srv_q("_sip._tcp.example.test"), addr_q("example.test")]
        );
        assert_eq!(targets.unwrap(), vec![target(Transport::Tcp, v4(3), 5060)]);
    }

    #[test]
    fn neither_port_nor_transport_follows_naptr_to_srv_to_addresses() {
        let (asked, targets) = run(&locate("example.test"), |q| match q {
            Question::Naptr(_) => Answer::Naptr(vec![
                naptr(20, "SIP+D2T", "_sip._tcp.example.test."),
                naptr(10, "SIP+D2U", "_sip._udp.example.test."),
            ]),
            Question::Srv(name) if name.contains("_udp") => Answer::Srv(vec![
                srv(20, 5072, "uas2.example.test."),
                srv(10, 5071, "uas1.example.test."),
            ]),
            Question::Srv(_) => Answer::Srv(vec![srv(10, 5073, "uas1.example.test.")]),
            Question::Address(name) if name == "uas1.example.test" => Answer::Address(vec![v4(1)]),
            Question::Address(_) => Answer::Address(vec![v4(2)]),
        });
        assert_eq!(
            asked,
            vec![
                naptr_q("example.test"),
                srv_q("_sip._udp.example.test"),
                srv_q("_sip._tcp.example.test"),
                addr_q("uas1.example.test"),
                addr_q("uas2.example.test"),
                addr_q("uas1.example.test"),
            ]
        );
        assert_eq!(
            targets.unwrap(),
            vec![
                target(Transport::Udp, v4(1), 5071),
                target(Transport::Udp, v4(2), 5072),
                target(Transport::Tcp, v4(1), 5073),
            ]
        );
    }

    #[test]
    fn no_usable_naptr_means_srv_for_udp_then_tcp() {
        let (asked, targets) = run(&locate("example.test"), |q| match q {
            Question::Naptr(_) => {
                Answer::Naptr(vec![naptr(10, "SIPS+D2T", "_sips._tcp.example.test")])
            }
            Question::Srv(name) if name.contains("_tcp") => {
                Answer::Srv(vec![srv(10, 5090, "tcp.example.test")])
            }
            Question::Srv(_) => Answer::Empty,
            Question::Address(_) => Answer::Address(vec![v4(9)]),
        });
        assert_eq!(
            asked,
            vec![
                naptr_q("example.test"),
                srv_q("_sip._udp.example.test"),
                srv_q("_sip._tcp.example.test"),
                addr_q("tcp.example.test"),
            ]
        );
        assert_eq!(targets.unwrap(), vec![target(Transport::Tcp, v4(9), 5090)]);
    }

    #[test]
    fn no_naptr_no_srv_means_addresses_on_5060_udp() {
        let (asked, targets) = run(&locate("example.test"), |q| match q {
            Question::Address(_) => Answer::Address(vec![IpAddr::V6(Ipv6Addr::LOCALHOST), v4(5)]),
            _ => Answer::Empty,
        });
        assert_eq!(
            asked,
            vec![
                naptr_q("example.test"),
                srv_q("_sip._udp.example.test"),
                srv_q("_sip._tcp.example.test"),
                addr_q("example.test"),
            ]
        );
        assert_eq!(
            targets.unwrap(),
            vec![
                target(Transport::Udp, v4(5), 5060),
                target(Transport::Udp, IpAddr::V6(Ipv6Addr::LOCALHOST), 5060),
            ]
        );
    }

    #[test]
    fn a_name_that_does_not_exist_is_asked_no_srv() {
        let (asked, result) = run(&locate("nowhere.test"), |_| Answer::NoName);
        assert_eq!(asked, vec![naptr_q("nowhere.test"), addr_q("nowhere.test")]);
        assert!(matches!(result, Err(DnsError::NoRecords(name)) if name == "nowhere.test"));

        // Known to /etc/hosts only: the A/AAAA question still finds it.
        let (_, targets) = run(&locate("localhost"), |q| match q {
            Question::Address(_) => Answer::Address(vec![v4(1)]),
            _ => Answer::NoName,
        });
        assert_eq!(targets.unwrap(), vec![target(Transport::Udp, v4(1), 5060)]);
    }

    #[test]
    fn srv_saying_not_available_suppresses_the_address_fallback() {
        let mut query = locate("example.test");
        query.transport = Some(Transport::Udp);
        let (asked, result) = run(&query, |q| match q {
            Question::Srv(_) => Answer::Srv(vec![srv(0, 0, ".")]),
            _ => Answer::Address(vec![v4(1)]),
        });
        assert_eq!(asked, vec![srv_q("_sip._udp.example.test")]);
        assert!(matches!(result, Err(DnsError::NoRecords(_))));
    }

    #[test]
    fn response_never_asks_naptr() {
        let mut query = locate("client.example.test");
        query.response = true;
        let (asked, _) = run(&query, |_| Answer::Empty);
        assert_eq!(
            asked,
            vec![
                srv_q("_sip._udp.client.example.test"),
                addr_q("client.example.test")
            ]
        );

        query.transport = Some(Transport::Tcp);
        query.port = Some(5062);
        let (asked, targets) = run(&query, |_| Answer::Address(vec![v4(7)]));
        assert_eq!(asked, vec![addr_q("client.example.test")]);
        assert_eq!(targets.unwrap(), vec![target(Transport::Tcp, v4(7), 5062)]);
    }

    #[test]
    fn sips_follows_tls_records_only_and_never_falls_back_to_plain_sip() {
        let mut query = locate("example.test");
        query.secure = true;
        let (asked, targets) = run(&query, |q| match q {
            Question::Naptr(_) => Answer::Naptr(vec![
                naptr(10, "SIP+D2U", "_sip._udp.example.test"),
                naptr(20, "SIPS+D2T", "_sips._tcp.example.test"),
            ]),
            Question::Srv(name) if name == "_sips._tcp.example.test" => {
                Answer::Srv(vec![srv(1, 5071, "tls.example.test")])
            }
            Question::Address(name) if name == "tls.example.test" => Answer::Address(vec![v4(5)]),
            _ => Answer::Empty,
        });
        assert_eq!(
            asked,
            vec![
                Question::Naptr("example.test".into()),
                Question::Srv("_sips._tcp.example.test".into()),
                addr_q("tls.example.test"),
            ]
        );
        assert_eq!(targets.unwrap(), vec![target(Transport::Tls, v4(5), 5071)]);

        // No NAPTR, no SRV: A/AAAA on 5061, TLS still.
        let (asked, targets) = run(&query, |q| match q {
            Question::Address(_) => Answer::Address(vec![v4(6)]),
            _ => Answer::Empty,
        });
        assert_eq!(
            asked,
            vec![
                Question::Naptr("example.test".into()),
                Question::Srv("_sips._tcp.example.test".into()),
                addr_q("example.test"),
            ]
        );
        assert_eq!(targets.unwrap(), vec![target(Transport::Tls, v4(6), 5061)]);
    }

    #[test]
    fn empty_names_are_refused_before_any_lookup() {
        let (asked, result) = run(&locate("."), |_| Answer::Empty);
        assert!(asked.is_empty());
        assert!(matches!(result, Err(DnsError::InvalidName(_))));
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        let mut query = locate("[::1]");
        query.port = Some(5070);
        let (asked, targets) = run(&query, |_| Answer::Empty);
        assert!(asked.is_empty());
        assert_eq!(
            targets.unwrap(),
            vec![target(
                Transport::Udp,
                IpAddr::V6(Ipv6Addr::LOCALHOST),
                5070
            )]
        );
        let (_, targets) = run(&locate("127.0.0.3"), |_| Answer::Empty);
        assert_eq!(targets.unwrap(), vec![target(Transport::Udp, v4(3), 5060)]);
    }

    #[test]
    fn hostile_answers_are_bounded() {
        // Every SRV answer names 1000 targets, every address answer 1000
        // addresses: the procedure still asks at most MAX_LOOKUPS questions
        // and keeps at most MAX_TARGETS targets.
        let (asked, targets) = run(&locate("example.test"), |q| match q {
            Question::Naptr(_) => Answer::Naptr(
                (0..1000)
                    .map(|i| naptr(i, "SIP+D2U", &format!("_sip._udp.n{i}.test")))
                    .collect(),
            ),
            Question::Srv(_) => Answer::Srv(
                (0..1000)
                    .map(|i| srv(i, i, &format!("t{i}.test")))
                    .collect(),
            ),
            Question::Address(_) => Answer::Address(
                (0..1000u32)
                    .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
                    .collect(),
            ),
        });
        assert!(asked.len() <= MAX_LOOKUPS, "{}", asked.len());
        assert_eq!(targets.unwrap().len(), MAX_TARGETS);
    }

    #[test]
    fn the_lookup_budget_ends_a_long_chain() {
        // Each SRV target resolves to the same address, so targets never
        // fill up: the budget alone ends it.
        let (asked, targets) = run(&locate("example.test"), |q| match q {
            Question::Naptr(_) => Answer::Naptr(
                (0..4)
                    .map(|i| naptr(i, "SIP+D2U", &format!("_sip._udp.n{i}.test")))
                    .collect(),
            ),
            Question::Srv(_) => Answer::Srv(
                (0..100)
                    .map(|i| srv(1, 5060, &format!("t{i}.test")))
                    .collect(),
            ),
            Question::Address(_) => Answer::Address(vec![v4(1)]),
        });
        assert_eq!(asked.len(), MAX_LOOKUPS);
        assert_eq!(targets.unwrap(), vec![target(Transport::Udp, v4(1), 5060)]);
    }
}
