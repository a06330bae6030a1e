//! The persistent bindings written behind to the database, and loaded
//! back from it at start.
//!
//! A change marks its address of record in its shard (`table.rs`); a
//! write ([`Location::write_behind`], every `write_interval` from the
//! `wisp-location` thread, and once more at a clean shutdown) takes the
//! marks of every shard, copies the persistent bindings those addresses
//! have then, and replaces their rows in one transaction on the writer
//! thread. A failed write puts the marks back for the next one. The hooks
//! never wait for any of it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{params, Connection};

use super::table::Location;
use super::Binding;
use crate::services::storage::{Storage, StorageError};

/// The persistent bindings of one address of record at the time of a
/// write: its rows are replaced by them (none: removed).
struct Aor {
    tenant: Arc<str>,
    aor: Box<str>,
    bindings: Vec<Binding>,
}

impl Location {
    /// Writes the changes made since the last write to the database (on
    /// its writer thread, waiting for it); how many addresses of record
    /// were written. On failure nothing is lost from memory: the next
    /// write tries them again.
    pub fn write_behind(&self, storage: &Storage) -> Result<usize, StorageError> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Vec::new();
        for table in self.all() {
            if table.unwritten.load(Ordering::Acquire) == 0 {
                continue;
            }
            for shard in table.shards.iter() {
                let mut shard = shard.lock();
                if shard.unwritten.is_empty() {
                    continue;
                }
                let marked: Vec<Box<str>> = shard.unwritten.drain().collect();
                table.unwritten.fetch_sub(marked.len(), Ordering::AcqRel);
                for aor in marked {
                    let bindings = shard.aors.get(&aor).map_or_else(Vec::new, |b| {
                        b.iter().filter(|b| b.persistent).cloned().collect()
                    });
                    batch.push(Aor {
                        tenant: table.name.clone(),
                        aor,
                        bindings,
                    });
                }
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        let batch = Arc::new(batch);
        let written = batch.clone();
        match storage.write(move |conn| write(conn, &written)) {
            Ok(()) => Ok(batch.len()),
            Err(err) => {
                self.mark_again(&batch);
                Err(err)
            }
        }
    }

    /// Marks the addresses of a failed write to be written again.
    fn mark_again(&self, batch: &[Aor]) {
        for item in batch {
            let table = self.tenant_or_new(&item.tenant);
            let mut shard = self.shard(&table, &item.aor).lock();
            if shard.unwritten.insert(item.aor.clone()) {
                table.unwritten.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Loads the persistent bindings still live at `now` from the
    /// database (at start, before anything is saved); how many.
    pub fn load(&self, storage: &Storage, now: i64) -> Result<usize, StorageError> {
        let rows = storage.write(move |conn| read_all(conn, now))?;
        let n = rows.len();
        for (tenant, aor, binding) in rows {
            let table = self.tenant_or_new(&tenant);
            let shard = self.shard(&table, &aor);
            table.insert_loaded(shard, &aor, binding);
        }
        Ok(n)
    }
}

/// Replaces the rows of each address of record of `batch`, in one
/// transaction.
fn write(conn: &mut Connection, batch: &[Aor]) -> Result<(), StorageError> {
    let tx = conn.transaction()?;
    {
        let mut delete =
            tx.prepare_cached("DELETE FROM location WHERE tenant = ?1 AND aor = ?2")?;
        let mut insert = tx.prepare_cached(
            "INSERT OR REPLACE INTO location (tenant, aor, contact, expires, q, call_id, cseq,
                 path, received, user_agent, methods, nat, persistent, instance, reg_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 1, ?13, ?14)",
        )?;
        for item in batch {
            let (tenant, aor) = (&*item.tenant, &*item.aor);
            delete.execute(params![tenant, aor])?;
            for b in &item.bindings {
                insert.execute(params![
                    tenant,
                    aor,
                    b.contact,
                    b.expires,
                    f64::from(b.q),
                    b.call_id,
                    b.cseq,
                    b.path.join("\n"),
                    b.received.as_deref().unwrap_or_default(),
                    b.user_agent,
                    b.methods.join(","),
                    b.nat,
                    b.instance,
                    b.reg_id,
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// Every persistent binding live at `now`, with its tenant and address.
fn read_all(
    conn: &mut Connection,
    now: i64,
) -> Result<Vec<(String, String, Binding)>, StorageError> {
    let mut stmt = conn.prepare(
        "SELECT tenant, aor, contact, expires, q, call_id, cseq, path, received, user_agent,
                methods, nat, instance, reg_id
         FROM location WHERE persistent = 1 AND expires > ?1",
    )?;
    let rows = stmt.query_map(params![now], |r| {
        let path: String = r.get(7)?;
        let received: String = r.get(8)?;
        let methods: String = r.get(10)?;
        let binding = Binding {
            contact: r.get(2)?,
            expires: r.get(3)?,
            q: r.get::<_, f64>(4)? as f32,
            call_id: r.get(5)?,
            cseq: r.get(6)?,
            path: path
                .split('\n')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            received: (!received.is_empty()).then_some(received),
            user_agent: r.get(9)?,
            methods: methods
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            nat: r.get(11)?,
            instance: r.get(12)?,
            reg_id: r.get(13)?,
            persistent: true,
        };
        Ok((r.get(0)?, r.get(1)?, binding))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Removes expired bindings from the database (the purge timer); how many.
pub fn purge_expired(storage: &Storage, now: i64) -> Result<usize, StorageError> {
    storage.write(move |conn| {
        Ok(conn
            .prepare_cached("DELETE FROM location WHERE expires <= ?1")?
            .execute(params![now])?)
    })
}

/// Removes the bindings saved without persistence (at start-up: a wisp
/// before the bindings were kept in memory wrote them too; they belonged
/// to the process that stopped, as with usrloc's db_mode 0).
pub fn drop_volatile(storage: &Storage) -> Result<usize, StorageError> {
    storage.write(|conn| Ok(conn.execute("DELETE FROM location WHERE persistent = 0", [])?))
}
