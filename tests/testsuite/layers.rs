//! The house's layering, checked: every `crate::` path in `src/` points to a
//! room below its own, backends and HTTP crates stay in their rooms, the
//! planner names no gateway method. The rooms are read from `src/lib.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One room of `src/lib.rs`'s list: its name and the top-level modules in it.
#[derive(Debug, Clone)]
struct Room {
    name: String,
    modules: Vec<String>,
}

/// The rooms, top to bottom, from lines like
/// `//! 3. operations: [`ops`], [`settings`]` in `lib.rs`'s module doc.
fn rooms(lib_rs: &str) -> Vec<Room> {
    let mut rooms = Vec::new();
    for line in lib_rs.lines() {
        let Some(rest) = line.strip_prefix("//! ") else {
            continue;
        };
        let Some((number, rest)) = rest.split_once(". ") else {
            continue;
        };
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Some((name, modules)) = rest.split_once(": ") else {
            continue;
        };
        let modules: Vec<String> = modules
            .split(',')
            .filter_map(|m| {
                let m = m.trim().trim_end_matches('.');
                Some(m.strip_prefix("[`")?.strip_suffix("`]")?.to_string())
            })
            .collect();
        if !modules.is_empty() {
            rooms.push(Room {
                name: name.to_string(),
                modules,
            });
        }
    }
    rooms
}

