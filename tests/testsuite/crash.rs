//! The worst crash the executor allows for, made deterministic: every commit
//! marked `Durability::Deferred` is lost (as if `kill -9` came before sled's
//! next flush), then apply runs again. It must converge with no duplicate at
//! the gateway and every id in state.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cardform::alipay::SignType;
use cardform::apply::{self, Capabilities, NoProgress, Options};
use cardform::gateway::Scope;
use cardform::gateway::governor::{Governor, RetryPolicy};
use cardform::model::{Address, Kind};
use cardform::ops;
use cardform::plan;
use cardform::provider::Provider;
use cardform::settings::{Endpoint, GatewaySettings};
use cardform::state::{
    Binding, Durability, Intent, ResourceState, Snapshot, StateError, StateStore,
};
use cardform::stores::Location;
use cardform::stores::sled::SledStore;

/// A store that drops every deferred commit: what a crash right after the
/// run would leave on disk (sled: before its next flush; PostgreSQL: before
/// its WAL writer's).
struct LosesDeferredCommits(Box<dyn StateStore>);

impl StateStore for LosesDeferredCommits {
    fn snapshot(&self) -> Result<Snapshot, StateError> {
        self.0.snapshot()
    }
    fn commit(&self, r: &ResourceState, durability: Durability) -> Result<u64, StateError> {
        match durability {
            Durability::Flushed => self.0.commit(r, durability),
            Durability::Deferred => Ok(0),
        }
    }
    fn flush(&self) -> Result<(), StateError> {
        self.0.flush()
    }
    fn forget(&self, address: &Address) -> Result<u64, StateError> {
        self.0.forget(address)
    }
    fn begin(&self, intent: &Intent) -> Result<(), StateError> {
        self.0.begin(intent)
    }
    fn abandon(&self, address: &Address) -> Result<(), StateError> {
        self.0.abandon(address)
    }
    fn replace_all(&self, snap: &Snapshot) -> Result<(), StateError> {
        self.0.replace_all(snap)
    }
    fn bind(&self, binding: &Binding) -> Result<(), StateError> {
        self.0.bind(binding)
    }
    fn rename(&self, from: &Address, to: &Address) -> Result<u64, StateError> {
        self.0.rename(from, to)
    }
}

fn open(location: &Location) -> Box<dyn StateStore> {
    location
        .backend()
        .open("test", Duration::from_secs(10))
        .unwrap()
}

async fn apply_once(
    project: &Path,
    store: Arc<dyn StateStore>,
    provider: &Arc<Provider>,
) -> apply::Report {
    let desired = ops::load::load(project, &Default::default()).unwrap();
    let snapshot = store.snapshot().unwrap();
    let plan = plan::plan(&desired, &snapshot, &Default::default()).unwrap();
    let caps = Capabilities {
        store,
        provider: provider.clone(),
        tokens: ops::tokens::tokens(&desired),
        progress: Arc::new(NoProgress),
    };
    apply::apply(
        &plan,
        Arc::new(desired),
        snapshot,
        caps,
        &Options::default(),
    )
    .await
}

