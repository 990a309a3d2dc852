//! The call budget of a plan: what its changes cost at the gateway, each
//! kind's calls from that kind's module, and their time at the configured
//! rate limits. The planner names no call; this file counts them.

use std::collections::BTreeSet;

use crate::model::{Kind, RateLimits};
use crate::plan::{Action, Budget, Change};
use crate::state::Snapshot;

/// The calls `changes` make: each change's calls as its kind says, and one
/// template batchquery per merchant whose first templates are created (the
/// check for templates the state does not know). `snap` is the state as
/// the plan's `moved` blocks leave it.
pub fn budget(changes: &[Change], snap: &Snapshot, limits: &RateLimits) -> Budget {
    let mut b = Budget::default();
    let add = |b: &mut Budget, merchant: &str, method: &str| {
        b.calls += 1;
        *b.by_method.entry(method.to_string()).or_default() += 1;
        *b.per_merchant.entry(merchant.to_string()).or_default() += 1;
    };
    // Merchants whose templates the state knows: no check before creating.
    let mut checked: BTreeSet<&str> = snap
        .resources
        .keys()
        .chain(snap.intents.keys())
        .filter(|a| a.kind == Kind::Template)
        .map(|a| a.merchant.as_str())
        .collect();
    for c in changes {
        let m = c.address.merchant.as_str();
        if c.kind == Kind::Template && c.action == Action::Create && checked.insert(m) {
            for method in super::template::checks_before_first_create() {
                add(&mut b, m, method);
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
