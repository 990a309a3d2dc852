//! `cardform plan`: load, read state, plan; optionally save the plan.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::project::{self, Common};
use crate::model::{Address, Desired};
use crate::plan::{self, Plan};
use crate::settings::{GatewayFlags, Settings};
use crate::state::StateStore;

/// A plan saved with `--out`: the plan and how to find its project again.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    pub project: PathBuf,
    pub vars: std::collections::BTreeMap<String, String>,
    pub plan: Plan,
}

pub struct Planned {
    pub plan: Plan,
    pub desired: Desired,
    pub settings: Settings,
}

pub fn run(
    common: &Common,
    flags: &GatewayFlags,
    state: Option<PathBuf>,
    target: Option<Address>,
) -> Result<Planned> {
    let desired = project::load(&common.project, &common.vars)?;
    let settings = Settings::resolve_with(flags, state, &desired.gateway)?;
    let store = project::open_state(&settings.state_dir, "plan", common.lock_timeout)?;
    let snapshot = store.snapshot()?;
    drop(store);
    let plan = plan::plan(&desired, &snapshot, &plan::Options { target })?;
    Ok(Planned {
        plan,
        desired,
        settings,
    })
}

pub fn save(path: &Path, common: &Common, plan: &Plan) -> Result<()> {
    let saved = SavedPlan {
        project: std::fs::canonicalize(&common.project).unwrap_or_else(|_| common.project.clone()),
        vars: common.vars.clone(),
        plan: plan.clone(),
    };
    let text = serde_json::to_vec_pretty(&saved).expect("plans serialize");
    std::fs::write(path, text)
        .with_context(|| format!("cannot write the plan to `{}`", path.display()))
}

pub fn read_saved(path: &Path) -> Result<SavedPlan> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the saved plan `{}`", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "`{}` is not a plan saved by `cardform plan --out`",
            path.display()
        )
    })
}
