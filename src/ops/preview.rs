//! `cardform preview`: draw every selected template as the wallet shows it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::project::Common;
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
    let desired = super::load::load(&common.project, &common.vars)?;
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

/// The pictures `plan --preview-dir` wrote for one changed template, relative
/// to the preview directory.
#[derive(Debug, Clone, Serialize)]
pub struct PlanPreview {
    pub address: Address,
    pub action: crate::plan::Action,
    /// As the state recorded it (none for a create).
    pub before: Option<PathBuf>,
    pub after: PathBuf,
    /// Before and after side by side, the changed regions outlined.
    pub compare: Option<PathBuf>,
    pub warnings: Vec<String>,
}

/// A recorded template's images: found by the content hash the template
/// recorded for each, among the manifests' image files (the state keeps
/// hashes, not bytes; an image no file holds any more is drawn as a
/// placeholder).
struct RecordedImages<'h, 'i, 'd> {
    hashes: &'h std::collections::BTreeMap<String, String>,
    images: &'i DesiredImages<'d>,
}

impl preview::ImageSource for RecordedImages<'_, '_, '_> {
    fn pixels(&self, image: &str) -> Option<std::sync::Arc<preview::Pixmap>> {
        self.images.by_sha(self.hashes.get(image)?)
    }
}

/// Before/after pictures for every template the plan creates, updates or
/// replaces; nothing for the others.
pub fn for_plan(
    plan: &crate::plan::Plan,
    desired: &crate::model::Desired,
    dir: &Path,
) -> Result<Vec<PlanPreview>> {
    use crate::model::{Attrs, Kind};
    use crate::plan::Action;
    use rayon::prelude::*;
    let images = DesiredImages::new(desired);
    let changed: Vec<&crate::plan::Change> = plan
        .changes
        .iter()
        .filter(|c| {
            c.kind == Kind::Template
                && matches!(c.action, Action::Create | Action::Update | Action::Replace)
        })
        .collect();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory `{}`", dir.display()))?;
    changed
        .par_iter()
        .filter_map(|c| {
            let Some(Attrs::Template(after)) = desired.resources.get(&c.address).map(|r| &r.attrs)
            else {
                return None;
            };
            Some((c, after))
        })
        .map(|(c, after)| -> Result<PlanPreview> {
            let level = preview::tier_of(&c.address, after);
            let drawn_after = preview::render(after, level, &images);
            let base = preview::file_name(&c.address).with_extension("");
            let name = |suffix: &str| PathBuf::from(format!("{}.{suffix}.png", base.display()));
            let write = |rel: &Path, png: Vec<u8>| -> Result<()> {
                let path = dir.join(rel);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create `{}`", parent.display()))?;
                }
                std::fs::write(&path, png)
                    .with_context(|| format!("cannot write `{}`", path.display()))
            };
            let after_file = name("after");
            write(&after_file, drawn_after.png())?;
            let recorded = c
                .before
                .as_ref()
                .and_then(|v| serde_json::from_value::<Attrs>((**v).clone()).ok());
            let (before, compare) = match recorded {
                Some(Attrs::Template(before)) => {
                    let source = RecordedImages {
                        hashes: &before.image_hashes,
                        images: &images,
                    };
                    let drawn_before = preview::render(&before, level, &source);
                    let changed_image = |old: &str, new: &str| {
                        old != new || before.image_hashes.get(old) != after.image_hashes.get(new)
                    };
                    let regions = preview::changed_regions(
                        &drawn_before.layout,
                        &drawn_after.layout,
                        (
                            changed_image(&before.style.background, &after.style.background),
                            changed_image(&before.style.logo, &after.style.logo),
                        ),
                    );
                    let side =
                        preview::side_by_side(&drawn_before.pixmap, &drawn_after.pixmap, &regions);
                    let (b, s) = (name("before"), name("compare"));
                    write(&b, drawn_before.png())?;
                    write(&s, preview::encode(&side))?;
                    (Some(b), Some(s))
                }
                _ => (None, None),
            };
            Ok(PlanPreview {
                address: c.address.clone(),
                action: c.action,
                before,
                after: after_file,
                compare,
                warnings: drawn_after
                    .warnings
                    .into_iter()
                    .map(|w| w.message)
                    .collect(),
            })
        })
        .collect()
}
