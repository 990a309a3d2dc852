//! Telling an empty state from a damaged one.
//!
//! The store keeps, with every flush, a *checkpoint*: how many records it
//! holds and a digest of them (the XOR of SHA-256 over each key and its
//! stored bytes, so that one record's change updates it in O(1)). The
//! checkpoint is written inside the store and, once the store's flush is on
//! disk, again in `integrity.json` beside it. On open:
//!
//! 1. the store's checkpoint must be at least as new as `integrity.json` (a
//!    store that lost flushed writes — a truncated or deleted log — is older);
//! 2. the records must add up to the checkpoint: records written since carry
//!    their write's `stamp` and the hash their key had at the checkpoint
//!    (`was`), so later writes that reached the disk before a crash are
//!    accounted for, and a lost, added or altered record is not.
//!
//! Performs no I/O except reading and writing `integrity.json`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// SHA-256 of a record: its key and its stored bytes.
pub type Hash = [u8; 32];

pub fn record_hash(key: &[u8], value: &[u8]) -> Hash {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&(key.len() as u64).to_be_bytes());
    ctx.update(key);
    ctx.update(value);
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn xor(a: &mut Hash, b: &Hash) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// Count and digest of a set of records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub digest: Hash,
}

impl Tally {
    pub fn add(&mut self, h: &Hash) {
        self.count += 1;
        xor(&mut self.digest, h);
    }
    pub fn remove(&mut self, h: &Hash) {
        self.count = self.count.saturating_sub(1);
        xor(&mut self.digest, h);
    }
}

/// A checkpoint: the tally of every record as of write `stamp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The state's lineage (a checkpoint of another state proves nothing).
    pub lineage: String,
    /// Every write with a stamp up to this one is counted.
    pub stamp: u64,
    pub count: u64,
    /// Hex of the digest.
    pub digest: String,
}

impl Checkpoint {
    pub fn new(lineage: &str, stamp: u64, tally: &Tally) -> Self {
        Checkpoint {
            lineage: lineage.to_string(),
            stamp,
            count: tally.count,
            digest: hex::encode(tally.digest),
        }
    }
}

pub fn file(dir: &Path) -> PathBuf {
    dir.join("integrity.json")
}

/// Write `integrity.json` atomically (a temporary file renamed over it).
/// Not synced: it is written after the store's own flush, so on disk it is
/// never newer than the store.
pub fn write(dir: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    let tmp = dir.join("integrity.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(cp).expect("checkpoints serialize"),
    )?;
    std::fs::rename(&tmp, file(dir))
}

/// `integrity.json`, if there is one. An unreadable one is an error.
pub fn read(dir: &Path) -> Result<Option<Checkpoint>, String> {
    let path = file(dir);
    match crate::util::bounded::read(&path, 64 * 1024) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("`{}` is unreadable: {e}", path.display())),
        Err(_) if !path.exists() => Ok(None),
        Err(e) => Err(e),
    }
}

/// One record as the check sees it.
pub struct Seen<'a> {
    pub hash: Hash,
    pub stamp: u64,
    /// Hex of the key's hash at the last checkpoint; empty if it had none.
    pub was: Option<&'a str>,
    pub gone: bool,
}

/// Whether `records` add up to `cp`; otherwise why not.
pub fn verify<'a>(cp: &Checkpoint, records: impl Iterator<Item = Seen<'a>>) -> Result<(), String> {
    let mut check = Check::new(cp);
    for r in records {
        check.see(&r)?;
    }
    check.finish()
}

/// [`verify`] one record at a time, for a caller that reads each record
/// once and keeps nothing of it for the check.
pub struct Check<'c> {
    cp: &'c Checkpoint,
    tally: Tally,
}

impl<'c> Check<'c> {
    pub fn new(cp: &'c Checkpoint) -> Self {
        Check {
            cp,
            tally: Tally::default(),
        }
    }

    pub fn see(&mut self, r: &Seen) -> Result<(), String> {
        if r.stamp > self.cp.stamp {
            // Written after the checkpoint: count what the key held then.
            match r.was {
                Some("") => {}
                Some(was) => {
                    let mut h = [0u8; 32];
                    hex::decode_to_slice(was, &mut h)
                        .map_err(|_| "a record's checkpoint hash is malformed".to_string())?;
                    self.tally.add(&h);
                }
                None => {
                    return Err(
                        "a record written after the checkpoint lacks its checkpoint hash".into(),
                    );
                }
            }
        } else if !r.gone {
            self.tally.add(&r.hash);
        }
        Ok(())
    }

    pub fn finish(self) -> Result<(), String> {
        if self.tally.count != self.cp.count {
            return Err(format!(
                "it holds {} record(s) where its checkpoint counts {}",
                self.tally.count, self.cp.count
            ));
        }
        if hex::encode(self.tally.digest) != self.cp.digest {
            return Err(
                "its records do not match their checkpoint digest (altered or lost)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(key: &str, value: &str, stamp: u64, was: Option<&'static str>) -> Seen<'static> {
        Seen {
            hash: record_hash(key.as_bytes(), value.as_bytes()),
            stamp,
            was,
            gone: false,
        }
    }

    #[test]
    fn records_add_up_to_their_checkpoint_and_later_writes_are_accounted_for() {
        let mut t = Tally::default();
        t.add(&record_hash(b"a", b"1"));
        t.add(&record_hash(b"b", b"2"));
        let cp = Checkpoint::new("L", 5, &t);
        assert!(
            verify(
                &cp,
                [seen("a", "1", 3, None), seen("b", "2", 5, None)].into_iter()
            )
            .is_ok()
        );
        // A lost record, an altered one, an extra one: refused.
        assert!(verify(&cp, [seen("a", "1", 3, None)].into_iter()).is_err());
        assert!(
            verify(
                &cp,
                [seen("a", "1", 3, None), seen("b", "3", 5, None)].into_iter()
            )
            .is_err()
        );
        // `b` rewritten after the checkpoint, `c` added after it: fine.
        let b_was: &'static str = Box::leak(hex::encode(record_hash(b"b", b"2")).into_boxed_str());
        assert!(
            verify(
                &cp,
                [
                    seen("a", "1", 3, None),
                    seen("b", "9", 7, Some(b_was)),
                    seen("c", "1", 8, Some(""))
                ]
                .into_iter()
            )
            .is_ok()
        );
    }
}
