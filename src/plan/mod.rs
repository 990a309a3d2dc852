//! The planner: a pure function from what the manifests ask for and what the
//! state records to the list of changes, each with its reason in words.
//!
//! No clock, no network, no store: `plan(&Desired, &Snapshot, &Options)`.
//! Output order is deterministic (dependency order, then address).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod drift;
pub mod select;

pub use select::Selection;

use crate::graph;
use crate::model::{Address, Attrs, Desired, Kind, Resource};
use crate::state::Snapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Retire,
    /// Delete at Alipay, then forget (a benefit: the one kind Alipay can
    /// delete).
    Delete,
    NoOp,
    /// Adopt a template that exists at the gateway (recorded, then updated
    /// in place where the manifests differ).
    Import,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Import => "import",
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Retire => "retire",
            Action::Delete => "delete",
            Action::NoOp => "no-op",
        }
    }

    /// Whether the change takes a resource away (run after everything
    /// else, dependents first).
    pub fn removes(self) -> bool {
        matches!(self, Action::Retire | Action::Delete)
    }
}

/// One resource's planned change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: Address,
    pub kind: Kind,
    pub action: Action,
    /// Why, for people. Code never branches on it. (Fixed reasons, such
    /// as a no-op's "up to date", cost no allocation.)
    pub reason: Cow<'static, str>,
    /// Attributes recorded in state (absent for a create). Boxed, as are
    /// `after` and `moved_from`: a no-op has none of them, and a plan of
    /// 85,000 resources holds 85,000 changes (a change is 136 bytes, not 312).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Box<Value>>,
    /// Attributes the manifests ask for (absent for a retire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Box<Value>>,
    /// Addresses this change waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<Address>,
    /// The address the state recorded it under, when a `moved` block renames
    /// it (the rename itself makes no gateway call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<Box<Address>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub retire: usize,
    /// Deleted at Alipay (benefits).
    #[serde(default)]
    pub delete: usize,
    pub no_op: usize,
    /// Records renamed by `moved` blocks (whatever else happens to them).
    #[serde(default)]
    pub moved: usize,
    /// Templates adopted from the gateway.
    #[serde(default)]
    pub import: usize,
}

impl Summary {
    pub fn changes(&self) -> usize {
        self.create + self.update + self.replace + self.retire + self.delete + self.import
    }
}

/// A plan: the changes, and what it was made against (for the stale check).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Format version of a saved plan.
    pub format_version: u32,
    /// State lineage and serial the plan was made against.
    pub lineage: String,
    pub serial: u64,
    /// sha256 of the desired resources the plan was made from.
    pub desired_hash: String,
    /// The selectors (`--merchant`, `--exclude`, `--target`); none: everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// With selectors: the merchants in scope (what apply locks), and how
    /// many resources of the manifests or the state were left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchants: Option<BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub left_out: usize,
    /// With selectors: a digest of what the state records for the merchants
    /// in scope ([`merchant_digest`]). A saved plan whose state serial moved
    /// is still current if this digest is unchanged: another run applied
    /// other merchants meanwhile (they may run at once on a shared state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_digest: Option<String>,
    /// Merchants' `display_name`s, for people reading the plan.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub display_names: BTreeMap<String, String>,
    pub summary: Summary,
    /// Every resource considered, in dependency order; no-ops included.
    pub changes: Vec<Change>,
    /// What a refresh read from the gateway (`--refresh`, `--refresh-only`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<drift::Refresh>,
    /// The gateway calls the plan will make, and their time at the
    /// configured rate limits (filled in by the provider).
    #[serde(default)]
    pub budget: Budget,
    /// What `cardform cards serve` does for members activating on each
    /// template with an `issue` block: for people reading the plan (apply
    /// sends nothing for it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuance: Vec<IssueLine>,
}

/// One `issue` block, as a plan shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueLine {
    pub template: Address,
    #[serde(default)]
    pub flow: crate::model::Flow,
    pub level: Option<String>,
    pub members: Option<String>,
    pub valid_date: String,
    pub done_url: Option<String>,
}

