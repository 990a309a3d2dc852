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
}

/// The cards held: (open, deleted, open per template_id), for the test
/// endpoint `GET /_sandbox/cards`.
pub fn card_counts(
    st: &Store,
) -> Result<(u64, u64, std::collections::BTreeMap<String, u64>), Fail> {
    let (mut open, mut deleted, mut per) = (0, 0, std::collections::BTreeMap::new());
    for item in st.cards.iter() {
        let (_, v) = item.map_err(Fail::internal)?;
        let c: CardRec = serde_json::from_slice(&v).map_err(Fail::internal)?;
        if c.deleted {
            deleted += 1;
        } else {
            open += 1;
            *per.entry(c.template_id).or_insert(0) += 1;
        }
    }
    Ok((open, deleted, per))
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

// ------------------------------------------------------------------ images

fn image_upload(shared: &Shared, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let image_type = inc
        .get("image_type")
        .ok_or_else(|| Fail::business("INVALID_PARAM", "image_type is required"))?
        .to_string();
    let image_name = inc
        .get("image_name")
        .ok_or_else(|| Fail::business("INVALID_PARAM", "image_name is required"))?
        .to_string();
    max_len("image_type", &image_type, 8)?;
    max_len("image_name", &image_name, 128)?;
    let bytes = inc.files.get("image_content").ok_or_else(|| {
        Fail::invalid(
            "isv.upload-fail",
            "no image_content file part in the multipart body",
        )
    })?;
    let declared = image_type.to_ascii_lowercase();
    let declared = match declared.as_str() {
        "jpg" | "jpeg" => "jpeg",
        "png" | "gif" | "bmp" => declared.as_str(),
        _ => {
            return Err(Fail::invalid(
                "isv.invalid-file-extension",
                format!("image_type `{image_type}` is not one of bmp, png, jpg, jpeg, gif"),
            ));
        }
    }
    .to_string();
    if bytes.len() > IMAGE_UPLOAD_MAX {
        return Err(Fail::invalid(
            "isv.invalid-file-size",
            format!(
                "the image is {} bytes; at most {IMAGE_UPLOAD_MAX}",
                bytes.len()
            ),
        ));
    }
    let actual = match imagesize::image_type(bytes) {
        Ok(imagesize::ImageType::Png) => "png",
        Ok(imagesize::ImageType::Jpeg) => "jpeg",
        Ok(imagesize::ImageType::Gif) => "gif",
        Ok(imagesize::ImageType::Bmp) => "bmp",
        _ => {
            return Err(Fail::invalid(
                "isv.invalid-file-extension",
                "the file is not a BMP, PNG, JPEG or GIF image",
            ));
        }
    };
    if actual != declared {
        return Err(Fail::invalid(
            "isv.invalid-file-extension",
            format!("image_type says {image_type} but the file is {actual}"),
        ));
    }
    let size = imagesize::blob_size(bytes)
        .map_err(|_| Fail::invalid("isv.upload-fail", "the image header is unreadable"))?;
    let image_id = uuid::Uuid::new_v4().simple().to_string();
    let rec = ImageRec {
        ns: ns.to_string(),
        image_id: image_id.clone(),
        image_type,
        image_name,
        format: actual.into(),
        width: size.width,
        height: size.height,
        size: bytes.len(),
    };
    store::put(&shared.store.images, &image_id, &rec)?;
    shared
        .store
        .image_bytes
        .insert(image_id.as_bytes(), bytes.to_vec())
        .map_err(Fail::internal)?;
    Ok(success(&ImageUploadResponse {
        image_url: format!("{}/images/{image_id}", shared.base_url),
        image_id,
    }))
}

/// Check a referenced image: it exists for this merchant and fits its role.
fn check_image(st: &Store, ns: &str, field: &str, id: &str) -> Result<(), Fail> {
    let rec: ImageRec = store::get(&st.images, id)?
        .filter(|r: &ImageRec| r.ns == ns)
        .ok_or_else(|| bad(field, format!("image `{id}` does not exist")))?;
    let (min_w, min_h, max_bytes) = match field {
        "template_style_info.background_id" => (1020, 643, 2 * 1024 * 1024),
        "template_style_info.logo_id" => (500, 500, 1024 * 1024),
        _ => (0, 0, 1024 * 1024),
    };
    if rec.width < min_w || rec.height < min_h {
        return Err(bad(
            field,
            format!(
                "image `{id}` is {}x{}; this role needs at least {min_w}x{min_h}",
                rec.width, rec.height
            ),
        ));
    }
    if rec.size > max_bytes {
        return Err(bad(
            field,
            format!(
                "image `{id}` is {} bytes; this role allows at most {max_bytes}",
                rec.size
            ),
        ));
    }
    Ok(())
}

// ------------------------------------------------------------------ templates

fn validate_body(
    st: &Store,
    ns: &str,
    b: &TemplateBody,
    levels: Option<&Vec<TemplateCardLevelConf>>,
    creating: bool,
) -> Result<(), Fail> {
    if let Some(p) = &b.biz_no_prefix {
        max_len("biz_no_prefix", p, if creating { 10 } else { 16 })?;
    }
    if creating || b.biz_no_suffix_len.is_some() {
        let s = need("biz_no_suffix_len", &b.biz_no_suffix_len)?;
        let n: usize = s
            .parse()
            .ok()
            .filter(|n| (8..=32).contains(n))
            .ok_or_else(|| {
                bad(
                    "biz_no_suffix_len",
                    format!("`{s}` is not a number from 8 to 32"),
                )
            })?;
        let prefix = b.biz_no_prefix.as_deref().unwrap_or("").chars().count();
        if prefix + n > 32 {
            return Err(bad(
                "biz_no_suffix_len",
                "biz_no_prefix plus the suffix length exceeds 32 characters",
            ));
        }
    }
    if creating || b.write_off_type.is_some() {
        let w = need("write_off_type", &b.write_off_type)?;
        one_of("write_off_type", w, WRITE_OFF_TYPES)?;
        if matches!(w, "mdqrcode" | "mdbarcode") {
            let conf = b.mdcode_notify_conf.as_ref().ok_or_else(|| {
                bad(
                    "mdcode_notify_conf",
                    format!("is required when write_off_type is {w}"),
                )
            })?;
            http_url(
                "mdcode_notify_conf.url",
                need("mdcode_notify_conf.url", &conf.url)?,
                true,
            )?;
        }
    }
    let style = b
        .template_style_info
        .as_ref()
        .ok_or_else(|| bad("template_style_info", "is required"))?;
    let name = need("template_style_info.card_show_name", &style.card_show_name)?;
    max_len("template_style_info.card_show_name", name, 50)?;
    if let Some(c) = &style.bg_color
        && !crate::model::is_rgb(c)
    {
        return Err(bad(
            "template_style_info.bg_color",
            "must be rgb(r,g,b) with each value 0-255",
        ));
    }
    let logo = need("template_style_info.logo_id", &style.logo_id)?;
    check_image(st, ns, "template_style_info.logo_id", logo)?;
    let bg = need("template_style_info.background_id", &style.background_id)?;
    check_image(st, ns, "template_style_info.background_id", bg)?;
    for (field, id) in [
        ("template_style_info.banner_img_id", &style.banner_img_id),
        ("template_style_info.slogan_img_id", &style.slogan_img_id),
    ] {
        if let Some(id) = id {
            check_image(st, ns, field, id)?;
        }
    }
    if let Some(layout) = &style.column_info_layout {
        one_of(
            "template_style_info.column_info_layout",
            layout,
            &["list", "grid"],
        )?;
    }
    let grid = style.column_info_layout.as_deref() == Some("grid");
    for (i, c) in b.column_info_list.iter().flatten().enumerate() {
        let f = |x: &str| format!("column_info_list[{i}].{x}");
        need(&f("code"), &c.code)?;
        need(&f("title"), &c.title)?;
        match c.operate_type.as_deref().unwrap_or("staticinfo") {
            "staticinfo" => {}
            "openNative" => {
                let descs = c.more_info.as_ref().and_then(|m| m.descs.as_ref());
                if descs.is_none_or(|d| d.is_empty()) {
                    return Err(bad(&f("more_info.descs"), "is required for openNative"));
                }
            }
            "openWeb" => {
                let url = c.more_info.as_ref().and_then(|m| m.url.clone());
                http_url(&f("more_info.url"), need(&f("more_info.url"), &url)?, false)?;
            }
            other => one_of(
                &f("operate_type"),
                other,
                &["staticinfo", "openNative", "openWeb"],
            )?,
        }
        if grid {
            check_image(st, ns, &f("icon_id"), need(&f("icon_id"), &c.icon_id)?)?;
        }
    }
    for (i, r) in b.field_rule_list.iter().flatten().enumerate() {
        let f = |x: &str| format!("field_rule_list[{i}].{x}");
        one_of(
            &f("field_name"),
            &r.field_name,
            &["Balance", "Point", "Level", "OpenDate", "ValidDate"],
        )?;
        one_of(
            &f("rule_name"),
            &r.rule_name,
            &["ASSIGN_FROM_REQUEST", "DATE_IN_FUTURE", "CONST"],
        )?;
        let v = need(&f("rule_value"), &r.rule_value)?;
        match r.rule_name.as_str() {
            "ASSIGN_FROM_REQUEST" => one_of(
                &f("rule_value"),
                v,
                &["OpenDate", "ValidDate", "Level", "Point", "Balance"],
            )?,
            "DATE_IN_FUTURE" => {
                if !matches!(r.field_name.as_str(), "OpenDate" | "ValidDate") {
                    return Err(bad(
                        &f("rule_name"),
                        "DATE_IN_FUTURE applies only to OpenDate and ValidDate",
                    ));
                }
                let ok = v.len() >= 2
                    && (v.ends_with('m') || v.ends_with('d'))
                    && v[..v.len() - 1].chars().all(|c| c.is_ascii_digit());
                if !ok {
                    return Err(bad(&f("rule_value"), format!("`{v}` is not <n>m or <n>d")));
                }
            }
            _ => {}
        }
    }
    let actions = b.card_action_list.as_deref().unwrap_or_default();
    let max_actions = if creating { 3 } else { 4 };
    if actions.len() > max_actions {
        return Err(bad(
            "card_action_list",
            format!("has {} actions; at most {max_actions}", actions.len()),
        ));
    }
    for (i, a) in actions.iter().enumerate() {
        let f = |x: &str| format!("card_action_list[{i}].{x}");
        need(&f("code"), &a.code)?;
        need(&f("text"), &a.text)?;
        match a.url_type.as_deref().unwrap_or("url") {
            "url" => {
                let u = need(&f("url"), &a.url)?;
                if !u.starts_with("alipays://") {
                    http_url(&f("url"), u, false)?;
                }
            }
            "miniAppUrl" => {
                let m = a
                    .mini_app_url
                    .as_ref()
                    .ok_or_else(|| bad(&f("mini_app_url"), "is required for miniAppUrl"))?;
                need(&f("mini_app_url.mini_app_id"), &m.mini_app_id)?;
                if let Some(d) = &m.display_on_list {
                    one_of(&f("mini_app_url.display_on_list"), d, &["true", "false"])?;
                }
            }
            other => one_of(&f("url_type"), other, &["url", "miniAppUrl"])?,
        }
    }
    if let Some(conf) = &b.open_card_conf {
        if let Some(t) = &conf.open_card_source_type {
            one_of("open_card_conf.open_card_source_type", t, &["ISV", "MER"])?;
        }
        if let Some(u) = &conf.open_card_url {
            http_url("open_card_conf.open_card_url", u, false)?;
        }
        for (i, r) in conf.card_rights.iter().flatten().enumerate() {
            if let Some(id) = &r.logo_id {
                check_image(
                    st,
                    ns,
                    &format!("open_card_conf.card_rights[{i}].logo_id"),
                    id,
                )?;
            }
        }
    }
    for (i, p) in b.pub_channels.iter().flatten().enumerate() {
        one_of(
            &format!("pub_channels[{i}].pub_channel"),
            need(&format!("pub_channels[{i}].pub_channel"), &p.pub_channel)?,
            &["SHOP_DETAIL"],
        )?;
    }
    if let Some(fields) = b
        .template_form_config
        .as_ref()
        .and_then(|c| c.fields.as_ref())
    {
        let req = fields.required.as_deref().unwrap_or_default();
        let opt = fields.optional.as_deref().unwrap_or_default();
        check_form_lists("template_form_config.fields", req, opt)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, l) in levels.into_iter().flatten().enumerate() {
        if l.level.trim().is_empty() {
            return Err(bad(&format!("card_level_conf[{i}].level"), "is required"));
        }
        if !seen.insert(l.level.as_str()) {
            return Err(bad(
                &format!("card_level_conf[{i}].level"),
                format!("`{}` appears twice", l.level),
            ));
        }
        if let Some(icon) = &l.level_icon {
            check_image(st, ns, &format!("card_level_conf[{i}].level_icon"), icon)?;
        }
    }
    Ok(())
}

fn check_form_lists(field: &str, required: &[String], optional: &[String]) -> Result<(), Fail> {
    if required.is_empty() {
        return Err(bad(
            &format!("{field}.required"),
            "must contain at least one field",
        ));
    }
    if required.len() + optional.len() > 20 {
        return Err(bad(field, "at most 20 fields in total"));
    }
    let all: Vec<&String> = required.iter().chain(optional).collect();
    for f in &all {
        one_of(field, f, FORM_FIELDS)?;
    }
    for o in optional {
        if required.contains(o) {
            return Err(bad(
                &format!("{field}.optional"),
                format!("`{o}` is also required"),
            ));
        }
    }
    let has = |n: &str| all.iter().any(|f| f.as_str() == n);
    if has("OPEN_FORM_FIELD_IDCARD")
        && (has("OPEN_FORM_FIELD_CERT_TYPE") || has("OPEN_FORM_FIELD_CERT_NO"))
    {
        return Err(bad(
            field,
            "OPEN_FORM_FIELD_IDCARD cannot be combined with CERT_TYPE or CERT_NO",
        ));
    }
    Ok(())
}

fn get_template(st: &Store, ns: &str, id: &str) -> Result<TemplateRec, Fail> {
    store::get::<TemplateRec>(&st.templates, id)?
        .filter(|t| t.ns == ns)
        .ok_or_else(|| Fail::business("TEMPLATE_NOT_EXIT", format!("template {id} does not exist")))
}

fn template_create(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, biz): (TemplateCreateRequest, Value) = parse_biz(inc)?;
    let rid = need("request_id", &Some(req.request_id.clone()))?.to_string();
    max_len("request_id", &rid, 32)?;
    let key = format!("{ns}|template.create|{rid}");
    if let Some(node) = replay(st, &key, &biz, "request_id")? {
        return Ok(node);
    }
    one_of("card_type", &req.card_type, &["OUT_MEMBER_CARD"])?;
    validate_body(st, ns, &req.body, req.card_level_conf.as_ref(), true)?;
    let cst = FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    let template_id = format!(
        "{}{:024}",
        Utc::now().with_timezone(&cst).format("%Y%m%d"),
        st.next_id()?
    );
    let now = now_cst();
    let rec = TemplateRec {
        ns: ns.into(),
        template_id: template_id.clone(),
        card_type: req.card_type,
        body: req.body,
        card_level_conf: req.card_level_conf,
        service_label_list: req.service_label_list,
        form: None,
        gmt_create: now.clone(),
        gmt_modified: now,
    };
    store::put(&st.templates, &template_id, &rec)?;
    st.template_ns
        .insert(store::ns_key(ns, &template_id), &[])
        .map_err(Fail::internal)?;
    let node = success(&TemplateIdResponse { template_id });
    remember(st, &key, biz, &node)?;
    Ok(node)
}

