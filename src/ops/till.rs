//! `cards serve`'s till endpoint: the merchant's POS or order system posts
//! trades as they happen, and each becomes the card's consume.sync, once,
//! ever (the same journal as `cards consume`, flushed before the call).
//!
//! `POST /transactions` with `Authorization: Bearer <token>` (the token an
//! `issue` block's `transactions.token` names; compared in constant time)
//! and a JSON body: `{"template": "merchant.brew/template.club",
//! "transactions": [{...}, ...]}` (or `"transaction": {...}` for one). Each
//! transaction has the `cards consume` columns as keys. The answer lists,
//! in order, what became of each: synced, already_synced, invalid (with the
//! field), failed (with the gateway's code) or not_attempted.
//!
//! Bounded: a body of at most 1 MiB, at most 1,000 transactions a request,
//! 16 of a request's calls in flight; the service's connection limit and
//! the governor's rate limits apply.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::apply::cards::{Ctx, Outcome};
use crate::cards::Target;
use crate::cards::trade::{Cells, TRADE_COLUMNS, Trade};
use crate::util::secret::Secret;

/// The largest body the endpoint reads.
pub const MAX_BODY: usize = 1024 * 1024;
/// The most transactions one request may carry.
pub const MAX_BATCH: usize = 1_000;
/// A request's calls in flight at once.
const IN_FLIGHT: usize = 16;

/// A template family that takes transactions: its token and where its
/// trades are synced.
pub struct Family {
    pub token: Secret,
    pub target: Target,
    pub ctx: Arc<Ctx>,
}

pub struct Till {
    /// By family address (`merchant.brew/template.club`).
    pub families: HashMap<String, Family>,
    /// A line for the service's log (no amounts, nothing of the member).
    pub log: Box<dyn Fn(&str) + Send + Sync>,
    pub metrics: Arc<super::metrics::Metrics>,
}

pub fn router(till: Arc<Till>) -> axum::Router {
    axum::Router::new()
        .route("/transactions", axum::routing::post(transactions))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(till)
}

fn answer(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refuse(status: StatusCode, error: &str) -> Response {
    answer(status, json!({ "error": error }))
}

/// Whether the request carries the family's token (constant time: both
/// sides hashed first, so neither length nor content leaks by timing).
fn authorised(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let a = Sha256::digest(given.trim().as_bytes());
    let b = Sha256::digest(token.expose().as_bytes());
    a.ct_eq(&b).into()
}

/// One transaction's cells as strings (numbers as written), or the field
/// that is neither a known column nor a string or number.
fn cells(t: &Value) -> Result<BTreeMap<&str, String>, (String, String)> {
    let Some(obj) = t.as_object() else {
        return Err((String::new(), "a transaction is a JSON object".into()));
    };
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let Some(col) = TRADE_COLUMNS.iter().find(|c| **c == k.as_str()) else {
            return Err((
                k.chars().take(64).collect(),
                "is not a transaction field".into(),
            ));
        };
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Null => continue,
            _ => return Err((k.clone(), "must be a string or a number".into())),
        };
        out.insert(*col, text);
    }
    Ok(out)
}

fn parse(t: &Value, index: usize, target: &Target) -> Result<Trade, (String, String)> {
    let cells = cells(t)?;
    let trade = Cells::of(cells.iter().map(|(k, v)| (*k, v.as_str())).collect())
        .trade(index as u64 + 1)
        .map_err(|errs| {
            let field = errs
                .iter()
                .find_map(|e| e.column.clone())
                .unwrap_or_default();
            let message = errs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            (field, message)
        })?;
    if trade.level.is_some() {
        target
            .template_for(trade.level.as_deref())
            .map_err(|e| ("level".to_string(), e.to_string()))?;
    }
    Ok(trade)
}

fn result(index: usize, trade_no: Option<&str>, outcome: &Outcome) -> Value {
    let mut r = json!({ "index": index, "outcome": outcome.as_str() });
    if let Some(n) = trade_no {
        r["trade_no"] = json!(n);
    }
    match outcome {
        Outcome::Synced { biz_card_no } | Outcome::AlreadySynced { biz_card_no } => {
            r["biz_card_no"] = json!(biz_card_no);
        }
        Outcome::Failed {
            code,
            sub_code,
            message,
        } => {
            if !code.is_empty() {
                r["code"] = json!(code);
                r["sub_code"] = json!(sub_code);
            }
            r["message"] = json!(message);
        }
        Outcome::NotAttempted { message } => r["message"] = json!(message),
        _ => {}
    }
    r
}

async fn transactions(State(till): State<Arc<Till>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let Some(template) = doc.get("template").and_then(Value::as_str) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "`template` (the card's template address) is required",
        );
    };
    let Some(family) = till.families.get(template).or_else(|| {
        // A tier's address names its family.
        till.families
            .values()
            .find(|f| f.target.tiers.values().any(|t| t.to_string() == template))
    }) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "no template here takes transactions (an `issue` block's `transactions.token`)",
        );
    };
    if !authorised(&headers, &family.token) {
        (till.log)(&format!(
            "transactions {template}: refused (no or wrong token)"
        ));
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            json!({"error": "a bearer token is required"}).to_string(),
        )
            .into_response();
    }
    let list: Vec<&Value> = match (doc.get("transactions"), doc.get("transaction")) {
        (Some(Value::Array(a)), None) => a.iter().collect(),
        (None, Some(t)) => vec![t],
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "give `transactions` (an array) or `transaction` (one object)",
            );
        }
    };
    if list.len() > MAX_BATCH {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("at most {MAX_BATCH} transactions a request"),
        );
    }
    // Checked first, as a file is: two of one request on the same trade are
    // one trade (the second answers as the first did).
    let mut results: Vec<Option<Value>> = vec![None; list.len()];
    let mut work = Vec::new();
    for (i, t) in list.iter().enumerate() {
        match parse(t, i, &family.target) {
            Ok(trade) => work.push((i, trade)),
            Err((field, message)) => {
                results[i] = Some(json!({
                    "index": i, "outcome": "invalid", "field": field, "message": message,
                }));
            }
        }
    }
    let ctx = family.ctx.clone();
    let mut done = futures_util::stream::iter(work.into_iter().map(|(i, trade)| {
        let ctx = ctx.clone();
        async move {
            let outcome = ctx.consume(&trade).await;
            (i, trade.trade_no, outcome)
        }
    }))
    .buffer_unordered(IN_FLIGHT);
    let mut tally: BTreeMap<&'static str, usize> = BTreeMap::new();
    while let Some((i, trade_no, outcome)) = done.next().await {
        *tally.entry(outcome.as_str()).or_default() += 1;
        till.metrics.trade(outcome.as_str());
        results[i] = Some(result(i, Some(&trade_no), &outcome));
    }
    let invalid = results
        .iter()
        .flatten()
        .filter(|r| r["outcome"] == "invalid")
        .count();
    if invalid > 0 {
        tally.insert("invalid", invalid);
    }
    (till.log)(&format!(
        "transactions {template}: {} ({} ms)",
        tally
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_millis()
    ));
    answer(
        StatusCode::OK,
        json!({ "results": results.into_iter().flatten().collect::<Vec<_>>() }),
    )
}