/// What applying a plan will cost in gateway calls: counted by the provider
/// (`provider::budget`), which knows each kind's calls; the planner leaves it
/// empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub calls: usize,
    pub by_method: BTreeMap<String, usize>,
    pub per_merchant: BTreeMap<String, usize>,
    /// Seconds the calls take at the configured limits (the tightest of the
    /// app's, each merchant's and each method's); none without limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_at_limits: Option<f64>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.summary.changes() > 0 || self.summary.moved > 0
    }

    /// The renames to record before anything else: (from, to).
    pub fn moves(&self) -> impl Iterator<Item = (&Address, &Address)> {
        self.changes
            .iter()
            .filter_map(|c| Some((&**c.moved_from.as_ref()?, &c.address)))
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Which resources to plan (everything by default).
    pub select: Selection,
    /// The templates `import` blocks name, as read from the gateway (in the
    /// manifest's words; images it knows by address shown so).
    pub imported: BTreeMap<Address, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Graph(#[from] graph::GraphError),
    #[error(transparent)]
    Select(#[from] select::SelectError),
    #[error(
        "{written_at}: `import` adopts template {id} as `{address}`, but the state already records `{address}` as template {recorded}\nhint: remove the block, or `cardform state rm {address}` first if the other template should be forgotten"
    )]
    ImportConflict {
        written_at: String,
        address: Address,
        id: String,
        recorded: String,
    },
    #[error("bug: the template to import at `{0}` was not read from the gateway")]
    ImportNotRead(Address),
    #[error(
        "{written_at}: `moved` renames `{from}` to `{to}`, but the state already records `{to}`\nhint: a rename cannot merge two recorded resources; remove the block, or `cardform state rm` one of them first"
    )]
    MoveTargetExists {
        written_at: String,
        from: Address,
        to: Address,
    },
}

/// A record as it reads at its new address: every address its attributes
/// name (a form's template, a template's images) follows the moves too, and
/// its hash with them, so a rename changes nothing at the gateway.
pub fn relocated(
    desired: &Desired,
    r: &crate::state::ResourceState,
    to: &Address,
) -> crate::state::ResourceState {
    use crate::model::moved::destination;
    fn follow(v: &mut Value, moves: &[crate::model::Move]) -> bool {
        let moved = |s: &str| -> Option<String> {
            let a: Address = s.strip_prefix("merchant.").and(s.parse().ok())?;
            destination(moves, &a).map(|d| d.to_string())
        };
        match v {
            Value::String(s) => match moved(s) {
                Some(new) => {
                    *s = new;
                    true
                }
                None => false,
            },
            Value::Array(items) => {
                // Every item, not only up to the first that changed.
                let mut changed = false;
                for x in items.iter_mut() {
                    changed |= follow(x, moves);
                }
                changed
            }
            Value::Object(map) => {
                let mut changed = false;
                let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
                for (k, mut x) in entries {
                    changed |= follow(&mut x, moves);
                    let k = match moved(&k) {
                        Some(new) => {
                            changed = true;
                            new
                        }
                        None => k,
                    };
                    map.insert(k, x);
                }
                changed
            }
            _ => false,
        }
    }
    let mut r = r.clone();
    r.move_to(to);
    let mut value = r.attrs_value();
    if follow(&mut value, &desired.moved)
        && let Ok(attrs) = serde_json::from_value::<Attrs>(value)
    {
        r.hash = attrs.hash();
        r.attrs = crate::state::raw_attrs(&attrs);
    }
    r
}

/// The snapshot as the `moved` blocks leave it, and where each renamed
/// record came from. Borrowed as is when nothing moves.
pub fn after_moves<'a>(
    desired: &Desired,
    snap: &'a Snapshot,
) -> Result<(std::borrow::Cow<'a, Snapshot>, BTreeMap<Address, Address>), PlanError> {
    use crate::model::moved::destination;
    let mut origin: BTreeMap<Address, Address> = BTreeMap::new();
    if desired.moved.is_empty() {
        return Ok((std::borrow::Cow::Borrowed(snap), origin));
    }
    let addresses: BTreeSet<&Address> = snap.resources.keys().chain(snap.intents.keys()).collect();
    // A rename onto what the state records and keeps (a tier family moved
    // onto a plain template of that name) would merge two programs.
    for m in &desired.moved {
        let goes_on = desired.moved.iter().any(|n| match &m.to {
            crate::model::moved::Movable::Resource(a) => n.from.covers(a),
            crate::model::moved::Movable::Merchant(_) => n.from == m.to,
        });
        if goes_on {
            continue;
        }
        let moving = addresses.iter().any(|a| m.from.covers(a));
        // (The same record at both ends is a rename interrupted between its
        // two writes, finished below.)
        let interrupted = |x: &Address| {
            addresses.iter().any(|a| {
                destination(&desired.moved, a).as_ref() == Some(x)
                    && snap
                        .resources
                        .get(x)
                        .zip(snap.resources.get(*a))
                        .is_some_and(|(p, q)| p.ids == q.ids && p.hash == q.hash)
            })
        };
        if let Some(kept) = addresses
            .iter()
            .find(|x| m.to.covers(x) && destination(&desired.moved, x).is_none() && !interrupted(x))
            && moving
        {
            return Err(PlanError::MoveTargetExists {
                written_at: m.written_at.clone(),
                from: addresses
                    .iter()
                    .find(|a| m.from.covers(a))
                    .map(|a| (*a).clone())
                    .expect("checked"),
                to: (*kept).clone(),
            });
        }
    }
    for a in &addresses {
        if let Some(to) = destination(&desired.moved, a) {
            // The same record at both ends is a rename interrupted between
            // its two writes: finishing it is the plan.
            let interrupted = snap
                .resources
                .get(&to)
                .zip(snap.resources.get(*a))
                .is_some_and(|(x, y)| x.ids == y.ids && x.hash == y.hash);
            let taken = (addresses.contains(&to)
                && destination(&desired.moved, &to).is_none()
                && !interrupted)
                || origin.contains_key(&to);
            if taken {
                let block = desired
                    .moved
                    .iter()
                    .find(|m| m.from.relocate(&m.to, a).is_some())
                    .map(|m| m.written_at.clone())
                    .unwrap_or_default();
                return Err(PlanError::MoveTargetExists {
                    written_at: block,
                    from: (*a).clone(),
                    to,
                });
            }
            origin.insert(to, (*a).clone());
        }
    }
    let mut moved = snap.clone();
    let rename = |a: &Address| destination(&desired.moved, a).unwrap_or_else(|| a.clone());
    moved.resources = snap
        .resources
        .iter()
        .map(|(a, r)| {
            let to = rename(a);
            (to.clone(), relocated(desired, r, &to))
        })
        .collect();
    moved.intents = snap
        .intents
        .iter()
        .map(|(a, i)| {
            let to = rename(a);
            let mut i = i.clone();
            i.address = to.clone();
            (to, i)
        })
        .collect();
    Ok((std::borrow::Cow::Owned(moved), origin))
}

