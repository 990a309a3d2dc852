//! `cardform preview`: arguments and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Outcome;
use super::plan::{ProjectArgs, SelectArgs};
use crate::ops;
use crate::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Project directory or manifest file (or use -p) [default: .]
    #[arg(value_name = "PATH", conflicts_with = "project")]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub project: ProjectArgs,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Directory the pictures are written to (`<merchant>/<template>.png`)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub format: super::FormatArg,
}

pub fn exec(args: Args) -> Outcome {
    let json = args
        .format
        .get("preview", &[super::Format::Human, super::Format::Json])?
        == super::Format::Json;
    let common = args.project.common(args.path.as_ref());
    let report = ops::preview::run(&common, &args.select.selection(), &args.out)?;
    if json {
        render::json(&report);
        return Ok(ExitCode::SUCCESS);
    }
    for p in &report.previews {
        render::line(&format!(
            "{}  {}",
            report.out.join(&p.file).display(),
            p.address
        ));
        for w in &p.warnings {
            render::line(&format!("  warning: {w}"));
        }
    }
    render::note(&format!(
        "{} preview(s) in {} ({} ms)",
        report.previews.len(),
        report.out.display(),
        report.millis
    ));
    Ok(ExitCode::SUCCESS)
}
