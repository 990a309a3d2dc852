//! Manifests: raw YAML types ([`raw`]), safe reading with source positions
//! ([`source`]), JSON Schema checking, and lowering to [`crate::model::Desired`]
//! with located diagnostics ([`lower`], [`diag`]).
//!
//! `load` does the I/O (files, image headers and hashes, environment lookups
//! through the function it is handed); lowering itself is pure. It must never
//! reach the gateway or the state, nor use the gateway's vocabulary.

pub mod diag;
pub mod lower;
pub mod members;
pub mod raw;
mod schema_errors;
pub mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, Diagnostics, Severity};
use source::SourceFile;

use crate::model::Desired;

/// The manifest JSON Schema, generated from the raw types.
pub fn schema() -> serde_json::Value {
    // Optional fields are simply not required: no `null` alternative, so that
    // errors point inside the field's own schema instead of at an `anyOf`.
    let mut schema =
        serde_json::to_value(schemars::schema_for!(raw::Manifest)).expect("schema serializes");
    drop_null(&mut schema);
    schema
}

/// Remove the `null` alternative schemars adds for `Option` fields.
fn drop_null(v: &mut serde_json::Value) {
    use serde_json::Value;
    if let Value::Object(m) = v {
        if let Some(Value::Array(types)) = m.get_mut("type") {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let t = types[0].clone();
                m.insert("type".into(), t);
            }
        }
        let single = match m.get("anyOf") {
            Some(Value::Array(alts)) if alts.len() == 2 => {
                let non_null: Vec<&Value> = alts
                    .iter()
                    .filter(|a| a.get("type") != Some(&Value::from("null")))
                    .collect();
                (non_null.len() == 1).then(|| non_null[0].clone())
            }
            _ => None,
        };
        if let Some(Value::Object(inner)) = single {
            m.remove("anyOf");
            for (k, x) in inner {
                m.entry(k).or_insert(x);
            }
        }
        m.values_mut().for_each(drop_null);
    } else if let Value::Array(a) = v {
        a.iter_mut().for_each(drop_null);
    }
}

/// The schema as committed in `schemas/cardform.schema.json`.
pub fn schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).expect("schema serializes");
    s.push('\n');
    s
}

/// The YAML files of a project: the file itself, or every `*.yaml` / `*.yml`
/// directly in the directory, sorted.
pub fn project_files(path: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let at = |msg: String| Diagnostic::new(path, source::Pos { line: 1, col: 1 }, "", msg);
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() != std::io::ErrorKind::NotFound {
            return at(format!("cannot read the project: {e}"));
        }
        // A typo: the names beside where it should be.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let siblings: Vec<String> = std::fs::read_dir(parent)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        let hint = diag::did_you_mean(name, siblings.iter().map(String::as_str))
            .and_then(|h| h.split('`').nth(1).map(str::to_string))
            .map(|near| {
                let near = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Some(p) => p.join(near).display().to_string(),
                    None => near,
                };
                format!(" (did you mean `{near}`?)")
            })
            .unwrap_or_default();
        at(format!(
            "the project `{}` does not exist{hint}",
            path.display()
        ))
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| at(format!("cannot read the project directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(at(
            "no *.yaml or *.yml files in the project directory".into()
        ));
    }
    Ok(files)
}

/// The project's root directory: the directory itself, or a file's directory;
/// canonical where it exists, so that every spelling of the path agrees.
pub fn project_root(path: &Path) -> PathBuf {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if canonical.is_file() {
        canonical
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or(canonical)
    } else {
        canonical
    }
}