/// A plan that changes nothing at the gateway (`--refresh-only`): its
/// `refresh` says what the state will learn.
pub fn refresh_only(mut p: Plan) -> Plan {
    p.summary = Summary {
        no_op: p.changes.len(),
        ..Summary::default()
    };
    p.changes.clear();
    p
}

/// What a state records for some merchants (resources with their hashes and
/// ids, intents, forgotten template ids), as one sha256: equal digests mean
/// nothing of those merchants changed.
pub fn merchant_digest(snap: &Snapshot, merchants: &BTreeSet<String>) -> String {
    use sha2::Digest;
    let mine = |a: &Address| merchants.contains(a.merchant.as_str());
    let mut h = sha2::Sha256::new();
    for (a, r) in snap.resources.iter().filter(|(a, _)| mine(a)) {
        h.update(a.to_string());
        h.update([0]);
        h.update(&r.hash);
        h.update([0]);
        h.update(serde_json::to_vec(&r.ids).unwrap_or_default());
        h.update([1]);
    }
    for (a, i) in &snap.intents {
        if mine(a) {
            h.update(a.to_string());
            h.update([0]);
            h.update(&i.request_id);
            h.update([2]);
        }
    }
    for (id, a) in &snap.forgotten {
        if mine(a) {
            h.update(id);
            h.update([3]);
        }
    }
    hex::encode(h.finalize())
}

/// The hash a saved plan is checked against.
pub fn desired_hash(desired: &Desired) -> String {
    desired_hash_from(desired, &attr_hashes(desired))
}

/// Each resource's attribute hash, in `desired.resources` order (computed
/// on every core: each is a serialization and a sha256).
fn attr_hashes(desired: &Desired) -> Vec<String> {
    use rayon::prelude::*;
    let resources: Vec<&Resource> = desired.resources.values().collect();
    resources.par_iter().map(|r| r.attrs.hash()).collect()
}

/// `hashes` in `desired.resources` order.
fn desired_hash_from(desired: &Desired, hashes: &[String]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (address, hash) in desired.resources.keys().zip(hashes) {
        // The bytes of `address.to_string()`, without building it.
        h.update(b"merchant.");
        h.update(address.merchant.as_bytes());
        h.update(b"/");
        h.update(address.kind.as_str().as_bytes());
        h.update(b".");
        h.update(address.name.as_bytes());
        h.update(hash.as_bytes());
    }
    for (name, m) in &desired.merchants {
        h.update(name.as_bytes());
        h.update(serde_json::to_vec(m).unwrap_or_default());
    }
    hex::encode(h.finalize())
}

/// The change a resource needs because `dep`, which it uses, gets a new id.
fn renewed(address: &Address, dep: &Address, before: Value) -> (Action, String, Option<Value>) {
    match (address.kind, dep.kind) {
        (Kind::ActivationUrl, _) => (
            Action::Replace,
            format!(
                "`{dep}` is replaced: a NEW activation URL is issued for the new template. Reprint posters and QR codes that carry the old URL; members who already hold cards keep them on the old template"
            ),
            Some(before),
        ),
        (Kind::Benefit, _) => (
            Action::Replace,
            format!(
                "`{dep}` is replaced: the benefit is created on the new template and deleted from the old one"
            ),
            Some(before),
        ),
        (Kind::Template, Kind::Image) => (
            Action::Update,
            format!("`{dep}` is uploaded anew: the template is updated to use the new image_id"),
            Some(before),
        ),
        _ => (
            Action::Update,
            format!("`{dep}` is replaced: set again on the new template"),
            Some(before),
        ),
    }
}

