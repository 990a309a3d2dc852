//! Alipay's side of a member: auth codes (single-use, short-lived), access
//! and refresh tokens, and the activation forms members submitted. Records
//! live in the `members` tree under `code:`, `token:`, `refresh:` and
//! `form:` keys.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{bad, get_template, need, success};
use crate::alipay::methods::*;
use crate::sandbox::store::{self, Store};
use crate::sandbox::{Fail, Incoming};

/// How long an auth code may be exchanged (Alipay: a few minutes).
pub const CODE_TTL_SECS: i64 = 300;
/// How long an access token lasts.
pub const TOKEN_TTL_SECS: i64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CodeRec {
    app_id: String,
    user_id: String,
    expires: i64,
    used: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRec {
    app_id: String,
    user_id: String,
    expires: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FormRec {
    user_id: String,
    infos: String,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// 16 digits starting 2088.
pub fn is_user_id(s: &str) -> bool {
    s.len() == 16 && s.starts_with("2088") && s.bytes().all(|b| b.is_ascii_digit())
}

fn invalid_token() -> Fail {
    Fail {
        code: "20001",
        msg: "Insufficient Token Permissions",
        sub_code: "aop.invalid-auth-token".into(),
        sub_msg: "The auth_token is invalid or has expired.".into(),
    }
}

/// The user the call's `auth_token` belongs to (issued to this app, not
/// expired).
pub fn holder(st: &Store, inc: &Incoming) -> Result<String, Fail> {
    let Some(token) = inc.get("auth_token") else {
        return Err(Fail::missing(
            "isv.missing-auth-token",
            "auth_token is required",
        ));
    };
    let app = inc.get("app_id").unwrap_or_default();
    match store::get::<TokenRec>(&st.members, &format!("token:{token}"))? {
        Some(t) if t.app_id == app && t.expires > now() => Ok(t.user_id),
        _ => Err(invalid_token()),
    }
}

fn issue(st: &Store, app: &str, user_id: &str) -> Result<OauthTokenResponse, Fail> {
    let access = format!("authusrB{}", random_hex(16));
    let refresh = format!("authusrR{}", random_hex(16));
    let t = TokenRec {
        app_id: app.into(),
        user_id: user_id.into(),
        expires: now() + TOKEN_TTL_SECS,
    };
    store::put(&st.members, &format!("token:{access}"), &t)?;
    store::put(&st.members, &format!("refresh:{refresh}"), &t)?;
    Ok(OauthTokenResponse {
        access_token: access,
        user_id: Some(user_id.into()),
        open_id: None,
        expires_in: Some(Value::from(TOKEN_TTL_SECS)),
        refresh_token: Some(refresh),
        re_expires_in: Some(Value::from(TOKEN_TTL_SECS * 4)),
        auth_start: Some(super::now_cst()),
    })
}

/// `alipay.system.oauth.token`: a code is exchanged once, within
/// [`CODE_TTL_SECS`], by the app it was issued to.
pub fn oauth_token(st: &Store, inc: &Incoming) -> Result<String, Fail> {
    let app = inc.get("app_id").unwrap_or_default().to_string();
    let grant = need("grant_type", &inc.get("grant_type").map(str::to_string))?.to_string();
    let resp = match grant.as_str() {
        "authorization_code" => {
            let code = need("code", &inc.get("code").map(str::to_string))?.to_string();
            let key = format!("code:{code}");
            let rec = store::get::<CodeRec>(&st.members, &key)?;
            let rec = match rec {
                Some(r) if r.app_id == app && !r.used && r.expires > now() => r,
                _ => {
                    return Err(Fail::invalid(
                        "isv.code-invalid",
                        "The auth_code is invalid, used or expired.",
                    ));
                }
            };
            store::put(
                &st.members,
                &key,
                &CodeRec {
                    used: true,
                    ..rec.clone()
                },
            )?;
            issue(st, &app, &rec.user_id)?
        }
        "refresh_token" => {
            let token = need(
                "refresh_token",
                &inc.get("refresh_token").map(str::to_string),
            )?
            .to_string();
            match store::get::<TokenRec>(&st.members, &format!("refresh:{token}"))? {
                Some(r) if r.app_id == app => issue(st, &app, &r.user_id)?,
                _ => {
                    return Err(Fail::invalid(
                        "isv.refresh-token-invalid",
                        "The refresh_token is invalid.",
                    ));
                }
            }
        }
        other => {
            return Err(Fail::invalid(
                "isv.grant-type-invalid",
                format!("grant_type `{other}` is not authorization_code or refresh_token"),
            ));
        }
    };
    // As the gateway does: the token fields only, no `code` or `msg`.
    Ok(serde_json::to_value(&resp)
        .expect("responses serialize")
        .to_string())
}

/// `activateform.query`: the answers the token's member submitted for
/// this template and request_id.
pub fn form_query(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (ActivateFormQueryRequest, Value) = super::parse_biz(inc)?;
    super::one_of("biz_type", &req.biz_type, &["MEMBER_CARD"])?;
    need("request_id", &Some(req.request_id.clone()))?;
    let user = holder(st, inc)?;
    get_template(st, ns, &req.template_id)?;
    match store::get::<FormRec>(
        &st.members,
        &format!("form:{}|{}", req.template_id, req.request_id),
    )? {
        Some(f) if f.user_id == user => Ok(success(&ActivateFormQueryResponse { infos: f.infos })),
        _ => Err(Fail::business(
            "INVALID_PARAMETER",
            "request_id: no form this user submitted for this template",
        )),
    }
}

/// Members who already authorised `app` (a merchant's existing book, as
/// the test endpoint plays it): each a new user with a token and a
/// refresh token. Returns (user_id, access_token, refresh_token).
pub fn enrol(st: &Store, app: &str, count: usize) -> Result<Vec<(String, String, String)>, Fail> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let user_id = format!("2088{:012}", st.next_id()? % 1_000_000_000_000);
        let t = issue(st, app, &user_id)?;
        out.push((user_id, t.access_token, t.refresh_token.unwrap_or_default()));
    }
    Ok(out)
}

/// A member submits the activation form of `template_id` (as the test
/// endpoint plays it): a user (new unless given), the form, and a fresh
/// auth code. Returns (user_id, request_id, auth_code).
pub fn submit(
    st: &Store,
    app: &str,
    template_id: &str,
    user_id: Option<&str>,
    fields: &std::collections::BTreeMap<String, String>,
) -> Result<(String, String, String), Fail> {
    let tpl = store::get::<super::TemplateRec>(&st.templates, template_id)?
        .ok_or_else(|| Fail::business("TEMPLATE_NOT_EXIT", "no such template"))?;
    if let Some(form) = &tpl.form {
        let required = super::form_list("required", &Value::String(form.required.clone()))?;
        for f in &required {
            if !fields.contains_key(f) {
                return Err(bad("fields", format!("the form requires `{f}`")));
            }
        }
    }
    let user_id = match user_id {
        Some(u) if is_user_id(u) => u.to_string(),
        Some(_) => return Err(bad("user_id", "must be 16 digits starting 2088")),
        None => format!("2088{:012}", st.next_id()? % 1_000_000_000_000),
    };
    let request_id = format!("{}{}", chrono::Utc::now().format("%Y%m%d"), random_hex(12));
    let infos: Vec<Value> = fields
        .iter()
        .map(|(k, v)| serde_json::json!({ k: v }))
        .collect();
    store::put(
        &st.members,
        &format!("form:{template_id}|{request_id}"),
        &FormRec {
            user_id: user_id.clone(),
            infos: Value::Array(infos).to_string(),
        },
    )?;
    let code = random_hex(16);
    store::put(
        &st.members,
        &format!("code:{code}"),
        &CodeRec {
            app_id: app.into(),
            user_id: user_id.clone(),
            expires: now() + CODE_TTL_SECS,
            used: false,
        },
    )?;
    Ok((user_id, request_id, code))
}

pub fn check_time(field: &str, v: &str) -> Result<(), Fail> {
    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S")
        .map(|_| ())
        .map_err(|_| bad(field, "must be yyyy-MM-dd HH:mm:ss"))
}

pub fn check_amount(field: &str, v: &str) -> Result<(), Fail> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let int = int.strip_prefix('-').unwrap_or(int);
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 2
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(v.contains('.') && frac.is_empty());
    if ok {
        Ok(())
    } else {
        Err(bad(field, "must be a number with at most two decimals"))
    }
}

