//! Reading manifest files safely, and an index from YAML paths to source
//! positions so that every later check can point at `file:line:col`.
//!
//! Limits make hostile input a clear error, never a hang or unbounded memory:
//! file size, nesting depth, and the node count after alias expansion
//! ("billion laughs").

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::diag::Diagnostic;

pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_DEPTH: usize = 64;
pub const MAX_NODES: usize = 2_000_000;

/// A position in a file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// One manifest file: its text and where each YAML path starts.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    index: HashMap<String, Pos>,
}

impl SourceFile {
    /// The position of a YAML path, or of its nearest ancestor that has one.
    pub fn pos(&self, yaml_path: &str) -> Pos {
        let mut p = yaml_path;
        loop {
            if let Some(pos) = self.index.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => {
                    return self
                        .index
                        .get("")
                        .copied()
                        .unwrap_or(Pos { line: 1, col: 1 });
                }
            }
        }
    }

    /// Whether this exact YAML path is written in the file.
    pub fn has(&self, yaml_path: &str) -> bool {
        self.index.contains_key(yaml_path)
    }

    /// The text of a 1-based line.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        self.text.lines().nth(line.saturating_sub(1))
    }

    /// A diagnostic located at a YAML path of this file.
    pub fn diag(&self, yaml_path: &str, message: impl Into<String>) -> Diagnostic {
        let pos = self.pos(yaml_path);
        Diagnostic::new(&self.path, pos, yaml_path, message)
            .with_snippet(self.line_text(pos.line).map(str::to_string))
    }
}

/// Append a mapping key to a YAML path. Keys that are not plain names are quoted.
pub fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$');
    match (path.is_empty(), plain) {
        (true, true) => key.to_string(),
        (true, false) => format!("{key:?}"),
        (false, true) => format!("{path}.{key}"),
        (false, false) => format!("{path}.{key:?}"),
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        anchor: usize,
        start_nodes: usize,
    },
    Seq {
        path: String,
        next: usize,
        anchor: usize,
        start_nodes: usize,
    },
}

struct Indexer {
    stack: Vec<Frame>,
    index: HashMap<String, Pos>,
    /// Node count of each anchored node, for alias expansion accounting.
    anchor_sizes: HashMap<usize, usize>,
    nodes: usize,
    documents: usize,
    error: Option<String>,
    /// A sequence item that is a mapping is positioned at its first key.
    pending_item: Option<String>,
}

