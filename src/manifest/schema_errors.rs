//! Schema errors in bounded memory.
//!
//! `jsonschema` collects every error of a document before its iterator
//! yields the first: a manifest of a quarter of a million wrong entries
//! costs some 80 MB of error values, although we report a hundred. So a
//! large invalid document is checked in windows: a container whose subtree
//! is large is split into runs of its entries (each run at most
//! [`WINDOW_NODES`] nodes), and each run is checked in place of the whole,
//! until the caller has seen enough. A valid document is checked once, as a
//! whole.
//!
//! Windowing is exact for our schema, which has no keyword that counts a
//! container's entries (`minItems`, `maxProperties`, `uniqueItems`,
//! `contains`: a test keeps it so). What depends on a container's whole key
//! set is corrected here: `required` is reported once, and only for a key
//! that is missing from the whole container; an array's indices are those
//! of the whole array.

use std::ops::ControlFlow;

use jsonschema::error::{ValidationError, ValidationErrorKind};
use serde_json::Value;

/// A document (or window) of at most this many nodes is checked as a whole:
/// its errors, at most one or two per node, take a few MB.
pub const WINDOW_NODES: usize = 20_000;

/// Calls `emit` with each schema error of `doc` and its instance path as
/// segments (unescaped), until `emit` breaks. `doc` is unchanged afterwards.
pub fn for_each_error(
    validator: &jsonschema::Validator,
    doc: &mut Value,
    emit: &mut dyn FnMut(&[String], &ValidationError<'_>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    if validator.is_valid(doc) {
        return ControlFlow::Continue(());
    }
    match split_point(doc, &mut Vec::new()) {
        None => whole(validator, doc, emit),
        Some(at) => windows(validator, doc, &at, emit),
    }
}

fn whole(
    validator: &jsonschema::Validator,
    doc: &Value,
    emit: &mut dyn FnMut(&[String], &ValidationError<'_>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    for err in validator.iter_errors(doc) {
        emit(&segments(err.instance_path().as_str()), &err)?;
    }
    ControlFlow::Continue(())
}

/// Checks `doc` once per window of the container at `at`.
fn windows(
    validator: &jsonschema::Validator,
    doc: &mut Value,
    at: &[String],
    emit: &mut dyn FnMut(&[String], &ValidationError<'_>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let container = pointer_mut(doc, at).expect("bug: the split point exists");
    let is_array = container.is_array();
    let entries = Entries::take(container);
    let runs = entries.runs();
    if runs.len() < 2 {
        // One run is the container itself: splitting it gains nothing (and
        // would never end). What is left over the budget is checked whole.
        let container = pointer_mut(doc, at).expect("bug: the split point exists");
        let keys = entries.keys();
        put(container, &mut entries.into_slots(), &keys);
        return whole(validator, doc, emit);
    }
    let keys: Vec<String> = entries.keys();
    let mut slots = entries.into_slots();
    let mut flow = ControlFlow::Continue(());
    let mut start = 0;
    for (i, end) in runs.into_iter().enumerate() {
        let container = pointer_mut(doc, at).expect("bug: the split point exists");
        put(container, &mut slots[start..end], &keys[start..end]);
        let offset = start;
        let mut filtered = |segs: &[String], err: &ValidationError<'_>| {
            let under = segs.len() > at.len() && segs.starts_with(at);
            let here = segs == at;
            if !under && !here && i > 0 {
                // Outside the container: the same in every window.
                return ControlFlow::Continue(());
            }
            if here && let ValidationErrorKind::Required { property } = err.kind() {
                // Missing from this window is not missing: report a key
                // missing from the whole container, once.
                let present = property
                    .as_str()
                    .is_some_and(|p| keys.iter().any(|k| k == p));
                if present || i > 0 {
                    return ControlFlow::Continue(());
                }
            }
            if under && is_array {
                let mut rebased = segs.to_vec();
                if let Ok(n) = rebased[at.len()].parse::<usize>() {
                    rebased[at.len()] = (n + offset).to_string();
                }
                return emit(&rebased, err);
            }
            emit(segs, err)
        };
        flow = for_each_error(validator, doc, &mut filtered);
        let container = pointer_mut(doc, at).expect("bug: the split point exists");
        take_back(container, &mut slots[start..end]);
        start = end;
        if flow.is_break() {
            break;
        }
    }
    let container = pointer_mut(doc, at).expect("bug: the split point exists");
    put(container, &mut slots, &keys);
    flow
}

