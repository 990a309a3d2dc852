//! The seams, seen from outside: per-merchant throttling behind the gateway seam.

use crate::support::*;

/// The sandbox throttles only merchant `tea` (its app_auth_token) to 2 calls/s.
/// tea's calls are answered 40005 and retried; bakery's calls never wait.
#[test]
fn a_throttled_merchant_slows_only_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(
        &tmp.path().join("sb"),
        &["--throttle-rps", "2", "--throttle-token", "tea-token-1"],
    );
    copy_dir(&data("../../examples/isv"), &tmp.path().join("isv"));
    let r = run(sb
        .cardform()
        .current_dir(tmp.path())
        .env("TEA_APP_AUTH_TOKEN", "tea-token-1")
        .env("BAKERY_APP_AUTH_TOKEN", "bakery-token-1")
        .env("NOODLES_APP_AUTH_TOKEN", "noodles-token-1")
        .args(["apply", "isv", "--auto-approve", "--json", "--state", "st"]))
    .ok();
    let report = r.json();
    let results = report["results"].as_array().unwrap();
    assert!(
        results.iter().all(|l| l["status"] == "done"),
        "{}",
        r.stdout
    );
    let throttled = report["throttled"].as_object().unwrap();
    assert_eq!(
        throttled.keys().collect::<Vec<_>>(),
        ["tea"],
        "only tea may wait: {throttled:?}"
    );
    assert!(throttled["tea"]["answers"].as_u64().unwrap() >= 1);
    // Every retry the progress reported is one of tea's.
    let retries: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("retrying in"))
        .collect();
    assert!(!retries.is_empty(), "{}", r.stderr);
    assert!(
        retries.iter().all(|l| l.starts_with("merchant.tea/")),
        "{retries:#?}"
    );
}

/// A state written by an earlier release, with the manifests it was applied
/// from: format 2 (5d1212a: no integrity checkpoint, absolute image paths)
/// and format 3 (1ca7d0b); both record templates and forms in the gateway's
/// words.
fn old_state(format: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&data("upgrade/coffee"), &tmp.path().join("coffee"));
    copy_dir(
        &data(&format!("upgrade/{format}")),
        &tmp.path().join("state"),
    );
    tmp
}

#[test]
fn older_states_upgrade_and_plan_no_changes() {
    for format in ["format2", "format3"] {
        upgrades_and_plans_no_changes(format);
    }
}

fn upgrades_and_plans_no_changes(format: &str) {
    let tmp = old_state(format);
    let plan = || {
        run(cardform().current_dir(tmp.path()).args([
            "plan",
            "coffee",
            "--state",
            "state",
            "--detailed-exitcode",
        ]))
    };
    // First open migrates; the second reads format 4 as written.
    for _ in 0..2 {
        let r = plan();
        assert_eq!(r.code, 0, "{format}: {}\n{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("No changes"), "{format}: {}", r.stdout);
    }
    // The ids are all still there, and an edit now diffs in the manifest's words.
    let out = run(cardform()
        .current_dir(tmp.path())
        .args(["output", "--state", "state", "--format", "json"]))
    .ok()
    .json();
    assert_eq!(out["brew"].as_array().map(Vec::len), Some(3), "{out}");
    let manifest = tmp.path().join("coffee/cardform.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replacen("required: [mobile]", "required: [mobile, email]", 1),
    )
    .unwrap();
    let r = plan();
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("(changed: required)"), "{}", r.stdout);
    assert!(r.stdout.contains("\"email\""), "{}", r.stdout);
    assert!(!r.stdout.contains("OPEN_FORM_FIELD"), "{}", r.stdout);
}

#[test]
fn a_backup_in_the_old_words_recovers_and_plans_no_changes() {
    let tmp = old_state("format3");
    let state = tmp.path().join("state");
    // The database is lost; its checkpoint says it held records.
    std::fs::remove_dir_all(state.join("store")).unwrap();
    run(cardform()
        .current_dir(tmp.path())
        .args(["state", "recover", "--state", "state"]))
    .ok();
    let r = run(cardform().current_dir(tmp.path()).args([
        "plan",
        "coffee",
        "--state",
        "state",
        "--detailed-exitcode",
    ]));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}