/// The name a project has when its manifests set no `project:`: the
/// directory's name; for a single-file project the file's name without its
/// extension, or its directory's name when the file is `cardform.yaml`.
pub fn default_project_name(path: &Path) -> String {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let stem = canonical
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = if canonical.is_file() && stem != "cardform" {
        stem
    } else {
        project_root(path)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    if name.is_empty() {
        "project".into()
    } else {
        name
    }
}

/// `path` relative to `root`, with `/` separators (`..` where it lies outside).
pub fn relative_path(root: &Path, path: &Path) -> String {
    use std::path::Component;
    // A path not (yet) there is normalised by its words: `a/../b` is `b`.
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| {
        let mut out = PathBuf::new();
        for c in path.components() {
            match c {
                Component::ParentDir if out.file_name().is_some() => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    });
    let a: Vec<Component> = root.components().collect();
    let b: Vec<Component> = path.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); a.len() - common];
    parts.extend(
        b[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// Looks up an environment variable.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Options for loading.
#[derive(Default)]
pub struct LoadOptions<'a> {
    /// `--var NAME=VALUE`, over the manifest's variables.
    pub vars: BTreeMap<String, String>,
    /// Environment lookup for `${env:NAME}` (settings hands in the real one).
    pub env: Option<EnvLookup<'a>>,
}

/// The result of loading: the desired state if there were no errors, and every
/// diagnostic (warnings too).
pub struct Loaded {
    pub desired: Option<Desired>,
    pub diagnostics: Diagnostics,
    pub files: Vec<PathBuf>,
}

/// Read, schema-check and lower a project.
pub fn load(path: &Path, opts: &LoadOptions) -> Loaded {
    let files = match project_files(path) {
        Ok(f) => f,
        Err(d) => {
            return Loaded {
                desired: None,
                diagnostics: Diagnostics(vec![d]),
                files: Vec::new(),
            };
        }
    };
    let mut sources = Vec::new();
    let mut diags = Diagnostics::default();
    for file in &files {
        match source::read(file) {
            Ok(v) => sources.push(v),
            Err(d) => diags.push(d),
        }
    }
    let root = project_root(path);
    let name = default_project_name(path);
    finish(sources, diags, files, opts, (root, name))
}

/// Load files already in memory (paths still locate images and messages).
pub fn load_bytes(inputs: Vec<(PathBuf, Vec<u8>)>, opts: &LoadOptions) -> Loaded {
    let mut sources = Vec::new();
    let mut diags = Diagnostics::default();
    let files: Vec<PathBuf> = inputs.iter().map(|(p, _)| p.clone()).collect();
    for (path, bytes) in inputs {
        match source::parse(&path, bytes) {
            Ok(v) => sources.push(v),
            Err(d) => diags.push(d),
        }
    }
    let first = files_first(&files);
    let root = project_root(&first);
    let name = default_project_name(&first);
    finish(sources, diags, files, opts, (root, name))
}

fn files_first(files: &[PathBuf]) -> PathBuf {
    files.first().cloned().unwrap_or_default()
}

fn finish(
    sources: Vec<(SourceFile, serde_json::Value)>,
    mut diags: Diagnostics,
    files: Vec<PathBuf>,
    opts: &LoadOptions,
    (root, default_name): (PathBuf, String),
) -> Loaded {
    let validator =
        jsonschema::validator_for(validator_schema()).expect("bug: the generated schema compiles");
    let mut parsed: Vec<(SourceFile, raw::Manifest)> = Vec::new();
    let mut all_read = diags.0.is_empty();
    for (src, value) in sources {
        match check_schema(&validator, &src, value) {
            Ok(manifest) => parsed.push((src, manifest)),
            Err((manifest, ds)) => {
                ds.into_iter().for_each(|d| diags.push(d));
                match manifest {
                    Some(m) => parsed.push((src, m)),
                    None => all_read = false,
                }
            }
        }
    }
    // Unknown keys alone do not stop the checks that follow: every file
    // read, the project is lowered too, so that one pass reports every
    // problem it can find (a typo does not hide a bad colour).
    let desired = if !all_read {
        None
    } else {
        let env = opts.env.unwrap_or(&|_: &str| None);
        let project = crate::model::Project {
            name: default_name,
            root,
        };
        lower::lower(&mut parsed, &opts.vars, env, &project, &mut diags)
    };
    diags.sort();
    let desired = if diags.has_errors() { None } else { desired };
    Loaded {
        desired,
        diagnostics: diags,
        files,
    }
}

/// Schema errors reported per file at most.
pub const MAX_SCHEMA_ERRORS: usize = 100;

/// Fields whose value is a secret's source: a mistake there is reported
/// without the value, which may be the secret itself.
pub const SECRET_FIELDS: &[&str] = &[
    "private_key",
    "alipay_public_key",
    "app_auth_token",
    "encrypt_key",
];

/// A source line with everything after its first `key:` replaced, so a
/// secret written inline is not echoed.
pub fn redact_line(line: &str) -> String {
    match line.find(':') {
        Some(i) => format!("{} <redacted>", &line[..=i]),
        None => "<redacted>".to_string(),
    }
}

/// The property names allowed where an `additionalProperties` error was
/// raised, found by walking its schema path (through `$ref`s).
fn allowed_keys(schema_path: &str) -> Vec<String> {
    let root = validator_schema();
    let mut node = root;
    let segs: Vec<&str> = schema_path.split('/').skip(1).collect();
    for seg in segs.iter().take(segs.len().saturating_sub(1)) {
        let next = if *seg == "$ref" {
            node.get("$ref")
                .and_then(|r| r.as_str())
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|p| root.pointer(p))
        } else {
            match node {
                serde_json::Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => node.get(*seg),
            }
        };
        match next {
            Some(n) => node = n,
            None => return Vec::new(),
        }
    }
    node.get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// JSON pointer segments to our YAML path form.
fn yaml_path(pointer_segments: &[String]) -> String {
    let mut path = String::new();
    for seg in pointer_segments {
        if seg.chars().all(|c| c.is_ascii_digit()) && !path.is_empty() {
            path.push_str(&format!("[{seg}]"));
        } else {
            path = source::join(&path, seg);
        }
    }
    path
}

/// A file's schema check: the manifest, or its errors and, when the only
/// errors are unknown keys, the manifest without them (so that the checks
/// after the schema still run).
type Checked = Result<raw::Manifest, (Option<raw::Manifest>, Vec<Diagnostic>)>;

fn check_schema(
    validator: &jsonschema::Validator,
    src: &SourceFile,
    mut json: serde_json::Value,
) -> Checked {
    if !json.is_object() {
        return Err((
            None,
            vec![src.diag(
                "",
                "the top level must be a mapping (gateway, variables, defaults, merchants)",
            )],
        ));
    }
    let mut out = Vec::new();
    let mut shown = 0;
    let mut unknown: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    let mut only_unknown = true;
    let _ = schema_errors::for_each_error(validator, &mut json, &mut |segs, err| {
        match err.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                unknown.push((segs.to_vec(), unexpected.clone()));
            }
            _ => only_unknown = false,
        }
        // A file with a hundred thousand mistakes is one mistake repeated:
        // report the first ones, and say how many more there are.
        shown += 1;
        if shown > MAX_SCHEMA_ERRORS {
            out.push(src.diag(
                "",
                format!("… more schema errors in this file, not shown (the first {MAX_SCHEMA_ERRORS} are)"),
            ));
            return std::ops::ControlFlow::Break(());
        }
        schema_error(src, segs, err, &mut out);
        std::ops::ControlFlow::Continue(())
    });
    if !out.is_empty() {
        if !only_unknown || shown > MAX_SCHEMA_ERRORS {
            return Err((None, out));
        }
        for (segs, keys) in &unknown {
            let pointer: String = segs
                .iter()
                .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
                .collect();
            if let Some(serde_json::Value::Object(m)) = json.pointer_mut(&pointer) {
                for k in keys {
                    m.remove(k);
                }
            }
        }
        return Err((serde_json::from_value(json).ok(), out));
    }
    serde_json::from_value(json).map_err(|e| (None, vec![src.diag("", format!("{e}"))]))
}

