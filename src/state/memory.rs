//! An in-memory backend: the state-backend contract with nothing on disk, for
//! tests of code above the seam (and the contract's own tests, which every
//! backend must pass: see `tests` below and in `sled`). Every write is
//! "durable" at once; the lock is a flag held while a store is open.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::backend::{Backend, LockError, LockInfo, Recovered};
use super::{
    Binding, Durability, Intent, ResourceState, Snapshot, StateError, StateStore, migrate,
};
use crate::model::{Address, Kind};

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
            s.resources.insert(r.address.clone(), r.clone());
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
                r.address = to.clone();
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

/// The contract every backend keeps, run against each (`memory` here,
/// `sled` in its own tests).
#[cfg(test)]
pub(crate) mod contract {
    use super::*;
    use crate::state::Ids;

    fn resource(a: &Address, id: &str) -> ResourceState {
        ResourceState {
            address: a.clone(),
            kind: a.kind,
            ids: Ids {
                template_id: Some(id.into()),
                ..Ids::default()
            },
            hash: "h".into(),
            attrs: serde_json::value::to_raw_value(&serde_json::json!({})).unwrap(),
            applied_at: String::new(),
        }
    }

    fn intent(a: &Address) -> Intent {
        Intent {
            address: a.clone(),
            request_id: "r1".into(),
            request: serde_json::json!({}),
            hash: "h".into(),
            attrs: serde_json::json!({}),
            started_at: String::new(),
        }
    }

    fn ids(s: &Snapshot) -> Vec<(String, Ids)> {
        s.resources
            .values()
            .map(|r| (r.address.to_string(), r.ids.clone()))
            .collect()
    }

    /// Lock, intents, commits, forgets, binding, export/import, backup.
    pub fn keeps_the_contract(backend: &dyn Backend) {
        let a = Address::new("m", Kind::Template, "gold");
        let b = Address::new("m", Kind::Template, "silver");
        let store = backend.open("apply", Duration::ZERO).unwrap();
        // One holder at a time, and the holder is named.
        assert_eq!(backend.lock_holder().unwrap().operation, "apply");
        assert!(matches!(
            backend.open("plan", Duration::ZERO).err(),
            Some(StateError::Locked(_))
        ));
        let start = store.snapshot().unwrap().meta.serial;
        // An intent, then its commit, which clears it.
        store.begin(&intent(&a)).unwrap();
        assert_eq!(store.snapshot().unwrap().intents[&a].request_id, "r1");
        let s1 = store
            .commit(&resource(&a, "T1"), Durability::Deferred)
            .unwrap();
        assert!(s1 > start);
        let snap = store.snapshot().unwrap();
        assert!(snap.intents.is_empty());
        assert_eq!(snap.resources[&a].ids.template_id.as_deref(), Some("T1"));
        // An abandoned intent is gone; a forgotten template is remembered by id.
        store.begin(&intent(&b)).unwrap();
        store.abandon(&b).unwrap();
        let s2 = store.forget(&a).unwrap();
        assert!(s2 > s1);
        let snap = store.snapshot().unwrap();
        assert!(snap.intents.is_empty() && snap.resources.is_empty());
        assert_eq!(snap.forgotten.get("T1"), Some(&a));
        // A rename moves the record, ids and all.
        let c = Address::new("m", Kind::Template, "bronze");
        store
            .commit(&resource(&b, "T9"), Durability::Flushed)
            .unwrap();
        store.rename(&b, &c).unwrap();
        let snap = store.snapshot().unwrap();
        assert!(!snap.resources.contains_key(&b));
        assert_eq!(snap.resources[&c].address, c);
        assert_eq!(snap.resources[&c].ids.template_id.as_deref(), Some("T9"));
        store.forget(&c).unwrap();
        // Binding, export and import.
        let binding = Binding {
            project: "p".into(),
            gateway: "sandbox".into(),
            app_id: "1".into(),
        };
        store.bind(&binding).unwrap();
        store
            .commit(&resource(&b, "T2"), Durability::Flushed)
            .unwrap();
        store.flush().unwrap();
        let exported = store.snapshot().unwrap();
        assert_eq!(exported.meta.binding.as_ref(), Some(&binding));
        backend.write_backup(&exported).unwrap();
        store.replace_all(&Snapshot::empty()).unwrap();
        assert!(store.snapshot().unwrap().resources.is_empty());
        store.replace_all(&exported).unwrap();
        assert_eq!(ids(&store.snapshot().unwrap()), ids(&exported));
        // Dropping the store releases the lock; the state outlives it.
        drop(store);
        assert!(backend.lock_holder().is_none());
        let store = backend.open("plan", Duration::ZERO).unwrap();
        assert_eq!(ids(&store.snapshot().unwrap()), ids(&exported));
        drop(store);
        // Recovery from the backup (forced: this state is healthy).
        let r = backend.recover(true).unwrap();
        assert_eq!(r.restored, 1);
        let store = backend.open("plan", Duration::ZERO).unwrap();
        assert_eq!(ids(&store.snapshot().unwrap()), ids(&exported));
    }

    #[test]
    fn the_memory_backend_keeps_the_contract() {
        keeps_the_contract(&MemoryBackend::new());
    }
}
