//! `cardform validate`: load a project and report every problem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::manifest::{self, Diagnostics, LoadOptions, Loaded};

#[derive(Debug, Serialize)]
pub struct Report {
    pub valid: bool,
    pub files: Vec<PathBuf>,
    pub merchants: usize,
    pub resources: usize,
    pub diagnostics: Diagnostics,
}

/// Load with the real environment for `${env:NAME}`.
pub fn load(path: &Path, vars: BTreeMap<String, String>) -> Loaded {
    let env = |name: &str| crate::settings::env(name);
    manifest::load(
        path,
        &LoadOptions {
            vars,
            env: Some(&env),
        },
    )
}

pub fn validate(path: &Path, vars: BTreeMap<String, String>) -> Report {
    let loaded = load(path, vars);
    Report {
        valid: loaded.desired.is_some(),
        merchants: loaded.desired.as_ref().map_or(0, |d| d.merchants.len()),
        resources: loaded.desired.as_ref().map_or(0, |d| d.resources.len()),
        files: loaded.files,
        diagnostics: loaded.diagnostics,
    }
}
