//! Locating SIP servers in DNS (RFC 3263): which addresses, ports and
//! transports to try, in order, for a host name.
//!
//! [`Resolver::locate`] is async and never blocks: the proxy parks a
//! message that waits for a name and resumes it when the answer comes back
//! as an event. The decisions of RFC 3263 live in `rfc3263.rs` (NAPTR →
//! SRV → A/AAAA, a sans-IO state machine), the RFC 2782 ordering of SRV
//! records in `srv.rs`, NAPTR selection in `naptr.rs`; this file only carries
//! their questions to hickory-resolver and back.
//!
//! Answers are cached by their TTL in hickory-resolver's own response
//! cache (negative answers by their SOA's TTL), which is keyed by name and
//! record type: exactly the questions the procedure asks, so wisp keeps no
//! cache of its own.

mod naptr;
mod rfc3263;
mod srv;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;

use crate::transport::{Target, Transport};
use naptr::NaptrRecord;
use rfc3263::{Answer, Procedure, Question};
use srv::SrvRecord;

/// The `[dns]` section of the configuration.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers as "IP:PORT"; empty means the system's
    /// (/etc/resolv.conf).
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
    /// How long one DNS question may take, over all servers together; no
    /// retry after it (SIP has its own retransmissions and failover).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    2000
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

/// What to locate: the host of a Request-URI or Route (RFC 3263 §4), or the
/// sent-by of a Via for a response (§5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locate {
    /// A DNS name. (An IP literal is accepted too and needs no lookup, but
    /// callers should not need DNS for it in the first place.)
    pub host: String,
    /// The URI's or sent-by's port, if any: then only A/AAAA are asked.
    pub port: Option<u16>,
    /// The URI's `transport=` or the Via's transport, if any.
    pub transport: Option<Transport>,
    /// A sips: URI: TLS targets only, found by NAPTR SIPS+D2T and SRV
    /// `_sips._tcp`.
    pub secure: bool,
    /// Locating a Via sent-by for a response (RFC 3263 §5): no NAPTR, and
    /// SRV only when there is no port.
    pub response: bool,
}

/// Why a name gave no target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist, or has no record that leads to a target.
    #[error("{0}: no DNS records lead to a SIP server")]
    NoRecords(String),
    /// A DNS question about this name went unanswered in time.
    #[error("{0}: DNS lookup timed out")]
    Timeout(String),
    /// A DNS question about this name failed (SERVFAIL, REFUSED, I/O...).
    #[error("{name}: DNS lookup failed: {reason}")]
    Failed { name: String, reason: String },
    /// The request needs something wisp does not do (such as sips:).
    #[error("{name}: {what} is not supported")]
    Unsupported { name: String, what: &'static str },
    /// The host is not a DNS name.
    #[error("{0:?} is not a valid DNS name")]
    InvalidName(String),
    /// The `[dns]` configuration or the system's resolv.conf is unusable.
    #[error("DNS configuration: {0}")]
    Config(String),
}

/// An async, caching DNS resolver for RFC 3263. Cheap to clone (one `Arc`).
///
/// Constructing it needs no tokio runtime. Lookups must run inside one:
/// hickory spawns the tasks that drive its connections to the name servers
/// on the runtime of the lookup that opens them, so use one long-lived
/// runtime for all lookups of a `Resolver`.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<TokioResolver>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// At most this many records of one answer are looked at: a 64 KiB answer
/// could hold thousands, and no sane zone has that many for one name.
const MAX_RECORDS: usize = 256;

