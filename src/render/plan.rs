//! Plans for people (Terraform-like), for CI (JSON) and for pull requests
//! (Markdown).

use std::fmt::Write as _;

use similar::{ChangeTag, TextDiff};

use crate::plan::{Action, Change, Plan};

fn symbol(a: Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Retire => "!",
        Action::NoOp => " ",
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Replace => "must be replaced",
        Action::Retire => "will be RETIRED (forgotten from state; it stays at Alipay)",
        Action::NoOp => "is up to date",
    }
}

fn pretty(v: &Option<serde_json::Value>) -> String {
    v.as_ref()
        .map(|v| serde_json::to_string_pretty(v).expect("values serialize"))
        .unwrap_or_default()
}

/// The attribute diff, changed lines with a little context.
pub fn diff(change: &Change) -> String {
    let before = pretty(&change.before);
    let after = pretty(&change.after);
    let mut out = String::new();
    if change.action == Action::Create {
        for line in after.lines() {
            let _ = writeln!(out, "      + {line}");
        }
        return out;
    }
    let d = TextDiff::from_lines(&before, &after);
    for group in d.grouped_ops(1) {
        for op in group {
            for c in d.iter_changes(&op) {
                let sign = match c.tag() {
                    ChangeTag::Delete => "-",
                    ChangeTag::Insert => "+",
                    ChangeTag::Equal => " ",
                };
                let _ = write!(out, "      {sign} {}", c.value());
                if c.missing_newline() {
                    out.push('\n');
                }
            }
        }
        out.push_str("      ...\n");
    }
    out
}

pub fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    if !plan.has_changes() {
        return format!("No changes. {} resource(s) match the manifests.", s.no_op);
    }
    format!(
        "Plan: {} to create, {} to update, {} to replace, {} to retire.",
        s.create, s.update, s.replace, s.retire
    )
}

pub fn human(plan: &Plan, show_diffs: bool) -> String {
    let mut out = String::new();
    let changes: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .collect();
    if !changes.is_empty() {
        out.push_str("cardform will perform these actions:\n\n");
    }
    for c in changes {
        let _ = writeln!(out, "  # {} {}", c.address, verb(c.action));
        let _ = writeln!(out, "  {} {}  ({})", symbol(c.action), c.address, c.reason);
        if show_diffs && c.action != Action::Retire {
            out.push_str(&diff(c));
        }
        out.push('\n');
    }
    let retired = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Retire)
        .count();
    if retired > 0 {
        let _ = writeln!(
            out,
            "WARNING: {retired} resource(s) will be retired. Alipay has no delete API for templates or images: they stay at Alipay and cardform forgets them."
        );
    }
    out.push_str(&summary_line(plan));
    out.push('\n');
    out
}

/// For a pull-request comment: full per-resource tables when small, per
/// merchant counts when large.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### cardform plan\n\n**{}**\n", summary_line(plan));
    let changes: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .collect();
    if changes.is_empty() {
        return out;
    }
    if changes.len() <= 50 {
        out.push_str("| | resource | action | why |\n|---|---|---|---|\n");
        for c in &changes {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} |",
                symbol(c.action),
                c.address,
                c.action.as_str(),
                c.reason.replace('|', "\\|")
            );
        }
        out.push_str("\n<details><summary>attribute diffs</summary>\n\n```diff\n");
        for c in changes
            .iter()
            .filter(|c| matches!(c.action, Action::Update | Action::Replace))
        {
            let _ = writeln!(out, "# {}", c.address);
            for line in diff(c).lines() {
                let _ = writeln!(out, "{}", line.trim_start());
            }
        }
        out.push_str("```\n\n</details>\n");
    } else {
        let mut per: std::collections::BTreeMap<&str, [usize; 4]> = Default::default();
        for c in &changes {
            let e = per.entry(c.address.merchant.as_str()).or_default();
            match c.action {
                Action::Create => e[0] += 1,
                Action::Update => e[1] += 1,
                Action::Replace => e[2] += 1,
                Action::Retire => e[3] += 1,
                Action::NoOp => {}
            }
        }
        out.push_str("| merchant | create | update | replace | retire |\n|---|---|---|---|---|\n");
        for (m, [a, b, c, d]) in per {
            let _ = writeln!(out, "| `{m}` | {a} | {b} | {c} | {d} |");
        }
    }
    out
}