/// Seed 004's formats for a card's fields (`opening`: open_date and
/// valid_date are required).
pub fn check_card(c: &MerchantCard, opening: bool) -> Result<(), Fail> {
    let f = |n: &str| format!("card_ext_info.{n}");
    for (name, v) in [("open_date", &c.open_date), ("valid_date", &c.valid_date)] {
        match v {
            Some(v) => check_time(&f(name), v)?,
            None if opening => return Err(bad(&f(name), "is required")),
            None => {}
        }
    }
    if let Some(e) = &c.external_card_no {
        super::max_len(&f("external_card_no"), e, 64)?;
    }
    if let Some(l) = &c.level {
        super::max_len(&f("level"), l, 64)?;
    }
    if let Some(p) = &c.point {
        check_amount(&f("point"), p)?;
    }
    if let Some(b) = &c.balance {
        check_amount(&f("balance"), b)?;
    }
    if let Some(list) = &c.front_text_list {
        if list.len() > 4 {
            return Err(bad(&f("front_text_list"), "at most 4 lines"));
        }
        for t in list {
            if t.label.as_deref().is_some_and(|l| l.chars().count() > 4) {
                return Err(bad(&f("front_text_list.label"), "at most 4 characters"));
            }
            if t.value.as_deref().is_some_and(|l| l.chars().count() > 32) {
                return Err(bad(&f("front_text_list.value"), "at most 32 characters"));
            }
        }
    }
    Ok(())
}

pub fn check_member(m: &MerchantMenber) -> Result<(), Fail> {
    if let Some(b) = &m.birth
        && chrono::NaiveDate::parse_from_str(b, "%Y-%m-%d").is_err()
    {
        return Err(bad("member_ext_info.birth", "must be yyyy-MM-dd"));
    }
    if let Some(g) = &m.gende {
        super::one_of("member_ext_info.gende", g, &["MALE", "FEMALE"])?;
    }
    if let Some(n) = &m.name {
        super::max_len("member_ext_info.name", n, 64)?;
    }
    if let Some(c) = &m.cell {
        super::max_len("member_ext_info.cell", c, 32)?;
    }
    Ok(())
}
