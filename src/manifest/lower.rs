//! Lowering: raw manifest sections -> `model::Desired`, checking meaning
//! (references, uniqueness, enums and lengths, image files, tiers, cycles) and
//! reporting every problem at its `file:line:col`.
//!
//! 1. merge the files' sections (gateway once; names unique across files);
//! 2. per merchant: images (default + own), probed for format, size and hash;
//! 3. per template: resolve `extends` (cycles refused), expand `tiers`,
//!    interpolate `${var:..}` / `${env:..}`, check, and emit the template, its
//!    form and its activation URL.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::Digest;

use super::diag::{Diagnostic, Diagnostics, did_you_mean};
use super::raw;
use super::source::SourceFile;
use crate::model::template as card;
use crate::model::*;

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
                relative: super::relative_path(&self.root, path),
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

/// Replace `${var:NAME}` and `${env:NAME}`; `$${` is a literal `${`.
pub fn interpolate(
    s: &str,
    var: &dyn Fn(&str) -> Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if !s.contains("${") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
        let expr = &after[..end];
        let value = match expr.split_once(':') {
            Some(("var", name)) => var(name).ok_or_else(|| {
                format!("variable `{name}` is not set\nhint: set it under `variables:` (project or merchant) or with --var {name}=VALUE")
            })?,
            Some(("env", name)) => env(name)
                .ok_or_else(|| format!("environment variable `{name}` is not set"))?,
            _ => {
                return Err(format!(
                    "`${{{expr}}}` is not `${{var:NAME}}` or `${{env:NAME}}`\nhint: write `$${{` for a literal `${{`"
                ));
            }
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Deep-merge `over` onto `base`: mappings merge, everything else replaces.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) => merge(bv, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// One step of the path to a value inside a template (a key or an index).
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// The field a path names: `style.name`, `columns[0].title`.
fn field_of(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Interpolate every string in a JSON value; errors name the field. The
/// field's name is spelled out only for an error: a template of plain
/// strings costs no allocation here.
fn interpolate_value(
    v: &mut Value,
    var: &dyn Fn(&str) -> Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) {
    fn walk<'a>(
        v: &'a mut Value,
        path: &mut Vec<Seg<'a>>,
        var: &dyn Fn(&str) -> Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
        errors: &mut Vec<(String, String)>,
    ) {
        match v {
            Value::String(s) if s.contains("${") => match interpolate(s, var, env) {
                Ok(n) => *s = n,
                Err(e) => errors.push((field_of(path), e)),
            },
            Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    path.push(Seg::Index(i));
                    walk(x, path, var, env, errors);
                    path.pop();
                }
            }
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    path.push(Seg::Key(k));
                    walk(x, path, var, env, errors);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    walk(v, &mut Vec::new(), var, env, errors);
}

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
            let at = At::new(i, super::source::join(section, name));
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
    Some(desired)
}

/// The `import` blocks: each names a template of the manifests and a
/// well-formed template id, each address and id once.
fn lower_imports(ctx: &mut Ctx, desired: &Desired) -> BTreeMap<Address, Import> {
    let mut out: BTreeMap<Address, Import> = BTreeMap::new();
    let mut ids: BTreeMap<String, Address> = BTreeMap::new();
    for (i, (_, m)) in ctx.files.iter().enumerate() {
        for (j, b) in m.import.iter().flatten().enumerate() {
            let at = At::new(i, format!("import[{j}]"));
            let to: Address = match b.to.parse() {
                Ok(a) => a,
                Err(e) => {
                    ctx.report(&at, "to", e);
                    continue;
                }
            };
            if to.kind != Kind::Template {
                ctx.report(
                    &at,
                    "to",
                    format!("`{to}` is not a template: only templates can be imported (forms and activation URLs are set again, images uploaded)"),
                );
                continue;
            }
            if !desired.resources.contains_key(&to) {
                ctx.report(
                    &at,
                    "to",
                    format!("`{to}` names no template in the manifests\nhint: write the template in the manifests first; the import adopts the gateway's template at that address"),
                );
                continue;
            }
            let id = b.id.trim();
            if !is_gateway_id(id) {
                ctx.report(
                    &at,
                    "id",
                    format!("`{}` is not a template id", super::diag::clip(&b.id, 60)),
                );
                continue;
            }
            if out.contains_key(&to) {
                ctx.report(&at, "to", format!("`{to}` is imported twice"));
                continue;
            }
            if let Some(other) = ids.get(id) {
                ctx.report(
                    &at,
                    "id",
                    format!("template {id} is already imported to `{other}`"),
                );
                continue;
            }
            ids.insert(id.to_string(), to.clone());
            let written_at = ctx.files[at.file].0.diag(&at.path, "").location();
            out.insert(
                to,
                Import {
                    template_id: id.to_string(),
                    written_at,
                },
            );
        }
    }
    out
}

/// The `moved` blocks of every file: addresses of one sort each, no block
/// moving what another already moves or onto another's target, no cycles.
fn lower_moved(ctx: &mut Ctx) -> Vec<Move> {
    let mut blocks: Vec<(At, String, String)> = Vec::new();
    for (i, (_, m)) in ctx.files.iter().enumerate() {
        for (j, b) in m.moved.iter().flatten().enumerate() {
            blocks.push((
                At::new(i, format!("moved[{j}]")),
                b.from.clone(),
                b.to.clone(),
            ));
        }
    }
    let mut out: Vec<(At, Move)> = Vec::new();
    for (at, from_s, to_s) in blocks {
        let from = Movable::parse(&from_s).map_err(|e| ctx.report(&at, "from", e));
        let to = Movable::parse(&to_s).map_err(|e| ctx.report(&at, "to", e));
        let (Ok(from), Ok(to)) = (from, to) else {
            continue;
        };
        if !from.same_sort(&to) {
            ctx.report(
                &at,
                "to",
                format!("`{from}` cannot move to `{to}`: a move keeps the kind (a merchant to a merchant, a template to a template)"),
            );
            continue;
        }
        if from == to {
            ctx.report(&at, "to", format!("`{from}` moves to itself"));
            continue;
        }
        if let Some((_, other)) = out.iter().find(|(_, m)| m.from == from) {
            ctx.report(
                &at,
                "from",
                format!("`{from}` is already moved (to `{}`)", other.to),
            );
            continue;
        }
        if out.iter().any(|(_, m)| m.to == to) {
            ctx.report(&at, "to", format!("two blocks move to `{to}`"));
            continue;
        }
        let written_at = ctx.files[at.file].0.diag(&at.path, "").location();
        out.push((
            at,
            Move {
                from,
                to,
                written_at,
            },
        ));
    }
    // Cycles: following the blocks from any `from` must not come back to it.
    let mut cyclic = Vec::new();
    for (at, m) in &out {
        let mut current = &m.to;
        for _ in 0..out.len() {
            match out.iter().find(|(_, n)| &n.from == current) {
                Some((_, n)) if n.to == m.from => {
                    cyclic.push((at.clone(), m.from.clone()));
                    break;
                }
                Some((_, n)) => current = &n.to,
                None => break,
            }
        }
    }
    for (at, from) in &cyclic {
        ctx.report(
            at,
            "",
            format!("the moves of `{from}` form a cycle; a rename must end somewhere"),
        );
    }
    if !cyclic.is_empty() {
        return Vec::new();
    }
    out.into_iter().map(|(_, m)| m).collect()
}

fn secret_ref(ctx: &mut Ctx, at: &At, field: &str, s: &raw::SecretSource) -> Option<SecretRef> {
    match (&s.file, &s.env) {
        (Some(f), None) => {
            let path = ctx.dir(at.file).join(f);
            // Not read here (the embedded sandbox does not need it); but a
            // file that is there must be one a key can be read from.
            if let Ok(meta) = std::fs::metadata(&path) {
                if !meta.is_file() {
                    ctx.report(
                        at,
                        &format!("{field}.file"),
                        format!(
                            "`{f}` is not a regular file (a directory, device, FIFO or socket)"
                        ),
                    );
                } else if meta.len() > crate::util::bounded::MAX_SECRET_BYTES {
                    ctx.report(
                        at,
                        &format!("{field}.file"),
                        format!(
                            "`{f}` is {} bytes; a key or token file is at most {} bytes",
                            meta.len(),
                            crate::util::bounded::MAX_SECRET_BYTES
                        ),
                    );
                }
            }
            Some(SecretRef::File(path))
        }
        (None, Some(e)) => Some(SecretRef::Env(e.clone())),
        _ => {
            ctx.report(at, field, "give exactly one of `file` or `env`");
            None
        }
    }
}

fn lower_rate_limits(
    ctx: &mut Ctx,
    at: &At,
    r: Option<&raw::RateLimits>,
) -> crate::model::RateLimits {
    let Some(r) = r else {
        return Default::default();
    };
    let check = |ctx: &mut Ctx, field: &str, v: Option<f64>| -> Option<f64> {
        let v = v?;
        if v > 0.0 && v.is_finite() {
            Some(v)
        } else {
            ctx.report(
                at,
                field,
                format!("`{v}` is not a positive number of calls per second"),
            );
            None
        }
    };
    let per_second = check(ctx, "rate_limits.per_second", r.per_second);
    let per_merchant = check(ctx, "rate_limits.per_merchant", r.per_merchant);
    let mut per_method = BTreeMap::new();
    for (m, v) in r.per_method.iter().flatten() {
        if !m.starts_with("alipay.") {
            ctx.report(
                at,
                "rate_limits.per_method",
                format!(
                    "`{m}` is not an Alipay method name (e.g. alipay.offline.material.image.upload)"
                ),
            );
        }
        if let Some(v) = check(ctx, "rate_limits.per_method", Some(*v)) {
            per_method.insert(m.clone(), v);
        }
    }
    crate::model::RateLimits {
        per_second,
        per_merchant,
        per_method,
        merchants: BTreeMap::new(),
    }
}

fn lower_gateway(ctx: &mut Ctx, at: &At, g: &raw::Gateway) -> GatewayBlock {
    let no_var = |_: &str| None;
    let text = |ctx: &mut Ctx, field: &str, v: &Option<String>| -> Option<String> {
        let v = v.as_ref()?;
        match interpolate(v, &no_var, ctx.env) {
            Ok(s) => Some(s),
            Err(e) => {
                ctx.report(at, field, e);
                None
            }
        }
    };
    let endpoint = text(ctx, "endpoint", &g.endpoint);
    if let Some(e) = &endpoint
        && e != "sandbox"
        && url::Url::parse(e)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
    {
        ctx.report(
            at,
            "endpoint",
            format!("`{e}` is not `sandbox` or an http(s) URL"),
        );
    }
    let app_id = text(ctx, "app_id", &g.app_id);
    GatewayBlock {
        endpoint,
        app_id,
        private_key: g
            .private_key
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "private_key", s)),
        alipay_public_key: g
            .alipay_public_key
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "alipay_public_key", s)),
        app_cert: g
            .app_cert
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "app_cert", s)),
        alipay_cert: g
            .alipay_cert
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "alipay_cert", s)),
        alipay_root_cert: g
            .alipay_root_cert
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "alipay_root_cert", s)),
        encrypt_key: g
            .encrypt_key
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "encrypt_key", s)),
        state_url: None,
        rate_limits: lower_rate_limits(ctx, at, g.rate_limits.as_ref()),
        sign_type: g.sign_type.map(|s| match s {
            raw::SignType::Rsa2 => "RSA2".into(),
            raw::SignType::Rsa => "RSA".into(),
        }),
    }
}

