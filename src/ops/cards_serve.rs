//! `cardform cards serve`: the activation callback. A member scans the
//! activation URL, fills the form, and Alipay sends the member's browser to
//! the callback with `template_id`, `request_id` and a single-use
//! `auth_code`. For each: exchange the code for the member's token, read
//! the form, choose the tier (the `issue` block: a default level, or the
//! member's existing card from the members file by phone), open the card,
//! and send the member on.
//!
//! Idempotent per `request_id`: callbacks for one request wait for each
//! other; the ledger journals the card before card.open (flushed) and its
//! biz_card_no after, so a repeated callback, a retry by Alipay or a
//! restart never opens a second card. The member's token lives in memory
//! only (a few minutes, to finish a request cut short); nothing personal
//! is logged or kept.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::project::{self, Common};
use crate::alipay::GatewayError;
use crate::alipay::methods::{
    ActivateFormQueryRequest, CardOpenRequest, CardQueryRequest, CardUserInfo, MerchantCard,
    MerchantMenber, OauthTokenRequest,
};
use crate::cards::{self, Target};
use crate::gateway::governor::{Governor, Observer};
use crate::gateway::{Scope, Typed};
use crate::manifest::members::{self, Holder};
use crate::model::{Address, Issuance};
use crate::settings::Overrides;
use crate::state::Durability;
use crate::state::cards::{CardLedger, Entry};
use crate::util::secret::Secret;

pub struct Request {
    pub common: Common,
    pub listen: SocketAddr,
    /// Gateway calls in flight at once (within the rate limits).
    pub parallelism: usize,
    /// Gateway calls a minute spent on activations that fail (made-up or
    /// spent codes): for all clients, and for one client address.
    pub failure_budget: u32,
    pub client_failure_budget: u32,
}

/// Told what happens, one line per callback (no personal data).
pub trait Log: Observer {
    fn line(&self, text: &str);
}

/// One template members activate on.
struct Door {
    tier: Address,
    issuance: Issuance,
    target: Target,
    template_ids: BTreeMap<Address, String>,
    scope: Scope,
    members: Arc<HashMap<String, Holder>>,
}

struct Ctx {
    gateway: Arc<Governor>,
    ledger: Arc<dyn CardLedger>,
    app_id: String,
    doors: std::sync::RwLock<HashMap<String, Arc<Door>>>,
    /// How to read the project again (an apply that replaced a template is
    /// picked up when its new template_id first calls back).
    reload: Reload,
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The keys of the open-card SPI: Alipay's, which signs the calls, and
    /// the app's, which signs the answers.
    spi: SpiKeys,
    /// Calls spent on failed activations, bounded.
    budget: FailureBudget,
    metrics: Arc<super::metrics::Metrics>,
    /// This process, as its claims name it (host, pid and a random part:
    /// replicas of `cards serve` share a ledger on PostgreSQL).
    replica: String,
    /// request_id -> the member's token and who it is, for a request cut
    /// short (memory only, minutes).
    tokens: Mutex<HashMap<String, (Secret, CardUserInfo, Instant)>>,
    log: Arc<dyn Log>,
}

/// What reading the project again needs, and when it was last read.
struct Reload {
    common: Common,
    flags: Overrides,
    last: Mutex<Instant>,
}

/// The project is read again at most this often (only for a template_id
/// the service does not know).
const RELOAD_EVERY: Duration = Duration::from_secs(5);

impl Ctx {
    /// The door of `template_id`; one the service does not know sends it
    /// to read the project and state again (at most every few seconds),
    /// so that a template an apply created or replaced since the start is
    /// served without a restart.
    async fn door(&self, template_id: &str) -> Option<Arc<Door>> {
        if let Some(d) = self.doors.read().expect("not poisoned").get(template_id) {
            return Some(d.clone());
        }
        {
            let mut last = self.reload.last.lock().expect("not poisoned");
            if last.elapsed() < RELOAD_EVERY {
                return None;
            }
            *last = Instant::now();
        }
        let (common, flags) = (self.reload.common.clone(), self.reload.flags.clone());
        let read =
            tokio::task::spawn_blocking(move || project::read(&common, &flags, "cards serve"))
                .await;
        match read {
            Ok(Ok(read)) => match doors(&read, self.log.as_ref()) {
                Ok(fresh) => {
                    let n = fresh.len();
                    let mut doors = self.doors.write().expect("not poisoned");
                    // Old template ids stay served: posters printed with
                    // them still work.
                    doors.extend(fresh);
                    self.log.line(&format!(
                        "read the project again for template {template_id}: {n} template(s) issue cards"
                    ));
                    doors.get(template_id).cloned()
                }
                Err(e) => {
                    self.log
                        .line(&format!("reading the project again failed: {e}"));
                    None
                }
            },
            Ok(Err(e)) => {
                self.log
                    .line(&format!("reading the project again failed: {e}"));
                None
            }
            Err(_) => None,
        }
    }
}

/// Gateway calls spent on activations that failed, per minute, in total
/// and per client address: past either, a callback is refused before any
/// call (a flood of made-up codes costs a bounded number of calls; a
/// member's own failures share their address's budget).
struct FailureBudget {
    global: u32,
    per_client: u32,
    state: Mutex<BudgetState>,
}

