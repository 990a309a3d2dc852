//! Opening a project against its state (load, settings, lock, snapshot,
//! binding): the one path plan and apply share.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::model::Desired;
use crate::settings::{Endpoint, Settings};
use crate::state::{Binding, Snapshot, StateStore};
use crate::stores::Location;

use super::load::load;

/// Open (and lock) the state store, whatever its backend.
pub fn open_state(
    location: &Location,
    operation: &str,
    lock_timeout: Duration,
) -> Result<Box<dyn StateStore>> {
    Ok(location.backend().open(operation, lock_timeout)?)
}

/// A project loaded against its state: what plan and apply both start from.
pub struct Opened {
    pub desired: Desired,
    pub settings: Settings,
    /// Locked for this run until dropped.
    pub store: std::sync::Arc<dyn StateStore>,
    pub snapshot: Snapshot,
    /// This run's project and gateway, checked against the state's.
    pub binding: Binding,
}

/// Load the manifests, resolve settings, lock the state, read it, and refuse
/// a state of another project or gateway: the one path plan and apply share.
pub fn open(
    common: &Common,
    flags: &crate::settings::Overrides,
    operation: &str,
) -> Result<Opened> {
    open_for(common, flags, operation, None)
}

/// [`open`], locking only `merchants` where the backend can.
pub fn open_for(
    common: &Common,
    flags: &crate::settings::Overrides,
    operation: &str,
    merchants: Option<&std::collections::BTreeSet<String>>,
) -> Result<Opened> {
    open_expecting(common, flags, operation, merchants, None)
}

/// [`open_for`] the state a saved plan was made against (`planned`): one
/// that is not there is an error, never a new empty state.
pub fn open_expecting(
    common: &Common,
    flags: &crate::settings::Overrides,
    operation: &str,
    merchants: Option<&std::collections::BTreeSet<String>>,
    planned: Option<&super::plan::PlannedState>,
) -> Result<Opened> {
    let desired = load(&common.project, &common.vars)?;
    let settings =
        Settings::resolve_with(flags, &desired.gateway)?.for_project(&desired.project.root);
    let backend = settings.state.backend();
    if let Some(planned) = planned {
        if let (Some(url), true) = (&planned.url, settings.state.is_local()) {
            bail!(
                "the saved plan was made against the PostgreSQL state {url}; this run's state is `{}`\nhint: name it again with --state or CARDFORM_STATE (its password is not kept in the plan)",
                settings.state
            );
        }
        if !backend.exists() {
            bail!(
                "there is no state at `{}`: a saved plan applies to the state it was made against\nhint: run from the directory you planned in, or name its state with --state",
                settings.state
            );
        }
    }
    let store = match merchants {
        Some(m) => backend.open_for(operation, common.lock_timeout, m)?,
        None => backend.open(operation, common.lock_timeout)?,
    };
    let snapshot = store.snapshot()?;
    let binding = binding(&desired, &settings);
    check_binding(&snapshot, &binding, &settings.state)?;
    Ok(Opened {
        desired,
        settings,
        store: store.into(),
        snapshot,
        binding,
    })
}

/// The merchants a selection covers, from the manifests and the last
/// committed state (read without a lock where the backend can): what a run
/// with selectors locks before it reads the state under that lock.
pub fn selected_merchants(
    common: &Common,
    flags: &crate::settings::Overrides,
    select: &crate::plan::Selection,
) -> Result<std::collections::BTreeSet<String>> {
    let read = read(common, flags, "apply")?;
    Ok(select
        .scope(&read.desired, &read.snapshot)?
        .map(|s| s.merchants)
        .unwrap_or_default())
}

/// What a plan reads: the manifests and the last committed state, taking no
/// lock where the backend can (a plan never waits behind an apply there).
pub struct Read {
    pub desired: Desired,
    pub settings: Settings,
    pub snapshot: Snapshot,
    pub binding: Binding,
}

/// [`open`] for a run that only reads.
///
/// The state is read on a second thread while the manifests load (on a
/// large project the two take about as long), from where it is unless the
/// manifests move it ([`Settings::state_before_manifests`]). That early read
/// never waits for a lock and never creates a directory: if it was refused,
/// failed, or read another place than the settings resolve to, it is
/// dropped and the state is read again the ordinary way, so every answer
/// and message is the one a sequential read gives.
pub fn read(common: &Common, flags: &crate::settings::Overrides, operation: &str) -> Result<Read> {
    let early = Settings::state_before_manifests(flags).filter(|l| l.backend().exists());
    let (desired, early) = std::thread::scope(|s| {
        let early = early.map(|location| {
            s.spawn(move || {
                let snapshot = location.backend().read(operation, Duration::ZERO);
                (location, snapshot)
            })
        });
        let desired = load(&common.project, &common.vars);
        (desired, early.map(|h| h.join()))
    });
    let desired = desired?;
    let settings =
        Settings::resolve_with(flags, &desired.gateway)?.for_project(&desired.project.root);
    let snapshot = match early {
        Some(Ok((location, Ok(snapshot)))) if location == settings.state => snapshot,
        _ => settings
            .state
            .backend()
            .read(operation, common.lock_timeout)?,
    };
    let binding = binding(&desired, &settings);
    check_binding(&snapshot, &binding, &settings.state)?;
    Ok(Read {
        desired,
        settings,
        snapshot,
        binding,
    })
}

#[derive(Debug, Clone)]
pub struct Common {
    pub project: PathBuf,
    pub vars: BTreeMap<String, String>,
    pub lock_timeout: Duration,
}

/// The project and gateway this run is about, as a state records them.
pub fn binding(desired: &Desired, settings: &Settings) -> Binding {
    let gw = &settings.gateway;
    let (gateway, default_app) = match &gw.endpoint {
        Endpoint::Embedded => ("sandbox".to_string(), super::gateway::SANDBOX_APP_ID),
        Endpoint::Url(u) => (u.host_str().unwrap_or("").to_string(), "(none)"),
    };
    Binding {
        project: desired.project.name.clone(),
        gateway,
        app_id: gw.app_id.clone().unwrap_or_else(|| default_app.to_string()),
    }
}

/// Refuse a state that belongs to another project or gateway: planning
/// against it would retire the other project's resources, or find "no
/// changes" at a gateway that holds none of its ids.
pub fn check_binding(snapshot: &Snapshot, current: &Binding, state: &Location) -> Result<()> {
    let Some(recorded) = &snapshot.meta.binding else {
        return Ok(());
    };
    let dir = state;
    if recorded.project != current.project {
        bail!(
            "the state in `{dir}` belongs to project `{}`, not to `{}`\nhint: planning `{}` against it would retire every resource of `{}`. Give each project its own state (--state DIR or CARDFORM_STATE), or if the project was renamed, record the new name with `cardform state rebind PATH`",
            recorded.project,
            current.project,
            current.project,
            recorded.project
        );
    }
    if recorded.gateway != current.gateway || recorded.app_id != current.app_id {
        bail!(
            "the state in `{dir}` was applied to gateway `{}` as app `{}`; this run points at gateway `{}` as app `{}`\nhint: its ids mean nothing to another gateway or app. Use another state directory (--state DIR) for this one, or if it is the same gateway and app under a new address, record it with `cardform state rebind PATH`",
            recorded.gateway,
            recorded.app_id,
            current.gateway,
            current.app_id
        );
    }
    Ok(())
}