/// Overwrite each field of `into` that `from` carries.
fn merge_body(into: &mut TemplateBody, from: TemplateBody) {
    macro_rules! take {
        ($($f:ident),*) => { $( if from.$f.is_some() { into.$f = from.$f; } )* };
    }
    take!(
        biz_no_prefix,
        biz_no_suffix_len,
        write_off_type,
        template_style_info,
        column_info_list,
        field_rule_list,
        card_action_list,
        template_benefit_info,
        open_card_conf,
        mdcode_notify_conf,
        shop_ids,
        pub_channels,
        spi_app_id,
        template_form_config,
        access_version,
        card_spec_tag
    );
}

fn template_modify(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, biz): (TemplateModifyRequest, Value) = parse_biz(inc)?;
    let rid = need("request_id", &Some(req.request_id.clone()))?.to_string();
    max_len("request_id", &rid, 64)?;
    let key = format!("{ns}|template.modify|{rid}");
    if let Some(node) = replay(st, &key, &biz, "request_id")? {
        return Ok(node);
    }
    let mut rec = get_template(st, ns, &req.template_id)?;
    if let Some(len) = &req.body.biz_no_suffix_len
        && Some(len) != rec.body.biz_no_suffix_len.as_ref()
    {
        return Err(bad(
            "biz_no_suffix_len",
            "cannot be changed after the template is created",
        ));
    }
    if let Some(rules) = &req.body.field_rule_list
        && Some(rules) != rec.body.field_rule_list.as_ref()
    {
        return Err(bad(
            "field_rule_list",
            "cannot be modified for merchant cards",
        ));
    }
    if let Some(new_shops) = &req.body.shop_ids {
        let removed: Vec<&String> = rec
            .body
            .shop_ids
            .iter()
            .flatten()
            .filter(|s| !new_shops.contains(s))
            .collect();
        if !removed.is_empty() {
            return Err(bad(
                "shop_ids",
                format!(
                    "shop ids cannot be removed ({})",
                    removed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let mut merged = rec.body.clone();
    merge_body(&mut merged, req.body);
    let levels = req.card_level_conf.or(rec.card_level_conf.clone());
    validate_body(st, ns, &merged, levels.as_ref(), false)?;
    rec.body = merged;
    rec.card_level_conf = levels;
    rec.gmt_modified = later_than(&rec.gmt_modified);
    store::put(&st.templates, &rec.template_id, &rec)?;
    let node = success(&TemplateIdResponse {
        template_id: rec.template_id,
    });
    remember(st, &key, biz, &node)?;
    Ok(node)
}

fn template_query(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (TemplateQueryRequest, Value) = parse_biz(inc)?;
    let rec = get_template(st, ns, &req.template_id)?;
    let mut body = rec.body;
    // Not in the SDK response class (card-apis.md §7).
    body.write_off_type = None;
    Ok(success(&TemplateQueryResponse {
        card_type: Some(rec.card_type),
        body,
        card_level_confs: rec.card_level_conf,
        service_label_list: rec.service_label_list,
    }))
}

fn template_batchquery(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (TemplateBatchQueryRequest, Value) = parse_biz(inc)?;
    if req.page_no < 1 {
        return Err(bad("page_no", "starts at 1"));
    }
    if !(1..=20).contains(&req.page_size) {
        return Err(bad("page_size", "must be from 1 to 20"));
    }
    // The namespace's templates, in id order, from the index.
    let mut prefix = ns.as_bytes().to_vec();
    prefix.push(0);
    let ids: Vec<String> = st
        .template_ns
        .scan_prefix(&prefix)
        .keys()
        .map(|k| k.map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned()))
        .collect::<Result<_, _>>()
        .map_err(Fail::internal)?;
    let total = ids.len() as i64;
    let skip = ((req.page_no - 1) * req.page_size) as usize;
    let mut all = Vec::new();
    for id in ids.iter().skip(skip).take(req.page_size as usize) {
        if let Some(rec) = store::get::<TemplateRec>(&st.templates, id).map_err(Fail::internal)? {
            all.push(rec);
        }
    }
    let page = all
        .into_iter()
        .map(|r| McardTemplate {
            template_id: r.template_id,
            card_type: Some(r.card_type),
            gmt_create: Some(r.gmt_create),
            gmt_modified: Some(r.gmt_modified),
            template_style_info: r.body.template_style_info,
        })
        .collect();
    Ok(success(&TemplateBatchQueryResponse {
        mcard_template: page,
        template_total: total,
    }))
}

// ------------------------------------------------------------------ form, URL

/// `{"common_fields":[...]}` inside a string (or, leniently, as an object).
fn form_list(field: &str, v: &Value) -> Result<Vec<String>, Fail> {
    let obj = match v {
        Value::String(s) => serde_json::from_str::<Value>(s)
            .map_err(|_| bad(field, "is not JSON {\"common_fields\":[...]}"))?,
        other => other.clone(),
    };
    obj.get("common_fields")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(field, "has no common_fields list"))?
        .iter()
        .map(|f| {
            f.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(field, "common_fields holds a non-string"))
        })
        .collect()
}

fn formtemplate_set(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    // Accept required/optional as objects too (some public code sends them so);
    // normalize to the documented string form before the model check.
    let mut normalized = biz_value(inc)?;
    if let Some(fields) = normalized.get_mut("fields").and_then(Value::as_object_mut) {
        for k in ["required", "optional"] {
            if let Some(v) = fields.get_mut(k)
                && v.is_object()
            {
                *v = Value::String(v.to_string());
            }
        }
    }
    let (req, _): (FormTemplateSetRequest, Value) = typed_biz(normalized)?;
    let required = form_list(
        "fields.required",
        &Value::String(req.fields.required.clone()),
    )?;
    let optional = match &req.fields.optional {
        Some(o) => form_list("fields.optional", &Value::String(o.clone()))?,
        None => Vec::new(),
    };
    check_form_lists("fields", &required, &optional)?;
    let mut rec = get_template(st, ns, &req.template_id)?;
    rec.form = Some(req.fields);
    rec.gmt_modified = now_cst().max(rec.gmt_modified.clone());
    store::put(&st.templates, &rec.template_id, &rec)?;
    Ok(success(&EmptyResponse {}))
}

fn activateurl_apply(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (ActivateUrlApplyRequest, Value) = parse_biz(inc)?;
    let rec = get_template(st, ns, &req.template_id)?;
    if let Some(cb) = &req.callback {
        max_len("callback", cb, 10240)?;
        http_url("callback", cb, false)?;
        if cb.contains('?') {
            return Err(bad(
                "callback",
                "must not contain query parameters (use out_string)",
            ));
        }
    }
    if let Some(o) = &req.out_string {
        max_len("out_string", o, 256)?;
    }
    if let Some(f) = &req.follow_app_id {
        max_len("follow_app_id", f, 512)?;
    }
    let app_id = inc.get("app_id").unwrap_or_default();
    let mut url = format!(
        "https://memberprod.alipay.com/account/openform/activecard.htm?app_id={app_id}&template_id={}&__webview_options__=canPullDown%3dNO%26transparentTitle%3dauto",
        rec.template_id
    );
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    if let Some(o) = &req.out_string {
        url.push_str(&format!("&out_string={}", enc(o)));
    }
    if let Some(cb) = &req.callback {
        url.push_str(&format!("&callback={}", enc(cb)));
    }
    // The gateway returns the URL encoded once more (decode once before use).
    Ok(success(&ActivateUrlApplyResponse {
        apply_card_url: enc(&url),
    }))
}

// ------------------------------------------------------------------ cards

fn card_open(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, biz): (CardOpenRequest, Value) = parse_biz(inc)?;
    need("out_serial_no", &Some(req.out_serial_no.clone()))?;
    max_len("out_serial_no", &req.out_serial_no, 64)?;
    let key = format!("{ns}|card.open|{}", req.out_serial_no);
    if let Some(node) = replay(st, &key, &biz, "out_serial_no")? {
        return Ok(node);
    }
    let tpl = store::get::<TemplateRec>(&st.templates, &req.card_template_id)?
        .filter(|t| t.ns == ns)
        .ok_or_else(|| {
            Fail::business(
                "TEMPLATE_NOT_EXIT",
                format!("template {} does not exist", req.card_template_id),
            )
        })?;
    let user = &req.card_user_info;
    if user.user_uni_id.is_some() == user.open_id.is_some() {
        return Err(Fail::business(
            "INVALID_PARAMETER",
            "card_user_info: exactly one of user_uni_id and open_id is required",
        ));
    }
    if let Some(uid) = &user.user_uni_id
        && !members::is_user_id(uid)
    {
        return Err(bad(
            "card_user_info.user_uni_id",
            "must be 16 digits starting 2088",
        ));
    }
    let member = members::holder(st, inc)?;
    if user.user_uni_id.as_deref().or(user.open_id.as_deref()) != Some(member.as_str()) {
        return Err(bad(
            "card_user_info",
            "the auth_token belongs to another user",
        ));
    }
    let ext = &req.card_ext_info;
    need("card_ext_info.external_card_no", &ext.external_card_no)?;
    members::check_card(ext, true)?;
    if let Some(m) = &req.member_ext_info {
        members::check_member(m)?;
    }
    if ext.biz_card_no.is_some() {
        return Err(Fail::business(
            "INVALID_PARAMETER",
            "card_ext_info.biz_card_no is assigned by Alipay; do not send it",
        ));
    }
    if let Some(level) = &ext.level
        && let Some(levels) = &tpl.card_level_conf
        && !levels.iter().any(|l| &l.level == level)
    {
        return Err(Fail::business(
            "INVALID_PARAMETER",
            format!("card_ext_info.level `{level}` is not a level of the template"),
        ));
    }
    let suffix_len: usize = tpl
        .body
        .biz_no_suffix_len
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let seq = st.next_id()?.to_string();
    let digits = if seq.len() >= suffix_len {
        seq[seq.len() - suffix_len..].to_string()
    } else {
        format!("{seq:0>suffix_len$}")
    };
    let biz_card_no = format!(
        "{}{digits}",
        tpl.body.biz_no_prefix.as_deref().unwrap_or("")
    );
    let mut card = ext.clone();
    card.biz_card_no = Some(biz_card_no.clone());
    let rec = CardRec {
        ns: ns.into(),
        template_id: tpl.template_id,
        card: card.clone(),
        user: req.card_user_info.clone(),
        deleted: false,
    };
    store::put(&st.cards, &biz_card_no, &rec)?;
    let node = success(&CardOpenResponse {
        card_info: card,
        open_card_channel: req.open_card_channel,
        open_card_channel_id: req.open_card_channel_id,
    });
    remember(st, &key, biz, &node)?;
    Ok(node)
}