struct BudgetState {
    since: Instant,
    global: u32,
    clients: HashMap<std::net::IpAddr, u32>,
    /// Callbacks refused for the budget this minute (for the log).
    refused: u32,
}

impl FailureBudget {
    fn new(global: u32, per_client: u32) -> Self {
        FailureBudget {
            global,
            per_client,
            state: Mutex::new(BudgetState {
                since: Instant::now(),
                global: 0,
                clients: HashMap::new(),
                refused: 0,
            }),
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        let mut s = self.state.lock().expect("not poisoned");
        if s.since.elapsed() >= Duration::from_secs(60) {
            *s = BudgetState {
                since: Instant::now(),
                global: 0,
                clients: HashMap::new(),
                refused: 0,
            };
        }
        s
    }

    /// Whether a callback from `client` may spend calls now.
    fn allows(&self, client: Option<std::net::IpAddr>) -> bool {
        let mut s = self.window();
        let mine = client.and_then(|c| s.clients.get(&c).copied()).unwrap_or(0);
        let ok = s.global < self.global && mine < self.per_client;
        if !ok {
            s.refused += 1;
        }
        ok
    }

    /// A callback from `client` failed after spending calls.
    fn spend(&self, client: Option<std::net::IpAddr>) {
        let mut s = self.window();
        s.global += 1;
        if let Some(c) = client {
            // Bounded: a flood from many addresses resets the table.
            if s.clients.len() >= 100_000 {
                s.clients.clear();
            }
            *s.clients.entry(c).or_default() += 1;
        }
    }
}

struct SpiKeys {
    alipay: Arc<crate::alipay::AlipayPublicKey>,
    app: Arc<crate::alipay::AppPrivateKey>,
    sign_type: crate::alipay::SignType,
    /// The app's AES content-encryption key, when it has one: an encrypted
    /// call is read with it and answered encrypted.
    aes: Option<Arc<crate::alipay::aes::AesKey>>,
}

const TOKEN_KEEP: Duration = Duration::from_secs(600);
const TOKENS_MAX: usize = 10_000;

/// A running service.
pub struct Running {
    pub addr: SocketAddr,
    /// The embedded sandbox's URL, when the endpoint is `sandbox`.
    pub sandbox_url: Option<String>,
    pub serving: tokio::task::JoinHandle<()>,
    pub shutdown: tokio::sync::oneshot::Sender<()>,
    conn: super::gateway::Connection,
    ledger: Arc<dyn CardLedger>,
}

impl Running {
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(());
        let _ = self.serving.await;
        self.ledger.flush()?;
        self.conn.close().await;
        Ok(())
    }
}

pub async fn start(req: Request, flags: &Overrides, log: Arc<dyn Log>) -> Result<Running> {
    let read = project::read(&req.common, flags, "cards serve")?;
    if read.desired.issuance.is_empty() {
        bail!(
            "no activation URL in the project says what to issue\nhint: add an `issue:` block beside an activation URL's `callback` (see the README's member journey)"
        );
    }
    let doors = doors(&read, log.as_ref())?;
    if doors.is_empty() {
        bail!(
            "no template with an `issue` block is applied yet\nhint: run `cardform apply` first: cards serve opens cards on applied templates"
        );
    }
    let reader = super::gateway::governed(
        &read.settings,
        &read.desired,
        &crate::apply::Options {
            parallelism: req.parallelism.max(1),
            ..Default::default()
        },
        log.clone(),
    )
    .await?;
    let ledger =
        super::cards::open_ledger(&read.settings.state, "cards serve", req.common.lock_timeout)?;
    let metrics = Arc::new(super::metrics::Metrics::default());
    let till = transactions(&doors, &reader.provider.gateway, &ledger, &log, &metrics)?;
    let ctx = Arc::new(Ctx {
        gateway: reader.provider.gateway.clone(),
        ledger: ledger.clone(),
        app_id: read.binding.app_id.clone(),
        doors: std::sync::RwLock::new(doors),
        reload: Reload {
            common: req.common.clone(),
            flags: flags.clone(),
            last: Mutex::new(Instant::now()),
        },
        busy: Mutex::new(HashMap::new()),
        metrics: metrics.clone(),
        budget: FailureBudget::new(req.failure_budget.max(1), req.client_failure_budget.max(1)),
        spi: {
            let c = reader.conn.client.config();
            SpiKeys {
                alipay: c.alipay_public_key.clone(),
                app: c.private_key.clone(),
                sign_type: c.sign_type,
                aes: c.encrypt_key.clone(),
            }
        },
        replica: crate::apply::cards::holder_name("cards serve"),
        tokens: Mutex::new(HashMap::new()),
        log,
    });
    // Where the gateway is, for readiness (a connection, no call spent).
    let gateway_at = match &read.settings.gateway.endpoint {
        crate::settings::Endpoint::Url(u) => u
            .socket_addrs(|| Some(443))
            .ok()
            .and_then(|a| a.into_iter().next()),
        crate::settings::Endpoint::Embedded => reader.conn.sandbox.as_ref().map(|s| s.addr),
    };
    let health = Arc::new(Health {
        ledger: ledger.clone(),
        gateway_at,
    });
    let mut app = axum::Router::new()
        .route("/spi", axum::routing::post(spi))
        .fallback(axum::routing::get(callback))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(ctx)
        .merge(
            axum::Router::new()
                .route("/healthz", axum::routing::get(|| async { "ok\n" }))
                .route("/readyz", axum::routing::get(ready))
                .route(
                    "/metrics",
                    axum::routing::get({
                        let m = metrics.clone();
                        move || async move {
                            (
                                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                                m.render(),
                            )
                        }
                    }),
                )
                .with_state(health),
        );
    if let Some(till) = till {
        app = app.merge(super::till::router(Arc::new(till)));
    }
    let listener = tokio::net::TcpListener::bind(req.listen)
        .await
        .with_context(|| format!("cannot listen on {}", req.listen))?;
    let addr = listener.local_addr()?;
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    // The callback faces the internet: the sandbox's hardened loop (bounded
    // connections, slow clients closed).
    // Each callback runs on a task of its own from the moment it arrives: a
    // member who closes the page at once still gets the card.
    let serving = tokio::spawn(crate::util::serve::serve_detached(listener, app, stop));
    let sandbox_url = reader
        .conn
        .sandbox
        .as_ref()
        .map(|s| s.gateway_url().trim_end_matches("/gateway.do").to_string());
    Ok(Running {
        addr,
        sandbox_url,
        serving,
        shutdown,
        conn: reader.conn,
        ledger,
    })
}

