//! The location service (RFC 3261 §10.3; Kamailio's registrar and usrloc):
//! bindings of an address of record to contacts, saved from REGISTER and
//! looked up to route requests to a user.
//!
//! An address of record is keyed by the tenant and the user part of the
//! To URI (Kamailio's `use_domain = 0`).
//!
//! The bindings live in memory ([`Location`], `table.rs`): each tenant's
//! split in shards by a keyed hash of the address of record, each shard
//! behind a lock of its own. A REGISTER is read, checked and applied on
//! the thread that runs the hook, under its shard's lock, and a lookup
//! reads the same table: neither waits for the database nor for another
//! thread (usrloc's `db_mode = 2`, write-back).
//!
//! Durability. A binding saved with the `persistent` flag is written to
//! the database by the writer thread within `[storage]
//! location_write_interval_ms` (1 s by default) of its change
//! (`behind.rs`): the addresses of record changed since the last write are
//! remembered, and each write replaces their rows with what memory holds
//! then. The bindings in the database are loaded back at start, and a
//! clean shutdown (SIGINT, SIGTERM) writes what is left. A crash (the
//! process killed, the machine down) loses the changes of the last
//! interval: a UA that registered, refreshed or unregistered in it is
//! back to its binding of before, until it registers again (at most its
//! expiry later). A binding saved without `persistent` never reaches the
//! database and is gone when the process stops. Expired bindings are
//! purged from memory every 10 s and whenever a REGISTER of their address
//! of record or a tenant's `max_aors` count needs it; lookups never see
//! them.

mod behind;
mod shared;
mod table;

pub use behind::{drop_volatile, purge_expired};
pub use table::{Location, DEFAULT_WRITE_INTERVAL};

use std::time::{SystemTime, UNIX_EPOCH};

use super::storage::StorageError;
use crate::sip::write::push_decimal;
use crate::sip::{HeaderName, Message, NameAddr};

/// Seconds a REGISTER refused while the database is too far behind is
/// told to wait.
const RETRY_AFTER_SECONDS: u32 = 5;

/// How `save` treats a REGISTER (see the `registrar` WIT interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    pub persistent: bool,
    pub nat: bool,
    pub default_expires: u32,
    pub min_expires: u32,
    pub max_expires: u32,
    pub max_contacts: u32,
    /// Addresses of record the tenant may have at once; 0: no limit.
    pub max_aors: u32,
}

impl Default for SaveOptions {
    /// Kamailio's registrar defaults.
    fn default() -> Self {
        SaveOptions {
            persistent: true,
            nat: false,
            default_expires: 3600,
            min_expires: 60,
            max_expires: 3600,
            max_contacts: 0,
            max_aors: 0,
        }
    }
}

/// One contact bound to an address of record.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The contact URI.
    pub contact: String,
    /// When it expires, in seconds since the Unix epoch.
    pub expires: i64,
    pub q: f32,
    pub call_id: String,
    pub cseq: u32,
    /// Path header values (RFC 3327), in order.
    pub path: Vec<String>,
    /// Where the REGISTER came from, as a destination URI, for a UA
    /// behind NAT.
    pub received: Option<String>,
    pub user_agent: String,
    /// Methods from the REGISTER's Allow header; empty: any.
    pub methods: Vec<String>,
    pub nat: bool,
    /// The `+sip.instance` the UA gave (RFC 5626, quotes kept); empty: none.
    pub instance: String,
    /// The `reg-id` the UA gave (RFC 5626); 0: none.
    pub reg_id: u32,
    /// Saved with the `persistent` flag: written to the database, kept
    /// across a restart.
    pub persistent: bool,
}

/// Why a REGISTER is refused: the reply it calls for.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{0}")]
    BadRequest(String),
    /// 423 Interval Too Brief, with Min-Expires.
    #[error("expiry below the minimum of {0} s")]
    IntervalTooBrief(u32),
    #[error("more than {0} contacts")]
    TooManyContacts(u32),
    #[error("more than {0} addresses of record")]
    TooManyAors(u32),
    /// A REGISTER older than the binding it would change (RFC 3261 §10.3 step 7).
    #[error("out-of-order REGISTER")]
    OutOfOrder,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<rusqlite::Error> for SaveError {
    fn from(err: rusqlite::Error) -> Self {
        SaveError::Storage(err.into())
    }
}

