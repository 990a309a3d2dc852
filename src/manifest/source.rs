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
pub const MAX_NODES: usize = 600_000;
/// Scalar bytes after alias expansion: a small file whose aliases repeat a
/// large string is refused before anything expands it.
pub const MAX_EXPANDED_BYTES: usize = 32 * 1024 * 1024;

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
    index: PathIndex,
}

/// YAML path -> position. Keyed by a 64-bit hash of the path, not the path
/// itself: a file of a million nodes indexes in tens of MB, not hundreds.
#[derive(Debug, Default)]
struct PathIndex(HashMap<u64, Pos>);

impl PathIndex {
    fn key(path: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same path always gives the same key.
        let mut h = std::hash::DefaultHasher::new();
        path.hash(&mut h);
        h.finish()
    }
    fn get(&self, path: &str) -> Option<&Pos> {
        self.0.get(&Self::key(path))
    }
    fn contains_key(&self, path: &str) -> bool {
        self.0.contains_key(&Self::key(path))
    }
    fn insert(&mut self, path: String, pos: Pos) {
        self.0.insert(Self::key(&path), pos);
    }
    fn insert_new(&mut self, path: String, pos: Pos) {
        self.0.entry(Self::key(&path)).or_insert(pos);
    }
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
        start_bytes: usize,
    },
    Seq {
        path: String,
        next: usize,
        anchor: usize,
        start_nodes: usize,
        start_bytes: usize,
    },
}

struct Indexer {
    stack: Vec<Frame>,
    index: PathIndex,
    /// Node count and scalar bytes of each anchored node, for alias
    /// expansion accounting.
    anchor_sizes: HashMap<usize, (usize, usize)>,
    nodes: usize,
    bytes: usize,
    documents: usize,
    error: Option<String>,
    /// Where the error is, when it has a place.
    error_pos: Option<Pos>,
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

    fn count(&mut self, n: usize, bytes: usize) {
        self.nodes = self.nodes.saturating_add(n);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES && self.error.is_none() {
            self.error = Some(format!(
                "the document expands to more than {MAX_NODES} nodes (anchors and aliases included); refusing to load it"
            ));
        }
        if self.bytes > MAX_EXPANDED_BYTES && self.error.is_none() {
            self.error = Some(format!(
                "the document expands to more than {MAX_EXPANDED_BYTES} bytes of text (anchors and aliases included); refusing to load it"
            ));
        }
    }

    /// Tags (`!!binary`, `!custom`) have no meaning in a manifest: refused
    /// where they are, rather than silently read as something else.
    fn refuse_tag(&mut self, tag: &Option<yaml_rust2::parser::Tag>, mark: Marker) {
        if let Some(t) = tag
            && self.error.is_none()
        {
            let shown = match t.handle.as_str() {
                "tag:yaml.org,2002:" => format!("!!{}", t.suffix),
                h => format!("{h}{}", t.suffix),
            };
            self.error = Some(format!(
                "YAML tags are not allowed in a manifest (found `{}`)\nhint: remove the tag; write the value as plain text",
                super::diag::clip(&shown, 40)
            ));
            self.error_pos = Some(Self::pos(mark));
        }
    }

    fn open(&mut self, anchor: usize, mark: Marker, is_map: bool) {
        let start_bytes = self.bytes;
        let path = self.next_path().unwrap_or_default();
        self.index.insert_new(path.clone(), Self::pos(mark));
        if is_map && matches!(self.stack.last(), Some(Frame::Seq { .. })) {
            self.pending_item = Some(path.clone());
        }
        self.count(1, 0);
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
                start_bytes,
            }
        } else {
            Frame::Seq {
                path,
                next: 0,
                anchor,
                start_nodes,
                start_bytes,
            }
        });
    }

    fn close(&mut self) {
        let (anchor, start, start_bytes) = match self.stack.pop() {
            Some(Frame::Map {
                anchor,
                start_nodes,
                start_bytes,
                ..
            })
            | Some(Frame::Seq {
                anchor,
                start_nodes,
                start_bytes,
                ..
            }) => (anchor, start_nodes, start_bytes),
            None => return,
        };
        if anchor != 0 {
            self.anchor_sizes.insert(
                anchor,
                (
                    self.nodes.saturating_sub(start) + 1,
                    self.bytes.saturating_sub(start_bytes),
                ),
            );
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
            Event::MappingStart(anchor, tag) => {
                self.refuse_tag(&tag, mark);
                self.open(anchor, mark, true)
            }
            Event::SequenceStart(anchor, tag) => {
                self.refuse_tag(&tag, mark);
                self.open(anchor, mark, false)
            }
            Event::MappingEnd | Event::SequenceEnd => self.close(),
            Event::Scalar(value, _, anchor, tag) => {
                self.refuse_tag(&tag, mark);
                self.count(1, value.len());
                if anchor != 0 {
                    self.anchor_sizes.insert(anchor, (1, value.len()));
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
                    self.index.insert_new(path, Self::pos(mark));
                }
            }
            Event::Alias(id) => {
                let (nodes, bytes) = self.anchor_sizes.get(&id).copied().unwrap_or((1, 0));
                self.count(nodes, bytes);
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
pub fn read(path: &Path) -> Result<(SourceFile, serde_json::Value), Diagnostic> {
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
pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<(SourceFile, serde_json::Value), Diagnostic> {
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
        index: PathIndex::default(),
        anchor_sizes: HashMap::new(),
        nodes: 0,
        bytes: 0,
        documents: 0,
        error: None,
        error_pos: None,
        pending_item: None,
    };
    // Driven event by event, so that a limit stops the parse at once instead
    // of after the whole hostile file.
    let mut parser = Parser::new_from_str(&text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((ev, mark)) => indexer.on_event(ev, mark),
            Err(e) => {
                let m = e.marker();
                return Err(at(
                    Pos {
                        line: m.line(),
                        col: m.col() + 1,
                    },
                    format!("invalid YAML: {}", e.info()),
                ));
            }
        }
        if indexer.error.is_some() {
            break;
        }
    }
    if let Some(err) = indexer.error {
        let pos = indexer.error_pos.unwrap_or(start);
        let snippet = text
            .lines()
            .nth(pos.line.saturating_sub(1))
            .map(|l| super::diag::clip(l, 200));
        return Err(at(pos, err).with_snippet(snippet));
    }
    // Straight into JSON values (what the schema checks): no YAML value tree
    // in between, half the memory for a large file.
    let value: serde_json::Value = serde_yaml::from_str(&text).map_err(|e| {
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
