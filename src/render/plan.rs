//! Plans for people (Terraform-like, coloured on a terminal), for CI (JSON)
//! and for pull requests (Markdown, within a comment's size limit).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use similar::{ChangeTag, TextDiff};

use super::{ADD, BOLD, CHANGE, DANGER, REPLACE, paint};
use crate::plan::{Action, Change, Plan};

fn symbol(a: Action) -> &'static str {
    match a {
        Action::Import => "<=",
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Retire => "!",
        Action::Delete => "-",
        Action::NoOp => " ",
    }
}

fn style(a: Action) -> anstyle::Style {
    match a {
        Action::Import => ADD,
        Action::Create => ADD,
        Action::Update => CHANGE,
        Action::Replace => REPLACE,
        Action::Retire | Action::Delete => DANGER,
        Action::NoOp => anstyle::Style::new(),
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Import => "will be imported (adopted from the gateway, no template created)",
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Replace => "must be replaced",
        Action::Retire => "will be RETIRED (forgotten from state; it stays at Alipay)",
        Action::Delete => "will be DELETED at Alipay",
        Action::NoOp => "is up to date",
    }
}

/// Whether a change is shown: anything but a no-op, and a no-op that moves.
fn shown(c: &Change) -> bool {
    c.action != Action::NoOp || c.moved_from.is_some()
}

/// The header of a change: what happens to it, and where it moved from.
fn headline(c: &Change) -> String {
    match (&c.moved_from, c.action) {
        (Some(from), Action::NoOp) => format!("# {} has moved from {from}", c.address),
        (Some(from), a) => format!("# {} has moved from {from}, and {}", c.address, verb(a)),
        (None, a) => format!("# {} {}", c.address, verb(a)),
    }
}

fn action_text(c: &Change) -> String {
    match (&c.moved_from, c.action) {
        (Some(_), Action::NoOp) => "move".into(),
        (Some(_), a) => format!("move, {}", a.as_str()),
        (None, a) => a.as_str().into(),
    }
}

fn pretty(v: &Option<Box<serde_json::Value>>) -> String {
    v.as_ref()
        .map(|v| serde_json::to_string_pretty(v).expect("values serialize"))
        .unwrap_or_default()
}

/// One line of an attribute diff: its sign and the JSON text (with its own
/// indentation, which context lines keep too).
type DiffLine = (char, String);

/// The attribute diff: changed lines with a line of context; `None` marks a
/// gap between groups.
fn diff_lines(change: &Change) -> Vec<Option<DiffLine>> {
    let before = pretty(&change.before);
    let after = pretty(&change.after);
    let mut out = Vec::new();
    if change.action == Action::Create {
        return after.lines().map(|l| Some(('+', l.to_string()))).collect();
    }
    let d = TextDiff::from_lines(&before, &after);
    for group in d.grouped_ops(1) {
        for op in group {
            for c in d.iter_changes(&op) {
                let sign = match c.tag() {
                    ChangeTag::Delete => '-',
                    ChangeTag::Insert => '+',
                    ChangeTag::Equal => ' ',
                };
                out.push(Some((sign, c.value().trim_end_matches('\n').to_string())));
            }
        }
        out.push(None);
    }
    out
}

/// The attribute diff for a terminal, indented under its resource.
pub fn diff(change: &Change) -> String {
    let mut out = String::new();
    for l in diff_lines(change) {
        let _ = match l {
            Some(('+', t)) => writeln!(out, "      {}", paint(ADD, &format!("+ {t}"))),
            Some(('-', t)) => writeln!(out, "      {}", paint(DANGER, &format!("- {t}"))),
            Some((_, t)) => writeln!(out, "        {t}"),
            None => writeln!(out, "      ..."),
        };
    }
    out
}

/// The attribute diff for a ```diff block: the sign in column one, the JSON
/// indentation kept after it.
fn diff_block(change: &Change) -> String {
    let mut out = String::new();
    for l in diff_lines(change) {
        let _ = match l {
            Some((sign, t)) => writeln!(out, "{sign} {t}"),
            None => writeln!(out, "  ..."),
        };
    }
    out
}

