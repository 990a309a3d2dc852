//! The executor: walks a plan in dependency order with bounded concurrency,
//! retries what can be retried, commits state after every gateway success, and
//! skips the dependents of a failure while independent work finishes.
//!
//! 1. a change starts as soon as the changes it depends on have finished
//!    (image -> template -> form, activation URL; retires last), with up to
//!    `parallelism` calls in flight;
//! 2. a change whose dependency failed or was skipped is skipped, not failed;
//! 3. a create journals an intent (request_id + exact request) first; a crash
//!    and re-run replays that request, so no duplicate and no lost id;
//! 4. every success is committed at once; it is flushed before the next call
//!    unless a re-run recovers it without a duplicate (see `Durability`);
//! 5. retrying, backoff and throttle pauses are the gateway seam's (see
//!    `gateway::governor`: per merchant); the report lists every failure with
//!    its gateway code.
//!
//! Capabilities (store, provider, progress) are handed in. It must never
//! build a gateway request (the provider does), retry or sleep (the governor
//! does), or decide an action (the planner did). The walk itself
//! ([`schedule::Schedule`]) is pure and tested on its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::alipay::{ErrorClass, GatewayError};
use crate::gateway::Scope;
use crate::gateway::governor::Observer;
use crate::model::{Address, Attrs, Desired, Kind, TemplateAttrs};
use crate::plan::{Action, Change, Plan};
use crate::provider::{self, ImageIds, Provider};
use crate::state::{Durability, Ids, Intent, ResourceState, Snapshot, StateStore, now_rfc3339};
use crate::util::secret::Secret;

pub use crate::gateway::governor::RetryPolicy;

pub mod cards;
pub mod schedule;

#[derive(Debug, Clone)]
pub struct Options {
    /// Gateway calls in flight at once. The provider's client enforces it
    /// (`Client::with_max_in_flight`); the executor keeps twice as many
    /// changes under way so that local work overlaps the round trips.
    pub parallelism: usize,
    /// Handed to the governor that the provider calls through.
    pub retry: RetryPolicy,
    /// Merchants known before the walk to be unable to proceed (their
    /// authorisation is broken), with why in words: their changes are
    /// skipped from the start.
    pub blocked: BTreeMap<String, String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallelism: 8,
            retry: RetryPolicy::default(),
            blocked: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Done {
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Failed {
        error: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sub_code: Option<String>,
        retryable: bool,
    },
    Skipped {
        because: Address,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct ResultLine {
    pub address: Address,
    pub action: Action,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The ids recorded (for a retire: the ids forgotten, which stay at Alipay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Ids>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub results: Vec<ResultLine>,
    pub calls: u64,
    pub retries: u64,
    /// Image uploads that failed in a way that may have taken effect (a
    /// dropped connection, an answer not signed by Alipay): each may have left
    /// an unused image at Alipay. Uploads cannot be made idempotent.
    pub uploads_in_doubt: u64,
    pub elapsed_ms: u128,
    /// Merchants whose calls were throttled (40005): how often, and how long
    /// their calls waited. Only those merchants slowed down.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub throttled: BTreeMap<String, crate::gateway::governor::Throttled>,
    /// With no app limit configured: the calls a second at which the
    /// gateway said the app was over its limit (the report suggests a
    /// `rate_limits.per_second` under it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_app_rate: Option<f64>,
    /// What was retired (forgotten from state), with the ids that stay at
    /// Alipay: kept here so they are never only in a scrolled-away log.
    pub retired: Vec<Retired>,
    /// Records renamed by `moved` blocks (no gateway call).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<Moved>,
    /// Per merchant: what happened, and why a merchant stopped early (its
    /// authorisation or permissions), in words.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub merchants: BTreeMap<String, MerchantResult>,
    /// The final flush of the state store failed: results recorded during the
    /// run may not be on disk (a re-run recovers them; see `Durability`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_error: Option<String>,
    /// Results recorded in the store but not known to be on disk (a flush
    /// failed after them). Everything else recorded is on disk.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_on_disk: Vec<Address>,
}

/// One merchant's part of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MerchantResult {
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Why this merchant's remaining changes did not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// A rename a `moved` block asked for, recorded before anything else.
#[derive(Debug, Clone, Serialize)]
pub struct Moved {
    pub from: Address,
    pub to: Address,
}

#[derive(Debug, Clone, Serialize)]
pub struct Retired {
    pub address: Address,
    #[serde(flatten)]
    pub ids: Ids,
}

impl Report {
    pub fn failed(&self) -> impl Iterator<Item = &ResultLine> {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
    }
    /// Nothing failed, no merchant was stopped, and the state is on disk.
    pub fn ok(&self) -> bool {
        self.failed().next().is_none()
            && self.state_error.is_none()
            && self.merchants.values().all(|m| m.stopped.is_none())
    }
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.outcome)).count()
    }
}

/// What the executor tells whoever shows progress (retries come from the
/// gateway seam, hence the [`Observer`] half).
pub trait Progress: Observer {
    fn start(&self, _total: usize) {}
    fn finished(&self, _line: &ResultLine) {}
}

impl Observer for NoProgress {}

pub struct NoProgress;
impl Progress for NoProgress {}

/// Per-merchant app_auth_token: resolved, absent, or an error to report.
pub type Tokens = BTreeMap<String, Result<Option<Secret>, String>>;

struct Shared {
    store: Arc<dyn StateStore>,
    provider: Arc<Provider>,
    progress: Arc<dyn Progress>,
    tokens: Tokens,
    /// Current state of every resource (updated on each commit).
    state: Mutex<BTreeMap<Address, ResourceState>>,
    intents: BTreeMap<Address, Intent>,
    /// Deferred commits so far (their sequence numbers).
    writes: std::sync::atomic::AtomicU64,
    /// Deferred commits not yet covered by a successful flush.
    unflushed: Mutex<Vec<(u64, Address)>>,
}

enum Failure {
    Gateway(GatewayError),
    Local(String),
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Self {
        Failure::Gateway(e)
    }
}
impl From<crate::state::StateError> for Failure {
    fn from(e: crate::state::StateError) -> Self {
        Failure::Local(format!(
            "recording state failed: {e} (a gateway call before it may have taken effect; the next apply resolves it)"
        ))
    }
}
impl From<provider::MissingImage> for Failure {
    fn from(e: provider::MissingImage) -> Self {
        Failure::Local(e.to_string())
    }
}

impl Shared {
    /// A store operation that flushes: it also puts on disk every deferred
    /// commit written before it began.
    fn flushed<T>(
        &self,
        op: impl FnOnce() -> Result<T, crate::state::StateError>,
    ) -> Result<T, crate::state::StateError> {
        let before = self.writes.load(std::sync::atomic::Ordering::SeqCst);
        let out = tokio::task::block_in_place(op)?;
        self.unflushed
            .lock()
            .expect("unflushed lock")
            .retain(|(seq, _)| *seq >= before);
        Ok(out)
    }

