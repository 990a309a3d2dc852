use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use super::Outcome;
use super::plan::ProjectArgs;
use crate::ops;
use crate::ops::apply::Applied;
use crate::render;
use crate::settings::GatewayFlags;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved with `cardform plan --out`: apply exactly it
    pub plan_file: Option<PathBuf>,
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Do not ask for confirmation
    #[arg(long)]
    pub auto_approve: bool,
    /// Gateway calls in flight at once
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

fn confirm(plan: &crate::plan::Plan) -> bool {
    print!("{}", render::plan::human(plan, true));
    if !std::io::stdin().is_terminal() {
        render::note(
            "error: refusing to apply without confirmation: stdin is not a terminal\nhint: pass --auto-approve, or apply a saved plan",
        );
        return false;
    }
    print!("\nDo you want to perform these actions? Only 'yes' is accepted: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    answer.trim() == "yes"
}

pub async fn exec(args: Args, flags: &GatewayFlags, state: Option<PathBuf>) -> Outcome {
    let auto = args.auto_approve;
    let ask = move |plan: &crate::plan::Plan| {
        if auto {
            print!("{}", render::plan::human(plan, false));
            true
        } else {
            confirm(plan)
        }
    };
    let req = ops::apply::Request {
        common: args.project.common(),
        saved_plan: args.plan_file.clone(),
        target: args.project.target.clone(),
        options: crate::apply::Options {
            parallelism: args.parallelism.max(1),
            ..Default::default()
        },
    };
    match ops::apply::run(req, flags, state, &ask, render::progress::for_terminal()).await? {
        Applied::NoChanges(plan) => {
            render::line(&render::plan::summary_line(&plan));
            Ok(ExitCode::SUCCESS)
        }
        Applied::Declined(_) => {
            render::note("Apply cancelled; nothing was changed.");
            Ok(ExitCode::FAILURE)
        }
        Applied::Done(_, report) => {
            if args.json {
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
