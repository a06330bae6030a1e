//! The host side of the `ratelimit` WIT interface: a tenant's rate limits
//! by key ([`crate::services::ratelimit`]) and the proxy's ban list
//! ([`crate::transport::Flood`]), which drops a banned address's messages
//! before any hook.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use wasmtime::Result;

use super::call::HostState;
use super::wisp::proxy::ratelimit;
use super::wisp::proxy::sip::Error;
use crate::services::ratelimit::MAX_WINDOW_S;
use crate::services::shared::ratelimit as cluster_ratelimit;

/// The address a guest names (`endpoint.ip`, IPv6 with or without
/// brackets).
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse().ok()
}

impl ratelimit::Host for HostState {
    /// With `[cluster]` the hits are counted in Redis, across the nodes
    /// ([`crate::services::shared::ratelimit`]); while Redis fails, by this node
    /// alone, as without `[cluster]`.
    fn check(&mut self, key: String, limit: u32, window_seconds: u32) -> Result<bool> {
        let services = &self.guest.services;
        let tenant = &self.guest.tenant;
        let shared = services.cluster.as_ref().and_then(|cluster| {
            let started = Instant::now();
            let counted = cluster_ratelimit::check(cluster, tenant, &key, limit, window_seconds);
            self.storage_time.add(started.elapsed());
            match counted {
                Ok(allowed) => {
                    cluster_ratelimit::STATE.worked();
                    Some(allowed)
                }
                Err(err) => {
                    cluster_ratelimit::STATE.failed(tenant, &err);
                    None
                }
            }
        });
        let allowed = shared.unwrap_or_else(|| {
            services
                .ratelimits
                .check(tenant, &key, limit, window_seconds, Instant::now())
        });
        if !allowed {
            self.guest.metrics.ratelimit_refused.inc();
        }
        Ok(allowed)
    }

    fn ban(&mut self, ip: String, seconds: u32) -> Result<Result<(), Error>> {
        let Some(addr) = parse_ip(&ip) else {
            return Ok(Err(Error::Invalid(format!("{ip:?} is not an IP address"))));
        };
        if seconds == 0 {
            return Ok(Err(Error::Invalid("a ban of 0 seconds".into())));
        }
        let duration = Duration::from_secs(u64::from(seconds.min(MAX_WINDOW_S)));
        match self
            .guest
            .services
            .flood
            .ban_by_tenant(addr, duration, &self.guest.tenant)
        {
            None => Ok(Err(Error::NotAllowed(format!(
                "{addr} is a trusted source (trusted in the configuration)"
            )))),
            Some(started) => {
                if started {
                    self.guest.metrics.ratelimit_bans.inc();
                }
                Ok(Ok(()))
            }
        }
    }

    fn banned(&mut self, ip: String) -> Result<Option<u32>> {
        let Some(addr) = parse_ip(&ip) else {
            return Ok(None);
        };
        Ok(self.guest.services.flood.banned_for(addr).map(|left| {
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        }))
    }

    fn unban(&mut self, ip: String) -> Result<bool> {
        let Some(addr) = parse_ip(&ip) else {
            return Ok(false);
        };
        Ok(self
            .guest
            .services
            .flood
            .unban_by_tenant(addr, &self.guest.tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_ip;

    #[test]
    fn addresses_as_guests_write_them() {
        assert_eq!(parse_ip("192.0.2.1"), "192.0.2.1".parse().ok());
        assert_eq!(parse_ip("2001:db8::1"), "2001:db8::1".parse().ok());
        assert_eq!(parse_ip("[2001:db8::1]"), "2001:db8::1".parse().ok());
        assert_eq!(parse_ip("example.com"), None);
        assert_eq!(parse_ip("192.0.2.1:5060"), None);
    }
}
