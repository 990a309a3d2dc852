//! Card previews: golden images (a small per-pixel tolerance) for the coffee,
//! ISV and Chinese examples and a name that does not fit, the layout checked
//! structurally, and the warnings a reviewer gets.
//!
//! Regenerate the golden images after a deliberate change to the drawing:
//! `CARDFORM_UPDATE_GOLDEN=1 cargo test --test testsuite preview` (then look
//! at every changed PNG before committing it).

use std::path::{Path, PathBuf};

use cardform::preview::color::Rgb;
use cardform::preview::layout::{Role, layout};
use cardform::preview::{Pixmap, tier_of};

use crate::support::*;

fn golden_dir(case: &str) -> PathBuf {
    data("preview").join(case)
}

/// Per channel, at most this far apart...
const TOLERANCE: u8 = 24;
/// ...on all but this share of the pixels (anti-aliasing may differ a little
/// between machines; a moved or recoloured element changes far more).
const MAX_DIFFERENT: f64 = 0.002;

fn compare(got: &Path, want: &Path) -> Result<(), String> {
    let g = Pixmap::load_png(got).map_err(|e| format!("{}: {e}", got.display()))?;
    let w = Pixmap::load_png(want).map_err(|e| format!("{}: {e}", want.display()))?;
    if (g.width(), g.height()) != (w.width(), w.height()) {
        return Err(format!(
            "{} is {}x{}, the golden image {}x{}",
            got.display(),
            g.width(),
            g.height(),
            w.width(),
            w.height()
        ));
    }
    let different = g
        .data()
        .chunks_exact(4)
        .zip(w.data().chunks_exact(4))
        .filter(|(a, b)| a.iter().zip(*b).any(|(x, y)| x.abs_diff(*y) > TOLERANCE))
        .count();
    let share = different as f64 / f64::from(g.width() * g.height());
    if share > MAX_DIFFERENT {
        return Err(format!(
            "{} differs from {} in {:.2} % of its pixels",
            got.display(),
            want.display(),
            share * 100.0
        ));
    }
    Ok(())
}

/// Every PNG under `out` matches its golden image, and every golden image
/// was drawn.
fn matches_golden(out: &Path, case: &str) {
    let golden = golden_dir(case);
    let update = std::env::var_os("CARDFORM_UPDATE_GOLDEN").is_some();
    let drawn = files(out);
    for rel in &drawn {
        let (got, want) = (out.join(rel), golden.join(rel));
        if update {
            std::fs::create_dir_all(want.parent().unwrap()).unwrap();
            std::fs::copy(&got, &want).unwrap();
        }
        assert!(
            want.exists(),
            "no golden image {} (set CARDFORM_UPDATE_GOLDEN=1 to write it)",
            want.display()
        );
        if let Err(e) = compare(&got, &want) {
            panic!("{e}");
        }
    }
    assert_eq!(drawn, files(&golden), "previews drawn vs golden images");
}

/// A gold tier name too long for the card face.
const LONG_NAME: &str = "Brew Club Gold Members Reserve Card for Coffee Lovers";

fn with_long_gold_name(p: &Project) {
    p.edit(
        "cardform.yaml",
        "name: Brew Club Gold",
        &format!("name: {LONG_NAME}"),
    );
}

/// `cardform preview` run from the project's parent with relative paths.
fn preview(p: &Project, extra: &[&str]) -> Run {
    let parent = p.dir().parent().unwrap().to_path_buf();
    run(cardform()
        .current_dir(&parent)
        .args(["preview", "project", "--out", "previews", "--json"])
        .args(extra))
    .ok()
}

fn warnings(report: &serde_json::Value, file: &str) -> Vec<String> {
    report["previews"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["file"] == file)
        .unwrap_or_else(|| panic!("no preview {file} in {report}"))["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_examples_are_drawn_as_their_golden_images() {
    for case in ["coffee", "isv", "preview"] {
        let p = Project::example(case);
        preview(&p, &[]);
        matches_golden(&p.dir().parent().unwrap().join("previews"), case);
    }
}

#[test]
fn every_tier_is_drawn_and_the_coffee_colours_are_reported_unreadable() {
    let p = Project::example("coffee");
    let report = preview(&p, &[]).json();
    let files: Vec<&str> = report["previews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "brew/club.gold.png",
            "brew/club.platinum.png",
            "brew/club.silver.png"
        ]
    );
    // rgb(55,112,179) on the gold background: the card name is hard to read.
    let w = warnings(&report, "brew/club.gold.png");
    assert!(
        w.iter().any(
            |w| w.starts_with("the card name (style.name) is hard to read")
                && w.contains("below WCAG AA's 4.5:1")
        ),
        "{w:?}"
    );
    // The Chinese example picks readable colours: no warning at all.
    let p = Project::example("preview");
    let report = preview(&p, &[]).json();
    for f in ["teahouse/club.silver.png", "teahouse/club.black.png"] {
        assert_eq!(warnings(&report, f), Vec::<String>::new(), "{f}");
    }
}