impl Indexer {
    /// The path the next node takes, consuming the current key.
    fn next_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key, .. }) => key.take().map(|k| join(path, &k)),
            Some(Frame::Seq { path, next, .. }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
        }
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    fn pos(mark: Marker) -> Pos {
        Pos {
            line: mark.line(),
            col: mark.col() + 1,
        }
    }

    fn count(&mut self, n: usize) {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES && self.error.is_none() {
            self.error = Some(format!(
                "the document expands to more than {MAX_NODES} nodes (anchors and aliases included); refusing to load it"
            ));
        }
    }

    fn open(&mut self, anchor: usize, mark: Marker, is_map: bool) {
        let path = self.next_path().unwrap_or_default();
        self.index.entry(path.clone()).or_insert(Self::pos(mark));
        if is_map && matches!(self.stack.last(), Some(Frame::Seq { .. })) {
            self.pending_item = Some(path.clone());
        }
        self.count(1);
        let start_nodes = self.nodes;
        if self.stack.len() >= MAX_DEPTH && self.error.is_none() {
            self.error = Some(format!("nesting is deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(if is_map {
            Frame::Map {
                path,
                key: None,
                anchor,
                start_nodes,
            }
        } else {
            Frame::Seq {
                path,
                next: 0,
                anchor,
                start_nodes,
            }
        });
    }

    fn close(&mut self) {
        let (anchor, start) = match self.stack.pop() {
            Some(Frame::Map {
                anchor,
                start_nodes,
                ..
            })
            | Some(Frame::Seq {
                anchor,
                start_nodes,
                ..
            }) => (anchor, start_nodes),
            None => return,
        };
        if anchor != 0 {
            self.anchor_sizes
                .insert(anchor, self.nodes.saturating_sub(start) + 1);
        }
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.error = Some(
                        "the file holds more than one YAML document (`---`); use one per file"
                            .into(),
                    );
                }
            }
            Event::MappingStart(anchor, _) => self.open(anchor, mark, true),
            Event::SequenceStart(anchor, _) => self.open(anchor, mark, false),
            Event::MappingEnd | Event::SequenceEnd => self.close(),
            Event::Scalar(value, _, anchor, _) => {
                self.count(1);
                if anchor != 0 {
                    self.anchor_sizes.insert(anchor, 1);
                }
                if self.expecting_key() {
                    let pos = Self::pos(mark);
                    if let Some(Frame::Map { path, key, .. }) = self.stack.last_mut() {
                        let full = join(path, &value);
                        self.index.insert(full, pos);
                        *key = Some(value);
                    }
                    if let Some(item) = self.pending_item.take() {
                        self.index.insert(item, pos);
                    }
                } else if let Some(path) = self.next_path() {
                    self.index.entry(path).or_insert(Self::pos(mark));
                }
            }
            Event::Alias(id) => {
                let size = self.anchor_sizes.get(&id).copied().unwrap_or(1);
                self.count(size);
                if self.expecting_key() {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some("*alias".into());
                    }
                } else {
                    self.next_path();
                }
            }
            _ => {}
        }
    }
}

/// Read and index one file. The returned YAML value is parsed by yaml_serde.
pub fn read(path: &Path) -> Result<(SourceFile, serde_yaml::Value), Diagnostic> {
    let at_file = |msg: String| Diagnostic::new(path, Pos { line: 1, col: 1 }, "", msg);
    let meta =
        std::fs::metadata(path).map_err(|e| at_file(format!("cannot read the file: {e}")))?;
    if meta.len() as usize > MAX_FILE_BYTES {
        return Err(at_file(format!(
            "the file is {} bytes; manifests may be at most {MAX_FILE_BYTES} bytes",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| at_file(format!("cannot read the file: {e}")))?;
    parse(path, bytes)
}

/// Parse bytes already in memory (also used by the fuzz tests).
pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<(SourceFile, serde_yaml::Value), Diagnostic> {
    let at = |pos: Pos, msg: String| Diagnostic::new(path, pos, "", msg);
    let start = Pos { line: 1, col: 1 };
    if bytes.len() > MAX_FILE_BYTES {
        return Err(at(
            start,
            format!("the input is larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    if let Some(i) = bytes.iter().position(|b| *b == 0) {
        return Err(at(
            start,
            format!("the file is binary, not YAML text (NUL byte at offset {i})"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        at(
            start,
            format!(
                "the file is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(at(
            start,
            "the file is empty\nhint: a manifest needs at least `merchants:` or `defaults:`".into(),
        ));
    }
    let mut indexer = Indexer {
        stack: Vec::new(),
        index: HashMap::new(),
        anchor_sizes: HashMap::new(),
        nodes: 0,
        documents: 0,
        error: None,
        pending_item: None,
    };
    let mut parser = Parser::new_from_str(&text);
    if let Err(e) = parser.load(&mut indexer, true) {
        let m = e.marker();
        return Err(at(
            Pos {
                line: m.line(),
                col: m.col() + 1,
            },
            format!("invalid YAML: {}", e.info()),
        ));
    }
    if let Some(err) = indexer.error {
        return Err(at(start, err));
    }
    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line(),
                col: l.column(),
            })
            .unwrap_or(start);
        at(pos, format!("invalid YAML: {e}"))
    })?;
    let file = SourceFile {
        path: path.to_path_buf(),
        text,
        index: indexer.index,
    };
    Ok((file, value))
}
