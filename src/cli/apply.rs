//! `cardform apply`: arguments (a project or a saved plan), the
//! confirmation prompt, dispatch to `ops::apply`, the report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::Outcome;
use super::plan::ProjectArgs;
use crate::ops;
use crate::ops::apply::Applied;
use crate::render;
use crate::settings::Overrides;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A project (directory or .yaml/.yml file), or a plan saved with
    /// `cardform plan --out` to apply exactly [default: the project in .]
    #[arg(value_name = "PATH_OR_PLAN")]
    pub path_or_plan: Option<PathBuf>,
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub select: super::plan::SelectArgs,
    /// Do not ask for confirmation (in CI). Retiring resources needs --allow-retire too
    #[arg(long)]
    pub auto_approve: bool,
    /// With --auto-approve: allow the plan to retire (forget) resources
    #[arg(long)]
    pub allow_retire: bool,
    /// Create a merchant's first templates although the gateway already holds
    /// templates this state does not know
    #[arg(long)]
    pub allow_unmanaged: bool,
    /// Gateway calls in flight at once
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    /// With --auto-approve outside a terminal: print each change's diff too
    /// (by default a pipe gets the changed addresses and the summary)
    #[arg(long)]
    pub diff: bool,
    #[command(flatten)]
    pub format: super::FormatArg,
    #[command(flatten)]
    pub refresh: super::plan::RefreshArgs,
}

/// A directory or a YAML file is a project; anything else a saved plan.
fn is_project(path: &Path) -> bool {
    path.is_dir()
        || matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        )
}

pub async fn exec(args: Args, flags: &Overrides) -> Outcome {
    let (positional_project, saved_plan) = match &args.path_or_plan {
        Some(p) if is_project(p) => (Some(p.clone()), None),
        Some(p) => (None, Some(p.clone())),
        None => (None, None),
    };
    if positional_project.is_some() && args.project.project.is_some() {
        anyhow::bail!(
            "the project is given twice (as an argument and with -p)\nhint: give it once: `cardform apply PATH` or `cardform apply -p PATH`"
        );
    }
    let json = args
        .format
        .get("apply", &[super::Format::Human, super::Format::Json])?
        == super::Format::Json;
    let auto = args.auto_approve;
    // A pipeline's log gets what changes, not every diff (40,000 lines for
    // 200 merchants); a terminal, or --diff, gets the diffs.
    let diffs = args.diff || std::io::IsTerminal::is_terminal(&std::io::stdout());
    let ask = move |plan: &crate::plan::Plan| {
        if auto {
            render::text_to(&render::plan::human(plan, diffs), json);
            true
        } else {
            render::plan::confirm(plan, json)
        }
    };
    let req = ops::apply::Request {
        common: args.project.common(positional_project.as_ref()),
        project_given: positional_project.is_some() || args.project.project.is_some(),
        saved_plan,
        select: args.select.selection(),
        auto_approve: args.auto_approve,
        allow_retire: args.allow_retire,
        allow_unmanaged: args.allow_unmanaged,
        refresh: args.refresh.mode(),
        options: crate::apply::Options {
            parallelism: args.parallelism.max(1),
            ..Default::default()
        },
    };
    super::announce_lock_wait(&req.common, flags);
    let progress = render::progress::for_terminal();
    match ops::apply::run(req, flags, &ask, progress).await? {
        Applied::NoChanges(plan) => {
            if json {
                render::json(&crate::apply::Report::default());
            }
            render::text_to(&format!("{}\n", render::plan::summary_line(&plan)), json);
            Ok(ExitCode::SUCCESS)
        }
        Applied::Refreshed(_, n) => {
            render::note(&format!(
                "Refresh complete: the state learned what the gateway holds for {n} template(s); nothing was sent to the gateway."
            ));
            Ok(ExitCode::SUCCESS)
        }
        Applied::Declined(_) => {
            render::note("Apply cancelled; nothing was changed.");
            Ok(ExitCode::FAILURE)
        }
        Applied::Done(_, report) => {
            if json {
                render::json(&report);
            }
            render::note(&render::progress::report(&report));
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
