//! Fault injection for tests and benchmarks: added latency, a fraction of calls
//! answered 20000 isp.unknow-error, throttling above a rate (40005
//! isv.app-call-limited), HTTP 502, and dropped connections.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use rand::Rng;

#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// How long each call takes, as the client sees it: the answer leaves this
    /// long after the request arrived (the sandbox's own work included).
    pub latency: Duration,
    /// Fraction of calls answered 20000 isp.unknow-error (no effect).
    pub error_rate: f64,
    /// Fraction of calls answered HTTP 502 (no effect).
    pub http502_rate: f64,
    /// Fraction of calls whose connection drops after the call took effect.
    pub drop_rate: f64,
    /// Calls per second admitted; above it, 40005 isv.app-call-limited.
    pub throttle_rps: Option<f64>,
    /// If any: `throttle_rps` holds only for calls made with one of these
    /// app_auth_tokens (each its own bucket); every other call is admitted.
    pub throttle_tokens: Vec<String>,
    /// Calls per second admitted for each merchant (one app_auth_token, or
    /// the app's own calls); above it, 40005 isv.app-call-limited.
    pub limit_merchant: Option<f64>,
    /// Calls per second admitted per method; above it, 40005
    /// isv.method-call-limited.
    pub limit_methods: Vec<(String, f64)>,
    /// Merchants (by app_auth_token) whose relation with the app is broken:
    /// every call for them fails as Alipay answers that case.
    pub merchant_faults: Vec<(String, MerchantFault)>,
}

/// What is wrong with a merchant's authorisation, as the gateway says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantFault {
    /// 20001 aop.invalid-app-auth-token
    Invalid,
    /// 20001 aop.app-auth-token-time-out
    Expired,
    /// 20001 aop.invalid-app-auth-token-no-api
    NoApi,
    /// 40006 isv.insufficient-user-permissions
    NoPermission,
    /// 40006 isv.insufficient-isv-permissions
    NoProduct,
}

impl std::str::FromStr for MerchantFault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "invalid" => MerchantFault::Invalid,
            "expired" => MerchantFault::Expired,
            "no-api" => MerchantFault::NoApi,
            "no-permission" => MerchantFault::NoPermission,
            "no-product" => MerchantFault::NoProduct,
            other => {
                return Err(format!(
                    "unknown merchant fault `{other}` (expected invalid, expired, no-api, no-permission, no-product)"
                ));
            }
        })
    }
}

impl MerchantFault {
    /// (code, msg, sub_code, sub_msg) as the gateway answers.
    pub fn answer(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            MerchantFault::Invalid => (
                "20001",
                "Insufficient Token Permissions",
                "aop.invalid-app-auth-token",
                "无效的应用授权令牌",
            ),
            MerchantFault::Expired => (
                "20001",
                "Insufficient Token Permissions",
                "aop.app-auth-token-time-out",
                "应用授权令牌已过期",
            ),
            MerchantFault::NoApi => (
                "20001",
                "Insufficient Token Permissions",
                "aop.invalid-app-auth-token-no-api",
                "商户未授权当前接口",
            ),
            MerchantFault::NoPermission => (
                "40006",
                "Insufficient Permissions",
                "isv.insufficient-user-permissions",
                "用户权限不足",
            ),
            MerchantFault::NoProduct => (
                "40006",
                "Insufficient Permissions",
                "isv.insufficient-isv-permissions",
                "ISV权限不足，建议在开发者中心检查签约是否已经生效",
            ),
        }
    }
}

impl Faults {
    pub fn roll(&self, rate: f64) -> bool {
        rate > 0.0 && rand::thread_rng().gen_bool(rate.clamp(0.0, 1.0))
    }

