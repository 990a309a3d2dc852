//! The card ledger: what `cardform cards` journals per member card, so that
//! a re-run (after a crash, a retry, a repeated callback) never opens a
//! second card and never loses the card number Alipay assigned.
//!
//! An entry holds keys, a salted digest, the card number, and times;
//! nothing of the member (no user id, name, phone, birthday, code or
//! token). It lives beside the state (`<state dir>/cards`) with its own
//! lock, so that `cards serve` runs while `apply` changes templates.

use serde::{Deserialize, Serialize};

use super::{Durability, StateError};
use crate::model::Address;

/// One card, by its out_serial_no.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub out_serial_no: String,
    /// The template (tier) the card was opened on.
    pub template: Address,
    pub template_id: String,
    /// Digest of the row a CSV opened it from (salted: see `cards`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_digest: Option<String>,
    /// The activation it was opened for (`cards serve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub journalled_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_card_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<String>,
    /// Digest of the values last synced (or opened with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

/// A call made once per key, ever: a trade (`cards consume`, the till's
/// transactions) or a reminder (`cards notify`). Journalled before the call
/// and settled after it; holds a salted digest of what was sent, never the
/// amounts or the member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Once {
    /// `t:<hex>` for a trade, `n:<hex>` for a reminder (see `cards::trade`).
    pub key: String,
    /// The card it was sent to (Alipay's card number).
    pub biz_card_no: String,
    /// Salted digest of the content: the same key with other content is
    /// refused.
    pub digest: String,
    pub journalled_at: String,
    /// When Alipay accepted it; `None` while in doubt (journalled, no
    /// answer recorded): a re-run sends the same content again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
}

/// Counts, for `cards` summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub opened: usize,
    /// Journalled, no card number yet: the next run settles them.
    pub in_doubt: usize,
    pub deleted: usize,
}

/// What became of a claim on a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours: free, ours already, or taken over from a holder gone stale.
    Ours,
    /// Another holder's (another replica of `cards serve` at work on it).
    Held { holder: String },
}

pub trait CardLedger: Send + Sync {
    /// This ledger's secret salt for row digests (made on first open).
    fn salt(&self) -> [u8; 32];
    fn get(&self, out_serial_no: &str) -> Result<Option<Entry>, StateError>;
    /// Write an entry (and its `request_id`'s index, at once).
    fn put(&self, entry: &Entry, durability: Durability) -> Result<(), StateError>;
    /// Drop an entry whose call definitely did not take effect.
    fn forget(&self, out_serial_no: &str) -> Result<(), StateError>;
    /// The out_serial_no journalled for an activation's `request_id`.
    fn by_request(&self, request_id: &str) -> Result<Option<String>, StateError>;
    /// The card opened under an Alipay card number (indexed by `put`).
    fn by_biz(&self, biz_card_no: &str) -> Result<Option<String>, StateError>;
    /// A once-ever call's journal entry.
    fn once(&self, key: &str) -> Result<Option<Once>, StateError>;
    fn put_once(&self, once: &Once, durability: Durability) -> Result<(), StateError>;
    /// Drop a journal entry whose call definitely did not take effect.
    fn forget_once(&self, key: &str) -> Result<(), StateError>;
    /// Claim `key` for `holder`: one process at work on one activation,
    /// among the processes sharing this ledger. Taken when free or when the
    /// holder's claim is older than `stale` (a process that died), on the
    /// ledger's own clock; durable when it returns.
    fn claim(
        &self,
        key: &str,
        holder: &str,
        stale: std::time::Duration,
    ) -> Result<Claim, StateError>;
    /// Give up `holder`'s claim on `key` (another holder's is left alone).
    fn release(&self, key: &str, holder: &str) -> Result<(), StateError>;
    /// Drop whatever claim is left on `key`, whoever holds it: for work
    /// already settled, where a claim means nothing (one left by a process
    /// killed between settling and releasing).
    fn clear_claim(&self, key: &str) -> Result<(), StateError>;
    fn flush(&self) -> Result<(), StateError>;
    /// Every row (key, text), the salt apart: what `state migrate` moves.
    fn export(&self) -> Result<Vec<(String, String)>, StateError>;
    /// Replace the whole ledger with `rows` under `salt`, at once: after a
    /// crash it holds either what it held or all of `rows`.
    fn replace(&self, salt: [u8; 32], rows: &[(String, String)]) -> Result<(), StateError>;
    fn tally(&self) -> Result<Tally, StateError>;
}
