//! Drift: changes made outside cardform (a raw `cardform api` call stands for
//! the Alipay console) are caught by `plan --refresh` and `cardform drift`,
//! restored by apply, or accepted by `apply --refresh-only`; templates the
//! state does not know are listed with the import block that adopts them.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::*;

/// The coffee example applied in a workspace, and what the console does to it.
struct Coffee {
    work: Work,
}

impl Coffee {
    fn new() -> Coffee {
        let work = Work::new();
        work.add("coffee", "coffee");
        let w = Coffee { work };
        run(w.cmd().args(["apply", "coffee", "--auto-approve"])).ok();
        w
    }
    /// `cardform` in the work directory, on its embedded sandbox.
    fn cmd(&self) -> Command {
        self.work.cmd()
    }
    fn template_id(&self, tier: &str) -> String {
        let out = run(self.cmd().args(["output", "--format", "json"]))
            .ok()
            .json();
        out["brew"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["address"].as_str().unwrap().ends_with(tier))
            .unwrap()["template_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
    fn api(&self, method: &str, biz: &Value) -> Value {
        run(self
            .cmd()
            .args(["api", method, "--biz-content", &biz.to_string()]))
        .ok()
        .json()
    }
    /// What a console edit does: rename the card of `template_id`.
    fn console_rename(&self, template_id: &str, name: &str) {
        let q = self.api(
            "alipay.marketing.card.template.query",
            &json!({ "template_id": template_id }),
        );
        let mut style = q["template_style_info"].clone();
        style["card_show_name"] = json!(name);
        self.api(
            "alipay.marketing.card.template.modify",
            &json!({ "request_id": format!("console-{name}").replace(' ', "-"), "template_id": template_id, "template_style_info": style }),
        );
    }
    fn drift(&self, format: &str) -> Run {
        run(self.cmd().args(["drift", "coffee", "--format", format]))
    }
}

#[test]
fn a_console_edit_is_caught_restored_or_accepted() {
    let w = Coffee::new();
    // Nothing changed: the cheap pass reads no template whole.
    let human = w.drift("human");
    assert_eq!(human.code, 0);
    assert!(
        human.stdout.contains(
            "No drift: the gateway holds what the state recorded (3 template(s) checked)."
        ),
        "{}",
        human.stdout
    );
    let r = w.drift("json");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let quiet = r.json();
    assert_eq!(quiet["checked"], 3, "{quiet}");
    assert_eq!(quiet["queried"], 0, "{quiet}");
    assert_eq!(quiet["calls"], 1, "one batchquery page: {quiet}");

    let gold = w.template_id("club.gold");
    w.console_rename(&gold, "Console Gold");
    let r = w.drift("json");
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let found = r.json();
    assert_eq!(
        found["drifted"][0]["address"],
        "merchant.brew/template.club.gold"
    );
    assert_eq!(found["drifted"][0]["fields"], json!(["style.name"]));
    assert_eq!(
        found["drifted"][0]["at_gateway"]["style"]["name"],
        "Console Gold"
    );
    assert_eq!(
        found["queried"], 1,
        "only the moved template is read: {found}"
    );
    let md = w.drift("markdown");
    assert_eq!(md.code, 2);
    assert!(
        md.stdout
            .contains("- `merchant.brew/template.club.gold` (template_id"),
        "{}",
        md.stdout
    );
    // Drift's own words and headline in every format (issue 29): never
    // "No changes", never a plan's heading, never what the state "will
    // record" (drift records nothing).
    assert!(md.stdout.starts_with("### cardform drift"), "{}", md.stdout);
    assert!(
        md.stdout
            .contains("**Drift: 1 template(s) changed outside cardform."),
        "{}",
        md.stdout
    );
    let human = w.drift("human");
    assert_eq!(human.code, 2);
    for text in [&human.stdout, &md.stdout] {
        assert!(!text.contains("No changes"), "{text}");
        assert!(!text.contains("will record"), "{text}");
        assert!(!text.contains("cardform plan\n"), "{text}");
    }
    assert!(
        human.stdout.contains(
            "Changed outside cardform (1 template(s)); `cardform apply` restores the manifests' values:"
        ) && human
            .stdout
            .contains("Drift: 1 template(s) changed outside cardform."),
        "{}",
        human.stdout
    );

    // plan --refresh shows the drift and plans it back.
    let r = run(w
        .cmd()
        .args(["plan", "coffee", "--refresh", "--detailed-exitcode"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "Changed outside cardform (1 template(s)); apply restores the manifests' values:"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("+     \"name\": \"Console Gold\","),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("~ merchant.brew/template.club.gold  (changed: style.name)"),
        "{}",
        r.stdout
    );
    // Without --refresh, the state knows nothing of it.
    let r = run(w.cmd().args(["plan", "coffee", "--detailed-exitcode"]));
    assert_eq!(r.code, 0, "{}", r.stdout);

    // apply --refresh restores the manifest's name at the gateway.
    run(w
        .cmd()
        .args(["apply", "coffee", "--refresh", "--auto-approve"]))
    .ok();
    let q = w.api(
        "alipay.marketing.card.template.query",
        &json!({ "template_id": gold }),
    );
    assert_eq!(q["template_style_info"]["card_show_name"], "Brew Club Gold");
    assert_eq!(w.drift("json").code, 0);

    // A console edit the team keeps: apply --refresh-only records it, and
    // sends nothing.
    w.console_rename(&gold, "Kept Gold");
    let r = run(w
        .cmd()
        .args(["apply", "coffee", "--refresh-only", "--auto-approve"]))
    .ok();
    assert!(r.stderr.contains("the state learned"), "{}", r.stderr);
    let state = run(w
        .cmd()
        .args(["state", "show", "merchant.brew/template.club.gold"]))
    .ok()
    .json();
    assert_eq!(state["attrs"]["style"]["name"], "Kept Gold", "{state}");
    let q = w.api(
        "alipay.marketing.card.template.query",
        &json!({ "template_id": gold }),
    );
    assert_eq!(q["template_style_info"]["card_show_name"], "Kept Gold");
    assert_eq!(w.drift("json").code, 0);
    // The manifests still say otherwise: an ordinary plan now shows that.
    let r = run(w.cmd().args(["plan", "coffee", "--detailed-exitcode"]));
    assert_eq!(r.code, 2);
    assert!(
        r.stdout.contains("-     \"name\": \"Kept Gold\","),
        "{}",
        r.stdout
    );
}

#[test]
fn templates_the_state_does_not_know_are_listed_with_their_import_block() {
    let w = Coffee::new();
    // A template made by a script on the official SDK, images borrowed.
    let gold = w.template_id("club.gold");
    let q = w.api(
        "alipay.marketing.card.template.query",
        &json!({ "template_id": gold }),
    );
    let mut style = q["template_style_info"].clone();
    style["card_show_name"] = json!("Script Card");
    let made = w.api(
        "alipay.marketing.card.template.create",
        &json!({
            "request_id": "script-1",
            "card_type": "OUT_MEMBER_CARD",
            "biz_no_suffix_len": "10",
            "write_off_type": "qrcode",
            "template_style_info": style,
        }),
    );
    let id = made["template_id"].as_str().unwrap().to_string();
    let r = w.drift("human");
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&format!(
            "merchant.brew: template_id {id} \"Script Card\"\n    import: [{{ to: merchant.brew/template.script-card, id: \"{id}\" }}]"
        )),
        "{}",
        r.stdout
    );
    // Kept there on purpose (issue 29): named in `ignore_templates`, drift
    // is quiet about it, and apply's check counts it as accounted for.
    w.work.edit(
        "coffee/cardform.yaml",
        "    display_name: Brew Coffee\n",
        &format!("    display_name: Brew Coffee\n    ignore_templates: [\"{id}\"]\n"),
    );
    let r = w.drift("human");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains(&id), "{}", r.stdout);
}

/// A template made outside cardform (a script on the official SDK) is
/// adopted with an `import` block: no template is created, the plan shows the
/// import with what the manifests change, and a second plan has no changes.
#[test]
fn an_import_block_adopts_a_template_without_creating_one() {
    let w = Coffee::new();
    let state = run(w.cmd().args(["state", "export"])).ok().json();
    let image = |name: &str| {
        state["resources"][format!("merchant.brew/image.{name}")]["ids"]["image_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let made = w.api(
        "alipay.marketing.card.template.create",
        &json!({
            "request_id": "script-legacy",
            "card_type": "OUT_MEMBER_CARD",
            "biz_no_suffix_len": "12",
            "write_off_type": "qrcode",
            "template_style_info": {
                "card_show_name": "Legacy Old",
                "logo_id": image("logo"),
                "background_id": image("bg-gold"),
            },
        }),
    );
    let id = made["template_id"].as_str().unwrap().to_string();
    let total = || {
        w.api(
            "alipay.marketing.card.template.batchquery",
            &json!({ "page_no": 1, "page_size": 20 }),
        )["template_total"]
            .as_i64()
            .unwrap()
    };
    let before = total();
    let manifest = w.work.dir().join("coffee/cardform.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replacen(
        "    templates:\n",
        "    templates:\n      legacy:\n        card_number: { suffix_length: 12 }\n        write_off: qrcode\n        style: { name: Legacy, logo: logo, background: bg-gold }\n",
        1,
    );
    std::fs::write(
        &manifest,
        format!("{text}\nimport:\n  - {{ to: merchant.brew/template.legacy, id: \"{id}\" }}\n"),
    )
    .unwrap();
    let r = run(w.cmd().args(["plan", "coffee", "--detailed-exitcode"]));
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("# merchant.brew/template.legacy will be imported"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "adopted from the gateway (template_id {id}), then updated in place: changed: style.name"
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("-     \"name\": \"Legacy Old\","),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("Plan: 1 to import, 0 to create"),
        "{}",
        r.stdout
    );
    run(w.cmd().args(["apply", "coffee", "--auto-approve"])).ok();
    assert_eq!(total(), before, "no template was created");
    let q = w.api(
        "alipay.marketing.card.template.query",
        &json!({ "template_id": id }),
    );
    assert_eq!(q["template_style_info"]["card_show_name"], "Legacy");
    let rec = run(w
        .cmd()
        .args(["state", "show", "merchant.brew/template.legacy"]))
    .ok()
    .json();
    assert_eq!(rec["ids"]["template_id"], id.as_str());
    let r = run(w.cmd().args(["plan", "coffee", "--detailed-exitcode"]));
    assert_eq!(r.code, 0, "{}", r.stdout);

    // An id the gateway does not have for this merchant fails clearly.
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replacen(
        "    templates:\n",
        "    templates:\n      ghost:\n        card_number: { suffix_length: 12 }\n        write_off: qrcode\n        style: { name: Ghost, logo: logo, background: bg-gold }\n",
        1,
    );
    std::fs::write(
        &manifest,
        format!("{text}  - {{ to: merchant.brew/template.ghost, id: \"20990101000000000000000000000000\" }}\n"),
    )
    .unwrap();
    let r = run(w.cmd().args(["plan", "coffee"]));
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stderr.contains("cannot import template 20990101000000000000000000000000 as `merchant.brew/template.ghost`")
            && r.stderr.contains("cardform.yaml:"),
        "{}",
        r.stderr
    );
}

/// Adoption end to end: templates made with raw API calls (as a console or a
/// script would) are written out by `cardform import --generate-config-out`;
/// the generated project validates and plans only imports; apply creates no
/// template; a second plan has no changes.
#[test]
fn import_generates_a_config_that_plans_only_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(&tmp.path().join("sb"), &[]);
    let at = |args: &[&str]| {
        let mut c = sb.cardform();
        c.current_dir(tmp.path()).args(args);
        c
    };
    write_png(&tmp.path().join("logo.png"), 500, 500, 1);
    write_png(&tmp.path().join("bg.png"), 1020, 643, 2);
    let upload = |file: &str| {
        run(&mut at(&[
            "api",
            "alipay.offline.material.image.upload",
            "--param",
            "image_type=png",
            "--param",
            &format!("image_name={file}"),
            "--file",
            &format!("image_content={file}"),
        ]))
        .ok()
        .json()["image_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (logo, bg) = (upload("logo.png"), upload("bg.png"));
    let mut ids = Vec::new();
    for (i, name) in ["Gold Card", "Silver Card"].iter().enumerate() {
        let biz = json!({
            "request_id": format!("console-{i}"),
            "card_type": "OUT_MEMBER_CARD",
            "biz_no_prefix": "VIP",
            "biz_no_suffix_len": "12",
            "write_off_type": "qrcode",
            "template_style_info": { "card_show_name": name, "logo_id": logo, "background_id": bg, "bg_color": "rgb(10,20,30)" },
            "column_info_list": [{ "code": "POINT", "title": "Points", "operate_type": "staticinfo" }],
        });
        let made = run(&mut at(&[
            "api",
            "alipay.marketing.card.template.create",
            "--biz-content",
            &biz.to_string(),
        ]))
        .ok()
        .json();
        ids.push(made["template_id"].as_str().unwrap().to_string());
    }
    // A tiered program: one template per level, each carrying every level;
    // each card name says its level, so the tiers can be told apart.
    for (i, (level, name)) in [("silver", "Club Silver"), ("gold", "Club Gold")]
        .iter()
        .enumerate()
    {
        let biz = json!({
            "request_id": format!("console-tier-{i}"),
            "card_type": "OUT_MEMBER_CARD",
            "biz_no_suffix_len": "14",
            "write_off_type": "qrcode",
            "template_style_info": { "card_show_name": name, "logo_id": logo, "background_id": bg },
            "card_level_conf": [
                { "level": "silver", "level_show_name": "Silver" },
                { "level": "gold", "level_show_name": "Gold", "level_desc": "The best" },
            ],
        });
        let made = run(&mut at(&[
            "api",
            "alipay.marketing.card.template.create",
            "--biz-content",
            &biz.to_string(),
        ]))
        .ok()
        .json();
        assert!(made["template_id"].is_string(), "{level}: {made}");
    }
    // A dated benefit on the gold card, made in the console.
    run(&mut at(&[
        "api",
        "alipay.marketing.card.benefit.create",
        "--biz-content",
        &json!({"mcard_template_benefit": {
            "template_id": ids[0], "title": "Double points", "benefit_desc": ["On Tuesdays"],
            "start_date": "2026-01-01 00:00:00", "end_date": "2099-01-01 00:00:00"}})
        .to_string(),
    ]))
    .ok();
    std::fs::create_dir_all(tmp.path().join("adopt")).unwrap();
    // (A key file named by the manifest is written out relative to the
    // generated file, never as this machine's absolute path: issue 29.)
    std::fs::write(
        tmp.path().join("adopt/cardform.yaml"),
        "gateway:\n  private_key: { file: ../keys/app.pem }\nmerchants:\n  brew: {}\n",
    )
    .unwrap();
    let r = run(&mut at(&[
        "import",
        "adopt",
        "--merchant",
        "brew",
        "--generate-config-out",
        "gen/cardform.yaml",
    ]))
    .ok();
    assert!(r.stdout.contains("3 template(s)"), "{}", r.stdout);
    let generated = std::fs::read_to_string(tmp.path().join("gen/cardform.yaml")).unwrap();
    assert!(generated.contains("name: Gold Card"), "{generated}");
    assert!(generated.contains("file: ../keys/app.pem"), "{generated}");
    assert!(generated.contains("tiers:"), "{generated}");
    assert!(
        generated.contains("dated_benefits:") && generated.contains("title: Double points"),
        "{generated}"
    );
    assert!(
        generated.contains("merchant.brew/template.club.gold"),
        "{generated}"
    );
    assert!(
        generated.contains(&format!("id: '{}'", ids[0]))
            || generated.contains(&format!("id: \"{}\"", ids[0]))
            || generated.contains(&format!("id: {}", ids[0])),
        "{generated}"
    );
    run(&mut at(&["validate", "gen"])).ok();
    let r = run(&mut at(&[
        "plan",
        "gen",
        "--state",
        "st",
        "--detailed-exitcode",
    ]));
    assert_eq!(r.code, 2, "{}\n{}\n{generated}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("Plan: 6 to import, 1 to create, 0 to update, 0 to replace, 0 to retire."),
        "{}\n{generated}",
        r.stdout
    );
    assert!(
        r.stdout.contains("it matches the manifests"),
        "{}",
        r.stdout
    );
    let total = || {
        run(&mut at(&[
            "api",
            "alipay.marketing.card.template.batchquery",
            "--biz-content",
            r#"{"page_no":1,"page_size":20}"#,
        ]))
        .ok()
        .json()["template_total"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(total(), 4);
    run(&mut at(&[
        "apply",
        "gen",
        "--state",
        "st",
        "--auto-approve",
    ]))
    .ok();
    assert_eq!(total(), 4, "apply created no template");
    let benefits = http(
        "GET",
        &format!(
            "{}/_sandbox/benefits",
            sb.url.trim_end_matches("/gateway.do")
        ),
        None,
    );
    let benefits: serde_json::Value = serde_json::from_str(&benefits.body).unwrap();
    assert_eq!(
        benefits["live"], 1,
        "the benefit was adopted, not made again: {benefits}"
    );
    let r = run(&mut at(&[
        "plan",
        "gen",
        "--state",
        "st",
        "--detailed-exitcode",
    ]));
    assert_eq!(r.code, 0, "{}", r.stdout);
}
