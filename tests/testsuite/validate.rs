//! `cardform validate`: the examples pass; every kind of mistake is reported
//! with its message and `file:line:col`.

use std::path::Path;

use crate::support::*;

#[test]
fn examples_validate() {
    for ex in ["examples/coffee", "examples/isv"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(ex);
        run(cardform().arg("validate").arg(&dir))
            .ok()
            .stdout_has("is valid");
    }
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let r = run(cardform().arg("schema")).ok();
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/cardform.schema.json"),
    )
    .unwrap();
    assert_eq!(r.stdout, committed);
}

const BASE: &str = r#"merchants:
  brew:
    images:
      logo: { file: logo.png, role: logo }
      bg: { file: bg.png, role: background }
    templates:
      club:
        card_number: { prefix: BREW, suffix_length: 12 }
        write_off: qrcode
        style:
          name: Brew Club
          logo: logo
          background: bg
        form:
          required: [mobile]
        activation_url:
          callback: https://brew.example.com/cb
"#;

fn project() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write_png(&tmp.path().join("logo.png"), 500, 500, 1);
    write_png(&tmp.path().join("bg.png"), 1020, 643, 2);
    write_png(&tmp.path().join("small.png"), 100, 100, 3);
    write_png(&tmp.path().join("huge.png"), 5200, 3278, 4);
    std::fs::write(
        tmp.path().join("fake.png"),
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
    )
    .unwrap();
    tmp
}

