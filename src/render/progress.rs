//! Apply progress: a bar on a terminal, plain lines otherwise (CI), and the
//! final report.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::alipay::GatewayError;
use crate::apply::{Outcome, Progress, Report, ResultLine};
use crate::model::Address;

pub fn line_for(l: &ResultLine) -> String {
    match &l.outcome {
        Outcome::Done { note } => format!(
            "{}: {} done{}",
            l.address,
            l.action.as_str(),
            note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
        ),
        Outcome::Failed { error, .. } => {
            format!("{}: {} FAILED: {error}", l.address, l.action.as_str())
        }
        Outcome::Skipped { because } => {
            format!("{}: skipped, because `{because}` failed", l.address)
        }
    }
}

/// Plain lines on stderr, one per finished change.
pub struct Lines;

impl Progress for Lines {
    fn finished(&self, l: &ResultLine) {
        let _ = writeln!(std::io::stderr().lock(), "{}", line_for(l));
    }
    fn retrying(&self, address: &Address, attempt: u32, error: &GatewayError, wait: Duration) {
        let _ = writeln!(
            std::io::stderr().lock(),
            "{address}: attempt {attempt} failed ({error}); retrying in {wait:.1?}"
        );
    }
}

/// A progress bar; failures and retries printed above it.
pub struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn start(&self, total: usize) {
        self.0.set_length(total as u64);
    }
    fn finished(&self, l: &ResultLine) {
        if !matches!(l.outcome, Outcome::Done { .. }) {
            self.0.println(line_for(l));
        }
        self.0.inc(1);
    }
    fn retrying(&self, address: &Address, attempt: u32, error: &GatewayError, wait: Duration) {
        self.0.println(format!(
            "{address}: attempt {attempt} failed ({error}); retrying in {wait:.1?}"
        ));
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
        std::sync::Arc::new(Bar(bar))
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
    if let Some(e) = &r.state_error {
        let _ = writeln!(
            out,
            "\nState: {e}\n  every result was recorded; run apply again to make sure it is on disk"
        );
    }
    let _ = writeln!(
        out,
        "\nApply {}: {done} done, {failed} failed, {skipped} skipped ({} gateway calls, {} retries, {:.1}s).",
        if r.ok() { "complete" } else { "incomplete" },
        r.calls,
        r.retries,
        r.elapsed_ms as f64 / 1000.0
    );
    out
}