impl SaveError {
    /// The reply: status, reason and extra headers.
    pub fn reply(&self) -> (u16, String, Vec<(HeaderName, String)>) {
        match self {
            SaveError::BadRequest(why) => (400, format!("Bad Request ({why})"), vec![]),
            SaveError::IntervalTooBrief(min) => (
                423,
                "Interval Too Brief".into(),
                vec![(HeaderName::Other("Min-Expires".into()), min.to_string())],
            ),
            SaveError::TooManyContacts(_) => (403, "Too Many Registered Contacts".into(), vec![]),
            SaveError::TooManyAors(_) => (403, "Too Many Registered Users".into(), vec![]),
            SaveError::OutOfOrder => (500, "Server Internal Error (out of order)".into(), vec![]),
            // The writer is behind and nothing was written: the UA may
            // retry shortly (RFC 3261 §21.5.4).
            SaveError::Storage(err) if err.is_overload() => (
                503,
                "Service Unavailable".into(),
                vec![(
                    HeaderName::Other("Retry-After".into()),
                    RETRY_AFTER_SECONDS.to_string(),
                )],
            ),
            SaveError::Storage(_) => (500, "Server Internal Error".into(), vec![]),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A Date header value (RFC 3261 §20.17, RFC 1123 form, always GMT).
pub fn http_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(month - 1) as usize];
    if !(1000..=9999).contains(&year) {
        return format!(
            "{weekday}, {day:02} {month} {year} {:02}:{:02}:{:02} GMT",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
    }
    // Every REGISTER's 200 carries one: put together without `fmt`.
    let two = |n: i64| [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
    let mut out = Vec::with_capacity(29);
    out.extend_from_slice(weekday.as_bytes());
    out.extend_from_slice(b", ");
    out.extend_from_slice(&two(day));
    out.push(b' ');
    out.extend_from_slice(month.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&two(year / 100));
    out.extend_from_slice(&two(year % 100));
    out.push(b' ');
    out.extend_from_slice(&two(secs / 3600));
    out.push(b':');
    out.extend_from_slice(&two(secs / 60 % 60));
    out.push(b':');
    out.extend_from_slice(&two(secs % 60));
    out.extend_from_slice(b" GMT");
    // ASCII only.
    String::from_utf8(out).unwrap_or_default()
}

/// The address-of-record key of a URI: its user part.
pub fn aor_of(uri: &crate::sip::Uri) -> Option<String> {
    uri.user.clone().filter(|u| !u.is_empty())
}

/// One Contact of a REGISTER, as asked.
struct Asked {
    uri: String,
    expires: u32,
    q: f32,
    instance: String,
    reg_id: u32,
}

/// The expiry a contact asks for: its `expires` param, else the Expires
/// header, else the default; 0 stays 0 (removal), anything else is
/// checked against the minimum and capped at the maximum.
pub fn effective_expires(
    param: Option<&str>,
    header: Option<u32>,
    opts: &SaveOptions,
) -> Result<u32, SaveError> {
    let asked = match param {
        Some(v) => parse_delta(v).ok_or_else(|| SaveError::BadRequest("bad expires".into()))?,
        None => header.unwrap_or(opts.default_expires),
    };
    if asked == 0 {
        return Ok(0);
    }
    if asked < opts.min_expires {
        return Err(SaveError::IntervalTooBrief(opts.min_expires));
    }
    Ok(asked.min(opts.max_expires.max(1)))
}

/// delta-seconds; values past 2^32-1 are taken as 2^32-1 (RFC 3261 §25.1).
fn parse_delta(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX)),
    )
}