fn get_card(st: &Store, ns: &str, no: &str) -> Result<CardRec, Fail> {
    store::get::<CardRec>(&st.cards, no)?
        .filter(|c| c.ns == ns && !c.deleted)
        .ok_or_else(|| Fail::business("CARD_NOT_EXIST", format!("card {no} does not exist")))
}

fn card_update(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (CardUpdateRequest, Value) = parse_biz(inc)?;
    one_of(
        "target_card_no_type",
        &req.target_card_no_type,
        &["BIZ_CARD"],
    )?;
    members::check_time("occur_time", &req.occur_time)?;
    let mut rec = get_card(st, ns, &req.target_card_no)?;
    let new = req.card_info;
    members::check_card(&new, false)?;
    for (field, old, newv) in [
        ("card_info.open_date", &rec.card.open_date, &new.open_date),
        (
            "card_info.valid_date",
            &rec.card.valid_date,
            &new.valid_date,
        ),
    ] {
        if newv.is_some() && newv != old {
            return Err(bad(field, "cannot be changed by card.update"));
        }
    }
    if let Some(tid) = &new.template_id {
        get_template(st, ns, tid)?;
        rec.template_id = tid.clone();
    }
    macro_rules! take {
        ($($f:ident),*) => { $( if new.$f.is_some() { rec.card.$f = new.$f.clone(); } )* };
    }
    take!(
        level,
        point,
        balance,
        mdcode_info,
        front_text_list,
        front_image_id,
        custom_assets,
        external_card_no
    );
    store::put(&st.cards, &req.target_card_no, &rec)?;
    Ok(success(&CardUpdateResponse { result_code: None }))
}

