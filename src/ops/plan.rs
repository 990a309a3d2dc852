//! `cardform plan`: load, read state, check it belongs to this project and
//! gateway, plan; optionally save the plan.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::project::{self, Common};
use crate::model::Desired;
use crate::plan::{self, Plan};
use crate::settings::{Overrides, Settings};
use crate::state::Binding;

/// A plan saved with `--out`: the plan and how to find its project again.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedPlan {
    /// The project as planned: canonical, for applying on the same machine.
    pub project: PathBuf,
    /// The same project relative to the plan file's directory, for applying
    /// where the checkout lives elsewhere (a CI artifact applied by a later job).
    #[serde(default)]
    pub project_from_plan: Option<PathBuf>,
    pub vars: std::collections::BTreeMap<String, String>,
    /// The project and gateway the plan was made for.
    #[serde(default)]
    pub binding: Option<Binding>,
    /// The state the plan was made against, so that an apply from another
    /// directory finds it (and never makes a new one).
    #[serde(default)]
    pub state: Option<PlannedState>,
    pub plan: Plan,
}

/// Where a saved plan's state was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedState {
    /// A state directory, as planned (canonical).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// The same directory relative to the project's directory.
    #[serde(default)]
    pub dir_from_project: Option<PathBuf>,
    /// A PostgreSQL state: its URL, password redacted (it is named again
    /// with --state, CARDFORM_STATE or the manifest's state block).
    #[serde(default)]
    pub url: Option<String>,
}

/// The project's directory (a single-file project's is the file's).
pub fn project_dir(project: &Path) -> PathBuf {
    if project.is_file() {
        project
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    } else {
        project.to_path_buf()
    }
}

pub struct Planned {
    pub plan: Plan,
    pub desired: Desired,
    pub settings: Settings,
    pub binding: Binding,
}

pub async fn run(
    common: &Common,
    flags: &Overrides,
    select: crate::plan::Selection,
    mode: super::refresh::Mode,
) -> Result<Planned> {
    // The last committed state; a backend that can reads it without
    // waiting for an apply (apply checks a saved plan against the state's
    // serial, so a plan never needs the lock to be safe).
    let project::Read {
        desired,
        settings,
        snapshot,
        binding,
    } = project::read(common, flags, "plan")?;
    let options = plan::Options {
        select,
        ..Default::default()
    };
    let (plan, reader) = super::refresh::plan(
        &settings,
        &desired,
        &snapshot,
        mode,
        options,
        &crate::apply::Options::default(),
        std::sync::Arc::new(crate::gateway::governor::Silent),
    )
    .await?;
    if let Some(r) = reader {
        r.conn.close().await;
    }
    Ok(Planned {
        plan,
        desired,
        settings,
        binding,
    })
}

/// `to` relative to the directory `from` (both made absolute first).
fn relative(from: &Path, to: &Path) -> Option<PathBuf> {
    let from = std::fs::canonicalize(from).ok()?;
    let to = std::fs::canonicalize(to).ok()?;
    Some(PathBuf::from(crate::manifest::relative_path(&from, &to)))
}

pub fn save(path: &Path, common: &Common, planned: &Planned) -> Result<()> {
    let plan_dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&plan_dir)
        .with_context(|| format!("cannot create the directory `{}`", plan_dir.display()))?;
    let saved = SavedPlan {
        project: std::fs::canonicalize(&common.project).unwrap_or_else(|_| common.project.clone()),
        project_from_plan: relative(&plan_dir, &common.project),
        vars: common.vars.clone(),
        binding: Some(planned.binding.clone()),
        state: Some(match &planned.settings.state {
            crate::stores::Location::Dir(d) => PlannedState {
                dir: std::fs::canonicalize(d).ok(),
                dir_from_project: relative(&project_dir(&common.project), d),
                url: None,
            },
            crate::stores::Location::Postgres(u) => PlannedState {
                dir: None,
                dir_from_project: None,
                url: Some(u.to_string()),
            },
        }),
        plan: planned.plan.clone(),
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

/// Where a saved plan's project is now: as recorded, else relative to the
/// plan file.
pub fn saved_project(path: &Path, saved: &SavedPlan) -> Result<PathBuf> {
    if saved.project.exists() {
        return Ok(saved.project.clone());
    }
    if let Some(rel) = &saved.project_from_plan {
        let dir = path.parent().unwrap_or(Path::new("."));
        let candidate = dir.join(rel);
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "the project of the saved plan `{}` is not at `{}`{}\nhint: pass the project with -p PATH",
        path.display(),
        saved.project.display(),
        saved
            .project_from_plan
            .as_ref()
            .map(|r| format!(" nor at `{}` beside the plan", r.display()))
            .unwrap_or_default()
    )
}
