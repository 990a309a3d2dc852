//! Which resources a run covers: `--merchant GLOB` (repeatable), `--exclude
//! GLOB` (merchants or addresses) and `--target GLOB` (repeatable; each
//! matched address with what it depends on). Pure: the planner asks it for
//! the scope; the plan records the selection and what it left out.
//!
//! Globs are shell-like (`*`, `?`, `[a-z]`, `{a,b}`); `*` crosses `/`, so
//! `merchant.tea/*` is every resource of `tea`.

use std::collections::BTreeSet;

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::graph;
use crate::model::{Address, Desired};
use crate::state::Snapshot;

/// The selectors as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merchants: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("`{glob}` is not a valid pattern: {reason}")]
    Pattern { glob: String, reason: String },
    #[error("--target `{0}` matches nothing in the manifests or the state")]
    NoMatch(String),
    #[error("--merchant `{0}` matches no merchant in the manifests or the state")]
    NoMerchant(String),
}

fn glob(p: &str) -> Result<Glob, SelectError> {
    Glob::new(p).map_err(|e| SelectError::Pattern {
        glob: p.to_string(),
        reason: e.kind().to_string(),
    })
}

fn set(patterns: &[String]) -> Result<GlobSet, SelectError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(glob(p)?);
    }
    b.build().map_err(|e| SelectError::Pattern {
        glob: patterns.join(", "),
        reason: e.to_string(),
    })
}

/// What a selection covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The addresses in scope.
    pub addresses: BTreeSet<Address>,
    /// Their merchants (what a run locks).
    pub merchants: BTreeSet<String>,
    /// Addresses of the manifests or the state left out.
    pub left_out: usize,
}

impl Selection {
    pub fn is_all(&self) -> bool {
        self.merchants.is_empty() && self.exclude.is_empty() && self.targets.is_empty()
    }

    /// One target address (the old `--target` form).
    pub fn target(a: &Address) -> Self {
        Selection {
            targets: vec![a.to_string()],
            ..Selection::default()
        }
    }

    /// The scope in `desired` and `snap`; `None` when everything is selected.
    pub fn scope(&self, desired: &Desired, snap: &Snapshot) -> Result<Option<Scope>, SelectError> {
        if self.is_all() {
            return Ok(None);
        }
        let merchants = (!self.merchants.is_empty())
            .then(|| set(&self.merchants))
            .transpose()?;
        let exclude = set(&self.exclude)?;
        let all: BTreeSet<&Address> = desired
            .resources
            .keys()
            .chain(snap.resources.keys())
            .chain(snap.intents.keys())
            .collect();
        let known_merchants: BTreeSet<&str> = all.iter().map(|a| a.merchant.as_str()).collect();
        if let Some(_m) = &merchants {
            for p in &self.merchants {
                let g = glob(p)?.compile_matcher();
                if !known_merchants.iter().any(|m| g.is_match(m)) {
                    return Err(SelectError::NoMerchant(p.clone()));
                }
            }
        }
        let selected = |a: &Address| -> bool {
            merchants.as_ref().is_none_or(|m| m.is_match(&a.merchant))
                && !exclude.is_match(&a.merchant)
                && !exclude.is_match(a.to_string())
        };
        let mut addresses: BTreeSet<Address> = if self.targets.is_empty() {
            all.iter().map(|a| (*a).clone()).collect()
        } else {
            let mut out = BTreeSet::new();
            for p in &self.targets {
                let g: GlobMatcher = glob(p)?.compile_matcher();
                let hits: Vec<&&Address> =
                    all.iter().filter(|a| g.is_match(a.to_string())).collect();
                if hits.is_empty() {
                    return Err(SelectError::NoMatch(p.clone()));
                }
                for a in hits {
                    if desired.resources.contains_key(*a) {
                        out.extend(graph::closure(desired, a));
                    } else {
                        out.insert((*a).clone());
                    }
                }
            }
            out
        };
        addresses.retain(selected);
        let left_out = all.len() - all.iter().filter(|a| addresses.contains(**a)).count();
        Ok(Some(Scope {
            merchants: addresses.iter().map(|a| a.merchant.to_string()).collect(),
            addresses,
            left_out,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn snap_with(addresses: &[Address]) -> Snapshot {
        let mut s = Snapshot::empty();
        for a in addresses {
            s.resources.insert(
                a.clone(),
                crate::state::ResourceState {
                    address: a.clone(),
                    kind: a.kind,
                    ids: Default::default(),
                    hash: String::new(),
                    attrs: serde_json::value::to_raw_value(&serde_json::json!({})).unwrap(),
                    applied_at: String::new(),
                },
            );
        }
        s
    }

    #[test]
    fn merchants_excludes_and_targets_combine() {
        let a = |m: &str, n: &str| Address::new(m, Kind::Template, n);
        let snap = snap_with(&[
            a("tea", "gold"),
            a("tea", "silver"),
            a("bakery", "gold"),
            a("noodles", "vip"),
        ]);
        let desired = Desired::default();
        let sel = Selection {
            merchants: vec!["t*".into(), "bakery".into()],
            exclude: vec!["merchant.tea/template.silver".into()],
            targets: vec![],
        };
        let s = sel.scope(&desired, &snap).unwrap().unwrap();
        assert_eq!(
            s.addresses,
            BTreeSet::from([a("tea", "gold"), a("bakery", "gold")])
        );
        assert_eq!(s.merchants, BTreeSet::from(["bakery".into(), "tea".into()]));
        assert_eq!(s.left_out, 2);
        let sel = Selection {
            targets: vec!["merchant.*/template.gold".into()],
            exclude: vec!["bakery".into()],
            ..Default::default()
        };
        let s = sel.scope(&desired, &snap).unwrap().unwrap();
        assert_eq!(s.addresses, BTreeSet::from([a("tea", "gold")]));
        assert_eq!(
            Selection {
                targets: vec!["merchant.x/*".into()],
                ..Default::default()
            }
            .scope(&desired, &snap)
            .unwrap_err(),
            SelectError::NoMatch("merchant.x/*".into())
        );
        assert!(matches!(
            Selection {
                merchants: vec!["zz*".into()],
                ..Default::default()
            }
            .scope(&desired, &snap),
            Err(SelectError::NoMerchant(_))
        ));
        assert!(
            Selection::default()
                .scope(&desired, &snap)
                .unwrap()
                .is_none()
        );
    }
}
