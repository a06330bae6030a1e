//! What the proxy core lets a request cost: hops and forks (Max-Forwards,
//! RFC 5393 Max-Breadth), and server transactions in total and per source
//! address, shared by every shard of the process (the `[proxy]` section).
//!
//! A spoofed request costs a transaction for as long as its timers run; a
//! source (or a flood from many) past its share is answered 503 without
//! one, and trusted sources are not counted per source.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Deserialize;

/// The `[proxy]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyLimits {
    /// A request arriving with more Max-Forwards is lowered to this
    /// (RFC 3261 §16.6 step 3 lets a proxy do so; 70 is the value UAs start
    /// with), so that a loop ends after as many hops whatever the caller
    /// asked.
    pub max_forwards: u32,
    /// RFC 5393 Max-Breadth: the parallel branches a request and the
    /// requests forked from it may have in all, across every hop; also
    /// the value given to requests arriving without one.
    pub max_breadth: u32,
    /// Server transactions alive in the whole process.
    pub max_transactions: usize,
    /// Server transactions alive for one source address (trusted sources
    /// are not counted).
    pub max_transactions_per_source: usize,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        ProxyLimits {
            max_forwards: 70,
            max_breadth: 60,
            max_transactions: 200_000,
            max_transactions_per_source: 2_000,
        }
    }
}

impl ProxyLimits {
    /// The checks serde cannot express; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        if self.max_forwards == 0 {
            return Err("[proxy] max_forwards must be above 0".into());
        }
        if self.max_breadth == 0 {
            return Err("[proxy] max_breadth must be above 0".into());
        }
        if self.max_transactions == 0 || self.max_transactions_per_source == 0 {
            return Err(
                "[proxy] max_transactions and max_transactions_per_source must be above 0".into(),
            );
        }
        Ok(())
    }
}

/// Why a new transaction was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The process holds `max_transactions`.
    Total,
    /// The source holds `max_transactions_per_source`.
    Source,
}

/// The limits and the transactions counted against them.
#[derive(Debug, Default)]
pub struct Admission {
    pub limits: ProxyLimits,
    total: AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

impl Admission {
    pub fn new(limits: ProxyLimits) -> Admission {
        Admission {
            limits,
            ..Admission::default()
        }
    }

    /// Counts a new server transaction of `source` (None: a trusted
    /// source, counted in the total only), or says why it may not have one.
    pub fn admit(&self, source: Option<IpAddr>) -> Result<(), Refused> {
        let total = self.total.fetch_add(1, Ordering::Relaxed);
        if total >= self.limits.max_transactions {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Total);
        }
        if let Some(ip) = source {
            let mut per_source = self
                .per_source
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = per_source.entry(ip).or_insert(0);
            if *n >= self.limits.max_transactions_per_source {
                drop(per_source);
                self.total.fetch_sub(1, Ordering::Relaxed);
                return Err(Refused::Source);
            }
            *n += 1;
        }
        Ok(())
    }

    /// A transaction counted by [`Admission::admit`] ended.
    pub fn release(&self, source: Option<IpAddr>) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = source {
            let mut per_source = self
                .per_source
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = per_source.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_source.remove(&ip);
                }
            }
        }
    }

    /// Server transactions alive in the process.
    pub fn transactions(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_past_its_share_is_refused_and_the_total_bounds_everyone() {
        let admission = Admission::new(ProxyLimits {
            max_transactions: 3,
            max_transactions_per_source: 2,
            ..ProxyLimits::default()
        });
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert_eq!(admission.admit(Some(a)), Ok(()));
        assert_eq!(admission.admit(Some(a)), Ok(()));
        assert_eq!(admission.admit(Some(a)), Err(Refused::Source));
        assert_eq!(admission.admit(Some(b)), Ok(()));
        assert_eq!(admission.admit(None), Err(Refused::Total));
        assert_eq!(admission.transactions(), 3);
        admission.release(Some(a));
        assert_eq!(admission.admit(None), Ok(()));
        admission.release(None);
        admission.release(Some(a));
        admission.release(Some(b));
        assert_eq!(admission.transactions(), 0);
        assert!(admission.per_source.lock().expect("lock").is_empty());
    }
}