/// The templates members activate on, by template id, as the state
/// records them now (a tier not applied yet is logged and left out).
fn doors(read: &project::Read, log: &dyn Log) -> Result<HashMap<String, Arc<Door>>> {
    let tokens = super::tokens::tokens(&read.desired);
    let mut doors = HashMap::new();
    let mut members_of: HashMap<Address, Arc<HashMap<String, Holder>>> = HashMap::new();
    for (tier, issuance) in &read.desired.issuance {
        let Some(template_id) = read
            .snapshot
            .resources
            .get(tier)
            .and_then(|r| r.ids.template_id.clone())
        else {
            log.line(&format!(
                "`{tier}` has no template at the gateway yet (run `cardform apply`): its activations are refused"
            ));
            continue;
        };
        let target =
            Target::resolve(&read.desired, &issuance.family).map_err(anyhow::Error::msg)?;
        let mut template_ids = BTreeMap::new();
        for a in target.tiers.values().chain(std::iter::once(tier)) {
            if let Some(id) = read
                .snapshot
                .resources
                .get(a)
                .and_then(|r| r.ids.template_id.clone())
            {
                template_ids.insert(a.clone(), id);
            }
        }
        let members = match (&issuance.members_path, members_of.get(&issuance.family)) {
            (_, Some(m)) => m.clone(),
            (Some(path), None) => {
                let levels: Vec<String> = target.levels();
                let levels: Vec<&str> = levels.iter().map(String::as_str).collect();
                let m = Arc::new(members::load(path, &levels).map_err(anyhow::Error::msg)?);
                members_of.insert(issuance.family.clone(), m.clone());
                m
            }
            (None, None) => Arc::new(HashMap::new()),
        };
        let merchant = tier.merchant.to_string();
        let token = match tokens.get(&merchant) {
            Some(Ok(t)) => t.clone(),
            Some(Err(e)) => bail!("{e}"),
            None => None,
        };
        doors.insert(
            template_id,
            Arc::new(Door {
                tier: tier.clone(),
                issuance: issuance.clone(),
                target,
                template_ids,
                scope: Scope::merchant(&merchant, token.as_ref()),
                members,
            }),
        );
    }
    Ok(doors)
}

/// The till endpoint's families: each template family whose `issue` block
/// names a `transactions.token`, with its token read now (a token that
/// cannot be read stops the start).
fn transactions(
    doors: &HashMap<String, Arc<Door>>,
    gateway: &Arc<Governor>,
    ledger: &Arc<dyn CardLedger>,
    log: &Arc<dyn Log>,
    metrics: &Arc<super::metrics::Metrics>,
) -> Result<Option<super::till::Till>> {
    let mut families = HashMap::new();
    for door in doors.values() {
        let Some(token) = &door.issuance.transactions_token else {
            continue;
        };
        let family = door.issuance.family.to_string();
        if families.contains_key(&family) {
            continue;
        }
        let token =
            crate::settings::read_secret(token, &format!("the transactions token of `{family}`"))
                .map_err(anyhow::Error::msg)?;
        log.line(&format!(
            "transactions for `{family}`: POST /transactions (bearer token)"
        ));
        families.insert(
            family,
            super::till::Family {
                token: Secret::new(token),
                target: door.target.clone(),
                ctx: Arc::new(crate::apply::cards::Ctx::for_transactions(
                    gateway.clone(),
                    ledger.clone(),
                    door.scope.clone(),
                    door.target.clone(),
                )),
            },
        );
    }
    if families.is_empty() {
        return Ok(None);
    }
    let log = log.clone();
    Ok(Some(super::till::Till {
        families,
        metrics: metrics.clone(),
        log: Box::new(move |l: &str| log.line(l)),
    }))
}

