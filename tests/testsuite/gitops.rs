//! The GitOps kit (`examples/gitops/`), run the way its pipelines run it:
//! `cardform-ci.sh plan` on branches, `cardform-ci.sh apply` of the reviewed
//! plan after each merge on another runner, two merges racing, a pipeline
//! with nothing to change; against a sandbox process and a real PostgreSQL
//! state. The workflow files are checked to call these steps as tested.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;

fn kit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gitops")
}

/// One CI runner's checkout: `cards/` holds the manifests at some commit.
struct Checkout {
    dir: PathBuf,
}

impl Checkout {
    fn of(root: &Path, name: &str, manifests: &Path) -> Checkout {
        let dir = root.join(name);
        copy_dir(manifests, &dir.join("cards"));
        Checkout { dir }
    }

    fn edit(&self, from: &str, to: &str) {
        let p = self.dir.join("cards/cardform.yaml");
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    /// `bash cardform-ci.sh STEP cards OUT` in this checkout, as a pipeline
    /// job runs it (the secrets in its environment).
    fn step(&self, sb: &Sandbox, state: &str, step: &str, out: &Path) -> Command {
        let mut c = Command::new("bash");
        c.current_dir(&self.dir)
            .arg(kit().join("cardform-ci.sh"))
            .args([step, "cards"])
            .arg(out)
            .env("CARDFORM", bin())
            .env("CARDFORM_STATE", state)
            .env("CARDFORM_ENDPOINT", &sb.url)
            .env("CARDFORM_APP_ID", APP_ID)
            .env("CARDFORM_PRIVATE_KEY", data("keys/app_a_private_pkcs1.txt"))
            .env("CARDFORM_ALIPAY_PUBLIC_KEY", sb.platform_key())
            .env("NO_COLOR", "1");
        c
    }
}

fn changes(out: &Path) -> String {
    std::fs::read_to_string(out.join("changes"))
        .unwrap()
        .trim()
        .to_string()
}

/// The artifact, downloaded by a later job on another runner.
fn download(from: &Path, to: &Path) -> PathBuf {
    copy_dir(from, to);
    to.to_path_buf()
}

#[test]
fn plan_on_branches_apply_reviewed_plans_on_merge_and_racing_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let state = cluster().url("gitops");
    let sb = Sandbox::start(&root.join("sb"), &["--latency", "100ms"]);
    let coffee = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coffee");

    // The first merge of the manifests: planned on its branch, applied on main.
    let first = Checkout::of(root, "pr0", &coffee);
    let out0 = root.join("artifacts/pr0");
    run(&mut first.step(&sb, &state, "plan", &out0)).ok();
    assert_eq!(changes(&out0), "yes");
    let comment = std::fs::read_to_string(out0.join("comment.md")).unwrap();
    assert!(comment.starts_with("<!-- cardform-plan -->\n"), "{comment}");
    assert!(comment.len() <= 60_000 + 40, "{}", comment.len());
    assert!(comment.contains("14 to create"), "{comment}");
    // The card previews travel with the plan: links relative to the artifact.
    assert!(
        comment.contains("![new card](previews/brew/club.gold.after.png)"),
        "{comment}"
    );
    assert!(out0.join("previews/brew/club.gold.after.png").is_file());
    assert!(
        std::fs::read_to_string(out0.join("plan.md"))
            .unwrap()
            .contains("14 to create")
    );
    let main0 = Checkout::of(root, "main0", &first.dir.join("cards"));
    let r = run(&mut main0.step(
        &sb,
        &state,
        "apply",
        &download(&out0, &root.join("runner/pr0")),
    ));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    // Two pull requests, both planned against that state.
    let a = Checkout::of(root, "pr-a", &main0.dir.join("cards"));
    a.edit("name: Brew Club", "name: Brew Club A");
    let out_a = root.join("artifacts/pr-a");
    run(&mut a.step(&sb, &state, "plan", &out_a)).ok();
    let b = Checkout::of(root, "pr-b", &main0.dir.join("cards"));
    b.edit("brand_name: Brew Coffee", "brand_name: Brew Coffee B");
    let out_b = root.join("artifacts/pr-b");
    run(&mut b.step(&sb, &state, "plan", &out_b)).ok();
    assert_eq!(
        (changes(&out_a), changes(&out_b)),
        ("yes".into(), "yes".into())
    );

