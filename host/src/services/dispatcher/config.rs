//! A tenant's `dispatcher` section: its destination sets (Kamailio's
//! `dispatcher.list`) and how they are probed (the `ds_ping_*` and
//! `ds_probing_*` modparams), with the checks serde cannot express.

use serde::Deserialize;

use crate::sip::{Scheme, Uri};

/// Sets one tenant may have, and destinations one set may have: probing
/// and selection stay bounded whatever the file says.
pub const MAX_SETS: usize = 256;
pub const MAX_DESTINATIONS: usize = 64;
/// The shortest probe interval: a probe storm is not a health check.
pub const MIN_PROBE_INTERVAL_MS: u64 = 100;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// How often every destination is sent an OPTIONS (`ds_ping_interval`);
    /// 0 (the default, as in Kamailio): never, destinations change state
    /// only by `mark`.
    pub probe_interval_ms: u64,
    /// How long a probe waits for an answer before it counts as failed;
    /// at most the interval.
    pub probe_timeout_ms: u64,
    /// Failed probes in a row that take a destination down
    /// (`ds_probing_threshold`).
    pub probe_threshold: u32,
    /// The From URI of the probes (`ds_ping_from`).
    pub probe_from: String,
    /// The destination sets.
    pub set: Vec<SetConfig>,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            probe_interval_ms: 0,
            probe_timeout_ms: 1000,
            probe_threshold: 1,
            probe_from: "sip:dispatcher@localhost".into(),
            set: Vec::new(),
        }
    }
}

/// One set: an id (Kamailio's set number) and its destinations.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    pub id: u32,
    pub destinations: Vec<DestinationConfig>,
}

/// One destination of a set: a line of `dispatcher.list`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// A SIP URI, e.g. `sip:10.0.0.1:5060` or `sip:gw.example.com;transport=tcp`.
    pub uri: String,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub priority: i32,
    /// Free text handed back to the routing with the destination.
    #[serde(default)]
    pub attrs: String,
    /// Whether it is probed (when the tenant probes at all). Only UDP
    /// destinations are: the others never go down by probing.
    #[serde(default = "yes")]
    pub probe: bool,
    /// Starts disabled (Kamailio's flag 1): not selected until marked up.
    #[serde(default)]
    pub disabled: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl DispatcherConfig {
    /// Whether anything of this tenant is probed.
    pub fn probes(&self) -> bool {
        self.probe_interval_ms > 0
            && self
                .set
                .iter()
                .any(|s| s.destinations.iter().any(|d| d.probe))
    }

    /// What serde cannot check; the message names the key at fault.
    pub fn check(&self) -> Result<(), String> {
        if self.probe_interval_ms != 0 && self.probe_interval_ms < MIN_PROBE_INTERVAL_MS {
            return Err(format!(
                "probe_interval_ms must be 0 (no probing) or at least {MIN_PROBE_INTERVAL_MS}"
            ));
        }
        if self.probe_timeout_ms == 0 {
            return Err("probe_timeout_ms must be above 0".into());
        }
        if self.probe_threshold == 0 {
            return Err("probe_threshold must be above 0".into());
        }
        match Uri::parse(&self.probe_from) {
            Ok(uri) if uri.is_sip() => {}
            _ => return Err(format!("probe_from {:?} is not a SIP URI", self.probe_from)),
        }
        if self.set.len() > MAX_SETS {
            return Err(format!("set: more than {MAX_SETS} sets"));
        }
        for (i, set) in self.set.iter().enumerate() {
            if self.set[..i].iter().any(|s| s.id == set.id) {
                return Err(format!("set: id {} is used twice", set.id));
            }
            if set.destinations.len() > MAX_DESTINATIONS {
                return Err(format!(
                    "set {}: more than {MAX_DESTINATIONS} destinations",
                    set.id
                ));
            }
            for (j, d) in set.destinations.iter().enumerate() {
                check_uri(&d.uri).map_err(|err| format!("set {}: {err}", set.id))?;
                if set.destinations[..j].iter().any(|o| o.uri == d.uri) {
                    return Err(format!("set {}: {} is listed twice", set.id, d.uri));
                }
                if d.attrs.contains(['\r', '\n']) {
                    return Err(format!(
                        "set {}: attrs of {} hold a line break",
                        set.id, d.uri
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A destination must be a SIP URI a relay can go to, written without
/// spaces (the transaction keeps the failover list as text).
fn check_uri(text: &str) -> Result<(), String> {
    let uri = Uri::parse(text).map_err(|_| format!("{text:?} is not a SIP URI"))?;
    if !uri.is_sip() || text.contains(char::is_whitespace) {
        return Err(format!("{text:?} is not a SIP URI"));
    }
    if uri.scheme != Scheme::Sip && uri.scheme != Scheme::Sips {
        return Err(format!("{text:?} is not a SIP URI"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DispatcherConfig {
        toml::from_str(text).expect("dispatcher section")
    }

    #[test]
    fn sets_parse_with_defaults() {
        let config = parse(
            "probe_interval_ms = 500\n\
             [[set]]\nid = 1\ndestinations = [\
               { uri = \"sip:127.0.0.1:5080\" },\
               { uri = \"sip:gw.example.com;transport=tcp\", weight = 3, priority = 2, attrs = \"a=1\" },\
             ]\n",
        );
        assert_eq!(config.check(), Ok(()));
        assert!(config.probes());
        let d = &config.set[0].destinations;
        assert_eq!((d[0].weight, d[0].priority, d[0].probe), (1, 0, true));
        assert_eq!(
            (d[1].weight, d[1].priority, d[1].attrs.as_str()),
            (3, 2, "a=1")
        );
        assert!(!DispatcherConfig::default().probes());
    }

    #[test]
    fn bad_sections_are_refused_with_the_key() {
        let bad = |text: &str| parse(text).check().unwrap_err();
        assert_eq!(
            bad("[[set]]\nid = 1\ndestinations = [{ uri = \"http://x\" }]"),
            "set 1: \"http://x\" is not a SIP URI"
        );
        assert_eq!(
            bad("[[set]]\nid = 1\ndestinations = []\n[[set]]\nid = 1\ndestinations = []"),
            "set: id 1 is used twice"
        );
        assert_eq!(
            bad("[[set]]\nid = 2\ndestinations = [{ uri = \"sip:a\" }, { uri = \"sip:a\" }]"),
            "set 2: sip:a is listed twice"
        );
        assert!(bad("probe_interval_ms = 10").starts_with("probe_interval_ms"));
        assert!(bad("probe_threshold = 0").starts_with("probe_threshold"));
    }
}
