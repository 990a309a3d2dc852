//! `cardform cards`: progress (rate and ETA) and the summary. Rows are named
//! by their line and external card number, never by a member's data.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::alipay::GatewayError;
use crate::apply::cards::{Counts, Outcome, Progress, Report};
use crate::gateway::Scope;
use crate::gateway::governor::Observer;

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate_eta(counts: &Counts, elapsed: Duration) -> (f64, Option<Duration>) {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = counts.done as f64 / secs;
    let left = counts.rows.saturating_sub(counts.invalid + counts.done);
    let eta = (rate > 0.0).then(|| Duration::from_secs_f64(left as f64 / rate));
    (rate, eta)
}

/// A bar on a terminal; a line every few seconds in a pipe.
pub struct Bar {
    what: &'static str,
    bar: Option<indicatif::ProgressBar>,
    last: Mutex<Instant>,
}

impl Bar {
    pub fn new(what: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} rows · {per_sec} · ETA {eta} · {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Bar {
            what,
            bar,
            last: Mutex::new(Instant::now()),
        }
    }

    fn println(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => {
                let _ = writeln!(anstream::stderr().lock(), "{text}");
            }
        }
    }
}

fn tally(c: &Counts) -> String {
    let mut parts = Vec::new();
    for (n, word) in [
        (c.opened, "opened"),
        (c.already_open, "already open"),
        (c.updated, "updated"),
        (c.unchanged, "unchanged"),
        (c.synced, "synced"),
        (c.already_synced, "already synced"),
        (c.notified, "notified"),
        (c.already_notified, "already notified"),
        (c.would, "would change"),
        (c.failed, "failed"),
        (c.not_attempted, "not attempted"),
    ] {
        if n > 0 {
            parts.push(format!("{} {word}", thousands(n)));
        }
    }
    if parts.is_empty() {
        "starting".into()
    } else {
        parts.join(" · ")
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
        // Only the first retries: a throttled batch would otherwise print a
        // line per row.
        if attempt <= 1 {
            self.println(&format!(
                "merchant `{}` ({method}): attempt {attempt} failed ({}); retrying in {wait:.1?}",
                at.merchant,
                error
                    .api()
                    .map(|a| format!("{} {}", a.code, a.sub_code.as_deref().unwrap_or(&a.msg)))
                    .unwrap_or_else(|| error.retry_hint().to_string())
            ));
        }
    }
}

impl Progress for Bar {
    fn checked(&self, counts: &Counts) {
        let go = counts.rows - counts.invalid;
        if counts.invalid > 0 {
            self.println(&format!(
                "{} of {} rows are invalid (listed at the end); the other {} go ahead",
                thousands(counts.invalid),
                thousands(counts.rows),
                thousands(go)
            ));
        }
        if let Some(b) = &self.bar {
            b.set_length(go);
        }
    }

