//! `cardform preview`: draw every selected template as the wallet shows it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::project::{self, Common};
use crate::model::Address;
use crate::preview::{self, DesiredImages};
use crate::state::Snapshot;

#[derive(Debug, Serialize)]
pub struct Written {
    pub address: Address,
    /// Relative to the output directory.
    pub file: PathBuf,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub out: PathBuf,
    pub previews: Vec<Written>,
    pub millis: u128,
}

/// Render the templates the selection covers into `out`, on every core.
pub fn run(common: &Common, select: &crate::plan::Selection, out: &Path) -> Result<Report> {
    use rayon::prelude::*;
    let started = std::time::Instant::now();
    let desired = project::load(&common.project, &common.vars)?;
    let scope = select.scope(&desired, &Snapshot::empty())?;
    let templates = preview::templates(&desired, scope.as_ref().map(|s| &s.addresses));
    let images = DesiredImages::new(&desired);
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the directory `{}`", out.display()))?;
    let previews = templates
        .par_iter()
        .map(|(address, attrs)| -> Result<Written> {
            let rendered = preview::render(attrs, preview::tier_of(address, attrs), &images);
            let file = preview::file_name(address);
            let path = out.join(&file);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create `{}`", dir.display()))?;
            }
            std::fs::write(&path, rendered.png())
                .with_context(|| format!("cannot write `{}`", path.display()))?;
            Ok(Written {
                address: (*address).clone(),
                file,
                warnings: rendered.warnings.into_iter().map(|w| w.message).collect(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Report {
        out: out.to_path_buf(),
        previews,
        millis: started.elapsed().as_millis(),
    })
}
