//! Everything cardform shows people: results on stdout, messages on stderr.
//! The only module that writes to the terminal.

pub mod plan;
pub mod progress;
pub mod qr;

use std::io::Write;

use serde::Serialize;

use crate::alipay::GatewayError;

// Colour: text is styled with ANSI codes here and written through anstream,
// which passes them to a terminal and strips them from pipes and files, and
// when NO_COLOR is set (CLICOLOR_FORCE forces them).

pub const ADD: anstyle::Style = anstyle::AnsiColor::Green.on_default();
pub const CHANGE: anstyle::Style = anstyle::AnsiColor::Yellow.on_default();
pub const REPLACE: anstyle::Style = anstyle::AnsiColor::Magenta.on_default();
pub const DANGER: anstyle::Style = anstyle::AnsiColor::Red.on_default().bold();
pub const BOLD: anstyle::Style = anstyle::Style::new().bold();

/// `text` in `style` (ANSI codes; stripped on output where colour is off).
pub fn paint(style: anstyle::Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// A warning people must not miss.
pub fn warning_text(text: &str) -> String {
    paint(DANGER, text)
}

/// Whether stderr shows colour (for writers that bypass anstream).
pub fn stderr_colour() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}

/// Pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

/// Text on stdout, as is.
pub fn text(text: &str) {
    let _ = write!(anstream::stdout().lock(), "{text}");
}

/// Text on stdout, or on stderr when stdout carries a JSON document.
pub fn text_to(text: &str, to_stderr: bool) {
    if to_stderr {
        let _ = write!(anstream::stderr().lock(), "{text}");
    } else {
        self::text(text);
    }
}

/// A question, flushed so that it shows before the answer is read.
pub fn prompt(text: &str, to_stderr: bool) {
    text_to(text, to_stderr);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// A line on stdout.
pub fn line(text: &str) {
    let _ = writeln!(anstream::stdout().lock(), "{text}");
}

/// A progress or status note on stderr.
pub fn note(text: &str) {
    let _ = writeln!(anstream::stderr().lock(), "{text}");
}

/// An error and its causes on stderr, cargo style.
pub fn error(err: &anyhow::Error) {
    let mut e = anstream::stderr().lock();
    let _ = writeln!(e, "{} {err}", paint(DANGER, "error:"));
    for cause in err.chain().skip(1) {
        let _ = writeln!(e, "  caused by: {cause}");
    }
}

/// A gateway failure: the message, its codes, and whether a retry can help.
pub fn gateway_error(err: &GatewayError) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "error: {err}");
    if let Some(api) = err.api() {
        let _ = writeln!(e, "  code: {}", api.code);
        if let Some(s) = &api.sub_code {
            let _ = writeln!(e, "  sub_code: {s}");
        }
        if let Some(s) = &api.sub_msg {
            let _ = writeln!(e, "  sub_msg: {s}");
        }
    }
    let _ = writeln!(e, "  retry: {}", err.retry_hint());
}

/// Manifest diagnostics, compiler style, on stderr.
pub fn diagnostics(diags: &crate::manifest::Diagnostics) {
    let mut e = anstream::stderr().lock();
    for d in &diags.0 {
        let _ = write!(e, "{}", format_diagnostic(d));
    }
}

pub fn format_diagnostic(d: &crate::manifest::Diagnostic) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let sev = match d.severity {
        crate::manifest::Severity::Error => "error",
        crate::manifest::Severity::Warning => "warning",
    };
    let _ = writeln!(s, "{sev}: {}", d.message);
    let _ = writeln!(s, "  --> {}", d.location());
    if let Some(line) = &d.snippet {
        let n = d.line.to_string();
        let pad = " ".repeat(n.len());
        let _ = writeln!(s, "{pad} |");
        let _ = writeln!(s, "{n} | {line}");
        let _ = writeln!(
            s,
            "{pad} | {}^",
            " ".repeat(d.column.saturating_sub(1).min(line.len()))
        );
    }
    if !d.path.is_empty() {
        let _ = writeln!(s, "  = at: {}", d.path);
    }
    if let Some(h) = &d.hint {
        let _ = writeln!(s, "  = hint: {h}");
    }
    s
}
