//! The contract every backend keeps: one test body, run against each
//! (memory and sled in the unit tests, PostgreSQL in the integration suite
//! against a real server). Public so that the integration suite can run it;
//! not part of the product.

use std::time::Duration;

use crate::model::{Address, Kind};
use crate::state::{
    Backend, Binding, Durability, Ids, Intent, ResourceState, Snapshot, StateError,
};

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
/// `reads_while_locked`: whether [`Backend::read`] answers while a writer
/// holds the lock (PostgreSQL) or waits for it (sled, which one process holds).
pub fn keeps_the_contract(backend: &dyn Backend, reads_while_locked: bool) {
    let a = Address::new("m", Kind::Template, "gold");
    let b = Address::new("m", Kind::Template, "silver");
    let store = backend.open("apply", Duration::ZERO).unwrap();
    // One holder at a time, and the holder is named.
    assert_eq!(backend.lock_holder().unwrap().operation, "apply");
    assert!(matches!(
        backend.open("plan", Duration::ZERO).err(),
        Some(StateError::Locked(_))
    ));
    let read = backend.read("output", Duration::ZERO);
    if reads_while_locked {
        assert_eq!(
            read.unwrap().meta.serial,
            store.snapshot().unwrap().meta.serial
        );
    } else {
        assert!(matches!(read.err(), Some(StateError::Locked(_))));
    }
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
    // A template replaced (a new id committed over the old): the old id is
    // remembered too.
    store
        .commit(&resource(&a, "T2"), Durability::Flushed)
        .unwrap();
    store
        .commit(&resource(&a, "T3"), Durability::Flushed)
        .unwrap();
    let snap = store.snapshot().unwrap();
    assert_eq!(snap.forgotten.get("T2"), Some(&a));
    assert!(!snap.forgotten.contains_key("T3"));
    store.forget(&a).unwrap();
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
