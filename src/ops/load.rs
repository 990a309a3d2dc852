//! Loading a project's manifests, with the real environment for
//! `${env:NAME}`: shared by validate, plan, apply, preview, import and the
//! card commands.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::manifest::{self, LoadOptions, Loaded};
use crate::model::Desired;

/// Load and lower the manifests, keeping every diagnostic.
pub fn manifests(path: &Path, vars: BTreeMap<String, String>) -> Loaded {
    let env = |name: &str| crate::settings::env(name);
    manifest::load(
        path,
        &LoadOptions {
            vars,
            env: Some(&env),
        },
    )
}

/// Load and lower the manifests; an invalid project is an error carrying
/// every diagnostic (the CLI renders them).
pub fn load(path: &Path, vars: &BTreeMap<String, String>) -> Result<Desired> {
    let loaded = manifests(path, vars.clone());
    match loaded.desired {
        Some(d) => Ok(d),
        None => Err(loaded.diagnostics.into()),
    }
}
