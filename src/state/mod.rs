//! Recorded state: what was applied, with every id the gateway returned.
//!
//! [`Snapshot`] is the read-only view the planner takes; [`StateStore`] is the
//! trait the executor writes through; [`Backend`] opens a store (locked) and
//! answers for it as a whole (lock holder, backup, recovery). The backends
//! live in `crate::stores`; this room holds the records and the traits, and
//! does no I/O of its own. Never holds a secret.

pub mod backend;
pub mod cards;

pub use backend::{Backend, LockInfo};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::model::{Address, Kind};

/// The ids the gateway returned for a resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Decoded once, ready to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_card_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benefit_id: Option<String>,
    /// A digest of the address and the ids above, written with them: an id
    /// moved to another record (edited, swapped) no longer matches, and
    /// the record is refused before a call could change another template
    /// (see [`Ids::sealed`]). Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
}

impl Ids {
    fn digest(&self, address: &Address) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [
            Some(address.to_string().as_str()),
            self.image_id.as_deref(),
            self.image_url.as_deref(),
            self.template_id.as_deref(),
            self.apply_card_url.as_deref(),
            self.benefit_id.as_deref(),
        ] {
            let p = part.unwrap_or("\u{0}");
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        hex::encode(&h.finalize()[..12])
    }

    /// These ids without their seal (for reports: a seal is the state's).
    pub fn unsealed(mut self) -> Self {
        self.seal = None;
        self
    }

    /// These ids sealed to `address`.
    pub fn sealed(mut self, address: &Address) -> Self {
        self.seal = None;
        self.seal = Some(self.digest(address));
        self
    }

    /// Whether these ids were recorded for `address` (true for a record
    /// written before seals).
    pub fn sealed_to(&self, address: &Address) -> bool {
        match &self.seal {
            None => true,
            Some(s) => {
                let mut bare = self.clone();
                bare.seal = None;
                *s == bare.digest(address)
            }
        }
    }
}

/// One applied resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceState {
    pub address: Address,
    pub kind: Kind,
    pub ids: Ids,
    /// sha256 of the attributes last applied.
    pub hash: String,
    /// The attributes last applied, kept as raw JSON text: reading state stays
    /// cheap, and only the planner's diffs parse it.
    pub attrs: Box<RawValue>,
    /// RFC 3339, UTC.
    pub applied_at: String,
}

impl ResourceState {
    /// The record under another address (a `moved` block), its ids sealed
    /// to it.
    pub fn move_to(&mut self, to: &Address) {
        let sealed = self.ids.seal.is_some() && self.ids.sealed_to(&self.address);
        self.address = to.clone();
        if sealed {
            self.ids = std::mem::take(&mut self.ids).sealed(to);
        }
    }

    pub fn attrs_value(&self) -> Value {
        serde_json::from_str(self.attrs.get()).unwrap_or(Value::Null)
    }
}

/// Attributes as stored.
pub fn raw_attrs(attrs: &crate::model::Attrs) -> Box<RawValue> {
    serde_json::value::to_raw_value(attrs).expect("bug: attributes always serialize")
}

/// A create journalled before its call: a crash and re-run replays exactly
/// this request (same request_id, same content), so the gateway never holds a
/// duplicate and the returned id is not lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub address: Address,
    pub request_id: String,
    /// The exact biz_content sent.
    pub request: Value,
    /// Hash and attributes the request was built from.
    pub hash: String,
    pub attrs: Value,
    pub started_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Identifies this state's history; imports refuse a foreign lineage.
    pub lineage: String,
    /// Increases on every change.
    pub serial: u64,
    /// What this state belongs to, recorded by the first apply; plan and
    /// apply refuse another project or gateway (`state rebind` changes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<Binding>,
}

/// The project and gateway a state belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The project's name (`project:` or its directory's name).
    pub project: String,
    /// The gateway: `sandbox` (embedded) or the endpoint URL's host.
    pub gateway: String,
    pub app_id: String,
}

impl std::fmt::Display for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "project `{}` on gateway `{}` as app `{}`",
            self.project, self.gateway, self.app_id
        )
    }
}

/// Everything recorded, read at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: Meta,
    pub resources: BTreeMap<Address, ResourceState>,
    #[serde(default)]
    pub intents: BTreeMap<Address, Intent>,
    /// Template ids this state forgot (retired, `state rm`): they stay at
    /// Alipay, known, so that they never look like someone else's templates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forgotten: BTreeMap<String, Address>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot {
            meta: Meta {
                lineage: String::new(),
                serial: 0,
                binding: None,
            },
            resources: BTreeMap::new(),
            intents: BTreeMap::new(),
            forgotten: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Locked(#[from] backend::LockError),
    #[error("the state store in `{dir}` cannot be opened: {reason}")]
    Open { dir: String, reason: String },
    #[error("state store I/O failed: {0}")]
    Io(String),
    #[error(
        "the state in {place} is damaged: {reason}; refusing to use it (a damaged state read as empty or as it was would create duplicate templates at Alipay, or change another card's)\nhint: `cardform state recover` restores the state saved after the last successful apply ({backup}) and lists what it cannot restore"
    )]
    Damaged {
        /// Where: "`DIR`" or "PostgreSQL schema `s`".
        place: String,
        /// Where the backup is.
        backup: String,
        reason: String,
    },
    #[error("state record `{key}` is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("{0}")]
    Refused(String),
}

/// How soon a write must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// On disk before the call returns.
    Flushed,
    /// Written at once (readable, and kept if the process is killed after the
    /// store's next flush); on disk within [`FLUSH_EVERY_MS`] or at the next
    /// flushed write, whichever is first. Only for results that a re-run
    /// recovers without a duplicate: a create whose intent stays journalled
    /// until this commit lands, or an idempotent call.
    Deferred,
}

/// The longest a [`Durability::Deferred`] write waits for its flush.
pub const FLUSH_EVERY_MS: u64 = 200;

/// Where state is kept. Every write is durable when it returns, except a
/// commit the caller marks [`Durability::Deferred`].
pub trait StateStore: Send + Sync {
    fn snapshot(&self) -> Result<Snapshot, StateError>;
    /// Record an applied resource (clearing any intent for it); returns the new serial.
    fn commit(&self, r: &ResourceState, durability: Durability) -> Result<u64, StateError>;
    /// Make every write so far durable.
    fn flush(&self) -> Result<(), StateError>;
    /// Forget a resource (retire, `state rm`); returns the new serial.
    fn forget(&self, address: &Address) -> Result<u64, StateError>;
    /// Journal a create before its call.
    fn begin(&self, intent: &Intent) -> Result<(), StateError>;
    /// Drop an intent whose call definitely did not take effect.
    fn abandon(&self, address: &Address) -> Result<(), StateError>;
    /// Replace everything (state import).
    fn replace_all(&self, snap: &Snapshot) -> Result<(), StateError>;
    /// Record the project and gateway this state belongs to (flushed).
    fn bind(&self, binding: &Binding) -> Result<(), StateError>;
    /// Move what is recorded at `from` (resource and intent) to `to`, as a
    /// `moved` block asks (flushed); returns the new serial. Interrupted, it
    /// leaves both addresses with the same record, which plan recognises.
    fn rename(&self, from: &Address, to: &Address) -> Result<u64, StateError>;
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