    /// Who the calls for `address` are made for.
    fn scope(&self, address: &Address) -> Result<Scope, Failure> {
        let token: Option<&Secret> = match self.tokens.get(address.merchant.as_str()) {
            Some(Ok(t)) => t.as_ref(),
            Some(Err(e)) => return Err(Failure::Local(e.clone())),
            None => None,
        };
        Ok(Scope::merchant(&address.merchant, token).about(address))
    }

    fn ids_of(&self, address: &Address) -> Ids {
        self.state
            .lock()
            .expect("state lock")
            .get(address)
            .map(|r| r.ids.clone())
            .unwrap_or_default()
    }

    fn image_ids(&self, merchant: &str) -> ImageIds {
        self.state
            .lock()
            .expect("state lock")
            .values()
            .filter(|r| r.kind == Kind::Image && r.address.merchant == merchant)
            .filter_map(|r| Some((r.address.to_string(), r.ids.image_id.clone()?)))
            .collect()
    }

    /// Record a success at once. `Deferred` is for results a re-run recovers
    /// without a duplicate (see [`Durability`]); that write is a few
    /// microseconds of memory work, done on the runtime thread.
    fn commit(
        &self,
        address: &Address,
        ids: Ids,
        attrs: &Attrs,
        durability: Durability,
    ) -> Result<(), Failure> {
        let rec = ResourceState {
            address: address.clone(),
            kind: address.kind,
            ids: ids.sealed(address),
            hash: attrs.hash(),
            attrs: crate::state::raw_attrs(attrs),
            applied_at: now_rfc3339(),
        };
        match durability {
            Durability::Flushed => self.flushed(|| self.store.commit(&rec, durability))?,
            Durability::Deferred => {
                self.store.commit(&rec, durability)?;
                // Written, not yet known to be on disk: the next flush says.
                let seq = self
                    .writes
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.unflushed
                    .lock()
                    .expect("unflushed lock")
                    .push((seq, address.clone()));
                seq
            }
        };
        self.state
            .lock()
            .expect("state lock")
            .insert(address.clone(), rec);
        Ok(())
    }

