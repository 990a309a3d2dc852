//! Lowering: raw manifest sections -> `model::Desired`, checking meaning
//! (references, uniqueness, enums and lengths, image files, tiers, cycles) and
//! reporting every problem at its `file:line:col`.
//!
//! 1. merge the files' sections (gateway once; names unique across files);
//! 2. per merchant: images (default + own), probed for format, size and hash;
//! 3. per template: resolve `extends` (cycles refused), expand `tiers`,
//!    interpolate `${var:..}` / `${env:..}`, check, and emit the template, its
//!    form and its activation URL.
//!
//! By section: `variables` (`${var:..}`/`${env:..}`), `extends`,
//! `merchants` (images, templates, tiers), `templates` (one template
//! emitted and checked), `issue` (issue blocks), `moves` (`import` and
//! `moved` blocks), `gateway` (the gateway block); this file holds the
//! shared context and the entry point, [`lower`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::Digest;

use super::raw;
use crate::manifest::diag::{Diagnostic, Diagnostics, did_you_mean};
use crate::manifest::source::SourceFile;
use crate::model::template as card;
use crate::model::*;

mod benefits;
mod extends;
mod gateway;
mod issue;
mod merchants;
mod moves;
mod templates;
mod variables;

use benefits::*;
use extends::*;
use gateway::*;
use issue::*;
use merchants::*;
use moves::*;
use templates::*;
pub use variables::interpolate;
use variables::*;

/// Where something was written: file index and YAML path.
#[derive(Debug, Clone)]
struct At {
    file: usize,
    path: String,
    /// Where a field not written here may come from instead, nearest first
    /// (a tier's template, then the `extends` chain): a mistake is reported
    /// once, where it was written.
    bases: Vec<At>,
}

impl At {
    fn new(file: usize, path: impl Into<String>) -> Self {
        At {
            file,
            path: path.into(),
            bases: Vec::new(),
        }
    }
}

struct Ctx<'a> {
    files: &'a [(SourceFile, raw::Manifest)],
    diags: &'a mut Diagnostics,
    env: &'a dyn Fn(&str) -> Option<String>,
    images: HashMap<PathBuf, Result<ImageFacts, String>>,
    /// The project root image paths are recorded relative to.
    root: PathBuf,
    /// `merchant/image` names that are declared but unusable (already
    /// reported): references to them add no second error.
    broken_images: BTreeSet<(String, String)>,
    /// A default template merged with its `extends` chain, by name.
    bases: HashMap<String, Value>,
}

#[derive(Debug, Clone)]
struct ImageFacts {
    format: &'static str,
    width: usize,
    height: usize,
    bytes: u64,
    sha256: String,
    /// The path as recorded: relative to the project root.
    relative: String,
}

impl Ctx<'_> {
    fn err(&mut self, at: &At, field: &str, msg: impl Into<String>) -> Diagnostic {
        let full = |at: &At| {
            if field.is_empty() {
                at.path.clone()
            } else {
                format!("{}.{field}", at.path)
            }
        };
        // Where the field is written: here, else in the nearest base that
        // writes it, else (nothing writes it) here.
        let found = std::iter::once(at)
            .chain(&at.bases)
            .find(|a| self.files[a.file].0.has(&full(a)))
            .unwrap_or(at);
        self.files[found.file].0.diag(&full(found), msg)
    }
    fn report(&mut self, at: &At, field: &str, msg: impl Into<String>) {
        let d = self.err(at, field, msg);
        self.diags.push(d);
    }
    fn dir(&self, file: usize) -> PathBuf {
        self.files[file]
            .0
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Read an image's header (format, pixels) and hash its bytes, once per file.
    fn probe(&mut self, path: &Path) -> Result<ImageFacts, String> {
        if let Some(r) = self.images.get(path) {
            return r.clone();
        }
        let r = (|| {
            let bytes = crate::util::bounded::read(path, MAX_IMAGE_BYTES)?;
            let format = match imagesize::image_type(&bytes) {
                Ok(imagesize::ImageType::Png) => "png",
                Ok(imagesize::ImageType::Jpeg) => "jpg",
                Ok(imagesize::ImageType::Gif) => "gif",
                Ok(imagesize::ImageType::Bmp) => "bmp",
                _ => {
                    return Err(format!(
                        "`{}` is not a BMP, PNG, JPEG or GIF image",
                        path.display()
                    ));
                }
            };
            let size = imagesize::blob_size(&bytes)
                .map_err(|_| format!("`{}` has an unreadable image header", path.display()))?;
            Ok(ImageFacts {
                format,
                width: size.width,
                height: size.height,
                bytes: bytes.len() as u64,
                sha256: hex::encode(sha2::Sha256::digest(&bytes)),
                relative: crate::manifest::relative_path(&self.root, path),
            })
        })();
        self.images.insert(path.to_path_buf(), r.clone());
        r
    }
}

