//! The seams, seen from outside: per-merchant throttling behind the gateway seam.

use crate::plan_apply::copy_dir;
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
