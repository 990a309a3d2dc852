//! `cardform validate`: load a project and report every problem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::manifest::Diagnostics;

#[derive(Debug, Serialize)]
pub struct Report {
    pub valid: bool,
    pub files: Vec<PathBuf>,
    pub merchants: usize,
    pub resources: usize,
    pub diagnostics: Diagnostics,
    /// What the card previews show a reviewer should fix: text the wallet
    /// cuts, text unreadable against the background under it, characters
    /// the preview font cannot draw. Warnings: the project stays valid.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub card_warnings: Vec<CardWarning>,
    /// Secrets a run would read that cannot be read now (a variable unset,
    /// a file missing): warnings on the embedded sandbox, errors (the
    /// project invalid) against a real gateway.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Whether `secrets` make the project invalid (a real gateway).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub secrets_block: bool,
    /// Other things a reviewer should know (the project stays valid).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Merchants with an app_auth_token beside two or more without: those
/// without share the app's own template namespace at Alipay.
fn namespace_warnings(desired: &crate::model::Desired) -> Vec<String> {
    let without: Vec<&str> = desired
        .merchants
        .iter()
        .filter(|(_, m)| m.app_auth_token.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    let with = desired.merchants.len() - without.len();
    if with == 0 || without.len() < 2 {
        return Vec::new();
    }
    vec![format!(
        "merchants {} have no app_auth_token while {with} other(s) do: their templates share the app's own namespace at Alipay (each sees the others' as unknown templates); give each merchant its token, or keep them in one project on purpose",
        without
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )]
}

#[derive(Debug, Serialize)]
pub struct CardWarning {
    pub address: crate::model::Address,
    pub message: String,
}

/// The preview checks of every template (layouts and the backgrounds under
/// the text; nothing is drawn).
fn card_warnings(desired: &crate::model::Desired) -> Vec<CardWarning> {
    use crate::preview::{self, DesiredImages, ImageSource};
    use rayon::prelude::*;
    let images = DesiredImages::new(desired);
    preview::templates(desired, None)
        .par_iter()
        .flat_map_iter(|(address, t)| {
            let layout = preview::layout::layout(t, preview::tier_of(address, t));
            let background = images.pixels(&t.style.background);
            preview::warnings(&layout, background.as_deref())
                .into_iter()
                .map(|w| CardWarning {
                    address: (*address).clone(),
                    message: w.message,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

pub fn validate(
    path: &Path,
    vars: BTreeMap<String, String>,
    flags: &crate::settings::Overrides,
) -> Report {
    let loaded = super::load::manifests(path, vars);
    let card_warnings = loaded
        .desired
        .as_ref()
        .map(card_warnings)
        .unwrap_or_default();
    // The secrets, as the gateway settings this run resolves would read
    // them; on the sandbox the manifest's keys are not read, but they are
    // still the keys of the gateway it names: warnings.
    let (secrets, secrets_block) = match loaded
        .desired
        .as_ref()
        .map(|d| crate::settings::Settings::resolve_with(flags, &d.gateway).map(|s| (s, d)))
    {
        Some(Ok((s, d))) => {
            let real = matches!(s.gateway.endpoint, crate::settings::Endpoint::Url(_));
            let mut keys = super::tokens::gateway_keys(&s.gateway);
            if !real {
                keys.extend(super::tokens::manifest_keys(&d.gateway));
            }
            let mut missing = super::tokens::unresolved(&keys, d, None);
            // A key given twice (a flag and the manifest) is said once.
            let mut seen = std::collections::BTreeSet::new();
            missing.retain(|m| seen.insert(m.clone()));
            let block = real && !missing.is_empty();
            (missing, block)
        }
        _ => (Vec::new(), false),
    };
    Report {
        warnings: loaded
            .desired
            .as_ref()
            .map(namespace_warnings)
            .unwrap_or_default(),
        card_warnings,
        secrets,
        secrets_block,
        valid: loaded.desired.is_some() && !secrets_block,
        merchants: loaded.desired.as_ref().map_or(0, |d| d.merchants.len()),
        resources: loaded.desired.as_ref().map_or(0, |d| d.resources.len()),
        files: loaded.files,
        diagnostics: loaded.diagnostics,
    }
}
