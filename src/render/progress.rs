//! Apply progress: a bar on a terminal, plain lines otherwise (CI), and the
//! final report.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::{ADD, BOLD, CHANGE, DANGER, REPLACE, paint};
use crate::alipay::GatewayError;
use crate::apply::{Outcome, Progress, Report, ResultLine};
use crate::gateway::Scope;
use crate::gateway::governor::Observer;
use crate::model::Kind;
use crate::plan::Action;
use crate::state::Ids;

/// The resource's own id, Terraform style: `[template_id=...]` (a form and
/// an activation URL also record their template's id, not shown again).
pub fn ids_text(kind: Kind, ids: &Ids) -> String {
    crate::provider::ids_text(kind, ids)
}

pub fn line_for(l: &ResultLine) -> String {
    match &l.outcome {
        Outcome::Done { note } => {
            let (style, what) = match l.action {
                Action::Import => (ADD, "Import complete"),
                Action::Create => (ADD, "Creation complete"),
                Action::Update => (CHANGE, "Modifications complete"),
                Action::Replace => (REPLACE, "Replacement complete"),
                Action::Retire => (DANGER, "Retired (forgotten from state)"),
                Action::Delete => (DANGER, "Deleted at Alipay"),
                Action::NoOp => (CHANGE, "Up to date"),
            };
            format!(
                "{}: {}{}{}",
                l.address,
                paint(style, what),
                l.ids
                    .as_ref()
                    .map(|i| ids_text(l.address.kind, i))
                    .unwrap_or_default(),
                note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
            )
        }
        Outcome::Failed { error, .. } => {
            format!(
                "{}: {} {}: {error}",
                l.address,
                l.action.as_str(),
                paint(DANGER, "FAILED")
            )
        }
        Outcome::Skipped { because } => {
            format!("{}: skipped, because `{because}` failed", l.address)
        }
    }
}

/// A retry, named by the resource it serves (else the merchant and method).
fn retry_line(
    at: &Scope,
    method: &str,
    attempt: u32,
    error: &GatewayError,
    wait: Duration,
) -> String {
    let who = match &at.subject {
        Some(address) => address.to_string(),
        None => format!("merchant `{}` ({method})", at.merchant),
    };
    let what = if error.class() == crate::alipay::ErrorClass::Throttled {
        format!("; merchant `{}` slows down", at.merchant)
    } else {
        String::new()
    };
    format!("{who}: attempt {attempt} failed ({error}); retrying in {wait:.1?}{what}")
}

/// Plain lines on stderr, one per finished change.
pub struct Lines;

impl Progress for Lines {
    fn finished(&self, l: &ResultLine) {
        let _ = writeln!(anstream::stderr().lock(), "{}", line_for(l));
    }
}

impl Observer for Lines {
    fn retrying(
        &self,
        at: &Scope,
        method: &str,
        attempt: u32,
        error: &GatewayError,
        wait: Duration,
    ) {
        let _ = writeln!(
            anstream::stderr().lock(),
            "{}",
            retry_line(at, method, attempt, error, wait)
        );
    }
}

/// A progress bar on a terminal, every finished change printed above it
/// with its ids (colour stripped when NO_COLOR asks for none).
pub struct Bar {
    bar: indicatif::ProgressBar,
    colour: bool,
}