/// The largest image read: what the gateway takes (5 MB); each role's own
/// limit (at most 2 MB) is checked after, with its own message.
const MAX_IMAGE_BYTES: u64 = 5 * 1024 * 1024;

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && name.len() <= 64
}

const NAME_HINT: &str = "names are lower-case letters, digits, `_` and `-`, starting with a letter or digit (they become addresses)";

pub fn lower(
    files: &mut [(SourceFile, raw::Manifest)],
    cli_vars: &BTreeMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
    project: &Project,
    diags: &mut Diagnostics,
) -> Option<Desired> {
    // Each merchant's raw form is dropped once it is lowered: at 5,000
    // merchants the raw and the lowered forms together were a fifth of a
    // plan's peak memory.
    let raw_merchants: Vec<Option<BTreeMap<String, raw::Merchant>>> =
        files.iter_mut().map(|(_, m)| m.merchants.take()).collect();
    let files: &[(SourceFile, raw::Manifest)] = files;
    let mut ctx = Ctx {
        files,
        diags,
        env,
        images: HashMap::new(),
        root: project.root.clone(),
        broken_images: BTreeSet::new(),
        bases: HashMap::new(),
    };
    let mut project = project.clone();
    // 1. merge sections
    let mut gateway: Option<(At, raw::Gateway)> = None;
    let mut state: Option<(At, raw::StateBlock)> = None;
    let mut project_at: Option<At> = None;
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut default_images: BTreeMap<String, (At, raw::Image)> = BTreeMap::new();
    let mut default_templates: BTreeMap<String, (At, raw::Template)> = BTreeMap::new();
    let mut merchants: BTreeMap<String, (At, raw::Merchant)> = BTreeMap::new();
    let mut seen: HashMap<String, At> = HashMap::new();
    for (i, ((_, m), raw_merchants)) in files.iter().zip(raw_merchants).enumerate() {
        if let Some(g) = &m.gateway {
            let at = At::new(i, "gateway");
            if let Some((first, _)) = &gateway {
                let other = files[first.file].0.path.display().to_string();
                ctx.report(
                    &at,
                    "",
                    format!("the gateway is already set in `{other}`; set it in one file only"),
                );
            } else {
                gateway = Some((at, g.clone()));
            }
        }
        if let Some(st) = &m.state {
            let at = At::new(i, "state");
            if let Some((first, _)) = &state {
                let other = files[first.file].0.path.display().to_string();
                ctx.report(
                    &at,
                    "",
                    format!("the state is already set in `{other}`; set it in one file only"),
                );
            } else {
                state = Some((at, st.clone()));
            }
        }
        if let Some(name) = &m.project {
            let at = At::new(i, "project");
            if let Some(first) = &project_at {
                let other = files[first.file].0.path.display().to_string();
                ctx.report(
                    &at,
                    "",
                    format!(
                        "the project name is already set in `{other}`; set it in one file only"
                    ),
                );
            } else if !valid_name(name) {
                let d = ctx
                    .err(
                        &at,
                        "",
                        format!("project name `{name}` is not a valid name"),
                    )
                    .with_hint(NAME_HINT);
                ctx.diags.push(d);
            } else {
                project.name = name.clone();
                project_at = Some(at);
            }
        }
        let mut unique = |ctx: &mut Ctx, section: &str, name: &str| -> Option<At> {
            let key = format!("{section}.{name}");
            let at = At::new(i, crate::manifest::source::join(section, name));
            if let Some(first) = seen.get(&key) {
                let other = files[first.file].0.path.display().to_string();
                ctx.report(
                    &at,
                    "",
                    format!("`{name}` is already defined in `{other}` ({section})"),
                );
                return None;
            }
            seen.insert(key, at.clone());
            Some(at)
        };
        for (k, v) in m.variables.iter().flatten() {
            if unique(&mut ctx, "variables", k).is_some() {
                vars.insert(k.clone(), v.clone());
            }
        }
        if let Some(d) = &m.defaults {
            for (k, v) in d.images.iter().flatten() {
                if let Some(at) = unique(&mut ctx, "defaults.images", k) {
                    default_images.insert(k.clone(), (at, v.clone()));
                }
            }
            for (k, v) in d.templates.iter().flatten() {
                if let Some(at) = unique(&mut ctx, "defaults.templates", k) {
                    default_templates.insert(k.clone(), (at, v.clone()));
                }
            }
        }
        for (k, v) in raw_merchants.into_iter().flatten() {
            if let Some(at) = unique(&mut ctx, "merchants", &k) {
                if !valid_name(&k) {
                    let d = ctx
                        .err(&at, "", format!("merchant name `{k}` is not a valid name"))
                        .with_hint(NAME_HINT);
                    ctx.diags.push(d);
                }
                merchants.insert(k, (at, v));
            }
        }
    }
    for (k, v) in cli_vars {
        vars.insert(k.clone(), v.clone());
    }
    let moved = lower_moved(&mut ctx);

    let mut desired = Desired {
        project,
        moved,
        ..Desired::default()
    };
    if let Some((at, g)) = &gateway {
        desired.gateway = lower_gateway(&mut ctx, at, g);
    }
    if let Some((at, st)) = &state {
        desired.gateway.state_url = secret_ref(&mut ctx, at, "url", &st.url);
    }
    for (name, (at, _)) in &default_templates {
        if let Some(cycle) = extends_cycle(name, &default_templates) {
            ctx.report(
                at,
                "extends",
                format!("`extends` forms a cycle: {}", cycle.join(" -> ")),
            );
        }
    }
    if merchants.is_empty() && !default_templates.is_empty() {
        let at = default_templates
            .values()
            .next()
            .map(|(a, _)| a.clone())
            .unwrap_or(At::new(0, String::new()));
        let d = ctx
            .err(&at, "", "templates are defined but no merchant uses them")
            .warning();
        ctx.diags.push(d);
    }
    while let Some((mname, (mat, m))) = merchants.pop_first() {
        lower_merchant(
            &mut ctx,
            &mut desired,
            &mname,
            &mat,
            &m,
            &vars,
            cli_vars,
            &default_images,
            &default_templates,
        );
    }
    desired.imports = lower_imports(&mut ctx, &desired);
    check_moves(&mut ctx, &desired);
    Some(desired)
}

