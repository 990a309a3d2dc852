//! The state-backend seam: what a backend must do besides recording
//! ([`Backend`]): open a store with its
//! lock held, say who holds the lock, break a stale one, keep a
//! last-known-good backup and recover from it. Stores migrate old records on
//! open (see [`super::migrate`]).
//!
//! Owns the contract; must never know how a backend keeps its data (the
//! backends are `crate::stores`, which also maps a location to one).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cards::CardLedger;
use super::{Ids, Snapshot, StateError, StateStore};
use crate::model::Address;

/// Who holds a state's lock, for messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub pid: u32,
    pub host: String,
    pub operation: String,
    pub since: String,
}

impl LockInfo {
    pub fn current(operation: &str) -> Self {
        LockInfo {
            pid: std::process::id(),
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into()),
            operation: operation.to_string(),
            since: crate::state::now_rfc3339(),
        }
    }

    pub fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the state in `{dir}` is locked by `cardform {}` (pid {} on {}) since {}{}\nhint: wait for it, pass --lock-timeout 5m to wait, or if that run is gone, `cardform state unlock --force`",
        holder.operation, holder.pid, holder.host, holder.since,
        if waited.is_zero() { String::new() } else { format!("; waited {:.0?}", waited) }
    )]
    Held {
        dir: String,
        holder: LockInfo,
        waited: Duration,
    },
    #[error(
        "the state in `{dir}` is in use by another process{}\nhint: wait for it or pass --lock-timeout 5m",
        if waited.is_zero() { String::new() } else { format!(" (waited {:.0?})", waited) }
    )]
    Busy { dir: String, waited: Duration },
}

/// What `state recover` did.
#[derive(Debug)]
pub struct Recovered {
    /// Where the backup came from.
    pub backup: String,
    /// Where the damaged state was kept.
    pub moved_to: String,
    pub restored: usize,
    pub serial: u64,
    pub not_restored: Vec<NotRestored>,
}

/// What the damaged state still shows that the backup lacks.
#[derive(Debug)]
pub enum NotRestored {
    /// Ids recorded after the backup was written.
    Ids(Address, Ids),
    /// A create in doubt: it may exist at Alipay.
    InDoubt(Address, String),
}

/// What `salvaged` (read from a damaged state) shows that `backup` lacks:
/// ids recorded later, creates in doubt.
pub fn not_restored(backup: &super::Snapshot, salvaged: &super::Snapshot) -> Vec<NotRestored> {
    let mut out = Vec::new();
    for (address, r) in &salvaged.resources {
        if backup.resources.get(address).is_none_or(|b| b.ids != r.ids) {
            out.push(NotRestored::Ids(address.clone(), r.ids.clone()));
        }
    }
    for (address, i) in &salvaged.intents {
        if !backup.intents.contains_key(address) && !backup.resources.contains_key(address) {
            out.push(NotRestored::InDoubt(address.clone(), i.request_id.clone()));
        }
    }
    out
}

/// A kind of state storage.
pub trait Backend: Send + Sync {
    /// Where it is, for messages.
    fn describe(&self) -> String;
    /// Open the store, creating it if needed, with its lock held for
    /// `operation` until the store is dropped (waiting up to `timeout` for
    /// another holder). Old records are migrated here.
    fn open(&self, operation: &str, timeout: Duration) -> Result<Box<dyn StateStore>, StateError>;
    /// Open the store to change only these merchants' records: a backend
    /// that can lets runs on other merchants proceed at once; by default the
    /// whole state is locked.
    fn open_for(
        &self,
        operation: &str,
        timeout: Duration,
        merchants: &std::collections::BTreeSet<String>,
    ) -> Result<Box<dyn StateStore>, StateError> {
        let _ = merchants;
        self.open(operation, timeout)
    }
    /// The last committed state, for a command that only reads (`output`,
    /// `state list`, a plan). A backend that can must not wait for a writer;
    /// by default the store is opened (locked) just long enough to read.
    fn read(&self, operation: &str, timeout: Duration) -> Result<Snapshot, StateError> {
        self.open(operation, timeout)?.snapshot()
    }
    /// Whether a state is there to read: a command that only reads never
    /// creates one. A backend that cannot tell without connecting says yes.
    fn exists(&self) -> bool;
    /// Open the card ledger kept beside this state, with its own lock
    /// (held until the ledger drops).
    fn open_cards(
        &self,
        operation: &str,
        timeout: Duration,
    ) -> Result<Box<dyn CardLedger>, StateError>;
    /// Who holds the lock now, if anyone.
    fn lock_holder(&self) -> Option<LockInfo>;
    /// Clear the lock record of a run that is gone; refused while its holder
    /// still holds the lock. Returns what was cleared.
    fn force_unlock(&self) -> Result<Option<LockInfo>, StateError>;
    /// Keep `snap` as the last known good state.
    fn write_backup(&self, snap: &Snapshot) -> Result<(), StateError>;
    /// Rebuild a damaged state from the backup (a healthy one only with
    /// `force`), keeping the damaged one aside.
    fn recover(&self, force: bool) -> Result<Recovered, StateError>;
}
