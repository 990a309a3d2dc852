//! The last known good state: a copy of the whole state written after every
//! successful apply (as Terraform keeps `terraform.tfstate.backup`), from
//! which `cardform state recover` rebuilds a damaged store.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::state::Snapshot;

pub fn file(dir: &Path) -> PathBuf {
    dir.join("backup.json")
}

/// Write the backup atomically: a synced temporary file renamed over the
/// old one, then the directory synced, so a crash leaves the old or the new
/// backup, never a torn one.
pub fn write(dir: &Path, snap: &Snapshot) -> std::io::Result<()> {
    let tmp = dir.join("backup.json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(snap).expect("snapshots serialize"))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file(dir))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The backup, if there is one.
pub fn read(dir: &Path) -> Result<Option<Snapshot>, String> {
    let path = file(dir);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = crate::util::bounded::read(&path, 1 << 30)?;
    let mut snap: Snapshot = serde_json::from_slice(&bytes)
        .map_err(|e| format!("`{}` is unreadable: {e}", path.display()))?;
    crate::stores::migrate::snapshot(&mut snap)
        .map_err(|e| format!("`{}`: {e}", path.display()))?;
    Ok(Some(snap))
}