/// The entries of a container taken out of it: names (empty for an array's
/// items) and values, with each entry's node count.
struct Entries {
    items: Vec<(String, Value, usize)>,
}

impl Entries {
    fn take(container: &mut Value) -> Entries {
        let items = match container {
            Value::Object(map) => std::mem::take(map)
                .into_iter()
                .map(|(k, v)| {
                    let n = nodes(&v);
                    (k, v, n)
                })
                .collect(),
            Value::Array(items) => std::mem::take(items)
                .into_iter()
                .map(|v| {
                    let n = nodes(&v);
                    (String::new(), v, n)
                })
                .collect(),
            _ => Vec::new(),
        };
        Entries { items }
    }

    /// Ends of the runs of entries, each at most [`WINDOW_NODES`] nodes (an
    /// entry larger than that is a run of its own, split in turn).
    fn runs(&self) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut size = 0;
        for (i, (_, _, n)) in self.items.iter().enumerate() {
            if size > 0 && size + n > WINDOW_NODES {
                ends.push(i);
                size = 0;
            }
            size += n;
        }
        ends.push(self.items.len());
        ends
    }

    fn keys(&self) -> Vec<String> {
        self.items.iter().map(|(k, _, _)| k.clone()).collect()
    }

    fn into_slots(self) -> Vec<Option<Value>> {
        self.items.into_iter().map(|(_, v, _)| Some(v)).collect()
    }
}

/// Puts the given entries into the (emptied) container.
fn put(container: &mut Value, slots: &mut [Option<Value>], keys: &[String]) {
    match container {
        Value::Object(map) => {
            for (k, v) in keys.iter().zip(slots.iter_mut()) {
                if let Some(v) = v.take() {
                    map.insert(k.clone(), v);
                }
            }
        }
        Value::Array(items) => items.extend(slots.iter_mut().filter_map(Option::take)),
        _ => {}
    }
}

/// Takes the entries back out of the container, in order.
fn take_back(container: &mut Value, slots: &mut [Option<Value>]) {
    let values: Vec<Value> = match container {
        Value::Object(map) => std::mem::take(map).into_iter().map(|(_, v)| v).collect(),
        Value::Array(items) => std::mem::take(items),
        _ => Vec::new(),
    };
    for (slot, v) in slots.iter_mut().zip(values) {
        *slot = Some(v);
    }
}

/// Where to split a document too large to check as a whole: the first
/// container, from the root down, with more than one entry whose subtree is
/// too large; through a container of a single entry, into that entry.
fn split_point(v: &Value, at: &mut Vec<String>) -> Option<Vec<String>> {
    if nodes(v) <= WINDOW_NODES {
        return None;
    }
    let only = match v {
        Value::Object(map) if map.len() == 1 => map.iter().next().map(|(k, v)| (k.clone(), v)),
        Value::Array(items) if items.len() == 1 => Some(("0".to_string(), &items[0])),
        Value::Object(map) if map.len() > 1 => return Some(at.clone()),
        Value::Array(items) if items.len() > 1 => return Some(at.clone()),
        _ => None,
    };
    let (seg, child) = only?;
    at.push(seg);
    split_point(child, at)
}

/// Nodes in a value: itself and everything under it.
fn nodes(v: &Value) -> usize {
    match v {
        Value::Object(map) => 1 + map.values().map(nodes).sum::<usize>(),
        Value::Array(items) => 1 + items.iter().map(nodes).sum::<usize>(),
        _ => 1,
    }
}

