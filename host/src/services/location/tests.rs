use super::*;

use std::time::Duration;

use crate::services::storage::{Storage, StorageError};
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
    let db = Location::default();
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
    db.save("t", &of("u1", 1), None, &two, now)
        .expect("first user");
    db.save("t", &of("u2", 1), None, &two, now)
        .expect("second user");
    let err = db
        .save("t", &of("u3", 1), None, &two, now)
        .expect_err("third user");
    assert!(matches!(err, SaveError::TooManyAors(2)), "{err}");
    assert_eq!(err.reply().0, 403);
    assert!(db.lookup("t", "u3", now).is_empty());
    // Known users refresh; another tenant has its own count.
    db.save("t", &of("u1", 2), None, &two, now)
        .expect("refresh");
    db.save("other", &of("u3", 1), None, &two, now)
        .expect("other tenant");
}

#[test]
fn dates() {
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    // RFC 3261 §20.17's example.
    assert_eq!(http_date(1_289_690_940), "Sat, 13 Nov 2010 23:29:00 GMT");
    assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    assert_eq!(http_date(1_764_720_005), "Wed, 03 Dec 2025 00:00:05 GMT");
    // Years of other than four digits take the long way.
    assert_eq!(http_date(253_402_300_800), "Sat, 01 Jan 10000 00:00:00 GMT");
    assert_eq!(http_date(-1), "Wed, 31 Dec 1969 23:59:59 GMT");
    assert_eq!(http_date(-62_135_596_800), "Mon, 01 Jan 1 00:00:00 GMT");
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
    let db = Location::default();
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
    let b = db.save("t", &req, None, &opts(), now).expect("saved");
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
    assert!(db.lookup("other", "alice", now).is_empty());

    // The same CSeq again is out of order; a higher one refreshes.
    let again = register(&["<sip:alice@192.0.2.4:5060>"], "", "c1", 1);
    assert!(matches!(
        db.save("t", &again, None, &opts(), now),
        Err(SaveError::OutOfOrder)
    ));
    let remove = register(&["<sip:alice@192.0.2.4:5060>;expires=0"], "", "c1", 2);
    let b = db.save("t", &remove, None, &opts(), now).expect("removed");
    assert_eq!(b.len(), 1);

    // Contact: * needs Expires: 0.
    let star = register(&["*"], "Expires: 10\r\n", "c2", 1);
    assert!(matches!(
        db.save("t", &star, None, &opts(), now),
        Err(SaveError::BadRequest(_))
    ));
    let star = register(&["*"], "Expires: 0\r\n", "c2", 1);
    assert!(db
        .save("t", &star, None, &opts(), now)
        .expect("star")
        .is_empty());
    assert!(db.lookup("t", "alice", now).is_empty());
}

#[test]
fn outbound_bindings_are_echoed_and_replaced_by_instance_and_reg_id() {
    let db = Location::default();
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
    let b = db.save("t", &first, flow, &opts(), now).expect("saved");
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
    let b = db.save("t", &again, flow, &opts(), now).expect("saved");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].contact, "sip:zz9@other.invalid;transport=ws");
    assert_eq!(
        b[0].received.as_deref(),
        Some("sip:127.0.0.1:40002;transport=ws")
    );
    let bad = register(&["<sip:a@192.0.2.1>;reg-id=x"], "", "c3", 1);
    assert!(matches!(
        db.save("t", &bad, None, &opts(), now),
        Err(SaveError::BadRequest(_))
    ));
}

