//! The planner: a pure function from what the manifests ask for and what the
//! state records to the list of changes, each with its reason in words.
//!
//! No clock, no network, no store: `plan(&Desired, &Snapshot, &Options)`.
//! Output order is deterministic (dependency order, then address).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::graph;
use crate::model::{Address, Attrs, Desired, Kind};
use crate::state::Snapshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Retire,
    NoOp,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Retire => "retire",
            Action::NoOp => "no-op",
        }
    }
}

/// One resource's planned change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: Address,
    pub kind: Kind,
    pub action: Action,
    /// Why, for people. Code never branches on it.
    pub reason: String,
    /// Attributes recorded in state (absent for a create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// Attributes the manifests ask for (absent for a retire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// Addresses this change waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<Address>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub retire: usize,
    pub no_op: usize,
}

impl Summary {
    pub fn changes(&self) -> usize {
        self.create + self.update + self.replace + self.retire
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Address>,
    /// Merchants' `display_name`s, for people reading the plan.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub display_names: BTreeMap<String, String>,
    pub summary: Summary,
    /// Every resource considered, in dependency order; no-ops included.
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.summary.changes() > 0
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub target: Option<Address>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Graph(#[from] graph::GraphError),
    #[error("--target `{0}` is not in the manifests or the state")]
    UnknownTarget(Address),
}

/// The hash a saved plan is checked against.
pub fn desired_hash(desired: &Desired) -> String {
    let hashes: BTreeMap<&Address, String> = desired
        .resources
        .iter()
        .map(|(a, r)| (a, r.attrs.hash()))
        .collect();
    desired_hash_from(desired, &hashes)
}

fn desired_hash_from(desired: &Desired, hashes: &BTreeMap<&Address, String>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (address, hash) in hashes {
        h.update(address.to_string().as_bytes());
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
fn changed_fields(before: &Value, after: &Value) -> Vec<String> {
    let (Value::Object(b), Value::Object(a)) = (before, after) else {
        return Vec::new();
    };
    let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| k.to_string())
        .collect()
}

pub fn plan(desired: &Desired, snap: &Snapshot, opts: &Options) -> Result<Plan, PlanError> {
    let order = graph::order(desired)?;
    let scope: Option<BTreeSet<Address>> = match &opts.target {
        Some(t) if desired.resources.contains_key(t) => Some(graph::closure(desired, t)),
        Some(t) if snap.resources.contains_key(t) => Some(BTreeSet::from([t.clone()])),
        Some(t) => return Err(PlanError::UnknownTarget(t.clone())),
        None => None,
    };
    let in_scope = |a: &Address| scope.as_ref().is_none_or(|s| s.contains(a));
    let hashes: BTreeMap<&Address, String> = desired
        .resources
        .iter()
        .map(|(a, r)| (a, r.attrs.hash()))
        .collect();
    let mut actions: BTreeMap<Address, Action> = BTreeMap::new();
    let mut changes = Vec::new();
    for address in order.iter().filter(|a| in_scope(a)) {
        let res = &desired.resources[address];
        let hash = &hashes[address];
        let (action, reason, before) = match snap.resources.get(address) {
            None => {
                let reason = match snap.intents.get(address) {
                    Some(i) => format!(
                        "an earlier apply was interrupted during its create; the same request (request_id {}) is replayed, so no duplicate is made",
                        i.request_id
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
                let renewed_dep = res
                    .deps
                    .iter()
                    .find(|d| matches!(actions.get(*d), Some(Action::Create | Action::Replace)));
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
                        (Attrs::Image(_), None) => (
                            Action::Replace,
                            "the image content changed: it is uploaded anew (Alipay cannot change or delete an image)".to_string(),
                            Some(old_attrs()),
                        ),
                        _ => {
                            let fields = changed_fields(&old_attrs(), &res.attrs.to_json());
                            let images_only = fields.iter().all(|f| f == "image_hashes");
                            let reason = if images_only {
                                "an image it uses is uploaded anew: the template is updated to use the new image_id".to_string()
                            } else {
                                format!("changed: {}", fields.into_iter().filter(|f| f != "image_hashes").collect::<Vec<_>>().join(", "))
                            };
                            (Action::Update, reason, Some(old_attrs()))
                        }
                    }
                } else if let Some(dep) = renewed_dep {
                    renewed(address, dep, old_attrs())
                } else {
                    (Action::NoOp, "up to date".to_string(), Some(old_attrs()))
                }
            }
        };
        actions.insert(address.clone(), action);
        changes.push(Change {
            address: address.clone(),
            kind: address.kind,
            action,
            reason,
            before,
            // No-ops carry no attributes: plans of large projects stay small.
            after: (action != Action::NoOp).then(|| res.attrs.to_json()),
            deps: res.deps.clone(),
        });
    }
    // Retire what left the manifests, dependents first (URLs before templates).
    let mut retired: Vec<&Address> = snap
        .resources
        .keys()
        .filter(|a| !desired.resources.contains_key(*a) && in_scope(a))
        .collect();
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
        };
        changes.push(Change {
            address: address.clone(),
            kind: address.kind,
            action: Action::Retire,
            reason,
            before: Some(old.attrs_value()),
            after: None,
            deps: Vec::new(),
        });
    }
    let mut summary = Summary::default();
    for c in &changes {
        match c.action {
            Action::Create => summary.create += 1,
            Action::Update => summary.update += 1,
            Action::Replace => summary.replace += 1,
            Action::Retire => summary.retire += 1,
            Action::NoOp => summary.no_op += 1,
        }
    }
    Ok(Plan {
        format_version: 1,
        lineage: snap.meta.lineage.clone(),
        serial: snap.meta.serial,
        desired_hash: desired_hash_from(desired, &hashes),
        target: opts.target.clone(),
        display_names: desired
            .merchants
            .iter()
            .filter_map(|(m, info)| Some((m.clone(), info.display_name.clone()?)))
            .collect(),
        summary,
        changes,
    })
}
