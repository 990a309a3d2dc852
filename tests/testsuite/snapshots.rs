//! Snapshots of what people read: plans in all three formats, apply's
//! report, every class of manifest diagnostic, and `--help` of each command.
//! Temp paths, generated ids, times and ports are filtered out. A change to
//! any of these texts shows as a snapshot diff to review
//! (`INSTA_UPDATE=always cargo test` rewrites them).

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// Filters for what differs from run to run.
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"/tmp/\.tmp[A-Za-z0-9]+", "[TMP]"),
        (r"\b20\d{30}\b", "[TEMPLATE_ID]"),
        (
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
            "[UUID]",
        ),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]"),
        (
            r"\(\d+ gateway calls, (\d+) retries, \d+\.\ds\)",
            "([N] gateway calls, $1 retries, [T]s)",
        ),
        (r#""elapsed_ms": \d+"#, r#""elapsed_ms": [MS]"#),
        (r#""calls": \d+"#, r#""calls": [N]"#),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
        (r"image_id=[A-Za-z0-9]+", "image_id=[IMAGE_ID]"),
        (
            r#""image_id": "[A-Za-z0-9]+""#,
            r#""image_id": "[IMAGE_ID]""#,
        ),
        (r#""image_url": "[^"]+""#, r#""image_url": "[IMAGE_URL]""#),
    ]
}

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({
            filters => filters(),
            snapshot_path => "snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

struct Proj {
    tmp: tempfile::TempDir,
}

impl Proj {
    fn coffee() -> Proj {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coffee"),
            &tmp.path().join("coffee"),
        );
        Proj { tmp }
    }
    fn cmd(&self) -> Command {
        let mut c = cardform();
        c.current_dir(self.tmp.path());
        c
    }
    fn edit(&self, from: &str, to: &str) {
        let p = self.tmp.path().join("coffee/cardform.yaml");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }
}

#[test]
fn plans_in_three_formats() {
    let p = Proj::coffee();
    snap!(
        "plan_create_human",
        run(p.cmd().args(["plan", "coffee"])).ok().stdout
    );
    snap!(
        "plan_create_markdown",
        run(p.cmd().args(["plan", "coffee", "--format", "markdown"]))
            .ok()
            .stdout
    );
    run(p.cmd().args(["apply", "coffee", "--auto-approve"])).ok();
    // An update, a replace (with its activation URL), a retire.
    p.edit("name: Brew Club\n", "name: Brew Rewards\n");
    p.edit("suffix_length: 12", "suffix_length: 14");
    p.edit(
        "          - level: platinum\n",
        "          - level: diamond\n",
    );
    snap!(
        "plan_changes_human",
        run(p.cmd().args(["plan", "coffee"])).ok().stdout
    );
    snap!(
        "plan_changes_json",
        run(p.cmd().args(["plan", "coffee", "--format", "json"]))
            .ok()
            .stdout
    );
    snap!(
        "plan_changes_markdown",
        run(p.cmd().args(["plan", "coffee", "--format", "markdown"]))
            .ok()
            .stdout
    );
}

#[test]
fn apply_reports() {
    let p = Proj::coffee();
    let r = run(p.cmd().args(["apply", "coffee", "--auto-approve"])).ok();
    // Lines finish in any order; the report and its summary are fixed.
    let mut lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains(" complete"))
        .collect();
    lines.sort();
    snap!("apply_create_lines", lines.join("\n"));
    snap!(
        "apply_create_report",
        r.stderr[r.stderr.find("\nApply ").unwrap()..].to_string()
    );
    p.edit(
        "          - level: platinum\n",
        "          - level: diamond\n",
    );
    let r = run(p.cmd().args([
        "apply",
        "coffee",
        "--auto-approve",
        "--allow-retire",
        "--json",
    ]))
    .ok();
    let mut report = r.json();
    report["results"]
        .as_array_mut()
        .unwrap()
        .sort_by_key(|l| l["address"].as_str().unwrap().to_string());
    snap!(
        "apply_retire_json",
        serde_json::to_string_pretty(&report).unwrap()
    );
    snap!(
        "apply_retire_report",
        r.stderr[r.stderr.find("\nRetired ").unwrap()..].to_string()
    );
}

/// A manifest with one mistake of each class a schema check finds, and one
/// with each class lowering finds (lowering runs once the schema passes).
#[test]
fn diagnostics_of_every_class() {
    let p = Proj::coffee();
    p.edit(
        "gateway:\n",
        "gateway:\n  private_key: \"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\"\n  sign_typ: RSA2\n",
    );
    p.edit("write_off: qrcode", "write_off: qrcod");
    p.edit("suffix_length: 12", "suffix_length: twelve");
    let r = run(p.cmd().args(["validate", "coffee"])).fails();
    snap!("diagnostics_schema_human", r.stderr);
    let r = run(p.cmd().args(["validate", "coffee", "--format", "json"])).fails();
    snap!("diagnostics_schema_json", r.stdout);

    let p = Proj::coffee();
    p.edit("logo: logo\n", "logo: lgo\n");
    p.edit("\"rgb(55,112,179)\"", "brown");
    p.edit("images/background-silver.png", "images/missing.png");
    p.edit("name: Brew Club\n", "name: \"${var:brnd} Club\"\n");
    p.edit("          - level: gold", "          - level: Gold Tier");
    let r = run(p.cmd().args(["validate", "coffee"])).fails();
    snap!("diagnostics_semantic_human", r.stderr);
    let r = run(p.cmd().args(["plan", "coffee"])).fails();
    snap!("diagnostics_semantic_plan", r.stderr);
}

#[test]
fn help_of_every_command() {
    for args in [
        vec!["--help"],
        vec!["validate", "--help"],
        vec!["plan", "--help"],
        vec!["apply", "--help"],
        vec!["output", "--help"],
        vec!["state", "--help"],
        vec!["state", "rebind", "--help"],
        vec!["schema", "--help"],
        vec!["api", "--help"],
        vec!["sandbox", "serve", "--help"],
        vec!["sandbox", "issue-cert", "--help"],
        vec!["keys", "generate", "--help"],
        vec!["bench", "--help"],
    ] {
        let r = run(cardform().args(&args)).ok();
        let name = format!("help_{}", args[..args.len() - 1].join("_"));
        let name = if name == "help_" { "help".into() } else { name };
        snap!(name, r.stdout);
    }
}
