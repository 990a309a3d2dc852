//! The PostgreSQL state backend: one state per schema, a row per resource,
//! every change one transaction, locks that cannot go stale.
//!
//! - Tables (in the state's schema, made and migrated by cardform itself,
//!   see [`schema`]): `meta` (lineage, serial, binding), `resources`
//!   (address -> the resource as applied), `intents` (creates under way),
//!   `forgotten` (template ids the state let go), `locks` (who holds which
//!   lock, for messages), `backups` (the last known good snapshot).
//! - Durability as sled's: a [`Durability::Flushed`] write commits
//!   synchronously; a [`Durability::Deferred`] one commits with
//!   `synchronous_commit = off`, which PostgreSQL writes to disk within its
//!   WAL writer's delay (200 ms by default) or with the next synchronous
//!   commit, whichever is first: the same promise.
//! - Locks (see [`lock`]): a session-level advisory lock held on the store's
//!   own connection, so a killed or disconnected run releases it with the
//!   connection; a row in `locks` says who holds it. Read-only commands take
//!   no lock and read the last committed state.
//! - The connection lives on a thread of its own ([`worker`]): the store's
//!   methods are synchronous and are called from async code, where the
//!   synchronous client may not run.

pub mod account;
pub mod backend;
pub mod cards;
pub mod lock;
pub mod schema;
pub mod url;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use postgres::Client;

use self::account::{Account, FORGOTTEN, INTENT, RESOURCE};
use self::worker::Worker;
use crate::model::Address;
use crate::state::{
    Binding, Durability, Intent, Meta, ResourceState, Snapshot, StateError, StateStore,
};

pub use self::backend::PgBackend;
pub use self::url::PgUrl;

pub(crate) fn db_error(e: postgres::Error) -> StateError {
    if e.is_closed() {
        return StateError::Io(
            "the connection to PostgreSQL was lost; nothing more was recorded\nhint: check the database server, then run again: a re-run converges without duplicates".into(),
        );
    }
    let detail = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| {
            let mut s = e.to_string();
            if let Some(src) = std::error::Error::source(&e) {
                s.push_str(&format!(": {src}"));
            }
            s
        });
    StateError::Io(format!("PostgreSQL: {detail}"))
}

