//! The dependency walk as bookkeeping: which change may start now, which is
//! skipped because a change it needs failed, and when the retires may begin.
//! Pure: the executor runs what this says, in whatever concurrency it likes.
//!
//! Fairness: ready changes are taken round-robin across merchants, so one
//! merchant's many changes (or a slow merchant's) never queue ahead of
//! every other merchant's.
//!
//! Rules: a change is ready once every change it depends on (within the
//! work) has finished; one whose dependency failed or was skipped is skipped
//! itself (its own dependents in turn); retires wait until everything else
//! has finished, and nothing waits on a retire.

use std::collections::{BTreeMap, VecDeque};

use crate::model::Address;
use crate::plan::Change;

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Start change `i`.
    Run(usize),
    /// Change `i` is skipped: `because` failed or was skipped.
    Skip(usize, Address),
}

/// Ready changes, one queue per merchant, taken in turn.
#[derive(Debug, Default)]
struct Ready {
    queues: std::collections::HashMap<String, VecDeque<usize>>,
    /// Merchants with ready changes, in the order of their turns.
    turn: VecDeque<String>,
}

impl Ready {
    fn push_back(&mut self, merchant: &str, i: usize) {
        let q = self.queues.entry(merchant.to_string()).or_default();
        if q.is_empty() {
            self.turn.push_back(merchant.to_string());
        }
        q.push_back(i);
    }

    fn pop_front(&mut self) -> Option<usize> {
        let m = self.turn.pop_front()?;
        let q = self
            .queues
            .get_mut(&m)
            .expect("bug: a merchant in turn has a queue");
        let i = q
            .pop_front()
            .expect("bug: a merchant in turn has a ready change");
        if !q.is_empty() {
            self.turn.push_back(m);
        }
        Some(i)
    }

    fn is_empty(&self) -> bool {
        self.turn.is_empty()
    }
}

pub struct Schedule {
    addresses: Vec<Address>,
    deps: Vec<Vec<Address>>,
    retire: Vec<bool>,
    /// For each change: how many of its dependencies are still to finish.
    pending: Vec<usize>,
    /// For each change: the changes waiting on it.
    dependents: Vec<Vec<usize>>,
    ready: Ready,
    /// Failed or skipped changes -> the failure they trace back to.
    broken: BTreeMap<Address, Address>,
    /// Merchants stopped by a failure that concerns the whole merchant (its
    /// authorisation): their changes not yet started are skipped.
    stopped: BTreeMap<String, Address>,
    retires_released: bool,
}

