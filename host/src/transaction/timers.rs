//! The timer values of RFC 3261 §17 (table 4 of Appendix A) and RFC 6026.
//!
//! `T1`, `T2` and `T4` are the base values; every lettered timer derives
//! from them unless set on its own. In a config file they are a `[timers]`
//! section of millisecond fields, all optional:
//!
//! ```toml
//! [timers]
//! t1_ms = 500    # RTT estimate; A, E, G start here; B, F, H, J, L, M = 64*T1
//! t2_ms = 4000   # cap of the E and G intervals (non-INVITE / response retransmits)
//! t4_ms = 5000   # max time a message stays in the network; I, K = T4
//! d_ms = 32000   # Timer D: wait in Completed for final retransmissions
//! ```
//!
//! Derived defaults follow an overridden base: `t1_ms = 100` alone makes
//! B, F, H, J, L and M 6.4 s. Timers D, I, J and K apply to unreliable
//! transports only; on a stream transport they are zero (RFC 3261 §17).

use std::time::Duration;

use serde::Deserialize;

/// Timer values. Build with [`Timers::default`], [`Timers::from_base`] or
/// from the config section; fields may be changed afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "TimersConfig")]
pub struct Timers {
    /// RTT estimate (500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE
    /// responses (4 s).
    pub t2: Duration,
    /// Maximum duration a message remains in the network (5 s).
    pub t4: Duration,
    /// First INVITE request retransmit interval, doubling without cap (T1).
    pub a: Duration,
    /// INVITE client transaction timeout in Calling (64*T1).
    pub b: Duration,
    /// Wait time for response retransmits, INVITE client, UDP (32 s).
    pub d: Duration,
    /// First non-INVITE request retransmit interval, doubling up to T2 (T1).
    pub e: Duration,
    /// Non-INVITE client transaction timeout (64*T1).
    pub f: Duration,
    /// First INVITE response retransmit interval, doubling up to T2 (T1).
    pub g: Duration,
    /// Wait time for ACK receipt (64*T1).
    pub h: Duration,
    /// Wait time for ACK retransmits, UDP (T4).
    pub i: Duration,
    /// Wait time for non-INVITE request retransmits, UDP (64*T1).
    pub j: Duration,
    /// Wait time for non-INVITE response retransmits, UDP (T4).
    pub k: Duration,
    /// Wait time for INVITE retransmits after a 2xx, server (RFC 6026, 64*T1).
    pub l: Duration,
    /// Wait time for 2xx retransmits, client (RFC 6026, 64*T1).
    pub m: Duration,
}

impl Timers {
    /// Every timer derived from the three base values as RFC 3261 table 4
    /// and RFC 6026 say (D is 32 s, independent of T1).
    pub fn from_base(t1: Duration, t2: Duration, t4: Duration) -> Timers {
        let t64 = t1.saturating_mul(64);
        Timers {
            t1,
            t2,
            t4,
            a: t1,
            b: t64,
            d: Duration::from_secs(32),
            e: t1,
            f: t64,
            g: t1,
            h: t64,
            i: t4,
            j: t64,
            k: t4,
            l: t64,
            m: t64,
        }
    }
}

impl Default for Timers {
    fn default() -> Timers {
        Timers::from_base(
            Duration::from_millis(500),
            Duration::from_secs(4),
            Duration::from_secs(5),
        )
    }
}

/// Invalid `[timers]` values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimersError {
    #[error("timer {0} must be above 0 ms")]
    Zero(&'static str),
    #[error("t2_ms must not be below t1_ms")]
    T2BelowT1,
}

/// The `[timers]` config section as written: milliseconds, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimersConfig {
    t1_ms: Option<u64>,
    t2_ms: Option<u64>,
    t4_ms: Option<u64>,
    a_ms: Option<u64>,
    b_ms: Option<u64>,
    d_ms: Option<u64>,
    e_ms: Option<u64>,
    f_ms: Option<u64>,
    g_ms: Option<u64>,
    h_ms: Option<u64>,
    i_ms: Option<u64>,
    j_ms: Option<u64>,
    k_ms: Option<u64>,
    l_ms: Option<u64>,
    m_ms: Option<u64>,
}

impl TryFrom<TimersConfig> for Timers {
    type Error = TimersError;

    fn try_from(c: TimersConfig) -> Result<Timers, TimersError> {
        let d = Timers::default();
        let ms = Duration::from_millis;
        let t1 = c.t1_ms.map_or(d.t1, ms);
        let t2 = c.t2_ms.map_or(d.t2, ms);
        let t4 = c.t4_ms.map_or(d.t4, ms);
        let base = Timers::from_base(t1, t2, t4);
        let pick = |v: Option<u64>, dflt: Duration| v.map_or(dflt, ms);
        let t = Timers {
            a: pick(c.a_ms, base.a),
            b: pick(c.b_ms, base.b),
            d: pick(c.d_ms, base.d),
            e: pick(c.e_ms, base.e),
            f: pick(c.f_ms, base.f),
            g: pick(c.g_ms, base.g),
            h: pick(c.h_ms, base.h),
            i: pick(c.i_ms, base.i),
            j: pick(c.j_ms, base.j),
            k: pick(c.k_ms, base.k),
            l: pick(c.l_ms, base.l),
            m: pick(c.m_ms, base.m),
            ..base
        };
        // Retransmit intervals of zero would retransmit forever at once;
        // timeouts of zero would end transactions before any answer.
        for (name, v) in [
            ("t1_ms", t.t1),
            ("t2_ms", t.t2),
            ("a_ms", t.a),
            ("b_ms", t.b),
            ("e_ms", t.e),
            ("f_ms", t.f),
            ("g_ms", t.g),
            ("h_ms", t.h),
        ] {
            if v.is_zero() {
                return Err(TimersError::Zero(name));
            }
        }
        if t.t2 < t.t1 {
            return Err(TimersError::T2BelowT1);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let t = Timers::default();
        assert_eq!(t.t1, Duration::from_millis(500));
        assert_eq!(t.t2, Duration::from_secs(4));
        assert_eq!(t.t4, Duration::from_secs(5));
        assert_eq!((t.a, t.e, t.g), (t.t1, t.t1, t.t1));
        for v in [t.b, t.f, t.h, t.j, t.l, t.m] {
            assert_eq!(v, Duration::from_secs(32));
        }
        assert_eq!(t.d, Duration::from_secs(32));
        assert_eq!((t.i, t.k), (t.t4, t.t4));
    }

    #[test]
    fn config_section() {
        let t: Timers = toml::from_str("").unwrap();
        assert_eq!(t, Timers::default());
        let t: Timers = toml::from_str("t1_ms = 100\nk_ms = 1234").unwrap();
        assert_eq!(t.t1, Duration::from_millis(100));
        assert_eq!(t.a, Duration::from_millis(100));
        assert_eq!(t.b, Duration::from_millis(6400));
        assert_eq!(t.k, Duration::from_millis(1234));
        assert_eq!(t.i, Duration::from_secs(5));
        assert_eq!(t.d, Duration::from_secs(32));
        let err = toml::from_str::<Timers>("t3_ms = 1").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        assert!(toml::from_str::<Timers>("t1_ms = 0").is_err());
        assert!(toml::from_str::<Timers>("t1_ms = 5000").is_err());
        assert!(toml::from_str::<Timers>("t1_ms = \"5\"").is_err());
        // Zero cleanup timers are allowed: they end transactions at once.
        let t: Timers = toml::from_str("d_ms = 0").unwrap();
        assert!(t.d.is_zero());
    }
}
