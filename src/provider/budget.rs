//! The call budget of a plan: what its changes cost at the gateway, each
//! kind's calls from that kind's module, and their time at the configured
//! rate limits. The planner names no call; this file counts them.

use std::collections::BTreeSet;

use crate::model::{Kind, RateLimits};
use crate::plan::{Action, Budget, Change};
use crate::state::Snapshot;

/// The calls `changes` make: each change's calls as its kind says, and for
/// every merchant whose plan creates templates, one pass over its
/// templates at the gateway (the check for templates the state does not
/// know: a page of 20 for every 20 templates the state knows of it, and
/// one more). `snap` is the state as the plan's `moved` blocks leave it.
pub fn budget(changes: &[Change], snap: &Snapshot, limits: &RateLimits) -> Budget {
    let mut b = Budget::default();
    let add = |b: &mut Budget, merchant: &str, method: &str| {
        b.calls += 1;
        *b.by_method.entry(method.to_string()).or_default() += 1;
        *b.per_merchant.entry(merchant.to_string()).or_default() += 1;
    };
    let mut known: std::collections::BTreeMap<&str, usize> = Default::default();
    for a in snap.resources.keys().chain(snap.intents.keys()) {
        if a.kind == Kind::Template {
            *known.entry(a.merchant.as_str()).or_default() += 1;
        }
    }
    let mut checked: BTreeSet<&str> = BTreeSet::new();
    for c in changes {
        let m = c.address.merchant.as_str();
        if c.kind == Kind::Template
            && matches!(c.action, Action::Create | Action::Replace)
            && checked.insert(m)
        {
            let pages = known.get(m).copied().unwrap_or(0) / 20 + 1;
            for _ in 0..pages {
                for method in super::template::checks_before_create() {
                    add(&mut b, m, method);
                }
            }
        }
        for method in super::calls(c.kind, c.action) {
            add(&mut b, m, method);
        }
    }
    if !limits.is_empty() && b.calls > 0 {
        let mut secs: f64 = 0.0;
        if let Some(r) = limits.per_second {
            secs = secs.max(b.calls as f64 / r);
        }
        for (m, n) in &b.per_merchant {
            if let Some(r) = limits.merchant(m) {
                secs = secs.max(*n as f64 / r);
            }
        }
        for (method, n) in &b.by_method {
            if let Some(r) = limits.per_method.get(method) {
                secs = secs.max(*n as f64 / r);
            }
        }
        b.seconds_at_limits = Some(secs);
    }
    b
}

#[cfg(test)]
mod tests {
    //! The budget from hand-built changes: each kind's calls, the check
    //! before a merchant's first templates, the time at the limits.

    use super::*;
    use crate::model::Address;
    use crate::state::{Ids, ResourceState};

    fn change(merchant: &str, kind: Kind, name: &str, action: Action) -> Change {
        Change {
            address: Address::new(merchant, kind, name),
            kind,
            action,
            reason: "".into(),
            before: None,
            after: None,
            deps: Vec::new(),
            moved_from: None,
        }
    }

    fn program(merchant: &str, action: Action) -> Vec<Change> {
        vec![
            change(merchant, Kind::Image, "logo", action),
            change(merchant, Kind::Template, "club", action),
            change(merchant, Kind::Template, "gold", action),
            change(merchant, Kind::Form, "club", action),
            change(merchant, Kind::ActivationUrl, "club", action),
        ]
    }

    #[test]
    fn each_kind_counts_its_calls_and_a_new_merchant_is_checked_once() {
        let mut changes = program("tea", Action::Create);
        changes.extend(program("brew", Action::Create));
        changes.push(change("brew", Kind::Image, "adopted", Action::Import));
        changes.push(change("brew", Kind::Template, "old", Action::Retire));
        changes.push(change("brew", Kind::Form, "same", Action::NoOp));
        // brew creates templates too: its templates are read first as well.
        let mut snap = Snapshot::empty();
        let known = Address::new("brew", Kind::Template, "old");
        snap.resources.insert(
            known.clone(),
            ResourceState {
                address: known,
                kind: Kind::Template,
                ids: Ids::default(),
                hash: String::new(),
                attrs: crate::state::raw_attrs(&crate::model::Attrs::Image(Box::new(
                    crate::model::ImageAttrs {
                        file: String::new(),
                        source: Default::default(),
                        role: String::new(),
                        image_type: "png".into(),
                        sha256: String::new(),
                        width: 1,
                        height: 1,
                        bytes: 1,
                        id: None,
                    },
                ))),
                applied_at: String::new(),
            },
        );
        let b = budget(&changes, &snap, &RateLimits::default());
        let by = |m: &str| b.by_method.get(m).copied().unwrap_or(0);
        assert_eq!(by("alipay.offline.material.image.upload"), 2);
        assert_eq!(by("alipay.marketing.card.template.create"), 4);
        assert_eq!(by("alipay.marketing.card.template.batchquery"), 2);
        assert_eq!(by("alipay.marketing.card.formtemplate.set"), 2);
        assert_eq!(by("alipay.marketing.card.activateurl.apply"), 2);
        assert_eq!(b.calls, 12);
        assert_eq!(b.per_merchant["tea"], 6);
        assert_eq!(b.per_merchant["brew"], 6);
        assert_eq!(b.seconds_at_limits, None);
    }

    #[test]
    fn updates_modify_and_the_tightest_limit_sets_the_time() {
        let changes = program("tea", Action::Update);
        let limits = RateLimits {
            per_second: Some(100.0),
            per_method: [("alipay.marketing.card.template.modify".to_string(), 1.0)].into(),
            ..RateLimits::default()
        };
        let b = budget(&changes, &Snapshot::empty(), &limits);
        assert_eq!(b.by_method["alipay.marketing.card.template.modify"], 2);
        assert!(
            !b.by_method
                .contains_key("alipay.marketing.card.template.batchquery")
        );
        assert_eq!(b.calls, 5);
        assert_eq!(b.seconds_at_limits, Some(2.0));
    }
}
