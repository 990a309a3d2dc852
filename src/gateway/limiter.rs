//! Rate limits held rather than hit: token buckets per app, per merchant
//! (one app_auth_token) and per method, each `rate` calls per second with a
//! burst of one second, as GCRA (a theoretical arrival time per bucket). A
//! call waits until every bucket it passes through admits it.
//!
//! Alipay answers 40005 above its limits and documents no Retry-After: on a
//! 40005 the bucket the sub_code names (`isv.method-call-limited`: the
//! method's; `isv.app-call-limited`: the merchant's for a call made with an
//! app_auth_token, else the app's) halves its rate (multiplicative
//! decrease); each admitted call gives back a twentieth of the configured
//! rate, up to it (additive recovery).
//!
//! With no app limit configured, the first app-wide 40005 teaches one: the
//! rate the app was calling at over the last second becomes its bucket's
//! ceiling, halved at once (so a program with no `rate_limits` stops
//! spending a third of its calls on throttling answers), and the report
//! says what limit would have avoided it.
//!
//! Pure bookkeeping over instants handed in: no clock, no sleeping.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::RateLimits;

/// The lowest a decreased rate goes, in calls per second.
const FLOOR: f64 = 0.2;

/// The share of each configured limit cardform uses: 2 % under it, so that
/// the gateway's clock and bucket never see a call over the limit.
pub const MARGIN: f64 = 0.98;

#[derive(Debug, Clone)]
struct Bucket {
    configured: f64,
    rate: f64,
    /// Theoretical arrival time of the next call.
    tat: Option<Instant>,
}

impl Bucket {
    fn new(rate: f64) -> Self {
        Bucket {
            configured: rate,
            rate,
            tat: None,
        }
    }
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }
    /// How far ahead of its schedule a call may go: a burst of one second.
    fn tolerance(&self) -> Duration {
        Duration::from_secs_f64((self.rate.max(1.0) - 1.0) / self.rate)
    }
    /// The earliest this bucket admits a call arriving at `now`.
    fn earliest(&self, now: Instant) -> Instant {
        match self.tat {
            Some(tat) => tat.checked_sub(self.tolerance()).unwrap_or(now).max(now),
            None => now,
        }
    }
    fn take(&mut self, at: Instant) {
        let base = self.tat.map_or(at, |t| t.max(at));
        self.tat = Some(base + self.interval());
    }
    fn decrease(&mut self) {
        self.rate = (self.rate / 2.0).max(FLOOR.min(self.configured));
    }
    fn recover(&mut self) {
        self.rate = (self.rate + self.configured / 20.0).min(self.configured);
    }
}

/// Which buckets a 40005 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    App,
    Merchant,
    Method,
}

impl Named {
    /// From the 40005's sub_code, and whether the call was made for a
    /// merchant (with its app_auth_token).
    pub fn of(sub_code: Option<&str>, for_merchant: bool) -> Named {
        match sub_code {
            Some("isv.method-call-limited") => Named::Method,
            _ if for_merchant => Named::Merchant,
            _ => Named::App,
        }
    }
}

#[derive(Debug, Default)]
pub struct Limiter {
    limits: RateLimits,
    /// The share of each limit used ([`MARGIN`]; 1 in the unit tests).
    share: f64,
    app: Option<Bucket>,
    merchants: HashMap<String, Bucket>,
    methods: HashMap<String, Bucket>,
    /// The calls reserved in the last second (to learn the app's limit).
    recent: std::collections::VecDeque<Instant>,
    /// The app rate learned from a 40005 when none was configured.
    learned: Option<f64>,
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Self {
        Self::with_share(limits, MARGIN)
    }

    fn with_share(limits: RateLimits, share: f64) -> Self {
        Limiter {
            app: limits.per_second.map(|r| Bucket::new(r * share)),
            methods: limits
                .per_method
                .iter()
                .map(|(m, r)| (m.clone(), Bucket::new(r * share)))
                .collect(),
            merchants: HashMap::new(),
            limits,
            share,
            recent: Default::default(),
            learned: None,
        }
    }

