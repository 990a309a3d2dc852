//! `cardform state ...` and `cardform output`: reading and editing recorded state.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::project;
use crate::model::{Address, Kind};
use crate::settings::{Overrides, Settings};
use crate::state::backend::Recovered;
use crate::state::{Binding, LockInfo, Snapshot};
use crate::stores::Location;

/// `state rebind`: bind the state to this project and gateway; returns the
/// binding it had and the one it has now.
pub fn rebind(
    project_path: &Path,
    vars: &BTreeMap<String, String>,
    flags: &Overrides,
    timeout: Duration,
) -> Result<(Option<Binding>, Binding)> {
    let desired = super::load::load(project_path, vars)?;
    let settings =
        Settings::resolve_with(flags, &desired.gateway)?.for_project(&desired.project.root);
    let store = project::open_state(&settings.state, "state rebind", timeout)?;
    let old = store.snapshot()?.meta.binding;
    let new = project::binding(&desired, &settings);
    if old.as_ref() != Some(&new) {
        store.bind(&new)?;
    }
    Ok((old, new))
}

/// The last committed state, for commands that only read (`output`,
/// `state list | show | export`): a backend that can answers without
/// waiting for a writer.
/// The recorded state, for a command that only reads (`output`, `state
/// list|show|export`). A state directory that does not exist is an error
/// (the command was run from another directory, or the state lives
/// elsewhere), not an empty state, and is not created.
pub fn snapshot(location: &Location, timeout: Duration) -> Result<Snapshot> {
    if !location.backend().exists() {
        bail!(
            "there is no state at `{location}`: nothing was applied with this state directory. Run from the directory you ran `cardform apply` in, or name the state with --state or CARDFORM_STATE (a directory, or the postgres:// URL a manifest's `state` block names)"
        );
    }
    Ok(location.backend().read("state", timeout)?)
}

pub fn remove(location: &Location, timeout: Duration, address: &Address) -> Result<u64> {
    let store = project::open_state(location, "state rm", timeout)?;
    if !store.snapshot()?.resources.contains_key(address) {
        bail!("`{address}` is not in the state");
    }
    Ok(store.forget(address)?)
}

/// What `state migrate` moved.
pub struct Migrated {
    pub resources: usize,
    pub intents: usize,
    pub forgotten: usize,
    /// Rows of the card ledger (cards, their indexes, trades and reminders).
    pub ledger: usize,
    pub lineage: String,
    pub serial: u64,
}

/// Copy the state at `from` to `to` exactly (lineage and serial kept), both
/// locked while it happens. A target that already holds a state (any record,
/// or a serial above 0) is refused unless forced; the source is left as it is.
pub fn migrate(from: &Location, to: &Location, timeout: Duration, force: bool) -> Result<Migrated> {
    if from == to {
        bail!("the state is already at {to}");
    }
    let source = project::open_state(from, "state migrate", timeout)?;
    let snap = source.snapshot()?;
    let target = project::open_state(to, "state migrate", timeout)?;
    let there = target.snapshot()?;
    // The card ledger moves with it, salt and all (its digests are salted):
    // both ledgers locked, so no `cards` command runs meanwhile.
    let source_ledger = from.backend().open_cards("state migrate", timeout)?;
    let rows = source_ledger.export()?;
    let target_ledger = to.backend().open_cards("state migrate", timeout)?;
    let ledger_there = target_ledger.export()?.len();
    if ledger_there > 0 && !force {
        bail!(
            "{to} already holds a card ledger ({ledger_there} row(s))\nhint: migrating would replace it; pass --force to do so (a migration cut short is finished this way too)"
        );
    }
    let holds = !there.resources.is_empty() || !there.intents.is_empty() || there.meta.serial > 0;
    if holds && !force {
        bail!(
            "{to} already holds a state ({} resource(s), lineage {}, serial {})\nhint: migrating would replace it; pass --force to do so",
            there.resources.len(),
            there.meta.lineage,
            there.meta.serial
        );
    }
    // The ledger first, then the state: each is written at once (a batch, a
    // transaction), and a run cut short between them leaves a target that
    // a second run refuses until --force finishes it; the source is only read.
    target_ledger.replace(source_ledger.salt(), &rows)?;
    if target_ledger.export()?.len() != rows.len() {
        bail!("bug: the migrated card ledger at {to} does not read back as written");
    }
    target.replace_all(&snap)?;
    target.flush()?;
    let check = target.snapshot()?;
    if check.meta.lineage != snap.meta.lineage
        || check.meta.serial != snap.meta.serial
        || check.resources.len() != snap.resources.len()
    {
        bail!("bug: the migrated state at {to} does not read back as written");
    }
    Ok(Migrated {
        resources: snap.resources.len(),
        intents: snap.intents.len(),
        forgotten: snap.forgotten.len(),
        ledger: rows.len(),
        lineage: snap.meta.lineage,
        serial: snap.meta.serial,
    })
}

/// Import an exported snapshot. Refuses a foreign lineage or an older serial
/// unless forced.
pub fn import(location: &Location, timeout: Duration, file: &Path, force: bool) -> Result<u64> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read `{}`", file.display()))?;
    let mut incoming: Snapshot = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "`{}` is not a state exported by `cardform state export`",
            file.display()
        )
    })?;
    // An export from an older cardform speaks the gateway's words.
    crate::stores::migrate::snapshot(&mut incoming).map_err(anyhow::Error::msg)?;
    let store = project::open_state(location, "state import", timeout)?;
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
pub fn unlock(location: &Location) -> Result<Option<LockInfo>> {
    Ok(location.backend().force_unlock()?)
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
        out.entry(r.address.merchant.to_string())
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
            let png = crate::util::qr::qr_png(url).map_err(anyhow::Error::msg)?;
            std::fs::write(&file, png)
                .with_context(|| format!("cannot write `{}`", file.display()))?;
            written.push((t.address.clone(), file));
        }
    }
    Ok(written)
}

/// `state recover`: rebuild a damaged state from the backup written after
/// the last successful apply (see [`crate::state::Backend::recover`]).
pub fn recover(location: &Location, force: bool) -> Result<Recovered> {
    Ok(location.backend().recover(force)?)
}