/// One schema error as diagnostics, at its YAML path.
fn schema_error(
    src: &SourceFile,
    segs: &[String],
    err: &jsonschema::ValidationError<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let path = yaml_path(segs);
    // A secret written where its source belongs: never echo the value.
    // `state.url` holds a password: a secret too (other `url`s are not).
    let state_url = segs.len() >= 2 && segs[0] == "state" && segs[1] == "url";
    if let Some(field) = segs
        .iter()
        .find(|s| SECRET_FIELDS.contains(&s.as_str()))
        .or_else(|| segs.get(1).filter(|_| state_url))
    {
        let at: Vec<String> = segs
            .iter()
            .take_while(|s| *s != field)
            .chain(std::iter::once(field))
            .cloned()
            .collect();
        let at = yaml_path(&at);
        let mut d = src
                .diag(
                    &at,
                    format!("`{field}` must say where the secret comes from, not hold it"),
                )
                .with_hint("write `{ file: path }` (relative to this manifest) or `{ env: NAME }`; never the secret itself");
        d.snippet = d.snippet.as_deref().map(redact_line);
        out.push(d);
        return;
    }
    match err.kind() {
        jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = allowed_keys(err.schema_path().as_str());
            for key in unexpected {
                let p = source::join(&path, key);
                let mut d = src.diag(&p, format!("unknown key `{key}`"));
                d.hint =
                    diag::did_you_mean(key, allowed.iter().map(String::as_str)).or_else(|| {
                        (!allowed.is_empty()).then(|| {
                            format!(
                                "allowed here: {}",
                                allowed
                                    .iter()
                                    .map(|k| format!("`{k}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })
                    });
                out.push(d);
            }
        }
        jsonschema::error::ValidationErrorKind::Enum { options } => {
            let allowed: Vec<String> = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let got = err.instance().to_string();
            let mut d = src.diag(
                &path,
                format!("{got} is not one of: {}", allowed.join(", ")),
            );
            if let Some(word) = err.instance().as_str() {
                d.hint = diag::did_you_mean(word, allowed.iter().map(String::as_str));
            }
            out.push(d);
        }
        _ => out.push(src.diag(&path, schema_message(&err.to_string()))),
    }
}

/// The schema once, for the vocabulary.
fn validator_schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(schema)
}

/// Shorten jsonschema's messages, which repeat the whole offending value.
fn schema_message(msg: &str) -> String {
    if msg.len() > 600 {
        format!(
            "{}…",
            &msg[..msg
                .char_indices()
                .nth(600)
                .map(|(i, _)| i)
                .unwrap_or(msg.len())]
        )
    } else {
        msg.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schema_is_fresh() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/cardform.schema.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == schema_text(),
            "schemas/cardform.schema.json is stale; regenerate it with `cargo run -- schema > schemas/cardform.schema.json`"
        );
    }

    #[test]
    fn interpolation() {
        let var = |n: &str| (n == "brand").then(|| "Brew".to_string());
        let env = |n: &str| (n == "HOME_URL").then(|| "https://x".to_string());
        assert_eq!(
            lower::interpolate("${var:brand} Club", &var, &env).unwrap(),
            "Brew Club"
        );
        assert_eq!(
            lower::interpolate("${env:HOME_URL}/a", &var, &env).unwrap(),
            "https://x/a"
        );
        assert_eq!(
            lower::interpolate("cost $${x}", &var, &env).unwrap(),
            "cost ${x}"
        );
        assert!(
            lower::interpolate("${var:nope}", &var, &env)
                .unwrap_err()
                .contains("`nope` is not set")
        );
        assert!(
            lower::interpolate("${env:NOPE}", &var, &env)
                .unwrap_err()
                .contains("NOPE")
        );
        assert!(lower::interpolate("${oops}", &var, &env).is_err());
        assert!(lower::interpolate("${var:brand", &var, &env).is_err());
    }

    fn example(rel: &str) -> (PathBuf, String) {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        (p, text)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Random bytes never panic the loader; they are an error or (rarely) valid.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let (p, _) = example("examples/coffee/cardform.yaml");
            let loaded = load_bytes(vec![(p, bytes)], &LoadOptions::default());
            proptest::prop_assert!(loaded.desired.is_some() || loaded.diagnostics.has_errors());
        }

        /// Mutated examples (bytes flipped, cut, duplicated) never panic, and every
        /// diagnostic points inside the file.
        #[test]
        fn mutated_examples_never_panic(
            which in 0usize..4,
            edits in proptest::collection::vec((0usize..100_000, 0u8..4, proptest::prelude::any::<u8>()), 1..6),
        ) {
            let rel = ["examples/coffee/cardform.yaml", "examples/isv/defaults.yaml", "examples/isv/merchants.yaml", "examples/isv/gateway.yaml"][which];
            let (p, text) = example(rel);
            let mut bytes = text.into_bytes();
            for (pos, op, b) in edits {
                let i = pos % (bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] = b,
                    1 => bytes.insert(i, b),
                    2 if i < bytes.len() => { bytes.remove(i); }
                    _ => { let tail = bytes[i..].to_vec(); bytes.extend_from_slice(&tail[..tail.len().min(64)]); }
                }
            }
            let lines = bytes.split(|b| *b == b'\n').count();
            let loaded = load_bytes(vec![(p, bytes)], &LoadOptions::default());
            for d in &loaded.diagnostics.0 {
                proptest::prop_assert!(d.line >= 1 && d.line <= lines + 1, "line {} of {}: {}", d.line, lines, d.message);
            }
        }
    }
}
