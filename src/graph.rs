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
