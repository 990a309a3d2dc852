//! Loading a project and opening its state: shared by plan, apply and output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::model::Desired;
use crate::state::sled::SledStore;

/// Load and lower the manifests; an invalid project is an error carrying
/// every diagnostic (the CLI renders them).
pub fn load(path: &Path, vars: &BTreeMap<String, String>) -> Result<Desired> {
    let loaded = super::validate::load(path, vars.clone());
    match loaded.desired {
        Some(d) => Ok(d),
        None => Err(loaded.diagnostics.into()),
    }
}

/// Open (and lock) the state store.
pub fn open_state(dir: &Path, operation: &str, lock_timeout: Duration) -> Result<SledStore> {
    Ok(SledStore::open(dir, operation, lock_timeout)?)
}

#[derive(Debug, Clone)]
pub struct Common {
    pub project: PathBuf,
    pub vars: BTreeMap<String, String>,
    pub lock_timeout: Duration,
}
