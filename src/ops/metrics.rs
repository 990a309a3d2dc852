//! `cards serve`'s counters, in Prometheus' text format at `/metrics`.
//! Labels carry only fixed words and the gateway's codes: never a member,
//! a request id or a card number.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the activation latency histogram.
const BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
pub struct Metrics {
    /// Callbacks and SPI calls received.
    pub received: AtomicU64,
    /// By how the card came: opened, repeated, recovered, holder, spi.
    outcomes: Mutex<BTreeMap<String, u64>>,
    /// Failures by the gateway's code and sub_code (or a local reason).
    failures: Mutex<BTreeMap<(String, String), u64>>,
    /// Refused before any call: the failure budget, a bad SPI signature.
    pub refused_budget: AtomicU64,
    pub refused_signature: AtomicU64,
    /// Claims another replica left, taken over.
    pub claims_taken_over: AtomicU64,
    /// Trades from the till, by outcome.
    trades: Mutex<BTreeMap<String, u64>>,
    pub in_flight: AtomicI64,
    latency: Mutex<(Vec<u64>, f64, u64)>,
}

fn bump(m: &Mutex<BTreeMap<String, u64>>, k: &str) {
    *m.lock()
        .expect("not poisoned")
        .entry(k.to_string())
        .or_default() += 1;
}

impl Metrics {
    pub fn outcome(&self, how: &str, took: Duration) {
        bump(&self.outcomes, how);
        let s = took.as_secs_f64();
        let mut l = self.latency.lock().expect("not poisoned");
        if l.0.is_empty() {
            l.0 = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                l.0[i] += 1;
            }
        }
        l.1 += s;
        l.2 += 1;
    }

    pub fn failure(&self, code: &str, sub_code: &str) {
        *self
            .failures
            .lock()
            .expect("not poisoned")
            .entry((code.to_string(), sub_code.to_string()))
            .or_default() += 1;
    }

    pub fn trade(&self, outcome: &str) {
        bump(&self.trades, outcome);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            &mut out,
            "cardform_activations_received_total",
            "Callbacks and open-card SPI calls received.",
            self.received.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP cardform_activations_total Activations answered with a card, by how.\n# TYPE cardform_activations_total counter"
        );
        for (k, v) in self.outcomes.lock().expect("not poisoned").iter() {
            let _ = writeln!(out, "cardform_activations_total{{how=\"{k}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP cardform_activation_failures_total Activations that failed, by the gateway's code.\n# TYPE cardform_activation_failures_total counter"
        );
        for ((c, s), v) in self.failures.lock().expect("not poisoned").iter() {
            let _ = writeln!(
                out,
                "cardform_activation_failures_total{{code=\"{}\",sub_code=\"{}\"}} {v}",
                label(c),
                label(s)
            );
        }
        counter(
            &mut out,
            "cardform_refused_failure_budget_total",
            "Callbacks refused without a call: the failure budget was spent.",
            self.refused_budget.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cardform_refused_signature_total",
            "SPI calls refused: the signature is not Alipay's.",
            self.refused_signature.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "cardform_claims_taken_over_total",
            "Activations another replica left unfinished, taken over.",
            self.claims_taken_over.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP cardform_trades_total Trades from the till, by outcome.\n# TYPE cardform_trades_total counter"
        );
        for (k, v) in self.trades.lock().expect("not poisoned").iter() {
            let _ = writeln!(out, "cardform_trades_total{{outcome=\"{k}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP cardform_activations_in_flight Activations under way.\n# TYPE cardform_activations_in_flight gauge\ncardform_activations_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let l = self.latency.lock().expect("not poisoned");
        let _ = writeln!(
            out,
            "# HELP cardform_activation_seconds Time from a callback or SPI call to its answer.\n# TYPE cardform_activation_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "cardform_activation_seconds_bucket{{le=\"{b}\"}} {}",
                l.0.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(
            out,
            "cardform_activation_seconds_bucket{{le=\"+Inf\"}} {}\ncardform_activation_seconds_sum {}\ncardform_activation_seconds_count {}",
            l.2, l.1, l.2
        );
        out
    }
}

/// A label value: letters, digits, `.`, `-` and `_` only (a gateway code).
fn label(v: &str) -> String {
    v.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect()
}