/// Top-level keys whose values differ, for the reason line.
/// The fields that differ, as the manifest writes them: `style.name`,
/// `columns[1].title`, `columns` (a list that grew or shrank).
pub(crate) fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_paths(before, after, "", &mut out);
    out
}

fn diff_paths(before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
    if before == after {
        return;
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for k in keys {
                match (b.get(k), a.get(k)) {
                    (Some(x), Some(y)) => diff_paths(x, y, &join(k), out),
                    _ => out.push(join(k)),
                }
            }
        }
        (Value::Array(b), Value::Array(a)) if b.len() == a.len() && !path.is_empty() => {
            for (i, (x, y)) in b.iter().zip(a).enumerate() {
                diff_paths(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(path.to_string()),
    }
}

pub fn plan(desired: &Desired, snap: &Snapshot, opts: &Options) -> Result<Plan, PlanError> {
    // Positions in `desired.resources`, in dependency order.
    let order = graph::order(desired)?;
    let (snap, origin) = after_moves(desired, snap)?;
    let snap = snap.as_ref();
    for (address, import) in &desired.imports {
        if let Some(recorded) = snap
            .resources
            .get(address)
            .and_then(|r| r.ids.template_id.as_ref())
            .filter(|t| **t != import.template_id)
        {
            return Err(PlanError::ImportConflict {
                written_at: import.written_at.clone(),
                address: address.clone(),
                id: import.template_id.clone(),
                recorded: recorded.clone(),
            });
        }
    }
    let selected = opts.select.scope(desired, snap)?;
    let in_scope = |a: &Address| selected.as_ref().is_none_or(|s| s.addresses.contains(a));
    let hashes = attr_hashes(desired);
    let entries: Vec<(&Address, &Resource)> = desired.resources.iter().collect();
    // What gets a new id in this plan (created, replaced, adopted): its
    // dependents change too. A no-op plan inserts nothing here.
    let mut renews: HashSet<&Address> = HashSet::new();
    let mut changes = Vec::with_capacity(order.len());
    for &i in &order {
        let (address, res) = entries[i];
        if !in_scope(address) {
            continue;
        }
        let hash = &hashes[i];
        let (action, reason, before) = match snap.resources.get(address) {
            None if matches!(&res.attrs, Attrs::Image(i) if i.id.is_some()) => {
                let id = match &res.attrs {
                    Attrs::Image(i) => i.id.clone().unwrap_or_default(),
                    _ => String::new(),
                };
                (
                    Action::Import,
                    format!("adopted image_id {id}: the gateway holds it, nothing is uploaded"),
                    None,
                )
            }
            None if desired.imports.contains_key(address)
                && !snap.intents.contains_key(address) =>
            {
                let import = &desired.imports[address];
                let at_gateway = opts
                    .imported
                    .get(address)
                    .ok_or_else(|| PlanError::ImportNotRead(address.clone()))?;
                let fields: Vec<String> = changed_fields(at_gateway, &res.attrs.to_json())
                    .into_iter()
                    .filter(|f| f != "image_hashes" && !f.starts_with("image_hashes."))
                    .collect();
                let reason = if fields.is_empty() {
                    format!(
                        "adopted from the gateway (template_id {}); it matches the manifests",
                        import.template_id
                    )
                } else {
                    format!(
                        "adopted from the gateway (template_id {}), then updated in place: changed: {}",
                        import.template_id,
                        fields.join(", ")
                    )
                };
                (Action::Import, reason, Some(at_gateway.clone()))
            }
            None => {
                let imported_parent = matches!(address.kind, Kind::Form | Kind::ActivationUrl)
                    && desired
                        .imports
                        .contains_key(&address.with_kind(Kind::Template))
                    && !snap
                        .resources
                        .contains_key(&address.with_kind(Kind::Template));
                let reason = match snap.intents.get(address) {
                    Some(i) => format!(
                        "an earlier apply was interrupted during its create; the same request (request_id {}) is replayed, so no duplicate is made",
                        i.request_id
                    ),
                    None if imported_parent => format!(
                        "not in state: the gateway cannot be asked for an imported template's {}, so it is {} (the same value again is harmless)",
                        if address.kind == Kind::Form {
                            "form"
                        } else {
                            "activation URL"
                        },
                        if address.kind == Kind::Form {
                            "set again"
                        } else {
                            "applied for again"
                        }
                    ),
                    None => "not in state".to_string(),
                };
                (Action::Create, reason, None)
            }
            Some(old) => {
                let old_attrs = || old.attrs_value();
                // A dependency that gets a new id (an image uploaded anew, a
                // template replaced) changes this resource at the gateway
                // even when its own attributes are the same.
                let renewed_dep = (!renews.is_empty())
                    .then(|| res.deps.iter().find(|d| renews.contains(d)))
                    .flatten();
                let same_image = match &res.attrs {
                    Attrs::Image(img) => img.same_image(&old_attrs()),
                    _ => false,
                };
                if &old.hash != hash && !same_image {
                    match (&res.attrs, res.attrs.replace_reason(&old_attrs())) {
                        (_, Some(why)) => (
                            Action::Replace,
                            format!(
                                "{why}: a new template is created; the old one{} cannot be deleted at Alipay and is retired. Members who already hold cards keep them on the old template",
                                old.ids.template_id.as_ref().map(|t| format!(" (template_id {t})")).unwrap_or_default()
                            ),
                            Some(old_attrs()),
                        ),
                        (Attrs::Image(img), None) if img.id.is_some() => (
                            Action::Import,
                            format!(
                                "now the image the gateway holds as image_id {} (nothing is uploaded)",
                                img.id.clone().unwrap_or_default()
                            ),
                            Some(old_attrs()),
                        ),
                        (Attrs::Image(_), None) => (
                            Action::Replace,
                            "the image content changed: it is uploaded anew (Alipay cannot change or delete an image)".to_string(),
                            Some(old_attrs()),
                        ),
                        _ => {
                            let fields = changed_fields(&old_attrs(), &res.attrs.to_json());
                            let is_hash = |f: &String| f == "image_hashes" || f.starts_with("image_hashes.");
                            let images_only = fields.iter().all(is_hash);
                            let reason = if images_only {
                                "an image it uses is uploaded anew: the template is updated to use the new image_id".to_string()
                            } else {
                                format!("changed: {}", fields.iter().filter(|f| !is_hash(f)).cloned().collect::<Vec<_>>().join(", "))
                            };
                            (Action::Update, reason, Some(old_attrs()))
                        }
                    }
                } else if let Some(dep) = renewed_dep {
                    renewed(address, dep, old_attrs())
                } else {
                    // Nothing to show: the recorded attributes are not
                    // even parsed (a no-op plan of 100,000 resources
                    // stays cheap).
                    // (Its reason is set below, without an allocation.)
                    (Action::NoOp, String::new(), None)
                }
            }
        };
        if matches!(action, Action::Create | Action::Replace | Action::Import) {
            renews.insert(address);
        }
        changes.push(Change {
            address: address.clone(),
            kind: address.kind,
            action,
            reason: match action {
                Action::NoOp => Cow::Borrowed("up to date"),
                _ => reason.into(),
            },
            before: before.map(Box::new),
            // No-ops carry no attributes and no dependencies (nothing waits
            // for them): plans of large projects stay small.
            after: (action != Action::NoOp).then(|| Box::new(res.attrs.to_json())),
            deps: if action == Action::NoOp {
                Vec::new()
            } else {
                res.deps.clone()
            },
            moved_from: None,
        });
    }
    // Retire what left the manifests, dependents first (URLs before templates).
    // Both maps are in address order: one merged walk finds what the
    // manifests no longer have.
    let mut retired: Vec<&Address> = Vec::new();
    let mut wanted = desired.resources.keys().peekable();
    for a in snap.resources.keys() {
        while wanted.next_if(|w| *w < a).is_some() {}
        if wanted.next_if(|w| *w == a).is_none() && in_scope(a) {
            retired.push(a);
        }
    }
    retired.sort_by(|a, b| (b.kind, *b).cmp(&(a.kind, *a)));
    for address in retired {
        let old = &snap.resources[address];
        let reason = match address.kind {
            Kind::Image | Kind::Template => format!(
                "no longer in the manifests: forgotten from state, but it stays at Alipay (there is no delete API for {}s){}",
                address.kind.as_str(),
                old.ids
                    .template_id
                    .as_ref()
                    .map(|t| format!("; template_id {t}"))
                    .unwrap_or_default()
            ),
            Kind::Form | Kind::ActivationUrl => {
                "no longer in the manifests: forgotten from state".to_string()
            }
            Kind::Benefit => format!(
                "no longer in the manifests: DELETED at Alipay (members stop seeing it){}",
                old.ids
                    .benefit_id
                    .as_ref()
                    .map(|b| format!("; benefit_id {b}"))
                    .unwrap_or_default()
            ),
        };
        changes.push(Change {
            address: address.clone(),
            kind: address.kind,
            action: if address.kind == Kind::Benefit {
                Action::Delete
            } else {
                Action::Retire
            },
            reason: reason.into(),
            before: Some(Box::new(old.attrs_value())),
            after: None,
            deps: Vec::new(),
            moved_from: None,
        });
    }
    for c in changes.iter_mut() {
        c.moved_from = origin.get(&c.address).cloned().map(Box::new);
    }
    let mut summary = Summary::default();
    for c in &changes {
        if c.moved_from.is_some() {
            summary.moved += 1;
        }
        match c.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Replace => summary.replace += 1,
            Action::Retire => summary.retire += 1,
            Action::Delete => summary.delete += 1,
            Action::NoOp => summary.no_op += 1,
            Action::Import => summary.import += 1,
        }
    }
    let issuance: Vec<IssueLine> = desired
        .issuance
        .iter()
        .filter(|(a, _)| {
            selected
                .as_ref()
                .is_none_or(|s| s.merchants.contains(a.merchant.as_str()))
        })
        .map(|(a, i)| IssueLine {
            template: a.clone(),
            flow: i.flow,
            level: i.level.clone(),
            members: i.members.clone(),
            valid_date: i.valid_date.clone(),
            done_url: i.done_url.clone(),
        })
        .collect();
    Ok(Plan {
        format_version: 1,
        lineage: snap.meta.lineage.clone(),
        serial: snap.meta.serial,
        desired_hash: desired_hash_from(desired, &hashes),
        selection: (!opts.select.is_all()).then(|| opts.select.clone()),
        scope_digest: selected
            .as_ref()
            .map(|s| merchant_digest(snap, &s.merchants)),
        left_out: selected.as_ref().map_or(0, |s| s.left_out),
        merchants: selected.map(|s| s.merchants),
        display_names: desired
            .merchants
            .iter()
            .filter_map(|(m, info)| Some((m.clone(), info.display_name.clone()?)))
            .collect(),
        summary,
        changes,
        refresh: None,
        budget: Budget::default(),
        issuance,
    })
}

#[cfg(test)]
mod tests {
    //! Every action and its reason, from hand-built desired states and
    //! snapshots (no files, no store).

    use super::*;
    use crate::model::template::{CardNumber, CardType, Style, WriteOff};
    use crate::model::{ActivationUrlAttrs, ImageAttrs, Resource, TemplateAttrs};
    use crate::state::{Ids, Intent, ResourceState};

    const M: &str = "brew";

    fn image(name: &str, sha: &str, file: &str) -> Resource {
        let address = Address::new(M, Kind::Image, name);
        Resource {
            address,
            deps: Vec::new(),
            attrs: Attrs::Image(Box::new(ImageAttrs {
                file: file.into(),
                source: Default::default(),
                role: "logo".into(),
                image_type: "png".into(),
                sha256: sha.into(),
                width: 500,
                height: 500,
                bytes: 100,
                id: None,
            })),
        }
    }

    fn template(name: &str, card_name: &str, suffix: u8, logo_sha: &str) -> Resource {
        let logo = Address::new(M, Kind::Image, "logo");
        Resource {
            address: Address::new(M, Kind::Template, name),
            deps: vec![logo.clone()],
            attrs: Attrs::Template(Box::new(TemplateAttrs {
                card_type: CardType::OutMemberCard,
                card_number: CardNumber {
                    prefix: None,
                    suffix_length: suffix,
                },
                write_off: WriteOff::DynamicQrcode,
                style: Style {
                    name: card_name.into(),
                    logo: logo.to_string(),
                    background: logo.to_string(),
                    text_color: None,
                    brand_name: None,
                    slogan: None,
                    slogan_image: None,
                    banner_image: None,
                    banner_url: None,
                    feature_descriptions: None,
                    show_front_text: None,
                    show_front_image: None,
                    column_layout: None,
                },
                columns: Vec::new(),
                field_rules: Vec::new(),
                actions: Vec::new(),
                benefits: Vec::new(),
                open_card: None,
                dynamic_code_notify: None,
                shops: None,
                channels: None,
                spi_app_id: None,
                levels: Vec::new(),
                image_hashes: [(logo.to_string(), logo_sha.to_string())].into(),
            })),
        }
    }

    fn url(name: &str) -> Resource {
        let t = Address::new(M, Kind::Template, name);
        Resource {
            address: t.with_kind(Kind::ActivationUrl),
            deps: vec![t.clone()],
            attrs: Attrs::ActivationUrl(Box::new(ActivationUrlAttrs {
                template: t,
                callback: None,
                out_string: None,
                follow_app_id: None,
            })),
        }
    }

    fn desired(resources: Vec<Resource>) -> Desired {
        Desired {
            resources: resources
                .into_iter()
                .map(|r| (r.address.clone(), r))
                .collect(),
            ..Desired::default()
        }
    }

    /// The state `d` would leave once applied, with made-up ids.
    fn applied(d: &Desired) -> Snapshot {
        let mut snap = Snapshot::empty();
        for (i, r) in d.resources.values().enumerate() {
            let mut ids = Ids::default();
            match r.address.kind {
                Kind::Image => ids.image_id = Some(format!("IMG{i}")),
                Kind::ActivationUrl => ids.apply_card_url = Some(format!("https://u/{i}")),
                _ => ids.template_id = Some(format!("T{i}")),
            }
            snap.resources.insert(
                r.address.clone(),
                ResourceState {
                    address: r.address.clone(),
                    kind: r.address.kind,
                    ids,
                    hash: r.attrs.hash(),
                    attrs: crate::state::raw_attrs(&r.attrs),
                    applied_at: String::new(),
                },
            );
        }
        snap
    }

    fn base() -> Desired {
        desired(vec![
            image("logo", "aaa", "images/logo.png"),
            template("club", "Brew Club", 12, "aaa"),
            url("club"),
        ])
    }

    /// (address, action, a piece of its reason) for every change.
    fn actions(d: &Desired, s: &Snapshot) -> Vec<(String, Action, String)> {
        plan(d, s, &Options::default())
            .unwrap()
            .changes
            .into_iter()
            .map(|c| (c.address.to_string(), c.action, c.reason.into_owned()))
            .collect()
    }

    #[track_caller]
    fn expect(got: &[(String, Action, String)], want: &[(&str, Action, &str)]) {
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for ((a, act, why), (wa, wact, wwhy)) in got.iter().zip(want) {
            assert_eq!((a.as_str(), act), (*wa, wact), "{got:#?}");
            assert!(why.contains(wwhy), "{a}: {why:?} lacks {wwhy:?}");
        }
    }

    const LOGO: &str = "merchant.brew/image.logo";
    const CLUB: &str = "merchant.brew/template.club";
    const URL: &str = "merchant.brew/activation_url.club";

    /// The planner is a pure function: the same inputs give the same plan,
    /// byte for byte, and it counts no calls (the provider does).
    #[test]
    fn the_same_inputs_give_the_same_plan_and_no_budget() {
        let d = base();
        let mut s = applied(&d);
        s.resources.remove(&Address::new(M, Kind::Template, "club"));
        let once = serde_json::to_string(&plan(&d, &s, &Options::default()).unwrap()).unwrap();
        let again = serde_json::to_string(&plan(&d, &s, &Options::default()).unwrap()).unwrap();
        assert_eq!(once, again);
        let p = plan(&d, &s, &Options::default()).unwrap();
        assert_eq!(p.budget, Budget::default());
        assert!(p.has_changes());
    }

    /// A plan that only reads (`--refresh-only`) keeps nothing to do but its
    /// summary counts every resource as unchanged.
    #[test]
    fn a_refresh_only_plan_changes_nothing() {
        let d = base();
        let p = refresh_only(plan(&d, &Snapshot::empty(), &Options::default()).unwrap());
        assert!(p.changes.is_empty());
        assert_eq!(p.summary.no_op, 3);
        assert!(!p.has_changes());
    }

    #[test]
    fn every_action_with_its_reason() {
        let d = base();
        let s = applied(&d);
        // From nothing: everything is created.
        expect(
            &actions(&d, &Snapshot::empty()),
            &[
                (LOGO, Action::Create, "not in state"),
                (CLUB, Action::Create, "not in state"),
                (URL, Action::Create, "not in state"),
            ],
        );
        // As applied: nothing to do.
        expect(
            &actions(&d, &s),
            &[
                (LOGO, Action::NoOp, "up to date"),
                (CLUB, Action::NoOp, "up to date"),
                (URL, Action::NoOp, "up to date"),
            ],
        );
        // The same image under another path: still nothing to do.
        let moved = desired(vec![
            image("logo", "aaa", "assets/logo.png"),
            template("club", "Brew Club", 12, "aaa"),
            url("club"),
        ]);
        expect(
            &actions(&moved, &s),
            &[
                (LOGO, Action::NoOp, "up to date"),
                (CLUB, Action::NoOp, "up to date"),
                (URL, Action::NoOp, "up to date"),
            ],
        );
        // A new name: an update in place.
        let renamed = desired(vec![
            image("logo", "aaa", "images/logo.png"),
            template("club", "Brew Rewards", 12, "aaa"),
            url("club"),
        ]);
        expect(
            &actions(&renamed, &s),
            &[
                (LOGO, Action::NoOp, "up to date"),
                (CLUB, Action::Update, "changed: style.name"),
                (URL, Action::NoOp, "up to date"),
            ],
        );
        // New image bytes: a new upload, and the template follows.
        let new_logo = desired(vec![
            image("logo", "bbb", "images/logo.png"),
            template("club", "Brew Club", 12, "bbb"),
            url("club"),
        ]);
        expect(
            &actions(&new_logo, &s),
            &[
                (LOGO, Action::Replace, "the image content changed"),
                (CLUB, Action::Update, "uploaded anew"),
                (URL, Action::NoOp, "up to date"),
            ],
        );
        // A change the gateway cannot make: a new template, a new URL.
        let resized = desired(vec![
            image("logo", "aaa", "images/logo.png"),
            template("club", "Brew Club", 14, "aaa"),
            url("club"),
        ]);
        expect(
            &actions(&resized, &s),
            &[
                (LOGO, Action::NoOp, "up to date"),
                (CLUB, Action::Replace, "the old one (template_id T"),
                (URL, Action::Replace, "a NEW activation URL"),
            ],
        );
        // Left the manifests: retired, last, with its id.
        let gone = desired(vec![image("logo", "aaa", "images/logo.png")]);
        expect(
            &actions(&gone, &s),
            &[
                (LOGO, Action::NoOp, "up to date"),
                (URL, Action::Retire, "forgotten from state"),
                (CLUB, Action::Retire, "template_id T"),
            ],
        );
    }

    #[test]
    fn an_interrupted_create_is_replayed_and_targets_scope_the_plan() {
        let d = base();
        let mut s = applied(&d);
        let club = Address::new(M, Kind::Template, "club");
        s.resources.remove(&club);
        s.intents.insert(
            club.clone(),
            Intent {
                address: club.clone(),
                request_id: "R1".into(),
                request: serde_json::json!({}),
                hash: String::new(),
                attrs: serde_json::json!({}),
                started_at: String::new(),
            },
        );
        let p = plan(&d, &s, &Options::default()).unwrap();
        let c = p.changes.iter().find(|c| c.address == club).unwrap();
        assert_eq!(c.action, Action::Create);
        assert!(c.reason.contains("request_id R1"), "{}", c.reason);
        // A target plans it and what it needs, nothing else.
        let p = plan(
            &d,
            &Snapshot::empty(),
            &Options {
                select: Selection::target(&club),
                ..Default::default()
            },
        )
        .unwrap();
        let planned: Vec<String> = p.changes.iter().map(|c| c.address.to_string()).collect();
        assert_eq!(planned, [LOGO, CLUB]);
        let unknown = Address::new(M, Kind::Template, "nope");
        assert!(matches!(
            plan(
                &d,
                &s,
                &Options {
                    select: Selection::target(&unknown),
                    ..Default::default()
                }
            ),
            Err(PlanError::Select(select::SelectError::NoMatch(_)))
        ));
    }

    #[test]
    fn an_import_adopts_and_says_what_the_manifests_change() {
        let mut d = base();
        let club = Address::new(M, Kind::Template, "club");
        d.imports.insert(
            club.clone(),
            crate::model::Import {
                template_id: "T-OLD".into(),
                written_at: "cardform.yaml:9:5".into(),
            },
        );
        let wanted = d.resources[&club].attrs.to_json();
        let mut renamed = wanted.clone();
        renamed["style"]["name"] = serde_json::json!("Console Club");
        // (what the gateway holds, expected reason)
        let table = [
            (
                wanted.clone(),
                "adopted from the gateway (template_id T-OLD); it matches the manifests",
            ),
            (renamed, "then updated in place: changed: style.name"),
        ];
        for (at_gateway, why) in table {
            let opts = Options {
                imported: [(club.clone(), at_gateway)].into(),
                ..Default::default()
            };
            let p = plan(&d, &Snapshot::empty(), &opts).unwrap();
            let c = p.changes.iter().find(|c| c.address == club).unwrap();
            assert_eq!(c.action, Action::Import);
            assert!(c.reason.contains(why), "{}", c.reason);
            assert_eq!(p.summary.import, 1);
            // The template's activation URL is set up as new, saying why.
            let url = p
                .changes
                .iter()
                .find(|c| c.address.kind == Kind::ActivationUrl)
                .unwrap();
            assert_eq!(url.action, Action::Create);
            assert!(
                url.reason.contains("imported template's activation URL"),
                "{}",
                url.reason
            );
        }
        // Not read from the gateway: a bug, said so.
        assert!(matches!(
            plan(&d, &Snapshot::empty(), &Options::default()),
            Err(PlanError::ImportNotRead(_))
        ));
        // The state already records the address as another template.
        assert!(matches!(
            plan(&d, &applied(&d), &Options::default()),
            Err(PlanError::ImportConflict { .. })
        ));
    }
}