/// The call budget: how many gateway calls, of which methods, and how long
/// at the configured rate limits. Empty when nothing will be called.
pub fn budget_line(plan: &Plan) -> String {
    let b = &plan.budget;
    if b.calls == 0 {
        return String::new();
    }
    let mut by: Vec<(&String, &usize)> = b.by_method.iter().collect();
    by.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
    let methods = by
        .iter()
        .map(|(m, n)| {
            format!(
                "{n} {}",
                m.trim_start_matches("alipay.marketing.card.")
                    .trim_start_matches("alipay.offline.material.")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let time = match b.seconds_at_limits {
        Some(s) => format!(
            "; ~{} at the configured rate limits",
            humantime::format_duration(std::time::Duration::from_secs(s.ceil() as u64))
        ),
        None => String::new(),
    };
    format!("Gateway calls: ~{} ({methods}){time}.", b.calls)
}

pub fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    if !plan.has_changes() {
        return format!("No changes. {} resource(s) match the manifests.", s.no_op);
    }
    let moved = if s.moved > 0 {
        format!(", {} to move", s.moved)
    } else {
        String::new()
    };
    let import = if s.import > 0 {
        format!("{} to import, ", s.import)
    } else {
        String::new()
    };
    let delete = if s.delete > 0 {
        format!(", {} to DELETE at Alipay", s.delete)
    } else {
        String::new()
    };
    format!(
        "Plan: {import}{} to create, {} to update, {} to replace, {} to retire{delete}{moved}.",
        s.create, s.update, s.replace, s.retire
    )
}

fn delete_warning(n: usize) -> String {
    format!(
        "WARNING: {n} benefit(s) will be DELETED at Alipay: members stop seeing them, and a deleted benefit cannot be brought back (a new one can be created)."
    )
}

fn retire_warning(n: usize) -> String {
    format!(
        "WARNING: {n} resource(s) will be RETIRED. Alipay has no delete API for templates or images: they stay at Alipay and cardform forgets them."
    )
}

/// Counts per merchant: create, update, replace, retire.
fn per_merchant(changes: &[&Change]) -> BTreeMap<String, [usize; 4]> {
    let mut per: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    for c in changes {
        let e = per.entry(c.address.merchant.to_string()).or_default();
        match c.action {
            Action::Create => e[0] += 1,
            Action::Update => e[1] += 1,
            Action::Replace => e[2] += 1,
            Action::Retire | Action::Delete => e[3] += 1,
            Action::NoOp => {}
            Action::Import => e[0] += 1,
        }
    }
    per
}

fn merchant_label(plan: &Plan, m: &str) -> String {
    match plan.display_names.get(m) {
        Some(d) => format!("merchant.{m} ({d})"),
        None => format!("merchant.{m}"),
    }
}

/// `cardform drift`'s own words, in every format: a headline that says
/// whether the gateway holds what the state recorded, what changed outside
/// cardform and what to run about it. Drift records nothing and plans
/// nothing, so it never says "No changes" or what the state will record.
pub fn drift(plan: &Plan, markdown: bool) -> String {
    let Some(r) = &plan.refresh else {
        return String::new();
    };
    let headline = if r.found_anything() {
        let mut parts = Vec::new();
        if !r.drifted.is_empty() {
            parts.push(format!(
                "{} template(s) changed outside cardform",
                r.drifted.len()
            ));
        }
        if !r.missing.is_empty() {
            parts.push(format!("{} missing at the gateway", r.missing.len()));
        }
        if !r.unmanaged.is_empty() {
            parts.push(format!("{} unknown to the state", r.unmanaged.len()));
        }
        format!(
            "Drift: {}. `cardform plan --refresh` shows what apply would do about it.",
            parts.join(", ")
        )
    } else {
        format!(
            "No drift: the gateway holds what the state recorded ({} template(s) checked).",
            r.checked
        )
    };
    let mut out = String::new();
    if markdown {
        let _ = writeln!(out, "### cardform drift\n\n**{}**\n", escape(&headline));
        out.push_str(&refresh_section_as(plan, false, true, true));
    } else {
        let selected = selection_line(plan);
        if !selected.is_empty() {
            let _ = writeln!(out, "{selected}");
        }
        out.push_str(&refresh_section_as(plan, true, false, true));
        let _ = writeln!(out, "{}", paint(BOLD, &headline));
    }
    out
}

/// Markdown cut to at most `max_bytes`, at a line, saying so.
pub fn clip_markdown(text: String, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text;
    }
    let note = format!(
        "\n_Left out to stay under {max_bytes} bytes. Run `cardform drift` for all of it._\n"
    );
    let mut cut = max_bytes.saturating_sub(note.len());
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let cut = text[..cut].rfind('\n').map_or(0, |i| i + 1);
    format!("{}{note}", &text[..cut])
}

/// What a refresh found: drift (with its diff), templates missing at the
/// gateway, and templates the state does not know (with their import block).
fn refresh_section(plan: &Plan, show_diffs: bool, markdown: bool) -> String {
    refresh_section_as(plan, show_diffs, markdown, false)
}

/// The same, for `drift` (`for_drift`: it says what to run, never what a
/// plan will do).
fn refresh_section_as(plan: &Plan, show_diffs: bool, markdown: bool, for_drift: bool) -> String {
    let Some(r) = &plan.refresh else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Refreshed from the gateway: {} template(s) checked, {} read whole ({} gateway calls, {:.1}s).\n",
        r.checked,
        r.queried,
        r.calls,
        r.elapsed_ms as f64 / 1000.0
    );
    let only = plan.changes.is_empty() && !plan.has_changes();
    if !r.drifted.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            paint(
                CHANGE,
                &format!(
                    "Changed outside cardform ({} template(s)); {}:",
                    r.drifted.len(),
                    if for_drift {
                        "`cardform apply` restores the manifests' values"
                    } else if only {
                        "the state will record the gateway's values"
                    } else {
                        "apply restores the manifests' values"
                    }
                )
            )
        );
        for d in &r.drifted {
            let when = d
                .modified_at
                .as_ref()
                .map(|t| format!(", modified {t} (UTC+8) at the gateway"))
                .unwrap_or_default();
            if markdown {
                let _ = writeln!(
                    out,
                    "- `{}` (template_id {}{when}): {}",
                    d.address,
                    d.template_id,
                    d.fields.join(", ")
                );
                continue;
            }
            let _ = writeln!(
                out,
                "  ~ {} (template_id {}{when}): {}",
                d.address,
                d.template_id,
                d.fields.join(", ")
            );
            if show_diffs {
                let change = Change {
                    address: d.address.clone(),
                    kind: d.address.kind,
                    action: Action::Update,
                    reason: "".into(),
                    before: Some(Box::new(d.recorded.clone())),
                    after: Some(Box::new(d.at_gateway.clone())),
                    deps: Vec::new(),
                    moved_from: None,
                };
                out.push_str(&diff(&change));
            }
        }
        out.push('\n');
    }
    if !r.missing.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            paint(
                DANGER,
                &format!(
                    "Recorded but not listed by the gateway ({}): check the app and the merchant's authorisation:",
                    r.missing.len()
                )
            )
        );
        for a in &r.missing {
            let _ = writeln!(out, "{}{a}", if markdown { "- " } else { "  " });
        }
        out.push('\n');
    }
    if !r.unmanaged.is_empty() {
        let _ = writeln!(
            out,
            "Unmanaged: {} template(s) at the gateway that this state does not know. To adopt one, add its import block:",
            r.unmanaged.len()
        );
        for u in &r.unmanaged {
            let name = u
                .name
                .as_ref()
                .map(|n| format!(" \"{n}\""))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{}merchant.{}: template_id {}{name}\n    import: [{}]",
                if markdown { "- " } else { "  " },
                u.merchant,
                u.template_id,
                u.import
            );
        }
        out.push('\n');
    }
    if !r.found_anything() {
        out.push_str("No drift: the gateway holds what the state recorded.\n\n");
    }
    out
}