fn extends_cycle(
    start: &str,
    defaults: &BTreeMap<String, (At, raw::Template)>,
) -> Option<Vec<String>> {
    let mut chain = vec![start.to_string()];
    let mut cur = start.to_string();
    while let Some(next) = defaults.get(&cur).and_then(|(_, t)| t.extends.clone()) {
        if chain.contains(&next) {
            chain.push(next);
            return Some(chain);
        }
        chain.push(next.clone());
        cur = next;
    }
    None
}

fn role_name(r: raw::ImageRole) -> &'static str {
    match r {
        raw::ImageRole::Background => "background",
        raw::ImageRole::Logo => "logo",
        raw::ImageRole::CardFront => "card_front",
        raw::ImageRole::LevelIcon => "level_icon",
        raw::ImageRole::Other => "other",
    }
}

/// Check an image against its role: pixels (at least, same proportions) and bytes.
fn role_problem(role: raw::ImageRole, f: &ImageFacts) -> Option<String> {
    const MB: u64 = 1024 * 1024;
    let (min, max_bytes) = match role {
        raw::ImageRole::Background => (Some((1020, 643)), 2 * MB),
        raw::ImageRole::Logo => (Some((500, 500)), MB),
        raw::ImageRole::CardFront => (Some((230, 295)), MB),
        raw::ImageRole::LevelIcon | raw::ImageRole::Other => (None, MB),
    };
    if f.bytes > max_bytes {
        return Some(format!(
            "the {} image is {} bytes; at most {} ({} MB) are allowed",
            role_name(role),
            f.bytes,
            max_bytes,
            max_bytes / MB
        ));
    }
    if let Some((w, h)) = min {
        let same_ratio = (f.width * h).abs_diff(f.height * w) * 100 <= w * h;
        if f.width < w || f.height < h || !same_ratio {
            return Some(format!(
                "the {} image is {}x{} pixels; it must be {w}x{h} (or larger in the same proportions)",
                role_name(role),
                f.width,
                f.height
            ));
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn lower_merchant(
    ctx: &mut Ctx,
    desired: &mut Desired,
    mname: &str,
    mat: &At,
    m: &raw::Merchant,
    project_vars: &BTreeMap<String, String>,
    cli_vars: &BTreeMap<String, String>,
    default_images: &BTreeMap<String, (At, raw::Image)>,
    default_templates: &BTreeMap<String, (At, raw::Template)>,
) {
    if let Some(r) = m.rate_limit {
        if r > 0.0 && r.is_finite() {
            desired
                .gateway
                .rate_limits
                .merchants
                .insert(mname.to_string(), r);
        } else {
            ctx.report(
                mat,
                "rate_limit",
                format!("`{r}` is not a positive number of calls per second"),
            );
        }
    }
    desired.merchants.insert(
        mname.to_string(),
        MerchantInfo {
            display_name: m.display_name.clone(),
            app_auth_token: m
                .app_auth_token
                .as_ref()
                .and_then(|s| secret_ref(ctx, mat, "app_auth_token", s)),
        },
    );
    // Images: defaults first, the merchant's own override by name.
    let mut images: BTreeMap<String, (At, raw::Image)> = default_images.clone();
    for (k, v) in m.images.iter().flatten() {
        images.insert(
            k.clone(),
            (
                At::new(
                    mat.file,
                    super::source::join(&format!("{}.images", mat.path), k),
                ),
                v.clone(),
            ),
        );
    }
    let mut image_roles: BTreeMap<String, (raw::ImageRole, String)> = BTreeMap::new();
    for (name, (at, img)) in &images {
        if !valid_name(name) {
            let d = ctx
                .err(at, "", format!("image name `{name}` is not a valid name"))
                .with_hint(NAME_HINT);
            ctx.diags.push(d);
            continue;
        }
        // Any problem with the image itself is reported here, once; the
        // templates that use it add no error of their own.
        ctx.broken_images.insert((mname.to_string(), name.clone()));
        let file = match (&img.file, &img.id) {
            (Some(f), None) => f.clone(),
            (None, Some(id)) => {
                if !is_gateway_id(id) {
                    ctx.report(
                        at,
                        "id",
                        format!("`{}` is not an image id", super::diag::clip(id, 60)),
                    );
                    continue;
                }
                ctx.broken_images.remove(&(mname.to_string(), name.clone()));
                let address = Address::new(mname, Kind::Image, name);
                let sha = format!("id:{id}");
                image_roles.insert(name.clone(), (img.role, sha.clone()));
                desired.resources.insert(
                    address.clone(),
                    Resource {
                        address,
                        deps: Vec::new(),
                        attrs: Attrs::Image(Box::new(ImageAttrs {
                            file: String::new(),
                            source: PathBuf::new(),
                            role: role_name(img.role).into(),
                            image_type: String::new(),
                            sha256: sha,
                            width: 0,
                            height: 0,
                            bytes: 0,
                            id: Some(id.clone()),
                        })),
                    },
                );
                continue;
            }
            _ => {
                ctx.report(
                    at,
                    "",
                    "an image needs exactly one of `file` (bytes to upload) or `id` (an image the gateway already holds)",
                );
                continue;
            }
        };
        let path = ctx.dir(at.file).join(&file);
        let facts = match ctx.probe(&path) {
            Ok(f) => f,
            Err(e) => {
                ctx.report(at, "file", e);
                continue;
            }
        };
        let ext = Path::new(&file)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let ext_format = match ext.as_str() {
            "jpeg" | "jpg" => "jpg",
            other => other,
        };
        if ext_format != facts.format {
            ctx.report(
                at,
                "file",
                format!(
                    "`{}` is a {} file but its name ends in `.{ext}`",
                    file,
                    facts.format.to_uppercase()
                ),
            );
            continue;
        }
        if let Some(p) = role_problem(img.role, &facts) {
            ctx.report(at, "file", p);
            continue;
        }
        ctx.broken_images.remove(&(mname.to_string(), name.clone()));
        let address = Address::new(mname, Kind::Image, name);
        image_roles.insert(name.clone(), (img.role, facts.sha256.clone()));
        desired.resources.insert(
            address.clone(),
            Resource {
                address,
                deps: Vec::new(),
                attrs: Attrs::Image(Box::new(ImageAttrs {
                    file: facts.relative,
                    source: path,
                    role: role_name(img.role).into(),
                    image_type: facts.format.into(),
                    sha256: facts.sha256,
                    width: facts.width,
                    height: facts.height,
                    bytes: facts.bytes,
                    id: None,
                })),
            },
        );
    }
    let merchant_vars = m.variables.clone().unwrap_or_default();
    let var = |name: &str| -> Option<String> {
        cli_vars
            .get(name)
            .or_else(|| merchant_vars.get(name))
            .or_else(|| project_vars.get(name))
            .cloned()
    };
    for (tname, t) in m.templates.iter().flatten() {
        let mut at = At::new(
            mat.file,
            super::source::join(&format!("{}.templates", mat.path), tname),
        );
        if !valid_name(tname) {
            let d = ctx
                .err(
                    &at,
                    "",
                    format!("template name `{tname}` is not a valid name"),
                )
                .with_hint(NAME_HINT);
            ctx.diags.push(d);
            continue;
        }
        // extends chain, outermost base first
        let mut base = Value::Object(Default::default());
        if let Some(ext) = &t.extends {
            let mut chain = Vec::new();
            let mut cur = Some(ext.clone());
            while let Some(name) = cur {
                if chain.contains(&name) {
                    break; // reported once at the default
                }
                match default_templates.get(&name) {
                    Some((_, d)) => {
                        cur = d.extends.clone();
                        chain.push(name);
                    }
                    None => {
                        let d = ctx
                            .err(
                                &at,
                                "extends",
                                format!(
                                    "`extends: {name}` names no template in `defaults.templates`"
                                ),
                            )
                            .with_hint(
                                did_you_mean(&name, default_templates.keys().map(String::as_str))
                                    .unwrap_or_default(),
                            );
                        ctx.diags.push(d);
                        chain.clear();
                        break;
                    }
                }
            }
            // Fields not written on the template come from its bases.
            at.bases = chain
                .iter()
                .map(|n| default_templates[n].0.clone())
                .collect();
            // The chain's merged value is the same for every template that
            // extends the same default: built once per run.
            if let Some(first) = chain.first() {
                base = ctx
                    .bases
                    .entry(first.clone())
                    .or_insert_with(|| {
                        let mut merged = Value::Object(Default::default());
                        for name in chain.iter().rev() {
                            let v = serde_json::to_value(&default_templates[name].1)
                                .expect("raw types serialize");
                            merge(&mut merged, &v);
                        }
                        merged
                    })
                    .clone();
            }
        }
        merge(
            &mut base,
            &serde_json::to_value(t).expect("raw types serialize"),
        );
        if let Value::Object(o) = &mut base {
            o.remove("extends");
        }
        let tiers: Vec<Value> = base
            .as_object_mut()
            .and_then(|o| o.remove("tiers"))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let mut errors = Vec::new();
        interpolate_value(&mut base, &var, ctx.env, &mut errors);
        for (field, e) in errors {
            ctx.report(&at, &field, e);
        }
        for f in ["level", "level_name", "level_icon", "level_description"] {
            if base.get(f).is_some() {
                ctx.report(
                    &at,
                    f,
                    format!("`{f}` belongs in a tier (under `tiers:`), not on the template"),
                );
            }
        }
        if tiers.is_empty() {
            let tpl: raw::Template = match serde_json::from_value(base) {
                Ok(t) => t,
                Err(e) => {
                    ctx.report(
                        &at,
                        "",
                        format!("cannot combine the template with its base: {e}"),
                    );
                    continue;
                }
            };
            emit_template(ctx, desired, mname, tname, &at, &tpl, None, &image_roles);
            continue;
        }
        // Tiers: each is the base with the tier's overrides.
        let mut levels: Vec<(raw::Template, At)> = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, tier) in tiers.iter().enumerate() {
            let mut tat = At::new(at.file, format!("{}.tiers[{i}]", at.path));
            // A tier's field may be written on the tier, the template, or a
            // base (in the base's own tiers or on the base itself).
            tat.bases.push(At::new(at.file, at.path.clone()));
            for b in &at.bases {
                tat.bases
                    .push(At::new(b.file, format!("{}.tiers[{i}]", b.path)));
                tat.bases.push(At::new(b.file, b.path.clone()));
            }
            let mut tier = tier.clone();
            let mut errors = Vec::new();
            interpolate_value(&mut tier, &var, ctx.env, &mut errors);
            for (field, e) in errors {
                ctx.report(&tat, &field, e);
            }
            for f in ["tiers", "extends"] {
                if tier.get(f).is_some() {
                    ctx.report(&tat, f, format!("`{f}` is not allowed inside a tier"));
                }
            }
            let mut merged = base.clone();
            merge(&mut merged, &tier);
            let tpl: raw::Template = match serde_json::from_value(merged) {
                Ok(t) => t,
                Err(e) => {
                    ctx.report(
                        &tat,
                        "",
                        format!("cannot combine the tier with its template: {e}"),
                    );
                    continue;
                }
            };
            let Some(level) = tpl.level.clone() else {
                ctx.report(
                    &tat,
                    "",
                    "a tier needs `level` (its level code, also its address name)",
                );
                continue;
            };
            if !valid_name(&level) {
                let d = ctx
                    .err(
                        &tat,
                        "level",
                        format!("level `{level}` is not a valid name"),
                    )
                    .with_hint(NAME_HINT);
                ctx.diags.push(d);
                continue;
            }
            if !seen.insert(level.clone()) {
                ctx.report(
                    &tat,
                    "level",
                    format!("level `{level}` appears twice in this template's tiers"),
                );
                continue;
            }
            levels.push((tpl, tat));
        }
        let mut conf = Vec::new();
        for (tpl, tat) in &levels {
            let level_icon = match &tpl.level_icon {
                Some(icon) => image_ref(
                    ctx,
                    tat,
                    "level_icon",
                    icon,
                    &image_roles,
                    Some(raw::ImageRole::LevelIcon),
                )
                .map(|(a, _)| a),
                None => None,
            };
            conf.push(card::Level {
                level: tpl.level.clone().unwrap_or_default(),
                level_name: tpl.level_name.clone(),
                level_icon,
                level_description: tpl.level_description.clone(),
            });
        }
        for (tpl, tat) in &levels {
            let level = tpl.level.clone().unwrap_or_default();
            emit_template(
                ctx,
                desired,
                mname,
                &format!("{tname}.{level}"),
                tat,
                tpl,
                Some(&conf),
                &image_roles,
            );
        }
    }
}

/// Resolve an image name to its address, checking the role where one is needed.
fn image_ref(
    ctx: &mut Ctx,
    at: &At,
    field: &str,
    name: &str,
    images: &BTreeMap<String, (raw::ImageRole, String)>,
    want: Option<raw::ImageRole>,
) -> Option<(String, String)> {
    let merchant = at.path.split('.').nth(1).unwrap_or_default().to_string();
    let Some((role, sha)) = images.get(name) else {
        if ctx.broken_images.contains(&(merchant, name.to_string())) {
            return None; // reported at the image
        }
        let hint = did_you_mean(name, images.keys().map(String::as_str)).unwrap_or_else(|| {
            "declare it under the merchant's `images:` or `defaults.images`".into()
        });
        let d = ctx
            .err(
                at,
                field,
                format!("image `{name}` is not declared for this merchant"),
            )
            .with_hint(hint);
        ctx.diags.push(d);
        return None;
    };
    if let Some(w) = want
        && *role != w
    {
        ctx.report(
            at,
            field,
            format!(
                "image `{name}` has role `{}`; this field needs an image with role `{}`",
                role_name(*role),
                role_name(w)
            ),
        );
        return None;
    }
    Some((
        Address::new(&merchant, Kind::Image, name).to_string(),
        sha.clone(),
    ))
}

fn is_http(u: &str) -> bool {
    url::Url::parse(u)
        .map(|u| matches!(u.scheme(), "http" | "https"))
        .unwrap_or(false)
}

fn is_datetime(s: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok() && s.len() == 19
}

/// An activation URL's `issue` block: checked (the callback it needs, a
/// level the template knows, the members file's header) and recorded.
#[allow(clippy::too_many_arguments)]
fn lower_issue(
    ctx: &mut Ctx,
    desired: &mut Desired,
    mname: &str,
    name: &str,
    at: &At,
    u: &raw::ActivationUrl,
    issue: &raw::Issue,
    levels: Option<&Vec<card::Level>>,
) {
    let f = |x: &str| format!("activation_url.issue.{x}");
    if u.callback.is_none() {
        ctx.report(
            at,
            "activation_url.issue",
            "`issue` needs `callback` beside it: the URL where `cardform cards serve` listens",
        );
    }
    let known: Vec<&str> = levels
        .map(|l| l.iter().map(|l| l.level.as_str()).collect())
        .unwrap_or_default();
    // The family a tier belongs to: `club` for `club.gold`.
    let family = known
        .iter()
        .find_map(|l| name.strip_suffix(&format!(".{l}")))
        .unwrap_or(name);
    match (&issue.level, known.is_empty()) {
        (Some(l), false) if !known.contains(&l.as_str()) => ctx.report(
            at,
            &f("level"),
            format!(
                "`{l}` is not a level of this template's tiers ({})",
                known.join(", ")
            ),
        ),
        (Some(_), true) => ctx.report(
            at,
            &f("level"),
            "this template has no tiers, so there is no level to choose",
        ),
        (None, false) if issue.members.is_none() => ctx.report(
            at,
            &f("level"),
            format!(
                "a tiered template needs the level a new member starts on ({})",
                known.join(", ")
            ),
        ),
        _ => {}
    }
    let valid_date = issue
        .valid_date
        .clone()
        .unwrap_or_else(|| "2099-12-31 23:59:59".to_string());
    if !is_datetime(&valid_date) {
        ctx.report(
            at,
            &f("valid_date"),
            format!("`{valid_date}` is not `yyyy-MM-dd HH:mm:ss`"),
        );
    }
    if let Some(d) = &issue.done_url
        && !is_http(d)
    {
        ctx.report(at, &f("done_url"), format!("`{d}` is not an http(s) URL"));
    }
    let mut members = None;
    let mut members_path = None;
    if let Some(m) = &issue.members {
        let path = ctx.dir(at.file).join(&m.file);
        match super::members::check_file(&path, &known) {
            Ok(()) => {
                members = Some(super::relative_path(&ctx.root, &path));
                members_path = Some(path);
            }
            Err(e) => ctx.report(at, &f("members.file"), e),
        }
    }
    desired.issuance.insert(
        Address::new(mname, Kind::Template, name),
        crate::model::Issuance {
            family: Address::new(mname, Kind::Template, family),
            level: issue.level.clone(),
            members,
            members_path,
            valid_date,
            done_url: issue.done_url.clone(),
        },
    );
}

#[allow(clippy::too_many_arguments)]
fn emit_template(
    ctx: &mut Ctx,
    desired: &mut Desired,
    mname: &str,
    name: &str,
    at: &At,
    t: &raw::Template,
    levels: Option<&Vec<card::Level>>,
    images: &BTreeMap<String, (raw::ImageRole, String)>,
) {
    let before = ctx.diags.0.len();
    let mut hashes = BTreeMap::new();
    let mut img = |ctx: &mut Ctx,
                   field: &str,
                   n: &Option<String>,
                   want: Option<raw::ImageRole>|
     -> Option<String> {
        let n = n.as_ref()?;
        let (addr, sha) = image_ref(ctx, at, field, n, images, want)?;
        hashes.insert(addr.clone(), sha);
        Some(addr)
    };
    let Some(style) = &t.style else {
        ctx.report(
            at,
            "style",
            "a template needs `style` (at least name, logo and background)",
        );
        return;
    };
    for (f, v) in [
        ("style.name", &style.name),
        ("style.logo", &style.logo),
        ("style.background", &style.background),
    ] {
        if v.as_deref().is_none_or(|s| s.trim().is_empty()) {
            ctx.report(at, f, format!("`{f}` is required"));
        }
    }
    let logo = img(ctx, "style.logo", &style.logo, Some(raw::ImageRole::Logo));
    let background = img(
        ctx,
        "style.background",
        &style.background,
        Some(raw::ImageRole::Background),
    );
    let slogan_img = img(ctx, "style.slogan_image", &style.slogan_image, None);
    let banner_img = img(ctx, "style.banner_image", &style.banner_image, None);
    if let Some(u) = &style.banner_url
        && !is_http(u)
    {
        ctx.report(
            at,
            "style.banner_url",
            format!("`{u}` is not an http(s) URL"),
        );
    }
    if let Some(c) = &style.text_color
        && !is_rgb(c)
    {
        ctx.report(
            at,
            "style.text_color",
            format!(
                "`{}` is not a colour the gateway takes: write `rgb(r,g,b)` with each of r, g, b from 0 to 255, e.g. `rgb(55,112,179)`",
                super::diag::clip(c, 60)
            ),
        );
    }
    let number = t.card_number.clone().unwrap_or_default();
    let suffix = match number.suffix_length {
        Some(n) if (8..=32).contains(&n) => Some(n),
        Some(n) => {
            ctx.report(
                at,
                "card_number.suffix_length",
                format!("{n} is not from 8 to 32"),
            );
            None
        }
        None => {
            ctx.report(
                at,
                "card_number.suffix_length",
                "`card_number.suffix_length` is required (8 to 32; it cannot change later)",
            );
            None
        }
    };
    if let Some(p) = &number.prefix {
        if p.chars().count() > 10 {
            ctx.report(
                at,
                "card_number.prefix",
                format!("`{p}` is {} characters; at most 10", p.chars().count()),
            );
        } else if let Some(s) = suffix
            && p.chars().count() + s as usize > 32
        {
            ctx.report(
                at,
                "card_number",
                "prefix plus suffix_length exceeds 32 characters",
            );
        }
    }
    let write_off = match t.write_off {
        Some(w) => Some(w),
        None => {
            ctx.report(at, "write_off", "`write_off` is required (qrcode, barcode, dynamic_qrcode, dynamic_barcode, merchant_dynamic_qrcode, merchant_dynamic_barcode)");
            None
        }
    };
    if matches!(
        write_off,
        Some(raw::WriteOff::MerchantDynamicQrcode | raw::WriteOff::MerchantDynamicBarcode)
    ) {
        match &t.dynamic_code_notify {
            None => ctx.report(
                at,
                "dynamic_code_notify",
                "merchant dynamic codes need `dynamic_code_notify` (an https URL)",
            ),
            Some(d) if !d.url.starts_with("https://") => ctx.report(
                at,
                "dynamic_code_notify.url",
                format!("`{}` must be an https URL", d.url),
            ),
            _ => {}
        }
    }
    let grid = style.column_layout == Some(raw::ColumnLayout::Grid);
    let mut columns = Vec::new();
    for (i, c) in t.columns.iter().flatten().enumerate() {
        let f = |x: &str| format!("columns[{i}].{x}");
        let action = c.action.unwrap_or(raw::ColumnAction::Static);
        match action {
            raw::ColumnAction::Static => {}
            raw::ColumnAction::Native => {
                if c.more
                    .as_ref()
                    .and_then(|m| m.descriptions.as_ref())
                    .is_none_or(|d| d.is_empty())
                {
                    ctx.report(
                        at,
                        &f("more.descriptions"),
                        "`action: native` shows `more.descriptions`; give at least one",
                    );
                }
            }
            raw::ColumnAction::Web => match c.more.as_ref().and_then(|m| m.url.as_ref()) {
                Some(u) if is_http(u) => {}
                Some(u) => ctx.report(at, &f("more.url"), format!("`{u}` is not an http(s) URL")),
                None => ctx.report(
                    at,
                    &f("more.url"),
                    "`action: web` opens `more.url`; give it",
                ),
            },
        }
        if grid && c.icon.is_none() {
            ctx.report(
                at,
                &f("icon"),
                "the grid layout needs an icon on every column",
            );
        }
        let icon = img(ctx, &f("icon"), &c.icon, None);
        columns.push(card::Column {
            code: c.code.clone(),
            title: c.title.clone(),
            value: c.value.clone(),
            action,
            more: c.more.as_ref().map(|m| {
                Box::new(card::More {
                    title: m.title.clone(),
                    url: m.url.clone(),
                    params: m.params.clone(),
                    descriptions: m.descriptions.clone(),
                })
            }),
            icon,
            tag: c.tag.clone(),
            group_title: c.group_title.clone(),
        });
    }
    let mut rules = Vec::new();
    for (i, r) in t.field_rules.iter().flatten().enumerate() {
        match r.rule {
            raw::RuleKind::FromRequest => {
                if !["OpenDate", "ValidDate", "Level", "Point", "Balance"]
                    .contains(&r.value.as_str())
                {
                    ctx.report(
                        at,
                        &format!("field_rules[{i}].value"),
                        format!(
                            "`{}` is not one of OpenDate, ValidDate, Level, Point, Balance",
                            r.value
                        ),
                    );
                }
            }
            raw::RuleKind::DateInFuture => {
                if !matches!(
                    r.field,
                    raw::CardField::OpenDate | raw::CardField::ValidDate
                ) {
                    ctx.report(
                        at,
                        &format!("field_rules[{i}].rule"),
                        "`date_in_future` applies only to OpenDate and ValidDate",
                    );
                }
                let v = &r.value;
                let ok = v.len() >= 2
                    && (v.ends_with('m') || v.ends_with('d'))
                    && v[..v.len() - 1].chars().all(|c| c.is_ascii_digit());
                if !ok {
                    ctx.report(
                        at,
                        &format!("field_rules[{i}].value"),
                        format!("`{v}` is not <n>m (months) or <n>d (days)"),
                    );
                }
            }
            raw::RuleKind::Const => {}
        }
        rules.push(card::FieldRule {
            field: r.field,
            rule: r.rule,
            value: r.value.clone(),
        });
    }
    let actions = t.actions.clone().unwrap_or_default();
    if actions.len() > 3 {
        ctx.report(
            at,
            "actions",
            format!("{} actions; a template may have at most 3", actions.len()),
        );
    }
    let mut action_list = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        match (&a.url, &a.mini_app) {
            (Some(u), None) => {
                if !is_http(u) && !u.starts_with("alipays://") {
                    ctx.report(
                        at,
                        &format!("actions[{i}].url"),
                        format!("`{u}` is not an http(s) or alipays:// URL"),
                    );
                }
            }
            (None, Some(_)) => {}
            _ => ctx.report(
                at,
                &format!("actions[{i}]"),
                "give exactly one of `url` or `mini_app`",
            ),
        }
        action_list.push(card::CardAction {
            code: a.code.clone(),
            text: a.text.clone(),
            url: a.url.clone(),
            mini_app: a.mini_app.as_ref().map(|m| card::MiniApp {
                app_id: m.app_id.clone(),
                page: m.page.clone(),
                query: m.query.clone(),
                show_on_list: m.show_on_list,
            }),
        });
    }
    let mut benefits = Vec::new();
    for (i, b) in t.benefits.iter().flatten().enumerate() {
        for (f, v) in [("start", &b.start), ("end", &b.end)] {
            if let Some(v) = v
                && !is_datetime(v)
            {
                ctx.report(
                    at,
                    &format!("benefits[{i}].{f}"),
                    format!("`{v}` is not `yyyy-MM-dd HH:mm:ss`"),
                );
            }
        }
        benefits.push(card::Benefit {
            title: b.title.clone(),
            descriptions: b.descriptions.clone(),
            start: b.start.clone(),
            end: b.end.clone(),
        });
    }
    let open_card = t.open_card.as_ref().map(|o| {
        if let Some(u) = &o.url
            && !is_http(u)
        {
            ctx.report(at, "open_card.url", format!("`{u}` is not an http(s) URL"));
        }
        let rights = o.rights.as_ref().map(|rs| {
            rs.iter()
                .enumerate()
                .map(|(i, r)| card::Right {
                    title: r.title.clone(),
                    detail: r.detail.clone(),
                    logo: img(ctx, &format!("open_card.rights[{i}].logo"), &r.logo, None),
                })
                .collect()
        });
        card::OpenCard {
            operated_by: o.operated_by,
            source_app_id: o.source_app_id.clone(),
            url: o.url.clone(),
            rights,
        }
    });
    if let Some(levels) = levels {
        for l in levels {
            if let Some(icon) = &l.level_icon
                && let Some(sha) = images.get(icon.rsplit('.').next().unwrap_or_default())
            {
                hashes.insert(icon.clone(), sha.1.clone());
            }
        }
    }
    // Form and activation URL checks.
    let form = t.form.as_ref().map(|f| {
        let optional = f.optional.clone().unwrap_or_default();
        if f.required.is_empty() {
            ctx.report(
                at,
                "form.required",
                "the form needs at least one required field",
            );
        }
        if f.required.len() + optional.len() > 20 {
            ctx.report(at, "form", "a form may have at most 20 fields");
        }
        for (i, o) in optional.iter().enumerate() {
            if f.required.contains(o) {
                ctx.report(
                    at,
                    &format!("form.optional[{i}]"),
                    format!("`{}` is already required", o.name()),
                );
            }
        }
        let all: Vec<_> = f.required.iter().chain(&optional).collect();
        if all.iter().any(|x| **x == raw::FormField::Idcard)
            && all
                .iter()
                .any(|x| matches!(x, raw::FormField::CertType | raw::FormField::CertNo))
        {
            ctx.report(
                at,
                "form",
                "`idcard` cannot be combined with `cert_type` or `cert_no`",
            );
        }
        (f.required.clone(), optional)
    });
    if let Some(u) = &t.activation_url {
        if let Some(cb) = &u.callback {
            if !is_http(cb) {
                ctx.report(
                    at,
                    "activation_url.callback",
                    format!("`{cb}` is not an http(s) URL"),
                );
            } else if cb.contains('?') {
                ctx.report(at, "activation_url.callback", "the callback must not carry a query string\nhint: put per-link data in `out_string`");
            }
        }
        if let Some(o) = &u.out_string
            && o.chars().count() > 256
        {
            ctx.report(
                at,
                "activation_url.out_string",
                format!("{} characters; at most 256", o.chars().count()),
            );
        }
        if let Some(issue) = &u.issue {
            lower_issue(ctx, desired, mname, name, at, u, issue, levels);
        }
    }
    if ctx.diags.0.len() > before {
        return;
    }
    // No error was reported: everything required is present.
    let (Some(suffix_length), Some(write_off), Some(name_), Some(logo), Some(background)) =
        (suffix, write_off, style.name.clone(), logo, background)
    else {
        return;
    };
    let attrs = TemplateAttrs {
        card_type: t.card_type.unwrap_or(raw::CardType::OutMemberCard),
        card_number: card::CardNumber {
            prefix: number.prefix.clone(),
            suffix_length,
        },
        write_off,
        style: card::Style {
            name: name_,
            logo,
            background,
            text_color: style.text_color.clone(),
            brand_name: style.brand_name.clone(),
            slogan: style.slogan.clone(),
            slogan_image: slogan_img,
            banner_image: banner_img,
            banner_url: style.banner_url.clone(),
            feature_descriptions: style.feature_descriptions.clone(),
            show_front_text: style.show_front_text,
            show_front_image: style.show_front_image,
            column_layout: style.column_layout,
        },
        columns,
        field_rules: rules,
        actions: action_list,
        benefits,
        open_card,
        dynamic_code_notify: t
            .dynamic_code_notify
            .as_ref()
            .map(|d| card::DynamicCodeNotify {
                url: d.url.clone(),
                ext_params: d.ext_params.clone(),
            }),
        shops: t.shops.clone(),
        channels: t.channels.clone(),
        spi_app_id: t.spi_app_id.clone(),
        levels: levels.cloned().unwrap_or_default(),
        image_hashes: hashes,
    };
    let address = Address::new(mname, Kind::Template, name);
    let deps: Vec<Address> = attrs
        .image_hashes
        .keys()
        .filter_map(|a| a.parse().ok())
        .collect();
    desired.resources.insert(
        address.clone(),
        Resource {
            address: address.clone(),
            deps,
            attrs: Attrs::Template(Box::new(attrs)),
        },
    );
    let mut last = address.clone();
    if let Some((required, optional)) = form {
        let fa = address.with_kind(Kind::Form);
        desired.resources.insert(
            fa.clone(),
            Resource {
                address: fa.clone(),
                deps: vec![address.clone()],
                attrs: Attrs::Form(Box::new(FormAttrs {
                    template: address.clone(),
                    required,
                    optional,
                })),
            },
        );
        last = fa;
    }
    if let Some(u) = &t.activation_url {
        let ua = address.with_kind(Kind::ActivationUrl);
        let mut deps = vec![address.clone()];
        if last != address {
            deps.push(last);
        }
        desired.resources.insert(
            ua.clone(),
            Resource {
                address: ua,
                deps,
                attrs: Attrs::ActivationUrl(Box::new(ActivationUrlAttrs {
                    template: address,
                    callback: u.callback.clone(),
                    out_string: u.out_string.clone(),
                    follow_app_id: u.follow_app_id.clone(),
                })),
            },
        );
    }
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
        // A chain is fine: a -> b, b -> c.
        let (desired, messages) = lower_templates(
            "",
            "      plain: { extends: base }\nmoved:\n  - { from: merchant.a, to: merchant.b }\n  - { from: merchant.b, to: merchant.c }",
            &[],
        );
        assert_eq!(desired.expect("valid").moved.len(), 2, "{messages:?}");
    }
}
