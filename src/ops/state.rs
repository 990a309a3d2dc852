//! `cardform state ...` and `cardform output`: reading and editing recorded state.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::project;
use crate::model::{Address, Kind};
use crate::settings::{GatewayFlags, Settings};
use crate::state::lock;
use crate::state::{Binding, Snapshot, StateStore};

/// `state rebind`: bind the state to this project and gateway; returns the
/// binding it had and the one it has now.
pub fn rebind(
    project_path: &Path,
    vars: &BTreeMap<String, String>,
    flags: &GatewayFlags,
    state: Option<std::path::PathBuf>,
    timeout: Duration,
) -> Result<(Option<Binding>, Binding)> {
    let desired = project::load(project_path, vars)?;
    let settings = Settings::resolve_with(flags, state, &desired.gateway)?;
    let store = project::open_state(&settings.state_dir, "state rebind", timeout)?;
    let old = store.snapshot()?.meta.binding;
    let new = project::binding(&desired, &settings);
    if old.as_ref() != Some(&new) {
        store.bind(&new)?;
    }
    Ok((old, new))
}

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
    // An export from an older cardform speaks the gateway's words.
    crate::state::migrate::snapshot(&mut incoming).map_err(anyhow::Error::msg)?;
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

/// One QR-code PNG per activation URL, named `<merchant>-<template>.png`;
/// returns what was written.
pub fn write_qr_codes(
    dir: &Path,
    outputs: &BTreeMap<String, Vec<TemplateOutput>>,
) -> Result<Vec<(Address, std::path::PathBuf)>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory `{}`", dir.display()))?;
    let mut written = Vec::new();
    for t in outputs.values().flatten() {
        if let Some(url) = &t.apply_card_url {
            let file = dir.join(format!("{}-{}.png", t.address.merchant, t.address.name));
            let png = crate::render::qr::qr_png(url).map_err(anyhow::Error::msg)?;
            std::fs::write(&file, png)
                .with_context(|| format!("cannot write `{}`", file.display()))?;
            written.push((t.address.clone(), file));
        }
    }
    Ok(written)
}

/// What `state recover` did.
#[derive(Debug, Serialize)]
pub struct Recovered {
    /// The backup the state was rebuilt from.
    pub backup: std::path::PathBuf,
    /// Where the damaged store was moved (kept for inspection).
    pub moved_to: std::path::PathBuf,
    /// Resources restored from the backup.
    pub restored: usize,
    /// The new serial (saved plans made before are stale).
    pub serial: u64,
    /// What the damaged store still shows that the backup does not have.
    pub not_restored: Vec<NotRestored>,
}

/// A record the damaged store shows and the backup lacks.
#[derive(Debug, Serialize)]
pub enum NotRestored {
    /// Ids recorded after the backup was written.
    Ids(Address, crate::state::Ids),
    /// A create in doubt: it may exist at Alipay.
    InDoubt(Address, String),
}

/// `state recover`: rebuild the state from the backup written after the last
/// successful apply, moving the damaged store aside, and list what the
/// damaged store still shows that the backup lacks.
pub fn recover(dir: &Path, force: bool) -> Result<Recovered> {
    if let Some(i) = lock::read_info(dir)
        && i.alive()
        && i.pid != std::process::id()
    {
        bail!(
            "`cardform {}` (pid {}) is running on this state\nhint: stop it first",
            i.operation,
            i.pid
        );
    }
    let backup_path = crate::state::backup::file(dir);
    let Some(backup) = crate::state::backup::read(dir).map_err(anyhow::Error::msg)? else {
        bail!(
            "there is no backup to recover from (`{}`: one is written after every successful apply)\nhint: if the templates exist at the gateway, they must be brought back into a new state by hand (`cardform state import`)",
            backup_path.display()
        );
    };
    match project::open_state(dir, "state recover", Duration::ZERO) {
        Ok(_) if !force => bail!(
            "the state in `{}` is not damaged; recovering would replace it with the backup\nhint: pass --force to do so anyway",
            dir.display()
        ),
        Ok(store) => drop(store),
        Err(e)
            if e.downcast_ref::<crate::state::StateError>()
                .is_some_and(|e| matches!(e, crate::state::StateError::Damaged { .. })) => {}
        Err(e) => return Err(e),
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let moved_to = dir.join(format!("store.damaged-{stamp}"));
    let store_dir = dir.join("store");
    if store_dir.exists() {
        std::fs::rename(&store_dir, &moved_to)
            .with_context(|| format!("cannot move `{}` aside", store_dir.display()))?;
    }
    let integrity = crate::state::integrity::file(dir);
    if integrity.exists() {
        std::fs::rename(
            &integrity,
            dir.join(format!("integrity.json.damaged-{stamp}")),
        )
        .with_context(|| format!("cannot move `{}` aside", integrity.display()))?;
    }
    let salvaged = crate::state::sled::salvage(&moved_to);
    let store = project::open_state(dir, "state recover", Duration::ZERO)?;
    let mut restored = backup.clone();
    restored.meta.serial = backup.meta.serial.max(salvaged.meta.serial) + 1;
    store.replace_all(&restored)?;
    let mut not_restored = Vec::new();
    for (address, r) in &salvaged.resources {
        if backup.resources.get(address).is_none_or(|b| b.ids != r.ids) {
            not_restored.push(NotRestored::Ids(address.clone(), r.ids.clone()));
        }
    }
    for (address, i) in &salvaged.intents {
        if !backup.intents.contains_key(address) && !backup.resources.contains_key(address) {
            not_restored.push(NotRestored::InDoubt(address.clone(), i.request_id.clone()));
        }
    }
    Ok(Recovered {
        backup: backup_path,
        moved_to,
        restored: restored.resources.len(),
        serial: restored.meta.serial,
        not_restored,
    })
}