fn card_query(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (CardQueryRequest, Value) = parse_biz(inc)?;
    one_of(
        "target_card_no_type",
        &req.target_card_no_type,
        &["BIZ_CARD", "EXTERNAL_CARD", "D_QR_CODE", "D_BAR_CODE"],
    )?;
    let rec = match req.target_card_no_type.as_str() {
        "EXTERNAL_CARD" => {
            let mut found = None;
            for item in st.cards.iter() {
                let (_, v) = item.map_err(Fail::internal)?;
                if let Ok(c) = serde_json::from_slice::<CardRec>(&v)
                    && c.ns == ns
                    && !c.deleted
                    && c.card.external_card_no.as_deref() == Some(req.target_card_no.as_str())
                {
                    found = Some(c);
                }
            }
            found.ok_or_else(|| {
                Fail::business(
                    "CARD_NOT_EXIST",
                    format!("card {} does not exist", req.target_card_no),
                )
            })?
        }
        _ => get_card(st, ns, &req.target_card_no)?,
    };
    let no = rec.card.biz_card_no.clone().unwrap_or_default();
    let pass_id = crate::util::secret::Secret::new(&no).fingerprint();
    Ok(success(&CardQueryResponse {
        card_info: rec.card,
        schema_url: Some(format!(
            "alipays://platformapi/startapp?appId=20000021&p={pass_id}"
        )),
        pass_id: Some(pass_id),
    }))
}

