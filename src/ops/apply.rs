//! `cardform apply`: plan (or take a saved plan, refusing a stale one), ask,
//! connect, execute, report.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};

use super::project::{self, Common};
use crate::apply::{self, Progress, Report, Tokens};
use crate::model::{Address, Desired};
use crate::plan::{self, Plan};
use crate::provider::Provider;
use crate::secret::Secret;
use crate::settings::{GatewayFlags, Settings, read_secret};
use crate::state::StateStore;

pub struct Request {
    pub common: Common,
    /// The project was named on the command line (else a saved plan's own is used).
    pub project_given: bool,
    pub saved_plan: Option<PathBuf>,
    pub target: Option<Address>,
    /// No one is asked: a plan that retires resources then needs `allow_retire`.
    pub auto_approve: bool,
    pub allow_retire: bool,
    pub options: apply::Options,
}

pub enum Applied {
    /// Nothing to do.
    NoChanges(Plan),
    /// The user said no.
    Declined(Plan),
    Done(Plan, Report),
}

/// Resolve each merchant's app_auth_token; a missing one fails only that merchant.
pub fn tokens(desired: &Desired) -> Tokens {
    desired
        .merchants
        .iter()
        .map(|(name, m)| {
            let t = match &m.app_auth_token {
                None => Ok(None),
                Some(r) => read_secret(r, &format!("app_auth_token of merchant `{name}`"))
                    .map(|s| Some(Secret::new(s))),
            };
            (name.clone(), t)
        })
        .collect()
}

pub async fn run(
    req: Request,
    flags: &GatewayFlags,
    state: Option<PathBuf>,
    confirm: &dyn Fn(&Plan) -> bool,
    progress: Arc<dyn Progress>,
) -> Result<Applied> {
    let mut common = req.common.clone();
    let mut saved_binding = None;
    let saved = match &req.saved_plan {
        Some(path) => {
            let saved = super::plan::read_saved(path)?;
            if !req.project_given {
                common.project = super::plan::saved_project(path, &saved)?;
            }
            common.vars = saved.vars.clone();
            saved_binding = saved.binding;
            Some(saved.plan)
        }
        None => None,
    };
    let desired = project::load(&common.project, &common.vars)?;
    let settings = Settings::resolve_with(flags, state, &desired.gateway)?;
    let store = Arc::new(project::open_state(
        &settings.state_dir,
        "apply",
        common.lock_timeout,
    )?);
    let snapshot = store.snapshot()?;
    let binding = project::binding(&desired, &settings);
    project::check_binding(&snapshot, &binding, &settings.state_dir)?;
    if let Some(planned_for) = &saved_binding
        && planned_for != &binding
    {
        bail!(
            "the saved plan was made for {planned_for}; this run is {binding}\nhint: apply it with the same project and gateway settings, or run `cardform plan --out` again"
        );
    }
    let plan = match saved {
        Some(saved) => {
            if saved.lineage != snapshot.meta.lineage || saved.serial != snapshot.meta.serial {
                bail!(
                    "the saved plan is stale: the state changed since it was made (serial {} then, {} now)\nhint: run `cardform plan --out` again",
                    saved.serial,
                    snapshot.meta.serial
                );
            }
            if saved.desired_hash != plan::desired_hash(&desired) {
                bail!(
                    "the saved plan is stale: the manifests changed since it was made\nhint: run `cardform plan --out` again"
                );
            }
            saved
        }
        None => {
            let plan = plan::plan(
                &desired,
                &snapshot,
                &plan::Options {
                    target: req.target.clone(),
                },
            )?;
            if req.auto_approve && plan.summary.retire > 0 && !req.allow_retire {
                bail!(
                    "refusing to retire {} resource(s) without a review: --auto-approve alone does not retire\nhint: read the plan (`cardform plan`), then pass --allow-retire, or apply a plan saved with `cardform plan --out` after reviewing it",
                    plan.summary.retire
                );
            }
            if plan.has_changes() && !confirm(&plan) {
                return Ok(Applied::Declined(plan));
            }
            plan
        }
    };
    if !plan.has_changes() {
        return Ok(Applied::NoChanges(plan));
    }
    if snapshot.meta.binding.is_none() {
        // The first apply binds the state to this project and gateway.
        store.bind(&binding)?;
    }
    let tokens = tokens(&desired);
    let conn = super::gateway::connect(&settings.gateway, &settings.state_dir).await?;
    let provider = Arc::new(Provider {
        client: conn
            .client
            .clone()
            .with_max_in_flight(req.options.parallelism),
    });
    let caps = apply::Capabilities {
        store,
        provider,
        tokens,
        progress,
    };
    let report = apply::apply(&plan, Arc::new(desired), snapshot, caps, &req.options).await;
    conn.close().await;
    Ok(Applied::Done(plan, report))
}
