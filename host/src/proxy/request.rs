//! What the proxy core works on: a request being routed with the routing
//! state the hooks build up, where it came from, and what the hooks decide.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::sip::{HeaderName, Message};
use crate::transport::{Inbound, Transport};

/// The request a hook is working on (the `request` resource of the WIT).
#[derive(Clone)]
pub struct RequestCtx {
    pub msg: Message,
    /// Where it came from.
    pub source: Source,
    /// Max-Forwards was already checked and decremented.
    pub max_forwards_done: bool,
    /// The guest asked for Record-Route; it is added when the request is
    /// sent, with the address of the socket it leaves by.
    pub record_route: bool,
    /// Extra branches for the next relay (`append-branch`, `lookup`).
    pub branches: Vec<BranchTarget>,
    /// Where the first branch goes when the guest names no destination
    /// (Kamailio's `$du`, set by `registrar.lookup` for a NAT binding).
    pub dst_uri: Option<String>,
    /// Route set put in front of the first branch (a binding's Path).
    pub path: Vec<String>,
    /// Final-response timers of the relay (INVITE, others): the route's
    /// `relay` decision, else the tenant's params.
    pub fr_timers: Option<(Duration, Duration)>,
    /// The loop-detection hash of the request as received (RFC 3261
    /// §16.6 step 8), carried in the branch of what we send for it.
    pub loop_hash: u32,
    /// Loose routing followed a Route entry we record-routed for this
    /// dialog (its integrity tag checked).
    pub route_verified: bool,
    /// A digest authorization of the request succeeded.
    pub authenticated: bool,
    /// The request's size as received, in bytes.
    pub received_len: usize,
}

impl RequestCtx {
    pub fn new(msg: Message, source: Source) -> Self {
        RequestCtx {
            msg,
            source,
            max_forwards_done: false,
            record_route: false,
            branches: Vec::new(),
            dst_uri: None,
            path: Vec::new(),
            fr_timers: None,
            loop_hash: 0,
            route_verified: false,
            authenticated: false,
            received_len: 0,
        }
    }
}

/// One extra branch of a relay: its Request-URI and, from a location
/// binding, where to send it and the Route set (Path) to put in front.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BranchTarget {
    pub uri: String,
    pub destination: Option<String>,
    pub path: Vec<String>,
}

/// Variables of one transaction, kept across its hooks (a flag is a
/// variable that is set), with the hooks it arms and the accounting it
/// asks of the host.
#[derive(Debug, Default, Clone)]
pub struct TxVars {
    pub values: BTreeMap<String, String>,
    /// The hooks the transaction runs besides route (`proxy.arm`); none
    /// until a hook arms some: then every hook runs, as before the
    /// contract had `arm`.
    pub armed: Option<Armed>,
    /// The records the host writes when the transaction ends
    /// (`acc.account`).
    pub accounted: Accounted,
}

impl TxVars {
    /// Whether the transaction runs `hook`.
    pub fn runs(&self, hook: Hook) -> bool {
        self.armed.is_none_or(|armed| armed.has(hook))
    }
}

/// A hook of a relayed transaction other than route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    OnReply,
    OnFailure,
    OnBranch,
}

/// A set of [`Hook`]s (Kamailio's `t_on_reply`, `t_on_failure`,
/// `t_on_branch`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Armed {
    pub on_reply: bool,
    pub on_failure: bool,
    pub on_branch: bool,
}

impl Armed {
    pub fn has(self, hook: Hook) -> bool {
        match hook {
            Hook::OnReply => self.on_reply,
            Hook::OnFailure => self.on_failure,
            Hook::OnBranch => self.on_branch,
        }
    }
}

/// What the host accounts by itself when a relayed transaction's final
/// answer goes upstream (Kamailio's acc flags).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Accounted {
    /// A 2xx: `start` for an INVITE, `stop` for a BYE (`log_flag`).
    pub answered: bool,
    /// Above 299: `failed` (`log_missed_flag`, `failed_transaction_flag`).
    pub failed: bool,
}

impl Accounted {
    /// Whether a final answer with `code` is to be recorded.
    pub fn records(self, code: u16) -> bool {
        match code {
            200..=299 => self.answered,
            300.. => self.failed,
            _ => false,
        }
    }
}

/// The transport-level origin of a message.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub transport: Transport,
    pub remote: std::net::SocketAddr,
    pub listener: usize,
    /// Whether `remote` is one of the configured trusted sources: exempt
    /// from per-source limits, and trusted by routing without proof.
    pub trusted: bool,
}

impl From<&Inbound> for Source {
    fn from(inbound: &Inbound) -> Self {
        Source {
            transport: inbound.transport,
            remote: inbound.remote,
            listener: inbound.listener,
            trusted: false,
        }
    }
}

/// What a hook decided, carried out by the proxy core after the hook
/// returns (hooks are synchronous; sending is not theirs to do).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Reply {
        code: u16,
        reason: String,
        headers: Vec<(HeaderName, String)>,
    },
    /// Stateless forward (the route's `forward` decision).
    Forward { destination: Option<String> },
    /// Stateful relay (a `relay` decision).
    Relay { destination: Option<String> },
}
