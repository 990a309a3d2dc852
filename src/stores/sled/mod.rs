//! The sled-backed state store: the only file that imports sled for state.
//!
//! Trees:
//! - `records`: address -> one [`Record`] (JSON): the resource as applied and
//!   the intent of a create under way, together, so that every change to an
//!   address is a single-key write: atomic without a sled transaction;
//! - `meta`: lineage, serial, and the layout `format`.
//!
//! A change bumps the serial first (an atomic update of its own key), then
//! writes the record: a crash between the two leaves a serial that grew for
//! nothing, which at worst makes a saved plan stale. sled transactions and
//! batches are kept for the rare whole-store writes (import, migration): each
//! one forces two log writes and a sync, which costs more than the change.
//!
//! A write is flushed to disk before the call returns, unless it is a
//! [`Durability::Deferred`] commit: sled then flushes it within
//! [`FLUSH_EVERY_MS`], or with the next flushed write (sled's log is recovered
//! in order, so a later flush covers every earlier write).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sled::Transactional;

pub mod backend;
pub mod backup;

/// The operation that rebuilds a store from its backup.
pub(crate) const RECOVER: &str = "state recover";
pub mod cards;
pub mod integrity;
pub mod lock;

use self::integrity::{Checkpoint, Hash, Tally};
use crate::model::Address;
use crate::state::LockInfo;
use crate::state::{
    Binding, Durability, FLUSH_EVERY_MS, Intent, Meta, ResourceState, Snapshot, StateError,
    StateStore,
};

/// The layout written by this version. Format 1 kept resources and intents in
/// trees of their own; format 2 had no integrity checkpoint; format 3
/// recorded templates and forms in the gateway's words (see
/// [`crate::state::migrate`]). All are migrated on open.
const FORMAT: u64 = 4;

/// Everything recorded about one address.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resource: Option<ResourceState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    intent: Option<Intent>,
    /// The write's sequence number (see [`integrity`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    stamp: u64,
    /// Hex of the hash this key had at the last checkpoint ("" for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    was: Option<String>,
    /// A forgotten address, until the next checkpoint drops it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    gone: bool,
}

/// A snapshot being read, record by record.
trait AddRecord {
    fn add(&mut self, record: Record);
}

impl AddRecord for Snapshot {
    fn add(&mut self, record: Record) {
        if let Some(r) = record.resource {
            self.resources.insert(r.address.clone(), r);
        }
        if let Some(i) = record.intent {
            self.intents.insert(i.address.clone(), i);
        }
    }
}

/// A record's integrity fields alone: read without building the resource.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    stamp: u64,
    #[serde(default)]
    gone: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The running integrity account (see [`integrity`]): kept in memory by the
/// one process that holds the store, updated with every write.
#[derive(Default)]
struct Live {
    /// Count and digest of the live records now.
    tally: Tally,
    /// The hash of each live record now.
    hashes: std::collections::HashMap<Vec<u8>, Hash>,
    /// Keys written since the last checkpoint, with their hash at it.
    at_checkpoint: std::collections::HashMap<Vec<u8>, Option<Hash>>,
    /// Keys forgotten since the last checkpoint (tombstones on disk).
    tombstones: Vec<Vec<u8>>,
    /// The last write's stamp.
    stamp: u64,
}

pub struct SledStore {
    db: sled::Db,
    records: sled::Tree,
    meta: sled::Tree,
    /// template_id -> address, for templates forgotten (see `Snapshot::forgotten`).
    forgotten: sled::Tree,
    dir: PathBuf,
    group: crate::util::durable::GroupFlush,
    lineage: String,
    live: std::sync::Mutex<Live>,
    /// The records as `verify` read them on open, for the first snapshot
    /// (which a run takes at once) instead of reading the store twice;
    /// dropped by any write.
    opened: std::sync::Mutex<Option<Snapshot>>,
    /// Opened by [`SledStore::read`]: `verify` keeps the totals only, and
    /// nothing is written through this store.
    reading: bool,
}

fn io(e: impl std::fmt::Display) -> StateError {
    StateError::Io(e.to_string())
}

fn tx_io<E: std::fmt::Debug>(e: sled::transaction::TransactionError<E>) -> StateError {
    io(format!("{e:?}"))
}

