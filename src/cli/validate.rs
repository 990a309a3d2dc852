//! `cardform validate` and `cardform schema`: arguments and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Format;
use super::{Outcome, key_value};
use crate::ops;
use crate::render;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Project directory or manifest file (or use -p) [default: .]
    #[arg(value_name = "PATH", conflicts_with = "project")]
    pub path: Option<PathBuf>,
    /// Project directory or manifest file
    #[arg(long, short = 'p', value_name = "PATH")]
    pub project: Option<PathBuf>,
    /// Set a `${var:NAME}` value (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = key_value)]
    pub vars: Vec<(String, String)>,
    #[command(flatten)]
    pub format: super::FormatArg,
}

pub fn exec(args: Args) -> Outcome {
    let json = args
        .format
        .get("validate", &[Format::Human, Format::Json])?
        == Format::Json;
    let path = args
        .path
        .or(args.project)
        .unwrap_or_else(|| PathBuf::from("."));
    let report = ops::validate::validate(&path, args.vars.into_iter().collect());
    match json {
        true => render::json(&report),
        false => {
            render::diagnostics(&report.diagnostics);
            for w in &report.card_warnings {
                render::note(&format!("warning: {}: {}", w.address, w.message));
            }
            if report.valid {
                render::line(&format!(
                    "{} is valid: {} file(s), {} merchant(s), {} resource(s)",
                    path.display(),
                    report.files.len(),
                    report.merchants,
                    report.resources
                ));
            } else {
                render::note(&format!("error: {}", report.diagnostics));
            }
        }
    }
    Ok(if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[derive(Debug, clap::Args)]
pub struct SchemaArgs {}

pub fn exec_schema(_: SchemaArgs) -> Outcome {
    render::text(&crate::manifest::schema_text());
    Ok(ExitCode::SUCCESS)
}
