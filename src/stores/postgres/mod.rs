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

pub mod backend;
pub mod cards;
pub mod lock;
pub mod schema;
pub mod url;
mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use postgres::Client;

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

/// Read the whole state in one snapshot-isolated transaction.
pub(crate) fn read_snapshot(c: &mut Client, s: &schema::Names) -> Result<Snapshot, StateError> {
    let mut tx = c
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(db_error)?;
    let row = tx
        .query_one(
            &format!("SELECT lineage, serial, binding FROM {}", s.meta),
            &[],
        )
        .map_err(db_error)?;
    let binding: Option<String> = row.get(2);
    let meta = Meta {
        lineage: row.get(0),
        serial: row.get::<_, i64>(1) as u64,
        binding: match binding {
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
        let address: Address = address.parse().map_err(|e| corrupt(&id, e))?;
        forgotten.insert(id, address);
    }
    tx.commit().map_err(db_error)?;
    Ok(Snapshot {
        meta,
        resources,
        intents,
        forgotten,
    })
}

/// One change: bump the serial, run `body`, commit, with the durability asked.
fn change(
    c: &mut Client,
    s: &schema::Names,
    durability: Durability,
    body: impl FnOnce(&mut postgres::Transaction<'_>, i64) -> Result<(), postgres::Error>,
) -> Result<u64, StateError> {
    let mut tx = c.transaction().map_err(db_error)?;
    if durability == Durability::Deferred {
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .map_err(db_error)?;
    }
    let serial: i64 = tx
        .query_one(
            &format!("UPDATE {} SET serial = serial + 1 RETURNING serial", s.meta),
            &[],
        )
        .map_err(db_error)?
        .get(0);
    body(&mut tx, serial).map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    Ok(serial as u64)
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
        let job = move |c: &mut Client| {
            change(c, &s, durability, |tx, serial| {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (address, merchant, serial, record) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (address) DO UPDATE SET merchant = $2, serial = $3, record = $4",
                        s.resources
                    ),
                    &[&address, &merchant, &serial, &record],
                )?;
                tx.execute(
                    &format!("DELETE FROM {} WHERE address = $1", s.intents),
                    &[&address],
                )?;
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
            change(c, &s, Durability::Flushed, |tx, _| {
                if is_template {
                    tx.execute(
                        &format!(
                            "INSERT INTO {f} (template_id, address)
                             SELECT record::json->'ids'->>'template_id', address FROM {r}
                             WHERE address = $1 AND record::json->'ids'->>'template_id' IS NOT NULL
                             ON CONFLICT (template_id) DO UPDATE SET address = EXCLUDED.address",
                            f = s.forgotten,
                            r = s.resources
                        ),
                        &[&key],
                    )?;
                }
                tx.execute(
                    &format!("DELETE FROM {} WHERE address = $1", s.resources),
                    &[&key],
                )?;
                tx.execute(
                    &format!("DELETE FROM {} WHERE address = $1", s.intents),
                    &[&key],
                )?;
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
        self.worker.call(move |c| {
            c.execute(
                &format!(
                    "INSERT INTO {} (address, merchant, intent) VALUES ($1, $2, $3)
                     ON CONFLICT (address) DO UPDATE SET merchant = $2, intent = $3",
                    s.intents
                ),
                &[&address, &merchant, &text],
            )
            .map_err(db_error)
            .map(|_| ())
        })
    }

    fn abandon(&self, address: &Address) -> Result<(), StateError> {
        let s = self.names();
        let key = address.to_string();
        self.worker.call(move |c| {
            c.execute(
                &format!("DELETE FROM {} WHERE address = $1", s.intents),
                &[&key],
            )
            .map_err(db_error)
            .map(|_| ())
        })
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
                change(c, &s, Durability::Flushed, |tx, _| {
                    tx.execute(&format!("UPDATE {} SET binding = $1", s.meta), &[&text])?;
                    Ok(())
                })
            })
            .map(|_| ())
    }

    fn rename(&self, from: &Address, to: &Address) -> Result<u64, StateError> {
        let s = self.names();
        let (from_key, to_key, to_merchant) =
            (from.to_string(), to.to_string(), to.merchant.to_string());
        let to = to.clone();
        self.worker.call(move |c| {
            change(c, &s, Durability::Flushed, |tx, serial| {
                if let Some(row) = tx.query_opt(
                    &format!("SELECT record FROM {} WHERE address = $1", s.resources),
                    &[&from_key],
                )? {
                    let text: String = row.get(0);
                    if let Ok(mut r) = serde_json::from_str::<ResourceState>(&text) {
                        r.address = to.clone();
                        tx.execute(
                            &format!(
                                "INSERT INTO {} (address, merchant, serial, record) VALUES ($1, $2, $3, $4)
                                 ON CONFLICT (address) DO UPDATE SET merchant = $2, serial = $3, record = $4",
                                s.resources
                            ),
                            &[&to_key, &to_merchant, &serial, &json(&r)],
                        )?;
                        tx.execute(
                            &format!("DELETE FROM {} WHERE address = $1", s.resources),
                            &[&from_key],
                        )?;
                    }
                }
                if let Some(row) = tx.query_opt(
                    &format!("SELECT intent FROM {} WHERE address = $1", s.intents),
                    &[&from_key],
                )? {
                    let text: String = row.get(0);
                    if let Ok(mut i) = serde_json::from_str::<Intent>(&text) {
                        i.address = to.clone();
                        tx.execute(
                            &format!(
                                "INSERT INTO {} (address, merchant, intent) VALUES ($1, $2, $3)
                                 ON CONFLICT (address) DO UPDATE SET merchant = $2, intent = $3",
                                s.intents
                            ),
                            &[&to_key, &to_merchant, &json(&i)],
                        )?;
                        tx.execute(
                            &format!("DELETE FROM {} WHERE address = $1", s.intents),
                            &[&from_key],
                        )?;
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
        tx.execute(
            &format!(
                "UPDATE {} SET lineage = $1, serial = $2, binding = $3",
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
    run(&mut tx).map_err(db_error)?;
    tx.commit().map_err(db_error)
}