/// The q value of a contact (0 to 1; default 1).
fn parse_q(v: Option<&str>) -> Result<f32, SaveError> {
    match v {
        None => Ok(1.0),
        Some(v) => v
            .trim()
            .parse::<f32>()
            .ok()
            .filter(|q| (0.0..=1.0).contains(q))
            .ok_or_else(|| SaveError::BadRequest("bad q".into())),
    }
}

/// What a REGISTER asks (RFC 3261 §10.3 steps 5–8), read and checked:
/// every refusal that does not depend on the stored bindings is found
/// here, before any lock is taken.
pub(crate) struct Register {
    pub(crate) aor: String,
    call_id: String,
    cseq: u32,
    /// None: `Contact: *` (remove every binding); empty: a query.
    contacts: Option<Vec<Asked>>,
    path: Vec<String>,
    received: Option<String>,
    user_agent: String,
    methods: Vec<String>,
    nat: bool,
    persistent: bool,
    max_contacts: u32,
    now: i64,
}

impl Register {
    /// Reads and checks the request. `received`, where it came from, is
    /// kept with the bindings when given (the caller gives it for a UA
    /// behind NAT or on a flow).
    pub(crate) fn read(
        req: &Message,
        received: Option<String>,
        opts: &SaveOptions,
        now: i64,
    ) -> Result<Register, SaveError> {
        let to = req
            .to()
            .map_err(|e| SaveError::BadRequest(e.reason().to_owned()))?;
        let aor = aor_of(&to.uri).ok_or_else(|| SaveError::BadRequest("no user in To".into()))?;
        let call_id = req.call_id().unwrap_or_default().to_owned();
        let cseq = req
            .cseq()
            .map_err(|e| SaveError::BadRequest(e.reason().to_owned()))?
            .seq;
        let header_expires = match req.header(&HeaderName::Expires) {
            Some(v) => {
                Some(parse_delta(v).ok_or_else(|| SaveError::BadRequest("bad Expires".into()))?)
            }
            None => None,
        };
        let mut star = false;
        let mut count = 0usize;
        for value in req.values(&HeaderName::Contact) {
            count += 1;
            star |= value.trim() == "*";
        }
        let contacts = if star {
            // Contact: * removes every binding, and only with Expires: 0 (§10.3 step 6).
            if count != 1 || header_expires != Some(0) {
                return Err(SaveError::BadRequest(
                    "Contact: * needs Expires: 0 and no other contact".into(),
                ));
            }
            None
        } else {
            let mut asked = Vec::with_capacity(count);
            for value in req.values(&HeaderName::Contact) {
                let contact = NameAddr::parse(value)
                    .map_err(|e| SaveError::BadRequest(format!("Contact: {}", e.reason())))?;
                let expires =
                    effective_expires(contact.param("expires").flatten(), header_expires, opts)?;
                let q = parse_q(contact.param("q").flatten())?;
                let reg_id = match contact.param("reg-id").flatten() {
                    None => 0,
                    Some(v) => v
                        .parse::<u32>()
                        .ok()
                        .filter(|id| *id > 0)
                        .ok_or_else(|| SaveError::BadRequest("bad reg-id".into()))?,
                };
                asked.push(Asked {
                    uri: contact.uri.to_text(),
                    expires,
                    q,
                    instance: contact
                        .param("+sip.instance")
                        .flatten()
                        .unwrap_or_default()
                        .to_owned(),
                    reg_id,
                });
            }
            Some(asked)
        };
        let path = req
            .values(&HeaderName::Path)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let methods = req
            .values(&HeaderName::Allow)
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .collect();
        Ok(Register {
            aor,
            call_id,
            cseq,
            contacts,
            path,
            received: received.filter(|r| !r.is_empty()),
            user_agent: req
                .header(&HeaderName::UserAgent)
                .unwrap_or_default()
                .to_owned(),
            methods,
            nat: opts.nat,
            persistent: opts.persistent,
            max_contacts: opts.max_contacts,
            now,
        })
    }

    /// Whether it may change the bindings (a query does not).
    pub(crate) fn changes(&self) -> bool {
        self.contacts.as_ref().is_none_or(|c| !c.is_empty())
    }

