//! One writer at a time, for the sled backend: the state directory's sled
//! database holds an OS file lock while open (released by the OS when a
//! process dies, even by kill -9); `lock.json` beside it says who holds it
//! and since when, for messages.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::state::backend::{LockError, LockInfo};

pub fn info_path(dir: &Path) -> PathBuf {
    dir.join("lock.json")
}

pub fn read_info(dir: &Path) -> Option<LockInfo> {
    std::fs::read(info_path(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Try `open` until it succeeds or `timeout` passes, backing off between tries.
/// `open` returns `Ok(None)` when the store is held by someone else.
pub fn acquire<T>(
    dir: &Path,
    timeout: Duration,
    mut open: impl FnMut() -> Result<Option<T>, crate::state::StateError>,
) -> Result<T, crate::state::StateError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(t) = open()? {
            return Ok(t);
        }
        let waited = start.elapsed();
        if waited >= timeout {
            let dir_s = dir.display().to_string();
            return Err(match read_info(dir).filter(LockInfo::alive) {
                Some(holder) => LockError::Held {
                    dir: dir_s,
                    holder,
                    waited,
                },
                None => LockError::Busy { dir: dir_s, waited },
            }
            .into());
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