/// A file's module path below `src/`: `ops/cards.rs` -> [ops, cards],
/// `state/mod.rs` -> [state], `lib.rs` -> [].
fn module_path(rel: &str) -> Vec<String> {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The source with comments and string contents blanked (line structure
/// kept), so a path in a doc comment or a message is not an import.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == b'r'
            && matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
            && !ident_byte(i.checked_sub(1).map(|p| b[p]))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                if b[j] == b'\n' {
                    out.push('\n');
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A char literal ('x', '\n', '"') or a lifetime ('a).
            let close = match b.get(i + 1) {
                Some(b'\\') => b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p),
                Some(&first) => {
                    let end = i + 1 + utf8_len(first);
                    (b.get(end) == Some(&b'\'')).then_some(end)
                }
                None => None,
            };
            match close {
                Some(end) => {
                    out.push_str("' '");
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            // Multi-byte characters pass through whole.
            let len = utf8_len(c);
            out.push_str(&src[i..i + len]);
            i += len;
        }
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Whether a path starts at `i`: not inside a word, not after `::`.
fn starts_path(b: &[u8], i: usize) -> bool {
    let after_word = ident_byte(i.checked_sub(1).map(|p| b[p]));
    let after_colons = i >= 2 && &b[i - 2..i] == b"::";
    !after_word && !after_colons
}

fn ident_byte(b: Option<u8>) -> bool {
    b.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Every path's first module outside the file's own top-level module:
/// (line, target). `crate::a::..` gives `a`; `super::` chains that climb
/// out of the top-level module (inline `mod x { .. }` blocks counted) give
/// the module they land on. A grouped `use crate::{..}` is reported as
/// target `{` (banned: one path a line).
fn references(rel: &str, src: &str) -> Vec<(usize, String)> {
    let own = module_path(rel);
    let code = code_only(src);
    let b = code.as_bytes();
    let ident = |from: usize| -> String {
        code[from..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut line = 1;
    let mut depth = 0usize;
    // Brace depths at which inline modules opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts_word = starts_path(b, i);
        match b[i] {
            b'\n' => line += 1,
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        if starts_word && b[i..].starts_with(b"mod ") {
            let name = ident(i + 4);
            let after = code[i + 4 + name.len()..].trim_start();
            if !name.is_empty() && after.starts_with('{') {
                inline.push(depth);
            }
        }
        if starts_word && b[i..].starts_with(b"crate::") {
            let at = i + "crate::".len();
            let target = if b.get(at) == Some(&b'{') {
                "{".to_string()
            } else {
                ident(at)
            };
            out.push((line, target));
            i = at;
            continue;
        }
        if starts_word && b[i..].starts_with(b"super::") {
            let mut ups = 0;
            let mut j = i;
            while b[j..].starts_with(b"super::") {
                ups += 1;
                j += "super::".len();
            }
            if ups >= own.len() + inline.len() {
                out.push((line, ident(j)));
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// Uses of an external crate's path (`sled::..`, `use postgres;`) by line.
fn crate_uses(src: &str, krate: &str) -> Vec<usize> {
    let code = code_only(src);
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let b = line.as_bytes();
        let mut from = 0;
        while let Some(p) = line[from..].find(krate) {
            let at = from + p;
            let end = at + krate.len();
            let before_ok = starts_path(b, at);
            let after = &line[end..];
            let after_ok = after.starts_with("::")
                || (line[..at].trim_end().ends_with("use") && !ident_byte(b.get(end).copied()));
            if before_ok && after_ok {
                out.push(n + 1);
                break;
            }
            from = end;
        }
    }
    out
}

struct Checked {
    problems: Vec<String>,
}

/// Check a set of files (path below `src/` -> text) against the rooms.
fn check(files: &BTreeMap<String, String>) -> Checked {
    let mut problems = Vec::new();
    let Some(lib) = files.get("lib.rs") else {
        return Checked {
            problems: vec!["src/lib.rs is missing".into()],
        };
    };
    let rooms = rooms(lib);
    let mut room_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in rooms.iter().enumerate() {
        for m in &r.modules {
            if room_of.insert(m, i).is_some() {
                problems.push(format!("src/lib.rs: `{m}` is listed in two rooms"));
            }
        }
    }
    if rooms.is_empty() {
        problems
            .push("src/lib.rs lists no rooms (lines like `//! 1. command line: [`cli`]`)".into());
    }
    // Backend and HTTP crates: the rooms (top-level modules, or a module
    // path prefix) allowed to name them.
    let confined: &[(&str, &[&str])] = &[
        ("sled", &["stores/sled", "sandbox"]),
        ("postgres", &["stores/postgres"]),
        ("reqwest", &["client", "sandbox"]),
    ];
    for (rel, src) in files {
        let own = module_path(rel);
        let top = own.first().map(String::as_str).unwrap_or("lib");
        if top == "lib" || top == "main" && own.len() == 1 && rel == "main.rs" {
            if rel == "main.rs" {
                for (line, target) in references(rel, src) {
                    if target != "cli" {
                        problems.push(format!(
                            "src/{rel}:{line}: main.rs calls only `cli`, not `{target}`"
                        ));
                    }
                }
            }
            continue;
        }
        let Some(&mine) = room_of.get(top) else {
            problems.push(format!(
                "src/{rel}: module `{top}` is in no room of src/lib.rs (add it to the list)"
            ));
            continue;
        };
        for (line, target) in references(rel, src) {
            if target == "{" {
                problems.push(format!(
                    "src/{rel}:{line}: grouped `use crate::{{..}}`: write one `use crate::..` path a line, so the layer check reads it"
                ));
                continue;
            }
            if target == top || target.is_empty() || target == "self" {
                continue;
            }
            match room_of.get(target.as_str()) {
                None => problems.push(format!(
                    "src/{rel}:{line}: `crate::{target}` is in no room of src/lib.rs"
                )),
                Some(&theirs) if theirs < mine => problems.push(format!(
                    "src/{rel}:{line}: `{top}` ({}) imports `{target}` ({}), a room above it",
                    rooms[mine].name, rooms[theirs].name
                )),
                Some(&theirs) if theirs == mine => problems.push(format!(
                    "src/{rel}:{line}: `{top}` imports `{target}`, beside it in the room `{}`: rooms import only rooms below",
                    rooms[mine].name
                )),
                Some(_) => {}
            }
        }
        // A backend's modules are named only in its room and the registry.
        for backend in ["sled", "postgres"] {
            let path = format!("crate::stores::{backend}");
            if !rel.starts_with("stores/") {
                for (n, l) in code_only(src).lines().enumerate() {
                    if l.contains(&path) {
                        problems.push(format!(
                            "src/{rel}:{}: names the {backend} backend (`{path}`): go through `state::Backend`",
                            n + 1
                        ));
                    }
                }
            }
        }
        for (krate, allowed) in confined {
            if allowed
                .iter()
                .any(|a| rel.starts_with(&format!("{a}/")) || *rel == format!("{a}.rs"))
            {
                continue;
            }
            for line in crate_uses(src, krate) {
                problems.push(format!(
                    "src/{rel}:{line}: uses the `{krate}` crate, which only {} may",
                    allowed.join(" and ")
                ));
            }
        }
        // Only the views and the command line write to the terminal.
        if top != "render" && top != "cli" {
            for (n, l) in code_only(src).lines().enumerate() {
                for w in [
                    "stdout()",
                    "stderr()",
                    "println!",
                    "print!(",
                    "eprintln!",
                    "eprint!(",
                ] {
                    if l.contains(w) {
                        problems.push(format!(
                            "src/{rel}:{}: writes to the terminal (`{w}`): only the views (`render`) and `cli` print; return data",
                            n + 1
                        ));
                    }
                }
            }
        }
        // The planner is pure domain: no gateway vocabulary.
        if top == "plan" {
            for (n, l) in src.lines().enumerate() {
                if l.contains("\"alipay.") || l.contains("::METHOD") || l.contains("alipay::") {
                    problems.push(format!(
                        "src/{rel}:{}: the planner names a gateway method (the provider knows the calls)",
                        n + 1
                    ));
                }
            }
        }
    }
    Checked { problems }
}

fn read_tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.insert(rel, std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn every_import_points_to_a_room_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&src);
    let checked = check(&files);
    assert!(
        checked.problems.is_empty(),
        "{} layering problem(s):\n{}",
        checked.problems.len(),
        checked.problems.join("\n")
    );
}

/// The check itself: a back-import, a sideways import, a grouped import, a
/// backend named outside its room and a planner naming a method all fail,
/// with the file and line; comments and strings are not imports.
#[test]
fn the_check_fails_on_a_back_import_and_names_the_line() {
    let lib = "//! Rooms:\n//!\n//! 1. command line: [`cli`]\n//! 2. operations: [`ops`], [`settings`]\n//! 3. planner: [`plan`]\n//! 4. stores: [`stores`]\n//! 5. domain: [`model`]\n";
    let mut files = BTreeMap::new();
    files.insert("lib.rs".to_string(), lib.to_string());
    files.insert(
        "cli/mod.rs".into(),
        "use crate::ops::run;\nuse crate::model::Address;\n".into(),
    );
    files.insert(
        "model/mod.rs".into(),
        "//! see crate::ops for who calls this\nconst S: &str = \"crate::cli\";\nfn f() {}\n"
            .into(),
    );
    files.insert("ops/mod.rs".into(), "use crate::plan;\n".into());
    files.insert(
        "plan/mod.rs".into(),
        "use crate::model::Kind;\nconst M: &str = \"x\";\n".into(),
    );
    assert!(
        check(&files).problems.is_empty(),
        "{:?}",
        check(&files).problems
    );

    // A back-import: the domain reaching up to operations.
    files.insert(
        "model/mod.rs".into(),
        "//! the domain\nfn f() {}\nuse crate::ops::run;\n".into(),
    );
    let p = check(&files).problems;
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with(
            "src/model/mod.rs:3: `model` (domain) imports `ops` (operations), a room above it"
        ),
        "{p:?}"
    );
    files.insert("model/mod.rs".into(), "fn f() {}\n".into());

    // Sideways, grouped, super:: climbing out, a backend, a method name.
    files.insert(
        "ops/mod.rs".into(),
        "use crate::settings::Settings;\n".into(),
    );
    files.insert(
        "settings.rs".into(),
        "use crate::{model, plan};\nuse super::ops::x;\n".into(),
    );
    files.insert(
        "plan/mod.rs".into(),
        "const M: &str = \"alipay.marketing.card.template.create\";\nuse crate::stores::sled::Store;\nfn f() { sled::open(\"x\"); }\n".into(),
    );
    let p = check(&files).problems;
    let has = |s: &str| p.iter().any(|x| x.starts_with(s));
    assert!(
        has("src/ops/mod.rs:1: `ops` imports `settings`, beside it"),
        "{p:?}"
    );
    assert!(has("src/settings.rs:1: grouped `use crate::{..}`"), "{p:?}");
    assert!(
        has("src/settings.rs:2: `settings` imports `ops`, beside it"),
        "{p:?}"
    );
    assert!(
        has("src/plan/mod.rs:1: the planner names a gateway method"),
        "{p:?}"
    );
    assert!(has("src/plan/mod.rs:2: names the sled backend"), "{p:?}");
    assert!(has("src/plan/mod.rs:3: uses the `sled` crate"), "{p:?}");

    // Printing outside the views.
    files.insert(
        "plan/mod.rs".into(),
        "fn f() {\n    println!(\"x\");\n}\n".into(),
    );
    let p = check(&files).problems;
    assert!(
        p.iter()
            .any(|x| x.starts_with("src/plan/mod.rs:2: writes to the terminal")),
        "{p:?}"
    );

    // Inline modules: `super::super` from a file's inline tests stays home.
    files.insert("ops/mod.rs".into(), "use crate::plan;\n".into());
    files.remove("settings.rs");
    files.insert(
        "plan/mod.rs".into(),
        "fn f() {}\nmod tests {\n    use super::super::model::Kind;\n    use super::f;\n}\nuse super::ops::x;\n".into(),
    );
    let p = check(&files).problems;
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("src/plan/mod.rs:6: `plan` (planner) imports `ops`"),
        "{p:?}"
    );
    files.insert("plan/mod.rs".into(), "fn f() {}\n".into());

    // A module in no room.
    files.insert("newthing.rs".into(), "fn f() {}\n".into());
    assert!(
        check(&files)
            .problems
            .iter()
            .any(|x| x.contains("module `newthing` is in no room"))
    );
}

#[test]
fn comments_strings_and_chars_are_not_code() {
    let c = code_only(
        "let a = '\"'; let b = \"crate::x\"; // crate::y\nlet r = r#\"crate::z\"#; 'a: loop {}\n",
    );
    assert!(!c.contains("crate::"), "{c}");
    assert!(c.contains("'a: loop"), "{c}");
    assert_eq!(c.lines().count(), 2);
}