    async fn template_create(
        &self,
        address: &Address,
        attrs: &TemplateAttrs,
        at: &Scope,
    ) -> Result<Option<String>, Failure> {
        let desired = Attrs::Template(Box::new(attrs.clone()));
        // Replay an interrupted create exactly, or journal a new one.
        let intent = match self.intents.get(address) {
            Some(i) => i.clone(),
            None => {
                let request_id = provider::new_request_id();
                let req = provider::create_request(
                    attrs,
                    &request_id,
                    &self.image_ids(&address.merchant),
                )?;
                let intent = Intent {
                    address: address.clone(),
                    request_id,
                    request: serde_json::to_value(&req).expect("requests serialize"),
                    hash: desired.hash(),
                    attrs: desired.to_json(),
                    started_at: now_rfc3339(),
                };
                self.flushed(|| self.store.begin(&intent))?;
                intent
            }
        };
        let result = self.provider.create_template(at, &intent.request).await;
        let template_id = match result {
            Ok(id) => id,
            Err(e) => {
                if e.class() == ErrorClass::Permanent && e.api().is_some_and(|a| a.signed) {
                    // The gateway refused it, in an answer signed by Alipay's
                    // key: nothing was created. An unsigned answer proves
                    // nothing (anything between us and the gateway can send
                    // one, after the call took effect): the intent stays and
                    // the next run replays the same request_id.
                    self.flushed(|| self.store.abandon(address))?;
                }
                return Err(e.into());
            }
        };
        let journalled: Attrs = serde_json::from_value(intent.attrs.clone())
            .map_err(|e| Failure::Local(format!("journalled attributes unreadable: {e}")))?;
        let ids = Ids {
            template_id: Some(template_id.clone()),
            ..Ids::default()
        };
        // Deferred: until this commit is on disk the intent stays journalled,
        // and a re-run replays it (same request_id: the same template comes back).
        self.commit(address, ids, &journalled, Durability::Deferred)?;
        if intent.hash != desired.hash() {
            // The manifests changed since the interrupted run: bring the
            // replayed template up to date.
            self.template_modify(address, &template_id, attrs, at)
                .await?;
            return Ok(Some(
                "resumed an interrupted create, then updated it".into(),
            ));
        }
        Ok(self
            .intents
            .contains_key(address)
            .then(|| "resumed an interrupted create (same request_id, no duplicate)".into()))
    }

    async fn template_modify(
        &self,
        address: &Address,
        template_id: &str,
        attrs: &TemplateAttrs,
        at: &Scope,
    ) -> Result<(), Failure> {
        let req = provider::modify_request(
            attrs,
            template_id,
            &provider::new_request_id(),
            &self.image_ids(&address.merchant),
        )?;
        self.provider.modify_template(at, &req).await?;
        let ids = Ids {
            template_id: Some(template_id.to_string()),
            ..Ids::default()
        };
        // Deferred: if it is lost, the state keeps the old hash and a re-run
        // sends the same modification again.
        self.commit(
            address,
            ids,
            &Attrs::Template(Box::new(attrs.clone())),
            Durability::Deferred,
        )
    }

    /// The template's id as recorded, refused if the record's seal says it
    /// was not recorded for this address (an id swapped or edited by hand
    /// would have a call change another template).
    fn template_id_of(&self, template: &Address) -> Result<String, Failure> {
        let ids = self.ids_of(template);
        if !ids.sealed_to(template) {
            return Err(Failure::Local(format!(
                "the state's record of `{template}` names template_id {}, which cardform did not record for this address (the record was changed outside cardform); nothing was sent\nhint: `cardform state recover` restores the state saved after the last successful apply",
                ids.template_id.as_deref().unwrap_or("(none)")
            )));
        }
        ids.template_id
            .ok_or_else(|| Failure::Local(format!("`{template}` has no template_id in state")))
    }

