//! Everyday paths, run the way a user runs them: relative paths, another
//! working directory, a terminal where it matters. Each test pins one finding
//! of the everyday-paths review.

use std::path::Path;
use std::process::Command;

use crate::support::*;

/// A work directory holding copies of examples; commands run inside it (or
/// below it) with relative paths, on the embedded sandbox under `state/`.
#[test]
fn a_saved_plan_applies_with_relative_paths_from_any_directory() {
    let w = Work::new();
    w.add("coffee", "proj");
    run(w.cmd().args(["apply", "proj", "--auto-approve"])).ok();
    w.edit(
        "proj/cardform.yaml",
        "name: Brew Club\n",
        "name: Brew Rewards\n",
    );
    // Exactly what plan says to run, with a relative -p.
    let r = run(w.cmd().args(["plan", "-p", "proj", "--out", "p.plan"]))
        .ok()
        .stdout_has("apply exactly it with `cardform apply p.plan`");
    assert!(r.stdout.contains("to update"), "{}", r.stdout);
    // From a directory below, with the state given relatively too.
    run(w
        .at("sub/deeper")
        .args(["--state", "../../state", "apply", "../../p.plan"]))
    .ok()
    .stderr_has("Modifications complete");
    run(w.cmd().args(["plan", "proj", "--detailed-exitcode"]))
        .ok()
        .stdout_has("No changes.");

    // A plan carried to another checkout (as a CI artifact applied by a later
    // job): the project is found beside the plan.
    w.edit(
        "proj/cardform.yaml",
        "name: Brew Rewards\n",
        "name: Brew Club\n",
    );
    run(w.cmd().args(["plan", "proj", "--out", "plans/p.plan"])).ok();
    let moved = w.tmp.path().join("checkout");
    std::fs::rename(w.dir(), &moved).unwrap();
    let r = run(cardform()
        .current_dir(&moved)
        .args(["apply", "plans/p.plan"]))
    .ok();
    assert!(r.stderr.contains("Modifications complete"), "{}", r.stderr);

    // issue 29: applied from another directory with no --state, the plan
    // finds the state it was made against (beside the project, as planned)
    // and never leaves an empty state where it ran.
    std::fs::rename(&moved, w.dir()).unwrap();
    w.edit(
        "proj/cardform.yaml",
        "name: Brew Club\n",
        "name: Brew Rewards\n",
    );
    run(w.cmd().args(["plan", "-p", "proj", "--out", "p.plan"])).ok();
    let elsewhere = w.dir().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let r = run(cardform()
        .current_dir(&elsewhere)
        .args(["apply", "../p.plan"]))
    .ok();
    assert!(r.stderr.contains("Modifications complete"), "{}", r.stderr);
    assert!(
        !elsewhere.join("state").exists(),
        "a state was made where it ran"
    );
    // A state named that is not there: refused, and not made.
    w.edit(
        "proj/cardform.yaml",
        "name: Brew Rewards\n",
        "name: Brew Club\n",
    );
    run(w.cmd().args(["plan", "-p", "proj", "--out", "p.plan"])).ok();
    let r = run(cardform().current_dir(&elsewhere).args([
        "--state",
        "nothing-here",
        "apply",
        "../p.plan",
    ]))
    .fails();
    assert!(
        r.stderr.contains("there is no state at `nothing-here`"),
        "{}",
        r.stderr
    );
    assert!(!elsewhere.join("nothing-here").exists());
}

