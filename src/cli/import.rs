//! `cardform import --merchant NAME --generate-config-out FILE`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Outcome;
use super::plan::ProjectArgs;
use crate::ops;
use crate::render;
use crate::settings::Overrides;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Project directory or manifest file declaring the gateway and the merchant [default: .]
    #[arg(value_name = "PATH", conflicts_with = "project")]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The merchant whose templates to adopt (as declared in the project)
    #[arg(long)]
    pub merchant: String,
    /// Write the generated manifest (with its import blocks) here
    #[arg(long, value_name = "FILE")]
    pub generate_config_out: PathBuf,
}

pub async fn exec(args: Args, flags: &Overrides) -> Outcome {
    let common = args.project.common(args.path.as_ref());
    let g =
        ops::import::generate(&common, flags, &args.merchant, &args.generate_config_out).await?;
    render::line(&format!(
        "Wrote {}: {} template(s) with their import blocks, {} image(s) by id.",
        args.generate_config_out.display(),
        g.templates,
        g.images
    ));
    for (id, why) in &g.skipped {
        render::note(&format!("Not generated: template {id}: {why}."));
    }
    render::line(
        "Review it (write_off especially), then `cardform plan` it: it should show only imports.",
    );
    Ok(ExitCode::SUCCESS)
}