impl SledStore {
    /// Open (creating if needed) and lock the store in `dir` for `operation`,
    /// waiting up to `timeout` for another holder.
    pub fn open(dir: &Path, operation: &str, timeout: Duration) -> Result<Self, StateError> {
        // A damaged store can make the storage library panic: that is a
        // damaged store, reported as one, never a crash.
        guarded(dir, || Self::open_unguarded(dir, operation, timeout, false))
    }

    /// The last committed state, checked like [`SledStore::open`] checks it,
    /// for a run that writes nothing: the per-record account a writer needs
    /// (a hash per key, ~100 bytes per record) is never built, and the store
    /// is closed before this returns. A store that needs migrating is
    /// opened for writing instead (migration writes).
    pub fn read(dir: &Path, operation: &str, timeout: Duration) -> Result<Snapshot, StateError> {
        guarded(dir, || {
            Self::open_unguarded(dir, operation, timeout, true)?.snapshot_unguarded()
        })
    }

    fn open_unguarded(
        dir: &Path,
        operation: &str,
        timeout: Duration,
        reading: bool,
    ) -> Result<Self, StateError> {
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
        let mut store = SledStore {
            records: db.open_tree("records").map_err(io)?,
            meta: db.open_tree("meta").map_err(io)?,
            forgotten: db.open_tree("forgotten").map_err(io)?,
            db,
            dir: dir.to_path_buf(),
            group: Default::default(),
            lineage: String::new(),
            live: Default::default(),
            opened: Default::default(),
            reading,
        };
        if store.meta.get("lineage").map_err(io)?.is_none() {
            // A new store, or one whose files were lost: the checkpoint
            // beside it tells which.
            if let Some(cp) = integrity::read(dir).map_err(|e| damaged(dir, e))?
                && cp.count > 0
            {
                return Err(damaged(
                    dir,
                    format!(
                        "its database is missing or empty, but it held {} record(s) when last written",
                        cp.count
                    ),
                ));
            }
            if !store.records.is_empty() {
                return Err(damaged(
                    dir,
                    "it holds records but no lineage or serial".into(),
                ));
            }
            // No checkpoint either, but the backup of an earlier state:
            // lost, not new (unless `state recover` is rebuilding it).
            if operation != RECOVER && backup::file(dir).exists() {
                return Err(damaged(
                    dir,
                    "its database and its integrity checkpoint are missing, but the backup of an earlier state is there".into(),
                ));
            }
            store
                .meta
                .insert("lineage", uuid::Uuid::new_v4().to_string().as_bytes())
                .map_err(io)?;
            store
                .meta
                .insert("serial", &0u64.to_be_bytes())
                .map_err(io)?;
            store
                .meta
                .insert("format", &FORMAT.to_be_bytes())
                .map_err(io)?;
            store.lineage = store.meta()?.lineage;
            store.flush_now()?;
        }
        store.lineage = store.meta()?.lineage;
        match read_u64(store.meta.get("format").map_err(io)?) {
            FORMAT => store.verify()?,
            v @ 0..=3 => {
                // Migrating writes: keep the whole account.
                store.reading = false;
                if v < 2 {
                    store.migrate_from_format_1()?;
                }
                if v < 3 {
                    // Format 2 had no checkpoint: take the first one now.
                    store.account()?;
                } else {
                    store.verify()?;
                }
                // Each record rewritten is accounted like any commit, so a
                // crash part way leaves a consistent store that migrates
                // the rest on the next open.
                store.migrate_words()?;
                store
                    .meta
                    .insert("format", &FORMAT.to_be_bytes())
                    .map_err(io)?;
                store.flush_now()?;
            }
            newer => {
                return Err(StateError::Open {
                    dir: dir.display().to_string(),
                    reason: format!(
                        "it was written by a newer cardform (state format {newer}, this version reads up to {FORMAT})"
                    ),
                });
            }
        }
        Ok(store)
    }

