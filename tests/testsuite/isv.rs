//! An ISV's book of merchants: selecting merchants and addresses by glob on
//! plan, apply, drift and output, and the plan saying what it selected.

use crate::support::*;

/// The addresses a plan changes.
fn addresses(plan: &serde_json::Value) -> Vec<String> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "no_op")
        .map(|c| c["address"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn merchants_excludes_and_targets_select_and_the_plan_says_so() {
    let p = Project::example("isv");
    let plan = |args: &[&str]| {
        run(p
            .cmd()
            .args(["plan", "--format", "json", "-p"])
            .arg(p.dir())
            .args(args))
        .ok()
        .json()
    };
    // Merchants by glob, an address excluded.
    let j = plan(&[
        "--merchant",
        "b*",
        "--merchant",
        "tea",
        "--exclude",
        "merchant.tea/activation_url.*",
    ]);
    let a = addresses(&j);
    assert!(
        a.iter()
            .all(|a| a.starts_with("merchant.bakery/") || a.starts_with("merchant.tea/")),
        "{a:?}"
    );
    assert!(
        a.iter().any(|a| a.starts_with("merchant.tea/"))
            && !a.contains(&"merchant.tea/activation_url.member".to_string()),
        "{a:?}"
    );
    assert_eq!(j["merchants"], serde_json::json!(["bakery", "tea"]));
    assert_eq!(j["left_out"], 6, "noodles' five and tea's URL: {j}");
    // The human header says what was selected and what was left out.
    let r = run(p
        .cmd()
        .args(["plan", "-p"])
        .arg(p.dir())
        .args(["--merchant", "noodles"]))
    .ok();
    assert!(
        r.stdout.starts_with("Selected: merchants noodles (1 merchant(s)); 13 resource(s) of the manifests and state left out."),
        "{}",
        r.stdout
    );
    // Targets are repeatable globs, each with what it depends on.
    let j = plan(&[
        "--target",
        "merchant.*/template.member",
        "--exclude",
        "noodles",
    ]);
    let mut a = addresses(&j);
    a.sort();
    assert_eq!(
        a,
        [
            "merchant.bakery/image.background",
            "merchant.bakery/image.logo",
            "merchant.bakery/template.member",
            "merchant.tea/image.background",
            "merchant.tea/image.logo",
            "merchant.tea/template.member",
        ]
    );
    // A selector that selects nothing is an error, not an empty plan.
    let r = run(p
        .cmd()
        .args(["plan", "-p"])
        .arg(p.dir())
        .args(["--merchant", "zz*"]))
    .fails();
    assert!(
        r.stderr.contains("--merchant `zz*` matches no merchant"),
        "{}",
        r.stderr
    );
    let r = run(p
        .cmd()
        .args(["plan", "-p"])
        .arg(p.dir())
        .args(["--target", "merchant.x/*"]))
    .fails();
    assert!(
        r.stderr.contains("--target `merchant.x/*` matches nothing"),
        "{}",
        r.stderr
    );

    // Apply one merchant; the others stay to do; output and drift select too.
    run(p
        .cmd()
        .args(["apply", "--auto-approve", "--merchant", "bakery", "-p"])
        .arg(p.dir()))
    .ok();
    let j = plan(&[]);
    let a = addresses(&j);
    assert!(
        a.iter().all(|a| !a.starts_with("merchant.bakery/")),
        "{a:?}"
    );
    assert_eq!(a.len(), 10, "{a:?}");
    let out = run(p
        .cmd()
        .args(["output", "--format", "json", "--merchant", "bak*"]))
    .ok()
    .json();
    assert_eq!(
        out.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["bakery"]
    );
    // Drift reads only the selected merchant: one listing, bakery's two templates.
    let d = run(p
        .cmd()
        .args(["drift", "--format", "json", "--merchant", "bakery", "-p"])
        .arg(p.dir()))
    .ok()
    .json();
    assert_eq!(
        (d["calls"].as_u64(), d["checked"].as_u64()),
        (Some(1), Some(2)),
        "{d}"
    );
}

/// Each way a merchant's authorisation can be broken stops that merchant at
/// once (no retries, its remaining changes not attempted), says what must be
/// done in words, and every other merchant finishes.
#[test]
fn a_merchant_whose_authorisation_is_broken_stops_alone() {
    let tea_token = "202405BBtea0000000000000000000000000X01";
    for (kind, hint) in [
        ("invalid", "merchant `tea` must authorise the app again"),
        ("expired", "merchant `tea` must authorise the app again"),
        ("no-api", "merchant `tea` has not granted the app"),
        ("no-permission", "merchant `tea` lacks the permission"),
        ("no-product", "the app lacks the product for merchant `tea`"),
    ] {
        let p = Project::example("isv");
        let tmp = tempfile::tempdir().unwrap();
        let sb = Sandbox::start(
            &tmp.path().join("sb"),
            &["--merchant-fault", &format!("{tea_token}={kind}")],
        );
        let r = run(p
            .cmd_at(&sb)
            .args(["apply", "--auto-approve", "--json", "-p"])
            .arg(p.dir()))
        .fails();
        assert!(r.stderr.contains(hint), "{kind}: {}", r.stderr);
        assert!(r.stderr.contains("Stopped early"), "{kind}: {}", r.stderr);
        let report = r.json();
        assert_eq!(
            report["retries"], 0,
            "{kind}: no retry was wasted: {report}"
        );
        let m = &report["merchants"];
        assert_eq!(m["bakery"]["done"], 8, "{kind}: {m}");
        assert_eq!(m["noodles"]["done"], 5, "{kind}: {m}");
        assert_eq!(m["tea"]["done"], 0, "{kind}: {m}");
        assert_eq!(
            m["tea"]["failed"].as_u64().unwrap() + m["tea"]["skipped"].as_u64().unwrap(),
            5,
            "{kind}: {m}"
        );
        assert!(
            m["tea"]["skipped"].as_u64().unwrap() >= 3,
            "{kind}: tea's later changes were not attempted: {m}"
        );
        assert!(
            m["tea"]["stopped"].as_str().unwrap().contains(hint),
            "{kind}: {m}"
        );
    }
}

/// The same when the merchant's authorisation breaks after its templates
/// exist: the failure comes mid-walk, and stops only that merchant.
#[test]
fn an_authorisation_lost_mid_walk_stops_only_its_merchant() {
    let tea_token = "202405BBtea0000000000000000000000000X01";
    let p = Project::example("isv");
    let tmp = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(&tmp.path().join("sb"), &[]);
    p.apply(&mut p.cmd_at(&sb)).ok();
    sb.stop();
    // Every merchant's card changes; tea's token has expired meanwhile.
    let manifest = p.dir().join("gateway.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("https://help.isv.example.com"));
    std::fs::write(
        &manifest,
        text.replace(
            "https://help.isv.example.com",
            "https://help2.isv.example.com",
        ),
    )
    .unwrap();
    let sb = Sandbox::start(
        &tmp.path().join("sb"),
        &["--merchant-fault", &format!("{tea_token}=expired")],
    );
    let r = run(p
        .cmd_at(&sb)
        .args(["apply", "--auto-approve", "--json", "-p"])
        .arg(p.dir()))
    .fails();
    let m = &r.json()["merchants"];
    assert!(m["tea"]["failed"].as_u64().unwrap() >= 1, "{m}");
    assert_eq!(m["tea"]["done"], 0, "{m}");
    assert!(
        m["tea"]["stopped"]
            .as_str()
            .unwrap()
            .contains("must authorise the app again"),
        "{m}"
    );
    assert_eq!(m["bakery"]["failed"], 0, "{m}");
    assert_eq!(m["noodles"]["failed"], 0, "{m}");
    assert!(m["bakery"]["done"].as_u64().unwrap() >= 2, "{m}");
}

/// Limits held rather than hit: against a sandbox that enforces limits per
/// merchant and per method, a run without configured limits bounces off them
/// (40005, retried); with them it stays under, with no 40005 at all.
#[test]
fn configured_rate_limits_keep_a_run_under_the_gateway_limits() {
    let limits = [
        "--limit-merchant",
        "3",
        "--limit-method",
        "alipay.offline.material.image.upload=2",
    ];
    let apply = |configured: bool| -> serde_json::Value {
        let p = Project::example("isv");
        if configured {
            p.edit(
                "gateway.yaml",
                "gateway:\n",
                "gateway:\n  rate_limits:\n    per_merchant: 2.5\n    per_method: { alipay.offline.material.image.upload: 1.8 }\n",
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let sb = Sandbox::start(&tmp.path().join("sb"), &limits);
        let r = run(p
            .cmd_at(&sb)
            .args([
                "apply",
                "--auto-approve",
                "--json",
                "--parallelism",
                "8",
                "-p",
            ])
            .arg(p.dir()));
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.json()
    };
    let bounced = apply(false);
    assert!(
        bounced["retries"].as_u64().unwrap() > 0,
        "the limits are real: {bounced}"
    );
    let held = apply(true);
    assert_eq!(held["retries"], 0, "{held}");
    assert!(held.get("throttled").is_none(), "no 40005: {held}");
    assert_eq!(held["merchants"]["bakery"]["done"], 8, "{held}");
}

/// The plan says what it will cost before anything runs.
#[test]
fn the_plan_states_its_call_budget() {
    let p = Project::example("isv");
    let r = run(p.cmd().args(["plan", "-p"]).arg(p.dir())).ok();
    assert!(
        r.stdout.contains("Gateway calls: ~21 (6 image.upload, 4 activateurl.apply, 4 formtemplate.set, 4 template.create, 3 template.batchquery)."),
        "{}",
        r.stdout
    );
    p.edit(
        "gateway.yaml",
        "gateway:\n",
        "gateway:\n  rate_limits:\n    per_merchant: 2\n    per_method: { alipay.offline.material.image.upload: 1 }\n",
    );
    let r = run(p.cmd().args(["plan", "-p"]).arg(p.dir())).ok();
    // bakery: 9 calls at 2/s = 4.5 s; 6 uploads at 1/s = 6 s: the tighter.
    assert!(
        r.stdout.contains("; ~6s at the configured rate limits."),
        "{}",
        r.stdout
    );
    let j = run(p
        .cmd()
        .args(["plan", "--format", "json", "-p"])
        .arg(p.dir()))
    .ok()
    .json();
    assert_eq!(
        j["budget"]["per_merchant"],
        serde_json::json!({"bakery": 9, "noodles": 6, "tea": 6})
    );
    assert_eq!(j["budget"]["seconds_at_limits"], 6.0);
}
