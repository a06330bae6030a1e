//! The services a case file starts with: a database of its own in a
//! temporary directory (removed when the file's cases are done), its
//! subscribers, registrations and key-value pairs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::format::{CaseFile, Registration};
use super::message;
use wisp::script::Limits;
use wisp::services::location::{self, SaveOptions};
use wisp::services::{subscribers, Services, Storage};
use wisp::sip::{self, Uri};

/// A directory removed with everything in it when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Result<TempDir, String> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = base.join(format!(
                "wisp-test-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            // create_dir (not _all) fails on a name someone else holds.
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(format!(
                        "cannot make a directory in {}: {e}",
                        base.display()
                    ))
                }
            }
        }
        Err(format!("cannot make a directory in {}", base.display()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The services of one case file, and the directory their database is in
/// (dropped after the services, which hold it open).
pub struct Seeded {
    pub services: Arc<Services>,
    pub _dir: TempDir,
}

/// Opens a fresh database and puts the file's state in it.
pub fn seed(file: &CaseFile, tenant: &str, limits: &Limits) -> Result<Seeded, String> {
    let dir = TempDir::new()?;
    let storage = Storage::open(&dir.path().join("wisp.db"))
        .map_err(|e| format!("cannot open a database: {e}"))?;
    let services = Arc::new(Services::with_storage(storage));
    for s in &file.subscribers {
        subscribers::add(&services.storage, tenant, &s.user, &s.domain, &s.password)
            .map_err(|e| format!("subscriber {}@{}: {e}", s.user, s.domain))?;
    }
    for (i, r) in file.registrations.iter().enumerate() {
        register(&services, tenant, limits, r, i)
            .map_err(|e| format!("registration {} ({}): {e}", i + 1, r.aor))?;
    }
    let now = Instant::now();
    for (key, value) in &file.kv {
        services
            .kv
            .set(tenant, limits.kv_quota(), key, value, None, now)
            .map_err(|e| format!("kv {key}: {e}"))?;
    }
    Ok(Seeded {
        services,
        _dir: dir,
    })
}

/// The user part an AOR is keyed by: `bob`, `bob@example.com`,
/// `sip:bob@example.com`.
fn aor_user(aor: &str) -> Result<String, String> {
    let aor = aor.trim();
    if aor.contains(':') {
        let uri = Uri::parse(aor).map_err(|e| format!("not a SIP URI: {e}"))?;
        return location::aor_of(&uri).ok_or_else(|| "the URI has no user part".into());
    }
    let user = aor.split('@').next().unwrap_or_default();
    if user.is_empty() {
        return Err("empty user".into());
    }
    Ok(user.to_owned())
}

/// Saves a binding through the registrar's own code, with the REGISTER
/// that would have made it.
fn register(
    services: &Services,
    tenant: &str,
    limits: &Limits,
    r: &Registration,
    index: usize,
) -> Result<(), String> {
    let user = aor_user(&r.aor)?;
    Uri::parse(&r.contact).map_err(|e| format!("contact \"{}\": {e}", r.contact))?;
    let expires = r.expires.unwrap_or(3600);
    if expires == 0 {
        return Err("expires 0 would remove the binding".into());
    }
    let mut contact = format!("<{}>;expires={expires}", r.contact);
    if let Some(q) = r.q {
        contact.push_str(&format!(";q={q}"));
    }
    let mut text = format!(
        "REGISTER sip:wisp.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.250;branch=z9hG4bK-seed{index}\r\n\
         From: <sip:{user}@wisp.test>;tag=seed{index}\r\n\
         To: <sip:{user}@wisp.test>\r\n\
         Call-ID: seed-{index}@wisp.test\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: {contact}\r\n"
    );
    for path in &r.path {
        text.push_str(&format!("Path: {path}\r\n"));
    }
    if !r.methods.is_empty() {
        text.push_str(&format!("Allow: {}\r\n", r.methods.join(", ")));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    let msg = sip::parse(text.into()).map_err(|e| format!("cannot build its REGISTER: {e}"))?;
    let received = match &r.received {
        None => None,
        Some(text) if text.trim_start().starts_with("sip") => Some(text.trim().to_owned()),
        Some(text) => {
            let a = message::address(text)?;
            Some(wisp::services::nat::received_uri(a.addr, a.transport))
        }
    };
    let opts = SaveOptions {
        nat: r.nat,
        // Seeded bindings are the file's; the file's limits still hold.
        max_contacts: limits.max_bindings_per_aor,
        max_expires: expires.max(3600),
        min_expires: 1,
        ..SaveOptions::default()
    };
    services
        .location
        .save(tenant, &msg, received, &opts, location::unix_now())
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aors_are_keyed_by_their_user() {
        assert_eq!(aor_user("bob").as_deref(), Ok("bob"));
        assert_eq!(aor_user("bob@example.com").as_deref(), Ok("bob"));
        assert_eq!(aor_user("sip:bob@example.com").as_deref(), Ok("bob"));
        assert!(aor_user("sip:example.com").is_err());
    }

    #[test]
    fn the_directory_goes_with_its_guard() {
        let dir = TempDir::new().expect("dir");
        let path = dir.path().to_owned();
        std::fs::write(path.join("f"), b"x").expect("write");
        drop(dir);
        assert!(!path.exists());
    }
}