    /// Format 1: `resources` and `intents` trees. Moved into `records` in one
    /// transaction; the old trees are then dropped.
    fn migrate_from_format_1(&self) -> Result<(), StateError> {
        let resources = self.db.open_tree("resources").map_err(io)?;
        let intents = self.db.open_tree("intents").map_err(io)?;
        let mut records: std::collections::BTreeMap<Vec<u8>, Record> = Default::default();
        for item in resources.iter() {
            let (k, v) = item.map_err(io)?;
            records.entry(k.to_vec()).or_default().resource = Some(decode(&k, &v)?);
        }
        for item in intents.iter() {
            let (k, v) = item.map_err(io)?;
            records.entry(k.to_vec()).or_default().intent = Some(decode(&k, &v)?);
        }
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = records
            .into_iter()
            .map(|(k, r)| Ok((k, serde_json::to_vec(&r).map_err(io)?)))
            .collect::<Result<_, StateError>>()?;
        (&self.records, &self.meta)
            .transaction(|(rec, meta)| {
                for (k, v) in &encoded {
                    rec.insert(k.as_slice(), v.as_slice())?;
                }
                meta.insert("format", &2u64.to_be_bytes())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(tx_io)?;
        self.db.flush().map_err(io)?;
        self.db.drop_tree("resources").map_err(io)?;
        self.db.drop_tree("intents").map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }

    /// Format 3 -> 4: templates and forms recorded in the manifest's words.
    fn migrate_words(&self) -> Result<(), StateError> {
        let keys: Vec<sled::IVec> = self
            .records
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(io)?;
        for k in keys {
            let mut record = self.record(&k)?;
            let corrupt = |reason: String| StateError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: format!("cannot upgrade it to state format {FORMAT}: {reason}"),
            };
            let mut changed = false;
            if let Some(r) = record.resource.as_mut() {
                changed |= crate::stores::migrate::resource(r).map_err(corrupt)?;
            }
            if let Some(i) = record.intent.as_mut() {
                changed |= crate::stores::migrate::intent(i).map_err(corrupt)?;
            }
            if changed {
                self.put(&k, record)?;
            }
        }
        Ok(())
    }

    fn meta(&self) -> Result<Meta, StateError> {
        let lineage = self
            .meta
            .get("lineage")
            .map_err(io)?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        let binding = match self.meta.get("binding").map_err(io)? {
            Some(v) => Some(decode("binding".as_bytes(), &v)?),
            None => None,
        };
        Ok(Meta {
            lineage,
            serial: read_u64(self.meta.get("serial").map_err(io)?),
            binding,
        })
    }

    /// The serial grows by one; returns the new value.
    fn bump(&self) -> Result<u64, StateError> {
        let new = self
            .meta
            .update_and_fetch("serial", |old| {
                Some(
                    (read_u64(old.map(sled::IVec::from)) + 1)
                        .to_be_bytes()
                        .to_vec(),
                )
            })
            .map_err(io)?;
        Ok(read_u64(new))
    }

    fn record(&self, key: &[u8]) -> Result<Record, StateError> {
        match self.records.get(key).map_err(io)? {
            Some(v) => decode(key, &v),
            None => Ok(Record::default()),
        }
    }

    /// Write the record of `key` (an empty one is a tombstone until the
    /// next checkpoint), keeping the integrity account.
    fn put(&self, key: &[u8], mut record: Record) -> Result<(), StateError> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let prev = live.hashes.get(key).copied();
        let was = *live.at_checkpoint.entry(key.to_vec()).or_insert(prev);
        live.stamp += 1;
        record.stamp = live.stamp;
        record.was = Some(was.map(hex::encode).unwrap_or_default());
        record.gone = record.resource.is_none() && record.intent.is_none();
        let value = serde_json::to_vec(&record).map_err(io)?;
        self.records.insert(key, value.as_slice()).map_err(io)?;
        if let Some(p) = prev {
            live.tally.remove(&p);
            live.hashes.remove(key);
        }
        if record.gone {
            live.tombstones.push(key.to_vec());
        } else {
            let h = integrity::record_hash(key, &value);
            live.tally.add(&h);
            live.hashes.insert(key.to_vec(), h);
        }
        Ok(())
    }

    /// Rebuild the integrity account from the records on disk.
    fn account(&self) -> Result<(), StateError> {
        let mut live = Live {
            // Stamps never go back, whatever the records now say.
            stamp: self.live.lock().unwrap_or_else(|p| p.into_inner()).stamp,
            ..Live::default()
        };
        for item in self.records.iter() {
            let (k, v) = item.map_err(io)?;
            let r: Head = decode(&k, &v)?;
            live.stamp = live.stamp.max(r.stamp);
            if r.gone {
                live.tombstones.push(k.to_vec());
            } else {
                let h = integrity::record_hash(&k, &v);
                live.tally.add(&h);
                live.hashes.insert(k.to_vec(), h);
            }
        }
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = live;
        Ok(())
    }