/// The open-card SPI (3.1): Alipay posts the member's opening and takes the
/// card from the answer. The call is verified with Alipay's key before
/// anything is read (a bad or missing signature: refused, nothing kept);
/// the card is recorded in the ledger once per Alipay `out_serial_no`
/// (a retry answers the same card); the answer is signed with the app's
/// key. No gateway call is made.
async fn spi(State(ctx): State<Arc<Ctx>>, body: axum::body::Bytes) -> Response {
    let started = Instant::now();
    let mut params = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        if params.insert(k.into_owned(), v.into_owned()).is_some() {
            ctx.log.line("spi refused: a parameter appears twice");
            return spi_answer(
                &ctx,
                None,
                spi_error(
                    "40002",
                    "isv.invalid-parameter",
                    "a parameter appears twice",
                ),
            );
        }
    }
    if !crate::alipay::spi::verified(&params, |t, d, s| ctx.spi.alipay.verify(t, d, s)) {
        ctx.metrics
            .refused_signature
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.log
            .line("spi refused: the signature is not Alipay's (nothing recorded)");
        return spi_answer(
            &ctx,
            None,
            spi_error(
                "40002",
                "isv.invalid-signature",
                "the signature does not verify",
            ),
        );
    }
    let aes = match crate::alipay::spi::decrypt(&mut params, ctx.spi.aes.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            ctx.log.line(&format!("spi refused: {e}"));
            return spi_answer(&ctx, None, spi_error("40002", "isv.invalid-encrypt", &e));
        }
    };
    let call = match crate::alipay::spi::parse(&params) {
        Ok(c) => c,
        Err(e) => {
            ctx.log.line(&format!("spi refused: {e}"));
            return spi_answer(&ctx, aes, spi_error("40002", "isv.invalid-parameter", &e));
        }
    };
    let serial = &call.out_serial_no;
    ctx.log
        .line(&format!("spi out_serial_no={serial}: received"));
    ctx.metrics
        .received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let door = match ctx.door(&call.template_id).await {
        Some(d) if d.issuance.flow == crate::model::Flow::Spi => d,
        Some(_) => {
            ctx.log.line(&format!(
                "spi out_serial_no={serial}: refused: template {} opens cards through the callback (its issue block's flow)",
                call.template_id
            ));
            return spi_answer(
                &ctx,
                aes,
                spi_error(
                    "40004",
                    "TEMPLATE_NOT_SPI",
                    "this template does not open cards through this SPI",
                ),
            );
        }
        None => {
            ctx.log.line(&format!(
                "spi out_serial_no={serial}: refused: template {} is not one this service issues",
                call.template_id
            ));
            return spi_answer(
                &ctx,
                aes,
                spi_error(
                    "40004",
                    "TEMPLATE_NOT_EXIT",
                    "this template is not served here",
                ),
            );
        }
    };
    let answer = spi_issue(&ctx, &door, &call).await;
    let ms = started.elapsed().as_millis();
    match answer {
        Ok((node, how)) => {
            ctx.metrics.outcome(
                if how == "opened" {
                    "spi"
                } else {
                    "spi repeated"
                },
                started.elapsed(),
            );
            ctx.log.line(&format!(
                "spi out_serial_no={serial}: {how} card {} on {} ({ms} ms)",
                call.biz_card_no, door.tier
            ));
            spi_answer(&ctx, aes, node)
        }
        Err(why) => {
            ctx.log.line(&format!(
                "spi out_serial_no={serial}: failed: {why} ({ms} ms)"
            ));
            spi_answer(
                &ctx,
                aes,
                spi_error("20000", "isp.unknow-error", "please retry"),
            )
        }
    }
}

fn spi_error(code: &str, sub_code: &str, sub_msg: &str) -> serde_json::Value {
    serde_json::json!({
        "code": code,
        "msg": if code == "40004" { "Business Failed" } else if code == "20000" { "Service Currently Unavailable" } else { "Invalid Arguments" },
        "sub_code": sub_code,
        "sub_msg": sub_msg,
    })
}

/// The answer, signed with the app's key.
fn spi_answer(
    ctx: &Ctx,
    aes: Option<&crate::alipay::aes::AesKey>,
    node: serde_json::Value,
) -> Response {
    let text = crate::alipay::spi::answer(&node, aes, |d| ctx.spi.app.sign(ctx.spi.sign_type, d));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        text,
    )
        .into_response()
}