impl Schedule {
    pub fn new(work: &[Change]) -> Self {
        let position: BTreeMap<&Address, usize> = work
            .iter()
            .enumerate()
            .map(|(i, c)| (&c.address, i))
            .collect();
        let retire: Vec<bool> = work.iter().map(|c| c.action.removes()).collect();
        let mut pending = vec![0usize; work.len()];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); work.len()];
        for (i, change) in work.iter().enumerate() {
            for dep in &change.deps {
                if let Some(&d) = position.get(dep).filter(|&&d| !retire[d]) {
                    pending[i] += 1;
                    dependents[d].push(i);
                }
            }
        }
        let mut ready = Ready::default();
        for i in (0..work.len()).filter(|&i| pending[i] == 0 && !retire[i]) {
            ready.push_back(&work[i].address.merchant, i);
        }
        Schedule {
            addresses: work.iter().map(|c| c.address.clone()).collect(),
            deps: work.iter().map(|c| c.deps.clone()).collect(),
            retire,
            pending,
            dependents,
            ready,
            broken: BTreeMap::new(),
            stopped: BTreeMap::new(),
            retires_released: false,
        }
    }

    /// The next change to start or skip, if one is ready.
    pub fn next_step(&mut self) -> Option<Next> {
        let i = self.ready.pop_front()?;
        let because = self
            .stopped
            .get(self.addresses[i].merchant.as_str())
            .cloned()
            .or_else(|| {
                self.deps[i]
                    .iter()
                    .find(|d| self.broken.contains_key(*d))
                    .cloned()
            });
        Some(match because {
            Some(dep) => {
                self.broken.insert(self.addresses[i].clone(), dep.clone());
                self.release(i);
                Next::Skip(i, dep)
            }
            None => Next::Run(i),
        })
    }

    /// Change `i` has finished, well or not.
    pub fn done(&mut self, i: usize, ok: bool) {
        if !ok {
            self.broken
                .insert(self.addresses[i].clone(), self.addresses[i].clone());
        }
        self.release(i);
    }

    /// Change `i` failed in a way that concerns its whole merchant: none of
    /// that merchant's changes not yet started will start (each is skipped,
    /// tracing back to `i`); other merchants go on.
    pub fn stop_merchant(&mut self, i: usize) {
        let a = &self.addresses[i];
        self.stopped
            .entry(a.merchant.to_string())
            .or_insert_with(|| a.clone());
    }

    /// Nothing is under way and nothing is ready: release the retires, once.
    /// Returns whether there is anything left to do.
    pub fn drained(&mut self) -> bool {
        if self.retires_released {
            return !self.ready.is_empty();
        }
        self.retires_released = true;
        for i in (0..self.retire.len()).filter(|&i| self.retire[i]) {
            self.ready.push_back(&self.addresses[i].merchant, i);
        }
        !self.ready.is_empty()
    }

    fn release(&mut self, i: usize) {
        for &d in &self.dependents[i] {
            self.pending[d] -= 1;
            if self.pending[d] == 0 {
                self.ready.push_back(&self.addresses[d].merchant, d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::plan::Action;

    fn change(name: &str, kind: Kind, action: Action, deps: &[&Address]) -> Change {
        Change {
            address: Address::new("m", kind, name),
            kind,
            action,
            reason: "".into(),
            before: None,
            after: None,
            deps: deps.iter().map(|a| (*a).clone()).collect(),
            moved_from: None,
        }
    }

    /// Drive a schedule to the end, running changes one at a time in the
    /// order they become ready; `fails` lists the changes that fail.
    /// Returns (address, "run" | "skip <because>") in order.
    fn drive(work: &[Change], fails: &[&str]) -> Vec<(String, String)> {
        let mut s = Schedule::new(work);
        let mut log = Vec::new();
        loop {
            match s.next_step() {
                Some(Next::Run(i)) => {
                    let a = work[i].address.to_string();
                    let ok = !fails.contains(&a.as_str());
                    log.push((a, if ok { "ok" } else { "failed" }.to_string()));
                    s.done(i, ok);
                }
                Some(Next::Skip(i, because)) => {
                    log.push((work[i].address.to_string(), format!("skip {because}")));
                }
                None if s.drained() => {}
                None => break,
            }
        }
        log
    }

    #[test]
    fn the_walk_orders_skips_and_retires_last() {
        let img = Address::new("m", Kind::Image, "logo");
        let gold = Address::new("m", Kind::Template, "gold");
        let silver = Address::new("m", Kind::Template, "silver");
        let old = Address::new("m", Kind::Template, "old");
        let work = vec![
            change("old", Kind::Template, Action::Retire, &[]),
            change("gold", Kind::ActivationUrl, Action::Create, &[&gold]),
            change("gold", Kind::Form, Action::Create, &[&gold]),
            change("gold", Kind::Template, Action::Create, &[&img]),
            change("silver", Kind::Template, Action::Update, &[&img]),
            change("logo", Kind::Image, Action::Create, &[]),
            // Depends on a change outside the work (already applied) and on a retire.
            change("silver", Kind::Form, Action::Update, &[&silver, &old]),
        ];
        let a = |s: &str| s.to_string();
        // (failing changes, expected log)
        type Log = Vec<(String, String)>;
        let table: Vec<(&[&str], Log)> = vec![
            (
                &[],
                vec![
                    (a("merchant.m/image.logo"), a("ok")),
                    (a("merchant.m/template.gold"), a("ok")),
                    (a("merchant.m/template.silver"), a("ok")),
                    (a("merchant.m/activation_url.gold"), a("ok")),
                    (a("merchant.m/form.gold"), a("ok")),
                    (a("merchant.m/form.silver"), a("ok")),
                    (a("merchant.m/template.old"), a("ok")),
                ],
            ),
            (
                // The image fails: both templates skip, and their dependents
                // name the failure they trace to; the retire still runs.
                &["merchant.m/image.logo"],
                vec![
                    (a("merchant.m/image.logo"), a("failed")),
                    (
                        a("merchant.m/template.gold"),
                        a("skip merchant.m/image.logo"),
                    ),
                    (
                        a("merchant.m/template.silver"),
                        a("skip merchant.m/image.logo"),
                    ),
                    (
                        a("merchant.m/activation_url.gold"),
                        a("skip merchant.m/template.gold"),
                    ),
                    (
                        a("merchant.m/form.gold"),
                        a("skip merchant.m/template.gold"),
                    ),
                    (
                        a("merchant.m/form.silver"),
                        a("skip merchant.m/template.silver"),
                    ),
                    (a("merchant.m/template.old"), a("ok")),
                ],
            ),
            (
                // One template fails: only its dependents skip.
                &["merchant.m/template.gold"],
                vec![
                    (a("merchant.m/image.logo"), a("ok")),
                    (a("merchant.m/template.gold"), a("failed")),
                    (a("merchant.m/template.silver"), a("ok")),
                    (
                        a("merchant.m/activation_url.gold"),
                        a("skip merchant.m/template.gold"),
                    ),
                    (
                        a("merchant.m/form.gold"),
                        a("skip merchant.m/template.gold"),
                    ),
                    (a("merchant.m/form.silver"), a("ok")),
                    (a("merchant.m/template.old"), a("ok")),
                ],
            ),
        ];
        for (fails, want) in table {
            assert_eq!(drive(&work, fails), want, "failing {fails:?}");
        }
    }

    #[test]
    fn nothing_to_do_is_done_at_once() {
        let mut s = Schedule::new(&[]);
        assert_eq!(s.next_step(), None);
        assert!(!s.drained());
        assert!(!s.drained());
    }

    #[test]
    fn merchants_take_turns() {
        let at = |m: &str, n: &str| Change {
            address: Address::new(m, Kind::Image, n),
            ..change(n, Kind::Image, Action::Create, &[])
        };
        let work = [
            at("a", "1"),
            at("a", "2"),
            at("a", "3"),
            at("b", "1"),
            at("c", "1"),
            at("c", "2"),
        ];
        let mut s = Schedule::new(&work);
        let mut order = Vec::new();
        while let Some(Next::Run(i)) = s.next_step() {
            order.push(work[i].address.to_string());
        }
        assert_eq!(
            order,
            [
                "merchant.a/image.1",
                "merchant.b/image.1",
                "merchant.c/image.1",
                "merchant.a/image.2",
                "merchant.c/image.2",
                "merchant.a/image.3"
            ]
        );
    }
}
