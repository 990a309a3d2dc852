//! `cardform plan`: arguments (shared project arguments too) and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::Format;
use super::{Outcome, key_value};
use crate::ops;
use crate::ops::project::Common;
use crate::render;
use crate::settings::Overrides;

/// What plan and apply share.
#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    /// Project directory or manifest file (also accepted as the first argument) [default: .]
    #[arg(long, short = 'p', value_name = "PATH")]
    pub project: Option<PathBuf>,
    /// Set a `${var:NAME}` value (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = key_value)]
    pub vars: Vec<(String, String)>,
    /// How long to wait for another run's state lock, e.g. 30s, 5m
    #[arg(long, value_parser = super::duration, default_value = "0s")]
    pub lock_timeout: Duration,
}

/// The selectors plan, apply and drift share.
#[derive(Debug, clap::Args)]
pub struct SelectArgs {
    /// Only these addresses and what they depend on (repeatable; globs, e.g. merchant.tea/*)
    #[arg(long, value_name = "ADDRESS")]
    pub target: Vec<String>,
    /// Only these merchants (repeatable; globs, e.g. 'shop-*')
    #[arg(long = "merchant", value_name = "GLOB")]
    pub merchants: Vec<String>,
    /// Leave out these merchants or addresses (repeatable; globs)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
}

impl SelectArgs {
    /// The selectors.
    pub fn selection(&self) -> crate::plan::Selection {
        crate::plan::Selection {
            merchants: self.merchants.clone(),
            exclude: self.exclude.clone(),
            targets: self.target.clone(),
        }
    }
}

impl ProjectArgs {
    /// The project from `-p` or the positional `PATH` (clap refuses both).
    pub fn common(&self, positional: Option<&PathBuf>) -> Common {
        Common {
            project: positional
                .or(self.project.as_ref())
                .cloned()
                .unwrap_or_else(|| PathBuf::from(".")),
            vars: self.vars.iter().cloned().collect(),
            lock_timeout: self.lock_timeout,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Project directory or manifest file (or use -p) [default: .]
    #[arg(value_name = "PATH", conflicts_with = "project")]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub format: super::FormatArg,
    /// Markdown only: the most bytes to print (a pull-request comment's limit
    /// is 65,536); larger plans are summarised per merchant and say what was left out
    #[arg(long, value_name = "BYTES", default_value_t = 60_000)]
    pub max_bytes: usize,
    /// Save the plan for `cardform apply <file>`
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 with no changes, 2 with changes, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Write before/after pictures of every template the plan creates,
    /// updates or replaces into DIR (the Markdown plan links them)
    #[arg(long, value_name = "DIR")]
    pub preview_dir: Option<PathBuf>,
    #[command(flatten)]
    pub refresh: RefreshArgs,
}

/// Reading the gateway before planning.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RefreshArgs {
    /// Read every recorded template from the gateway first: changes made
    /// outside cardform show as drift, and the plan restores the manifests
    #[arg(long, conflicts_with = "refresh_only")]
    pub refresh: bool,
    /// Read the gateway and show (apply: record) what the state would learn,
    /// changing nothing at the gateway
    #[arg(long)]
    pub refresh_only: bool,
}

impl RefreshArgs {
    pub fn mode(self) -> ops::refresh::Mode {
        match (self.refresh, self.refresh_only) {
            (_, true) => ops::refresh::Mode::Only,
            (true, _) => ops::refresh::Mode::Refresh,
            _ => ops::refresh::Mode::Off,
        }
    }
}

pub async fn exec(args: Args, flags: &Overrides) -> Outcome {
    let format = args
        .format
        .get("plan", &[Format::Human, Format::Json, Format::Markdown])?;
    let common = args.project.common(args.path.as_ref());
    let planned =
        ops::plan::run(&common, flags, args.select.selection(), args.refresh.mode()).await?;
    let plan = &planned.plan;
    if let Some(out) = &args.out {
        ops::plan::save(out, &common, &planned)?;
    }
    let previews = match &args.preview_dir {
        Some(dir) => Some(ops::preview::for_plan(plan, &planned.desired, dir)?),
        None => None,
    };
    match format {
        Format::Human => {
            render::text(&render::plan::human(plan, true));
            if let Some(out) = &args.out {
                render::line(&format!(
                    "\nSaved the plan to {}; apply exactly it with `cardform apply {}`.",
                    out.display(),
                    out.display()
                ));
            }
        }
        Format::Json => render::json(plan),
        Format::Markdown => render::text(&render::plan::markdown(plan, args.max_bytes)),
    }
    if let (Some(dir), Some(previews)) = (&args.preview_dir, &previews) {
        match format {
            Format::Markdown => render::text(&render::plan::previews_markdown(dir, previews)),
            // JSON stays the plan alone; the pictures are listed on stderr.
            Format::Json => render::note(&render::plan::previews_human(dir, previews)),
            Format::Human => render::text(&render::plan::previews_human(dir, previews)),
        }
    }
    let drifted = plan.refresh.as_ref().is_some_and(|r| !r.drifted.is_empty());
    let code = if args.detailed_exitcode && (plan.has_changes() || drifted) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    };
    // The process ends now: freeing a large project's manifests and plan
    // piece by piece would cost a tenth of the run; the OS takes it whole.
    std::mem::forget(planned);
    Ok(code)
}