impl Bar {
    fn println(&self, text: String) {
        if self.colour {
            self.bar.println(text);
        } else {
            self.bar
                .println(anstream::adapter::strip_str(&text).to_string());
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: usize) {
        self.bar.set_length(total as u64);
    }
    fn finished(&self, l: &ResultLine) {
        self.println(line_for(l));
        self.bar.inc(1);
    }
}

impl Observer for Bar {
    fn retrying(
        &self,
        at: &Scope,
        method: &str,
        attempt: u32,
        error: &GatewayError,
        wait: Duration,
    ) {
        self.println(retry_line(at, method, attempt, error, wait));
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A bar when stderr is a terminal, plain lines otherwise.
pub fn for_terminal() -> std::sync::Arc<dyn Progress> {
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {msg}")
        {
            bar.set_style(style);
        }
        std::sync::Arc::new(Bar {
            bar,
            colour: super::stderr_colour(),
        })
    } else {
        std::sync::Arc::new(Lines)
    }
}

pub fn report(r: &Report) -> String {
    let mut out = String::new();
    let done = r.count(|o| matches!(o, Outcome::Done { .. }));
    let failed = r.count(|o| matches!(o, Outcome::Failed { .. }));
    let skipped = r.count(|o| matches!(o, Outcome::Skipped { .. }));
    if failed > 0 {
        out.push_str("\nFailures:\n");
        for l in r.failed() {
            if let Outcome::Failed {
                error,
                code,
                sub_code,
                retryable,
            } = &l.outcome
            {
                let _ = writeln!(out, "  {} ({})", l.address, l.action.as_str());
                let _ = writeln!(out, "    {error}");
                if let Some(c) = code {
                    let _ = writeln!(
                        out,
                        "    code {c}{}; {}",
                        sub_code
                            .as_ref()
                            .map(|s| format!(", sub_code {s}"))
                            .unwrap_or_default(),
                        if *retryable {
                            "a later run may succeed"
                        } else {
                            "retrying will not help"
                        }
                    );
                }
            }
        }
    }
    let stopped: Vec<(&String, &String)> = r
        .merchants
        .iter()
        .filter_map(|(m, x)| Some((m, x.stopped.as_ref()?)))
        .collect();
    if !stopped.is_empty() {
        let _ = writeln!(
            out,
            "\nStopped early (their remaining changes were not attempted; every other merchant went on):"
        );
        for (m, hint) in &stopped {
            let x = &r.merchants[*m];
            let _ = writeln!(
                out,
                "  merchant `{m}`: {} done, {} failed, {} skipped\n    {}",
                x.done,
                x.failed,
                x.skipped,
                paint(DANGER, hint)
            );
        }
    }
    if r.merchants.len() > 1 && (failed > 0 || skipped > 0) {
        let _ = writeln!(out, "\nPer merchant:");
        for (m, x) in &r.merchants {
            let _ = writeln!(
                out,
                "  {m}: {} done, {} failed, {} skipped",
                x.done, x.failed, x.skipped
            );
        }
    }
    if !r.retired.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            paint(
                DANGER,
                &format!(
                    "Retired {} resource(s): forgotten from state; they stay at Alipay:",
                    r.retired.len()
                )
            )
        );
        for x in &r.retired {
            let _ = writeln!(out, "  {}{}", x.address, ids_text(x.address.kind, &x.ids));
        }
    }
    if !r.moved.is_empty() {
        let _ = writeln!(
            out,
            "\nMoved {} record(s) in state (no gateway call):",
            r.moved.len()
        );
        for m in &r.moved {
            let _ = writeln!(out, "  {} -> {}", m.from, m.to);
        }
    }
    if r.uploads_in_doubt > 0 {
        let _ = writeln!(
            out,
            "\n{} image upload(s) failed after the request may have reached the gateway: they may have left unused images at Alipay (harmless, but an upload cannot be made idempotent, and Alipay cannot delete images).",
            r.uploads_in_doubt
        );
    }
    if !r.throttled.is_empty() {
        let _ = writeln!(
            out,
            "\nThrottled by the gateway (40005); only these merchants slowed down:"
        );
        for (m, t) in &r.throttled {
            let _ = writeln!(
                out,
                "  merchant `{m}`: {} throttling answer(s), its calls waited {:.1}s in all",
                t.answers,
                t.waited_ms as f64 / 1000.0
            );
        }
    }
    if let Some(rate) = r.learned_app_rate {
        let _ = writeln!(
            out,
            "\nThe gateway said the app was over its limit at about {rate:.0} calls/s (no rate limit is configured); cardform held the app to half of that and recovered from there. A limit a little under it avoids the throttling from the start:\n  gateway:\n    rate_limits: {{ per_second: {} }}",
            ((rate * 0.8).floor() as u64).max(1)
        );
    }
    if let Some(e) = &r.state_error {
        let _ = writeln!(out, "\n{}", paint(DANGER, &format!("State: {e}")));
        if r.not_on_disk.is_empty() {
            let _ = writeln!(
                out,
                "  every result before it is on disk; run apply again once the cause is fixed"
            );
        } else {
            let _ = writeln!(
                out,
                "  {} result(s) were recorded but may not be on disk:",
                r.not_on_disk.len()
            );
            for a in &r.not_on_disk {
                let _ = writeln!(out, "    {a}");
            }
            let _ = writeln!(
                out,
                "  every other result is on disk. Run apply again once the cause is fixed: a create whose result was lost is still journalled and is replayed with the same request_id (no duplicate); forms and activation URLs are set again"
            );
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        paint(
            BOLD,
            &format!(
                "Apply {}: {done} done, {failed} failed, {skipped} skipped ({} gateway calls, {} retries, {:.1}s).",
                if r.ok() { "complete" } else { "incomplete" },
                r.calls,
                r.retries,
                r.elapsed_ms as f64 / 1000.0
            )
        )
    );
    out
}
