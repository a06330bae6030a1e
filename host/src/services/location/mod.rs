//! The location service (RFC 3261 §10.3; Kamailio's registrar and usrloc):
//! bindings of an address of record to contacts, saved from REGISTER and
//! looked up to route requests to a user.
//!
//! An address of record is keyed by the tenant and the user part of the
//! To URI (Kamailio's `use_domain = 0`).

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::storage::{Storage, StorageError};
use super::writer::Wait;
use crate::sip::{HeaderName, Message, NameAddr};

/// Seconds a REGISTER refused for an overloaded writer is told to wait.
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
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
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

/// Handles a REGISTER (RFC 3261 §10.3 steps 5–8) for `aor`: `received`,
/// where it came from, is kept with the bindings when given (the caller
/// gives it for a UA behind NAT or on a flow). Returns the bindings the
/// address has afterwards, for the 200 OK.
///
/// The request is read here, on the caller's thread; the bindings are
/// checked and changed in one transaction on the writer thread, so that
/// REGISTERs of one address of record apply one after the other. The
/// caller waits up to `wait` for it (see [`Storage::write_within`]).
pub fn save(
    storage: &Storage,
    tenant: &str,
    req: &Message,
    received: Option<String>,
    opts: &SaveOptions,
    now: i64,
    wait: Wait,
) -> Result<Vec<Binding>, SaveError> {
    let register = Register::read(tenant, req, received, opts, now)?;
    storage.write_within(wait, move |conn| register.apply(conn))
}

/// What a REGISTER asks, owned, for the writer thread.
struct Register {
    tenant: String,
    aor: String,
    call_id: String,
    cseq: u32,
    /// None: `Contact: *` (remove every binding).
    contacts: Option<Vec<Asked>>,
    path: String,
    received: String,
    user_agent: String,
    methods: String,
    nat: bool,
    persistent: bool,
    max_contacts: u32,
    max_aors: u32,
    now: i64,
}

