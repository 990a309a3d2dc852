//! The dependency graph of desired resources (petgraph): cycle refusal,
//! dependency order, and the closure `--target` plans.
//!
//! Performs no I/O.

use std::collections::{BTreeMap, BTreeSet};

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
pub fn order(desired: &Desired) -> Result<Vec<Address>, GraphError> {
    let ids: BTreeMap<&Address, usize> = desired
        .resources
        .keys()
        .enumerate()
        .map(|(i, a)| (a, i))
        .collect();
    let addrs: Vec<&Address> = desired.resources.keys().collect();
    let mut g: DiGraphMap<usize, ()> = DiGraphMap::new();
    for (a, i) in &ids {
        g.add_node(*i);
        for d in &desired.resources[*a].deps {
            let Some(j) = ids.get(d) else {
                return Err(GraphError::Dangling {
                    from: (*a).clone(),
                    to: d.clone(),
                });
            };
            g.add_edge(*j, *i, ());
        }
    }
    // Deterministic: kind order first (images, templates, forms, URLs), then
    // address, checked against the graph; a violation means a cycle.
    let mut sorted: Vec<usize> = (0..addrs.len()).collect();
    sorted.sort_by(|a, b| (addrs[*a].kind, addrs[*a]).cmp(&(addrs[*b].kind, addrs[*b])));
    let pos: BTreeMap<usize, usize> = sorted.iter().enumerate().map(|(p, i)| (*i, p)).collect();
    for (from, to, _) in g.all_edges() {
        if pos[&from] >= pos[&to] {
            return match petgraph::algo::toposort(&g, None) {
                Err(c) => Err(GraphError::Cycle(addrs[c.node_id()].clone())),
                Ok(_) => Err(GraphError::Cycle(addrs[to].clone())),
            };
        }
    }
    Ok(sorted.into_iter().map(|i| addrs[i].clone()).collect())
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
            attrs: Attrs::Form(FormAttrs {
                template: Address::new("m", Kind::Template, name),
                required: Vec::new(),
                optional: Vec::new(),
            }),
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
        let names: Vec<String> = order(&d).unwrap().iter().map(|a| a.to_string()).collect();
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