/// What the selectors chose, for the plan's header; empty without them.
pub fn selection_line(plan: &Plan) -> String {
    let Some(sel) = &plan.selection else {
        return String::new();
    };
    let list = |v: &[String]| v.join(", ");
    let mut parts = Vec::new();
    if !sel.merchants.is_empty() {
        parts.push(format!("merchants {}", list(&sel.merchants)));
    }
    if !sel.targets.is_empty() {
        parts.push(format!("targets {}", list(&sel.targets)));
    }
    if !sel.exclude.is_empty() {
        parts.push(format!("excluding {}", list(&sel.exclude)));
    }
    let merchants = plan.merchants.as_ref().map_or(0, |m| m.len());
    format!(
        "Selected: {} ({merchants} merchant(s)); {} resource(s) of the manifests and state left out.\n",
        parts.join("; "),
        plan.left_out
    )
}

pub fn human(plan: &Plan, show_diffs: bool) -> String {
    let mut out = selection_line(plan);
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&refresh_section(plan, show_diffs, false));
    let changes: Vec<&Change> = plan.changes.iter().filter(|c| shown(c)).collect();
    if !changes.is_empty() {
        out.push_str("cardform will perform these actions:\n\n");
    }
    for c in &changes {
        let _ = writeln!(out, "  {}", paint(BOLD, &headline(c)));
        let reason = match (&c.moved_from, c.action) {
            (Some(from), Action::NoOp) => {
                format!("renamed from {from} in state; no gateway call")
            }
            _ => c.reason.to_string(),
        };
        let _ = writeln!(
            out,
            "  {} {}  ({reason})",
            paint(style(c.action), symbol(c.action)),
            c.address,
        );
        if show_diffs && !matches!(c.action, Action::Retire | Action::NoOp) {
            out.push_str(&diff(c));
        }
        out.push('\n');
    }
    let per = per_merchant(&changes);
    if per.len() > 1 || per.keys().any(|m| plan.display_names.contains_key(m)) {
        out.push_str("Per merchant:\n");
        for (m, [a, b, c, d]) in &per {
            let _ = writeln!(
                out,
                "  {}: {a} to create, {b} to update, {c} to replace, {d} to retire",
                merchant_label(plan, m)
            );
        }
        out.push('\n');
    }
    if plan.summary.retire > 0 {
        let _ = writeln!(
            out,
            "{}",
            paint(DANGER, &retire_warning(plan.summary.retire))
        );
    }
    if plan.summary.delete > 0 {
        let _ = writeln!(
            out,
            "{}",
            paint(DANGER, &delete_warning(plan.summary.delete))
        );
    }
    out.push_str(&paint(BOLD, &summary_line(plan)));
    out.push('\n');
    let budget = budget_line(plan);
    if !budget.is_empty() {
        out.push_str(&budget);
        out.push('\n');
    }
    out.push_str(&issuance(plan));
    out
}

