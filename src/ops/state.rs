//! `cardform state ...` and `cardform output`: reading and editing recorded state.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::project;
use crate::model::{Address, Kind};
use crate::state::lock;
use crate::state::{Snapshot, StateStore};

pub fn snapshot(dir: &Path, timeout: Duration) -> Result<Snapshot> {
    Ok(project::open_state(dir, "state", timeout)?.snapshot()?)
}

pub fn remove(dir: &Path, timeout: Duration, address: &Address) -> Result<u64> {
    let store = project::open_state(dir, "state rm", timeout)?;
    if !store.snapshot()?.resources.contains_key(address) {
        bail!("`{address}` is not in the state");
    }
    Ok(store.forget(address)?)
}

/// Import an exported snapshot. Refuses a foreign lineage or an older serial
/// unless forced.
pub fn import(dir: &Path, timeout: Duration, file: &Path, force: bool) -> Result<u64> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let mut incoming: Snapshot = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "`{}` is not a state exported by `cardform state export`",
            file.display()
        )
    })?;
    let store = project::open_state(dir, "state import", timeout)?;
    let current = store.snapshot()?;
    let fresh = current.resources.is_empty() && current.meta.serial == 0;
    if !force && !fresh {
        if incoming.meta.lineage != current.meta.lineage {
            bail!(
                "refusing to import state of another lineage ({} here, {} in the file)\nhint: pass --force to replace this state anyway",
                current.meta.lineage,
                incoming.meta.lineage
            );
        }
        if incoming.meta.serial < current.meta.serial {
            bail!(
                "refusing to import an older state (serial {} in the file, {} here)\nhint: pass --force to go back anyway",
                incoming.meta.serial,
                current.meta.serial
            );
        }
    }
    incoming.meta.serial = incoming.meta.serial.max(current.meta.serial) + 1;
    store.replace_all(&incoming)?;
    Ok(incoming.meta.serial)
}

/// `state unlock --force`: clear a lock record left by a crashed run.
pub fn unlock(dir: &Path) -> Result<Option<lock::LockInfo>> {
    let info = lock::read_info(dir);
    if let Some(i) = &info
        && i.alive()
        && i.pid != std::process::id()
    {
        // The OS lock is still held by a live process: clearing the record would lie.
        if project::open_state(dir, "state unlock", Duration::ZERO).is_err() {
            bail!(
                "`cardform {}` (pid {}) is still running and holds the state lock\nhint: stop it first",
                i.operation,
                i.pid
            );
        }
    }
    let _ = std::fs::remove_file(lock::info_path(dir));
    Ok(info)
}

#[derive(Debug, Serialize)]
pub struct TemplateOutput {
    pub address: Address,
    pub template_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_card_url: Option<String>,
}

/// Template ids and activation URLs per merchant.
pub fn outputs(snap: &Snapshot) -> BTreeMap<String, Vec<TemplateOutput>> {
    let mut out: BTreeMap<String, Vec<TemplateOutput>> = BTreeMap::new();
    for r in snap.resources.values().filter(|r| r.kind == Kind::Template) {
        let url = snap
            .resources
            .get(&r.address.with_kind(Kind::ActivationUrl))
            .and_then(|u| u.ids.apply_card_url.clone());
        out.entry(r.address.merchant.clone())
            .or_default()
            .push(TemplateOutput {
                address: r.address.clone(),
                template_id: r.ids.template_id.clone(),
                apply_card_url: url,
            });
    }
    out
}
