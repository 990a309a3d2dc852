//! `extends`: templates deep-merged onto the defaults they name, cycles refused.

use super::*;

/// Deep-merge `over` onto `base`: mappings merge, everything else replaces.
pub(super) fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(bv) => merge(bv, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

pub(super) fn extends_cycle(
    start: &str,
    defaults: &BTreeMap<String, (At, raw::Template)>,
) -> Option<Vec<String>> {
    let mut chain = vec![start.to_string()];
    let mut cur = start.to_string();
    while let Some(next) = defaults.get(&cur).and_then(|(_, t)| t.extends.clone()) {
        if chain.contains(&next) {
            chain.push(next);
            return Some(chain);
        }
        chain.push(next.clone());
        cur = next;
    }
    None
}