impl Resolver {
    /// A resolver asking `config.servers`, or the system's name servers
    /// (resolv.conf) when there are none.
    pub fn new(config: &DnsConfig) -> Result<Resolver, DnsError> {
        if config.timeout_ms == 0 {
            return Err(DnsError::Config("timeout_ms must be above 0".into()));
        }
        let mut builder = if config.servers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| DnsError::Config(format!("reading the system's resolv.conf: {e}")))?
        } else {
            let servers = config
                .servers
                .iter()
                .map(|server| {
                    // UDP, and TCP for answers too long for a datagram.
                    let mut udp = ConnectionConfig::udp();
                    udp.port = server.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = server.port();
                    NameServerConfig::new(server.ip(), true, vec![udp, tcp])
                })
                .collect();
            hickory_resolver::Resolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let options = builder.options_mut();
        // hickory bounds each question by `timeout` over the whole server
        // pool (two servers asked at a time), and `attempts` counts retries
        // after that: none, so a silent DNS costs a request one timeout.
        options.timeout = Duration::from_millis(config.timeout_ms);
        options.attempts = 0;
        // A and AAAA asked together, A first; rfc3263 puts IPv4 first too.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let inner = builder
            .build()
            .map_err(|e| DnsError::Config(format!("building the resolver: {e}")))?;
        Ok(Resolver {
            inner: Arc::new(inner),
        })
    }

    /// RFC 3263 §4.1–4.2 (§5 for responses): the targets to try, in order,
    /// for a request to (or a response via) `query.host`. A lookup that
    /// fails after some targets are known ends the search with those.
    pub async fn locate(&self, query: &Locate) -> Result<Vec<Target>, DnsError> {
        let mut procedure = Procedure::new(query)?;
        while let Some(question) = procedure.next_question() {
            match self.ask(&question).await {
                Ok(answer) => {
                    tracing::trace!(?question, ?answer, "DNS answer");
                    procedure.answer(answer, &mut srv::random_up_to);
                }
                Err(error) if procedure.has_targets() => {
                    tracing::debug!(%error, "DNS lookup failed; using the targets found so far");
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        let result = procedure.finish();
        tracing::debug!(host = %query.host, ?result, "located");
        result
    }

    /// One question to DNS (through the cache).
    async fn ask(&self, question: &Question) -> Result<Answer, DnsError> {
        let text = question.name();
        let mut name =
            Name::from_ascii(text).map_err(|_| DnsError::InvalidName(text.to_string()))?;
        // SIP hosts are absolute: no search-list expansion.
        name.set_fqdn(true);
        match question {
            Question::Naptr(_) => match self.inner.lookup(name, RecordType::NAPTR).await {
                Ok(lookup) => Ok(Answer::Naptr(
                    lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::NAPTR(n) => Some(NaptrRecord {
                                order: n.order,
                                preference: n.preference,
                                flags: n.flags.to_vec(),
                                services: n.services.to_vec(),
                                regexp: n.regexp.to_vec(),
                                replacement: n.replacement.to_ascii(),
                            }),
                            _ => None,
                        })
                        .take(MAX_RECORDS)
                        .collect(),
                )),
                Err(error) => no_answer(error, text),
            },
            Question::Srv(_) => match self.inner.lookup(name, RecordType::SRV).await {
                Ok(lookup) => Ok(Answer::Srv(
                    lookup
                        .answers()
                        .iter()
                        .filter_map(|record| match &record.data {
                            RData::SRV(s) => Some(SrvRecord {
                                priority: s.priority,
                                weight: s.weight,
                                port: s.port,
                                target: s.target.to_ascii(),
                            }),
                            _ => None,
                        })
                        .take(MAX_RECORDS)
                        .collect(),
                )),
                Err(error) => no_answer(error, text),
            },
            Question::Address(_) => match self.inner.lookup_ip(name).await {
                Ok(lookup) => Ok(Answer::Address(lookup.iter().take(MAX_RECORDS).collect())),
                Err(error) => no_answer(error, text),
            },
        }
    }
}

/// A failed lookup: "no such name" and "no such record" are answers the
/// procedure goes on from; anything else ends it.
fn no_answer(error: NetError, name: &str) -> Result<Answer, DnsError> {
    if error.is_nx_domain() {
        Ok(Answer::NoName)
    } else if error.is_no_records_found() {
        Ok(Answer::Empty)
    } else if matches!(error, NetError::Timeout) {
        Err(DnsError::Timeout(name.to_string()))
    } else {
        Err(DnsError::Failed {
            name: name.to_string(),
            reason: error.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_parsing() {
        let config: DnsConfig = toml::from_str("").expect("empty");
        assert_eq!(config, DnsConfig::default());
        assert_eq!(config.timeout_ms, 2000);
        assert!(config.servers.is_empty());

        let config: DnsConfig =
            toml::from_str("servers = [\"127.0.0.1:5353\", \"[::1]:53\"]\ntimeout_ms = 300")
                .expect("full");
        assert_eq!(config.servers.len(), 2);
        assert_eq!(config.servers[1].port(), 53);
        assert_eq!(config.timeout_ms, 300);

        assert!(toml::from_str::<DnsConfig>("server = []").is_err());
        assert!(toml::from_str::<DnsConfig>("servers = [\"127.0.0.1\"]").is_err());
    }

    #[test]
    fn resolver_builds_outside_a_runtime_and_is_shareable() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Resolver>();
        let config = DnsConfig {
            servers: vec!["127.0.0.1:5353".parse().expect("addr")],
            timeout_ms: 100,
        };
        let resolver = Resolver::new(&config).expect("resolver");
        let _copy = resolver.clone();
        // The proxy spawns lookups as tasks: the future must be Send.
        fn send<T: Send>(_: &T) {}
        let query = Locate {
            host: "example.test".into(),
            port: None,
            transport: None,
            secure: false,
            response: false,
        };
        send(&resolver.locate(&query));

        let zero = DnsConfig {
            timeout_ms: 0,
            ..config
        };
        assert!(matches!(Resolver::new(&zero), Err(DnsError::Config(_))));
    }
}
