//! A damaged state never looks empty. Each way of damaging the store on disk
//! either leaves it exactly as it was, or is refused as damaged by every
//! command; never a panic (exit 101), never a plan that creates again. Then
//! `state recover` brings back the last good state, and nothing is made twice.

use std::path::{Path, PathBuf};

use crate::support::*;

struct Damaged {
    tmp: tempfile::TempDir,
}

impl Damaged {
    fn dir(&self) -> &Path {
        self.tmp.path()
    }
    fn state(&self) -> PathBuf {
        self.dir().join("state")
    }
    fn cmd(&self) -> std::process::Command {
        let mut c = cardform();
        c.current_dir(self.dir());
        c
    }
    fn list(&self) -> Run {
        run(self.cmd().args(["state", "list"]))
    }
    fn templates_at_gateway(&self) -> u64 {
        run(self.cmd().args([
            "api",
            "alipay.marketing.card.template.batchquery",
            "--biz-content",
            r#"{"page_no":1,"page_size":20}"#,
        ]))
        .ok()
        .json()["template_total"]
            .as_u64()
            .unwrap()
    }
}

/// Apply the coffee example, keep a pristine copy of its state.
fn applied() -> (Damaged, PathBuf, String) {
    let d = Damaged {
        tmp: tempfile::tempdir().unwrap(),
    };
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coffee"),
        &d.dir().join("coffee"),
    );
    run(d.cmd().args(["apply", "coffee", "--auto-approve"])).ok();
    let good = d.dir().join("good");
    copy_dir(&d.state(), &good);
    let listed = d.list().ok().stdout;
    (d, good, listed)
}

fn restore(d: &Damaged, good: &Path) {
    std::fs::remove_dir_all(d.state()).unwrap();
    copy_dir(good, &d.state());
}

fn db(d: &Damaged) -> PathBuf {
    d.state().join("store/db")
}

/// One way of damaging a state on disk.
type Damage = Box<dyn Fn(&Damaged)>;

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = (offset as usize).min(bytes.len() - 1);
    bytes[i] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn every_damage_is_refused_or_harmless_and_recover_brings_the_state_back() {
    let (d, good, listed) = applied();
    let size = std::fs::metadata(db(&d)).unwrap().len();
    let older = d.dir().join("older");
    // An older copy of the store: taken before a later apply.
    copy_dir(&d.state(), &older);
    d.cmd();
    let mut patterns: Vec<(String, Damage)> = vec![
        (
            "delete the database".into(),
            Box::new(|d| std::fs::remove_file(db(d)).unwrap()),
        ),
        (
            "delete the whole store".into(),
            Box::new(|d| std::fs::remove_dir_all(d.state().join("store")).unwrap()),
        ),
        (
            "zero the database".into(),
            Box::new(move |d| std::fs::write(db(d), vec![0u8; size as usize]).unwrap()),
        ),
        (
            "delete the store and integrity.json, keep backup.json".into(),
            Box::new(|d| {
                std::fs::remove_dir_all(d.state().join("store")).unwrap();
                std::fs::remove_file(d.state().join("integrity.json")).unwrap();
            }),
        ),
        (
            "delete integrity.json".into(),
            Box::new(|d| std::fs::remove_file(d.state().join("integrity.json")).unwrap()),
        ),
        (
            "garble integrity.json".into(),
            Box::new(|d| std::fs::write(d.state().join("integrity.json"), "{").unwrap()),
        ),
        (
            "tamper with integrity.json's count".into(),
            Box::new(|d| {
                let p = d.state().join("integrity.json");
                let mut v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                v["count"] = serde_json::json!(v["count"].as_u64().unwrap() - 1);
                std::fs::write(p, v.to_string()).unwrap();
            }),
        ),
    ];
    for pct in [10, 30, 50, 70, 90, 99] {
        patterns.push((
            format!("truncate the database to {pct}%"),
            Box::new(move |d| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(db(d))
                    .unwrap()
                    .set_len(size * pct / 100)
                    .unwrap()
            }),
        ));
    }
    for i in 0..16 {
        patterns.push((
            format!("flip a byte at {}/16 of the database", i),
            Box::new(move |d| flip(&db(d), size * i / 16 + 7)),
        ));
    }
    let mut refused = 0;
    for (what, damage) in &patterns {
        restore(&d, &good);
        damage(&d);
        let r = d.list();
        assert_ne!(r.code, 101, "{what}: a panic\n{}", r.stderr);
        if r.code == 0 {
            // Harmless damage (bytes nothing reads): exactly the same state.
            assert_eq!(r.stdout, listed, "{what}: a partial state was read");
            continue;
        }
        refused += 1;
        assert!(
            r.stderr.contains("the state in `state` is damaged"),
            "{what}: {}",
            r.stderr
        );
        // No command uses it: plan and apply are refused too, nothing is created.
        for args in [
            vec!["plan", "coffee"],
            vec!["apply", "coffee", "--auto-approve"],
            vec!["output"],
        ] {
            let r = run(d.cmd().args(&args));
            assert_eq!(r.code, 1, "{what}: {args:?}\n{}{}", r.stdout, r.stderr);
            assert!(r.stderr.contains("is damaged"), "{what}: {}", r.stderr);
        }
        // Recover brings back the last good state; the plan is empty.
        let r = run(d.cmd().args(["state", "recover"])).ok();
        assert!(
            r.stdout
                .contains("Recovered the state from state/backup.json: 14 resource(s)"),
            "{what}: {}",
            r.stdout
        );
        run(d.cmd().args(["plan", "coffee", "--detailed-exitcode"])).ok();
        assert_eq!(d.list().ok().stdout, listed, "{what}");
    }
    eprintln!(
        "{refused} of {} damage patterns refused, the rest harmless",
        patterns.len()
    );
    assert!(
        refused >= 12,
        "only {refused} of {} patterns were refused",
        patterns.len()
    );
    assert_eq!(d.templates_at_gateway(), 3, "no template was made twice");

    // A store rolled back to an older copy lost writes that were on disk.
    restore(&d, &good);
    std::fs::write(
        d.dir().join("coffee/cardform.yaml"),
        std::fs::read_to_string(d.dir().join("coffee/cardform.yaml"))
            .unwrap()
            .replace("name: Brew Club\n", "name: Brew Rewards\n"),
    )
    .unwrap();
    run(d.cmd().args(["apply", "coffee", "--auto-approve"])).ok();
    std::fs::remove_dir_all(d.state().join("store")).unwrap();
    copy_dir(&older.join("store"), &d.state().join("store"));
    d.list()
        .fails()
        .stderr_has("it lost writes that were on disk");
}