    /// The app-wide rate a 40005 taught (no `per_second` configured): about
    /// what the app was calling at when the gateway said no.
    pub fn learned_app_rate(&self) -> Option<f64> {
        self.learned
    }

    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }

    fn merchant_bucket(&mut self, merchant: &str) -> Option<&mut Bucket> {
        if !self.merchants.contains_key(merchant) {
            let rate = self.limits.merchant(merchant)?;
            self.merchants
                .insert(merchant.to_string(), Bucket::new(rate * self.share));
        }
        self.merchants.get_mut(merchant)
    }

    /// Reserve a call of `method` for `merchant` arriving at `now`: returns
    /// when it may go (`now` if at once).
    pub fn reserve(&mut self, now: Instant, merchant: &str, method: &str) -> Instant {
        let mut at = now;
        if let Some(b) = &self.app {
            at = at.max(b.earliest(now));
        }
        if let Some(b) = self.merchant_bucket(merchant) {
            at = at.max(b.earliest(now));
        }
        if let Some(b) = self.methods.get(method) {
            at = at.max(b.earliest(now));
        }
        if let Some(b) = self.app.as_mut() {
            b.take(at);
        }
        if let Some(b) = self.merchant_bucket(merchant) {
            b.take(at);
        }
        if let Some(b) = self.methods.get_mut(method) {
            b.take(at);
        }
        if self.limits.per_second.is_none() && self.learned.is_none() {
            self.recent.push_back(at);
            while self
                .recent
                .front()
                .is_some_and(|t| at.duration_since(*t) > Duration::from_secs(1))
            {
                self.recent.pop_front();
            }
        }
        at
    }

    /// A 40005 for this call: halve the named bucket's rate. Returns whether
    /// a configured bucket took it (else only the backoff slows the caller).
    pub fn throttled(&mut self, named: Named, merchant: &str, method: &str) -> bool {
        let app_wide = named == Named::App
            || (named == Named::Merchant && self.limits.merchant(merchant).is_none());
        if app_wide && self.app.is_none() {
            // No app limit configured: learn it from the rate that hit it.
            let observed = (self.recent.len() as f64).max(1.0);
            self.learned = Some(observed);
            self.recent.clear();
            self.app = Some(Bucket::new(observed));
        }
        let b = match named {
            Named::App => self.app.as_mut(),
            Named::Merchant => match self.merchant_bucket(merchant) {
                Some(b) => Some(b),
                None => self.app.as_mut(),
            },
            Named::Method => self.methods.get_mut(method),
        };
        match b {
            Some(b) => {
                b.decrease();
                true
            }
            None => false,
        }
    }

    /// A call went through: its buckets recover a step.
    pub fn admitted(&mut self, merchant: &str, method: &str) {
        if let Some(b) = self.app.as_mut() {
            b.recover();
        }
        if let Some(b) = self.merchants.get_mut(merchant) {
            b.recover();
        }
        if let Some(b) = self.methods.get_mut(method) {
            b.recover();
        }
    }

    /// The current rate of a merchant's bucket (for tests and reports).
    pub fn merchant_rate(&self, merchant: &str) -> Option<f64> {
        self.merchants.get(merchant).map(|b| b.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn an_app_limit_is_learned_from_the_first_app_wide_40005() {
        let mut l = Limiter::with_share(RateLimits::default(), 1.0);
        let t0 = Instant::now();
        // 100 calls in half a second, unlimited: all at once.
        for i in 0..100 {
            let at = l.reserve(t0 + Duration::from_millis(5 * i), "", "m");
            assert_eq!(at, t0 + Duration::from_millis(5 * i));
        }
        assert!(l.throttled(Named::App, "", "m"));
        assert_eq!(l.learned_app_rate(), Some(100.0));
        // Now held to half of it: 50 a second.
        let start = t0 + Duration::from_secs(1);
        let mut last = start;
        for _ in 0..150 {
            last = l.reserve(start, "", "m");
        }
        assert!(
            last >= start + Duration::from_secs(2),
            "150 calls at 50/s take 2 s: {:?}",
            last - start
        );
    }

    fn limits() -> RateLimits {
        RateLimits {
            per_second: Some(10.0),
            per_merchant: Some(4.0),
            per_method: BTreeMap::from([("alipay.upload".to_string(), 2.0)]),
            merchants: BTreeMap::from([("slow".to_string(), 1.0)]),
        }
    }

    /// Reserve `n` calls arriving together; the offsets they go at, in ms.
    fn offsets(l: &mut Limiter, t0: Instant, n: usize, merchant: &str, method: &str) -> Vec<u128> {
        (0..n)
            .map(|_| (l.reserve(t0, merchant, method) - t0).as_millis())
            .collect()
    }

    #[test]
    fn each_bucket_paces_its_calls_after_a_one_second_burst() {
        let t0 = Instant::now();
        let mut l = Limiter::with_share(limits(), 1.0);
        // A merchant at 4/s: 4 at once, then one every 250 ms.
        assert_eq!(
            offsets(&mut l, t0, 6, "tea", "alipay.x"),
            [0, 0, 0, 0, 250, 500]
        );
        // Its own override, 1/s.
        assert_eq!(offsets(&mut l, t0, 3, "slow", "alipay.x"), [0, 1000, 2000]);
        // A method at 2/s, whatever the merchant.
        let mut l = Limiter::with_share(limits(), 1.0);
        assert_eq!(
            [
                offsets(&mut l, t0, 2, "a", "alipay.upload"),
                offsets(&mut l, t0, 1, "b", "alipay.upload")
            ]
            .concat(),
            [0, 0, 500]
        );
        // The app at 10/s across merchants (each under its own 4/s).
        let mut l = Limiter::with_share(limits(), 1.0);
        let all: Vec<u128> = (0..12)
            .map(|i| (l.reserve(t0, &format!("m{i}"), "alipay.x") - t0).as_millis())
            .collect();
        assert_eq!(all[..10], [0; 10]);
        assert_eq!(all[10..], [100, 200]);
    }

    #[test]
    fn the_product_keeps_two_percent_under_each_limit() {
        let t0 = Instant::now();
        let mut l = Limiter::new(RateLimits {
            per_second: Some(1.0),
            ..Default::default()
        });
        assert_eq!(offsets(&mut l, t0, 3, "m", "alipay.x"), [0, 1020, 2040]);
    }

    #[test]
    fn a_40005_halves_the_named_bucket_and_calls_recover_it() {
        let mut l = Limiter::with_share(limits(), 1.0);
        let t0 = Instant::now();
        l.reserve(t0, "tea", "alipay.x");
        assert!(l.throttled(
            Named::of(Some("isv.app-call-limited"), true),
            "tea",
            "alipay.x"
        ));
        assert_eq!(l.merchant_rate("tea"), Some(2.0));
        l.reserve(t0, "bakery", "alipay.x");
        assert_eq!(
            l.merchant_rate("bakery"),
            Some(4.0),
            "other merchants keep their rate"
        );
        for _ in 0..10 {
            l.admitted("tea", "alipay.x");
        }
        assert_eq!(
            l.merchant_rate("tea"),
            Some(4.0),
            "back to the configured rate, not above"
        );
        assert_eq!(
            Named::of(Some("isv.method-call-limited"), true),
            Named::Method
        );
        assert_eq!(Named::of(Some("isv.app-call-limited"), false), Named::App);
        // Nothing configured: a method's 40005 finds no bucket (the backoff
        // alone slows the caller); an app-wide one teaches the app's limit
        // (issue 29), from no calls seen: the floor of one a second.
        let mut none = Limiter::with_share(RateLimits::default(), 1.0);
        assert!(!none.throttled(Named::Method, "tea", "alipay.x"));
        assert!(none.throttled(Named::App, "tea", "alipay.x"));
        assert_eq!(none.learned_app_rate(), Some(1.0));
    }
}
