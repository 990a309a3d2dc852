//! The sled backend as a whole: a state directory holding the store
//! (`store/`), its integrity checkpoint, its lock record and its backup.
//! Recovery moves a damaged store aside and rebuilds it from the backup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{SledStore, backup, integrity, lock, salvage};
use crate::state::backend::{Backend, LockInfo, Recovered};
use crate::state::cards::CardLedger;
use crate::state::{Snapshot, StateError, StateStore};

pub struct SledBackend {
    dir: PathBuf,
}

impl SledBackend {
    pub fn new(dir: &Path) -> Self {
        SledBackend {
            dir: dir.to_path_buf(),
        }
    }

    fn refused(&self, msg: String) -> StateError {
        StateError::Refused(msg)
    }

    /// A live run other than this one, from its lock record.
    fn running(&self) -> Option<LockInfo> {
        lock::read_info(&self.dir).filter(|i| i.alive() && i.pid != std::process::id())
    }
}

impl Backend for SledBackend {
    fn describe(&self) -> String {
        format!("`{}`", self.dir.display())
    }

    fn open(&self, operation: &str, timeout: Duration) -> Result<Box<dyn StateStore>, StateError> {
        Ok(Box::new(SledStore::open(&self.dir, operation, timeout)?))
    }

    fn exists(&self) -> bool {
        self.dir.exists()
    }

    fn open_cards(
        &self,
        operation: &str,
        timeout: Duration,
    ) -> Result<Box<dyn CardLedger>, StateError> {
        Ok(Box::new(super::cards::SledLedger::open(
            &self.dir, operation, timeout,
        )?))
    }

    fn read(&self, operation: &str, timeout: Duration) -> Result<Snapshot, StateError> {
        SledStore::read(&self.dir, operation, timeout)
    }

    fn lock_holder(&self) -> Option<LockInfo> {
        // A record whose process is gone holds nothing: the OS released it.
        lock::read_info(&self.dir).filter(LockInfo::alive)
    }

    fn force_unlock(&self) -> Result<Option<LockInfo>, StateError> {
        let info = lock::read_info(&self.dir);
        if let Some(i) = self.running() {
            // The OS lock is still held by a live process: clearing the record would lie.
            if SledStore::open(&self.dir, "state unlock", Duration::ZERO).is_err() {
                return Err(self.refused(format!(
                    "`cardform {}` (pid {}) is still running and holds the state lock\nhint: stop it first",
                    i.operation, i.pid
                )));
            }
        }
        let _ = std::fs::remove_file(lock::info_path(&self.dir));
        Ok(info)
    }

    fn write_backup(&self, snap: &Snapshot) -> Result<(), StateError> {
        backup::write(&self.dir, snap).map_err(|e| {
            StateError::Io(format!(
                "cannot write `{}`: {e}",
                backup::file(&self.dir).display()
            ))
        })
    }

    fn recover(&self, force: bool) -> Result<Recovered, StateError> {
        let dir = &self.dir;
        if let Some(i) = self.running() {
            return Err(self.refused(format!(
                "`cardform {}` (pid {}) is running on this state\nhint: stop it first",
                i.operation, i.pid
            )));
        }
        let backup_path = backup::file(dir);
        let Some(backup) = backup::read(dir).map_err(StateError::Io)? else {
            return Err(self.refused(format!(
                "there is no backup to recover from (`{}`: one is written after every successful apply)\nhint: if the templates exist at the gateway, they must be brought back into a new state by hand (`cardform state import`)",
                backup_path.display()
            )));
        };
        // Opened as any command would (a lost store is damage here).
        match SledStore::open(dir, "state recover (check)", Duration::ZERO) {
            Ok(_) if !force => {
                return Err(self.refused(format!(
                    "the state in `{}` is not damaged; recovering would replace it with the backup\nhint: pass --force to do so anyway",
                    dir.display()
                )));
            }
            Ok(store) => drop(store),
            Err(StateError::Damaged { .. }) => {}
            Err(e) => return Err(e),
        }
        let io = |what: &Path, e: std::io::Error| {
            StateError::Io(format!("cannot move `{}` aside: {e}", what.display()))
        };
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let moved_to = dir.join(format!("store.damaged-{stamp}"));
        let store_dir = dir.join("store");
        if store_dir.exists() {
            std::fs::rename(&store_dir, &moved_to).map_err(|e| io(&store_dir, e))?;
        }
        let checkpoint = integrity::file(dir);
        if checkpoint.exists() {
            std::fs::rename(
                &checkpoint,
                dir.join(format!("integrity.json.damaged-{stamp}")),
            )
            .map_err(|e| io(&checkpoint, e))?;
        }
        let salvaged = salvage(&moved_to);
        let store = SledStore::open(dir, super::RECOVER, Duration::ZERO)?;
        let mut restored = backup.clone();
        restored.meta.serial = backup.meta.serial.max(salvaged.meta.serial) + 1;
        store.replace_all(&restored)?;
        let not_restored = crate::state::backend::not_restored(&backup, &salvaged);
        Ok(Recovered {
            backup: backup_path.display().to_string(),
            moved_to: moved_to.display().to_string(),
            restored: restored.resources.len(),
            serial: restored.meta.serial,
            not_restored,
        })
    }
}