#[test]
fn a_name_that_does_not_fit_is_cut_as_the_wallet_cuts_it_and_reported() {
    let p = Project::example("coffee");
    with_long_gold_name(&p);
    let report = preview(&p, &["--target", "merchant.brew/template.club.gold"]).json();
    assert_eq!(report["previews"].as_array().unwrap().len(), 1);
    let w = warnings(&report, "brew/club.gold.png");
    assert!(
        w.iter().any(|w| w.starts_with(
            "the card name (style.name) `Brew Club Gold Members Reserve Card for Coffee Lovers` does not fit: the wallet shows `Brew Club Gold Members"
        ) && w.ends_with("…`")),
        "{w:?}"
    );
    matches_golden(&p.dir().parent().unwrap().join("previews"), "long-name");
}

#[test]
fn the_layout_puts_each_field_where_the_wallet_shows_it() {
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coffee");
    let loaded = cardform::ops::load::manifests(&project, Default::default());
    let desired = loaded.desired.expect("the coffee example loads");
    let templates = cardform::preview::templates(&desired, None);
    assert_eq!(templates.len(), 3);
    for (address, t) in templates {
        let level = tier_of(address, t);
        let l = layout(t, level);
        // The card at the background's real proportions, the round logo top left.
        assert_eq!((l.card.w, l.card.h), (1020.0, 643.0));
        assert_eq!(
            (l.logo.x, l.logo.y, l.logo.w, l.logo.h),
            (88.0, 88.0, 120.0, 120.0)
        );
        // The name beside the logo, on the card, in the manifest's colour.
        let name = l.text(Role::Name).unwrap();
        assert_eq!(name.full, t.style.name);
        assert!(
            name.rect.x > l.logo.right() && l.card.contains(&name.rect),
            "{name:?}"
        );
        assert_eq!(name.color, Rgb(55, 112, 179));
        assert!(name.bold && name.on_card);
        // Every coffee template is a tier: its level name is on the card.
        let tier = t
            .levels
            .iter()
            .find(|x| Some(x.level.as_str()) == level)
            .unwrap();
        let shown = l.text(Role::Level).unwrap();
        assert_eq!(Some(shown.full.as_str()), tier.level_name.as_deref());
        assert!(l.card.contains(&shown.rect) && shown.rect.x > name.rect.right());
        assert_eq!(
            l.text(Role::CardNumber).unwrap().full,
            "BREW **** **** ****"
        );
        // Below the card: the three columns, in order.
        let titles: Vec<&str> = l
            .texts
            .iter()
            .filter(|x| x.role == Role::ColumnTitle)
            .map(|x| x.full.as_str())
            .collect();
        assert_eq!(titles, ["Balance", "Points", "Member benefits"]);
        assert!(
            l.texts
                .iter()
                .filter(|x| !x.on_card)
                .all(|x| x.rect.y > l.card.bottom())
        );
    }
    // A template without tiers has no level name on it.
    let isv = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/isv");
    let desired = cardform::ops::load::manifests(&isv, Default::default())
        .desired
        .expect("the ISV example loads");
    let untiered: Vec<_> = cardform::preview::templates(&desired, None)
        .into_iter()
        .filter(|(a, t)| tier_of(a, t).is_none())
        .collect();
    assert!(!untiered.is_empty());
    for (_, t) in untiered {
        assert!(layout(t, None).text(Role::Level).is_none());
    }
}