#[test]
fn limits_and_expiry() {
    let db = Location::default();
    let now = 5_000;
    let brief = register(&["<sip:a@192.0.2.1>;expires=10"], "", "c", 1);
    let err = db
        .save("t", &brief, None, &opts(), now)
        .expect_err("too brief");
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
        db.save("t", &four, None, &opts(), now),
        Err(SaveError::TooManyContacts(3))
    ));
    // Nothing of the refused REGISTER was kept.
    assert!(db.lookup("t", "alice", now).is_empty());

    let nat = SaveOptions {
        nat: true,
        persistent: false,
        ..opts()
    };
    let one = register(&["<sip:alice@10.0.0.5:5060>;expires=60"], "", "c", 3);
    let b = db
        .save("t", &one, Some("sip:203.0.113.9:40000".into()), &nat, now)
        .expect("saved");
    assert_eq!(b[0].received.as_deref(), Some("sip:203.0.113.9:40000"));
    assert!(b[0].nat);
    assert!(!b[0].persistent);
    assert_eq!(db.lookup("t", "alice", now + 59).len(), 1);
    assert!(db.registered("t", "alice", now + 59));
    assert!(db.lookup("t", "alice", now + 60).is_empty());
    assert!(!db.registered("t", "alice", now + 60));
    assert_eq!(db.purge(now + 60), 1);
    assert_eq!(db.aors(), 0);
    let one = register(&["<sip:alice@10.0.0.5:5060>;expires=60"], "", "c", 4);
    db.save("t", &one, None, &nat, now).expect("saved");
    assert_eq!(db.unregister("t", "alice"), 1);
    assert_eq!(db.unregister("t", "alice"), 0);
    assert!(db.lookup("t", "alice", now).is_empty());
    // Bindings without persistence are never written.
    assert_eq!(db.unwritten(), 0);
}

/// A database too far behind is a 503 (Retry-After), a failed one a
/// 500, never a refusal that blames the request.
#[test]
fn storage_errors_are_server_errors() {
    let busy = SaveError::Storage(StorageError::QueueFull(1));
    let (code, _, headers) = busy.reply();
    assert_eq!(code, 503);
    assert_eq!(headers[0].0.as_str(), "Retry-After");
    let late = SaveError::Storage(StorageError::Late(Duration::from_millis(250)));
    assert_eq!(late.reply().0, 503);
    let unknown = SaveError::Storage(StorageError::Unfinished(Duration::from_secs(1)));
    assert_eq!(unknown.reply().0, 500);
}

/// REGISTERs of one address from many threads at once: none is lost,
/// and each sees its own binding in its 200 and in a lookup right after.
#[test]
fn concurrent_registers_are_all_kept() {
    let db = Location::default();
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
                    let bindings = db.save("t", &req, None, unlimited, now).expect("saved");
                    let uri = &contact[1..contact.len() - 1];
                    assert!(bindings.iter().any(|b| b.contact == uri));
                    let found = db.lookup("t", "alice", now);
                    assert!(found.iter().any(|b| b.contact == uri));
                }
            });
        }
    });
    assert_eq!(db.lookup("t", "alice", 1_000_000).len(), 80);
    assert_eq!(db.unwritten(), 1);
}

