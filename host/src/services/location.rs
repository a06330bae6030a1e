//! The location service (RFC 3261 §10.3; Kamailio's registrar and usrloc):
//! bindings of an address of record to contacts, saved from REGISTER and
//! looked up to route requests to a user.
//!
//! An address of record is keyed by the tenant and the user part of the
//! To URI (Kamailio's `use_domain = 0`).

use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::params;

use super::storage::{Storage, StorageError};
use crate::sip::{HeaderName, Message, NameAddr};

/// How `save` treats a REGISTER (see the `registrar` WIT interface).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    pub persistent: bool,
    pub nat: bool,
    pub default_expires: u32,
    pub min_expires: u32,
    pub max_expires: u32,
    pub max_contacts: u32,
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
            SaveError::OutOfOrder => (500, "Server Internal Error (out of order)".into(), vec![]),
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

/// Handles a REGISTER (RFC 3261 §10.3 steps 5–8) for `aor`: `received`
/// is where it came from (kept when `opts.nat`). Returns the bindings the
/// address has afterwards, for the 200 OK.
pub fn save(
    storage: &Storage,
    tenant: &str,
    req: &Message,
    received: Option<String>,
    opts: &SaveOptions,
    now: i64,
) -> Result<Vec<Binding>, SaveError> {
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
        Some(v) => Some(parse_delta(v).ok_or_else(|| SaveError::BadRequest("bad Expires".into()))?),
        None => None,
    };
    let contacts: Vec<&str> = req.values(&HeaderName::Contact).collect();
    let path: Vec<String> = req.values(&HeaderName::Path).map(str::to_owned).collect();
    let methods: Vec<String> = req
        .values(&HeaderName::Allow)
        .map(|m| m.trim().to_ascii_uppercase())
        .collect();
    let user_agent = req
        .header(&HeaderName::UserAgent)
        .unwrap_or_default()
        .to_owned();

    let mut conn = storage.conn();
    let tx = conn.transaction()?;
    tx.prepare_cached("DELETE FROM location WHERE tenant = ?1 AND aor = ?2 AND expires <= ?3")?
        .execute(params![tenant, aor, now])?;

    if contacts.iter().any(|c| c.trim() == "*") {
        // Contact: * removes every binding, and only with Expires: 0 (§10.3 step 6).
        if contacts.len() != 1 || header_expires != Some(0) {
            return Err(SaveError::BadRequest(
                "Contact: * needs Expires: 0 and no other contact".into(),
            ));
        }
        let stored = bindings_in(&tx, tenant, &aor, now)?;
        if stored
            .iter()
            .any(|b| b.call_id == call_id && b.cseq >= cseq)
        {
            return Err(SaveError::OutOfOrder);
        }
        tx.prepare_cached("DELETE FROM location WHERE tenant = ?1 AND aor = ?2")?
            .execute(params![tenant, aor])?;
        tx.commit()?;
        return Ok(Vec::new());
    }

    let mut asked = Vec::with_capacity(contacts.len());
    for value in &contacts {
        let contact = NameAddr::parse(value)
            .map_err(|e| SaveError::BadRequest(format!("Contact: {}", e.reason())))?;
        let expires = effective_expires(contact.param("expires").flatten(), header_expires, opts)?;
        let q = parse_q(contact.param("q").flatten())?;
        asked.push(Asked {
            uri: contact.uri.to_string(),
            expires,
            q,
        });
    }

    for a in &asked {
        let stored: Option<(String, u32)> = tx.prepare_cached("SELECT call_id, cseq FROM location WHERE tenant = ?1 AND aor = ?2 AND contact = ?3")?.query_row(
                params![tenant, aor, a.uri],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        if let Some((stored_call, stored_cseq)) = stored {
            if stored_call == call_id && stored_cseq >= cseq {
                return Err(SaveError::OutOfOrder);
            }
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
                 received, user_agent, methods, nat, persistent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (tenant, aor, contact) DO UPDATE SET
                 expires = excluded.expires, q = excluded.q, call_id = excluded.call_id,
                 cseq = excluded.cseq, path = excluded.path, received = excluded.received,
                 user_agent = excluded.user_agent, methods = excluded.methods,
                 nat = excluded.nat, persistent = excluded.persistent",
        )?
        .execute(params![
            tenant,
            aor,
            a.uri,
            now + i64::from(a.expires),
            f64::from(a.q),
            call_id,
            cseq,
            path.join("\n"),
            if opts.nat { received.clone() } else { None }.unwrap_or_default(),
            user_agent,
            methods.join(","),
            opts.nat,
            opts.persistent,
        ])?;
    }

    let current = bindings_in(&tx, tenant, &aor, now)?;
    if opts.max_contacts > 0 && current.len() > opts.max_contacts as usize {
        // Dropping `tx` rolls every change of this REGISTER back.
        return Err(SaveError::TooManyContacts(opts.max_contacts));
    }
    tx.commit()?;
    Ok(current)
}

