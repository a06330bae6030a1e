//! The case file format (TOML), as `serde` reads it. docs/testing-routing.md
//! is its reference; every name here is spelled there.
//!
//! Unknown keys are refused (`deny_unknown_fields`): a misspelt
//! expectation must not pass silently as one that is not checked.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One case file: the tenant, the state its services start with, and the
/// cases, run in order on that state.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CaseFile {
    /// The tenant's name (what its services are keyed by); "test".
    pub tenant: Option<String>,
    /// Tenant params (`params = { WITH_AUTH = "yes" }`, as in the
    /// configuration); booleans and numbers are taken as their text.
    #[serde(default)]
    pub params: BTreeMap<String, ParamValue>,
    /// The tenant's `domains`: local for its routing (`is-myself`).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Names of the proxy (`aliases` of the configuration).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The proxy's listeners, `transport:ip:port`; default
    /// `udp:192.0.2.1:5060` and `tcp:192.0.2.1:5060`.
    pub listen: Option<Vec<String>>,
    /// Trusted sources (`trusted` of the configuration); default
    /// loopback, as wisp's.
    pub trusted: Option<Vec<String>>,
    #[serde(default, rename = "subscriber")]
    pub subscribers: Vec<Subscriber>,
    #[serde(default, rename = "registration")]
    pub registrations: Vec<Registration>,
    /// Keys of the tenant's key-value store.
    #[serde(default)]
    pub kv: BTreeMap<String, String>,
    #[serde(default, rename = "case")]
    pub cases: Vec<Case>,
}

/// A tenant param as written: text, or a boolean or number taken as text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Text(String),
    Bool(bool),
    Integer(i64),
}

impl ParamValue {
    pub fn text(&self) -> String {
        match self {
            ParamValue::Text(s) => s.clone(),
            ParamValue::Bool(b) => b.to_string(),
            ParamValue::Integer(n) => n.to_string(),
        }
    }
}

/// A subscriber, as `wisp user add USER@DOMAIN PASSWORD` stores it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Subscriber {
    pub user: String,
    /// The domain, also the digest realm.
    pub domain: String,
    pub password: String,
}

/// A binding in the location service, as a REGISTER would have saved it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Registration {
    /// The address of record: `bob`, `bob@example.com` or a SIP URI
    /// (bindings are keyed by the user part).
    pub aor: String,
    /// The contact URI.
    pub contact: String,
    /// Seconds from now; default 3600.
    pub expires: Option<u32>,
    /// Default 1.0.
    pub q: Option<f32>,
    /// Path header values (RFC 3327), in order.
    #[serde(default)]
    pub path: Vec<String>,
    /// Where the REGISTER came from (`udp:ip:port`, or a URI), kept for a
    /// UA behind NAT: requests to the binding are sent there.
    pub received: Option<String>,
    /// Registered from behind NAT (`save` with the nat flag).
    #[serde(default)]
    pub nat: bool,
    /// The methods the UA allows (its Allow header); default any.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Which hook a case runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    #[default]
    Route,
    OnReply,
    OnFailure,
    OnBranch,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Route => "route",
            Hook::OnReply => "on-reply",
            Hook::OnFailure => "on-failure",
            Hook::OnBranch => "on-branch",
        }
    }
}

/// One case: a message in, a hook run, what is expected of it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub hook: Hook,
    /// The request, as SIP text (LF line ends are fine).
    pub message: Option<String>,
    /// Or: a capture file (pcap or pcapng), relative to the case file...
    pub pcap: Option<String>,
    /// ... and the number of the packet in it, from 1 (as Wireshark and
    /// sngrep count).
    pub packet: Option<usize>,
    /// Where the request came from: `udp:198.51.100.7:5060`; default the
    /// capture's source, else `udp:192.0.2.100:5060`.
    pub source: Option<String>,
    /// Whether missing Via, From, To, Call-ID and CSeq are filled in;
    /// default true (false to test a request that lacks them).
    pub complete: Option<bool>,
    /// Digest credentials computed by the harness against the last
    /// challenge of this file, added to the request.
    pub auth: Option<Auth>,
    /// For on-reply and on-failure: the response, as a status code or as
    /// SIP text.
    pub response: Option<ResponseSpec>,
    /// Where the response came from (on-reply); default
    /// `udp:192.0.2.200:5060`.
    pub response_source: Option<String>,
    /// For on-branch: the branch's index; default 0.
    pub branch: Option<u32>,
    /// Transaction variables set before the hook.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    pub expect: Expect,
}

/// Credentials to add: `auth = { user = "alice" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Auth {
    pub user: String,
    /// Default: the password of the subscriber `user` in the challenge's
    /// realm.
    pub password: Option<String>,
    /// MD5 or SHA-256; default the first the challenge offers.
    pub algorithm: Option<String>,
}

/// The response of an on-reply or on-failure case.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ResponseSpec {
    Code(u16),
    Text(String),
}