fn pointer_mut<'v>(doc: &'v mut Value, at: &[String]) -> Option<&'v mut Value> {
    at.iter().try_fold(doc, |v, seg| match v {
        Value::Object(map) => map.get_mut(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

/// A JSON pointer's segments, unescaped.
fn segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator(schema: Value) -> jsonschema::Validator {
        jsonschema::validator_for(&schema).unwrap()
    }

    fn errors(v: &jsonschema::Validator, doc: &mut Value) -> Vec<String> {
        let before = doc.clone();
        let mut out = Vec::new();
        let _ = for_each_error(v, doc, &mut |segs, err| {
            out.push(format!(
                "{}: {}",
                segs.iter().map(|s| format!("/{s}")).collect::<String>(),
                err.kind().keyword()
            ));
            ControlFlow::Continue(())
        });
        assert_eq!(*doc, before, "the document is restored");
        out.sort();
        out
    }

    fn whole(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
        let mut out: Vec<String> = v
            .iter_errors(doc)
            .map(|e| format!("{}: {}", e.instance_path().as_str(), e.kind().keyword()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn windows_report_what_the_whole_reports() {
        let v = validator(serde_json::json!({
            "type": "object",
            "required": ["merchants"],
            "additionalProperties": false,
            "properties": {
                "merchants": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["app_id"],
                        "additionalProperties": false,
                        "properties": {
                            "app_id": { "type": "string" },
                            "levels": { "type": "array", "items": { "type": "string" } }
                        }
                    }
                },
                "extra": { "type": "string" }
            }
        }));
        let mut merchants = serde_json::Map::new();
        for i in 0..30_000 {
            let m = match i % 1000 {
                7 => serde_json::json!({ "app_id": 1 }),
                8 => serde_json::json!({ "levels": ["a"] }),
                9 => serde_json::json!({ "app_id": "x", "bogus": true }),
                _ => serde_json::json!({ "app_id": "x" }),
            };
            merchants.insert(format!("m{i}"), m);
        }
        // A large array with a few wrong items far in.
        let mut levels: Vec<Value> = (0..25_000).map(|i| Value::from(format!("l{i}"))).collect();
        levels[21_234] = Value::from(5);
        levels[24_999] = Value::from(false);
        merchants.insert(
            "big".into(),
            serde_json::json!({ "app_id": "x", "levels": levels }),
        );
        let mut doc = serde_json::json!({ "merchants": merchants, "extra": 3, "nope": 1 });
        let expected = whole(&v, &doc);
        assert_eq!(expected.len(), 30 * 3 + 2 + 2, "{expected:?}");
        assert_eq!(errors(&v, &mut doc), expected);
    }

    #[test]
    fn a_required_key_in_another_window_is_not_missing() {
        let v = validator(serde_json::json!({
            "type": "object",
            "required": ["z_last"],
            "additionalProperties": { "type": "integer" }
        }));
        let mut map = serde_json::Map::new();
        for i in 0..(WINDOW_NODES * 2) {
            map.insert(
                format!("k{i:06}"),
                Value::from(if i == 3 { "s" } else { "1" }),
            );
        }
        map.insert("z_last".into(), Value::from(1));
        let mut doc = Value::Object(map);
        let got = errors(&v, &mut doc);
        assert_eq!(
            got.len(),
            WINDOW_NODES * 2,
            "one per string value, no `required`"
        );
        assert!(!got.iter().any(|e| e.ends_with("required")));
        // Missing from the whole: reported once.
        doc.as_object_mut().unwrap().shift_remove("z_last");
        let got = errors(&v, &mut doc);
        assert_eq!(got.iter().filter(|e| e.ends_with("required")).count(), 1);
    }

    #[test]
    fn our_schema_has_no_keyword_that_counts_entries() {
        let text = serde_json::to_string(super::super::validator_schema()).unwrap();
        for kw in [
            "minItems",
            "maxItems",
            "uniqueItems",
            "contains",
            "minProperties",
            "maxProperties",
            "prefixItems",
            "dependentRequired",
        ] {
            assert!(
                !text.contains(&format!("\"{kw}\"")),
                "the schema uses `{kw}`: windowed checking (schema_errors.rs) must handle it"
            );
        }
    }
}