    /// Whether its bindings are to be kept across a restart.
    pub(crate) fn persistent(&self) -> bool {
        self.persistent
    }

    /// The bindings of the address of record once the REGISTER is
    /// applied to `stored` (those of before, expired ones included), or
    /// why it is refused; `stored` is left as it was either way. The
    /// bindings come sorted as [`sort`] leaves them.
    pub(crate) fn apply(&self, stored: &[Binding]) -> Result<Vec<Binding>, SaveError> {
        let Register {
            call_id, cseq, now, ..
        } = self;
        let live = || stored.iter().filter(|b| b.expires > *now);
        let Some(asked) = &self.contacts else {
            if live().any(|b| &b.call_id == call_id && b.cseq >= *cseq) {
                return Err(SaveError::OutOfOrder);
            }
            return Ok(Vec::new());
        };
        let mut work: Vec<Binding> = live().cloned().collect();
        for a in asked {
            let at = work.iter().position(|b| b.contact == a.uri);
            if let Some(i) = at {
                if &work[i].call_id == call_id && work[i].cseq >= *cseq {
                    return Err(SaveError::OutOfOrder);
                }
            }
            // RFC 5626 §6: a UA's instance and reg-id name one flow; a
            // REGISTER over a new one (a new Contact, often) replaces it.
            if !a.instance.is_empty() && a.reg_id > 0 {
                work.retain(|b| {
                    b.instance != a.instance || b.reg_id != a.reg_id || b.contact == a.uri
                });
            }
            let at = work.iter().position(|b| b.contact == a.uri);
            if a.expires == 0 {
                if let Some(i) = at {
                    work.swap_remove(i);
                }
                continue;
            }
            let binding = Binding {
                contact: a.uri.clone(),
                expires: now + i64::from(a.expires),
                q: a.q,
                call_id: call_id.clone(),
                cseq: *cseq,
                path: self.path.clone(),
                received: self.received.clone(),
                user_agent: self.user_agent.clone(),
                methods: self.methods.clone(),
                nat: self.nat,
                instance: a.instance.clone(),
                reg_id: a.reg_id,
                persistent: self.persistent,
            };
            match at {
                Some(i) => work[i] = binding,
                None => work.push(binding),
            }
        }
        if self.max_contacts > 0 && work.len() > self.max_contacts as usize {
            return Err(SaveError::TooManyContacts(self.max_contacts));
        }
        sort(&mut work);
        Ok(work)
    }
}

/// A lookup's order: highest q first, then the most recently refreshed
/// (the latest expiry), then by contact.
pub(crate) fn sort(bindings: &mut [Binding]) {
    bindings.sort_by(|a, b| {
        b.q.total_cmp(&a.q)
            .then(b.expires.cmp(&a.expires))
            .then_with(|| a.contact.cmp(&b.contact))
    });
}

/// The Contact values of a 200 OK to a REGISTER: each binding with the
/// seconds it has left.
pub fn reply_contacts(bindings: &[Binding], now: i64) -> Vec<(HeaderName, String)> {
    bindings
        .iter()
        .map(|b| {
            let left = (b.expires - now).max(0);
            let q = if (b.q - 1.0).abs() < f32::EPSILON {
                String::new()
            } else {
                format!(";q={}", b.q)
            };
            // JsSIP finds its binding by instance and reg-id.
            let mut outbound = String::new();
            if !b.instance.is_empty() {
                outbound.push_str(&format!(";+sip.instance={}", b.instance));
            }
            if b.reg_id > 0 {
                outbound.push_str(&format!(";reg-id={}", b.reg_id));
            }
            // `<{contact}>;expires={left}{q}{outbound}`, without `fmt`.
            let mut value = String::with_capacity(b.contact.len() + 32 + q.len() + outbound.len());
            value.push('<');
            value.push_str(&b.contact);
            value.push_str(">;expires=");
            push_decimal(&mut value, left.unsigned_abs());
            value.push_str(&q);
            value.push_str(&outbound);
            (HeaderName::Contact, value)
        })
        .collect()
}

#[cfg(test)]
mod tests;