    fn row(&self, counts: &Counts, elapsed: Duration) {
        match &self.bar {
            Some(b) => {
                b.set_position(counts.done);
                b.set_message(tally(counts));
            }
            None => {
                let mut last = self.last.lock().expect("not poisoned");
                if last.elapsed() >= Duration::from_secs(5) {
                    *last = Instant::now();
                    let (rate, eta) = rate_eta(counts, elapsed);
                    let _ = writeln!(
                        anstream::stderr().lock(),
                        "cards {}: {}/{} rows · {rate:.0}/s · ETA {} · {}",
                        self.what,
                        thousands(counts.done),
                        thousands(counts.rows - counts.invalid),
                        eta.map_or("-".into(), |e| humantime::format_duration(
                            Duration::from_secs(e.as_secs())
                        )
                        .to_string()),
                        tally(counts)
                    );
                }
            }
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// The summary: totals, then each problem row (the first 20).
pub fn report(r: &Report, csv: &Path, results: Option<&Path>) -> String {
    let c = &r.counts;
    let secs = r.elapsed_ms as f64 / 1000.0;
    let mut out = format!(
        "cards {} on `{}`: {} rows · {}{} in {secs:.1}s ({:.0} rows/s; {} calls{})\n",
        r.purpose,
        r.template,
        thousands(c.rows),
        tally(c),
        if c.invalid > 0 {
            format!(" · {} invalid", thousands(c.invalid))
        } else {
            String::new()
        },
        c.done as f64 / secs.max(1e-3),
        thousands(r.calls),
        if r.throttled > 0 {
            format!(", {} throttled", thousands(r.throttled))
        } else {
            String::new()
        },
    );
    if c.open_changed > 0 {
        out.push_str(&format!(
            "{} card(s) were opened earlier from rows with other values: `cardform cards sync` with this file brings them up to date\n",
            thousands(c.open_changed)
        ));
    }
    if let Some(why) = &r.merchant_blocked {
        out.push_str(&format!(
            "{}\n",
            super::warning_text(&format!("stopped: {why}"))
        ));
    }
    for p in r.problems.iter().take(20) {
        let card = if p.external_card_no.is_empty() {
            String::new()
        } else {
            format!(" ({})", p.external_card_no)
        };
        let what = match &p.outcome {
            Outcome::Invalid { message } => format!("invalid: {message}"),
            Outcome::NotAttempted { message } => format!("not attempted: {message}"),
            Outcome::Failed {
                code,
                sub_code,
                message,
            } if !code.is_empty() => format!("failed: {code} {sub_code}: {message}"),
            Outcome::Failed { message, .. } => format!("failed: {message}"),
            _ => continue,
        };
        out.push_str(&format!("  {}:{}{card}: {what}\n", csv.display(), p.line));
    }
    let problems = c.invalid + c.failed + c.not_attempted;
    if problems > 20 {
        out.push_str(&format!(
            "  ... and {} more{}\n",
            thousands(problems - 20),
            match results {
                Some(p) => format!(" (every row is in `{}`)", p.display()),
                None => " (--results FILE lists every row)".into(),
            }
        ));
    }
    out
}

/// `cards serve`'s log: one line per callback on stderr, with the time.
pub struct ServeLog {
    /// One JSON object a line (`--log-format json`): `ts`, `msg`, and the
    /// ids a line names (`request_id`, `out_serial_no`), never a member.
    pub json: bool,
}

impl Observer for ServeLog {
    fn retrying(
        &self,
        at: &Scope,
        method: &str,
        attempt: u32,
        error: &GatewayError,
        wait: Duration,
    ) {
        let said = error
            .api()
            .map(|a| format!("{} {}", a.code, a.sub_code.as_deref().unwrap_or(&a.msg)))
            .unwrap_or_else(|| error.retry_hint().to_string());
        crate::ops::cards_serve::Log::line(
            self,
            &format!(
                "merchant `{}` ({method}): attempt {attempt} failed ({said}); retrying in {wait:.1?}",
                at.merchant
            ),
        );
    }
}

impl crate::ops::cards_serve::Log for ServeLog {
    fn line(&self, text: &str) {
        let now = chrono::Local::now();
        if !self.json {
            let now = now.format("%Y-%m-%dT%H:%M:%S%.3f");
            let _ = writeln!(anstream::stderr().lock(), "{now} {text}");
            return;
        }
        let ts = now.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string();
        let mut line = serde_json::json!({ "ts": ts, "msg": text });
        for key in ["request_id", "out_serial_no"] {
            if let Some(v) = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
            {
                line[key] = serde_json::Value::from(v.trim_end_matches(':'));
            }
        }
        let _ = writeln!(anstream::stderr().lock(), "{line}");
    }
}

/// The first lines of `cards serve` (stdout: a test or supervisor reads the
/// address from the first).
pub fn serving(addr: std::net::SocketAddr, sandbox: Option<&str>) {
    let mut out = anstream::stdout().lock();
    let _ = writeln!(out, "cards serve listening on http://{addr}");
    if let Some(s) = sandbox {
        let _ = writeln!(
            out,
            "embedded sandbox at {s} (a member activates with POST {s}/_sandbox/activate)"
        );
    }
    let _ = out.flush();
}
