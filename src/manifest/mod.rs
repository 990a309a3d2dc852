//! Manifests: raw YAML types ([`raw`]), safe reading with source positions
//! ([`source`]), JSON Schema checking, and lowering to [`crate::model::Desired`]
//! with located diagnostics ([`lower`], [`diag`]).
//!
//! `load` does the I/O (files, image headers and hashes, environment lookups
//! through the function it is handed); lowering itself is pure.

pub mod diag;
pub mod lower;
pub mod raw;
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
    let meta = std::fs::metadata(path).map_err(|e| at(format!("cannot read the project: {e}")))?;
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
    finish(sources, diags, files, opts)
}

/// Load files already in memory (paths still locate images and messages).
pub fn load_bytes(inputs: Vec<(PathBuf, Vec<u8>)>, opts: &LoadOptions) -> Loaded {
    let mut sources = Vec::new();
    let mut diags = Diagnostics::default();
    let files = inputs.iter().map(|(p, _)| p.clone()).collect();
    for (path, bytes) in inputs {
        match source::parse(&path, bytes) {
            Ok(v) => sources.push(v),
            Err(d) => diags.push(d),
        }
    }
    finish(sources, diags, files, opts)
}

fn finish(
    sources: Vec<(SourceFile, serde_yaml::Value)>,
    mut diags: Diagnostics,
    files: Vec<PathBuf>,
    opts: &LoadOptions,
) -> Loaded {
    let validator =
        jsonschema::validator_for(validator_schema()).expect("bug: the generated schema compiles");
    let mut parsed: Vec<(SourceFile, raw::Manifest)> = Vec::new();
    for (src, value) in sources {
        match check_schema(&validator, &src, &value) {
            Ok(manifest) => parsed.push((src, manifest)),
            Err(ds) => ds.into_iter().for_each(|d| diags.push(d)),
        }
    }
    let desired = if diags.has_errors() {
        None
    } else {
        let env = opts.env.unwrap_or(&|_: &str| None);
        lower::lower(&parsed, &opts.vars, env, &mut diags)
    };
    diags.sort();
    let desired = if diags.has_errors() { None } else { desired };
    Loaded {
        desired,
        diagnostics: diags,
        files,
    }
}

/// Every property name in the schema, for "did you mean".
fn vocabulary(schema: &serde_json::Value, out: &mut Vec<String>) {
    match schema {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::Object(props)) = m.get("properties") {
                out.extend(props.keys().cloned());
            }
            m.values().for_each(|v| vocabulary(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| vocabulary(v, out)),
        _ => {}
    }
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

fn check_schema(
    validator: &jsonschema::Validator,
    src: &SourceFile,
    value: &serde_yaml::Value,
) -> Result<raw::Manifest, Vec<Diagnostic>> {
    let json: serde_json::Value = match serde_json::to_value(value) {
        Ok(j) => j,
        Err(e) => {
            return Err(
                vec![src.diag("", format!("the YAML cannot be read as data: {e}")).with_hint(
                "mapping keys must be strings; numbers and other values are not allowed as keys",
            )],
            );
        }
    };
    if !json.is_object() {
        return Err(vec![src.diag(
            "",
            "the top level must be a mapping (gateway, variables, defaults, merchants)",
        )]);
    }
    let mut out = Vec::new();
    let mut words = Vec::new();
    vocabulary(validator_schema(), &mut words);
    for err in validator.iter_errors(&json) {
        let segs: Vec<String> = err
            .instance_path()
            .as_str()
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        let path = yaml_path(&segs);
        match err.kind() {
            jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                for key in unexpected {
                    let p = source::join(&path, key);
                    let mut d = src.diag(&p, format!("unknown key `{key}`"));
                    d.hint = diag::did_you_mean(key, words.iter().map(String::as_str));
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
    if !out.is_empty() {
        return Err(out);
    }
    serde_json::from_value(json).map_err(|e| vec![src.diag("", format!("{e}"))])
}

/// The schema once, for the vocabulary.
fn validator_schema() -> &'static serde_json::Value {
    static SCHEMA: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(schema)
}

/// Shorten jsonschema's messages, which repeat the whole offending value.
fn schema_message(msg: &str) -> String {
    if msg.len() > 300 {
        format!(
            "{}…",
            &msg[..msg
                .char_indices()
                .nth(300)
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
