//! Dated benefits (issue 26): a resource kind Alipay can delete. Added,
//! changed and removed in the manifests they make exactly one create, one
//! modify and one delete each; a replaced template's benefits follow it; a
//! plan says a delete is a delete.

use serde_json::Value;

use crate::support::*;

const WINTER: &str = r#"        dated_benefits:
          winter:
            title: Winter warmer
            descriptions: ["A free hot chocolate with any cake"]
            start: "2026-12-01 00:00:00"
            end: "2027-02-28 23:59:59"
            link: https://brew.example.com/winter
        form:
          required: [mobile]"#;

fn held(sb: &Sandbox) -> Value {
    let a = http(
        "GET",
        &format!(
            "{}/_sandbox/benefits",
            sb.url.trim_end_matches("/gateway.do")
        ),
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    serde_json::from_str(&a.body).unwrap()
}

fn apply_json(p: &Project, sb: &Sandbox) -> Value {
    run(p
        .cmd_at(sb)
        .args(["apply", "--auto-approve", "--format", "json", "-p"])
        .arg(p.dir()))
    .ok()
    .json()
}

#[test]
fn benefits_are_created_modified_deleted_once_and_follow_a_replaced_template() {
    let p = Project::example("coffee");
    let sb = Sandbox::start(&p.tmp.path().join("sandbox"), &[]);
    p.apply(&mut p.cmd_at(&sb)).ok();
    // Added: one benefit per tier (three tiers), each created once.
    p.edit(
        "cardform.yaml",
        "        form:\n          required: [mobile]",
        WINTER,
    );
    let plan = p.plan(&mut p.cmd_at(&sb));
    assert_eq!(plan.code, 2, "{}", plan.stderr);
    assert!(
        plan.stdout
            .contains("+ merchant.brew/benefit.winter.gold  (not in state)"),
        "{}",
        plan.stdout
    );
    apply_json(&p, &sb);
    let h = held(&sb);
    assert_eq!(h["live"], 3, "{h}");
    // Nothing more to do.
    assert_eq!(p.plan(&mut p.cmd_at(&sb)).code, 0);

    // Drift: a benefit changed in the console is read back and planned
    // back; one deleted there is planned anew.
    let gold = p.export()["resources"]["merchant.brew/benefit.winter.gold"]["ids"].clone();
    let (tid, bid) = (
        gold["template_id"].as_str().unwrap().to_string(),
        gold["benefit_id"].as_str().unwrap().to_string(),
    );
    sb.api(
        "alipay.marketing.card.benefit.modify",
        &serde_json::json!({"benefit_id": bid, "mcard_template_benefit": {
            "template_id": tid, "title": "Console title", "benefit_desc": ["x"],
            "start_date": "2026-12-01 00:00:00", "end_date": "2027-02-28 23:59:59"}})
        .to_string(),
    )
    .ok();
    let drift = run(p.cmd_at(&sb).args(["drift", "-p"]).arg(p.dir()));
    assert_eq!(drift.code, 2, "{}{}", drift.stdout, drift.stderr);
    assert!(
        drift.stdout.contains("benefit.winter.gold"),
        "{}",
        drift.stdout
    );
    let refreshed = run(p.cmd_at(&sb).args(["plan", "--refresh", "-p"]).arg(p.dir()));
    assert!(
        refreshed
            .stdout
            .contains("~ merchant.brew/benefit.winter.gold"),
        "{}",
        refreshed.stdout
    );
    run(p
        .cmd_at(&sb)
        .args(["apply", "--refresh", "--auto-approve", "-p"])
        .arg(p.dir()))
    .ok();
    let silver = p.export()["resources"]["merchant.brew/benefit.winter.silver"]["ids"].clone();
    sb.api(
        "alipay.marketing.card.benefit.delete",
        &serde_json::json!({"benefit_id": silver["benefit_id"], "template_id": silver["template_id"]})
            .to_string(),
    )
    .ok();
    let refreshed = run(p.cmd_at(&sb).args(["plan", "--refresh", "-p"]).arg(p.dir()));
    assert!(
        refreshed
            .stdout
            .contains("+ merchant.brew/benefit.winter.silver"),
        "{}",
        refreshed.stdout
    );
    run(p
        .cmd_at(&sb)
        .args(["apply", "--refresh", "--auto-approve", "-p"])
        .arg(p.dir()))
    .ok();
    let h = held(&sb);
    assert_eq!(h["live"], 3, "{h}");
    let ids: Vec<String> = h["benefits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["benefit_id"].as_str().unwrap().to_string())
        .collect();
    for b in h["benefits"].as_array().unwrap() {
        assert_eq!(b["title"], "Winter warmer", "drift undone: {b}");
    }

    // Changed: modified in place, once each, same ids.
    p.edit(
        "cardform.yaml",
        "title: Winter warmer",
        "title: Winter treat",
    );
    let plan = p.plan(&mut p.cmd_at(&sb));
    assert!(plan.stdout.contains("changed: title"), "{}", plan.stdout);
    apply_json(&p, &sb);
    let h = held(&sb);
    assert_eq!(h["live"], 3);
    for b in h["benefits"].as_array().unwrap() {
        // The gold one was also modified in the console and back.
        let twice = u64::from(b["benefit_id"] == gold["benefit_id"]);
        assert_eq!(b["modified"], 1 + 2 * twice, "{b}");
        assert_eq!(b["title"], "Winter treat");
        assert!(ids.contains(&b["benefit_id"].as_str().unwrap().to_string()));
    }

    // A replaced template (its card number's length changed): its benefit
    // is created on the new template and deleted from the old, in one plan.
    p.edit(
        "cardform.yaml",
        "card_number: { prefix: BREW, suffix_length: 12 }",
        "card_number: { prefix: BREW, suffix_length: 14 }",
    );
    let plan = p.plan(&mut p.cmd_at(&sb));
    assert!(
        plan.stdout
            .contains("-/+ merchant.brew/benefit.winter.silver"),
        "{}",
        plan.stdout
    );
    let before: Vec<String> = p.export()["resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|r| r["kind"] == "template")
        .map(|r| r["ids"]["template_id"].as_str().unwrap().to_string())
        .collect();
    apply_json(&p, &sb);
    let h = held(&sb);
    assert_eq!(h["live"], 3, "{h}");
    assert_eq!(
        h["deleted"], 4,
        "the console's, and the old templates' three"
    );
    for b in h["benefits"].as_array().unwrap() {
        assert!(
            !before.contains(&b["template_id"].as_str().unwrap().to_string()),
            "on a new template: {b}"
        );
    }

    // Removed: a delete, said as such, and no --allow-retire needed.
    let text = std::fs::read_to_string(p.file("cardform.yaml")).unwrap();
    let start = text.find("        dated_benefits:").unwrap();
    let end = text.find("        form:\n").unwrap();
    std::fs::write(
        p.file("cardform.yaml"),
        format!("{}{}", &text[..start], &text[end..]),
    )
    .unwrap();
    let plan = p.plan(&mut p.cmd_at(&sb));
    assert!(
        plan.stdout
            .contains("3 benefit(s) will be DELETED at Alipay")
            && plan.stdout.contains("3 to DELETE at Alipay"),
        "{}",
        plan.stdout
    );
    let md = run(p
        .cmd_at(&sb)
        .args(["plan", "--format", "markdown", "-p"])
        .arg(p.dir()))
    .ok();
    assert!(md.stdout.contains("> [!CAUTION]"), "{}", md.stdout);
    let done = apply_json(&p, &sb);
    assert_eq!(done["calls"], 3, "one delete each: {done}");
    let h = held(&sb);
    assert_eq!(h["live"], 0, "{h}");
    assert_eq!(
        h["deleted"], 7,
        "the console's, three replaced, three removed"
    );
    assert_eq!(p.plan(&mut p.cmd_at(&sb)).code, 0);
}

#[test]
fn a_benefit_is_checked_where_it_is_written() {
    let p = Project::example("coffee");
    p.edit(
        "cardform.yaml",
        "        form:\n          required: [mobile]",
        &WINTER
            .replace("\"2027-02-28 23:59:59\"", "\"2026-11-30 00:00:00\"")
            .replace("https://brew.example.com/winter", "ftp://x"),
    );
    let r = run(p.cmd().args(["validate"]).arg(p.dir())).fails();
    for want in [
        "error: must be after `start`",
        "at: merchants.brew.templates.club.dated_benefits.winter.end",
        "error: `ftp://x` is not an http(s) URL",
        "at: merchants.brew.templates.club.dated_benefits.winter.link",
    ] {
        assert!(r.stderr.contains(want), "{want}\n{}", r.stderr);
    }
}
