//! Which tenant routes a request: by the Request-URI's domain, then the
//! To domain, then the listener it came in on, then the default tenant.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::sip::{Host, Message, Uri};

use super::config::RoutingConfig;
use super::tenant::Tenant;

/// The tenants in service and how requests find them; replaced whole on a
/// configuration reload, read lock-free by the workers.
pub struct Directory {
    pub(super) tenants: Vec<Arc<Tenant>>,
    by_domain: HashMap<String, usize>,
    by_listener: HashMap<SocketAddr, usize>,
    default: Option<usize>,
    unknown_reply: u16,
}

/// Where a request goes.
pub enum Selected {
    Tenant(Arc<Tenant>),
    /// No tenant takes it: answer with this code (404 or 403).
    Unknown(u16),
}

impl Directory {
    pub(super) fn new(tenants: Vec<Arc<Tenant>>, routing: &RoutingConfig) -> Directory {
        let mut by_domain = HashMap::new();
        let mut by_listener = HashMap::new();
        for (i, t) in tenants.iter().enumerate() {
            let config = t.config();
            for domain in &config.domains {
                by_domain.insert(domain.to_ascii_lowercase(), i);
            }
            for listener in &config.listeners {
                by_listener.insert(*listener, i);
            }
        }
        let default = match &routing.default_tenant {
            Some(name) => tenants.iter().position(|t| &t.name == name),
            None => tenants.iter().position(|t| {
                let c = t.config();
                c.domains.is_empty() && c.listeners.is_empty()
            }),
        };
        Directory {
            tenants,
            by_domain,
            by_listener,
            default,
            unknown_reply: routing.unknown_reply,
        }
    }

    pub fn tenants(&self) -> &[Arc<Tenant>] {
        &self.tenants
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|t| t.name == name)
    }

    /// The tenant for a request that arrived on `local` (the listener's
    /// bound address).
    pub fn select(&self, msg: &Message, local: Option<SocketAddr>) -> Selected {
        let found = self
            .claimed_by_domain(msg)
            .or_else(|| local.and_then(|l| self.by_listener.get(&l).copied()))
            .or(self.default);
        match found.and_then(|i| self.tenants.get(i)) {
            Some(t) => Selected::Tenant(t.clone()),
            None => Selected::Unknown(self.unknown_reply),
        }
    }

    fn claimed_by_domain(&self, msg: &Message) -> Option<usize> {
        if self.by_domain.is_empty() {
            return None;
        }
        let ruri = msg.uri().and_then(|u| Uri::parse(u).ok());
        let to = msg.to().ok().map(|to| to.uri.clone());
        [ruri, to]
            .into_iter()
            .flatten()
            .find_map(|uri| self.by_domain.get(&domain_of(&uri.host)).copied())
    }
}

/// A host as it is written in `domains`: a name in lower case, or an IP.
fn domain_of(host: &Host) -> String {
    match host {
        Host::Name(name) => name.to_ascii_lowercase(),
        Host::V4(ip) => ip.to_string(),
        Host::V6(ip) => ip.to_string(),
    }
}