#[test]
fn validate_warns_about_unreadable_and_cut_text_and_stays_valid() {
    let p = Project::example("coffee");
    with_long_gold_name(&p);
    let parent = p.dir().parent().unwrap().to_path_buf();
    let report = run(cardform()
        .current_dir(&parent)
        .args(["validate", "project", "--format", "json"]))
    .ok()
    .json();
    assert_eq!(report["valid"], true);
    let warnings: Vec<(String, String)> = report["card_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["address"].as_str().unwrap().to_string(),
                w["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let gold = "merchant.brew/template.club.gold";
    assert!(
        warnings
            .iter()
            .any(|(a, m)| a == gold && m.contains("does not fit"))
    );
    assert!(
        warnings
            .iter()
            .any(|(a, m)| a == gold && m.starts_with("the card name (style.name) is hard to read"))
    );
    // Human output: the same warnings, and still valid.
    run(cardform().current_dir(&parent).args(["validate", "project"]))
        .ok()
        .stderr_has("warning: merchant.brew/template.club.gold: the card name (style.name) `Brew Club Gold Members Reserve Card for Coffee Lovers` does not fit")
        .stdout_has("project is valid");
}

/// The files under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(merchants) = std::fs::read_dir(dir) {
        for m in merchants {
            let m = m.unwrap().path();
            for f in std::fs::read_dir(&m).unwrap() {
                let f = f.unwrap().path();
                out.push(f.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn plan_preview_dir_draws_each_changed_template_before_and_after_and_nothing_else() {
    let p = Project::example("coffee");
    let parent = p.dir().parent().unwrap().to_path_buf();
    // Nothing applied yet: three creates, each drawn as it will be (no before).
    let md = run(p.cmd().current_dir(&parent).args([
        "plan",
        "project",
        "--format",
        "markdown",
        "--preview-dir",
        "new",
    ]))
    .ok();
    assert_eq!(
        files(&parent.join("new")),
        [
            "brew/club.gold.after.png",
            "brew/club.platinum.after.png",
            "brew/club.silver.after.png"
        ]
    );
    assert!(
        md.stdout
            .contains("![new card](new/brew/club.gold.after.png)"),
        "{}",
        md.stdout
    );
    run(p.cmd().args(["apply", "--auto-approve", "-p"]).arg(p.dir())).ok();
    // One tier renamed: one before/after pair (and the side-by-side), no more.
    p.edit(
        "cardform.yaml",
        "name: Brew Club Gold",
        "name: Brew Gold Reserve",
    );
    let md = run(p.cmd().current_dir(&parent).args([
        "plan",
        "project",
        "--format",
        "markdown",
        "--preview-dir",
        "changed",
    ]))
    .ok();
    assert_eq!(
        files(&parent.join("changed")),
        [
            "brew/club.gold.after.png",
            "brew/club.gold.before.png",
            "brew/club.gold.compare.png"
        ]
    );
    for link in [
        "![before and after, changes outlined](changed/brew/club.gold.compare.png)",
        "[before](changed/brew/club.gold.before.png)",
        "[after](changed/brew/club.gold.after.png)",
    ] {
        assert!(md.stdout.contains(link), "{link} not in {}", md.stdout);
    }
    // The before is the recorded card, the after the manifests' one.
    let before = Pixmap::load_png(parent.join("changed/brew/club.gold.before.png")).unwrap();
    let after = Pixmap::load_png(parent.join("changed/brew/club.gold.after.png")).unwrap();
    assert_eq!(
        (before.width(), before.height()),
        (after.width(), after.height())
    );
    assert_ne!(before.data(), after.data());
    compare(
        &parent.join("changed/brew/club.gold.before.png"),
        &golden_dir("coffee").join("brew/club.gold.png"),
    )
    .unwrap();
    // Applied: nothing changes, nothing is drawn.
    run(p.cmd().args(["apply", "--auto-approve", "-p"]).arg(p.dir())).ok();
    run(p
        .cmd()
        .current_dir(&parent)
        .args(["plan", "project", "--preview-dir", "none"]))
    .ok()
    .stdout_has("No template changes: no preview written to none.");
    assert!(files(&parent.join("none")).is_empty());
}

#[test]
fn an_image_without_pixels_is_a_placeholder_and_said_so() {
    let p = Project::example("coffee");
    p.edit(
        "cardform.yaml",
        "logo: { file: images/logo.png, role: logo }",
        "logo: { id: \"A0xxxxxxxxxxxxxxxxxxxxxxxxxxx01\", role: logo }",
    );
    let report = preview(&p, &["--target", "merchant.brew/template.club.silver"]).json();
    let w = warnings(&report, "brew/club.silver.png");
    assert!(
        w.iter().any(|w| w
            == "the logo `merchant.brew/image.logo` has no pixels to draw here (an adopted image id, a BMP, or a file no longer readable): a grey placeholder stands in for it"),
        "{w:?}"
    );
}
