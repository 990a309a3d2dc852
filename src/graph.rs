//! The dependency graph of desired resources (petgraph): cycle refusal,
//! dependency order, and the closure `--target` plans.
//!
//! Performs no I/O.

use std::collections::{BTreeSet, HashMap};

use petgraph::graphmap::DiGraphMap;

use crate::model::{Address, Desired};

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("resources depend on each other in a cycle through `{0}`")]
    Cycle(Address),
    #[error("`{from}` depends on `{to}`, which is not in the manifests (bug)")]
    Dangling { from: Address, to: Address },
}

/// Resources in an order where every dependency comes first.
///
/// Deterministic: kind order (images, templates, forms, URLs), then address.
/// Every dependency edge is checked against that order with one map lookup
/// (a no-op plan of 100,000 resources pays for nothing more); only a
/// violation builds the graph, to name the cycle.
pub fn order(desired: &Desired) -> Result<Vec<usize>, GraphError> {
    // The map iterates in address order already: a stable sort by kind
    // gives (kind, address) order, and every dependency must come before
    // its dependent in that order (images, then templates, then forms and
    // URLs). Checking each edge against the order needs no index: an edge
    // is either to an address the manifests have that sorts earlier, or
    // dangling, or against the order (then the graph is built to name the
    // cycle).
    let entries: Vec<(&Address, &crate::model::Resource)> = desired.resources.iter().collect();
    let mut sorted: Vec<usize> = (0..entries.len()).collect();
    sorted.sort_by_key(|i| entries[*i].0.kind);
    for (a, r) in &entries {
        for d in &r.deps {
            if !desired.resources.contains_key(d) {
                return Err(GraphError::Dangling {
                    from: (*a).clone(),
                    to: d.clone(),
                });
            }
            if (d.kind, d) >= (a.kind, *a) {
                let addrs: Vec<&Address> = entries.iter().map(|(a, _)| *a).collect();
                return Err(cycle(desired, &addrs, a));
            }
        }
    }
    Ok(sorted)
}

/// The cycle behind an edge that goes against the kind order (petgraph
/// names a node on it; `against` if the graph has none).
fn cycle(desired: &Desired, addrs: &[&Address], against: &Address) -> GraphError {
    let ids: HashMap<&Address, usize> = addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    let mut g: DiGraphMap<usize, ()> = DiGraphMap::new();
    for (a, i) in &ids {
        g.add_node(*i);
        for d in &desired.resources[*a].deps {
            if let Some(j) = ids.get(d) {
                g.add_edge(*j, *i, ());
            }
        }
    }
    match petgraph::algo::toposort(&g, None) {
        Err(c) => GraphError::Cycle(addrs[c.node_id()].clone()),
        Ok(_) => GraphError::Cycle(against.clone()),
    }
}

/// `target` and everything it depends on, transitively.
pub fn closure(desired: &Desired, target: &Address) -> BTreeSet<Address> {
    let mut out = BTreeSet::new();
    let mut todo = vec![target.clone()];
    while let Some(a) = todo.pop() {
        if out.insert(a.clone())
            && let Some(r) = desired.resources.get(&a)
        {
            todo.extend(r.deps.iter().cloned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attrs, FormAttrs, Kind, Resource};

    /// A resource named `name` of `kind` depending on `deps` (attributes
    /// do not matter to the graph).
    fn r(kind: Kind, name: &str, deps: &[(Kind, &str)]) -> Resource {
        Resource {
            address: Address::new("m", kind, name),
            deps: deps.iter().map(|(k, n)| Address::new("m", *k, n)).collect(),
            attrs: Attrs::Form(Box::new(FormAttrs {
                template: Address::new("m", Kind::Template, name),
                required: Vec::new(),
                optional: Vec::new(),
            })),
        }
    }

    fn desired(rs: Vec<Resource>) -> Desired {
        Desired {
            resources: rs.into_iter().map(|r| (r.address.clone(), r)).collect(),
            ..Desired::default()
        }
    }

    #[test]
    fn dependencies_first_closures_and_cycles() {
        let d = desired(vec![
            r(Kind::ActivationUrl, "a", &[(Kind::Template, "a")]),
            r(Kind::Template, "a", &[(Kind::Image, "logo")]),
            r(Kind::Form, "a", &[(Kind::Template, "a")]),
            r(Kind::Image, "logo", &[]),
            r(Kind::Template, "b", &[]),
        ]);
        let keys: Vec<&Address> = d.resources.keys().collect();
        let names: Vec<String> = order(&d)
            .unwrap()
            .iter()
            .map(|i| keys[*i].to_string())
            .collect();
        assert_eq!(
            names,
            [
                "merchant.m/image.logo",
                "merchant.m/template.a",
                "merchant.m/template.b",
                "merchant.m/form.a",
                "merchant.m/activation_url.a"
            ]
        );
        let c = closure(&d, &Address::new("m", Kind::ActivationUrl, "a"));
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(!c.contains(&Address::new("m", Kind::Template, "b")));
        // A dependency that is not there is a bug, said as one.
        let dangling = desired(vec![r(Kind::Template, "a", &[(Kind::Image, "gone")])]);
        assert!(matches!(order(&dangling), Err(GraphError::Dangling { .. })));
        // A cycle is refused.
        let cycle = desired(vec![
            r(Kind::Template, "a", &[(Kind::Template, "b")]),
            r(Kind::Template, "b", &[(Kind::Template, "a")]),
        ]);
        assert!(matches!(order(&cycle), Err(GraphError::Cycle(_))));
    }
}