/// What `cards serve` does per template (`issue` blocks): nothing apply
/// sends, said so that a reviewer sees it.
pub fn issuance(plan: &Plan) -> String {
    if plan.issuance.is_empty() {
        return String::new();
    }
    let mut out =
        String::from("\nMembers' cards (`cardform cards serve`; apply sends nothing for these):\n");
    for i in &plan.issuance {
        let mut parts = Vec::new();
        if i.flow == crate::model::Flow::Spi {
            parts.push("through the open-card SPI (3.1)".to_string());
        }
        match &i.level {
            Some(l) => parts.push(format!("new members on level `{l}`")),
            None => parts.push("new members on this template".to_string()),
        }
        if let Some(m) = &i.members {
            parts.push(format!(
                "card holders from `{m}` on their own card and level"
            ));
        }
        parts.push(format!("valid until {}", i.valid_date));
        if let Some(d) = i
            .done_url
            .as_ref()
            .filter(|_| i.flow != crate::model::Flow::Spi)
        {
            parts.push(format!("then to {d}"));
        }
        let _ = writeln!(out, "  {}: {}", i.template, parts.join("; "));
    }
    out
}

/// For a pull-request comment, at most `max_bytes` long: a table per
/// resource when it fits, else per merchant; attribute diffs folded, as many
/// as fit; and a line saying what was left out.
pub fn markdown(plan: &Plan, max_bytes: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### cardform plan\n\n**{}**\n", summary_line(plan));
    let selected = selection_line(plan);
    if !selected.is_empty() {
        let _ = writeln!(out, "{}", escape(selected.trim_end()));
    }
    let budget = budget_line(plan);
    if !budget.is_empty() {
        let _ = writeln!(out, "{}\n", escape(&budget));
    }
    out.push_str(&refresh_section(plan, false, true));
    let changes: Vec<&Change> = plan.changes.iter().filter(|c| shown(c)).collect();
    if changes.is_empty() {
        return out;
    }
    // What is left out, said at the end (its length is reserved up front).
    let reserve = 400;
    let budget = max_bytes.saturating_sub(reserve);
    let mut omitted: Vec<String> = Vec::new();

    if plan.summary.delete > 0 {
        let _ = writeln!(
            out,
            "> [!CAUTION]\n> {}",
            delete_warning(plan.summary.delete)
        );
        for c in changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .take(50)
        {
            let _ = writeln!(out, "> - `{}`: {}", c.address, escape(&c.reason));
        }
        out.push('\n');
    }
    let retires: Vec<&&Change> = changes
        .iter()
        .filter(|c| c.action == Action::Retire)
        .collect();
    if !retires.is_empty() {
        let _ = writeln!(out, "> [!WARNING]\n> {}", retire_warning(retires.len()));
        let mut listed = 0;
        for c in &retires {
            let line = format!("> - `{}`: {}\n", c.address, escape(&c.reason));
            if out.len() + line.len() > budget / 4 {
                break;
            }
            out.push_str(&line);
            listed += 1;
        }
        if listed < retires.len() {
            omitted.push(format!(
                "{} of {} retired addresses",
                retires.len() - listed,
                retires.len()
            ));
        }
        out.push('\n');
    }

    let mut table = String::from("| | resource | action | why |\n|---|---|---|---|\n");
    for c in &changes {
        let _ = writeln!(
            table,
            "| `{}` | `{}` | {} | {} |",
            symbol(c.action),
            c.address,
            action_text(c),
            escape(&match &c.moved_from {
                Some(from) => format!("moved from `{from}`; {}", c.reason),
                None => c.reason.to_string(),
            })
        );
    }
    if changes.len() <= 50 && out.len() + table.len() <= budget {
        out.push_str(&table);
    } else {
        out.push_str("| merchant | create | update | replace | retire |\n|---|---|---|---|---|\n");
        let per = per_merchant(&changes);
        let mut shown = 0;
        for (m, [a, b, c, d]) in &per {
            let row = format!(
                "| {} | {a} | {b} | {c} | {d} |\n",
                escape(&merchant_label(plan, m))
            );
            if out.len() + row.len() > budget {
                break;
            }
            out.push_str(&row);
            shown += 1;
        }
        if shown < per.len() {
            omitted.push(format!(
                "{} of {} merchants' rows",
                per.len() - shown,
                per.len()
            ));
        }
        if changes.len() <= 50 {
            omitted.push("the per-resource table".into());
        }
    }

    let with_diffs: Vec<&&Change> = changes
        .iter()
        .filter(|c| matches!(c.action, Action::Update | Action::Replace | Action::Import))
        .collect();
    if !with_diffs.is_empty() {
        let open = "\n<details><summary>attribute diffs</summary>\n\n```diff\n";
        let close = "```\n\n</details>\n";
        let mut body = String::new();
        let mut shown = 0;
        for c in &with_diffs {
            let part = format!("# {}\n{}", c.address, diff_block(c));
            if out.len() + open.len() + body.len() + part.len() + close.len() > budget {
                continue;
            }
            body.push_str(&part);
            shown += 1;
        }
        if shown > 0 {
            out.push_str(open);
            out.push_str(&body);
            out.push_str(close);
        }
        if shown < with_diffs.len() {
            omitted.push(format!(
                "{} of {} attribute diffs",
                with_diffs.len() - shown,
                with_diffs.len()
            ));
        }
    }
    if !omitted.is_empty() {
        let _ = writeln!(
            out,
            "\n_Left out to stay under {max_bytes} bytes: {}. Run `cardform plan` for the whole plan._",
            omitted.join("; ")
        );
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Show the plan and ask for `yes` on the terminal (never without one).
pub fn confirm(plan: &crate::plan::Plan, to_stderr: bool) -> bool {
    super::text_to(&human(plan, true), to_stderr);
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() {
        super::note(
            "error: refusing to apply without confirmation: stdin is not a terminal\nhint: pass --auto-approve, or apply a saved plan",
        );
        return false;
    }
    let retire = plan.summary.retire;
    if plan.summary.delete > 0 {
        super::prompt(
            &super::warning_text(&format!(
                "\nThis plan DELETES {} benefit(s) at Alipay.",
                plan.summary.delete
            )),
            to_stderr,
        );
    }
    let question = if retire > 0 {
        super::warning_text(&format!(
            "\nThis plan RETIRES {retire} resource(s): cardform forgets them, they stay at Alipay and cannot be deleted there.\nDo you want to perform these actions, retiring {retire} resource(s)? Only 'yes' is accepted: "
        ))
    } else {
        "\nDo you want to perform these actions? Only 'yes' is accepted: ".to_string()
    };
    super::prompt(&question, to_stderr);
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    answer.trim() == "yes"
}

/// Where `plan --preview-dir` put its pictures, for people.
pub fn previews_human(
    dir: &std::path::Path,
    previews: &[crate::ops::preview::PlanPreview],
) -> String {
    let mut out = String::new();
    if previews.is_empty() {
        let _ = writeln!(
            out,
            "\nNo template changes: no preview written to {}.",
            dir.display()
        );
        return out;
    }
    let _ = writeln!(out, "\nCard previews in {}:", dir.display());
    for p in previews {
        let shown = p.compare.as_ref().unwrap_or(&p.after);
        let _ = writeln!(out, "  {}  {}", p.address, dir.join(shown).display());
        for w in &p.warnings {
            let _ = writeln!(out, "    warning: {w}");
        }
    }
    out
}

/// The same as a Markdown section, with the pictures inline (paths relative
/// to where the plan was run, as `--preview-dir` was given: a pipeline
/// uploads that directory beside the comment).
pub fn previews_markdown(
    dir: &std::path::Path,
    previews: &[crate::ops::preview::PlanPreview],
) -> String {
    let mut out = String::new();
    if previews.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\n#### Card previews\n");
    let link = |p: &std::path::PathBuf| dir.join(p).display().to_string().replace(' ', "%20");
    for p in previews {
        let _ = writeln!(out, "**`{}`** ({})\n", p.address, p.action.as_str());
        match (&p.before, &p.compare) {
            (Some(before), Some(compare)) => {
                let _ = writeln!(
                    out,
                    "![before and after, changes outlined]({})\n\n[before]({}) · [after]({})\n",
                    link(compare),
                    link(before),
                    link(&p.after)
                );
            }
            _ => {
                let _ = writeln!(out, "![new card]({})\n", link(&p.after));
            }
        }
        for w in &p.warnings {
            let _ = writeln!(out, "- warning: {}", escape(w));
        }
        if !p.warnings.is_empty() {
            out.push('\n');
        }
    }
    out
}