/// The coffee example in a temp dir (`project`, `state`), and a provider on
/// the embedded sandbox under its state (kept alive by the connection).
async fn coffee_on_embedded_sandbox() -> (tempfile::TempDir, ops::gateway::Connection, Arc<Provider>)
{
    let tmp = tempfile::tempdir().unwrap();
    crate::support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coffee"),
        &tmp.path().join("project"),
    );
    let gateway = GatewaySettings {
        endpoint: Endpoint::Embedded,
        app_id: None,
        private_key: None,
        alipay_public_key: None,
        app_cert: None,
        alipay_cert: None,
        alipay_root_cert: None,
        encrypt_key: None,
        app_auth_token: None,
        sign_type: SignType::Rsa2,
        sandbox_faults: None,
    };
    let conn = ops::gateway::connect(&gateway, &tmp.path().join("state"))
        .await
        .unwrap();
    let provider = Arc::new(Provider::new(Arc::new(Governor::new(
        Arc::new(conn.client.clone().with_max_in_flight(8)),
        RetryPolicy::default(),
    ))));
    (tmp, conn, provider)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_every_deferred_commit_converges_without_duplicates() {
    losing_every_deferred_commit(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_every_deferred_commit_converges_without_duplicates_on_postgres() {
    let url = crate::support::cluster().url("deferred");
    losing_every_deferred_commit(Some(Location::parse(&url).unwrap())).await;
}

/// The state in `location`, or in the temp dir's `state` (sled).
async fn losing_every_deferred_commit(location: Option<Location>) {
    let (tmp, conn, provider) = coffee_on_embedded_sandbox().await;
    let project = tmp.path().join("project");
    let state_dir = location.unwrap_or_else(|| Location::Dir(tmp.path().join("state")));

    // The "crashed" run: the gateway did everything, the disk kept only the
    // flushed writes.
    let report = apply_once(
        &project,
        Arc::new(LosesDeferredCommits(open(&state_dir))),
        &provider,
    )
    .await;
    assert!(report.ok(), "{:?}", report.results);
    let kept = open(&state_dir).snapshot().unwrap();
    let templates: Vec<&Address> = report
        .results
        .iter()
        .map(|r| &r.address)
        .filter(|a| a.kind == Kind::Template)
        .collect();
    assert!(!templates.is_empty());
    for t in &templates {
        assert!(!kept.resources.contains_key(*t), "{t} was not lost");
        assert!(kept.intents.contains_key(*t), "{t} has no intent left");
    }
    assert!(
        kept.resources.keys().all(|a| a.kind == Kind::Image),
        "only the flushed image ids survive: {:?}",
        kept.resources.keys().collect::<Vec<_>>()
    );

    // The re-run replays every intent and repeats the idempotent calls.
    let store: Arc<dyn StateStore> = open(&state_dir).into();
    let report = apply_once(&project, store.clone(), &provider).await;
    assert!(report.ok(), "{:?}", report.results);
    let resumed = report
        .results
        .iter()
        .filter(|r| format!("{:?}", r.outcome).contains("resumed an interrupted create"))
        .count();
    assert_eq!(resumed, templates.len());
    let state = store.snapshot().unwrap();
    assert!(state.intents.is_empty());
    let desired = ops::load::load(&project, &Default::default()).unwrap();
    assert!(
        !plan::plan(&desired, &state, &Default::default())
            .unwrap()
            .has_changes()
    );

    // The gateway holds exactly the templates in state: no duplicate.
    let (_, mut at_gateway) = provider
        .templates_at_gateway(&Scope::merchant("brew", None), 1)
        .await
        .unwrap();
    let mut in_state: Vec<String> = state
        .resources
        .values()
        .filter(|r| r.kind == Kind::Template)
        .filter_map(|r| r.ids.template_id.clone())
        .collect();
    at_gateway.sort();
    in_state.sort();
    assert_eq!(at_gateway, in_state);
    drop(store);
    conn.close().await;
}

/// A disk that fills up after `room` flushed operations: from then on every
/// flush fails (ENOSPC), and deferred commits are taken in memory but never
/// reach the disk.
struct FillsUp {
    inner: SledStore,
    room: std::sync::atomic::AtomicI64,
    lost: std::sync::Mutex<Vec<Address>>,
}

impl FillsUp {
    fn full(&self) -> Result<(), StateError> {
        if self.room.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) <= 0 {
            return Err(StateError::Io(
                "No space left on device (os error 28)".into(),
            ));
        }
        Ok(())
    }
}

impl StateStore for FillsUp {
    fn snapshot(&self) -> Result<Snapshot, StateError> {
        self.inner.snapshot()
    }
    fn commit(&self, r: &ResourceState, durability: Durability) -> Result<u64, StateError> {
        match durability {
            Durability::Flushed => {
                self.full()?;
                self.inner.commit(r, durability)
            }
            Durability::Deferred => {
                if self.room.load(std::sync::atomic::Ordering::SeqCst) <= 0 {
                    self.lost.lock().unwrap().push(r.address.clone());
                    Ok(0)
                } else {
                    self.inner.commit(r, durability)
                }
            }
        }
    }
    fn flush(&self) -> Result<(), StateError> {
        self.full()?;
        self.inner.flush()
    }
    fn forget(&self, address: &Address) -> Result<u64, StateError> {
        self.full()?;
        self.inner.forget(address)
    }
    fn begin(&self, intent: &Intent) -> Result<(), StateError> {
        self.full()?;
        self.inner.begin(intent)
    }
    fn abandon(&self, address: &Address) -> Result<(), StateError> {
        self.full()?;
        self.inner.abandon(address)
    }
    fn replace_all(&self, snap: &Snapshot) -> Result<(), StateError> {
        self.inner.replace_all(snap)
    }
    fn bind(&self, binding: &Binding) -> Result<(), StateError> {
        self.inner.bind(binding)
    }
    fn rename(&self, from: &Address, to: &Address) -> Result<u64, StateError> {
        self.inner.rename(from, to)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_truthfully_and_a_rerun_converges() {
    let (tmp, _conn, provider) = coffee_on_embedded_sandbox().await;
    let (project, state_dir) = (tmp.path().join("project"), tmp.path().join("state"));
    // Room for the five image uploads and the three intents; the disk is
    // full before the templates' results (deferred) are flushed.
    let store = Arc::new(FillsUp {
        inner: SledStore::open(&state_dir, "test", Duration::from_secs(10)).unwrap(),
        room: std::sync::atomic::AtomicI64::new(8),
        lost: Default::default(),
    });
    let report = apply_once(&project, store.clone(), &provider).await;
    assert!(!report.ok());
    assert!(
        report
            .state_error
            .as_deref()
            .is_some_and(|e| e.contains("No space left on device")),
        "{:?}",
        report.state_error
    );
    // Every write the disk did not keep is named as not on disk.
    let lost = store.lost.lock().unwrap().clone();
    assert!(!lost.is_empty());
    for a in &lost {
        assert!(report.not_on_disk.contains(a), "{a} lost but not reported");
    }
    let text = cardform::render::progress::report(&report);
    assert!(!text.contains("every result was recorded"), "{text}");
    assert!(text.contains("may not be on disk"), "{text}");
    drop(store);

    // With room again, the re-run converges: no duplicate at the gateway.
    let store: Arc<dyn StateStore> =
        Arc::new(SledStore::open(&state_dir, "test", Duration::from_secs(10)).unwrap());
    let report = apply_once(&project, store.clone(), &provider).await;
    assert!(report.ok(), "{:?}", report.results);
    let state = store.snapshot().unwrap();
    let (total, _) = provider
        .templates_at_gateway(&Scope::merchant("brew", None), 1)
        .await
        .unwrap();
    assert_eq!(total, 3, "no duplicate template");
    assert_eq!(
        state
            .resources
            .values()
            .filter(|r| r.kind == Kind::Template)
            .count(),
        3
    );
}
