use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{Outcome, key_value};
use crate::model::Address;
use crate::ops;
use crate::ops::project::Common;
use crate::render;
use crate::sandbox::faults::parse_duration;
use crate::settings::GatewayFlags;

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Human,
    Json,
    Markdown,
}

/// What plan and apply share.
#[derive(Debug, clap::Args)]
pub struct ProjectArgs {
    /// Project directory or manifest file
    #[arg(long, short = 'p', default_value = ".")]
    pub project: PathBuf,
    /// Set a `${var:NAME}` value (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = key_value)]
    pub vars: Vec<(String, String)>,
    /// How long to wait for another run's state lock, e.g. 30s, 5m
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub lock_timeout: Duration,
    /// Only this address and what it depends on
    #[arg(long)]
    pub target: Option<Address>,
}

impl ProjectArgs {
    pub fn common(&self) -> Common {
        Common {
            project: self.project.clone(),
            vars: self.vars.iter().cloned().collect(),
            lock_timeout: self.lock_timeout,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub project: ProjectArgs,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Save the plan for `cardform apply <file>`
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 with no changes, 2 with changes, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
}

pub fn exec(args: Args, flags: &GatewayFlags, state: Option<PathBuf>) -> Outcome {
    let common = args.project.common();
    let planned = ops::plan::run(&common, flags, state, args.project.target.clone())?;
    let plan = &planned.plan;
    if let Some(out) = &args.out {
        ops::plan::save(out, &common, plan)?;
    }
    match args.format {
        Format::Human => {
            print!("{}", render::plan::human(plan, true));
            if let Some(out) = &args.out {
                render::line(&format!(
                    "\nSaved the plan to {}; apply exactly it with `cardform apply {}`.",
                    out.display(),
                    out.display()
                ));
            }
        }
        Format::Json => render::json(plan),
        Format::Markdown => print!("{}", render::plan::markdown(plan)),
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
