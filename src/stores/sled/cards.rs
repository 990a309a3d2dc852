//! The card ledger on sled: `<state dir>/cards/`, one tree, keys `c:<out_serial_no>`
//! (an [`Entry`] as JSON) and `r:<request_id>` (its out_serial_no), the
//! salt under `salt`. Locked like the state (an OS lock, `lock.json` for
//! messages), separately from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::lock;
use crate::state::cards::{CardLedger, Claim, Entry, Once, Tally};
use crate::state::{Durability, FLUSH_EVERY_MS, LockInfo, StateError};

pub struct SledLedger {
    db: sled::Db,
    tree: sled::Tree,
    /// Claims on activations (in memory: the ledger is one process's).
    claims: std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
    salt: [u8; 32],
    dir: PathBuf,
}

fn io(e: impl std::fmt::Display) -> StateError {
    StateError::Io(e.to_string())
}

/// Where a state directory keeps its card ledger.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cards")
}

impl SledLedger {
    pub fn open(state_dir: &Path, operation: &str, timeout: Duration) -> Result<Self, StateError> {
        let dir = dir(state_dir);
        std::fs::create_dir_all(&dir).map_err(|e| StateError::Open {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let db = lock::acquire(&dir, timeout, || {
            match sled::Config::new()
                .path(dir.join("store"))
                .flush_every_ms(Some(FLUSH_EVERY_MS))
                // Rows are streamed: a bounded page cache keeps a run of
                // 100,000 cards in bounded memory (sled's default is 1 GB).
                .cache_capacity(16 * 1024 * 1024)
                .open()
            {
                Ok(db) => Ok(Some(db)),
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("lock") =>
                {
                    Ok(None)
                }
                Err(e) => Err(StateError::Open {
                    dir: dir.display().to_string(),
                    reason: e.to_string(),
                }),
            }
        })?;
        let info = serde_json::to_vec_pretty(&LockInfo::current(operation)).map_err(io)?;
        std::fs::write(lock::info_path(&dir), info).map_err(io)?;
        let tree = db.open_tree("cards").map_err(io)?;
        let salt = match tree.get("salt").map_err(io)? {
            Some(s) if s.len() == 32 => {
                let mut salt = [0u8; 32];
                salt.copy_from_slice(&s);
                salt
            }
            Some(_) => {
                return Err(StateError::Damaged {
                    place: format!("`{}`", dir.display()),
                    backup: "none: the card ledger has no backup".into(),
                    reason: "the card ledger's salt is not 32 bytes".into(),
                });
            }
            None => {
                let salt: [u8; 32] = rand::random();
                tree.insert("salt", &salt).map_err(io)?;
                db.flush().map_err(io)?;
                salt
            }
        };
        Ok(SledLedger {
            db,
            tree,
            claims: Default::default(),
            salt,
            dir,
        })
    }

    fn corrupt(&self, key: &str, e: impl std::fmt::Display) -> StateError {
        StateError::Corrupt {
            key: format!("{}: {key}", self.dir.display()),
            reason: e.to_string(),
        }
    }

    /// An index entry (a key naming an out_serial_no).
    fn text(&self, key: &str) -> Result<Option<String>, StateError> {
        match self.tree.get(key).map_err(io)? {
            None => Ok(None),
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|e| self.corrupt(key, e)),
        }
    }
}

impl CardLedger for SledLedger {
    fn salt(&self) -> [u8; 32] {
        self.salt
    }

