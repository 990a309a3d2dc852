//! Business behaviour of every card method: validation (required fields, enums,
//! lengths, referenced images), generated ids, `request_id` idempotency, and the
//! records kept in the sandbox store.
//!
//! Conventions where the reference is UNCONFIRMED (also listed in the README):
//! a reused `request_id` with the same content replays the first answer, with
//! other content it is 40004 INVALID_PARAMETER; `template.modify` replaces each
//! field it is sent and keeps the others, refuses changes to `biz_no_suffix_len`
//! and `field_rule_list` and the removal of shop ids; a missing template is
//! 40004 TEMPLATE_NOT_EXIT (sic, the one sub_code Alipay documents for it).

use chrono::{FixedOffset, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::store::{self, Store};
use super::{Fail, Incoming, Shared};
use crate::alipay::methods::*;

mod benefits;
mod cards;
mod forms;
mod images;
pub(crate) mod members;
mod templates;

pub use benefits::benefit_counts;
use benefits::*;
use cards::*;
pub use cards::{spi_card_no, spi_record};
use forms::*;
use images::*;
use templates::*;

const IMAGE_UPLOAD_MAX: usize = 5 * 1024 * 1024;
pub const FORM_FIELDS: &[&str] = &[
    "OPEN_FORM_FIELD_MOBILE",
    "OPEN_FORM_FIELD_GENDER",
    "OPEN_FORM_FIELD_NAME",
    "OPEN_FORM_FIELD_BIRTHDAY",
    "OPEN_FORM_FIELD_BIRTHDAY_WITH_YEAR",
    "OPEN_FORM_FIELD_IDCARD",
    "OPEN_FORM_FIELD_CERT_TYPE",
    "OPEN_FORM_FIELD_CERT_NO",
    "OPEN_FORM_FIELD_EMAIL",
    "OPEN_FORM_FIELD_ADDRESS",
    "OPEN_FORM_FIELD_CITY",
    "OPEN_FORM_FIELD_IS_STUDENT",
    "OPEN_FORM_FIELD_MEMBER_GRADE",
];
pub const WRITE_OFF_TYPES: &[&str] = &[
    "qrcode",
    "barcode",
    "dqrcode",
    "dbarcode",
    "mdqrcode",
    "mdbarcode",
];

pub fn knows(method: &str) -> bool {
    METHODS.contains(&method)
}

pub fn mime_of(t: imagesize::ImageType) -> &'static str {
    match t {
        imagesize::ImageType::Png => "image/png",
        imagesize::ImageType::Jpeg => "image/jpeg",
        imagesize::ImageType::Gif => "image/gif",
        imagesize::ImageType::Bmp => "image/bmp",
        _ => "application/octet-stream",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRec {
    pub ns: String,
    pub image_id: String,
    pub image_type: String,
    pub image_name: String,
    pub format: String,
    pub width: usize,
    pub height: usize,
    pub size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateRec {
    pub ns: String,
    pub template_id: String,
    pub card_type: String,
    pub body: TemplateBody,
    pub card_level_conf: Option<Vec<TemplateCardLevelConf>>,
    pub service_label_list: Option<Vec<String>>,
    pub form: Option<OpenFormField>,
    pub gmt_create: String,
    pub gmt_modified: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RequestRec {
    biz: Value,
    node: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CardRec {
    ns: String,
    template_id: String,
    card: MerchantCard,
    user: CardUserInfo,
    deleted: bool,
    /// The latest trade_time consume.sync was sent (its card_info applies
    /// only when later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_trade_time: Option<String>,
}

/// The cards held, for the test endpoint `GET /_sandbox/cards`: `open`,
/// `deleted`, open cards per template id, trades recorded (`trades`), and
/// messages sent to holders per kind (`messages`).
pub fn card_counts(st: &Store) -> Result<Value, Fail> {
    let (mut open, mut deleted, mut per) = (0u64, 0u64, std::collections::BTreeMap::new());
    for item in st.cards.iter() {
        let (_, v) = item.map_err(Fail::internal)?;
        let c: CardRec = serde_json::from_slice(&v).map_err(Fail::internal)?;
        if c.deleted {
            deleted += 1;
        } else {
            open += 1;
            *per.entry(c.template_id).or_insert(0u64) += 1;
        }
    }
    let mut messages = std::collections::BTreeMap::<String, u64>::new();
    for item in st.messages.iter() {
        let (k, _) = item.map_err(Fail::internal)?;
        let k = String::from_utf8_lossy(&k);
        if let Some(kind) = k.split('|').nth(1) {
            *messages.entry(kind.to_string()).or_default() += 1;
        }
    }
    Ok(serde_json::json!({
        "open": open,
        "deleted": deleted,
        "templates": per,
        "trades": st.trades.len(),
        "messages": messages,
    }))
}

/// A card's history as the wallet lists it (`GET /_sandbox/cards/{biz}`):
/// the card's values, its trades in trade_time order, and its messages.
pub fn card_history(st: &Store, biz_card_no: &str) -> Result<Option<Value>, Fail> {
    let Some(rec) = store::get::<CardRec>(&st.cards, biz_card_no)? else {
        return Ok(None);
    };
    let prefix = format!("{biz_card_no}|");
    let mut trades = Vec::new();
    for item in st.trades.scan_prefix(prefix.as_bytes()) {
        let (_, v) = item.map_err(Fail::internal)?;
        trades.push(serde_json::from_slice::<Value>(&v).map_err(Fail::internal)?);
    }
    trades.sort_by(|a, b| a["trade_time"].as_str().cmp(&b["trade_time"].as_str()));
    let mut messages = Vec::new();
    for item in st.messages.scan_prefix(prefix.as_bytes()) {
        let (k, v) = item.map_err(Fail::internal)?;
        let mut m = serde_json::from_slice::<Value>(&v).map_err(Fail::internal)?;
        if let Some(kind) = String::from_utf8_lossy(&k).split('|').nth(1) {
            m["kind"] = Value::from(kind);
        }
        messages.push(m);
    }
    Ok(Some(serde_json::json!({
        "card_info": rec.card,
        "template_id": rec.template_id,
        "deleted": rec.deleted,
        "trades": trades,
        "messages": messages,
    })))
}

/// Now, but strictly after `previous` (both `yyyy-MM-dd HH:mm:ss`, UTC+8):
/// a template's `gmt_modified` advances on every modify, even within a second.
fn later_than(previous: &str) -> String {
    let now = now_cst();
    if now.as_str() > previous {
        return now;
    }
    chrono::NaiveDateTime::parse_from_str(previous, "%Y-%m-%d %H:%M:%S")
        .map(|t| {
            (t + chrono::Duration::seconds(1))
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or(now)
}

fn now_cst() -> String {
    let cst = FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    Utc::now()
        .with_timezone(&cst)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// The merchant namespace a call acts in: the app itself, or the merchant whose
/// `app_auth_token` it carries (any token is accepted and names a merchant).
fn namespace(inc: &Incoming) -> String {
    let app = inc.get("app_id").unwrap_or_default();
    match inc.get("app_auth_token") {
        Some(t) => format!(
            "{app}:{}",
            crate::util::secret::Secret::new(t).fingerprint()
        ),
        None => format!("{app}:-"),
    }
}

/// A success node: `code`, `msg`, then the response fields at the same level.
fn success<T: Serialize>(resp: &T) -> String {
    let mut node = Map::new();
    node.insert("code".into(), "10000".into());
    node.insert("msg".into(), "Success".into());
    if let Value::Object(fields) = serde_json::to_value(resp).expect("responses serialize") {
        node.extend(fields);
    }
    Value::Object(node).to_string()
}

fn bad(field: &str, why: impl std::fmt::Display) -> Fail {
    Fail::business("INVALID_PARAMETER", format!("{field}: {why}"))
}

/// Keys present (non-null) in `orig` but absent from `round`, as dotted paths.
fn unknown_keys(orig: &Value, round: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, round) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(rv) => unknown_keys(v, rv, &p, out),
                    None if !v.is_null() => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                unknown_keys(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `biz_content` as JSON.
fn biz_value(inc: &Incoming) -> Result<Value, Fail> {
    let raw = inc
        .get("biz_content")
        .ok_or_else(|| Fail::invalid("isv.invalid-parameter", "biz_content is required"))?;
    serde_json::from_str(raw).map_err(|e| {
        Fail::invalid(
            "isv.invalid-parameter",
            format!("biz_content is not JSON: {e}"),
        )
    })
}

/// Read `biz_content` into the SDK model type, refusing unknown field names.
fn typed_biz<T: DeserializeOwned + Serialize>(value: Value) -> Result<(T, Value), Fail> {
    let typed: T = serde_json::from_value(value.clone())
        .map_err(|e| Fail::invalid("isv.invalid-parameter", format!("biz_content: {e}")))?;
    let round = serde_json::to_value(&typed).expect("models serialize");
    let mut unknown = Vec::new();
    unknown_keys(&value, &round, "", &mut unknown);
    if !unknown.is_empty() {
        return Err(Fail::invalid(
            "isv.invalid-parameter",
            format!("biz_content: unknown field(s) {}", unknown.join(", ")),
        ));
    }
    Ok((typed, value))
}

fn parse_biz<T: DeserializeOwned + Serialize>(inc: &Incoming) -> Result<(T, Value), Fail> {
    typed_biz(biz_value(inc)?)
}

fn need<'a>(field: &str, v: &'a Option<String>) -> Result<&'a str, Fail> {
    match v.as_deref() {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(bad(field, "is required")),
    }
}

fn max_len(field: &str, v: &str, n: usize) -> Result<(), Fail> {
    let len = v.chars().count();
    if len > n {
        return Err(bad(field, format!("is {len} characters; at most {n}")));
    }
    Ok(())
}

fn one_of(field: &str, v: &str, allowed: &[&str]) -> Result<(), Fail> {
    if !allowed.contains(&v) {
        return Err(bad(
            field,
            format!("`{v}` is not one of {}", allowed.join(", ")),
        ));
    }
    Ok(())
}

fn http_url(field: &str, v: &str, https_only: bool) -> Result<(), Fail> {
    let ok = match url::Url::parse(v) {
        Ok(u) => u.scheme() == "https" || (!https_only && u.scheme() == "http"),
        Err(_) => false,
    };
    if !ok {
        let want = if https_only { "an https" } else { "an http(s)" };
        return Err(bad(field, format!("`{v}` is not {want} URL")));
    }
    Ok(())
}

/// Idempotency: a reused key with the same content replays; otherwise refused.
fn replay(store: &Store, key: &str, biz: &Value, what: &str) -> Result<Option<String>, Fail> {
    match store::get::<RequestRec>(&store.requests, key)? {
        Some(rec) if rec.biz == *biz => Ok(Some(rec.node)),
        Some(_) => Err(bad(
            what,
            "was already used by an earlier request with different content",
        )),
        None => Ok(None),
    }
}

fn remember(store: &Store, key: &str, biz: Value, node: &str) -> Result<(), Fail> {
    store::put(
        &store.requests,
        key,
        &RequestRec {
            biz,
            node: node.to_string(),
        },
    )?;
    Ok(())
}

pub(crate) async fn dispatch(
    shared: &Shared,
    method: &str,
    inc: &Incoming,
) -> Result<String, Fail> {
    let ns = namespace(inc);
    let read_only = matches!(
        method,
        "alipay.marketing.card.template.query"
            | "alipay.marketing.card.template.batchquery"
            | "alipay.marketing.card.query"
            | "alipay.marketing.card.benefit.query"
            | "alipay.marketing.card.activateform.query"
    );
    let st = &shared.store;
    let node = {
        // Mutations run one at a time (idempotency checks are race-free); the
        // flush happens after the lock is released, shared between callers.
        let _guard = if read_only {
            None
        } else {
            Some(shared.write_lock.lock().await)
        };
        match method {
            "alipay.offline.material.image.upload" => image_upload(shared, &ns, inc)?,
            "alipay.marketing.card.template.create" => template_create(st, &ns, inc)?,
            "alipay.marketing.card.template.modify" => template_modify(st, &ns, inc)?,
            "alipay.marketing.card.template.query" => template_query(st, &ns, inc)?,
            "alipay.marketing.card.template.batchquery" => template_batchquery(st, &ns, inc)?,
            "alipay.marketing.card.formtemplate.set" => formtemplate_set(st, &ns, inc)?,
            "alipay.marketing.card.activateurl.apply" => activateurl_apply(st, &ns, inc)?,
            "alipay.marketing.card.open" => card_open(st, &ns, inc)?,
            "alipay.marketing.card.update" => card_update(st, &ns, inc)?,
            "alipay.marketing.card.query" => card_query(st, &ns, inc)?,
            "alipay.marketing.card.delete" => card_delete(st, &ns, inc)?,
            "alipay.marketing.card.consume.sync" => consume_sync(st, &ns, inc)?,
            "alipay.marketing.card.message.notify" => message_notify(st, &ns, inc)?,
            "alipay.marketing.card.benefit.create" => benefit_create(st, &ns, inc)?,
            "alipay.marketing.card.benefit.modify" => benefit_modify(st, &ns, inc)?,
            "alipay.marketing.card.benefit.delete" => benefit_delete(st, &ns, inc)?,
            "alipay.marketing.card.benefit.query" => benefit_query(st, &ns, inc)?,
            "alipay.system.oauth.token" => members::oauth_token(st, inc)?,
            "alipay.marketing.card.activateform.query" => members::form_query(st, &ns, inc)?,
            other => {
                return Err(Fail::invalid(
                    "isv.invalid-method",
                    format!("method {other} does not exist"),
                ));
            }
        }
    };
    if !read_only {
        st.flush().await?;
    }
    Ok(node)
}