/// What a case expects. At most one decision (`reply`, `relay`,
/// `forward`, `drop`, `upstream`, `keep`); the other fields check what
/// they name and nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Expect {
    /// The hook replies (or on-failure answers) with this code.
    pub reply: Option<u16>,
    /// ... and this reason phrase.
    pub reason: Option<String>,
    /// ... and these headers in the reply.
    #[serde(default)]
    pub reply_headers: BTreeMap<String, HeaderExpect>,
    /// The hook relays (true), to these branches (their Request-URIs, or
    /// tables with `uri`, `next-hop`, `route`).
    pub relay: Option<RelayExpect>,
    /// Where the first branch goes: the relay's destination, else the
    /// destination a lookup or loose-route set, else the first Route,
    /// else the Request-URI.
    pub next_hop: Option<String>,
    /// The relay's timers as the host applies them, in milliseconds.
    pub invite_timeout: Option<u32>,
    pub final_timeout: Option<u32>,
    /// The hook forwards statelessly (true), to this destination.
    pub forward: Option<ForwardExpect>,
    /// The route hook drops the request; on-reply drops the response.
    pub drop: Option<bool>,
    /// On-failure sends the best response upstream.
    pub upstream: Option<bool>,
    /// On-reply keeps the response.
    pub keep: Option<bool>,
    /// The Request-URI after the hook.
    pub uri: Option<String>,
    /// Headers of the request after the hook (as relayed).
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderExpect>,
    /// Headers of the response after on-reply or on-failure.
    #[serde(default)]
    pub response_headers: BTreeMap<String, HeaderExpect>,
    /// Transaction variables after the hook.
    #[serde(default)]
    pub vars: BTreeMap<String, VarExpect>,
    /// The hooks the transaction runs after this one (`proxy.arm`), by
    /// their WIT names: exactly these.
    pub hooks: Option<Vec<String>>,
    /// What the host accounts when the transaction ends (`acc.account`),
    /// by the flags' WIT names: exactly these.
    pub accounted: Option<Vec<String>>,
    /// Lines the hook logged: each string is contained in one of them
    /// (`level: message`).
    #[serde(default)]
    pub log: Vec<String>,
}

/// A header expectation: present (true), absent (false), its value
/// (every value, comma-joined), or a table `{ contains = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderExpect {
    Present(bool),
    Value(String),
    Number(i64),
    Contains { contains: String },
}

/// A relay expectation: any relay, or these branches.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RelayExpect {
    Any(bool),
    Targets(Vec<TargetExpect>),
}

/// One branch: its Request-URI, or a table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TargetExpect {
    Uri(String),
    Full(TargetTable),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TargetTable {
    pub uri: String,
    pub next_hop: Option<String>,
    /// The branch's Route set from a binding's Path.
    pub route: Option<Vec<String>>,
}

impl TargetExpect {
    pub fn uri(&self) -> &str {
        match self {
            TargetExpect::Uri(uri) => uri,
            TargetExpect::Full(t) => &t.uri,
        }
    }
}

/// A forward expectation: any, or to this destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ForwardExpect {
    Any(bool),
    To(String),
}

/// A variable expectation: set (true), unset (false), or this value.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum VarExpect {
    Set(bool),
    Value(String),
}

impl Expect {
    /// The decisions asked for, by name (more than one is a mistake in
    /// the file).
    pub fn decisions(&self) -> Vec<&'static str> {
        let mut named = Vec::new();
        if self.reply.is_some() {
            named.push("reply");
        }
        if self.relay.is_some() {
            named.push("relay");
        }
        if self.forward.is_some() {
            named.push("forward");
        }
        if self.drop.is_some() {
            named.push("drop");
        }
        if self.upstream.is_some() {
            named.push("upstream");
        }
        if self.keep.is_some() {
            named.push("keep");
        }
        named
    }
}

/// Reads a case file's text; the error says where and what.
pub fn parse(text: &str) -> Result<CaseFile, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_file_reads_and_unknown_keys_are_refused() {
        let file = parse(
            r#"
params = { WITH_AUTH = true, MAX_FORWARDS = 5 }
domains = ["example.com"]

[[subscriber]]
user = "alice"
domain = "example.com"
password = "secret"

[[case]]
name = "options"
message = """
OPTIONS sip:example.com SIP/2.0
"""
expect = { reply = 200, headers = { Route = false, Max-Forwards = 69 } }
"#,
        )
        .expect("parses");
        assert_eq!(file.params["WITH_AUTH"].text(), "true");
        assert_eq!(file.params["MAX_FORWARDS"].text(), "5");
        assert_eq!(file.cases.len(), 1);
        assert_eq!(file.cases[0].expect.decisions(), vec!["reply"]);

        let err = parse("[[case]]\nname = \"x\"\nmessage = \"\"\nexpect = { replied = 200 }\n")
            .expect_err("misspelt");
        assert!(err.contains("replied"), "{err}");
    }

    /// The bundled routing's cases read, whatever the routing does.
    #[test]
    fn the_bundled_routings_cases_read() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/default/cases");
        let mut read = 0;
        for entry in std::fs::read_dir(&dir).expect("guests/default/cases") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).expect("read");
                let file = parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(!file.cases.is_empty(), "{}", path.display());
                for case in &file.cases {
                    assert!(
                        case.expect.decisions().len() <= 1,
                        "{}: {}",
                        path.display(),
                        case.name
                    );
                }
                read += 1;
            }
        }
        assert!(read >= 9, "{read} files");
    }
}
