//! TEMPORARY stand-in until the dns branch merges (same API).
use crate::transport::{Target, Transport};
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
pub struct DnsConfig {
    #[serde(default)]
    pub servers: Vec<std::net::SocketAddr>,
    #[serde(default)]
    pub timeout_ms: u64,
}
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locate {
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    pub secure: bool,
    pub response: bool,
}
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DnsError(String);
#[derive(Clone)]
pub struct Resolver;
impl Resolver {
    pub fn new(_c: &DnsConfig) -> Result<Resolver, DnsError> {
        Ok(Resolver)
    }
    pub async fn locate(&self, q: &Locate) -> Result<Vec<Target>, DnsError> {
        let addrs = tokio::net::lookup_host((q.host.as_str(), q.port.unwrap_or(5060)))
            .await
            .map_err(|e| DnsError(e.to_string()))?;
        Ok(addrs
            .map(|addr| Target {
                transport: q.transport.unwrap_or(Transport::Udp),
                addr,
            })
            .collect())
    }
}
