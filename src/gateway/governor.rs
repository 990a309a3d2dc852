//! The governor: a [`Gateway`] in front of another that retries what can be
//! retried (exponential backoff with jitter) and, on a throttling answer,
//! pauses only the lane it came from: the (app_id, merchant) the call was
//! made for. One merchant's 40005 never slows another merchant's calls.
//!
//! It owns retry policy and lanes; it must never sleep or draw randomness on
//! its own: the [`Clock`] and the [`Jitter`] are handed in, so tests drive time.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rand::Rng;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Answer, Gateway, Scope};
use crate::alipay::Call;
use crate::alipay::methods::Retry;
use crate::alipay::{ErrorClass, GatewayError};

/// How often and how patiently a call is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1`: `base * 2^attempt`,
    /// capped at `max`, scaled by `jitter` (drawn from 0.5..=1.0).
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let cap = self.base.saturating_mul(1 << attempt.min(16)).min(self.max);
        cap.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// Time, as the governor sees it.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// The real clock (tokio's timer).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A factor in 0.5..=1.0 for each backoff, so retries spread out.
pub type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

pub fn random_jitter() -> Jitter {
    Arc::new(|| rand::thread_rng().gen_range(0.5..=1.0))
}

/// Who hears about retries (the progress display).
pub trait Observer: Send + Sync {
    fn retrying(
        &self,
        _at: &Scope,
        _method: &str,
        _attempt: u32,
        _error: &GatewayError,
        _wait: Duration,
    ) {
    }
}

pub struct Silent;
impl Observer for Silent {}

/// One (app_id, merchant)'s throttling: until when its calls wait, and what
/// they have waited so far.
#[derive(Debug, Default)]
struct Lane {
    paused_until: Option<Instant>,
    throttled: u64,
    waited: Duration,
}

/// What the governor did, per lane where it matters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Calls sent (retries included).
    pub calls: u64,
    pub retries: u64,
    /// Uploads that failed in a way that may have taken effect.
    pub uploads_in_doubt: u64,
    /// Per merchant that was throttled: how often, and how long its calls
    /// waited in all (summed over calls).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub throttled: BTreeMap<String, Throttled>,
    /// With no app limit configured, the calls a second at which the
    /// gateway first said the app was over its limit (see the limiter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned_app_rate: Option<f64>,
}