impl Register {
    /// Reads and checks the request: every refusal that does not depend
    /// on the stored bindings is found here, before the writer is asked.
    fn read(
        tenant: &str,
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
        let values: Vec<&str> = req.values(&HeaderName::Contact).collect();
        let contacts = if values.iter().any(|c| c.trim() == "*") {
            // Contact: * removes every binding, and only with Expires: 0 (§10.3 step 6).
            if values.len() != 1 || header_expires != Some(0) {
                return Err(SaveError::BadRequest(
                    "Contact: * needs Expires: 0 and no other contact".into(),
                ));
            }
            None
        } else {
            let mut asked = Vec::with_capacity(values.len());
            for value in &values {
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
                    uri: contact.uri.to_string(),
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
        let path: Vec<&str> = req.values(&HeaderName::Path).collect();
        let methods: Vec<String> = req
            .values(&HeaderName::Allow)
            .map(|m| m.trim().to_ascii_uppercase())
            .collect();
        Ok(Register {
            tenant: tenant.to_owned(),
            aor,
            call_id,
            cseq,
            contacts,
            path: path.join("\n"),
            received: received.unwrap_or_default(),
            user_agent: req
                .header(&HeaderName::UserAgent)
                .unwrap_or_default()
                .to_owned(),
            methods: methods.join(","),
            nat: opts.nat,
            persistent: opts.persistent,
            max_contacts: opts.max_contacts,
            max_aors: opts.max_aors,
            now,
        })
    }

    /// Checks the REGISTER against the stored bindings and applies it, in
    /// one transaction (on the writer thread).
    fn apply(self, conn: &mut Connection) -> Result<Vec<Binding>, SaveError> {
        let Register {
            tenant,
            aor,
            call_id,
            cseq,
            now,
            ..
        } = &self;
        let tx = conn.transaction()?;
        tx.prepare_cached("DELETE FROM location WHERE tenant = ?1 AND aor = ?2 AND expires <= ?3")?
            .execute(params![tenant, aor, now])?;

        let Some(asked) = &self.contacts else {
            let stored = bindings_in(&tx, tenant, aor, *now)?;
            if stored
                .iter()
                .any(|b| &b.call_id == call_id && b.cseq >= *cseq)
            {
                return Err(SaveError::OutOfOrder);
            }
            tx.prepare_cached("DELETE FROM location WHERE tenant = ?1 AND aor = ?2")?
                .execute(params![tenant, aor])?;
            tx.commit()?;
            return Ok(Vec::new());
        };

        let known: bool = self.max_aors > 0
            && tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM location WHERE tenant = ?1 AND aor = ?2)",
                )?
                .query_row(params![tenant, aor], |r| r.get(0))?;
        for a in asked {
            // A failed read is a storage error, not "no binding yet".
            let stored: Option<(String, u32)> = tx
                .prepare_cached(
                    "SELECT call_id, cseq FROM location
                     WHERE tenant = ?1 AND aor = ?2 AND contact = ?3",
                )?
                .query_row(params![tenant, aor, a.uri], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((stored_call, stored_cseq)) = stored {
                if &stored_call == call_id && stored_cseq >= *cseq {
                    return Err(SaveError::OutOfOrder);
                }
            }
            // RFC 5626 §6: a UA's instance and reg-id name one flow; a
            // REGISTER over a new one (a new Contact, often) replaces it.
            if !a.instance.is_empty() && a.reg_id > 0 {
                tx.prepare_cached(
                    "DELETE FROM location WHERE tenant = ?1 AND aor = ?2
                     AND instance = ?3 AND reg_id = ?4 AND contact != ?5",
                )?
                .execute(params![tenant, aor, a.instance, a.reg_id, a.uri])?;
            }
            if a.expires == 0 {
                tx.prepare_cached(
                    "DELETE FROM location WHERE tenant = ?1 AND aor = ?2 AND contact = ?3",
                )?
                .execute(params![tenant, aor, a.uri])?;
                continue;
            }
            tx.prepare_cached(
                "INSERT INTO location (tenant, aor, contact, expires, q, call_id, cseq, path,
                     received, user_agent, methods, nat, persistent, instance, reg_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT (tenant, aor, contact) DO UPDATE SET
                     expires = excluded.expires, q = excluded.q, call_id = excluded.call_id,
                     cseq = excluded.cseq, path = excluded.path, received = excluded.received,
                     user_agent = excluded.user_agent, methods = excluded.methods,
                     nat = excluded.nat, persistent = excluded.persistent,
                     instance = excluded.instance, reg_id = excluded.reg_id",
            )?
            .execute(params![
                tenant,
                aor,
                a.uri,
                now + i64::from(a.expires),
                f64::from(a.q),
                call_id,
                cseq,
                self.path,
                self.received,
                self.user_agent,
                self.methods,
                self.nat,
                self.persistent,
                a.instance,
                a.reg_id,
            ])?;
        }

        let current = bindings_in(&tx, tenant, aor, *now)?;
        if self.max_contacts > 0 && current.len() > self.max_contacts as usize {
            // Dropping `tx` rolls every change of this REGISTER back.
            return Err(SaveError::TooManyContacts(self.max_contacts));
        }
        if self.max_aors > 0 && !known && !current.is_empty() {
            // A new address of record: count the tenant's live ones.
            let aors: i64 = tx
                .prepare_cached(
                    "SELECT COUNT(DISTINCT aor) FROM location WHERE tenant = ?1 AND expires > ?2",
                )?
                .query_row(params![tenant, now], |r| r.get(0))?;
            if aors > i64::from(self.max_aors) {
                return Err(SaveError::TooManyAors(self.max_aors));
            }
        }
        tx.commit()?;
        Ok(current)
    }
}

/// The live bindings of a user, highest q first, then the most recently
/// refreshed (on the calling thread's reader).
pub fn lookup(
    storage: &Storage,
    tenant: &str,
    aor: &str,
    now: i64,
) -> Result<Vec<Binding>, StorageError> {
    storage.read(|conn| Ok(bindings_in(conn, tenant, aor, now)?))
}

fn bindings_in(
    conn: &rusqlite::Connection,
    tenant: &str,
    aor: &str,
    now: i64,
) -> rusqlite::Result<Vec<Binding>> {
    let mut stmt = conn.prepare_cached(
        "SELECT contact, expires, q, call_id, cseq, path, received, user_agent, methods, nat,
                instance, reg_id
         FROM location WHERE tenant = ?1 AND aor = ?2 AND expires > ?3
         ORDER BY q DESC, expires DESC, contact",
    )?;
    let rows = stmt.query_map(params![tenant, aor, now], |r| {
        let path: String = r.get(5)?;
        let received: String = r.get(6)?;
        let methods: String = r.get(8)?;
        Ok(Binding {
            contact: r.get(0)?,
            expires: r.get(1)?,
            q: r.get::<_, f64>(2)? as f32,
            call_id: r.get(3)?,
            cseq: r.get(4)?,
            path: path
                .split('\n')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            received: (!received.is_empty()).then_some(received),
            user_agent: r.get(7)?,
            methods: methods
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            nat: r.get(9)?,
            instance: r.get(10)?,
            reg_id: r.get(11)?,
        })
    })?;
    rows.collect()
}

/// Removes every binding of a user; how many there were. The caller
/// waits up to `wait` for the writer.
pub fn unregister(
    storage: &Storage,
    tenant: &str,
    aor: &str,
    wait: Wait,
) -> Result<usize, StorageError> {
    let (tenant, aor) = (tenant.to_owned(), aor.to_owned());
    storage.write_within(wait, move |conn| {
        Ok(conn
            .prepare_cached("DELETE FROM location WHERE tenant = ?1 AND aor = ?2")?
            .execute(params![tenant, aor])?)
    })
}

/// Removes expired bindings (the purge timer); how many.
pub fn purge_expired(storage: &Storage, now: i64) -> Result<usize, StorageError> {
    storage.write(move |conn| {
        Ok(conn
            .prepare_cached("DELETE FROM location WHERE expires <= ?1")?
            .execute(params![now])?)
    })
}

/// Removes the bindings saved without persistence (at start-up: they
/// belonged to the process that stopped, as with usrloc's db_mode 0).
pub fn drop_volatile(storage: &Storage) -> Result<usize, StorageError> {
    storage.write(|conn| Ok(conn.execute("DELETE FROM location WHERE persistent = 0", [])?))
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
            (
                HeaderName::Contact,
                format!("<{}>;expires={left}{q}{outbound}", b.contact),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    const WAIT: Wait = Wait {
        to_start: Duration::from_secs(5),
        to_finish: Duration::from_secs(5),
    };

    fn register(contacts: &[&str], extra: &str, call_id: &str, cseq: u32) -> Message {
        let mut text = format!(
            "REGISTER sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKreg{cseq}\r\n\
             From: <sip:alice@example.com>;tag=1\r\n\
             To: <sip:alice@example.com>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n"
        );
        for c in contacts {
            text.push_str(&format!("Contact: {c}\r\n"));
        }
        text.push_str(extra);
        text.push_str("Content-Length: 0\r\n\r\n");
        crate::sip::parse(bytes::Bytes::from(text)).expect("valid REGISTER")
    }

    fn opts() -> SaveOptions {
        SaveOptions {
            persistent: true,
            nat: false,
            default_expires: 3600,
            min_expires: 60,
            max_expires: 7200,
            max_contacts: 3,
            max_aors: 0,
        }
    }

    #[test]
    fn a_tenant_holds_at_most_max_aors_users() {
        let db = Storage::in_memory().expect("db");
        let now = 5_000;
        let two = SaveOptions {
            max_aors: 2,
            ..opts()
        };
        let of = |user: &str, cseq: u32| {
            let text = String::from_utf8_lossy(
                &register(&[&format!("<sip:{user}@192.0.2.1>")], "", "c", cseq).to_bytes(),
            )
            .replace("alice@example.com", &format!("{user}@example.com"));
            crate::sip::parse(bytes::Bytes::from(text)).expect("REGISTER")
        };
        save(&db, "t", &of("u1", 1), None, &two, now, WAIT).expect("first user");
        save(&db, "t", &of("u2", 1), None, &two, now, WAIT).expect("second user");
        let err = save(&db, "t", &of("u3", 1), None, &two, now, WAIT).expect_err("third user");
        assert!(matches!(err, SaveError::TooManyAors(2)), "{err}");
        assert_eq!(err.reply().0, 403);
        assert!(lookup(&db, "t", "u3", now).expect("lookup").is_empty());
        // Known users refresh; another tenant has its own count.
        save(&db, "t", &of("u1", 2), None, &two, now, WAIT).expect("refresh");
        save(&db, "other", &of("u3", 1), None, &two, now, WAIT).expect("other tenant");
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 3261 §20.17's example.
        assert_eq!(http_date(1_289_690_940), "Sat, 13 Nov 2010 23:29:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn expires_from_param_then_header_then_default() {
        let o = opts();
        assert_eq!(
            effective_expires(Some("120"), Some(300), &o).ok(),
            Some(120)
        );
        assert_eq!(effective_expires(None, Some(300), &o).ok(), Some(300));
        assert_eq!(effective_expires(None, None, &o).ok(), Some(3600));
        assert_eq!(effective_expires(Some("0"), Some(300), &o).ok(), Some(0));
        assert_eq!(effective_expires(None, Some(99999), &o).ok(), Some(7200));
        assert!(matches!(
            effective_expires(Some("30"), None, &o),
            Err(SaveError::IntervalTooBrief(60))
        ));
        assert!(matches!(
            effective_expires(Some("soon"), None, &o),
            Err(SaveError::BadRequest(_))
        ));
        assert_eq!(parse_delta("99999999999"), Some(u32::MAX));
    }

    #[test]
    fn register_refresh_remove_and_star() {
        let db = Storage::in_memory().expect("db");
        let now = 1_000_000;
        let req = register(
            &[
                "<sip:alice@192.0.2.4:5060>;q=0.5",
                "<sip:alice@198.51.100.7>;expires=600",
            ],
            "Expires: 300\r\nPath: <sip:edge.example.com;lr>\r\n",
            "c1",
            1,
        );
        let b = save(&db, "t", &req, None, &opts(), now, WAIT).expect("saved");
        assert_eq!(b.len(), 2);
        // Highest q first.
        assert_eq!(b[0].contact, "sip:alice@198.51.100.7");
        assert_eq!(b[0].expires, now + 600);
        assert_eq!(b[1].expires, now + 300);
        assert_eq!(b[1].path, vec!["<sip:edge.example.com;lr>".to_owned()]);
        let contacts = reply_contacts(&b, now);
        assert_eq!(
            contacts[1].1,
            "<sip:alice@192.0.2.4:5060>;expires=300;q=0.5"
        );

        // Another tenant does not see them.
        assert!(lookup(&db, "other", "alice", now)
            .expect("lookup")
            .is_empty());

        // The same CSeq again is out of order; a higher one refreshes.
        let again = register(&["<sip:alice@192.0.2.4:5060>"], "", "c1", 1);
        assert!(matches!(
            save(&db, "t", &again, None, &opts(), now, WAIT),
            Err(SaveError::OutOfOrder)
        ));
        let remove = register(&["<sip:alice@192.0.2.4:5060>;expires=0"], "", "c1", 2);
        let b = save(&db, "t", &remove, None, &opts(), now, WAIT).expect("removed");
        assert_eq!(b.len(), 1);

        // Contact: * needs Expires: 0.
        let star = register(&["*"], "Expires: 10\r\n", "c2", 1);
        assert!(matches!(
            save(&db, "t", &star, None, &opts(), now, WAIT),
            Err(SaveError::BadRequest(_))
        ));
        let star = register(&["*"], "Expires: 0\r\n", "c2", 1);
        assert!(save(&db, "t", &star, None, &opts(), now, WAIT)
            .expect("star")
            .is_empty());
        assert!(lookup(&db, "t", "alice", now).expect("lookup").is_empty());
    }

    #[test]
    fn outbound_bindings_are_echoed_and_replaced_by_instance_and_reg_id() {
        let db = Storage::in_memory().expect("db");
        let now = 1_000;
        let instance = "\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"";
        let first = register(
            &[&format!(
                "<sip:k3ue8r1a@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance={instance};expires=600"
            )],
            "",
            "c1",
            1,
        );
        let flow = Some("sip:127.0.0.1:40000;transport=ws".to_owned());
        let b = save(&db, "t", &first, flow, &opts(), now, WAIT).expect("saved");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].instance, instance);
        assert_eq!(b[0].reg_id, 1);
        assert_eq!(
            b[0].received.as_deref(),
            Some("sip:127.0.0.1:40000;transport=ws")
        );
        let contacts = reply_contacts(&b, now);
        assert_eq!(
            contacts[0].1,
            format!("<sip:k3ue8r1a@df7jal23ls0d.invalid;transport=ws>;expires=600;+sip.instance={instance};reg-id=1")
        );
        // The same UA again on a new connection, with a new Contact: the
        // old flow's binding goes.
        let again = register(
            &[&format!(
                "<sip:zz9@other.invalid;transport=ws>;reg-id=1;+sip.instance={instance}"
            )],
            "",
            "c2",
            1,
        );
        let flow = Some("sip:127.0.0.1:40002;transport=ws".to_owned());
        let b = save(&db, "t", &again, flow, &opts(), now, WAIT).expect("saved");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].contact, "sip:zz9@other.invalid;transport=ws");
        assert_eq!(
            b[0].received.as_deref(),
            Some("sip:127.0.0.1:40002;transport=ws")
        );
        let bad = register(&["<sip:a@192.0.2.1>;reg-id=x"], "", "c3", 1);
        assert!(matches!(
            save(&db, "t", &bad, None, &opts(), now, WAIT),
            Err(SaveError::BadRequest(_))
        ));
    }

    #[test]
    fn limits_and_expiry() {
        let db = Storage::in_memory().expect("db");
        let now = 5_000;
        let brief = register(&["<sip:a@192.0.2.1>;expires=10"], "", "c", 1);
        let err = save(&db, "t", &brief, None, &opts(), now, WAIT).expect_err("too brief");
        let (code, _, headers) = err.reply();
        assert_eq!(code, 423);
        assert_eq!(headers[0].1, "60");

        let four = register(
            &[
                "<sip:a@192.0.2.1>",
                "<sip:a@192.0.2.2>",
                "<sip:a@192.0.2.3>",
                "<sip:a@192.0.2.4>",
            ],
            "",
            "c",
            2,
        );
        assert!(matches!(
            save(&db, "t", &four, None, &opts(), now, WAIT),
            Err(SaveError::TooManyContacts(3))
        ));
        // Nothing of the refused REGISTER was kept.
        assert!(lookup(&db, "t", "alice", now).expect("lookup").is_empty());

        let nat = SaveOptions {
            nat: true,
            persistent: false,
            ..opts()
        };
        let one = register(&["<sip:alice@10.0.0.5:5060>;expires=60"], "", "c", 3);
        let b = save(
            &db,
            "t",
            &one,
            Some("sip:203.0.113.9:40000".into()),
            &nat,
            now,
            WAIT,
        )
        .expect("saved");
        assert_eq!(b[0].received.as_deref(), Some("sip:203.0.113.9:40000"));
        assert!(b[0].nat);
        assert_eq!(
            lookup(&db, "t", "alice", now + 59).expect("lookup").len(),
            1
        );
        assert!(lookup(&db, "t", "alice", now + 60)
            .expect("lookup")
            .is_empty());
        assert_eq!(purge_expired(&db, now + 60).expect("purge"), 1);
        let one = register(&["<sip:alice@10.0.0.5:5060>;expires=60"], "", "c", 4);
        save(&db, "t", &one, None, &nat, now, WAIT).expect("saved");
        assert_eq!(drop_volatile(&db).expect("drop"), 1);
        assert_eq!(unregister(&db, "t", "alice", WAIT).expect("unregister"), 0);
    }

    /// A storage failure is a 500 (an overloaded writer a 503), never a
    /// refusal that blames the request, and a failed lookup is an error,
    /// not "no binding".
    #[test]
    fn storage_errors_are_server_errors() {
        let db = Storage::in_memory().expect("db");
        let req = register(&["<sip:alice@192.0.2.4>"], "", "c", 1);
        save(&db, "t", &req, None, &opts(), 1000, WAIT).expect("saved");
        db.write(|c| Ok::<_, StorageError>(c.execute_batch("DROP TABLE location")?))
            .expect("dropped");
        assert!(lookup(&db, "t", "alice", 1000).is_err());
        let again = register(&["<sip:alice@192.0.2.4>"], "", "c", 2);
        let err = save(&db, "t", &again, None, &opts(), 1000, WAIT).expect_err("no table");
        assert!(matches!(err, SaveError::Storage(_)), "{err:?}");
        assert_eq!(err.reply().0, 500);
        assert!(unregister(&db, "t", "alice", WAIT).is_err());

        let busy = SaveError::Storage(StorageError::QueueFull(1));
        let (code, _, headers) = busy.reply();
        assert_eq!(code, 503);
        assert_eq!(headers[0].0.as_str(), "Retry-After");
        let late = SaveError::Storage(StorageError::Late(WAIT.to_start));
        assert_eq!(late.reply().0, 503);
        let unknown = SaveError::Storage(StorageError::Unfinished(WAIT.to_finish));
        assert_eq!(unknown.reply().0, 500);
    }

    /// REGISTERs of one address from many threads at once: none is lost,
    /// and each sees its own binding in its 200 and in a lookup right after.
    #[test]
    fn concurrent_registers_are_all_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Storage::open(&dir.path().join("wisp.db")).expect("db");
        let unlimited = SaveOptions {
            max_contacts: 0,
            ..opts()
        };
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let (db, unlimited) = (&db, &unlimited);
                s.spawn(move || {
                    for i in 0..20u32 {
                        let contact = format!("<sip:alice@192.0.2.{t}:{}>", 5000 + i);
                        let req = register(&[&contact], "", &format!("c{t}"), i + 1);
                        let now = 1_000_000;
                        let bindings =
                            save(db, "t", &req, None, unlimited, now, WAIT).expect("saved");
                        let uri = &contact[1..contact.len() - 1];
                        assert!(bindings.iter().any(|b| b.contact == uri));
                        let found = lookup(db, "t", "alice", now).expect("lookup");
                        assert!(found.iter().any(|b| b.contact == uri));
                    }
                });
            }
        });
        assert_eq!(
            lookup(&db, "t", "alice", 1_000_000).expect("lookup").len(),
            80
        );
    }
}
