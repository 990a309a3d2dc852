//! `cardform drift`: refresh only, for a scheduled job.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Format;
use super::Outcome;
use super::plan::ProjectArgs;
use crate::ops;
use crate::render;
use crate::settings::Overrides;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Project directory or manifest file (or use -p) [default: .]
    #[arg(value_name = "PATH", conflicts_with = "project")]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub select: super::plan::SelectArgs,
    #[command(flatten)]
    pub format: super::FormatArg,
    /// Markdown only: the most bytes to print
    #[arg(long, value_name = "BYTES", default_value_t = 60_000)]
    pub max_bytes: usize,
}

/// Exit 0 when the gateway holds what the state recorded, 2 when something
/// changed outside cardform (drift, a template gone from the listing, or
/// templates the state does not know), 1 on error.
pub async fn exec(args: Args, flags: &Overrides) -> Outcome {
    let format = args
        .format
        .get("drift", &[Format::Human, Format::Json, Format::Markdown])?;
    let common = args.project.common(args.path.as_ref());
    let planned = ops::plan::run(
        &common,
        flags,
        args.select.selection(),
        ops::refresh::Mode::Only,
    )
    .await?;
    let plan = &planned.plan;
    let refresh = plan.refresh.clone().unwrap_or_default();
    match format {
        Format::Human => render::text(&render::plan::drift(plan, false)),
        Format::Json => render::json(&refresh),
        Format::Markdown => render::text(&render::plan::clip_markdown(
            render::plan::drift(plan, true),
            args.max_bytes,
        )),
    }
    Ok(if refresh.found_anything() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
