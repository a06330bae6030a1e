//! Whether a service that goes through Redis is failing, logged once per
//! change: a hook calls it thousands of times a second, and while Redis is
//! away a warning per call would bury the log (the link logs its own state
//! once per change too; this says what each service does meanwhile).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cluster::ClusterError;

/// One service's state: failing or not.
pub struct Degraded {
    /// What the service is, for the log ("kv", "rate limits"...).
    service: &'static str,
    /// What it does while Redis fails, for the warning.
    meanwhile: &'static str,
    failing: AtomicBool,
}

impl Degraded {
    pub const fn new(service: &'static str, meanwhile: &'static str) -> Degraded {
        Degraded {
            service,
            meanwhile,
            failing: AtomicBool::new(false),
        }
    }

    /// A call failed: warns if it is the first since the service worked.
    pub fn failed(&self, tenant: &str, err: &ClusterError) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                tenant,
                %err,
                "cluster {}: redis failed; {} (logged once until it works again)",
                self.service,
                self.meanwhile
            );
        }
    }

    /// A call worked: says so if the service was failing.
    pub fn worked(&self) {
        // A load first: the common case writes nothing to the shared line.
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("cluster {}: redis answers again", self.service);
        }
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_seen_once() {
        let state = Degraded::new("test", "nothing");
        assert!(!state.is_failing());
        state.failed("t", &ClusterError::Down);
        state.failed("t", &ClusterError::Timeout);
        assert!(state.is_failing());
        state.worked();
        assert!(!state.is_failing());
    }
}