/// The card for an SPI opening: recorded once per Alipay out_serial_no
/// (claimed among replicas), on the template Alipay named; a member in the
/// members file gets their own card number, points and balance.
async fn spi_issue(
    ctx: &Ctx,
    door: &Door,
    call: &crate::alipay::spi::OpenCard,
) -> Result<(serde_json::Value, &'static str), String> {
    let osn = cards::spi_serial_no(&door.issuance.family, &call.out_serial_no);
    let get = |ctx: &Ctx| {
        ctx.ledger
            .get(&osn)
            .map(|e| e.filter(|e| e.biz_card_no.is_some()))
    };
    let (entry, how) = match claim(ctx, &osn, get).await {
        Ok(Some(e)) => (e, "repeated call: answered"),
        Ok(None) => {
            let template_id = door
                .template_ids
                .get(&door.tier)
                .cloned()
                .unwrap_or_default();
            let now = crate::state::now_rfc3339();
            let e = Entry {
                out_serial_no: osn.clone(),
                template: door.tier.clone(),
                template_id,
                row_digest: None,
                request_id: Some(format!("spi-{}", call.out_serial_no)),
                journalled_at: now.clone(),
                biz_card_no: Some(call.biz_card_no.clone()),
                opened_at: Some(now),
                synced_digest: None,
                synced_at: None,
                deleted_at: None,
            };
            // Flushed before the answer: a retry (to this replica or
            // another) answers the same card.
            let put = put_flushed(ctx, &e).await;
            release(ctx, &osn).await;
            put.map_err(|e| format!("the card ledger: {e}"))?;
            (e, "opened")
        }
        Err(Waited::Ledger(e)) => return Err(format!("the card ledger: {e}")),
        Err(Waited::Out(holder)) => return Err(format!("replica {holder} held it too long")),
    };
    if entry.biz_card_no.as_deref() != Some(call.biz_card_no.as_str()) {
        return Err("Alipay repeated this out_serial_no with another card number".into());
    }
    let phone = call
        .user_info
        .get("OPEN_FORM_FIELD_MOBILE")
        .map(|p| p.trim().to_string());
    let holder = phone.as_ref().and_then(|p| door.members.get(p));
    // The card is on the template Alipay named: its tier's level.
    let level = door
        .target
        .tiers
        .iter()
        .find(|(_, a)| **a == door.tier)
        .map(|(l, _)| l.clone());
    let card = MerchantCard {
        biz_card_no: entry.biz_card_no.clone(),
        external_card_no: Some(
            holder
                .map(|h| h.external_card_no.clone())
                .unwrap_or_else(|| osn.to_ascii_uppercase()),
        ),
        open_date: Some(alipay_time(&entry.journalled_at)),
        valid_date: Some(door.issuance.valid_date.clone()),
        level,
        point: holder.and_then(|h| h.point.clone()),
        balance: holder.and_then(|h| h.balance.clone()),
        ..Default::default()
    };
    Ok((
        serde_json::json!({"code": "10000", "msg": "Success", "card_info": card}),
        how,
    ))
}

/// What readiness checks: the card ledger answers, the gateway accepts a
/// connection.
struct Health {
    ledger: Arc<dyn CardLedger>,
    gateway_at: Option<SocketAddr>,
}