    /// Parse `latency=20ms,error_rate=0.1,http502_rate=0.05,drop_rate=0.05,throttle_rps=50`
    /// (and `throttle_token=T`, repeatable, to throttle only those merchants;
    /// `merchant_fault=TOKEN:KIND`, repeatable, to break a merchant's authorisation).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut f = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("fault `{item}` is not name=value"))?;
            let rate = |v: &str| -> Result<f64, String> {
                v.parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| format!("`{k}` takes a fraction from 0 to 1, got `{v}`"))
            };
            match k {
                "latency" => f.latency = parse_duration(v)?,
                "error_rate" => f.error_rate = rate(v)?,
                "http502_rate" => f.http502_rate = rate(v)?,
                "drop_rate" => f.drop_rate = rate(v)?,
                "throttle_rps" => {
                    f.throttle_rps =
                        Some(v.parse::<f64>().ok().filter(|r| *r > 0.0).ok_or_else(|| {
                            format!("`throttle_rps` takes a positive number, got `{v}`")
                        })?)
                }
                "throttle_token" => f.throttle_tokens.push(v.to_string()),
                "limit_merchant" => {
                    f.limit_merchant =
                        Some(v.parse::<f64>().ok().filter(|r| *r > 0.0).ok_or_else(|| {
                            format!("`limit_merchant` takes a positive number, got `{v}`")
                        })?)
                }
                "limit_method" => {
                    let (m, r) = v
                        .split_once(':')
                        .and_then(|(m, r)| Some((m, r.parse::<f64>().ok().filter(|r| *r > 0.0)?)))
                        .ok_or_else(|| format!("`limit_method` takes METHOD:RPS, got `{v}`"))?;
                    f.limit_methods.push((m.to_string(), r));
                }
                "merchant_fault" => {
                    let (token, kind) = v
                        .split_once(':')
                        .ok_or_else(|| format!("`merchant_fault` takes TOKEN:KIND, got `{v}`"))?;
                    f.merchant_faults.push((token.to_string(), kind.parse()?));
                }
                other => {
                    return Err(format!(
                        "unknown fault `{other}` (expected latency, error_rate, http502_rate, drop_rate, throttle_rps, throttle_token, limit_merchant, limit_method, merchant_fault)"
                    ));
                }
            }
        }
        Ok(f)
    }
}

/// A duration such as `20ms`, `2s` or `1m` (humantime's syntax).
fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v.trim())
        .map_err(|e| format!("`{v}` is not a duration ({e}; e.g. 20ms, 2s, 1m)"))
}

/// A token bucket admitting `rps` calls per second with a burst of one second.
pub struct Throttle {
    rps: Option<f64>,
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub fn new(rps: Option<f64>) -> Self {
        Throttle {
            rps,
            state: Mutex::new((rps.unwrap_or(0.0), Instant::now())),
        }
    }

    pub fn admit(&self) -> bool {
        let Some(rps) = self.rps else { return true };
        let mut s = self.state.lock().expect("throttle lock poisoned");
        let now = Instant::now();
        let elapsed = now.duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * rps).min(rps.max(1.0));
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The throttle: one bucket for every call (or one per throttled
/// merchant), one per merchant, one per method.
pub struct Throttles {
    all: Throttle,
    per_token: std::collections::HashMap<String, Throttle>,
    merchant_rps: Option<f64>,
    per_merchant: Mutex<std::collections::HashMap<String, std::sync::Arc<Throttle>>>,
    per_method: std::collections::HashMap<String, Throttle>,
}

impl Throttles {
    pub fn new(faults: &Faults) -> Self {
        let scoped = !faults.throttle_tokens.is_empty();
        Throttles {
            all: Throttle::new(faults.throttle_rps.filter(|_| !scoped)),
            per_token: faults
                .throttle_tokens
                .iter()
                .map(|t| (t.clone(), Throttle::new(faults.throttle_rps)))
                .collect(),
            merchant_rps: faults.limit_merchant,
            per_merchant: Mutex::default(),
            per_method: faults
                .limit_methods
                .iter()
                .map(|(m, r)| (m.clone(), Throttle::new(Some(*r))))
                .collect(),
        }
    }

    /// Whether a call of `method` made with `token` (its app_auth_token) is
    /// admitted; if not, the sub_code that says which limit it hit.
    pub fn admit(&self, token: Option<&str>, method: &str) -> Result<(), &'static str> {
        if !self.per_method.get(method).is_none_or(Throttle::admit) {
            return Err("isv.method-call-limited");
        }
        if self.merchant_rps.is_some() {
            let bucket = self
                .per_merchant
                .lock()
                .expect("throttle lock poisoned")
                .entry(token.unwrap_or_default().to_string())
                .or_insert_with(|| std::sync::Arc::new(Throttle::new(self.merchant_rps)))
                .clone();
            if !bucket.admit() {
                return Err("isv.app-call-limited");
            }
        }
        let merchant = token
            .and_then(|t| self.per_token.get(t))
            .is_none_or(Throttle::admit);
        if merchant && self.all.admit() {
            Ok(())
        } else {
            Err("isv.app-call-limited")
        }
    }
}

/// A response whose body fails after the headers: the client sees the
/// connection drop mid-response.
pub fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected connection drop",
        ))
    });
    Response::new(Body::from_stream(stream))
}

/// Sleep until `deadline`, to the microsecond where the OS allows it: tokio's
/// own timer wakes on millisecond ticks, which would add up to a millisecond
/// or more to every injected latency.
pub async fn sleep_until(deadline: Instant) {
    #[cfg(target_os = "linux")]
    if let Ok(delay) = tokio_timerfd::Delay::new(deadline)
        && delay.await.is_ok()
    {
        return;
    }
    tokio::time::sleep_until(deadline.into()).await;
}