impl Stats {
    /// What happened after `before` was taken.
    pub fn since(&self, before: &Stats) -> Stats {
        Stats {
            calls: self.calls - before.calls,
            retries: self.retries - before.retries,
            uploads_in_doubt: self.uploads_in_doubt - before.uploads_in_doubt,
            learned_app_rate: self.learned_app_rate,
            throttled: self
                .throttled
                .iter()
                .filter_map(|(m, t)| {
                    let b = before.throttled.get(m).cloned().unwrap_or_default();
                    let d = Throttled {
                        answers: t.answers - b.answers,
                        waited_ms: t.waited_ms - b.waited_ms,
                    };
                    (d != Throttled::default()).then(|| (m.clone(), d))
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Throttled {
    pub answers: u64,
    pub waited_ms: u64,
}

pub struct Governor {
    inner: Arc<dyn Gateway>,
    policy: RetryPolicy,
    clock: Arc<dyn Clock>,
    jitter: Jitter,
    observer: Arc<dyn Observer>,
    /// Keyed by merchant: every call of this governor is signed as one app,
    /// so the key is (app_id, merchant).
    lanes: Mutex<HashMap<String, Lane>>,
    /// Configured rate limits: calls wait for their buckets.
    limiter: Mutex<super::limiter::Limiter>,
    calls: AtomicU64,
    retries: AtomicU64,
    uploads_in_doubt: AtomicU64,
}

impl Governor {
    pub fn new(inner: Arc<dyn Gateway>, policy: RetryPolicy) -> Self {
        Governor {
            inner,
            policy,
            clock: Arc::new(SystemClock),
            jitter: random_jitter(),
            observer: Arc::new(Silent),
            lanes: Mutex::default(),
            limiter: Mutex::default(),
            calls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            uploads_in_doubt: AtomicU64::new(0),
        }
    }

    pub fn with_time(mut self, clock: Arc<dyn Clock>, jitter: Jitter) -> Self {
        self.clock = clock;
        self.jitter = jitter;
        self
    }

    /// Pace calls to these limits (see [`super::limiter`]).
    pub fn with_limits(mut self, limits: crate::model::RateLimits) -> Self {
        self.limiter = Mutex::new(super::limiter::Limiter::new(limits));
        self
    }

    /// Wait until the call's buckets admit it.
    async fn pace(&self, at: &Scope, method: &str) {
        let go = {
            let mut l = self.limiter.lock().expect("limiter lock");
            if l.is_empty() {
                return;
            }
            l.reserve(self.clock.now(), &at.merchant, method)
        };
        let now = self.clock.now();
        if go > now {
            self.clock.sleep(go - now).await;
        }
    }

    pub fn observed_by(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub fn stats(&self) -> Stats {
        let lanes = self.lanes.lock().expect("lanes lock");
        Stats {
            calls: self.calls.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            uploads_in_doubt: self.uploads_in_doubt.load(Ordering::Relaxed),
            learned_app_rate: self
                .limiter
                .lock()
                .expect("limiter lock")
                .learned_app_rate(),
            throttled: lanes
                .iter()
                .filter(|(_, l)| l.throttled > 0 || !l.waited.is_zero())
                .map(|(m, l)| {
                    (
                        m.clone(),
                        Throttled {
                            answers: l.throttled,
                            waited_ms: l.waited.as_millis() as u64,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Until when `merchant`'s calls wait, if they do.
    pub fn paused_until(&self, merchant: &str) -> Option<Instant> {
        let lanes = self.lanes.lock().expect("lanes lock");
        lanes
            .get(merchant)
            .and_then(|l| l.paused_until)
            .filter(|u| *u > self.clock.now())
    }

    /// Wait while the lane is paused (a pause may grow while waiting).
    async fn clear_lane(&self, merchant: &str) {
        loop {
            let wait = {
                let mut lanes = self.lanes.lock().expect("lanes lock");
                let now = self.clock.now();
                match lanes.get_mut(merchant) {
                    Some(lane) => match lane.paused_until {
                        Some(u) if u > now => {
                            lane.waited += u - now;
                            u - now
                        }
                        _ => return,
                    },
                    None => return,
                }
            };
            self.clock.sleep(wait).await;
        }
    }

    /// Send through `f` until it succeeds, the error cannot be retried, the
    /// attempts run out, or (for a call sent once, [`Retry::OnlyWhenThrottled`])
    /// the gateway answered anything but "throttled".
    async fn attempts<T, F, Fut>(
        &self,
        at: &Scope,
        method: &str,
        retry: Retry,
        mut f: F,
    ) -> Result<T, GatewayError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let mut attempt = 0;
        loop {
            self.clear_lane(&at.merchant).await;
            self.pace(at, method).await;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let err = match f().await {
                Ok(v) => {
                    self.limiter
                        .lock()
                        .expect("limiter lock")
                        .admitted(&at.merchant, method);
                    return Ok(v);
                }
                Err(e) => e,
            };
            attempt += 1;
            let class = err.class();
            if !class.can_retry()
                || attempt >= self.policy.attempts
                || (retry == Retry::OnlyWhenThrottled && class != ErrorClass::Throttled)
            {
                return Err(err);
            }
            let wait = self.policy.backoff(attempt, (self.jitter)());
            self.retries.fetch_add(1, Ordering::Relaxed);
            self.observer.retrying(at, method, attempt, &err, wait);
            if class == ErrorClass::Throttled {
                // The bucket the answer names slows down for good (until
                // calls recover it)...
                let named = super::limiter::Named::of(
                    err.api().and_then(|a| a.sub_code.as_deref()),
                    at.token.is_some(),
                );
                self.limiter
                    .lock()
                    .expect("limiter lock")
                    .throttled(named, &at.merchant, method);
                // ...and only this lane pauses now; the wait happens in `clear_lane`.
                let until = self.clock.now() + wait;
                let mut lanes = self.lanes.lock().expect("lanes lock");
                let lane = lanes.entry(at.merchant.clone()).or_default();
                lane.throttled += 1;
                if lane.paused_until.is_none_or(|u| u < until) {
                    lane.paused_until = Some(until);
                }
            } else {
                self.clock.sleep(wait).await;
            }
        }
    }
}

impl Gateway for Governor {
    fn app_id(&self) -> &str {
        self.inner.app_id()
    }

    fn send<'a>(&'a self, at: &'a Scope, call: &'a Call) -> Answer<'a, Map<String, Value>> {
        Box::pin(
            self.attempts(at, &call.method, call.retry, move || async move {
                let r = self.inner.send(at, call).await.and_then(|node| {
                    if let Some(check) = call.check {
                        check(&node)?;
                    }
                    Ok(node)
                });
                if call.retry == Retry::NotIdempotent
                    && r.as_ref().is_err_and(GatewayError::in_doubt)
                {
                    // Not idempotent (an upload): this attempt may have stored
                    // something no state will know.
                    self.uploads_in_doubt.fetch_add(1, Ordering::Relaxed);
                }
                r
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alipay::ApiError;
    use crate::alipay::methods::{ApiRequest, TemplateBatchQueryRequest};
    use crate::gateway::Typed;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::watch;

    /// Time that moves only when the test says so.
    struct ManualClock {
        start: Instant,
        now: watch::Sender<Duration>,
        sleepers: Arc<AtomicUsize>,
        slept: Mutex<Vec<Duration>>,
    }

    impl ManualClock {
        fn new() -> Arc<Self> {
            Arc::new(ManualClock {
                start: Instant::now(),
                now: watch::channel(Duration::ZERO).0,
                sleepers: Arc::default(),
                slept: Mutex::default(),
            })
        }
        fn advance(&self, d: Duration) {
            self.now.send_modify(|t| *t += d);
        }
        async fn until_sleepers(&self, n: usize) {
            while self.sleepers.load(Ordering::SeqCst) != n {
                tokio::task::yield_now().await;
            }
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            self.start + *self.now.borrow()
        }
        fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
            self.slept.lock().unwrap().push(d);
            let target = *self.now.borrow() + d;
            let mut rx = self.now.subscribe();
            let sleepers = self.sleepers.clone();
            sleepers.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                while *rx.borrow_and_update() < target {
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
                sleepers.fetch_sub(1, Ordering::SeqCst);
            })
        }
    }

    /// A gateway answering list_templates from a script per merchant
    /// (`Err(code)` for an error answer), then successes.
    struct Scripted {
        script: Mutex<HashMap<String, Vec<&'static str>>>,
        seen: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(script: &[(&str, &[&'static str])]) -> Arc<Self> {
            Arc::new(Scripted {
                script: Mutex::new(
                    script
                        .iter()
                        .map(|(m, s)| (m.to_string(), s.to_vec()))
                        .collect(),
                ),
                seen: Mutex::default(),
            })
        }
    }

    fn api_error(code: &str) -> GatewayError {
        let sub = match code {
            "40005" => "isv.app-call-limited",
            "20000" => "isp.unknow-error",
            _ => "isv.invalid-parameter",
        };
        GatewayError::Api(Box::new(ApiError {
            method: "m".into(),
            code: code.into(),
            msg: "m".into(),
            sub_code: Some(sub.into()),
            sub_msg: None,
            signed: true,
        }))
    }

    impl Gateway for Scripted {
        fn app_id(&self) -> &str {
            "2021"
        }
        fn send<'a>(&'a self, at: &'a Scope, call: &'a Call) -> Answer<'a, Map<String, Value>> {
            assert_eq!(
                call.method,
                TemplateBatchQueryRequest::METHOD,
                "not scripted"
            );
            self.seen.lock().unwrap().push(at.merchant.clone());
            let next = {
                let mut s = self.script.lock().unwrap();
                let steps = s.entry(at.merchant.clone()).or_default();
                (!steps.is_empty()).then(|| steps.remove(0))
            };
            Box::pin(async move {
                match next {
                    Some(code) => Err(api_error(code)),
                    None => Ok(Map::new()),
                }
            })
        }
    }

    fn governor(g: Arc<Scripted>, clock: Arc<ManualClock>) -> Arc<Governor> {
        Arc::new(Governor::new(g, RetryPolicy::default()).with_time(clock, Arc::new(|| 1.0)))
    }

    const PAGE: TemplateBatchQueryRequest = TemplateBatchQueryRequest {
        page_no: 1,
        page_size: 20,
    };

    #[test]
    fn backoff_doubles_up_to_the_cap_and_scales_by_jitter() {
        let p = RetryPolicy {
            attempts: 8,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let table = [
            (1, 1.0, 200),
            (2, 1.0, 400),
            (3, 1.0, 800),
            (4, 1.0, 1000),
            (30, 1.0, 1000),
            (1, 0.5, 100),
            (4, 0.5, 500),
        ];
        for (attempt, jitter, ms) in table {
            assert_eq!(
                p.backoff(attempt, jitter),
                Duration::from_millis(ms),
                "attempt {attempt}, jitter {jitter}"
            );
        }
    }

    #[tokio::test]
    async fn a_throttled_merchant_slows_only_itself() {
        let clock = ManualClock::new();
        let g = Scripted::new(&[("tea", &["40005"])]);
        let gov = governor(g.clone(), clock.clone());
        let tea = Scope::merchant("tea", None);
        let brew = Scope::merchant("brew", None);
        let tea_call = tokio::spawn({
            let gov = gov.clone();
            async move { gov.call(&tea, &PAGE).await }
        });
        // tea was answered 40005 and now waits out its pause.
        clock.until_sleepers(1).await;
        assert!(gov.paused_until("tea").is_some());
        assert!(gov.paused_until("brew").is_none());
        // brew's calls go straight through while tea waits: no sleep, no pause.
        for _ in 0..3 {
            gov.call(&brew, &PAGE).await.unwrap();
        }
        assert_eq!(clock.sleepers.load(Ordering::SeqCst), 1);
        assert_eq!(clock.slept.lock().unwrap().len(), 1);
        clock.advance(Duration::from_millis(200));
        tea_call.await.unwrap().unwrap();
        let stats = gov.stats();
        assert_eq!(stats.calls, 5);
        assert_eq!(stats.retries, 1);
        assert_eq!(stats.throttled.keys().collect::<Vec<_>>(), ["tea"]);
        assert_eq!(stats.throttled["tea"].answers, 1);
        assert_eq!(stats.throttled["tea"].waited_ms, 200);
    }

    #[tokio::test]
    async fn retries_are_bounded_and_permanent_errors_are_not_retried() {
        // (script, attempts made, result ok, total backoff slept in ms)
        let table: [(&[&'static str], usize, bool, u64); 4] = [
            (&[], 1, true, 0),
            (&["20000", "20000"], 3, true, 200 + 400),
            (&["40004"], 1, false, 0),
            (
                &["20000"; 8],
                8,
                false,
                200 + 400 + 800 + 1600 + 3200 + 5000 + 5000,
            ),
        ];
        for (script, attempts, ok, slept_ms) in table {
            let clock = ManualClock::new();
            let g = Scripted::new(&[("brew", script)]);
            let gov = governor(g.clone(), clock.clone());
            let call = tokio::spawn({
                let gov = gov.clone();
                async move { gov.call(&Scope::merchant("brew", None), &PAGE).await }
            });
            // Drive time: whenever the call sleeps, let its wait pass.
            while !call.is_finished() {
                if clock.sleepers.load(Ordering::SeqCst) > 0 {
                    clock.advance(Duration::from_secs(60));
                }
                tokio::task::yield_now().await;
            }
            let result = call.await.unwrap();
            assert_eq!(result.is_ok(), ok, "{script:?}");
            assert_eq!(g.seen.lock().unwrap().len(), attempts, "{script:?}");
            let slept: Duration = clock.slept.lock().unwrap().iter().sum();
            assert_eq!(slept.as_millis() as u64, slept_ms, "{script:?}");
        }
    }
}
