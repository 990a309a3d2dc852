//! Manifest diagnostics: what is wrong, where (`file:line:col` and YAML path),
//! the source line, and a hint where one helps. Data only; `render` shows them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::source::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted YAML path, e.g. `merchants.brew.templates.club.style.logo`.
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The source line the position is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snippet: Option<String>,
}

impl Diagnostic {
    pub fn new(file: &Path, pos: Pos, path: &str, message: impl Into<String>) -> Self {
        let message = clip_quoted(&message.into(), 200);
        // A "hint:" line inside the message becomes the hint.
        let (message, hint) = match message.split_once("\nhint: ") {
            Some((m, h)) => (m.to_string(), Some(h.to_string())),
            None => (message, None),
        };
        Diagnostic {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line: pos.line,
            column: pos.col,
            path: path.to_string(),
            message,
            hint,
            snippet: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The source line to show; a line that sets a secret-bearing field
    /// shows its key only.
    pub fn with_snippet(mut self, snippet: Option<String>) -> Self {
        self.snippet = snippet.map(|line| clip(&line, 200)).map(|line| {
            let key = line
                .trim_start()
                .trim_start_matches("- ")
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\'']);
            let value = line.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
            let names_a_source = value.is_empty()
                || (value.starts_with('{') && (value.contains("file:") || value.contains("env:")));
            // A URL with credentials in it (`postgres://user:password@…`).
            let has_credentials = value.contains("://") && value.contains('@');
            if (super::SECRET_FIELDS.contains(&key) && !names_a_source) || has_credentials {
                super::redact_line(&line)
            } else {
                line
            }
        });
        self
    }

    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:col`
    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }
    pub fn sort(&mut self) {
        self.0.sort_by(|a, b| {
            (&a.file, a.line, a.column, &a.message).cmp(&(&b.file, b.line, b.column, &b.message))
        });
        self.0.dedup();
    }
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.iter().filter(|d| d.is_error()).count();
        write!(f, "the manifest has {n} error(s)")
    }
}

impl std::error::Error for Diagnostics {}

/// The closest candidate within a small edit distance, for "did you mean".
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d > 0 && *d <= 2.max(word.len() / 4) && *d < c.len().max(word.len()))
        .min()
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

pub use crate::util::text::{clip, clip_quoted};