fn card_delete(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, biz): (CardDeleteRequest, Value) = parse_biz(inc)?;
    max_len("out_serial_no", &req.out_serial_no, 32)?;
    let key = format!("{ns}|card.delete|{}", req.out_serial_no);
    if let Some(node) = replay(st, &key, &biz, "out_serial_no")? {
        return Ok(node);
    }
    one_of(
        "target_card_no_type",
        &req.target_card_no_type,
        &["BIZ_CARD"],
    )?;
    one_of(
        "reason_code",
        &req.reason_code,
        &["USER_UNBUND", "CANCEL", "PRESENT"],
    )?;
    let mut rec = get_card(st, ns, &req.target_card_no)?;
    rec.deleted = true;
    store::put(&st.cards, &req.target_card_no, &rec)?;
    let node = success(&CardDeleteResponse {
        biz_serial_no: Some(format!("{:020}", st.next_id()?)),
    });
    remember(st, &key, biz, &node)?;
    Ok(node)
}

// ---------------------------------------------------------------- members

/// Alipay's side of a member: auth codes (single-use, short-lived), access
/// and refresh tokens, and the activation forms members submitted. Records
/// live in the `members` tree under `code:`, `token:`, `refresh:` and
/// `form:` keys.
pub(crate) mod members {
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    use super::super::store::{self, Store};
    use super::super::{Fail, Incoming};
    use super::{bad, get_template, need, success};
    use crate::alipay::methods::*;

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
        Ok(success(&resp))
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
            Some(f) if f.user_id == user => {
                Ok(success(&ActivateFormQueryResponse { infos: f.infos }))
            }
            _ => Err(Fail::business(
                "INVALID_PARAMETER",
                "request_id: no form this user submitted for this template",
            )),
        }
    }

    /// Members who already authorised `app` (a merchant's existing book, as
    /// the test endpoint plays it): each a new user with a token and a
    /// refresh token. Returns (user_id, access_token, refresh_token).
    pub fn enrol(
        st: &Store,
        app: &str,
        count: usize,
    ) -> Result<Vec<(String, String, String)>, Fail> {
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

    fn check_amount(field: &str, v: &str) -> Result<(), Fail> {
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
}