fn is_http(u: &str) -> bool {
    url::Url::parse(u)
        .map(|u| matches!(u.scheme(), "http" | "https"))
        .unwrap_or(false)
}

fn is_datetime(s: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok() && s.len() == 19
}

#[cfg(test)]
mod tests {
    //! Lowering from YAML text (images written to a temporary directory):
    //! extends, tiers and interpolation, and their errors.

    use super::*;
    use crate::manifest::{LoadOptions, load_bytes};
    use crate::model::template::WriteOff;

    /// The project around the templates under test: `base` in the defaults,
    /// `{defaults}` beside it, `{templates}` under merchant `brew`.
    const PROJECT: &str = r#"
defaults:
  templates:
    base:
      card_number: { suffix_length: 12 }
      write_off: qrcode
      style: { name: "${var:brand} Club", logo: logo, background: bg }
      form: { required: [mobile] }
{defaults}
merchants:
  brew:
    variables: { brand: Brew }
    images:
      logo: { file: logo.png, role: logo }
      bg: { file: bg.png, role: background }
    templates:
{templates}
"#;

    /// Lower `templates` (YAML under `merchants.brew.templates`) with `vars`
    /// and one environment variable, `REGION=east`.
    fn lower_templates(
        defaults: &str,
        templates: &str,
        vars: &[(&str, &str)],
    ) -> (Option<Desired>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("logo.png"),
            crate::util::qr::png(500, 500, |x, _| x % 2 == 0),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bg.png"),
            crate::util::qr::png(1020, 643, |x, _| x % 3 == 0),
        )
        .unwrap();
        let text = PROJECT
            .replace("{defaults}", defaults)
            .replace("{templates}", templates);
        let env = |name: &str| (name == "REGION").then(|| "east".to_string());
        let loaded = load_bytes(
            vec![(dir.path().join("cardform.yaml"), text.into_bytes())],
            &LoadOptions {
                vars: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                env: Some(&env),
            },
        );
        let messages = loaded
            .diagnostics
            .0
            .iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect();
        (loaded.desired, messages)
    }

    fn template<'a>(d: &'a Desired, name: &str) -> &'a TemplateAttrs {
        match &d.resources[&Address::new("brew", Kind::Template, name)].attrs {
            Attrs::Template(t) => t,
            other => panic!("{name} is {other:?}"),
        }
    }

    #[test]
    fn extends_tiers_and_interpolation() {
        // (templates, --var, template -> (style.name, levels, write_off))
        type Want<'a> = &'a [(&'a str, &'a str, &'a [&'a str], WriteOff)];
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let table: [(&str, Vars, Want); 4] = [
            (
                "      plain: { extends: base }",
                &[],
                &[("plain", "Brew Club", &[], WriteOff::Qrcode)],
            ),
            (
                // extends: the child overrides some fields and keeps the rest;
                // --var wins over the merchant's variable; ${env:..} reads the environment.
                "      child:\n        extends: base\n        write_off: barcode\n        style: { name: \"${env:REGION} ${var:brand}\" }",
                &[("brand", "Cafe")],
                &[("child", "east Cafe", &[], WriteOff::Barcode)],
            ),
            (
                // tiers: one template per level, each carrying every level.
                "      club:\n        extends: base\n        tiers:\n          - { level: silver, level_name: Silver }\n          - { level: gold, level_name: Gold, style: { name: Gold Club } }",
                &[],
                &[
                    (
                        "club.silver",
                        "Brew Club",
                        &["silver", "gold"],
                        WriteOff::Qrcode,
                    ),
                    (
                        "club.gold",
                        "Gold Club",
                        &["silver", "gold"],
                        WriteOff::Qrcode,
                    ),
                ],
            ),
            (
                // A tier's own variable use, with the merchant's variable.
                "      vip:\n        extends: base\n        tiers:\n          - { level: one, style: { name: \"${var:brand} One\" } }",
                &[],
                &[("vip.one", "Brew One", &["one"], WriteOff::Qrcode)],
            ),
        ];
        for (templates, vars, want) in table {
            let (desired, messages) = lower_templates("", templates, vars);
            let d = desired.unwrap_or_else(|| panic!("{templates}\n{messages:#?}"));
            let templates_lowered = d
                .resources
                .keys()
                .filter(|a| a.kind == Kind::Template)
                .count();
            assert_eq!(templates_lowered, want.len(), "{templates}");
            for (name, card_name, levels, write_off) in want {
                let t = template(&d, name);
                assert_eq!(t.style.name, *card_name, "{name}");
                let got: Vec<&str> = t.levels.iter().map(|l| l.level.as_str()).collect();
                assert_eq!(got, *levels, "{name}");
                assert_eq!(t.write_off, *write_off, "{name}");
                // Every template has its form, which needs it.
                let form = &d.resources[&Address::new("brew", Kind::Form, name)];
                assert_eq!(form.deps, [Address::new("brew", Kind::Template, name)]);
            }
        }
    }

    #[test]
    fn mistakes_are_reported_where_written() {
        // (defaults, templates, a diagnostic that must appear as "path: message")
        let table = [
            (
                "    a: { extends: b }\n    b: { extends: a }",
                "      t: { extends: a }",
                "cycle",
            ),
            (
                "",
                "      c:\n        extends: base\n        style: { name: \"${var:nope}\" }",
                "merchants.brew.templates.c.style.name: variable `nope` is not set",
            ),
            (
                "",
                "      d:\n        extends: base\n        tiers:\n          - { level: x }\n          - { level: x }",
                "merchants.brew.templates.d.tiers[1].level: level `x` appears twice",
            ),
            (
                "",
                "      e: { extends: nothing }",
                "merchants.brew.templates.e.extends: `extends: nothing` names no template",
            ),
        ];
        for (defaults, templates, want) in table {
            let (desired, messages) = lower_templates(defaults, templates, &[]);
            assert!(desired.is_none(), "{templates}");
            assert!(
                messages.iter().any(|m| m.contains(want)),
                "{want:?} not in {messages:#?}"
            );
        }
    }

    #[test]
    fn moved_blocks_are_checked_where_written() {
        let table = [
            (
                "moved:\n  - { from: merchant.a, to: merchant.b }\n  - { from: merchant.b, to: merchant.a }",
                "moved[0]: the moves of `merchant.a` form a cycle",
            ),
            (
                "moved:\n  - { from: merchant.a/template.x, to: merchant.a/image.x }",
                "moved[0].to: `merchant.a/template.x` cannot move to `merchant.a/image.x`",
            ),
            (
                "moved:\n  - { from: brew, to: merchant.b }",
                "moved[0].from: `brew` is not `merchant.<name>`",
            ),
            (
                "moved:\n  - { from: merchant.a, to: merchant.b }\n  - { from: merchant.a, to: merchant.c }",
                "moved[1].from: `merchant.a` is already moved (to `merchant.b`)",
            ),
            // Terraform's rules (issue 29): the `from` must be gone from the
            // manifests, the end of a rename declared.
            (
                "moved:\n  - { from: merchant.brew/template.plain, to: merchant.brew/template.other }",
                "moved[0].from: `merchant.brew/template.plain` is moved, but the manifests still declare",
            ),
            (
                "moved:\n  - { from: merchant.brew/template.old, to: merchant.brew/template.nowhere }",
                "moved[0].to: `merchant.brew/template.nowhere` is not declared in the manifests",
            ),
        ];
        for (moved, want) in table {
            let (desired, messages) = lower_templates(
                "",
                &format!("      plain: {{ extends: base }}\n{moved}"),
                &[],
            );
            assert!(desired.is_none(), "{moved}");
            assert!(
                messages.iter().any(|m| m.contains(want)),
                "{want:?} not in {messages:#?}"
            );
        }
        // A chain is fine when it ends where the manifests declare: a -> b,
        // b -> brew.
        let (desired, messages) = lower_templates(
            "",
            "      plain: { extends: base }\nmoved:\n  - { from: merchant.a, to: merchant.b }\n  - { from: merchant.b, to: merchant.brew }",
            &[],
        );
        assert_eq!(desired.expect("valid").moved.len(), 2, "{messages:?}");
    }
}
