//! plan / apply / state / output: the real binary against sandbox processes.

use std::process::Stdio;

use crate::support::*;

#[test]
fn create_then_no_changes_then_update_replace_retire_and_cascade() {
    let p = Project::example("coffee");
    // Create from empty.
    let r = p.plan(&mut p.cmd());
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("Plan: 14 to create, 0 to update, 0 to replace, 0 to retire."),
        "{}",
        r.stdout
    );
    p.apply(&mut p.cmd())
        .ok()
        .stderr_has("Apply complete: 14 done, 0 failed");
    let r = p.plan(&mut p.cmd());
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("No changes."));
    let first = p.export();
    let ids = template_ids(&first);
    assert_eq!(ids.len(), 3);
    let out = run(p.cmd().args(["output", "--format", "json"]))
        .ok()
        .json();
    let urls: Vec<&str> = out["brew"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["apply_card_url"].as_str().unwrap())
        .collect();
    assert!(
        urls.iter()
            .all(|u| u.starts_with("https://memberprod.alipay.com/")),
        "{out}"
    );

    // In-place update: a new card name on one tier.
    p.edit(
        "cardform.yaml",
        "name: Brew Club Gold",
        "name: Brew Club Gold Edition",
    );
    let r = p.plan(&mut p.cmd());
    assert_eq!(r.code, 2);
    assert!(
        r.stdout
            .contains("~ merchant.brew/template.club.gold  (changed: style.name)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("-     \"name\": \"Brew Club Gold\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("+     \"name\": \"Brew Club Gold Edition\""),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("Plan: 0 to create, 1 to update, 0 to replace, 0 to retire."),
        "{}",
        r.stdout
    );
    p.apply(&mut p.cmd()).ok();
    assert_eq!(p.plan(&mut p.cmd()).code, 0);
    assert_eq!(
        template_ids(&p.export()),
        ids,
        "an update keeps the template ids"
    );

    // Replace: the suffix length cannot change in place.
    p.edit("cardform.yaml", "suffix_length: 12", "suffix_length: 14");
    let r = p.plan(&mut p.cmd());
    assert!(r.stdout.contains("must be replaced"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("card_number.suffix_length cannot change in place"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("Plan: 0 to create, 3 to update, 6 to replace, 0 to retire."),
        "{}",
        r.stdout
    );
    // A replaced template's activation URL is replaced too, and the plan says
    // what that means for posters and members.
    assert!(
        r.stdout.contains(
            "merchant.brew/activation_url.club.gold  (`merchant.brew/template.club.gold` is replaced: a NEW activation URL is issued"
        ) && r.stdout.contains("Reprint posters")
            && r.stdout.contains("members who already hold cards keep them on the old template"),
        "{}",
        r.stdout
    );
    p.apply(&mut p.cmd()).ok().stderr_has("old template_id");
    let replaced = template_ids(&p.export());
    assert!(
        replaced
            .iter()
            .all(|(a, id)| ids.iter().any(|(b, old)| a == b && id != old)),
        "new ids: {replaced:?}"
    );
    assert_eq!(p.plan(&mut p.cmd()).code, 0);

    // An image's bytes change: it uploads anew and its templates update.
    write_png(&p.file("images/background-gold.png"), 1020, 643, 77);
    let r = p.plan(&mut p.cmd());
    assert!(
        r.stdout
            .contains("-/+ merchant.brew/image.bg-gold  (the image content changed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("~ merchant.brew/template.club.gold  (an image it uses is uploaded anew: the template is updated to use the new image_id)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("Plan: 0 to create, 1 to update, 1 to replace, 0 to retire."),
        "{}",
        r.stdout
    );
    p.apply(&mut p.cmd()).ok();
    assert_eq!(p.plan(&mut p.cmd()).code, 0);

    // Retire: a tier leaves the manifest.
    p.edit(
        "cardform.yaml",
        "          - level: platinum\n",
        "          - level: diamond\n",
    );
    let r = p.plan(&mut p.cmd());
    assert!(
        r.stdout.contains("! merchant.brew/template.club.platinum"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("WARNING: 3 resource(s) will be RETIRED"),
        "{}",
        r.stdout
    );
    // --auto-approve alone never retires: nothing is changed.
    let serial = p.export()["meta"]["serial"].clone();
    p.apply(&mut p.cmd())
        .fails()
        .stderr_has("refusing to retire 3 resource(s) without a review")
        .stderr_has("--allow-retire");
    assert_eq!(
        p.export()["meta"]["serial"],
        serial,
        "a refused apply changed the state"
    );
    let r = run(p
        .cmd()
        .args(["apply", "--auto-approve", "--allow-retire", "--json", "-p"])
        .arg(p.dir()))
    .ok();
    // The retired ids are in the report, not only in a log line.
    let report = r.json();
    let mut retired: Vec<&str> = report["retired"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["address"].as_str().unwrap())
        .collect();
    retired.sort();
    assert_eq!(
        retired,
        [
            "merchant.brew/activation_url.club.platinum",
            "merchant.brew/form.club.platinum",
            "merchant.brew/template.club.platinum",
        ],
        "{report}"
    );
    let template = report["retired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["address"] == "merchant.brew/template.club.platinum")
        .unwrap();
    assert!(template["template_id"].as_str().is_some(), "{report}");
    assert!(r.stderr.contains("Retired 3 resource(s)"), "{}", r.stderr);
    let state = p.export();
    assert!(
        state["resources"]
            .get("merchant.brew/template.club.platinum")
            .is_none()
    );
    assert!(
        state["resources"]
            .get("merchant.brew/template.club.diamond")
            .is_some()
    );
    assert_eq!(p.plan(&mut p.cmd()).code, 0);
    assert!(state["meta"]["serial"].as_u64().unwrap() > first["meta"]["serial"].as_u64().unwrap());
}

#[test]
fn saved_plans_apply_exactly_and_stale_plans_are_refused() {
    let p = Project::example("coffee");
    let plan_file = p.tmp.path().join("plan.json");
    run(p
        .cmd()
        .args(["plan", "-p"])
        .arg(p.dir())
        .arg("--out")
        .arg(&plan_file))
    .ok()
    .stdout_has("Saved the plan");
    let other = p.tmp.path().join("plan2.json");
    run(p
        .cmd()
        .args(["plan", "-p"])
        .arg(p.dir())
        .arg("--out")
        .arg(&other))
    .ok();
    run(p.cmd().arg("apply").arg(&plan_file))
        .ok()
        .stderr_has("Apply complete: 14 done");
    // The state moved on: the second saved plan is stale.
    run(p.cmd().arg("apply").arg(&other))
        .fails()
        .stderr_has("the saved plan is stale: the state changed");
    // The manifests moved on: stale too.
    run(p
        .cmd()
        .args(["plan", "-p"])
        .arg(p.dir())
        .arg("--out")
        .arg(&plan_file))
    .ok();
    p.edit("cardform.yaml", "name: Brew Club Gold", "name: Gold!");
    run(p.cmd().arg("apply").arg(&plan_file))
        .fails()
        .stderr_has("the manifests changed");
    // JSON and Markdown views.
    let j = run(p
        .cmd()
        .args(["plan", "--format", "json", "-p"])
        .arg(p.dir()))
    .ok()
    .json();
    assert_eq!(j["summary"]["update"], 1);
    assert_eq!(
        j["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["action"] == "update")
            .count(),
        1
    );
    run(p
        .cmd()
        .args(["plan", "--format", "markdown", "-p"])
        .arg(p.dir()))
    .ok()
    .stdout_has("| `~` | `merchant.brew/template.club.gold` | update |");
    // --target limits the plan to an address and its dependencies.
    let t = run(p
        .cmd()
        .args([
            "plan",
            "--format",
            "json",
            "--target",
            "merchant.brew/template.club.gold",
            "-p",
        ])
        .arg(p.dir()))
    .ok()
    .json();
    let addrs: Vec<&str> = t["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert!(
        addrs.contains(&"merchant.brew/image.bg-gold")
            && !addrs.contains(&"merchant.brew/template.club.silver"),
        "{addrs:?}"
    );
    // Without --auto-approve and without a terminal, apply refuses.
    run(p
        .cmd()
        .args(["apply", "-p"])
        .arg(p.dir())
        .stdin(Stdio::null()))
    .fails()
    .stderr_has("refusing to apply without confirmation");
}

#[test]
fn state_commands() {
    let p = Project::example("coffee");
    p.apply(&mut p.cmd()).ok();
    let list = run(p.cmd().args(["state", "list"])).ok();
    assert_eq!(list.stdout.lines().count(), 14);
    let show = run(p
        .cmd()
        .args(["state", "show", "merchant.brew/template.club.gold"]))
    .ok()
    .json();
    assert_eq!(show["ids"]["template_id"].as_str().unwrap().len(), 32);
    let export = p.tmp.path().join("export.json");
    std::fs::write(&export, run(p.cmd().args(["state", "export"])).ok().stdout).unwrap();
    run(p
        .cmd()
        .args(["state", "rm", "merchant.brew/activation_url.club.gold"]))
    .ok();
    assert_eq!(
        p.plan(&mut p.cmd()).code,
        2,
        "the forgotten URL is planned again"
    );
    // An older export is refused, then accepted with --force.
    run(p.cmd().args(["state", "import"]).arg(&export))
        .fails()
        .stderr_has("refusing to import an older state");
    run(p.cmd().args(["state", "import", "--force"]).arg(&export)).ok();
    assert_eq!(p.plan(&mut p.cmd()).code, 0);
    // A foreign lineage is refused.
    let other = Project::example("coffee");
    other.apply(&mut other.cmd()).ok();
    run(other.cmd().args(["state", "import"]).arg(&export))
        .fails()
        .stderr_has("another lineage");
    // No secret ever lands in state.
    let isv = Project::example("isv");
    isv.apply(&mut isv.cmd()).ok();
    let text = run(isv.cmd().args(["state", "export"])).ok().stdout;
    assert!(!text.contains("202405BBtea"), "a token leaked into state");
}

#[test]
fn multi_merchant_tokens_and_one_merchants_failure() {
    let p = Project::example("isv");
    let r = run(p
        .cmd()
        .env_remove("BAKERY_APP_AUTH_TOKEN")
        .args(["apply", "--auto-approve", "-p"])
        .arg(p.dir()))
    .fails();
    assert!(r.stderr.contains("BAKERY_APP_AUTH_TOKEN"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("202405BB"),
        "a token leaked: {}",
        r.stderr
    );
    let state = p.export();
    let done: Vec<&String> = state["resources"].as_object().unwrap().keys().collect();
    assert!(
        done.iter().any(|a| a.starts_with("merchant.tea/template.")),
        "{done:?}"
    );
    assert!(
        done.iter()
            .any(|a| a.starts_with("merchant.noodles/template.")),
        "{done:?}"
    );
    assert!(
        !done.iter().any(|a| a.starts_with("merchant.bakery/")),
        "{done:?}"
    );
    p.apply(&mut p.cmd()).ok();
    assert_eq!(p.plan(&mut p.cmd()).code, 0);
    // Each merchant's templates live under its own token at the gateway.
    let state = p.export();
    assert_eq!(template_ids(&state).len(), 4);
}

#[test]
fn faults_are_retried_and_a_permanent_failure_stops_only_its_dependents() {
    let p = Project::example("coffee");
    let tmp = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(
        &tmp.path().join("sb"),
        &[
            "--error-rate",
            "0.2",
            "--http502-rate",
            "0.05",
            "--drop-rate",
            "0.05",
        ],
    );
    // The gateway allows at most 50 characters of card name; the manifest does not know that.
    p.edit(
        "cardform.yaml",
        "name: Brew Club Gold",
        &format!("name: {}", "G".repeat(60)),
    );
    let r = p.apply(&mut p.cmd_at(&sb)).fails();
    assert!(
        r.stderr
            .contains("merchant.brew/template.club.gold (create)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("code 40004, sub_code INVALID_PARAMETER; retrying will not help"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("merchant.brew/form.club.gold: skipped, because `merchant.brew/template.club.gold` failed"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("merchant.brew/activation_url.club.gold: skipped"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("retrying in"),
        "injected faults were retried: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("11 done, 1 failed, 2 skipped"),
        "{}",
        r.stderr
    );
    p.edit(
        "cardform.yaml",
        &format!("name: {}", "G".repeat(60)),
        "name: Gold",
    );
    p.apply(&mut p.cmd_at(&sb)).ok();
    assert_eq!(p.plan(&mut p.cmd_at(&sb)).code, 0);
    // Drops after the call took effect never duplicated a template.
    assert_eq!(batchquery(&p, &sb, None)["template_total"], 3);
}

#[test]
fn a_second_run_waits_for_or_reports_the_lock() {
    let p = Project::example("coffee");
    let tmp = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(&tmp.path().join("sb"), &["--latency", "400ms"]);
    let (mut child, mut lines) = spawn_apply(&p, &sb, 1);
    // Wait until the first change is done: the apply holds the lock.
    lines.next().unwrap().unwrap();
    let r = p.plan(&mut p.cmd_at(&sb)).fails();
    assert!(
        r.stderr.contains("is locked by `cardform apply`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("pid {}", child.id())),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--lock-timeout"), "{}", r.stderr);
    // With a lock timeout, the plan waits for the apply to finish.
    let r = run(p
        .cmd_at(&sb)
        .args(["plan", "--lock-timeout", "2m", "-p"])
        .arg(p.dir()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("No changes."), "{}", r.stdout);
    child.wait().unwrap();
    // A lock record left by a killed run is cleared by `state unlock --force`.
    std::fs::write(
        p.state().join("lock.json"),
        r#"{"pid":999999,"host":"h","operation":"apply","since":"then"}"#,
    )
    .unwrap();
    run(p.cmd().args(["state", "unlock", "--force"]))
        .ok()
        .stdout_has("Cleared the lock");
}

/// kill -9 at many points of an apply, then run it again: it converges with no
/// duplicate template at the sandbox and no lost id.
#[test]
fn kill_9_at_many_points_then_converge() {
    kill_9_at_many_points_then_converge_with(Project::example("isv"));
}

/// `moved` blocks rename recorded resources with no gateway call: a tiered
/// template (its tiers, forms and URLs), then a whole merchant.
#[test]
fn moved_blocks_rename_without_gateway_calls() {
    let p = Project::example("coffee");
    p.apply(&mut p.cmd()).ok();
    let before = template_ids(&p.export());
    assert_eq!(before.len(), 3, "{before:?}");

    p.edit("cardform.yaml", "      club:\n", "      members:\n");
    let text = std::fs::read_to_string(p.file("cardform.yaml")).unwrap();
    std::fs::write(
        p.file("cardform.yaml"),
        format!("{text}\nmoved:\n  - {{ from: merchant.brew/template.club, to: merchant.brew/template.members }}\n"),
    )
    .unwrap();
    let r = p.plan(&mut p.cmd());
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "# merchant.brew/template.members.gold has moved from merchant.brew/template.club.gold"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("Plan: 0 to create, 0 to update, 0 to replace, 0 to retire, 9 to move."),
        "{}",
        r.stdout
    );
    let report = run(p
        .cmd()
        .args(["apply", "--auto-approve", "--json", "-p"])
        .arg(p.dir()))
    .ok()
    .json();
    assert_eq!(report["calls"], 0, "{report}");
    assert_eq!(
        report["moved"].as_array().map(Vec::len),
        Some(9),
        "{report}"
    );
    let after = template_ids(&p.export());
    let renamed: Vec<(String, String)> = before
        .iter()
        .map(|(a, id)| (a.replace("template.club", "template.members"), id.clone()))
        .collect();
    assert_eq!(after, renamed, "the same templates under their new names");
    // Applied: the block is now a no-op (and may be deleted).
    assert_eq!(p.plan(&mut p.cmd()).code, 0);

    // A whole merchant.
    p.edit("cardform.yaml", "  brew:\n", "  cafe:\n");
    let text = std::fs::read_to_string(p.file("cardform.yaml")).unwrap();
    std::fs::write(
        p.file("cardform.yaml"),
        format!("{text}  - {{ from: merchant.brew, to: merchant.cafe }}\n"),
    )
    .unwrap();
    let r = p.plan(&mut p.cmd());
    assert!(
        r.stdout.contains("14 to move."),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let report = run(p
        .cmd()
        .args(["apply", "--auto-approve", "--json", "-p"])
        .arg(p.dir()))
    .ok()
    .json();
    assert_eq!(report["calls"], 0, "{report}");
    let ids: Vec<String> = template_ids(&p.export())
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let was: Vec<String> = before.into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, was);
    assert_eq!(p.plan(&mut p.cmd()).code, 0);

    // A move of a resource the manifests still declare is refused where
    // the block is written (Terraform's "moved object still exists"), as
    // a move onto a recorded resource is (below, in
    // `a_move_onto_what_the_state_keeps_is_refused`).
    let text = std::fs::read_to_string(p.file("cardform.yaml")).unwrap();
    std::fs::write(
        p.file("cardform.yaml"),
        format!("{text}  - {{ from: merchant.cafe/template.members.gold, to: merchant.cafe/template.members.silver }}\n"),
    )
    .unwrap();
    let r = p.plan(&mut p.cmd());
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("cardform.yaml:")
            && r.stderr.contains(
                "`merchant.cafe/template.members.gold` is moved, but the manifests still declare"
            ),
        "{}",
        r.stderr
    );
}

/// issue 29: a tiered template moved onto a plain template the state
/// keeps (the issue's `club` onto `renamed`) is refused before planning,
/// naming the block: no move, retire and fresh creates.
#[test]
fn a_move_onto_what_the_state_keeps_is_refused() {
    let p = Project::example("coffee");
    let plain = "      renamed:\n        card_number: { prefix: RENM, suffix_length: 12 }\n        write_off: qrcode\n        style: { name: Renamed, logo: logo, background: bg-silver }\n";
    p.edit(
        "cardform.yaml",
        "    templates:\n",
        &format!("    templates:\n{plain}"),
    );
    p.apply(&mut p.cmd()).ok();
    let before = p.export();
    // The tiered `club` renamed to `renamed`, the plain one dropped, and a
    // block moving club onto it.
    p.edit("cardform.yaml", plain, "");
    p.edit("cardform.yaml", "      club:\n", "      renamed:\n");
    let text = std::fs::read_to_string(p.file("cardform.yaml")).unwrap();
    std::fs::write(
        p.file("cardform.yaml"),
        format!("{text}moved:\n  - {{ from: merchant.brew/template.club, to: merchant.brew/template.renamed }}\n"),
    )
    .unwrap();
    for args in [&["plan", "-p"][..], &["apply", "--auto-approve", "-p"]] {
        let r = run(p.cmd().args(args).arg(p.dir())).fails();
        assert!(
            r.stderr.contains("cardform.yaml:")
                && r.stderr
                    .contains("but the state already records `merchant.brew/template.renamed`"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(p.export(), before, "nothing moved, retired or created");
}
