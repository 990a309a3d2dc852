//! `moved` blocks: a rename of recorded resources, with no gateway call. A
//! template's move carries its tiers, form and activation URL; a merchant's
//! move carries everything of that merchant. Pure.

use std::fmt;

use serde::Serialize;

use super::{Address, Kind};

/// What a `moved` block names: a whole merchant, or one resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Movable {
    Merchant(String),
    Resource(Address),
}

impl Movable {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(m) = s.strip_prefix("merchant.")
            && !m.contains('/')
        {
            if m.is_empty() {
                return Err(format!("`{s}` names no merchant"));
            }
            return Ok(Movable::Merchant(m.to_string()));
        }
        s.parse().map(Movable::Resource).map_err(|_| {
            format!(
                "`{s}` is not `merchant.<name>` or an address like merchant.<name>/template.<name>"
            )
        })
    }

    /// Whether `self` -> `to` is a move between things of one sort.
    pub fn same_sort(&self, to: &Movable) -> bool {
        match (self, to) {
            (Movable::Merchant(_), Movable::Merchant(_)) => true,
            (Movable::Resource(a), Movable::Resource(b)) => a.kind == b.kind,
            _ => false,
        }
    }

    /// Whether `self` covers `a`: a merchant all its resources, a template
    /// its tiers and their forms and activation URLs, anything else itself.
    pub fn covers(&self, a: &Address) -> bool {
        match self {
            Movable::Merchant(name) => a.merchant == name.as_str(),
            Movable::Resource(r) => {
                a == r
                    || (r.kind == Kind::Template
                        && matches!(a.kind, Kind::Template | Kind::Form | Kind::ActivationUrl)
                        && a.merchant == r.merchant
                        && (a.name == r.name
                            || a.name
                                .strip_prefix(r.name.as_str())
                                .is_some_and(|rest| rest.starts_with('.'))))
            }
        }
    }

    /// Where `address` goes when `self` moves to `to`, if `self` covers it.
    pub fn relocate(&self, to: &Movable, address: &Address) -> Option<Address> {
        match (self, to) {
            (Movable::Merchant(from), Movable::Merchant(to)) if address.merchant == from => {
                Some(Address {
                    merchant: to.as_str().into(),
                    ..address.clone()
                })
            }
            (Movable::Resource(from), Movable::Resource(to)) => {
                if address == from {
                    return Some(to.clone());
                }
                // A template carries its tiers, and the forms and URLs of both.
                let carried = from.kind == Kind::Template
                    && matches!(
                        address.kind,
                        Kind::Template | Kind::Form | Kind::ActivationUrl
                    )
                    && address.merchant == from.merchant;
                if !carried {
                    return None;
                }
                let rest = if address.name == from.name {
                    ""
                } else {
                    address.name.strip_prefix(&format!("{}.", from.name))?
                };
                let name = if rest.is_empty() {
                    to.name.clone()
                } else {
                    compact_str::format_compact!("{}.{rest}", to.name)
                };
                Some(Address {
                    merchant: to.merchant.clone(),
                    kind: address.kind,
                    name,
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for Movable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Movable::Merchant(m) => write!(f, "merchant.{m}"),
            Movable::Resource(a) => write!(f, "{a}"),
        }
    }
}

impl Serialize for Movable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One `moved` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub from: Movable,
    pub to: Movable,
    /// `file:line:col` of the block, for errors found against the state.
    pub written_at: String,
}

/// Where `address` ends up after every move (moves may chain: a -> b, b -> c).
/// The moves are free of cycles (lowering refuses them).
pub fn destination(moves: &[Move], address: &Address) -> Option<Address> {
    let mut current = address.clone();
    let mut moved = false;
    // Each move applies at most once along a chain.
    for _ in 0..=moves.len() {
        match moves.iter().find_map(|m| m.from.relocate(&m.to, &current)) {
            Some(next) if next != current => {
                current = next;
                moved = true;
            }
            _ => break,
        }
    }
    moved.then_some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(from: &str, to: &str) -> Move {
        Move {
            from: Movable::parse(from).unwrap(),
            to: Movable::parse(to).unwrap(),
            written_at: String::new(),
        }
    }

    #[test]
    fn where_each_address_goes() {
        let moves = [
            mv(
                "merchant.brew/template.club",
                "merchant.brew/template.members",
            ),
            mv("merchant.brew/image.logo", "merchant.brew/image.mark"),
            mv("merchant.bakery", "merchant.crust"),
            mv(
                "merchant.crust/template.vip",
                "merchant.crust/template.gold",
            ),
        ];
        let table = [
            (
                "merchant.brew/template.club",
                Some("merchant.brew/template.members"),
            ),
            (
                "merchant.brew/template.club.gold",
                Some("merchant.brew/template.members.gold"),
            ),
            (
                "merchant.brew/form.club.gold",
                Some("merchant.brew/form.members.gold"),
            ),
            (
                "merchant.brew/activation_url.club",
                Some("merchant.brew/activation_url.members"),
            ),
            ("merchant.brew/template.clubhouse", None),
            ("merchant.brew/image.logo", Some("merchant.brew/image.mark")),
            ("merchant.brew/image.club", None),
            (
                "merchant.bakery/image.logo",
                Some("merchant.crust/image.logo"),
            ),
            // A chain: the merchant moves, then its template.
            (
                "merchant.bakery/template.vip",
                Some("merchant.crust/template.gold"),
            ),
            ("merchant.tea/template.club", None),
        ];
        for (from, want) in table {
            let got = destination(&moves, &from.parse().unwrap()).map(|a| a.to_string());
            assert_eq!(got.as_deref(), want, "{from}");
        }
    }

    #[test]
    fn what_a_block_may_name() {
        assert!(Movable::parse("merchant.brew").is_ok());
        assert!(Movable::parse("merchant.brew/template.club").is_ok());
        assert!(Movable::parse("brew").is_err());
        assert!(Movable::parse("merchant.").is_err());
        let m = |s: &str| Movable::parse(s).unwrap();
        assert!(m("merchant.a").same_sort(&m("merchant.b")));
        assert!(!m("merchant.a").same_sort(&m("merchant.a/template.x")));
        assert!(!m("merchant.a/template.x").same_sort(&m("merchant.a/image.x")));
    }
}
