//! The sled-backed state store: the only file that imports sled for state.
//!
//! Trees: `resources` (address -> ResourceState JSON), `intents` (address ->
//! Intent JSON), `meta` (lineage, serial). Each change is one transaction over
//! the trees it touches and bumps the serial. It is flushed to disk before the
//! call returns, unless it is a [`Durability::Deferred`] commit: sled then
//! flushes it within [`FLUSH_EVERY_MS`], or with the next flushed write (sled's
//! log is recovered in order, so a later flush covers every earlier write).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sled::Transactional;

use super::lock::{self, LockInfo};
use super::{
    Durability, FLUSH_EVERY_MS, Intent, Meta, ResourceState, Snapshot, StateError, StateStore,
};
use crate::model::Address;

pub struct SledStore {
    db: sled::Db,
    resources: sled::Tree,
    intents: sled::Tree,
    meta: sled::Tree,
    dir: PathBuf,
    group: crate::durable::GroupFlush,
}

fn io(e: impl std::fmt::Display) -> StateError {
    StateError::Io(e.to_string())
}

impl SledStore {
    /// Open (creating if needed) and lock the store in `dir` for `operation`,
    /// waiting up to `timeout` for another holder.
    pub fn open(dir: &Path, operation: &str, timeout: Duration) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| StateError::Open {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let db = lock::acquire(dir, timeout, || {
            match sled::Config::new()
                .path(dir.join("store"))
                .flush_every_ms(Some(FLUSH_EVERY_MS))
                .open()
            {
                Ok(db) => Ok(Some(db)),
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("lock") =>
                {
                    Ok(None)
                }
                Err(e) => Err(StateError::Open {
                    dir: dir.display().to_string(),
                    reason: e.to_string(),
                }),
            }
        })?;
        let info = serde_json::to_vec_pretty(&LockInfo::current(operation)).map_err(io)?;
        std::fs::write(lock::info_path(dir), info).map_err(io)?;
        let store = SledStore {
            resources: db.open_tree("resources").map_err(io)?,
            intents: db.open_tree("intents").map_err(io)?,
            meta: db.open_tree("meta").map_err(io)?,
            db,
            dir: dir.to_path_buf(),
            group: Default::default(),
        };
        if store.meta.get("lineage").map_err(io)?.is_none() {
            store
                .meta
                .insert("lineage", uuid::Uuid::new_v4().to_string().as_bytes())
                .map_err(io)?;
            store
                .meta
                .insert("serial", &0u64.to_be_bytes())
                .map_err(io)?;
            store.db.flush().map_err(io)?;
        }
        Ok(store)
    }

    fn meta(&self) -> Result<Meta, StateError> {
        let lineage = self
            .meta
            .get("lineage")
            .map_err(io)?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        Ok(Meta {
            lineage,
            serial: read_serial(self.meta.get("serial").map_err(io)?),
        })
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        let _ = self.db.flush();
        if lock::read_info(&self.dir).is_some_and(|i| i.pid == std::process::id()) {
            let _ = std::fs::remove_file(lock::info_path(&self.dir));
        }
    }
}

fn read_serial(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn bump(
    meta: &sled::transaction::TransactionalTree,
) -> Result<u64, sled::transaction::ConflictableTransactionError<()>> {
    let serial = read_serial(meta.get("serial")?) + 1;
    meta.insert("serial", &serial.to_be_bytes())?;
    Ok(serial)
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(v).map_err(|e| StateError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

impl StateStore for SledStore {
    fn snapshot(&self) -> Result<Snapshot, StateError> {
        let mut snap = Snapshot::empty();
        snap.meta = self.meta()?;
        for item in self.resources.iter() {
            let (k, v) = item.map_err(io)?;
            let r: ResourceState = decode(&k, &v)?;
            snap.resources.insert(r.address.clone(), r);
        }
        for item in self.intents.iter() {
            let (k, v) = item.map_err(io)?;
            let i: Intent = decode(&k, &v)?;
            snap.intents.insert(i.address.clone(), i);
        }
        Ok(snap)
    }

    /// Durable before returning; concurrent callers share one fsync.
    fn flush(&self) -> Result<(), StateError> {
        self.group.flush(|| self.db.flush().map(|_| ()).map_err(io))
    }

    fn commit(&self, r: &ResourceState, durability: Durability) -> Result<u64, StateError> {
        let key = r.address.to_string();
        let value = serde_json::to_vec(r).map_err(io)?;
        let serial = (&self.resources, &self.intents, &self.meta)
            .transaction(|(res, int, meta)| {
                res.insert(key.as_bytes(), value.as_slice())?;
                int.remove(key.as_bytes())?;
                bump(meta)
            })
            .map_err(|e| io(format!("{e:?}")))?;
        if durability == Durability::Flushed {
            self.flush()?;
        }
        Ok(serial)
    }

    fn forget(&self, address: &Address) -> Result<u64, StateError> {
        let key = address.to_string();
        let serial = (&self.resources, &self.intents, &self.meta)
            .transaction(|(res, int, meta)| {
                res.remove(key.as_bytes())?;
                int.remove(key.as_bytes())?;
                bump(meta)
            })
            .map_err(|e| io(format!("{e:?}")))?;
        self.flush()?;
        Ok(serial)
    }

    fn begin(&self, intent: &Intent) -> Result<(), StateError> {
        let value = serde_json::to_vec(intent).map_err(io)?;
        self.intents
            .insert(intent.address.to_string().as_bytes(), value)
            .map_err(io)?;
        self.flush()
    }

    fn abandon(&self, address: &Address) -> Result<(), StateError> {
        self.intents
            .remove(address.to_string().as_bytes())
            .map_err(io)?;
        self.flush()
    }

    fn replace_all(&self, snap: &Snapshot) -> Result<(), StateError> {
        let records: Vec<(String, Vec<u8>)> = snap
            .resources
            .values()
            .map(|r| Ok((r.address.to_string(), serde_json::to_vec(r).map_err(io)?)))
            .collect::<Result<_, StateError>>()?;
        let intents: Vec<(String, Vec<u8>)> = snap
            .intents
            .values()
            .map(|i| Ok((i.address.to_string(), serde_json::to_vec(i).map_err(io)?)))
            .collect::<Result<_, StateError>>()?;
        let old_res: Vec<sled::IVec> = self
            .resources
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(io)?;
        let old_int: Vec<sled::IVec> = self
            .intents
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(io)?;
        (&self.resources, &self.intents, &self.meta)
            .transaction(|(res, int, meta)| {
                for k in &old_res {
                    res.remove(k)?;
                }
                for k in &old_int {
                    int.remove(k)?;
                }
                for (k, v) in &records {
                    res.insert(k.as_bytes(), v.as_slice())?;
                }
                for (k, v) in &intents {
                    int.insert(k.as_bytes(), v.as_slice())?;
                }
                meta.insert("lineage", snap.meta.lineage.as_bytes())?;
                meta.insert("serial", &snap.meta.serial.to_be_bytes())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| io(format!("{e:?}")))?;
        self.flush()
    }
}