#[test]
fn recover_lists_what_the_backup_does_not_have() {
    let (d, _good, _) = applied();
    // A later apply that fails (the backup stays at the first apply), then
    // damage.
    std::fs::write(
        d.dir().join("coffee/cardform.yaml"),
        std::fs::read_to_string(d.dir().join("coffee/cardform.yaml"))
            .unwrap()
            .replace(
                "          - level: platinum\n",
                "          - level: diamond\n",
            ),
    )
    .unwrap();
    let r = run(d
        .cmd()
        .env("CARDFORM_SANDBOX_FAULTS", "error_rate=1")
        // (Past the look for unknown templates, which fails too.)
        .args([
            "apply",
            "coffee",
            "--auto-approve",
            "--allow-retire",
            "--allow-unmanaged",
        ]));
    assert_eq!(r.code, 1);
    // The diamond tier's create is in doubt in the store, not in the backup.
    std::fs::remove_file(d.state().join("integrity.json")).unwrap();
    let r = run(d.cmd().args(["state", "recover"])).ok();
    assert!(
        r.stderr
            .contains("merchant.brew/template.club.diamond: a create in doubt"),
        "{}{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn a_lost_state_does_not_create_templates_the_gateway_already_holds() {
    let (d, _good, _) = applied();
    // Everything of the state is gone (its embedded gateway is not).
    for f in ["store", "integrity.json", "backup.json"] {
        let p = d.state().join(f);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    let r = run(d.cmd().args(["apply", "coffee", "--auto-approve"])).fails();
    assert!(
        r.stderr.contains(
            "merchant `brew` already holds template(s) at the gateway that this state does not know"
        ) && r.stderr.contains("--allow-unmanaged"),
        "{}",
        r.stderr
    );
    assert_eq!(d.templates_at_gateway(), 3, "nothing was created");
}

/// issue 28: defence in depth for every backend. A state whose records had
/// two template ids swapped (an edited export imported with --force) is
/// refused before a modify could change the other template; a template
/// row deleted (so the state knows the merchant's other templates) does
/// not get a second copy created: the gateway is asked before any template
/// of a merchant is created, whatever the state knows of it.
#[test]
fn swapped_ids_and_a_forgotten_template_are_caught_at_the_gateway() {
    let (d, _good, _) = applied();
    let export = run(d.cmd().args(["state", "export"])).ok().stdout;
    let state: serde_json::Value = serde_json::from_str(&export).unwrap();
    let ids = template_ids(&state);
    // The silver tier's id (the one the manifest change below touches)
    // swapped with another tier's.
    let silver = ids
        .iter()
        .position(|(k, _)| k.ends_with("club.silver"))
        .unwrap();
    let (a, b) = (&ids[silver].1, &ids[(silver + 1) % ids.len()].1);
    let swapped = export
        .replace(a.as_str(), "@A@")
        .replace(b.as_str(), a.as_str())
        .replace("@A@", b.as_str());
    std::fs::write(d.dir().join("swapped.json"), swapped).unwrap();
    run(d.cmd().args(["state", "import", "swapped.json", "--force"])).ok();
    let manifest = d.dir().join("coffee/cardform.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("name: Brew Club\n", "name: Brew Rewards\n"),
    )
    .unwrap();
    let r = run(d.cmd().args(["apply", "coffee", "--auto-approve"])).fails();
    assert!(
        r.stdout
            .contains("which cardform did not record for this address")
            || r.stderr
                .contains("which cardform did not record for this address"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    // Nothing was modified at the gateway: the original state plans the
    // same title change, and the gateway still matches it.
    std::fs::write(d.dir().join("clean.json"), &export).unwrap();
    run(d.cmd().args(["state", "import", "clean.json", "--force"])).ok();
    std::fs::write(&manifest, &text).unwrap();
    run(d
        .cmd()
        .args(["plan", "coffee", "--refresh", "--detailed-exitcode"]))
    .ok();

    // A template's record deleted by hand (`state rm` would remember the
    // id; an edited export does not): apply refuses to create a second copy.
    let mut lost = state.clone();
    let gone = ids[0].0.clone();
    lost["resources"].as_object_mut().unwrap().remove(&gone);
    lost["meta"]["serial"] = serde_json::json!(lost["meta"]["serial"].as_u64().unwrap() + 10);
    std::fs::write(d.dir().join("lost.json"), lost.to_string()).unwrap();
    run(d.cmd().args(["state", "import", "lost.json", "--force"])).ok();
    let before = d.templates_at_gateway();
    let r = run(d.cmd().args(["apply", "coffee", "--auto-approve"])).fails();
    assert!(
        r.stderr
            .contains("already holds template(s) at the gateway that this state does not know"),
        "{}",
        r.stderr
    );
    assert_eq!(d.templates_at_gateway(), before, "no second copy");
}
