//! An in-memory backend: the state-backend contract with nothing on disk, for
//! tests of code above the seam (and the contract's own tests, which every
//! backend must pass: see `tests` below and in `sled`). Every write is
//! "durable" at once; the lock is a flag held while a store is open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::migrate;
use crate::model::{Address, Kind};
use crate::state::backend::{Backend, LockError, LockInfo, Recovered};
use crate::state::{Binding, Durability, Intent, ResourceState, Snapshot, StateError, StateStore};

#[derive(Default)]
struct Shared {
    state: Option<Snapshot>,
    backup: Option<Snapshot>,
    holder: Option<LockInfo>,
}

/// A backend whose states live as long as it does. Clones share them.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    shared: Arc<Mutex<Shared>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An open, locked in-memory store; dropping it releases the lock.
pub struct MemoryStore {
    shared: Arc<Mutex<Shared>>,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Snapshot) -> T) -> T {
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        f(s.state.as_mut().expect("an open store has a state"))
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).holder = None;
    }
}

impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        "an in-memory state".into()
    }

    fn open(&self, operation: &str, timeout: Duration) -> Result<Box<dyn StateStore>, StateError> {
        let mut s = self.shared();
        if let Some(holder) = &s.holder {
            return Err(LockError::Held {
                dir: self.describe(),
                holder: holder.clone(),
                waited: timeout.min(Duration::ZERO),
            }
            .into());
        }
        s.holder = Some(LockInfo::current(operation));
        let state = s.state.get_or_insert_with(|| {
            let mut snap = Snapshot::empty();
            snap.meta.lineage = uuid::Uuid::new_v4().to_string();
            snap
        });
        migrate::snapshot(state).map_err(|reason| StateError::Corrupt {
            key: "(memory)".into(),
            reason,
        })?;
        Ok(Box::new(MemoryStore {
            shared: self.shared.clone(),
        }))
    }

    fn exists(&self) -> bool {
        true
    }

    fn open_cards(
        &self,
        _operation: &str,
        _timeout: Duration,
    ) -> Result<Box<dyn crate::state::cards::CardLedger>, StateError> {
        Err(StateError::Refused(
            "an in-memory state keeps no card ledger".into(),
        ))
    }

    fn lock_holder(&self) -> Option<LockInfo> {
        self.shared().holder.clone()
    }

    fn force_unlock(&self) -> Result<Option<LockInfo>, StateError> {
        Ok(self.shared().holder.take())
    }

    fn write_backup(&self, snap: &Snapshot) -> Result<(), StateError> {
        self.shared().backup = Some(snap.clone());
        Ok(())
    }

    fn recover(&self, _force: bool) -> Result<Recovered, StateError> {
        let mut s = self.shared();
        let backup = s
            .backup
            .clone()
            .ok_or_else(|| StateError::Refused("there is no backup to recover from".into()))?;
        let serial = backup.meta.serial + 1;
        let mut restored = backup;
        restored.meta.serial = serial;
        let count = restored.resources.len();
        s.state = Some(restored);
        Ok(Recovered {
            backup: "memory".into(),
            moved_to: "(discarded)".into(),
            restored: count,
            serial,
            not_restored: Vec::new(),
        })
    }
}

impl StateStore for MemoryStore {
    fn snapshot(&self) -> Result<Snapshot, StateError> {
        Ok(self.with(|s| s.clone()))
    }

    fn commit(&self, r: &ResourceState, _: Durability) -> Result<u64, StateError> {
        Ok(self.with(|s| {
            s.meta.serial += 1;
            s.intents.remove(&r.address);
            // A template replaced: its old id is let go, and remembered.
            if let Some(old) = s.resources.insert(r.address.clone(), r.clone())
                && r.kind == Kind::Template
                && let Some(t) = old.ids.template_id
                && r.ids.template_id.as_ref() != Some(&t)
            {
                s.forgotten.insert(t, r.address.clone());
            }
            s.meta.serial
        }))
    }

    fn flush(&self) -> Result<(), StateError> {
        Ok(())
    }

    fn forget(&self, address: &Address) -> Result<u64, StateError> {
        Ok(self.with(|s| {
            s.meta.serial += 1;
            s.intents.remove(address);
            if let Some(t) = s
                .resources
                .remove(address)
                .and_then(|r| r.ids.template_id)
                .filter(|_| address.kind == Kind::Template)
            {
                s.forgotten.insert(t, address.clone());
            }
            s.meta.serial
        }))
    }

    fn begin(&self, intent: &Intent) -> Result<(), StateError> {
        self.with(|s| s.intents.insert(intent.address.clone(), intent.clone()));
        Ok(())
    }

    fn abandon(&self, address: &Address) -> Result<(), StateError> {
        self.with(|s| s.intents.remove(address));
        Ok(())
    }

    fn replace_all(&self, snap: &Snapshot) -> Result<(), StateError> {
        self.with(|s| *s = snap.clone());
        Ok(())
    }

    fn rename(&self, from: &Address, to: &Address) -> Result<u64, StateError> {
        Ok(self.with(|s| {
            s.meta.serial += 1;
            if let Some(mut r) = s.resources.remove(from) {
                r.move_to(to);
                s.resources.insert(to.clone(), r);
            }
            if let Some(mut i) = s.intents.remove(from) {
                i.address = to.clone();
                s.intents.insert(to.clone(), i);
            }
            s.meta.serial
        }))
    }

    fn bind(&self, binding: &Binding) -> Result<(), StateError> {
        self.with(|s| {
            s.meta.serial += 1;
            s.meta.binding = Some(binding.clone());
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_backend_keeps_the_contract() {
        crate::stores::contract::keeps_the_contract(&MemoryBackend::new(), false);
    }
}