#[test]
fn the_project_path_spelling_never_changes_identity() {
    let w = Work::new();
    let proj = w.add("coffee", "proj");
    run(w.cmd().args(["apply", "-p", "proj", "--auto-approve"])).ok();
    let before = w.export();
    let abs = proj.display().to_string();
    for (cwd, args) in [
        ("", vec!["plan", "-p", "./proj"]),
        ("", vec!["plan", "-p", &abs]),
        ("", vec!["plan", "proj/cardform.yaml"]),
        ("", vec!["plan", "proj/../proj/"]),
        ("proj", vec!["--state", "../state", "plan"]),
        ("elsewhere", vec!["--state", "../state", "plan", "../proj"]),
    ] {
        let r = run(w.at(cwd).args(&args).arg("--detailed-exitcode"));
        assert_eq!(r.code, 0, "{cwd} {args:?}:\n{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("No changes."), "{args:?}: {}", r.stdout);
    }
    // Applying under another spelling makes no call and changes nothing.
    run(w.cmd().args(["apply", "-p", &abs, "--auto-approve"]))
        .ok()
        .stdout_has("No changes.");
    assert_eq!(w.export()["meta"]["serial"], before["meta"]["serial"]);
    // Images are recorded relative to the project, never as spelled.
    let logo = &before["resources"]["merchant.brew/image.logo"]["attrs"];
    assert_eq!(logo["file"], "images/logo.png");
}

#[test]
fn a_new_image_updates_every_template_that_uses_it() {
    let w = Work::new();
    let proj = w.add("coffee", "proj");
    run(w.cmd().args(["apply", "proj", "--auto-approve"])).ok();
    let old_logo = w.export()["resources"]["merchant.brew/image.logo"]["ids"]["image_id"].clone();
    write_png(&proj.join("images/logo.png"), 500, 500, 77);
    let r = run(w.cmd().args(["plan", "proj"])).ok();
    assert!(
        r.stdout
            .contains("is uploaded anew: the template is updated to use the new image_id"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("Plan: 0 to create, 3 to update, 1 to replace, 0 to retire."),
        "{}",
        r.stdout
    );
    run(w.cmd().args(["apply", "proj", "--auto-approve"])).ok();
    let state = w.export();
    let new_logo = state["resources"]["merchant.brew/image.logo"]["ids"]["image_id"].clone();
    assert_ne!(new_logo, old_logo);
    // The gateway's templates use the new image, not only the state.
    for level in ["silver", "gold", "platinum"] {
        let tid = state["resources"][format!("merchant.brew/template.club.{level}")]["ids"]
            ["template_id"]
            .as_str()
            .unwrap()
            .to_string();
        let q = run(w.cmd().args([
            "api",
            "alipay.marketing.card.template.query",
            "--biz-content",
            &format!("{{\"template_id\":\"{tid}\"}}"),
        ]))
        .ok()
        .json();
        assert_eq!(
            q["template_style_info"]["logo_id"], new_logo,
            "{level}: {q}"
        );
    }
    run(w.cmd().args(["plan", "proj", "--detailed-exitcode"])).ok();
}

#[test]
fn one_state_belongs_to_one_project_both_ways() {
    for (first, second) in [("bakery", "coffee"), ("coffee", "bakery")] {
        let w = Work::new();
        w.add("isv", "bakery");
        w.add("coffee", "coffee");
        run(w.cmd().args(["apply", first, "--auto-approve"])).ok();
        let before = w.export();
        for cmd in [
            vec!["plan", second],
            vec!["apply", second, "--auto-approve", "--allow-retire"],
        ] {
            run(w.cmd().args(&cmd))
                .fails()
                .stderr_has(&format!(
                    "the state in `state` belongs to project `{first}`, not to `{second}`"
                ))
                .stderr_has("--state DIR");
        }
        assert_eq!(w.export()["resources"], before["resources"]);
        // Each project in its own state directory works.
        run(w
            .cmd()
            .args(["--state", "other", "apply", second, "--auto-approve"]))
        .ok();
        run(w.cmd().args(["plan", first, "--detailed-exitcode"])).ok();
    }
}

#[test]
fn a_renamed_project_is_rebound_deliberately() {
    let w = Work::new();
    w.add("coffee", "coffee");
    run(w.cmd().args(["apply", "coffee", "--auto-approve"])).ok();
    std::fs::rename(w.dir().join("coffee"), w.dir().join("brew")).unwrap();
    run(w.cmd().args(["plan", "brew"]))
        .fails()
        .stderr_has("belongs to project `coffee`, not to `brew`")
        .stderr_has("cardform state rebind");
    run(w.cmd().args(["state", "rebind", "brew"]))
        .ok()
        .stdout_has("it now belongs to project `brew`");
    run(w.cmd().args(["plan", "brew", "--detailed-exitcode"])).ok();
    // A `project:` name keeps the identity whatever the directory is called.
    w.edit("brew/cardform.yaml", "gateway:", "project: brew\ngateway:");
    std::fs::rename(w.dir().join("brew"), w.dir().join("checkout-1234")).unwrap();
    run(w
        .cmd()
        .args(["plan", "checkout-1234", "--detailed-exitcode"]))
    .ok();
}

#[test]
fn a_state_is_bound_to_its_gateway() {
    let w = Work::new();
    w.add("coffee", "proj");
    run(w.cmd().args(["apply", "proj", "--auto-approve"])).ok();
    let sb = Sandbox::start(&w.tmp.path().join("sandbox"), &[]);
    let at_sandbox = |c: &mut Command| {
        c.env("CARDFORM_ENDPOINT", &sb.url)
            .env("CARDFORM_APP_ID", APP_ID)
            .env("CARDFORM_PRIVATE_KEY", data("keys/app_a_private_pkcs1.txt"))
            .env("CARDFORM_ALIPAY_PUBLIC_KEY", sb.platform_key());
    };
    let mut c = w.cmd();
    at_sandbox(&mut c);
    run(c.args(["plan", "proj"]))
        .fails()
        .stderr_has(&format!(
            "was applied to gateway `sandbox` as app `9021000000000001`; this run points at gateway `127.0.0.1` as app `{APP_ID}`"
        ))
        .stderr_has("cardform state rebind");
    let mut c = w.cmd();
    at_sandbox(&mut c);
    run(c.args(["state", "rebind", "proj"])).ok();
    let binding = &w.export()["meta"]["binding"];
    assert_eq!(binding["gateway"], "127.0.0.1", "{binding}");
    assert_eq!(binding["app_id"], APP_ID, "{binding}");
}

#[test]
fn paths_are_positional_everywhere_and_exit_codes_are_terraforms() {
    let w = Work::new();
    w.add("coffee", "proj");
    run(w.cmd().args(["validate", "proj"])).ok();
    run(w.cmd().args(["validate", "-p", "proj"])).ok();
    run(w.cmd().args(["plan", "proj"])).ok();
    let r = run(w.cmd().args(["plan", "proj", "--detailed-exitcode"]));
    assert_eq!(r.code, 2, "changes present: {}", r.stderr);
    run(w.cmd().args(["apply", "proj", "--auto-approve"])).ok();
    run(w.cmd().args(["apply", "proj", "-p", "proj"]))
        .fails()
        .stderr_has("the project is given twice");
    // Usage errors exit 1, never 2 (2 means only "changes present").
    for args in [
        vec!["plan", "--detailed-exitcode", "--formt", "json"],
        vec!["plan", "a", "-p", "b"],
        vec!["frobnicate"],
        vec!["apply", "--parallelism", "many"],
    ] {
        let r = run(w.cmd().args(&args));
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
    }
    let r = run(w.cmd().args(["plan", "--help"]));
    assert_eq!(r.code, 0);
    // A directory is a project, not an unreadable saved plan.
    let r = run(w.cmd().args(["apply", "nothing-here.plan"])).fails();
    assert!(
        r.stderr.contains("cannot read the saved plan"),
        "{}",
        r.stderr
    );
}

#[test]
fn apply_json_prints_exactly_one_document() {
    let w = Work::new();
    w.add("coffee", "proj");
    let r = run(w.cmd().args(["apply", "proj", "--auto-approve", "--json"])).ok();
    let report = r.json();
    assert_eq!(report["results"].as_array().unwrap().len(), 14, "{report}");
    assert!(
        r.stderr.contains("will be created"),
        "the plan goes to stderr"
    );
    let r = run(w.cmd().args(["apply", "proj", "--auto-approve", "--json"])).ok();
    assert_eq!(r.json()["results"], serde_json::json!([]));
}

#[test]
fn inline_secrets_are_never_echoed() {
    let w = Work::new();
    let proj = w.add("coffee", "proj");
    let key = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj";
    let token = "202511BBsecrettoken0123456789";
    let aes = "aYA0GP8JEW+D7/UFaskCWA==";
    w.edit(
        "proj/cardform.yaml",
        "gateway:\n",
        &format!(
            "gateway:\n  private_key: \"{key}\"\n  alipay_public_key: {{ value: \"{key}\" }}\n  encrypt_key: \"{aes}\"\n"
        ),
    );
    w.edit(
        "proj/cardform.yaml",
        "  brew:\n",
        &format!("  brew:\n    app_auth_token: {token}\n"),
    );
    assert!(
        std::fs::read_to_string(proj.join("cardform.yaml"))
            .unwrap()
            .contains(token)
    );
    for args in [
        vec!["validate", "proj"],
        vec!["validate", "proj", "--format", "json"],
        vec!["plan", "proj"],
        vec!["plan", "proj", "--format", "json"],
        vec!["apply", "proj", "--auto-approve"],
    ] {
        let r = run(w.cmd().args(&args)).fails();
        let all = format!("{}{}", r.stdout, r.stderr);
        for secret in [key, &key[..20], token, aes] {
            assert!(!all.contains(secret), "{args:?} echoed a secret:\n{all}");
        }
        for field in [
            "private_key",
            "alipay_public_key",
            "app_auth_token",
            "encrypt_key",
        ] {
            assert!(
                all.contains(&format!("`{field}` must say where the secret comes from")),
                "{args:?}: {all}"
            );
        }
        assert!(
            all.contains("{ file: path }") && all.contains("{ env: NAME }"),
            "{all}"
        );
        assert!(!all.contains("did you mean `value`"), "{all}");
    }
}

/// Locations (`line:col`) and messages of the errors `validate` reports.
fn errors(w: &Work, project: &str) -> Vec<(String, String)> {
    let r = run(w.cmd().args(["validate", project, "--format", "json"])).fails();
    r.json()["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .map(|d| {
            (
                format!("{}:{}", d["line"], d["column"]),
                d["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn each_mistake_is_reported_once_at_its_own_line() {
    let w = Work::new();
    let proj = w.add("coffee", "proj");
    // A logo of the wrong size, a missing background: one error each, none
    // at the templates and tiers that use them.
    std::fs::copy(
        proj.join("images/background-gold.png"),
        proj.join("images/logo.png"),
    )
    .unwrap();
    w.edit(
        "proj/cardform.yaml",
        "images/background-silver.png",
        "images/missing.png",
    );
    let e = errors(&w, "proj");
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].1.contains("the logo image is 1020x643 pixels"),
        "{e:#?}"
    );
    assert!(e[1].1.contains("missing.png"), "{e:#?}");

    // A typo in the template that three tiers share: once, at the typo.
    let w = Work::new();
    w.add("coffee", "proj");
    w.edit("proj/cardform.yaml", "logo: logo\n", "logo: lgo\n");
    let e = errors(&w, "proj");
    assert_eq!(
        e,
        [(
            "26:11".to_string(),
            "image `lgo` is not declared for this merchant".to_string()
        )]
    );
    // The same typo in a shared default: once, in the defaults file, for
    // every merchant that extends it.
    let w = Work::new();
    w.add("isv", "isv");
    w.edit("isv/defaults.yaml", "logo: logo\n", "logo: lgo\n");
    let e = errors(&w, "isv");
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].0.starts_with("17:"), "{e:#?}");
}

#[test]
fn colours_are_checked_as_the_gateway_documents_them() {
    for colour in ["brown", "\"#7a4a1e\"", "\"rgb(300,0,0)\""] {
        let w = Work::new();
        w.add("coffee", "proj");
        w.edit("proj/cardform.yaml", "\"rgb(55,112,179)\"", colour);
        let e = errors(&w, "proj");
        assert_eq!(e.len(), 1, "{colour}: {e:#?}");
        assert!(e[0].1.contains("write `rgb(r,g,b)`"), "{e:#?}");
    }
}

#[test]
fn the_markdown_plan_warns_keeps_indentation_and_fits_a_comment() {
    let w = Work::new();
    w.add("coffee", "proj");
    run(w.cmd().args(["apply", "proj", "--auto-approve"])).ok();
    w.edit(
        "proj/cardform.yaml",
        "name: Brew Club\n",
        "name: Brew Rewards\n",
    );
    w.edit(
        "proj/cardform.yaml",
        "          - level: platinum\n",
        "          - level: diamond\n",
    );
    let md = run(w.cmd().args(["plan", "proj", "--format", "markdown"]))
        .ok()
        .stdout;
    assert!(
        md.contains("> [!WARNING]\n> WARNING: 3 resource(s) will be RETIRED"),
        "{md}"
    );
    assert!(
        md.contains("> - `merchant.brew/template.club.platinum`"),
        "{md}"
    );
    // Context lines keep the JSON's indentation after the sign column.
    assert!(
        md.contains("\n-     \"name\": \"Brew Club\",\n+     \"name\": \"Brew Rewards\",\n      \"logo\": \"merchant.brew/image.logo\",\n"),
        "{md}"
    );

    // A large plan stays under the budget and says what it left out.
    let big = w.tmp.path().join("big");
    cardform::bench::generate(&big, 400, 5).unwrap();
    let md = run(cardform().current_dir(w.tmp.path()).args([
        "--state",
        "big-state",
        "plan",
        "big",
        "--format",
        "markdown",
    ]))
    .ok()
    .stdout;
    assert!(md.len() <= 60_000, "{} bytes", md.len());
    assert!(md.contains("| merchant | create |"), "{md}");
    let small = run(cardform().current_dir(w.tmp.path()).args([
        "--state",
        "big-state",
        "plan",
        "big",
        "--format",
        "markdown",
        "--max-bytes",
        "5000",
    ]))
    .ok()
    .stdout;
    assert!(small.len() <= 5000, "{} bytes", small.len());
    assert!(
        small.contains("Left out to stay under 5000 bytes"),
        "{small}"
    );
    assert!(small.contains("merchants' rows"), "{small}");
}

#[test]
fn output_qr_says_which_files_it_wrote() {
    let w = Work::new();
    w.add("coffee", "proj");
    run(w.cmd().args(["apply", "proj", "--auto-approve"])).ok();
    let r = run(w.cmd().args(["output", "--qr", "qr"])).ok();
    for level in ["silver", "gold", "platinum"] {
        let file = format!("qr/brew-club.{level}.png");
        assert!(r.stderr.contains(&format!("wrote {file}")), "{}", r.stderr);
        assert!(w.dir().join(&file).is_file());
    }
    assert!(
        r.stderr.contains("Wrote 3 QR code(s) to qr."),
        "{}",
        r.stderr
    );
}

/// Reading commands run from another directory find no state: they say so
/// and create none, rather than print an empty state.
#[test]
fn reading_a_state_that_is_not_there_says_so() {
    let w = Work::new();
    w.add("coffee", "proj");
    run(w.cmd().args(["apply", "proj", "--auto-approve"])).ok();
    for args in [&["output"][..], &["state", "list"], &["state", "export"]] {
        let r = run(w.at("elsewhere").args(args));
        assert_eq!(r.code, 1, "{args:?}: {}", r.stdout);
        assert!(
            r.stderr.contains("there is no state at `state`")
                && r.stderr.contains("--state or CARDFORM_STATE"),
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    assert!(!w.dir().join("elsewhere/state").exists(), "none created");
    // Named, it is read from anywhere.
    let r = run(w.at("elsewhere").args(["output", "--state", "../state"])).ok();
    assert!(r.stdout.contains("merchant.brew"), "{}", r.stdout);
}

#[test]
fn every_manifest_in_the_readme_applies_on_the_embedded_sandbox() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```yaml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .collect();
    assert!(!blocks.is_empty());
    let shipped = std::fs::read_to_string(root.join("examples/readme/cardform.yaml")).unwrap();
    assert_eq!(
        blocks[0], shipped,
        "examples/readme/cardform.yaml is the README's example"
    );
    for block in blocks {
        let w = Work::new();
        let proj = w.add("readme", "proj");
        std::fs::write(proj.join("cardform.yaml"), block).unwrap();
        // As the README says: the token from the environment.
        run(w.cmd().env("BREW_APP_AUTH_TOKEN", "demo-token").args([
            "apply",
            "proj",
            "--auto-approve",
        ]))
        .ok();
        run(w.cmd().env("BREW_APP_AUTH_TOKEN", "demo-token").args([
            "plan",
            "proj",
            "--detailed-exitcode",
        ]))
        .ok();
    }
}

#[test]
fn a_generated_key_pair_registers_with_sandbox_serve() {
    let tmp = tempfile::tempdir().unwrap();
    run(cardform()
        .current_dir(tmp.path())
        .args(["keys", "generate", "--out", "keys"]))
    .ok()
    .stdout_has("keys/app_public.txt");
    run(cardform()
        .current_dir(tmp.path())
        .args(["keys", "generate", "--out", "keys"]))
    .fails()
    .stderr_has("refusing to overwrite a private key");
    let mut child = cardform()
        .args(["sandbox", "serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(tmp.path().join("data"))
        .arg("--app")
        .arg(format!(
            "2021000000000042={}",
            tmp.path().join("keys/app_public.txt").display()
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let url = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("sandbox listening on ")
        .unwrap()
        .to_string();
    let r = run(cardform()
        .env("CARDFORM_ENDPOINT", &url)
        .env("CARDFORM_APP_ID", "2021000000000042")
        .env(
            "CARDFORM_PRIVATE_KEY",
            tmp.path().join("keys/app_private.pem"),
        )
        .env(
            "CARDFORM_ALIPAY_PUBLIC_KEY",
            tmp.path().join("data/platform_public.pem"),
        )
        .args([
            "api",
            "alipay.marketing.card.template.batchquery",
            "--biz-content",
            "{\"page_no\":1,\"page_size\":20}",
        ]));
    let _ = child.kill();
    let _ = child.wait();
    r.ok();
}

/// Run `args` in a pseudo-terminal (util-linux `script`), feeding `input`.
fn in_terminal(w: &Work, args: &str, input: &str, env: &[(&str, &str)]) -> String {
    let mut c = Command::new("script");
    c.current_dir(w.dir())
        .args(["-qec"])
        .arg(format!("{} {args}", bin().display()))
        .arg("/dev/null")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm");
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn in_a_terminal_apply_shows_the_diff_asks_loudly_and_prints_each_id_in_colour() {
    let w = Work::new();
    w.add("coffee", "proj");
    let screen = in_terminal(&w, "apply proj", "yes\n", &[]);
    assert!(screen.contains("will be created"), "{screen}");
    assert!(
        screen.contains("\"style\": {"),
        "the diff shows before the prompt: {screen}"
    );
    assert!(
        screen.contains("Do you want to perform these actions?"),
        "{screen}"
    );
    assert!(
        screen.contains("Creation complete") && screen.contains("[template_id="),
        "{screen}"
    );
    assert!(screen.contains("\u{1b}["), "colour on a terminal: {screen}");

    // Retiring: the prompt says how many, loudly.
    w.edit(
        "proj/cardform.yaml",
        "          - level: platinum\n",
        "          - level: diamond\n",
    );
    let screen = in_terminal(&w, "apply proj", "no\n", &[("NO_COLOR", "1")]);
    assert!(
        screen.contains("This plan RETIRES 3 resource(s)")
            && screen.contains("retiring 3 resource(s)? Only 'yes' is accepted"),
        "{screen}"
    );
    assert!(
        !screen.contains("\u{1b}[3"),
        "NO_COLOR is honoured: {screen:?}"
    );
    assert!(screen.contains("Apply cancelled"), "{screen}");
}

/// issue 29: missing credentials are found before anything runs. On the
/// embedded sandbox `validate` warns (the project stays valid); pointed at
/// a real gateway, `validate` fails and `plan` refuses before planning,
/// naming each secret and where it should come from, never a value.
#[test]
fn missing_credentials_are_named_by_validate_and_refused_by_plan() {
    let w = Work::new();
    w.add("isv", "isv");
    let r = run(w
        .cmd()
        .env_remove("TEA_APP_AUTH_TOKEN")
        .args(["validate", "isv"]))
    .ok();
    assert!(
        r.stderr.contains(
            "warning: the app_auth_token of merchant `tea`: environment variable `TEA_APP_AUTH_TOKEN` is not set"
        ),
        "{}",
        r.stderr
    );
    // A real gateway, the key file missing: validate fails, plan refuses.
    let real = |c: &mut Command| {
        c.env("CARDFORM_ENDPOINT", "https://openapi.alipay.com/gateway.do")
            .env("CARDFORM_APP_ID", "2021000000000042")
            .env("CARDFORM_PRIVATE_KEY", "keys/missing.pem")
            .env("CARDFORM_ALIPAY_PUBLIC_KEY", "keys/missing.pub");
    };
    let mut v = w.cmd();
    real(&mut v);
    let r = run(v.args(["validate", "isv"])).fails();
    assert!(
        r.stderr
            .contains("error: the app private key: file `keys/missing.pem` is not there"),
        "{}",
        r.stderr
    );
    let mut p = w.cmd();
    real(&mut p);
    let r = run(p.args(["plan", "isv"])).fails();
    assert!(
        r.stderr.contains(
            "cannot plan against gateway `openapi.alipay.com`: 2 secret(s) cannot be read"
        ),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("will perform"), "planned: {}", r.stdout);
}

/// issue 29: a mistyped project path says so, with the near name.
#[test]
fn a_mistyped_project_path_is_named_with_the_near_one() {
    let w = Work::new();
    w.add("coffee", "coffee");
    for args in [&["validate", "cofee"][..], &["plan", "-p", "cofee"]] {
        let r = run(w.cmd().args(args)).fails();
        assert!(
            r.stderr
                .contains("the project `cofee` does not exist (did you mean `coffee`?)"),
            "{}",
            r.stderr
        );
    }
}

/// issue 29: onboarding. `cardform init && cardform validate` works in an
/// empty directory (no warnings) and the project plans on the embedded
/// sandbox; completions for bash (checked by `bash -n`) and zsh; man pages.
#[test]
fn init_makes_a_project_that_validates_and_plans_and_completions_install() {
    let w = Work::new();
    let r = run(w.at("fresh").args(["init"])).ok();
    assert!(r.stdout.contains("wrote ./cardform.yaml"), "{}", r.stdout);
    let v = run(w.at("fresh").args(["validate"])).ok();
    assert!(v.stdout.contains("is valid"), "{}", v.stdout);
    assert!(!v.stderr.contains("warning"), "{}", v.stderr);
    let p = run(w.at("fresh").args(["plan"])).ok();
    assert!(p.stdout.contains("Plan: 6 to create"), "{}", p.stdout);
    // Never over an existing project.
    run(w.at("fresh").args(["init"]))
        .fails()
        .stderr_has("exists already");
    let bash = run(w.cmd().args(["completions", "bash"])).ok();
    assert!(bash.stdout.contains("_cardform()"), "{}", bash.stdout);
    let file = w.dir().join("cardform.bash");
    std::fs::write(&file, &bash.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let zsh = run(w.cmd().args(["completions", "zsh"])).ok();
    assert!(
        zsh.stdout.starts_with("#compdef cardform"),
        "{}",
        zsh.stdout
    );
    run(w.cmd().args(["man", "--out", "man"])).ok();
    assert!(w.dir().join("man/cardform.1").exists());
    assert!(w.dir().join("man/cardform-plan.1").exists());
}

/// issue 29: `apply --auto-approve` in a pipe (a pipeline's log) prints
/// what changes and the summary, not every diff; `--diff` brings them back.
#[test]
fn apply_in_a_pipe_prints_the_changes_not_every_diff() {
    let w = Work::new();
    w.add("coffee", "proj");
    let r = run(w.cmd().args(["apply", "proj", "--auto-approve"])).ok();
    assert!(
        r.stdout
            .contains("+ merchant.brew/template.club.gold  (not in state)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("Plan: 14 to create"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("\"card_type\""),
        "a diff in the pipe: {}",
        r.stdout
    );
    w.edit(
        "proj/cardform.yaml",
        "name: Brew Club\n",
        "name: Brew Rewards\n",
    );
    let r = run(w.cmd().args(["apply", "proj", "--auto-approve", "--diff"])).ok();
    assert!(
        r.stdout.contains("\"name\": \"Brew Rewards\""),
        "{}",
        r.stdout
    );
}

/// issue 29: merchants mixing with and without an app_auth_token are
/// warned about (those without share the app's own namespace).
#[test]
fn merchants_sharing_the_apps_namespace_are_warned_about() {
    let w = Work::new();
    w.add("isv", "isv");
    let r = run(w.cmd().args(["validate", "isv"])).ok();
    assert!(
        !r.stderr.contains("share the app's own namespace"),
        "{}",
        r.stderr
    );
    w.edit(
        "isv/merchants.yaml",
        "    app_auth_token: { env: BAKERY_APP_AUTH_TOKEN }\n",
        "",
    );
    w.edit(
        "isv/merchants.yaml",
        "    app_auth_token: { env: NOODLES_APP_AUTH_TOKEN }\n",
        "",
    );
    run(w.cmd().args(["validate", "isv"]))
        .ok()
        .stderr_has("merchants `bakery`, `noodles` have no app_auth_token while 1 other(s) do");
}

/// issue 29: validate reports every problem in one pass: a mistyped key no
/// longer hides a bad colour and a bad image reference.
#[test]
fn validate_reports_a_typo_and_what_it_used_to_hide_at_once() {
    let w = Work::new();
    w.add("coffee", "coffee");
    w.edit(
        "coffee/cardform.yaml",
        "        columns:",
        "        colums:",
    );
    w.edit(
        "coffee/cardform.yaml",
        "text_color: \"rgb(55,112,179)\"",
        "text_color: \"rgb(355,112,179)\"",
    );
    w.edit(
        "coffee/cardform.yaml",
        "          logo: logo\n",
        "          logo: lgo\n",
    );
    let r = run(w.cmd().args(["validate", "coffee"])).fails();
    for want in [
        "unknown key `colums`",
        "`rgb(355,112,179)` is not a colour",
        "image `lgo` is not declared",
        "the manifest has 3 error(s)",
    ] {
        assert!(r.stderr.contains(want), "{want}: {}", r.stderr);
    }
}

/// issue 29: an app-wide limit with no `rate_limits` configured: the first
/// 40005 teaches cardform the app's rate (it holds the app to half of it and
/// recovers), and the report says what limit would have avoided it.
#[test]
fn an_app_wide_limit_is_learned_and_the_report_names_it() {
    for json in [true, false] {
        let w = Work::new();
        w.add("coffee", "coffee");
        let sb = Sandbox::start(&w.dir().join("sb"), &["--throttle-rps", "4"]);
        let mut c = sb.cardform();
        c.current_dir(w.dir())
            .args(["apply", "coffee", "--auto-approve"]);
        if json {
            c.arg("--json");
        }
        let r = run(&mut c);
        assert_eq!(r.code, 0, "{}", r.stderr);
        if json {
            let report = r.json();
            let rate = report["learned_app_rate"].as_f64();
            assert!(rate.is_some_and(|r| r >= 1.0), "{report}");
        } else {
            let all = format!("{}{}", r.stdout, r.stderr);
            assert!(
                all.contains("over its limit at about")
                    && all.contains("rate_limits: { per_second:"),
                "{all}"
            );
        }
    }
}
