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

pub fn exec(args: Args, flags: &crate::settings::Overrides) -> Outcome {
    let json = args
        .format
        .get("validate", &[Format::Human, Format::Json])?
        == Format::Json;
    let path = args
        .path
        .or(args.project)
        .unwrap_or_else(|| PathBuf::from("."));
    let report = ops::validate::validate(&path, args.vars.into_iter().collect(), flags);
    match json {
        true => render::json(&report),
        false => {
            render::diagnostics(&report.diagnostics);
            for w in &report.card_warnings {
                render::note(&format!("warning: {}: {}", w.address, w.message));
            }
            for w in &report.warnings {
                render::note(&format!("warning: {w}"));
            }
            let level = if report.secrets_block {
                "error"
            } else {
                "warning"
            };
            for s in &report.secrets {
                render::note(&format!(
                    "{level}: {s}{}",
                    if report.secrets_block {
                        ""
                    } else {
                        " (the embedded sandbox does not need it; a real gateway will)"
                    }
                ));
            }
            if report.valid {
                render::line(&format!(
                    "{} is valid: {} file(s), {} merchant(s), {} resource(s)",
                    path.display(),
                    report.files.len(),
                    report.merchants,
                    report.resources
                ));
            } else if report.secrets_block {
                render::note(&format!(
                    "error: {} secret(s) cannot be read for the gateway this run points at",
                    report.secrets.len()
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