/// The live bindings of a user, highest q first, then the most recently
/// refreshed.
pub fn lookup(
    storage: &Storage,
    tenant: &str,
    aor: &str,
    now: i64,
) -> Result<Vec<Binding>, StorageError> {
    let conn = storage.conn();
    Ok(bindings_in(&conn, tenant, aor, now)?)
}

fn bindings_in(
    conn: &rusqlite::Connection,
    tenant: &str,
    aor: &str,
    now: i64,
) -> rusqlite::Result<Vec<Binding>> {
    let mut stmt = conn.prepare_cached(
        "SELECT contact, expires, q, call_id, cseq, path, received, user_agent, methods, nat
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
        })
    })?;
    rows.collect()
}

/// Removes every binding of a user; how many there were.
pub fn unregister(storage: &Storage, tenant: &str, aor: &str) -> Result<usize, StorageError> {
    Ok(storage
        .conn()
        .prepare_cached("DELETE FROM location WHERE tenant = ?1 AND aor = ?2")?
        .execute(params![tenant, aor])?)
}

/// Removes expired bindings (the purge timer); how many.
pub fn purge_expired(storage: &Storage, now: i64) -> Result<usize, StorageError> {
    Ok(storage
        .conn()
        .execute("DELETE FROM location WHERE expires <= ?1", params![now])?)
}

/// Removes the bindings saved without persistence (at start-up: they
/// belonged to the process that stopped, as with usrloc's db_mode 0).
pub fn drop_volatile(storage: &Storage) -> Result<usize, StorageError> {
    Ok(storage
        .conn()
        .execute("DELETE FROM location WHERE persistent = 0", [])?)
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
            (
                HeaderName::Contact,
                format!("<{}>;expires={left}{q}", b.contact),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
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
        let b = save(&db, "t", &req, None, &opts(), now).expect("saved");
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
            save(&db, "t", &again, None, &opts(), now),
            Err(SaveError::OutOfOrder)
        ));
        let remove = register(&["<sip:alice@192.0.2.4:5060>;expires=0"], "", "c1", 2);
        let b = save(&db, "t", &remove, None, &opts(), now).expect("removed");
        assert_eq!(b.len(), 1);

        // Contact: * needs Expires: 0.
        let star = register(&["*"], "Expires: 10\r\n", "c2", 1);
        assert!(matches!(
            save(&db, "t", &star, None, &opts(), now),
            Err(SaveError::BadRequest(_))
        ));
        let star = register(&["*"], "Expires: 0\r\n", "c2", 1);
        assert!(save(&db, "t", &star, None, &opts(), now)
            .expect("star")
            .is_empty());
        assert!(lookup(&db, "t", "alice", now).expect("lookup").is_empty());
    }

    #[test]
    fn limits_and_expiry() {
        let db = Storage::in_memory().expect("db");
        let now = 5_000;
        let brief = register(&["<sip:a@192.0.2.1>;expires=10"], "", "c", 1);
        let err = save(&db, "t", &brief, None, &opts(), now).expect_err("too brief");
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
            save(&db, "t", &four, None, &opts(), now),
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
        save(&db, "t", &one, None, &nat, now).expect("saved");
        assert_eq!(drop_volatile(&db).expect("drop"), 1);
        assert_eq!(unregister(&db, "t", "alice").expect("unregister"), 0);
    }
}
