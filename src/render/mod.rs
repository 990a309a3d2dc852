//! Everything cardform shows people: results on stdout, messages on stderr.
//! The only module that writes to the terminal.

#![allow(clippy::print_stdout, clippy::print_stderr)] // the rooms that print

pub mod cards;
pub mod plan;
pub mod progress;

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

/// One diagnostic, compiler style, drawn by codespan-reporting. The source
/// it shows is the diagnostic's own snippet (already redacted where it sets a
/// secret), never the file: `OneLine` presents that line at its real line
/// number.
pub fn format_diagnostic(d: &crate::manifest::Diagnostic) -> String {
    use codespan_reporting::diagnostic::{Diagnostic, Label};
    use codespan_reporting::term::{self, Chars, Config, DisplayStyle};
    let severity = match d.severity {
        crate::manifest::Severity::Error => codespan_reporting::diagnostic::Severity::Error,
        crate::manifest::Severity::Warning => codespan_reporting::diagnostic::Severity::Warning,
    };
    let mut notes = Vec::new();
    if !d.path.is_empty() {
        notes.push(format!("at: {}", d.path));
    }
    if let Some(h) = &d.hint {
        notes.push(format!("hint: {h}"));
    }
    let file = OneLine {
        name: d.file.display().to_string(),
        line: d.line.max(1),
        text: d.snippet.clone().unwrap_or_default(),
    };
    let mut diagnostic = Diagnostic::new(severity)
        .with_message(&d.message)
        .with_notes(notes);
    let config = Config {
        chars: Chars::ascii(),
        ..Config::default()
    };
    let text = if d.snippet.is_some() {
        // The caret at the column (in characters), clamped to the line.
        let start = file
            .text
            .char_indices()
            .nth(d.column.saturating_sub(1))
            .map_or(file.text.len(), |(i, _)| i);
        // Underline the word there (a key, a value), at least one character.
        let word = file.text[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | ']' | '}'))
            .unwrap_or(file.text.len() - start);
        let end = if word > 0 {
            start + word
        } else {
            file.text[start..]
                .chars()
                .next()
                .map_or(start, |c| start + c.len_utf8())
        };
        diagnostic = diagnostic.with_labels(vec![Label::primary((), start..end)]);
        term::emit_into_string(&config, &file, &diagnostic).ok()
    } else {
        None
    };
    text.unwrap_or_else(|| {
        // No source line to show: the location alone.
        let config = Config {
            display_style: DisplayStyle::Medium,
            ..config
        };
        let s = term::emit_into_string(&config, &file, &diagnostic).unwrap_or_default();
        let (first, rest) = s.split_once('\n').unwrap_or((&s, ""));
        format!("{first}\n  --> {}\n{rest}", d.location())
    })
}

/// A "file" of one line, numbered as in the manifest it came from.
struct OneLine {
    name: String,
    line: usize,
    text: String,
}

impl<'a> codespan_reporting::files::Files<'a> for OneLine {
    type FileId = ();
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, _: ()) -> Result<&'a str, codespan_reporting::files::Error> {
        Ok(&self.name)
    }
    fn source(&'a self, _: ()) -> Result<&'a str, codespan_reporting::files::Error> {
        Ok(&self.text)
    }
    fn line_index(&'a self, _: (), _: usize) -> Result<usize, codespan_reporting::files::Error> {
        Ok(self.line - 1)
    }
    fn line_range(
        &'a self,
        _: (),
        line_index: usize,
    ) -> Result<std::ops::Range<usize>, codespan_reporting::files::Error> {
        if line_index == self.line - 1 {
            Ok(0..self.text.len())
        } else {
            Ok(self.text.len()..self.text.len())
        }
    }
}