/// The rows of the location table: (tenant, aor, contact, persistent).
fn rows(storage: &Storage) -> Vec<(String, String, String, bool)> {
    storage
        .read(|c| {
            let mut s = c.prepare(
                "SELECT tenant, aor, contact, persistent FROM location
                 ORDER BY tenant, aor, contact",
            )?;
            let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            Ok::<_, StorageError>(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .expect("rows")
}

fn row(aor: &str, contact: &str) -> (String, String, String, bool) {
    ("t".into(), aor.into(), contact.into(), true)
}

/// Persistent bindings reach the database at the next write, not
/// before; each write replaces an address's rows by what memory holds;
/// bindings without persistence never get there; a new table loads the
/// live ones back.
#[test]
fn persistent_bindings_are_written_behind_and_loaded_back() {
    let storage = Storage::in_memory().expect("db");
    let db = Location::default();
    let now = 10_000;
    let volatile = SaveOptions {
        persistent: false,
        ..opts()
    };
    let two = register(
        &["<sip:alice@192.0.2.1>", "<sip:alice@192.0.2.2>;expires=600"],
        "Path: <sip:edge.example.com;lr>\r\nAllow: INVITE, bye\r\nUser-Agent: phone\r\n",
        "c",
        1,
    );
    db.save("t", &two, Some("sip:203.0.113.9:4000".into()), &opts(), now)
        .expect("saved");
    let bob = register(&["<sip:bob@192.0.2.3>"], "", "b", 1).to_bytes();
    let bob = String::from_utf8_lossy(&bob).replace("alice@example.com", "bob@example.com");
    let bob = crate::sip::parse(bytes::Bytes::from(bob)).expect("REGISTER");
    db.save("t", &bob, None, &volatile, now).expect("saved");
    // Nothing written yet: the REGISTER did not wait for the database.
    assert!(rows(&storage).is_empty());
    assert_eq!(db.unwritten(), 1);
    assert_eq!(db.write_behind(&storage).expect("written"), 1);
    assert_eq!(db.unwritten(), 0);
    assert_eq!(
        rows(&storage),
        vec![
            row("alice", "sip:alice@192.0.2.1"),
            row("alice", "sip:alice@192.0.2.2")
        ]
    );
    // Nothing changed: nothing to write.
    assert_eq!(db.write_behind(&storage).expect("written"), 0);

    // A removal and a query; then the rows follow memory.
    let remove = register(&["<sip:alice@192.0.2.1>;expires=0"], "", "c", 2);
    db.save("t", &remove, None, &opts(), now).expect("removed");
    let query = register(&[], "", "c", 3);
    db.save("t", &query, None, &opts(), now).expect("query");
    assert_eq!(db.write_behind(&storage).expect("written"), 1);
    assert_eq!(rows(&storage), vec![row("alice", "sip:alice@192.0.2.2")]);

    // Loaded back as they were, the volatile one not.
    let again = Location::default();
    assert_eq!(again.load(&storage, now).expect("loaded"), 1);
    assert_eq!(
        again.lookup("t", "alice", now),
        db.lookup("t", "alice", now)
    );
    let b = &again.lookup("t", "alice", now)[0];
    assert_eq!(b.path, vec!["<sip:edge.example.com;lr>".to_owned()]);
    assert_eq!(b.methods, vec!["INVITE".to_owned(), "BYE".to_owned()]);
    assert_eq!(b.received.as_deref(), Some("sip:203.0.113.9:4000"));
    assert_eq!(b.user_agent, "phone");
    assert!(again.lookup("t", "bob", now).is_empty());
    // Expired ones are not loaded.
    assert_eq!(
        Location::default()
            .load(&storage, now + 600)
            .expect("loaded"),
        0
    );

    // A binding saved again without persistence leaves the database;
    // an unregister too.
    let refresh = register(&["<sip:alice@192.0.2.2>"], "", "c", 4);
    db.save("t", &refresh, None, &volatile, now).expect("saved");
    assert_eq!(db.write_behind(&storage).expect("written"), 1);
    assert!(rows(&storage).is_empty());
    let persist = register(&["<sip:alice@192.0.2.2>"], "", "c", 5);
    db.save("t", &persist, None, &opts(), now).expect("saved");
    db.write_behind(&storage).expect("written");
    assert_eq!(rows(&storage).len(), 1);
    assert_eq!(db.unregister("t", "alice"), 1);
    db.write_behind(&storage).expect("written");
    assert!(rows(&storage).is_empty());
    // Expired rows go from the database with the purge.
    let star_free = register(&["<sip:alice@192.0.2.9>;expires=60"], "", "d", 1);
    db.save("t", &star_free, None, &opts(), now).expect("saved");
    db.write_behind(&storage).expect("written");
    assert_eq!(purge_expired(&storage, now + 60).expect("purged"), 1);
}

/// A write that fails loses nothing: the next one writes it.
#[test]
fn a_failed_write_is_tried_again() {
    let storage = Storage::in_memory().expect("db");
    let db = Location::default();
    let req = register(&["<sip:alice@192.0.2.1>"], "", "c", 1);
    db.save("t", &req, None, &opts(), 1_000).expect("saved");
    storage
        .write(|c| Ok::<_, StorageError>(c.execute_batch("ALTER TABLE location RENAME TO gone")?))
        .expect("renamed");
    assert!(db.write_behind(&storage).is_err());
    assert_eq!(db.unwritten(), 1);
    // Still served from memory meanwhile.
    assert_eq!(db.lookup("t", "alice", 1_000).len(), 1);
    storage
        .write(|c| Ok::<_, StorageError>(c.execute_batch("ALTER TABLE gone RENAME TO location")?))
        .expect("renamed back");
    assert_eq!(db.write_behind(&storage).expect("written"), 1);
    assert_eq!(rows(&storage), vec![row("alice", "sip:alice@192.0.2.1")]);
}

/// While the database is behind, the addresses waiting to be written are
/// bounded: past the bound, a REGISTER that would add one is refused 503
/// and changes nothing; one already waiting may change again.
#[test]
fn unwritten_changes_are_bounded() {
    let db = Location::default();
    let one = SaveOptions {
        max_aors: 1,
        ..opts()
    };
    let bound = table::max_unwritten(1);
    let of = |user: &str| {
        let text = String::from_utf8_lossy(
            &register(&[&format!("<sip:{user}@192.0.2.1>")], "", "c", 1).to_bytes(),
        )
        .replace("alice@example.com", &format!("{user}@example.com"));
        crate::sip::parse(bytes::Bytes::from(text)).expect("REGISTER")
    };
    let gone = |user: &str| {
        let text = String::from_utf8_lossy(
            &register(&[&format!("<sip:{user}@192.0.2.1>;expires=0")], "", "c", 2).to_bytes(),
        )
        .replace("alice@example.com", &format!("{user}@example.com"));
        crate::sip::parse(bytes::Bytes::from(text)).expect("REGISTER")
    };
    for i in 0..bound {
        let user = format!("u{i}");
        db.save("t", &of(&user), None, &one, 1_000).expect("saved");
        db.save("t", &gone(&user), None, &one, 1_000)
            .expect("removed");
    }
    assert_eq!(db.unwritten(), bound);
    let err = db
        .save("t", &of("late"), None, &one, 1_000)
        .expect_err("too far behind");
    assert_eq!(err.reply().0, 503, "{err}");
    assert!(db.lookup("t", "late", 1_000).is_empty());
    assert_eq!(db.aors(), 0);
    // One already waiting is taken.
    db.save("t", &of("u0"), None, &one, 1_000).expect("saved");
    let storage = Storage::in_memory().expect("db");
    assert_eq!(db.write_behind(&storage).expect("written"), bound);
    db.save(
        "t",
        &of("late"),
        None,
        &SaveOptions { max_aors: 2, ..one },
        1_000,
    )
    .expect("room again");
}

/// Addresses whose bindings all expired do not count against `max_aors`.
#[test]
fn expired_addresses_make_room() {
    let db = Location::default();
    let one = SaveOptions {
        max_aors: 1,
        ..opts()
    };
    let brief = register(&["<sip:alice@192.0.2.1>;expires=60"], "", "c", 1);
    db.save("t", &brief, None, &one, 1_000).expect("saved");
    let text = String::from_utf8_lossy(&register(&["<sip:bob@192.0.2.1>"], "", "b", 1).to_bytes())
        .replace("alice@example.com", "bob@example.com");
    let bob = crate::sip::parse(bytes::Bytes::from(text)).expect("REGISTER");
    assert!(matches!(
        db.save("t", &bob, None, &one, 1_059),
        Err(SaveError::TooManyAors(1))
    ));
    db.save("t", &bob, None, &one, 1_060)
        .expect("alice expired");
    assert_eq!(db.aors(), 1);
}