/// (case, files as (name, text), expected message, expected file:line:col)
type Case = (
    &'static str,
    Vec<(&'static str, String)>,
    &'static str,
    &'static str,
);

fn cases() -> Vec<Case> {
    let one = |text: String| vec![("cardform.yaml", text)];
    vec![
        (
            "unknown key with a suggestion",
            one(BASE.replace("          name: Brew Club", "          nmae: Brew Club")),
            "unknown key `nmae`",
            "cardform.yaml:11:11",
        ),
        (
            "wrong type",
            one(BASE.replace("suffix_length: 12", "suffix_length: twelve")),
            "\"twelve\" is not of type \"integer\"",
            "cardform.yaml:8:38",
        ),
        (
            "bad enum value",
            one(BASE.replace("write_off: qrcode", "write_off: qr")),
            "\"qr\" is not one of: qrcode",
            "cardform.yaml:9:9",
        ),
        (
            "malformed YAML",
            one(BASE.replace("      club:\n", "      club:\n    bad: [unclosed\n")),
            "invalid YAML",
            "cardform.yaml:",
        ),
        (
            "empty file",
            one("# nothing here\n".into()),
            "the file is empty",
            "cardform.yaml:1:1",
        ),
        (
            "binary junk",
            one("\u{0}\u{1}\u{2}garbage".into()),
            "binary, not YAML",
            "cardform.yaml:1:1",
        ),
        (
            "deep nesting",
            one(format!("merchants: {}{}", "[".repeat(200), "]".repeat(200))),
            "nesting is deeper than",
            "cardform.yaml:1:1",
        ),
        (
            "alias bomb",
            one({
                let mut s = String::from(
                    "a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n",
                );
                for i in 0..8 {
                    let prev = if i == 0 {
                        "a".to_string()
                    } else {
                        format!("l{}", i - 1)
                    };
                    s.push_str(&format!("l{i}: &l{i} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
                }
                s
            }),
            "expands to more than",
            "cardform.yaml:1:1",
        ),
        (
            "missing image file",
            one(BASE.replace("file: logo.png", "file: nope.png")),
            "cannot read",
            "cardform.yaml:4:15",
        ),
        (
            "image format not matching its name",
            one(BASE.replace("file: logo.png", "file: fake.png")),
            "is a GIF file but its name ends in `.png`",
            "cardform.yaml:4:15",
        ),
        (
            "wrong pixel size",
            one(BASE.replace("file: logo.png", "file: small.png")),
            "the logo image is 100x100 pixels; it must be 500x500",
            "cardform.yaml:4:15",
        ),
        (
            "too many bytes",
            one(BASE.replace("file: bg.png", "file: huge.png")),
            "at most 2097152 (2 MB)",
            "cardform.yaml:5:13",
        ),
        (
            "unknown image reference",
            one(BASE.replace("          background: bg\n", "          background: bgg\n")),
            "image `bgg` is not declared",
            "cardform.yaml:13:11",
        ),
        (
            "image with the wrong role",
            one(BASE.replace("          background: bg\n", "          background: logo\n")),
            "has role `logo`; this field needs an image with role `background`",
            "cardform.yaml:13:11",
        ),
        (
            "duplicate merchant across files",
            vec![("a.yaml", BASE.to_string()), ("b.yaml", BASE.to_string())],
            "`brew` is already defined in",
            "b.yaml:2:3",
        ),
        (
            "extends names nothing",
            one(BASE.replace("      club:\n", "      club:\n        extends: standrd\n")),
            "names no template in `defaults.templates`",
            "cardform.yaml:8:9",
        ),
        (
            "extends cycle",
            one(format!(
                "defaults:\n  templates:\n    a: {{ extends: b }}\n    b: {{ extends: a }}\n{BASE}"
            )),
            "`extends` forms a cycle",
            "cardform.yaml:3:10",
        ),
        (
            "tier without a level",
            one(BASE.replace(
                "        form:\n",
                "        tiers:\n          - level_name: Gold\n        form:\n",
            )),
            "a tier needs `level`",
            "cardform.yaml:15:13",
        ),
        (
            "duplicate tier level",
            one(BASE.replace(
                "        form:\n",
                "        tiers:\n          - level: gold\n          - level: gold\n        form:\n",
            )),
            "level `gold` appears twice",
            "cardform.yaml:16:13",
        ),
        (
            "form field both required and optional",
            one(BASE.replace(
                "required: [mobile]",
                "required: [mobile]\n          optional: [mobile]",
            )),
            "`mobile` is already required",
            "cardform.yaml:16:22",
        ),
        (
            "callback with a query string",
            one(BASE.replace("/cb", "/cb?x=1")),
            "must not carry a query string",
            "cardform.yaml:17:11",
        ),
        (
            "undefined variable",
            one(BASE.replace("name: Brew Club", "name: \"${var:brand} Club\"")),
            "variable `brand` is not set",
            "cardform.yaml:11:11",
        ),
        (
            "too many actions",
            one(BASE.replace(
                "        form:\n",
                &format!(
                    "        actions:\n{}        form:\n",
                    "          - { code: a, text: b, url: \"https://a.example\" }\n".repeat(4)
                ),
            )),
            "4 actions; a template may have at most 3",
            "cardform.yaml:14:9",
        ),
        (
            "card number prefix too long",
            one(BASE.replace("prefix: BREW", "prefix: BREWBREWBREW")),
            "is 12 characters; at most 10",
            "cardform.yaml:8:24",
        ),
        (
            "level field outside a tier",
            one(BASE.replace("        form:\n", "        level: gold\n        form:\n")),
            "belongs in a tier",
            "cardform.yaml:14:9",
        ),
        (
            "inline secret is refused",
            one(format!("gateway:\n  private_key: MIIEowIBAAKCAQEA\n{BASE}")),
            "`private_key` must say where the secret comes from, not hold it",
            "cardform.yaml:2:3",
        ),
        (
            "invalid name",
            one(BASE.replace("      club:", "      Club Card:")),
            "template name `Club Card` is not a valid name",
            "cardform.yaml:7:7",
        ),
    ]
}

#[test]
fn broken_manifests_are_reported_with_their_location() {
    let mut failures = Vec::new();
    for (name, files, message, location) in cases() {
        let tmp = project();
        for (f, text) in &files {
            std::fs::write(tmp.path().join(f), text).unwrap();
        }
        let r = run(cardform()
            .arg("validate")
            .arg(tmp.path())
            .args(["--format", "json"]));
        if r.code == 0 {
            failures.push(format!("{name}: validated"));
            continue;
        }
        let report = r.json();
        let diags = report["diagnostics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let found = diags.iter().any(|d| {
            let loc = format!(
                "{}:{}:{}",
                Path::new(d["file"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy(),
                d["line"],
                d["column"]
            );
            d["message"].as_str().unwrap_or("").contains(message) && loc.starts_with(location)
        });
        if !found {
            failures.push(format!(
                "{name}: expected {message:?} at {location}, got {}",
                serde_json::to_string_pretty(&diags).unwrap()
            ));
        }
        // The human form says the same, with the snippet.
        let h = run(cardform().arg("validate").arg(tmp.path()));
        if !h.stderr.contains(message) {
            failures.push(format!(
                "{name}: human output lacks {message:?}:\n{}",
                h.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_problem_is_listed_not_only_the_first() {
    let tmp = project();
    let text = BASE
        .replace("          name: Brew Club", "          nmae: Brew Club")
        .replace("write_off: qrcode", "write_off: qr");
    std::fs::write(tmp.path().join("cardform.yaml"), text).unwrap();
    let r = run(cardform()
        .arg("validate")
        .arg(tmp.path())
        .args(["--format", "json"]))
    .fails();
    assert_eq!(
        r.json()["diagnostics"].as_array().unwrap().len(),
        2,
        "{}",
        r.stdout
    );
    let h = run(cardform().arg("validate").arg(tmp.path()))
        .fails()
        .stderr_has("did you mean `name`?")
        .stderr_has("  --> ")
        .stderr_has("write_off: qr");
    assert!(h.stderr.contains("2 error(s)"));
}

#[test]
fn the_readme_manifest_example_validates() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("```yaml\n")
        .expect("a yaml example in the README")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("images")).unwrap();
    write_png(&tmp.path().join("images/logo.png"), 500, 500, 1);
    write_png(&tmp.path().join("images/background.png"), 1020, 643, 2);
    write_png(&tmp.path().join("images/background-gold.png"), 1020, 643, 3);
    std::fs::write(tmp.path().join("cardform.yaml"), &readme[start..end]).unwrap();
    let r = run(cardform().arg("validate").arg(tmp.path()));
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// One `--format` for every command that prints a report: `--json` is its
/// short form, and a format a command has no view for is refused before any
/// work, saying which it takes.
#[test]
fn one_format_flag_and_json_as_its_alias() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coffee");
    let a = run(cardform()
        .arg("validate")
        .arg(&dir)
        .args(["--format", "json"]))
    .ok();
    let b = run(cardform().arg("validate").arg(&dir).arg("--json")).ok();
    assert_eq!(a.json()["valid"], true);
    assert_eq!(a.stdout, b.stdout);
    let r = run(cardform()
        .arg("validate")
        .arg(&dir)
        .args(["--format", "markdown"]))
    .fails();
    assert!(
        r.stderr
            .contains("`cardform validate` does not print markdown")
            && r.stderr.contains("--format takes human or json here"),
        "{}",
        r.stderr
    );
    let tmp = tempfile::tempdir().unwrap();
    let r = run(cardform()
        .current_dir(tmp.path())
        .arg("apply")
        .arg(&dir)
        .args(["--format", "markdown"]))
    .fails();
    assert!(
        r.stderr
            .contains("`cardform apply` does not print markdown"),
        "{}",
        r.stderr
    );
    assert!(
        !tmp.path().join("state").exists(),
        "a refused format touched the state"
    );
}
