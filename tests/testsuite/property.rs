//! Property: whatever the manifests say, after apply a plan is empty, also when
//! one random project is applied over another (updates, replaces, retires).

use proptest::prelude::*;

use crate::support::*;

#[derive(Debug, Clone)]
struct Tpl {
    name_suffix: u8,
    suffix_len: u8,
    prefix: Option<u8>,
    bg: usize,
    tiers: Vec<u8>,
    form: Option<(usize, bool)>,
    url: Option<bool>,
    columns: usize,
    shops: Vec<u8>,
}

fn tpl() -> impl Strategy<Value = Tpl> {
    (
        any::<u8>(),
        prop_oneof![Just(12u8), Just(16u8)],
        proptest::option::of(0u8..3),
        0usize..2,
        proptest::collection::btree_set(0u8..4, 0..3).prop_map(|s| s.into_iter().collect()),
        proptest::option::of((0usize..3, any::<bool>())),
        proptest::option::of(any::<bool>()),
        0usize..3,
        proptest::collection::btree_set(0u8..3, 0..2).prop_map(|s| s.into_iter().collect()),
    )
        .prop_map(
            |(name_suffix, suffix_len, prefix, bg, tiers, form, url, columns, shops)| Tpl {
                name_suffix,
                suffix_len,
                prefix,
                bg,
                tiers,
                form,
                url,
                columns,
                shops,
            },
        )
}

fn project() -> impl Strategy<Value = Vec<Vec<Tpl>>> {
    proptest::collection::vec(proptest::collection::vec(tpl(), 1..3), 1..3)
}

fn yaml(merchants: &[Vec<Tpl>]) -> String {
    let mut y = String::from("merchants:\n");
    for (m, templates) in merchants.iter().enumerate() {
        y.push_str(&format!(
            "  m{m}:\n    images:\n      logo: {{ file: logo.png, role: logo }}\n      bg0: {{ file: bg0.png, role: background }}\n      bg1: {{ file: bg1.png, role: background }}\n    templates:\n"
        ));
        for (i, t) in templates.iter().enumerate() {
            y.push_str(&format!(
                "      t{i}:\n        card_number: {{ suffix_length: {}",
                t.suffix_len
            ));
            if let Some(p) = t.prefix {
                y.push_str(&format!(", prefix: P{p}"));
            }
            y.push_str(" }\n        write_off: qrcode\n");
            y.push_str(&format!(
                "        style: {{ name: \"Card {}\", logo: logo, background: bg{} }}\n",
                t.name_suffix, t.bg
            ));
            if t.columns > 0 {
                y.push_str("        columns:\n");
                for c in 0..t.columns {
                    y.push_str(&format!(
                        "          - {{ code: C{c}, title: Column {c} }}\n"
                    ));
                }
            }
            if !t.shops.is_empty() {
                let shops: Vec<String> = t.shops.iter().map(|s| format!("\"shop{s}\"")).collect();
                y.push_str(&format!("        shops: [{}]\n", shops.join(", ")));
            }
            if let Some((n, opt)) = t.form {
                let fields = ["mobile", "name", "gender"];
                y.push_str(&format!("        form: {{ required: [{}]", fields[n]));
                if opt {
                    y.push_str(&format!(", optional: [{}]", fields[(n + 1) % 3]));
                }
                y.push_str(" }\n");
            }
            if let Some(with_out) = t.url {
                y.push_str("        activation_url: { callback: \"https://cb.example.com/x\"");
                if with_out {
                    y.push_str(", out_string: s1");
                }
                y.push_str(" }\n");
            }
            if !t.tiers.is_empty() {
                y.push_str("        tiers:\n");
                for l in &t.tiers {
                    y.push_str(&format!(
                        "          - {{ level: l{l}, level_name: Level {l} }}\n"
                    ));
                }
            }
        }
    }
    y
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn apply_then_plan_is_empty(first in project(), second in project()) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        std::fs::create_dir_all(&dir).unwrap();
        write_png(&dir.join("logo.png"), 500, 500, 1);
        write_png(&dir.join("bg0.png"), 1020, 643, 2);
        write_png(&dir.join("bg1.png"), 1020, 643, 3);
        let state = tmp.path().join("state");
        for p in [&first, &second] {
            std::fs::write(dir.join("cardform.yaml"), yaml(p)).unwrap();
            let a = run(cardform().arg("--state").arg(&state).args(["apply", "--auto-approve", "--allow-retire", "-p"]).arg(&dir));
            prop_assert_eq!(a.code, 0, "apply failed:\n{}\n{}", yaml(p), a.stderr);
            let r = run(cardform().arg("--state").arg(&state).args(["plan", "--detailed-exitcode", "-p"]).arg(&dir));
            prop_assert_eq!(r.code, 0, "plan after apply is not empty:\n{}\n{}", yaml(p), r.stdout);
        }
    }
}