    // Both merge; their apply jobs start at once on two runners. One applies;
    // the other waits for the lock, then finds its reviewed plan stale.
    let main_a = Checkout::of(root, "main-a", &a.dir.join("cards"));
    let main_ab = Checkout::of(root, "main-ab", &main_a.dir.join("cards"));
    main_ab.edit("brand_name: Brew Coffee", "brand_name: Brew Coffee B");
    let job_a = main_a
        .step(
            &sb,
            &state,
            "apply",
            &download(&out_a, &root.join("runner/a")),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let job_b = main_ab
        .step(
            &sb,
            &state,
            "apply",
            &download(&out_b, &root.join("runner/b")),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ra, rb) = (
        Run::from(job_a.wait_with_output().unwrap()),
        Run::from(job_b.wait_with_output().unwrap()),
    );
    assert_eq!(ra.code, 0, "{}{}", ra.stdout, ra.stderr);
    assert_ne!(rb.code, 0, "{}{}", rb.stdout, rb.stderr);
    assert!(
        rb.stderr.contains("the saved plan is stale"),
        "{}",
        rb.stderr
    );

    // The refused merge's pipeline runs again on main: plan, then apply.
    let out_ab = root.join("artifacts/main-ab");
    run(&mut main_ab.step(&sb, &state, "plan", &out_ab)).ok();
    assert_eq!(changes(&out_ab), "yes");
    let r = run(&mut main_ab.step(
        &sb,
        &state,
        "apply",
        &download(&out_ab, &root.join("runner/ab")),
    ));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);

    // A pipeline with nothing to change skips the apply.
    let out_none = root.join("artifacts/none");
    run(&mut main_ab.step(&sb, &state, "plan", &out_none)).ok();
    assert_eq!(changes(&out_none), "no");
    let r = run(&mut main_ab.step(&sb, &state, "apply", &out_none)).ok();
    assert!(r.stdout.contains("nothing to apply"), "{}", r.stdout);

    // Every edit is at the gateway, and nothing was created twice.
    let check = run(Command::new(bin())
        .env("CARDFORM_ENDPOINT", &sb.url)
        .env("CARDFORM_APP_ID", APP_ID)
        .env("CARDFORM_PRIVATE_KEY", data("keys/app_a_private_pkcs1.txt"))
        .env("CARDFORM_ALIPAY_PUBLIC_KEY", sb.platform_key())
        .args([
            "api",
            "alipay.marketing.card.template.batchquery",
            "--biz-content",
            r#"{"page_no":1,"page_size":20}"#,
        ]))
    .ok()
    .json();
    assert_eq!(check["template_total"], 3, "{check}");
}

#[test]
fn the_workflow_files_run_the_tested_steps() {
    let read = |p: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(kit().join(p)).unwrap();
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let gh = read("github/cardform.yml");
    let text = |v: &serde_json::Value| v.to_string();
    assert_eq!(
        gh["jobs"]["apply"]["concurrency"]["cancel-in-progress"],
        false
    );
    assert!(gh["jobs"]["apply"]["concurrency"]["group"].is_string());
    assert!(text(&gh["jobs"]["plan"]["steps"]).contains("cardform-ci.sh plan cards out"));
    assert!(text(&gh["jobs"]["plan"]["steps"]).contains("upload-artifact"));
    assert!(text(&gh["jobs"]["plan"]["steps"]).contains("<!-- cardform-plan -->"));
    assert!(text(&gh["jobs"]["apply"]["steps"]).contains("cardform-ci.sh apply cards out"));
    assert!(text(&gh["env"]).contains("secrets.CARDFORM_STATE_URL"));
    let gl = read("gitlab/gitlab-ci.yml");
    assert!(gl["cardform-apply"]["resource_group"].is_string());
    assert!(text(&gl["cardform-plan"]["script"]).contains("cardform-ci.sh plan cards out"));
    assert!(text(&gl["cardform-plan"]["script"]).contains("<!-- cardform-plan -->"));
    assert!(text(&gl["cardform-apply"]["script"]).contains("cardform-ci.sh apply cards out"));
    assert_eq!(gl["cardform-plan"]["artifacts"]["paths"][0], "out/");
}