    /// Check the records against the checkpoints (in the store and beside
    /// it), then take up the account where it was.
    fn verify(&self) -> Result<(), StateError> {
        let dir = &self.dir;
        let Some(cp) = self.meta.get("checkpoint").map_err(io)? else {
            return Err(damaged(dir, "its integrity checkpoint is missing".into()));
        };
        let cp: Checkpoint = decode(b"checkpoint", &cp)?;
        if cp.lineage != self.lineage {
            return Err(damaged(
                dir,
                "its checkpoint belongs to another state".into(),
            ));
        }
        match integrity::read(dir).map_err(|e| damaged(dir, e))? {
            Some(outside) if outside.lineage != cp.lineage => {
                return Err(damaged(
                    dir,
                    "`integrity.json` belongs to another state (lineage differs)".into(),
                ));
            }
            Some(outside) if outside.stamp > cp.stamp => {
                return Err(damaged(
                    dir,
                    format!(
                        "it lost writes that were on disk: its last checkpoint is write {}, `integrity.json` saw write {} ({} record(s))",
                        cp.stamp, outside.stamp, outside.count
                    ),
                ));
            }
            Some(outside) if outside.stamp == cp.stamp && outside != cp => {
                return Err(damaged(
                    dir,
                    "its checkpoint differs from `integrity.json` for the same write".into(),
                ));
            }
            Some(_) => {}
            None => {
                return Err(damaged(
                    dir,
                    format!("`{}` is missing", integrity::file(dir).display()),
                ));
            }
        }
        // One pass: check the records against the checkpoint, take up the
        // account where it was, and parse each record once, whole (the
        // first snapshot takes the records from here instead of reading
        // them again). Nothing is kept per record for the check itself.
        let mut check = integrity::Check::new(&cp);
        let mut live = Live {
            stamp: cp.stamp,
            ..Live::default()
        };
        let mut opened = Snapshot::empty();
        for item in self.records.iter() {
            let (k, v) = item.map_err(io)?;
            let mut record: Record = decode(&k, &v)?;
            let was = record.was.take();
            let seen = integrity::Seen {
                hash: integrity::record_hash(&k, &v),
                stamp: record.stamp,
                was: was.as_deref(),
                gone: record.gone,
            };
            check.see(&seen).map_err(|e| damaged(dir, e))?;
            live.stamp = live.stamp.max(seen.stamp);
            if self.reading {
                opened.add(record);
                continue;
            }
            if seen.stamp > cp.stamp {
                let was = match seen.was {
                    Some("") | None => None,
                    Some(w) => {
                        let mut b = [0u8; 32];
                        hex::decode_to_slice(w, &mut b).map_err(io)?;
                        Some(b)
                    }
                };
                live.at_checkpoint.insert(k.to_vec(), was);
            }
            if seen.gone {
                live.tombstones.push(k.to_vec());
            } else {
                live.tally.add(&seen.hash);
                live.hashes.insert(k.to_vec(), seen.hash);
            }
            opened.add(record);
        }
        check.finish().map_err(|e| damaged(dir, e))?;
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = live;
        *self.opened.lock().unwrap_or_else(|p| p.into_inner()) = Some(opened);
        Ok(())
    }

    /// Drop the tombstones and record a checkpoint of every write so far
    /// (in the store; `integrity.json` follows once it is on disk).
    fn checkpoint(&self) -> Result<Checkpoint, StateError> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for k in std::mem::take(&mut live.tombstones) {
            if !live.hashes.contains_key(&k) {
                self.records.remove(&k).map_err(io)?;
            }
        }
        live.at_checkpoint.clear();
        // The lineage as recorded now (an import may have replaced it).
        let lineage = self.meta()?.lineage;
        let cp = Checkpoint::new(&lineage, live.stamp, &live.tally);
        self.meta
            .insert("checkpoint", serde_json::to_vec(&cp).map_err(io)?)
            .map_err(io)?;
        Ok(cp)
    }

    /// Checkpoint, flush, then write `integrity.json`.
    fn flush_now(&self) -> Result<(), StateError> {
        let cp = self.checkpoint()?;
        self.db.flush().map_err(io)?;
        integrity::write(&self.dir, &cp).map_err(|e| {
            StateError::Io(format!(
                "cannot write `{}`: {e}",
                integrity::file(&self.dir).display()
            ))
        })
    }

    fn flush_as(&self, durability: Durability) -> Result<(), StateError> {
        match durability {
            Durability::Flushed => self.flush(),
            Durability::Deferred => Ok(()),
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        let dirty = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            !live.at_checkpoint.is_empty() || !live.tombstones.is_empty()
        };
        let _ = if dirty {
            self.flush_now()
        } else {
            self.db.flush().map(|_| ()).map_err(io)
        };
        if lock::read_info(&self.dir).is_some_and(|i| i.pid == std::process::id()) {
            let _ = std::fs::remove_file(lock::info_path(&self.dir));
        }
    }
}