    fn get(&self, out_serial_no: &str) -> Result<Option<Entry>, StateError> {
        let key = format!("c:{out_serial_no}");
        match self.tree.get(&key).map_err(io)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.corrupt(&key, e)),
        }
    }

    fn put(&self, entry: &Entry, durability: Durability) -> Result<(), StateError> {
        let mut batch = sled::Batch::default();
        batch.insert(
            format!("c:{}", entry.out_serial_no).as_bytes(),
            serde_json::to_vec(entry).map_err(io)?,
        );
        if let Some(r) = &entry.request_id {
            batch.insert(format!("r:{r}").as_bytes(), entry.out_serial_no.as_bytes());
        }
        if let Some(b) = &entry.biz_card_no {
            batch.insert(format!("b:{b}").as_bytes(), entry.out_serial_no.as_bytes());
        }
        self.tree.apply_batch(batch).map_err(io)?;
        if durability == Durability::Flushed {
            self.db.flush().map_err(io)?;
        }
        Ok(())
    }

    fn forget(&self, out_serial_no: &str) -> Result<(), StateError> {
        self.tree
            .remove(format!("c:{out_serial_no}"))
            .map(|_| ())
            .map_err(io)
    }

    fn by_request(&self, request_id: &str) -> Result<Option<String>, StateError> {
        self.text(&format!("r:{request_id}"))
    }

    fn by_biz(&self, biz_card_no: &str) -> Result<Option<String>, StateError> {
        self.text(&format!("b:{biz_card_no}"))
    }

    fn once(&self, key: &str) -> Result<Option<Once>, StateError> {
        let key = format!("o:{key}");
        match self.tree.get(&key).map_err(io)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.corrupt(&key, e)),
        }
    }

    fn put_once(&self, once: &Once, durability: Durability) -> Result<(), StateError> {
        self.tree
            .insert(
                format!("o:{}", once.key),
                serde_json::to_vec(once).map_err(io)?,
            )
            .map_err(io)?;
        if durability == Durability::Flushed {
            self.db.flush().map_err(io)?;
        }
        Ok(())
    }

    fn forget_once(&self, key: &str) -> Result<(), StateError> {
        self.tree.remove(format!("o:{key}")).map(|_| ()).map_err(io)
    }

    fn flush(&self) -> Result<(), StateError> {
        self.db.flush().map(|_| ()).map_err(io)
    }

    fn claim(&self, key: &str, holder: &str, stale: Duration) -> Result<Claim, StateError> {
        // One process holds a sled ledger, so its claims live in memory:
        // none survives the process (a restart leaves nothing to wait for).
        let mut claims = self.claims.lock().expect("not poisoned");
        match claims.get(key) {
            Some((who, at)) if who != holder && at.elapsed() < stale => {
                return Ok(Claim::Held {
                    holder: who.clone(),
                });
            }
            _ => {}
        }
        claims.insert(
            key.to_string(),
            (holder.to_string(), std::time::Instant::now()),
        );
        Ok(Claim::Ours)
    }

    fn clear_claim(&self, key: &str) -> Result<(), StateError> {
        self.claims.lock().expect("not poisoned").remove(key);
        Ok(())
    }

    fn release(&self, key: &str, holder: &str) -> Result<(), StateError> {
        let mut claims = self.claims.lock().expect("not poisoned");
        if claims.get(key).is_some_and(|(who, _)| who == holder) {
            claims.remove(key);
        }
        Ok(())
    }

    fn export(&self) -> Result<Vec<(String, String)>, StateError> {
        let mut rows = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item.map_err(io)?;
            if &*k == b"salt" {
                continue;
            }
            let key = String::from_utf8(k.to_vec()).map_err(|e| self.corrupt("a key", e))?;
            let text = String::from_utf8(v.to_vec()).map_err(|e| self.corrupt(&key, e))?;
            rows.push((key, text));
        }
        Ok(rows)
    }

    fn replace(&self, salt: [u8; 32], rows: &[(String, String)]) -> Result<(), StateError> {
        // One batch: sled applies it whole or not at all.
        let mut batch = sled::Batch::default();
        for item in self.tree.iter() {
            let (k, _) = item.map_err(io)?;
            batch.remove(k);
        }
        batch.insert("salt", &salt);
        for (k, v) in rows {
            batch.insert(k.as_bytes(), v.as_bytes());
        }
        self.tree.apply_batch(batch).map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }

    fn tally(&self) -> Result<Tally, StateError> {
        let mut t = Tally::default();
        for item in self.tree.scan_prefix("c:") {
            let (k, v) = item.map_err(io)?;
            let e: Entry = serde_json::from_slice(&v)
                .map_err(|e| self.corrupt(&String::from_utf8_lossy(&k), e))?;
            if e.deleted_at.is_some() {
                t.deleted += 1;
            } else if e.biz_card_no.is_some() {
                t.opened += 1;
            } else {
                t.in_doubt += 1;
            }
        }
        Ok(t)
    }
}