    /// Carry out one change; returns a note for people and the ids it
    /// recorded (for a retire, the ids it forgot).
    async fn run(
        &self,
        change: &Change,
        desired: &Desired,
    ) -> Result<(Option<String>, Ids), Failure> {
        let address = &change.address;
        if change.action == Action::Delete {
            let old = self.ids_of(address);
            let at = &self.scope(address)?;
            if let (Some(t), Some(b)) = (&old.template_id, &old.benefit_id) {
                match self.provider.delete_benefit(at, t, b).await {
                    Ok(()) => {}
                    // Deleted already (by an earlier run cut short, or in the
                    // console): nothing left to delete.
                    Err(e)
                        if e.api()
                            .and_then(|a| a.sub_code.as_deref())
                            .is_some_and(|c| c.contains("NOT_EXIST")) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.flushed(|| self.store.forget(address))?;
            self.state.lock().expect("state lock").remove(address);
            return Ok((Some("deleted at Alipay".to_string()), old.unsealed()));
        }
        if change.action == Action::Retire {
            let old = self.ids_of(address);
            self.flushed(|| self.store.forget(address))?;
            self.state.lock().expect("state lock").remove(address);
            let note = if provider::left_at_gateway(address.kind, &old) {
                "it stays at Alipay (no delete API)"
            } else {
                "forgotten"
            };
            return Ok((Some(note.to_string()), old.unsealed()));
        }
        let note = self.change(change, desired).await?;
        Ok((note, self.ids_of(address).unsealed()))
    }

    async fn change(&self, change: &Change, desired: &Desired) -> Result<Option<String>, Failure> {
        let address = &change.address;
        let resource = desired.resources.get(address).ok_or_else(|| {
            Failure::Local(format!(
                "`{address}` is in the plan but not in the manifests (bug)"
            ))
        })?;
        let at = &self.scope(address)?;
        match (&resource.attrs, change.action) {
            (Attrs::Image(img), _) if img.id.is_some() => {
                let id = img.id.clone().unwrap_or_default();
                let ids = Ids {
                    image_id: Some(id.clone()),
                    ..Ids::default()
                };
                // Nothing to upload: the gateway holds it already.
                self.commit(address, ids, &resource.attrs, Durability::Flushed)?;
                Ok(Some(format!("adopted image_id {id}")))
            }
            (Attrs::Image(img), _) => {
                let old = self.ids_of(address).image_id;
                let ids = self.provider.upload_image(at, &address.name, img).await?;
                // Flushed: an upload is not idempotent, so a lost image_id
                // would mean a second image at the gateway.
                self.commit(address, ids, &resource.attrs, Durability::Flushed)?;
                Ok(old.map(|o| format!("previous image_id {o} stays at Alipay")))
            }
            (Attrs::Template(t), Action::Import) => {
                let Some(import) = desired.imports.get(address) else {
                    return Err(Failure::Local(format!(
                        "`{address}` is planned as an import but the manifests have no import block for it"
                    )));
                };
                let adopted: Attrs = change
                    .before
                    .clone()
                    .and_then(|v| serde_json::from_value(*v).ok())
                    .ok_or_else(|| {
                        Failure::Local(format!(
                            "the imported template of `{address}` is missing from the plan (bug)"
                        ))
                    })?;
                let ids = Ids {
                    template_id: Some(import.template_id.clone()),
                    ..Ids::default()
                };
                // Recorded first, as the gateway holds it: the id is never lost.
                self.commit(address, ids, &adopted, Durability::Flushed)?;
                if adopted.hash() == resource.attrs.hash() {
                    return Ok(Some(format!("adopted template_id {}", import.template_id)));
                }
                self.template_modify(address, &import.template_id, t, at)
                    .await?;
                Ok(Some(format!(
                    "adopted template_id {}, then updated to the manifests",
                    import.template_id
                )))
            }
            (Attrs::Template(t), Action::Create | Action::Replace) => {
                let old = self.ids_of(address).template_id;
                let note = self.template_create(address, t, at).await?;
                Ok(match (change.action, old) {
                    (Action::Replace, Some(o)) => Some(format!(
                        "replaced; old template_id {o} is retired (it stays at Alipay)"
                    )),
                    _ => note,
                })
            }
            (Attrs::Template(t), _) => {
                let tid = self.template_id_of(address)?;
                self.template_modify(address, &tid, t, at).await?;
                Ok(None)
            }
            (Attrs::Form(f), _) => {
                let tid = self.template_id_of(&f.template)?;
                self.provider.set_form(at, &tid, f).await?;
                let ids = Ids {
                    template_id: Some(tid),
                    ..Ids::default()
                };
                // Deferred: setting the same form again is idempotent.
                self.commit(address, ids, &resource.attrs, Durability::Deferred)?;
                Ok(None)
            }
            (Attrs::Benefit(b), Action::Update) => {
                let old = self.ids_of(address);
                let (Some(tid), Some(bid)) = (old.template_id.clone(), old.benefit_id.clone())
                else {
                    return Err(Failure::Local(format!(
                        "`{address}` has no benefit_id in state"
                    )));
                };
                self.provider.modify_benefit(at, &tid, &bid, b).await?;
                // Deferred: modifying again with the same values is harmless.
                self.commit(address, old, &resource.attrs, Durability::Deferred)?;
                Ok(None)
            }
            (Attrs::Benefit(b), _) => {
                let old = self.ids_of(address);
                let tid = self.template_id_of(&b.template)?;
                let (bid, adopted) = self.provider.create_benefit(at, &tid, b).await?;
                let ids = Ids {
                    template_id: Some(tid),
                    benefit_id: Some(bid.clone()),
                    ..Ids::default()
                };
                // Flushed: a lost benefit_id would be found again by the
                // look before the next create, but not deleted with it.
                self.commit(address, ids, &resource.attrs, Durability::Flushed)?;
                let mut note = adopted.then(|| format!("found benefit_id {bid} there already"));
                if change.action == Action::Replace
                    && let (Some(t), Some(o)) = (old.template_id, old.benefit_id)
                    && o != bid
                {
                    note = Some(match self.provider.delete_benefit(at, &t, &o).await {
                        Ok(()) => format!("moved; old benefit_id {o} deleted from template_id {t}"),
                        Err(e) => format!(
                            "moved; old benefit_id {o} on template_id {t} could not be deleted ({e}): delete it in the console"
                        ),
                    });
                }
                Ok(note)
            }
            (Attrs::ActivationUrl(u), _) => {
                let tid = self.template_id_of(&u.template)?;
                let url = self.provider.apply_url(at, &tid, u).await?;
                let ids = Ids {
                    template_id: Some(tid),
                    apply_card_url: Some(url),
                    ..Ids::default()
                };
                // Deferred: asking again returns the same URL.
                self.commit(address, ids, &resource.attrs, Durability::Deferred)?;
                Ok(None)
            }
        }
    }
}

fn outcome_of(f: Failure) -> Outcome {
    match f {
        Failure::Gateway(e) => Outcome::Failed {
            code: e.api().map(|a| a.code.clone()),
            sub_code: e.api().and_then(|a| a.sub_code.clone()),
            retryable: e.class().can_retry(),
            error: e.to_string(),
        },
        Failure::Local(msg) => Outcome::Failed {
            error: msg,
            code: None,
            sub_code: None,
            retryable: false,
        },
    }
}

/// What the executor is handed: the store it commits to, the provider it
/// calls, each merchant's token, and where progress goes.
pub struct Capabilities {
    pub store: Arc<dyn StateStore>,
    pub provider: Arc<Provider>,
    pub tokens: Tokens,
    pub progress: Arc<dyn Progress>,
}

/// Run `work` in dependency order, as [`schedule::Schedule`] says: up to
/// `under_way` changes at once; the calls they make are bounded separately,
/// by the provider's client.
async fn walk(
    work: &[Change],
    shared: &Arc<Shared>,
    desired: &Arc<Desired>,
    under_way: usize,
    blocked: &BTreeMap<String, String>,
) -> (Vec<ResultLine>, BTreeMap<String, String>) {
    let mut stopped: BTreeMap<String, String> = BTreeMap::new();
    let mut schedule = schedule::Schedule::new(work);
    for (m, hint) in blocked {
        if let Some(i) = work.iter().position(|c| c.address.merchant == m) {
            schedule.stop_merchant(i);
            stopped.insert(m.clone(), hint.clone());
        }
    }
    let semaphore = Arc::new(Semaphore::new(under_way));
    let mut tasks = tokio::task::JoinSet::new();
    let mut task_of = BTreeMap::new();
    let mut results = Vec::with_capacity(work.len());
    loop {
        while let Some(next) = schedule.next_step() {
            let i = match next {
                schedule::Next::Skip(i, because) => {
                    let line = ResultLine {
                        address: work[i].address.clone(),
                        action: work[i].action,
                        outcome: Outcome::Skipped { because },
                        ids: None,
                    };
                    shared.progress.finished(&line);
                    results.push(line);
                    continue;
                }
                schedule::Next::Run(i) => i,
            };
            let change = work[i].clone();
            let (shared, desired, semaphore) = (shared.clone(), desired.clone(), semaphore.clone());
            let handle = tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await.expect("semaphore open");
                let (outcome, ids) = match shared.run(&change, &desired).await {
                    Ok((note, ids)) => (Outcome::Done { note }, Some(ids)),
                    Err(f) => (outcome_of(f), None),
                };
                let line = ResultLine {
                    address: change.address.clone(),
                    action: change.action,
                    outcome,
                    ids,
                };
                shared.progress.finished(&line);
                line
            });
            task_of.insert(handle.id(), i);
        }
        let Some(joined) = tasks.join_next_with_id().await else {
            if schedule.drained() {
                continue;
            }
            break;
        };
        let (id, line) = match joined {
            Ok((id, line)) => (id, line),
            Err(e) => {
                let i = task_of[&e.id()];
                let line = ResultLine {
                    address: work[i].address.clone(),
                    action: work[i].action,
                    outcome: Outcome::Failed {
                        error: format!("bug: an apply task panicked: {e}"),
                        code: None,
                        sub_code: None,
                        retryable: false,
                    },
                    ids: None,
                };
                (e.id(), line)
            }
        };
        let i = task_of.remove(&id).expect("every task is indexed");
        // A failure of the merchant's authorisation or permissions: its
        // remaining changes would fail the same way; the others go on.
        if let Outcome::Failed {
            sub_code: Some(sc), ..
        } = &line.outcome
            && let Some(block) = crate::alipay::MerchantBlock::of(sc)
        {
            let m = &line.address.merchant;
            stopped
                .entry(m.to_string())
                .or_insert_with(|| block.hint(m));
            schedule.stop_merchant(i);
        }
        schedule.done(i, matches!(line.outcome, Outcome::Done { .. }));
        results.push(line);
    }
    (results, stopped)
}

/// Apply `plan`. Always returns a report, also when changes fail.
pub async fn apply(
    plan: &Plan,
    desired: Arc<Desired>,
    snapshot: Snapshot,
    caps: Capabilities,
    opts: &Options,
) -> Report {
    let started = Instant::now();
    let Capabilities {
        store,
        provider,
        tokens,
        progress,
    } = caps;
    let before = provider.gateway.stats();
    let shared = Arc::new(Shared {
        store,
        provider,
        progress: progress.clone(),
        tokens,
        state: Mutex::new(snapshot.resources),
        intents: snapshot.intents,
        writes: Default::default(),
        unflushed: Default::default(),
    });
    let work: Vec<Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .cloned()
        .collect();
    progress.start(work.len());
    // Calls in flight are bounded by the provider's client (`parallelism`
    // slots, see `Client::with_max_in_flight`). Twice as many changes may be
    // under way, so that building, signing and recording one change overlaps
    // the other changes' round trips and no slot waits on local work.
    let (mut results, stopped) = walk(
        &work,
        &shared,
        &desired,
        opts.parallelism.max(1) * 2,
        &opts.blocked,
    )
    .await;
    // Everything recorded is on disk before the report goes out.
    let state_error = shared
        .flushed(|| shared.store.flush())
        .err()
        .map(|e| format!("flushing the state store failed: {e}"));
    // What was recorded but may not have reached the disk.
    let mut not_on_disk: Vec<Address> = shared
        .unflushed
        .lock()
        .expect("unflushed lock")
        .iter()
        .map(|(_, a)| a.clone())
        .collect();
    not_on_disk.sort();
    not_on_disk.dedup();
    results.sort_by(|a, b| (a.address.kind, &a.address).cmp(&(b.address.kind, &b.address)));
    let retired = results
        .iter()
        .filter(|l| l.action == Action::Retire && matches!(l.outcome, Outcome::Done { .. }))
        .map(|l| Retired {
            address: l.address.clone(),
            ids: l.ids.clone().unwrap_or_default(),
        })
        .collect();
    let stats = shared.provider.gateway.stats().since(&before);
    let mut merchants: BTreeMap<String, MerchantResult> = BTreeMap::new();
    for l in &results {
        let m = merchants.entry(l.address.merchant.to_string()).or_default();
        match l.outcome {
            Outcome::Done { .. } => m.done += 1,
            Outcome::Failed { .. } => m.failed += 1,
            Outcome::Skipped { .. } => m.skipped += 1,
        }
    }
    for (m, hint) in stopped {
        merchants.entry(m).or_default().stopped = Some(hint);
    }
    Report {
        merchants,
        retired,
        moved: Vec::new(),
        not_on_disk,
        results,
        calls: stats.calls,
        retries: stats.retries,
        uploads_in_doubt: stats.uploads_in_doubt,
        throttled: stats.throttled,
        learned_app_rate: stats.learned_app_rate,
        elapsed_ms: started.elapsed().as_millis(),
        state_error,
    }
}