fn read_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// What can still be read from a store database that will not open
/// cleanly (at `path`, moved aside by `state recover`): every record that
/// decodes; errors and panics end the reading, never the caller.
pub fn salvage(path: &Path) -> Snapshot {
    let mut snap = Snapshot::empty();
    let _ = guarded(path, || {
        let db = sled::Config::new().path(path).open().map_err(io)?;
        let records = db.open_tree("records").map_err(io)?;
        for item in records.iter() {
            let Ok((k, v)) = item else { break };
            let Ok(record) = decode::<Record>(&k, &v) else {
                continue;
            };
            if let Some(r) = record.resource {
                snap.resources.insert(r.address.clone(), r);
            }
            if let Some(i) = record.intent {
                snap.intents.insert(i.address.clone(), i);
            }
        }
        Ok(())
    });
    snap
}

fn damaged(dir: &Path, reason: String) -> StateError {
    StateError::Damaged {
        place: format!("`{}`", dir.display()),
        backup: format!("`{}`", backup::file(dir).display()),
        reason,
    }
}

/// Run `f`, turning a panic inside the storage library into a damaged-store
/// error (the panic's own report is kept off the terminal).
fn guarded<T>(dir: &Path, f: impl FnOnce() -> Result<T, StateError>) -> Result<T, StateError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        Err(damaged(
            dir,
            format!(
                "the storage library failed reading it ({})",
                crate::util::text::clip(&what, 200)
            ),
        ))
    })
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], v: &[u8]) -> Result<T, StateError> {
    serde_json::from_slice(v).map_err(|e| StateError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

impl SledStore {
    fn snapshot_unguarded(&self) -> Result<Snapshot, StateError> {
        let opened = self.opened.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut snap = match opened {
            Some(snap) => snap,
            None => {
                let mut snap = Snapshot::empty();
                for item in self.records.iter() {
                    let (k, v) = item.map_err(io)?;
                    snap.add(decode(&k, &v)?);
                }
                snap
            }
        };
        snap.meta = self.meta()?;
        for item in self.forgotten.iter() {
            let (k, v) = item.map_err(io)?;
            if let Ok(a) = String::from_utf8_lossy(&v).parse() {
                snap.forgotten
                    .insert(String::from_utf8_lossy(&k).into_owned(), a);
            }
        }
        Ok(snap)
    }
}

impl StateStore for SledStore {
    fn snapshot(&self) -> Result<Snapshot, StateError> {
        guarded(&self.dir, || self.snapshot_unguarded())
    }

    /// Durable before returning; concurrent callers share one fsync.
    fn flush(&self) -> Result<(), StateError> {
        self.group.flush(|| self.flush_now())
    }

    fn commit(&self, r: &ResourceState, durability: Durability) -> Result<u64, StateError> {
        let serial = self.bump()?;
        let key = r.address.to_string();
        // A template replaced: its old id is let go, and remembered.
        if r.kind == crate::model::Kind::Template
            && let Some(old) = self.record(key.as_bytes())?.resource
            && let Some(t) = old.ids.template_id
            && r.ids.template_id.as_ref() != Some(&t)
        {
            self.forgotten
                .insert(t.as_bytes(), key.as_bytes())
                .map_err(io)?;
        }
        let record = Record {
            resource: Some(r.clone()),
            ..Record::default()
        };
        self.put(r.address.to_string().as_bytes(), record)?;
        self.flush_as(durability)?;
        Ok(serial)
    }

    fn forget(&self, address: &Address) -> Result<u64, StateError> {
        let serial = self.bump()?;
        let key = address.to_string();
        if let Some(t) = self
            .record(key.as_bytes())?
            .resource
            .and_then(|r| r.ids.template_id)
            .filter(|_| address.kind == crate::model::Kind::Template)
        {
            self.forgotten
                .insert(t.as_bytes(), key.as_bytes())
                .map_err(io)?;
        }
        self.put(key.as_bytes(), Record::default())?;
        self.flush()?;
        Ok(serial)
    }

    fn begin(&self, intent: &Intent) -> Result<(), StateError> {
        let key = intent.address.to_string();
        // Only this run writes (it holds the lock) and only one change works on
        // an address at a time, so read-then-write cannot race.
        let mut record = self.record(key.as_bytes())?;
        record.intent = Some(intent.clone());
        self.put(key.as_bytes(), record)?;
        self.flush()
    }

    fn abandon(&self, address: &Address) -> Result<(), StateError> {
        let key = address.to_string();
        let mut record = self.record(key.as_bytes())?;
        record.intent = None;
        self.put(key.as_bytes(), record)?;
        self.flush()
    }

    fn replace_all(&self, snap: &Snapshot) -> Result<(), StateError> {
        self.opened.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut records: std::collections::BTreeMap<String, Record> = Default::default();
        for r in snap.resources.values() {
            records.entry(r.address.to_string()).or_default().resource = Some(r.clone());
        }
        for i in snap.intents.values() {
            records.entry(i.address.to_string()).or_default().intent = Some(i.clone());
        }
        let encoded: Vec<(String, Vec<u8>)> = records
            .iter()
            .map(|(k, r)| Ok((k.clone(), serde_json::to_vec(r).map_err(io)?)))
            .collect::<Result<_, StateError>>()?;
        let binding = match &snap.meta.binding {
            Some(b) => Some(serde_json::to_vec(b).map_err(io)?),
            None => None,
        };
        let old: Vec<sled::IVec> = self
            .records
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(io)?;
        (&self.records, &self.meta)
            .transaction(|(rec, meta)| {
                for k in &old {
                    rec.remove(k)?;
                }
                for (k, v) in &encoded {
                    rec.insert(k.as_bytes(), v.as_slice())?;
                }
                meta.insert("lineage", snap.meta.lineage.as_bytes())?;
                meta.insert("serial", &snap.meta.serial.to_be_bytes())?;
                match &binding {
                    Some(b) => meta.insert("binding", b.as_slice())?,
                    None => meta.remove("binding")?,
                };
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(tx_io)?;
        self.forgotten.clear().map_err(io)?;
        for (t, a) in &snap.forgotten {
            self.forgotten
                .insert(t.as_bytes(), a.to_string().as_bytes())
                .map_err(io)?;
        }
        // The records were written whole: account for them afresh.
        self.account()?;
        self.flush_now()
    }

    fn rename(&self, from: &Address, to: &Address) -> Result<u64, StateError> {
        let serial = self.bump()?;
        let (from_key, to_key) = (from.to_string(), to.to_string());
        let old = self.record(from_key.as_bytes())?;
        let mut record = Record {
            resource: old.resource,
            intent: old.intent,
            ..Record::default()
        };
        if let Some(r) = record.resource.as_mut() {
            r.move_to(to);
        }
        if let Some(i) = record.intent.as_mut() {
            i.address = to.clone();
        }
        // The new address first: a crash between the two writes leaves the
        // record twice, never nowhere.
        self.put(to_key.as_bytes(), record)?;
        self.put(from_key.as_bytes(), Record::default())?;
        self.flush()?;
        Ok(serial)
    }

    fn bind(&self, binding: &Binding) -> Result<(), StateError> {
        self.bump()?;
        let value = serde_json::to_vec(binding).map_err(io)?;
        self.meta.insert("binding", value).map_err(io)?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn resource(address: &Address, template_id: &str) -> ResourceState {
        ResourceState {
            address: address.clone(),
            kind: address.kind,
            ids: crate::state::Ids {
                template_id: Some(template_id.into()),
                ..Default::default()
            },
            hash: "h".into(),
            attrs: serde_json::value::to_raw_value(&serde_json::json!({"a": 1})).unwrap(),
            applied_at: "2026-11-22T00:00:00Z".into(),
        }
    }

    fn intent(address: &Address) -> Intent {
        Intent {
            address: address.clone(),
            request_id: "r1".into(),
            request: serde_json::json!({"request_id": "r1"}),
            hash: "h2".into(),
            attrs: serde_json::json!({}),
            started_at: "2026-11-22T00:00:00Z".into(),
        }
    }

    #[test]
    fn a_replace_keeps_the_old_resource_beside_its_intent_until_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), "test", Duration::ZERO).unwrap();
        let a = Address::new("m", Kind::Template, "gold");
        store
            .commit(&resource(&a, "OLD"), Durability::Flushed)
            .unwrap();
        store.begin(&intent(&a)).unwrap();
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.resources[&a].ids.template_id.as_deref(), Some("OLD"));
        assert_eq!(snap.intents[&a].request_id, "r1");
        store
            .commit(&resource(&a, "NEW"), Durability::Deferred)
            .unwrap();
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.resources[&a].ids.template_id.as_deref(), Some("NEW"));
        assert!(snap.intents.is_empty());
        assert_eq!(snap.meta.serial, 2);
        store.forget(&a).unwrap();
        let snap = store.snapshot().unwrap();
        assert!(snap.resources.is_empty());
        assert_eq!(snap.meta.serial, 3);
    }

    #[test]
    fn a_panic_in_the_storage_library_is_a_damaged_store() {
        let dir = tempfile::tempdir().unwrap();
        let r: Result<(), StateError> =
            guarded(dir.path(), || panic!("tried to serialize Uninitialized"));
        let e = r.unwrap_err().to_string();
        assert!(e.contains("is damaged"), "{e}");
        assert!(e.contains("tried to serialize Uninitialized"), "{e}");
    }

    #[test]
    fn a_state_reopens_after_writes_forgets_and_reopens_again() {
        let dir = tempfile::tempdir().unwrap();
        let a = Address::new("m", Kind::Template, "gold");
        let b = Address::new("m", Kind::Template, "silver");
        {
            let store = SledStore::open(dir.path(), "test", Duration::from_secs(10)).unwrap();
            store
                .commit(&resource(&a, "A"), Durability::Flushed)
                .unwrap();
            store
                .commit(&resource(&b, "B"), Durability::Deferred)
                .unwrap();
            store.forget(&a).unwrap();
            // Deferred writes after the last checkpoint, then a drop.
            store
                .commit(&resource(&b, "B2"), Durability::Deferred)
                .unwrap();
        }
        let store = SledStore::open(dir.path(), "test", Duration::from_secs(10)).unwrap();
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.resources.len(), 1);
        assert_eq!(snap.resources[&b].ids.template_id.as_deref(), Some("B2"));
        assert_eq!(snap.forgotten.get("A"), Some(&a));
    }

    #[test]
    fn the_sled_backend_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        crate::stores::contract::keeps_the_contract(&backend::SledBackend::new(dir.path()), false);
    }

    #[test]
    fn format_1_is_migrated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let a = Address::new("m", Kind::Template, "gold");
        let b = Address::new("m", Kind::Template, "silver");
        {
            // Write a format 1 store by hand.
            let db = sled::open(dir.path().join("store")).unwrap();
            let meta = db.open_tree("meta").unwrap();
            meta.insert("lineage", "L1").unwrap();
            meta.insert("serial", &7u64.to_be_bytes()).unwrap();
            let resources = db.open_tree("resources").unwrap();
            resources
                .insert(
                    a.to_string(),
                    serde_json::to_vec(&resource(&a, "T1")).unwrap(),
                )
                .unwrap();
            let intents = db.open_tree("intents").unwrap();
            intents
                .insert(b.to_string(), serde_json::to_vec(&intent(&b)).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), "test", Duration::ZERO).unwrap();
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.meta.lineage, "L1");
        assert_eq!(snap.meta.serial, 7);
        assert_eq!(snap.resources[&a].ids.template_id.as_deref(), Some("T1"));
        assert_eq!(snap.intents[&b].request_id, "r1");
        assert!(!store.db.tree_names().iter().any(|n| n == b"resources"));
        drop(store);
        // Opening again finds format 2 and changes nothing. (sled's threads
        // may hold the file lock for a moment after the drop: wait for it.)
        let store = SledStore::open(dir.path(), "test", Duration::from_secs(10)).unwrap();
        assert_eq!(store.snapshot().unwrap().resources.len(), 1);
    }
}