/// `/readyz`: 200 when the ledger answers and the gateway's address takes
/// a connection (within 2 s each), else 503 naming what is not.
async fn ready(State(h): State<Arc<Health>>) -> Response {
    let limit = Duration::from_secs(2);
    let ledger = {
        let l = h.ledger.clone();
        tokio::time::timeout(
            limit,
            tokio::task::spawn_blocking(move || l.get("readyz").is_ok()),
        )
        .await
        .is_ok_and(|r| r.unwrap_or(false))
    };
    let gateway = match h.gateway_at {
        Some(a) => tokio::time::timeout(limit, tokio::net::TcpStream::connect(a))
            .await
            .is_ok_and(|c| c.is_ok()),
        None => false,
    };
    let body = format!(
        "ledger: {}\ngateway: {}\n",
        if ledger { "ok" } else { "unreachable" },
        if gateway { "ok" } else { "unreachable" }
    );
    let status = if ledger && gateway {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// What the member sees.
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let html = format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\"><title>{title}</title><h1>{title}</h1><p>{text}</p>"
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

fn sorry(status: StatusCode, text: &str) -> Response {
    page(status, "We could not open your card", text)
}

fn done(door: &Door, biz: &str) -> Response {
    match &door.issuance.done_url {
        Some(u) => {
            let mut url = match url::Url::parse(u) {
                Ok(url) => url,
                Err(_) => {
                    return page(
                        StatusCode::OK,
                        "Your card is ready",
                        "Find it in Alipay's card wallet.",
                    );
                }
            };
            url.query_pairs_mut().append_pair("biz_card_no", biz);
            (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
        }
        None => page(
            StatusCode::OK,
            "Your card is ready",
            "Find it in Alipay's card wallet.",
        ),
    }
}

fn plain_id(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

async fn callback(
    State(ctx): State<Arc<Ctx>>,
    peer: Option<axum::Extension<crate::util::serve::Peer>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let client = peer.map(|axum::Extension(p)| p.0.ip());
    let started = Instant::now();
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let (request_id, template_id, code) = (get("request_id"), get("template_id"), get("auth_code"));
    if !plain_id(request_id, 64) || !plain_id(template_id, 128) || !plain_id(code, 128) {
        ctx.log
            .line("callback refused: request_id, template_id or auth_code missing or malformed");
        return sorry(
            StatusCode::BAD_REQUEST,
            "This link is incomplete. Please scan the code again.",
        );
    }
    if !ctx.app_id.is_empty() && q.get("app_id").is_some_and(|a| a != &ctx.app_id) {
        ctx.log.line(&format!(
            "callback request_id={request_id}: refused: for another app"
        ));
        return sorry(
            StatusCode::BAD_REQUEST,
            "This link is not for this merchant.",
        );
    }
    ctx.log
        .line(&format!("callback request_id={request_id}: received"));
    ctx.metrics
        .received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(door) = ctx.door(template_id).await else {
        ctx.log.line(&format!(
            "callback request_id={request_id}: refused: template {template_id} is not one this service issues (no `issue` block, or not applied)"
        ));
        return sorry(
            StatusCode::NOT_FOUND,
            "This card is not offered here. Please ask the staff.",
        );
    };
    if !ctx.budget.allows(client) {
        ctx.metrics
            .refused_budget
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.log.line(&format!(
            "callback request_id={request_id}: refused: too many failed activations from this address or in all this minute (no call made)"
        ));
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            "Please try again later",
            "Too many attempts. Please try again in a minute.",
        );
    }
    // One at a time per request: a double tap or Alipay's retry waits for
    // the first and then finds its card.
    let lock = ctx
        .busy
        .lock()
        .expect("not poisoned")
        .entry(request_id.to_string())
        .or_default()
        .clone();
    // The work runs on its own task: a member who closes the page (the
    // connection drops) never cuts an issue short halfway.
    let answer = {
        let (ctx, door) = (ctx.clone(), door.clone());
        let (request_id, code) = (request_id.to_string(), Secret::new(code));
        tokio::spawn(async move {
            ctx.metrics
                .in_flight
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let guard = lock.lock().await;
            let answer = issue(&ctx, &door, &request_id, &code).await;
            drop(guard);
            ctx.metrics
                .in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            ctx.busy.lock().expect("not poisoned").remove(&request_id);
            answer
        })
        .await
    };
    let answer = match answer {
        Ok(a) => a,
        Err(_) => Err(Refusal {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            member: "Something went wrong on our side. Please try again in a moment.",
            log: "failed: the issue panicked (a bug)".into(),
        }),
    };
    let ms = started.elapsed().as_millis();
    match answer {
        Ok((biz, how, tier)) => {
            ctx.metrics
                .outcome(how.split(':').next().unwrap_or(how), started.elapsed());
            ctx.log.line(&format!(
                "callback request_id={request_id}: {how} card {biz} on {tier} ({ms} ms)"
            ));
            done(&door, &biz)
        }
        Err(Refusal {
            status,
            member,
            log,
        }) => {
            if status == StatusCode::BAD_GATEWAY {
                // The gateway said no: calls spent on a failed activation.
                ctx.budget.spend(client);
            }
            ctx.log.line(&format!(
                "callback request_id={request_id}: {log} ({ms} ms)"
            ));
            sorry(status, member)
        }
    }
}

/// Why a callback opened no card: for the member, and for the log.
struct Refusal {
    status: StatusCode,
    member: &'static str,
    log: String,
}

fn gateway_refusal(ctx: &Ctx, what: &str, e: &GatewayError, door: &Door) -> Refusal {
    match e.api() {
        Some(a) => ctx
            .metrics
            .failure(&a.code, a.sub_code.as_deref().unwrap_or_default()),
        None => ctx.metrics.failure("transport", e.retry_hint()),
    }
    let said = match e.api() {
        Some(a) => format!("{} {}", a.code, a.sub_code.as_deref().unwrap_or(&a.msg)),
        None => e.retry_hint().to_string(),
    };
    let block = e
        .api()
        .and_then(|a| a.merchant_block())
        .map(|b| format!("; {}", b.hint(&door.scope.merchant)))
        .unwrap_or_default();
    let expired = e
        .api()
        .and_then(|a| a.sub_code.as_deref())
        .is_some_and(|s| s.contains("code"));
    Refusal {
        status: StatusCode::BAD_GATEWAY,
        member: if expired {
            "This link has expired. Please scan the code again."
        } else {
            "Something went wrong on our side. Please try again in a moment."
        },
        log: format!("failed: {what}: {said}{block}"),
    }
}

/// `yyyy-MM-dd HH:mm:ss` (China time, as Alipay writes times) for a
/// journal time, so a retried open sends what the first one sent.
fn alipay_time(rfc3339: &str) -> String {
    crate::alipay::clock::from_rfc3339(rfc3339)
}

/// One activation, claimed first among the replicas sharing the ledger: a
/// callback another replica is at work on (Alipay retrying, a member's
/// double tap landing on two replicas) waits for that card instead of
/// spending the single-use code a second time; a claim left by a replica
/// that died is taken over once stale.
async fn issue(
    ctx: &Ctx,
    door: &Door,
    request_id: &str,
    code: &Secret,
) -> Result<(String, &'static str, Address), Refusal> {
    let ledger_failed = |e: crate::state::StateError| Refusal {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        member: "Something went wrong on our side. Please try again in a moment.",
        log: format!("failed: the card ledger: {e}"),
    };
    if let Some(done) = claim(ctx, request_id, |ctx| settled(ctx, request_id))
        .await
        .map_err(|e| match e {
            Waited::Ledger(e) => ledger_failed(e),
            Waited::Out(holder) => Refusal {
                status: StatusCode::SERVICE_UNAVAILABLE,
                member: "Your card is being prepared. Please try again in a moment.",
                log: format!("waited for replica {holder}'s work on it; gave up"),
            },
        })?
    {
        return Ok(done);
    }
    let answer = issue_claimed(ctx, door, request_id, code).await;
    release(ctx, request_id).await;
    answer
}

use crate::apply::cards::Waited;

/// Claim `key` among the replicas sharing the ledger (see
/// [`crate::apply::cards::claimed`]), counting claims taken over.
async fn claim<R>(
    ctx: &Ctx,
    key: &str,
    settled: impl Fn(&Ctx) -> Result<Option<R>, crate::state::StateError>,
) -> Result<Option<R>, Waited> {
    match crate::apply::cards::claimed(&ctx.ledger, &ctx.replica, key, || settled(ctx)).await? {
        crate::apply::cards::Claimed::Done(done) => Ok(Some(done)),
        crate::apply::cards::Claimed::Ours { taken_over } => {
            if taken_over {
                ctx.metrics
                    .claims_taken_over
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(None)
        }
    }
}

/// A flushed ledger write, off the async workers (a sled flush blocks for
/// milliseconds; the service has two workers on two cores).
async fn put_flushed(ctx: &Ctx, e: &Entry) -> Result<(), crate::state::StateError> {
    let (l, e) = (ctx.ledger.clone(), e.clone());
    tokio::task::spawn_blocking(move || l.put(&e, Durability::Flushed))
        .await
        .map_err(|_| crate::state::StateError::Io("the ledger write panicked".into()))?
}

async fn release(ctx: &Ctx, key: &str) {
    crate::apply::cards::release(&ctx.ledger, &ctx.replica, key).await;
}

/// The card an earlier callback of this activation opened, if any.
fn settled(
    ctx: &Ctx,
    request_id: &str,
) -> Result<Option<(String, &'static str, Address)>, crate::state::StateError> {
    let Some(osn) = ctx.ledger.by_request(request_id)? else {
        return Ok(None);
    };
    Ok(ctx.ledger.get(&osn)?.and_then(|e| {
        e.biz_card_no
            .map(|biz| (biz, "repeated callback: already opened", e.template))
    }))
}

async fn issue_claimed(
    ctx: &Ctx,
    door: &Door,
    request_id: &str,
    code: &Secret,
) -> Result<(String, &'static str, Address), Refusal> {
    let ledger_failed = |e: crate::state::StateError| Refusal {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        member: "Something went wrong on our side. Please try again in a moment.",
        log: format!("failed: the card ledger: {e}"),
    };
    let known = match ctx.ledger.by_request(request_id).map_err(ledger_failed)? {
        Some(osn) => ctx.ledger.get(&osn).map_err(ledger_failed)?,
        None => None,
    };
    if let Some(e) = &known
        && let Some(biz) = &e.biz_card_no
    {
        return Ok((
            biz.clone(),
            "repeated callback: already opened",
            e.template.clone(),
        ));
    }
    // The member: a token kept from a request cut short, else the code.
    let kept = {
        let mut t = ctx.tokens.lock().expect("not poisoned");
        t.retain(|_, (_, _, at)| at.elapsed() < TOKEN_KEEP);
        t.get(request_id).cloned()
    };
    let (token, user) = match kept {
        Some((t, u, _)) => (t, u),
        None => {
            if let Some(e) = &known {
                // Cut short by a restart: the code is spent. Did the open
                // happen? Ask Alipay by the card number cardform chose.
                if let Some(biz) = recover(ctx, door, e).await? {
                    return Ok((biz, "recovered", e.template.clone()));
                }
            }
            let t = ctx
                .gateway
                .call(&door.scope, &OauthTokenRequest::code(code))
                .await
                .map_err(|e| gateway_refusal(ctx, "alipay.system.oauth.token", &e, door))?;
            let user = match (&t.user_id, &t.open_id) {
                (Some(u), _) => CardUserInfo {
                    user_uni_id: Some(u.clone()),
                    user_uni_id_type: Some("UID".into()),
                    open_id: None,
                },
                (None, Some(o)) => CardUserInfo {
                    open_id: Some(o.clone()),
                    ..Default::default()
                },
                (None, None) => unreachable!("checked when the answer was decoded"),
            };
            let token = Secret::new(t.access_token);
            let mut kept = ctx.tokens.lock().expect("not poisoned");
            if kept.len() < TOKENS_MAX {
                kept.insert(
                    request_id.to_string(),
                    (token.clone(), user.clone(), Instant::now()),
                );
            }
            (token, user)
        }
    };
    let tier_template_id = door
        .template_ids
        .get(&door.tier)
        .cloned()
        .unwrap_or_default();
    let form = ctx
        .gateway
        .call_as(
            &door.scope,
            &token,
            &ActivateFormQueryRequest {
                biz_type: "MEMBER_CARD".into(),
                template_id: tier_template_id,
                request_id: request_id.to_string(),
            },
        )
        .await
        .map_err(|e| gateway_refusal(ctx, "activateform.query", &e, door))?;
    let fields = form.fields().map_err(|e| Refusal {
        status: StatusCode::BAD_GATEWAY,
        member: "Something went wrong on our side. Please try again in a moment.",
        log: format!("failed: activateform.query: {e}"),
    })?;
    let field = |k: &str| {
        fields
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let phone = field("OPEN_FORM_FIELD_MOBILE");
    let holder = phone.as_ref().and_then(|p| door.members.get(p)).cloned();
    let (osn, ext) = match &holder {
        Some(h) => (
            cards::out_serial_no(&door.issuance.family, &h.external_card_no),
            h.external_card_no.clone(),
        ),
        None => {
            // One card per member: keyed by who they are at Alipay.
            let who = user
                .user_uni_id
                .as_deref()
                .or(user.open_id.as_deref())
                .unwrap_or(request_id);
            let osn = cards::member_serial_no(&door.issuance.family, &ctx.ledger.salt(), who);
            (osn.clone(), osn.to_ascii_uppercase())
        }
    };
    let level = holder
        .as_ref()
        .and_then(|h| h.level.clone())
        .or_else(|| door.issuance.level.clone());
    let tier = door
        .target
        .template_for(level.as_deref())
        .cloned()
        .unwrap_or_else(|_| door.tier.clone());
    let Some(template_id) = door.template_ids.get(&tier).cloned() else {
        return Err(Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            member: "This card is not offered here. Please ask the staff.",
            log: format!("failed: `{tier}` has no template at the gateway (run `cardform apply`)"),
        });
    };
    // A card this member holds already (digitised, or opened for an
    // earlier activation): the same card, never a second.
    let entry = match ctx.ledger.get(&osn).map_err(ledger_failed)? {
        Some(e) if e.biz_card_no.is_some() => {
            let mut e = e;
            // This activation now leads to the card too (a repeat of its
            // callback answers from the ledger).
            if e.request_id.as_deref() != Some(request_id) {
                e.request_id = Some(request_id.to_string());
                put_flushed(ctx, &e).await.map_err(ledger_failed)?;
            }
            let biz = e.biz_card_no.clone().unwrap_or_default();
            return Ok((biz, "member holds it already:", e.template.clone()));
        }
        Some(e) => e,
        None => {
            let e = Entry {
                out_serial_no: osn.clone(),
                template: tier.clone(),
                template_id: template_id.clone(),
                row_digest: None,
                request_id: Some(request_id.to_string()),
                journalled_at: crate::state::now_rfc3339(),
                biz_card_no: None,
                opened_at: None,
                synced_digest: None,
                synced_at: None,
                deleted_at: None,
            };
            // Flushed before the call: a crash after it still knows the
            // request, so a repeated callback finds it.
            put_flushed(ctx, &e).await.map_err(ledger_failed)?;
            e
        }
    };
    let gender = field("OPEN_FORM_FIELD_GENDER").and_then(|g| match g.as_str() {
        "MALE" | "男" | "male" => Some("MALE".to_string()),
        "FEMALE" | "女" | "female" => Some("FEMALE".to_string()),
        _ => None,
    });
    let birth = field("OPEN_FORM_FIELD_BIRTHDAY").filter(|b| cards::is_date(b));
    let member = MerchantMenber {
        name: field("OPEN_FORM_FIELD_NAME").filter(|n| n.chars().count() <= 64),
        gende: gender,
        birth,
        cell: phone.filter(|p| p.chars().count() <= 32),
    };
    let has_member = member.name.is_some()
        || member.gende.is_some()
        || member.birth.is_some()
        || member.cell.is_some();
    let req = CardOpenRequest {
        out_serial_no: osn.clone(),
        card_template_id: entry.template_id.clone(),
        card_user_info: user,
        card_ext_info: MerchantCard {
            external_card_no: Some(ext),
            open_date: Some(alipay_time(&entry.journalled_at)),
            valid_date: Some(door.issuance.valid_date.clone()),
            level: if door.target.tiers.is_empty() {
                None
            } else {
                level
            },
            point: holder.as_ref().and_then(|h| h.point.clone()),
            balance: holder.as_ref().and_then(|h| h.balance.clone()),
            ..Default::default()
        },
        member_ext_info: has_member.then_some(member),
        open_card_channel: None,
        open_card_channel_id: None,
    };
    let opened = ctx
        .gateway
        .call_as(&door.scope, &token, &req)
        .await
        .map_err(|e| gateway_refusal(ctx, "card.open", &e, door))?;
    let biz = opened.card_info.biz_card_no.unwrap_or_default();
    let mut entry = entry;
    entry.biz_card_no = Some(biz.clone());
    entry.opened_at = Some(crate::state::now_rfc3339());
    entry.request_id = Some(request_id.to_string());
    put_flushed(ctx, &entry).await.map_err(ledger_failed)?;
    ctx.tokens.lock().expect("not poisoned").remove(request_id);
    Ok((biz, "opened", entry.template.clone()))
}

/// A request journalled by an earlier process, its card number unknown:
/// if the card cardform numbered exists at Alipay, record it.
async fn recover(ctx: &Ctx, door: &Door, e: &Entry) -> Result<Option<String>, Refusal> {
    if !e.out_serial_no.starts_with("ca") {
        // A member's own card number: unknown here without the form.
        return Ok(None);
    }
    let found = ctx
        .gateway
        .call(
            &door.scope,
            &CardQueryRequest {
                target_card_no_type: "EXTERNAL_CARD".into(),
                target_card_no: e.out_serial_no.to_ascii_uppercase(),
                card_user_info: None,
                ext_info: None,
                template_id: Some(e.template_id.clone()),
            },
        )
        .await;
    match found {
        Ok(card) => {
            let Some(biz) = card.card_info.biz_card_no else {
                return Ok(None);
            };
            let mut e = e.clone();
            e.biz_card_no = Some(biz.clone());
            e.opened_at = Some(crate::state::now_rfc3339());
            put_flushed(ctx, &e).await.map_err(|err| Refusal {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                member: "Something went wrong on our side. Please try again in a moment.",
                log: format!("failed: the card ledger: {err}"),
            })?;
            Ok(Some(biz))
        }
        Err(err) if err.api().is_some() => Ok(None),
        Err(err) => Err(gateway_refusal(ctx, "card.query", &err, door)),
    }
}
