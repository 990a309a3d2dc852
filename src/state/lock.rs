//! One writer at a time. The state directory's sled database holds an OS file
//! lock while open (released by the OS when a process dies, even by kill -9);
//! `lock.json` beside it says who holds it and since when, for messages.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub pid: u32,
    pub host: String,
    pub operation: String,
    pub since: String,
}

impl LockInfo {
    pub fn current(operation: &str) -> Self {
        LockInfo {
            pid: std::process::id(),
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into()),
            operation: operation.to_string(),
            since: super::now_rfc3339(),
        }
    }

    pub fn alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the state in `{dir}` is locked by `cardform {}` (pid {} on {}) since {}{}\nhint: wait for it, pass --lock-timeout 5m to wait, or if that run is gone, `cardform state unlock --force`",
        holder.operation, holder.pid, holder.host, holder.since,
        if waited.is_zero() { String::new() } else { format!("; waited {:.0?}", waited) }
    )]
    Held {
        dir: String,
        holder: LockInfo,
        waited: Duration,
    },
    #[error(
        "the state in `{dir}` is in use by another process{}\nhint: wait for it or pass --lock-timeout 5m",
        if waited.is_zero() { String::new() } else { format!(" (waited {:.0?})", waited) }
    )]
    Busy { dir: String, waited: Duration },
}

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
    mut open: impl FnMut() -> Result<Option<T>, super::StateError>,
) -> Result<T, super::StateError> {
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