fn corrupt(key: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

/// A state in a PostgreSQL schema, locked for this run.
pub struct PgStore {
    worker: Worker,
}

/// Read the whole state in one snapshot-isolated transaction, its rows
/// added up against the integrity account (see [`account`]): a state
/// changed outside cardform is refused.
pub(crate) fn read_snapshot(c: &mut Client, s: &schema::Names) -> Result<Snapshot, StateError> {
    let (snap, recorded, found) = read_unchecked(c, s)?;
    if let Some(recorded) = recorded {
        account::verify(s, &recorded, &found)?;
    }
    Ok(snap)
}

/// The whole state as it is, with the account it records and the one its
/// rows add up to (for `state recover`, which reads a damaged state).
pub(crate) fn read_unchecked(
    c: &mut Client,
    s: &schema::Names,
) -> Result<(Snapshot, Option<Account>, Account), StateError> {
    let mut tx = c
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(db_error)?;
    let row = account::meta_row(&mut tx, s, false)?;
    let recorded = row.account;
    let mut found = Account::default();
    found.meta(&row.lineage, row.serial, row.binding.as_deref());
    let meta = Meta {
        lineage: row.lineage,
        serial: row.serial as u64,
        binding: match row.binding {
            Some(b) => Some(serde_json::from_str(&b).map_err(|e| corrupt("meta.binding", e))?),
            None => None,
        },
    };
    let mut resources = BTreeMap::new();
    for row in tx
        .query(&format!("SELECT address, record FROM {}", s.resources), &[])
        .map_err(db_error)?
    {
        let key: &str = row.get(0);
        found.add(RESOURCE, key, row.get(1));
        let mut r: ResourceState = serde_json::from_str(row.get(1)).map_err(|e| corrupt(key, e))?;
        crate::stores::migrate::resource(&mut r).map_err(|e| corrupt(key, e))?;
        resources.insert(r.address.clone(), r);
    }
    let mut intents = BTreeMap::new();
    for row in tx
        .query(&format!("SELECT address, intent FROM {}", s.intents), &[])
        .map_err(db_error)?
    {
        let key: &str = row.get(0);
        found.add(INTENT, key, row.get(1));
        let mut i: Intent = serde_json::from_str(row.get(1)).map_err(|e| corrupt(key, e))?;
        crate::stores::migrate::intent(&mut i).map_err(|e| corrupt(key, e))?;
        intents.insert(i.address.clone(), i);
    }
    let mut forgotten = BTreeMap::new();
    for row in tx
        .query(
            &format!("SELECT template_id, address FROM {}", s.forgotten),
            &[],
        )
        .map_err(db_error)?
    {
        let id: String = row.get(0);
        let address: &str = row.get(1);
        found.add(FORGOTTEN, &id, address);
        let address: Address = address.parse().map_err(|e| corrupt(&id, e))?;
        forgotten.insert(id, address);
    }
    tx.commit().map_err(db_error)?;
    Ok((
        Snapshot {
            meta,
            resources,
            intents,
            forgotten,
        },
        recorded,
        found,
    ))
}

/// What can be read of a state, damaged or not: every row that parses
/// (the rest skipped), the serial if `meta` is there (else 0).
pub(crate) fn salvage(c: &mut Client, s: &schema::Names) -> Result<Snapshot, StateError> {
    let mut snap = Snapshot::empty();
    if let Ok(meta) = account::meta_row(c, s, false) {
        snap.meta.lineage = meta.lineage;
        snap.meta.serial = meta.serial.max(0) as u64;
    }
    for row in c
        .query(&format!("SELECT record FROM {}", s.resources), &[])
        .map_err(db_error)?
    {
        if let Ok(mut r) = serde_json::from_str::<ResourceState>(row.get(0))
            && crate::stores::migrate::resource(&mut r).is_ok()
        {
            snap.resources.insert(r.address.clone(), r);
        }
    }
    for row in c
        .query(&format!("SELECT intent FROM {}", s.intents), &[])
        .map_err(db_error)?
    {
        if let Ok(mut i) = serde_json::from_str::<Intent>(row.get(0))
            && crate::stores::migrate::intent(&mut i).is_ok()
        {
            snap.intents.insert(i.address.clone(), i);
        }
    }
    Ok(snap)
}

/// One change: bump the serial (unless `bump` is false: an intent, which
/// no plan depends on), run `body`, account for what it changed (see
/// [`account`]), commit, with the durability asked.
fn change(
    c: &mut Client,
    s: &schema::Names,
    durability: Durability,
    bump: bool,
    body: impl FnOnce(&mut Rows<'_, '_>, i64) -> Result<(), postgres::Error>,
) -> Result<u64, StateError> {
    let mut tx = c.transaction().map_err(db_error)?;
    if durability == Durability::Deferred {
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .map_err(db_error)?;
    }
    // Locked for the transaction: changes (of any merchant) account one
    // after another.
    let before = account::meta_row(&mut tx, s, true)?;
    let mut delta = Account::default();
    delta.meta(&before.lineage, before.serial, before.binding.as_deref());
    let serial = before.serial + i64::from(bump);
    if bump {
        tx.execute(&format!("UPDATE {} SET serial = $1", s.meta), &[&serial])
            .map_err(db_error)?;
    }
    let mut rows = Rows {
        tx: &mut tx,
        s,
        delta: &mut delta,
    };
    body(&mut rows, serial).map_err(db_error)?;
    let after = account::meta_row(&mut tx, s, false)?;
    delta.meta(&after.lineage, after.serial, after.binding.as_deref());
    account::record(&mut tx, s, &delta).map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    Ok(serial as u64)
}

/// A change's rows, each write accounted for.
struct Rows<'a, 't> {
    tx: &'a mut postgres::Transaction<'t>,
    s: &'a schema::Names,
    delta: &'a mut Account,
}

impl Rows<'_, '_> {
    fn put_resource(
        &mut self,
        address: &str,
        merchant: &str,
        serial: i64,
        record: &str,
    ) -> Result<(), postgres::Error> {
        self.delete_resource(address)?;
        self.tx.execute(
            &format!(
                "INSERT INTO {} (address, merchant, serial, record) VALUES ($1, $2, $3, $4)",
                self.s.resources
            ),
            &[&address, &merchant, &serial, &record],
        )?;
        self.delta.add(RESOURCE, address, record);
        Ok(())
    }

    fn delete_resource(&mut self, address: &str) -> Result<Option<String>, postgres::Error> {
        let old = self.tx.query_opt(
            &format!(
                "DELETE FROM {} WHERE address = $1 RETURNING record",
                self.s.resources
            ),
            &[&address],
        )?;
        Ok(old.map(|row| {
            let text: String = row.get(0);
            self.delta.remove(RESOURCE, address, &text);
            text
        }))
    }

    fn put_intent(
        &mut self,
        address: &str,
        merchant: &str,
        text: &str,
    ) -> Result<(), postgres::Error> {
        self.delete_intent(address)?;
        self.tx.execute(
            &format!(
                "INSERT INTO {} (address, merchant, intent) VALUES ($1, $2, $3)",
                self.s.intents
            ),
            &[&address, &merchant, &text],
        )?;
        self.delta.add(INTENT, address, text);
        Ok(())
    }

    fn delete_intent(&mut self, address: &str) -> Result<Option<String>, postgres::Error> {
        let old = self.tx.query_opt(
            &format!(
                "DELETE FROM {} WHERE address = $1 RETURNING intent",
                self.s.intents
            ),
            &[&address],
        )?;
        Ok(old.map(|row| {
            let text: String = row.get(0);
            self.delta.remove(INTENT, address, &text);
            text
        }))
    }

    fn put_forgotten(&mut self, template_id: &str, address: &str) -> Result<(), postgres::Error> {
        if let Some(row) = self.tx.query_opt(
            &format!(
                "DELETE FROM {} WHERE template_id = $1 RETURNING address",
                self.s.forgotten
            ),
            &[&template_id],
        )? {
            let old: String = row.get(0);
            self.delta.remove(FORGOTTEN, template_id, &old);
        }
        self.tx.execute(
            &format!(
                "INSERT INTO {} (template_id, address) VALUES ($1, $2)",
                self.s.forgotten
            ),
            &[&template_id, &address],
        )?;
        self.delta.add(FORGOTTEN, template_id, address);
        Ok(())
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("bug: state records always serialize")
}

impl PgStore {
    pub(crate) fn new(worker: Worker) -> Self {
        PgStore { worker }
    }

    fn names(&self) -> Arc<schema::Names> {
        self.worker.names()
    }
}

impl Drop for PgStore {
    /// Say the lock is free (the session's end frees the lock itself).
    fn drop(&mut self) {
        let s = self.names();
        let _ = self.worker.call(move |c| {
            c.execute(
                &format!(
                    "DELETE FROM {} WHERE backend_pid = pg_backend_pid()",
                    s.locks
                ),
                &[],
            )
            .map_err(db_error)
        });
    }
}

impl StateStore for PgStore {
    fn snapshot(&self) -> Result<Snapshot, StateError> {
        let s = self.names();
        self.worker.call(move |c| read_snapshot(c, &s))
    }

    fn commit(&self, r: &ResourceState, durability: Durability) -> Result<u64, StateError> {
        let s = self.names();
        let (address, merchant, record) = (
            r.address.to_string(),
            r.address.merchant.to_string(),
            json(r),
        );
        let is_template = r.kind == crate::model::Kind::Template;
        let new_id = r.ids.template_id.clone();
        let job = move |c: &mut Client| {
            change(c, &s, durability, true, |rows, serial| {
                let old = rows.delete_resource(&address)?;
                // A template replaced: its old id is let go, and remembered.
                if is_template
                    && let Some(t) = old
                        .as_deref()
                        .and_then(|t| serde_json::from_str::<ResourceState>(t).ok())
                        .and_then(|r| r.ids.template_id)
                    && new_id.as_ref() != Some(&t)
                {
                    rows.put_forgotten(&t, &address)?;
                }
                rows.put_resource(&address, &merchant, serial, &record)?;
                rows.delete_intent(&address)?;
                Ok(())
            })
        };
        // Deferred or not, the commit is waited for (its serial is the
        // answer); a deferred one just does not wait for the disk.
        self.worker.call(job)
    }

    fn flush(&self) -> Result<(), StateError> {
        let s = self.names();
        // A synchronous commit puts every earlier asynchronous one on disk
        // (the WAL is flushed in order).
        self.worker.call(move |c| {
            let mut tx = c.transaction().map_err(db_error)?;
            tx.execute(&format!("UPDATE {} SET serial = serial", s.meta), &[])
                .map_err(db_error)?;
            tx.commit().map_err(db_error)
        })
    }

    fn forget(&self, address: &Address) -> Result<u64, StateError> {
        let s = self.names();
        let key = address.to_string();
        let is_template = address.kind == crate::model::Kind::Template;
        self.worker.call(move |c| {
            change(c, &s, Durability::Flushed, true, |rows, _| {
                let old = rows.delete_resource(&key)?;
                let id = old
                    .as_deref()
                    .and_then(|t| serde_json::from_str::<ResourceState>(t).ok())
                    .and_then(|r| r.ids.template_id);
                if is_template && let Some(id) = id {
                    rows.put_forgotten(&id, &key)?;
                }
                rows.delete_intent(&key)?;
                Ok(())
            })
        })
    }

    fn begin(&self, intent: &Intent) -> Result<(), StateError> {
        let s = self.names();
        let (address, merchant, text) = (
            intent.address.to_string(),
            intent.address.merchant.to_string(),
            json(intent),
        );
        self.worker
            .call(move |c| {
                change(c, &s, Durability::Flushed, false, |rows, _| {
                    rows.put_intent(&address, &merchant, &text)
                })
            })
            .map(|_| ())
    }

    fn abandon(&self, address: &Address) -> Result<(), StateError> {
        let s = self.names();
        let key = address.to_string();
        self.worker
            .call(move |c| {
                change(c, &s, Durability::Flushed, false, |rows, _| {
                    rows.delete_intent(&key).map(|_| ())
                })
            })
            .map(|_| ())
    }

    fn replace_all(&self, snap: &Snapshot) -> Result<(), StateError> {
        let s = self.names();
        let snap = snap.clone();
        self.worker.call(move |c| write_all(c, &s, &snap))
    }

    fn bind(&self, binding: &Binding) -> Result<(), StateError> {
        let s = self.names();
        let text = json(binding);
        self.worker
            .call(move |c| {
                change(c, &s, Durability::Flushed, true, |rows, _| {
                    rows.tx
                        .execute(&format!("UPDATE {} SET binding = $1", s.meta), &[&text])?;
                    Ok(())
                })
            })
            .map(|_| ())
    }

    fn rename(&self, from: &Address, to: &Address) -> Result<u64, StateError> {
        let s = self.names();
        let (from_key, from_merchant, to_key, to_merchant) = (
            from.to_string(),
            from.merchant.to_string(),
            to.to_string(),
            to.merchant.to_string(),
        );
        let to = to.clone();
        self.worker.call(move |c| {
            change(c, &s, Durability::Flushed, true, |rows, serial| {
                if let Some(text) = rows.delete_resource(&from_key)? {
                    match serde_json::from_str::<ResourceState>(&text) {
                        Ok(mut r) => {
                            r.move_to(&to);
                            rows.put_resource(&to_key, &to_merchant, serial, &json(&r))?;
                        }
                        // Unreadable: left where it was.
                        Err(_) => rows.put_resource(&from_key, &from_merchant, serial, &text)?,
                    }
                }
                if let Some(text) = rows.delete_intent(&from_key)? {
                    match serde_json::from_str::<Intent>(&text) {
                        Ok(mut i) => {
                            i.address = to.clone();
                            rows.put_intent(&to_key, &to_merchant, &json(&i))?;
                        }
                        Err(_) => rows.put_intent(&from_key, &from_merchant, &text)?,
                    }
                }
                Ok(())
            })
        })
    }
}

/// Replace everything with `snap`, in one transaction.
pub(crate) fn write_all(
    c: &mut Client,
    s: &schema::Names,
    snap: &Snapshot,
) -> Result<(), StateError> {
    let mut tx = c.transaction().map_err(db_error)?;
    let binding = snap.meta.binding.as_ref().map(json);
    let serial = snap.meta.serial as i64;
    let run = |tx: &mut postgres::Transaction<'_>| -> Result<(), postgres::Error> {
        tx.batch_execute(&format!(
            "DELETE FROM {}; DELETE FROM {}; DELETE FROM {};",
            s.resources, s.intents, s.forgotten
        ))?;
        // (Inserted if a hand deleted it: `state recover` rebuilds it.)
        tx.execute(
            &format!(
                "INSERT INTO {} (id, lineage, serial, binding) VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET lineage = $1, serial = $2, binding = $3",
                s.meta
            ),
            &[&snap.meta.lineage, &serial, &binding],
        )?;
        let insert_r = tx.prepare(&format!(
            "INSERT INTO {} (address, merchant, serial, record) VALUES ($1, $2, $3, $4)",
            s.resources
        ))?;
        for r in snap.resources.values() {
            tx.execute(
                &insert_r,
                &[
                    &r.address.to_string(),
                    &r.address.merchant.as_str(),
                    &serial,
                    &json(r),
                ],
            )?;
        }
        let insert_i = tx.prepare(&format!(
            "INSERT INTO {} (address, merchant, intent) VALUES ($1, $2, $3)",
            s.intents
        ))?;
        for i in snap.intents.values() {
            tx.execute(
                &insert_i,
                &[
                    &i.address.to_string(),
                    &i.address.merchant.as_str(),
                    &json(i),
                ],
            )?;
        }
        for (t, a) in &snap.forgotten {
            tx.execute(
                &format!(
                    "INSERT INTO {} (template_id, address) VALUES ($1, $2)",
                    s.forgotten
                ),
                &[t, &a.to_string()],
            )?;
        }
        Ok(())
    };
    // Everything replaced: the account counted afresh from the rows written.
    let run = |tx: &mut postgres::Transaction<'_>| -> Result<(), StateError> {
        run(tx).map_err(db_error)?;
        let a = account::count(tx, s)?;
        account::set(tx, s, &a).map_err(db_error)
    };
    run(&mut tx)?;
    tx.commit().map_err(db_error)
}
