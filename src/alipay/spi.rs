//! Alipay calling the merchant (SPI): the open-card SPI of the 3.1 ("极速版")
//! flow, `spi.alipay.user.opencard.get`. When a member opens a card on a
//! template whose `spi_app_id` names the merchant's app, Alipay posts the
//! member, the template, its own `out_serial_no` and `biz_card_no` and the
//! form values to the merchant, who answers with the card in the same call
//! (no oauth.token, activateform.query or card.open).
//!
//! What the sources say (Alipay's 3.1 upgrade guide, 2024-11-12, and the API
//! page of the SPI): common parameters `charset`, `version`, `biz_app_id`,
//! `invoke_app_id`, `utc_timestamp`, `sign_type`, `sign`; business
//! parameters `user_id`, `open_id`/`union_id`, `template_id`,
//! `out_serial_no`, `biz_card_no`, `user_info` (the form, a JSON array of
//! objects). UNCONFIRMED (no source found, cardform's reading, README):
//! the business parameters travel as form fields or in `biz_content`
//! (both read); the request is signed as an OpenAPI request is (every
//! parameter but `sign`, sorted; signed without `sign_type` too, as
//! notifications are, is accepted); the answer is `{"response": {...},
//! "sign": "..."}` with the node signed by the app's key, as the gateway
//! signs its answers, and the node carries `code` 10000 and `card_info`.
//! Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::sign::{SignType, string_to_sign};

pub const OPENCARD: &str = "spi.alipay.user.opencard.get";

/// The open-card request, as the merchant reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenCard {
    /// `user_id` (2088...) or `open_id`: the member.
    pub user_id: Option<String>,
    pub open_id: Option<String>,
    pub template_id: String,
    /// Alipay's, unique per opening: what a retry repeats.
    pub out_serial_no: String,
    /// The card number Alipay made; the answer carries it back.
    pub biz_card_no: String,
    /// The form: field -> value (`OPEN_FORM_FIELD_MOBILE`, ...).
    pub user_info: BTreeMap<String, String>,
}

/// Why a request is not an open-card call (never its values).
fn missing(field: &str) -> String {
    format!("`{field}` is missing or malformed")
}

fn plain(v: &str, max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The form values of `user_info`: a JSON array of objects (or one object).
pub fn form_values(text: &str) -> Result<BTreeMap<String, String>, String> {
    let list: Vec<Map<String, Value>> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Value::Object(o) => Ok(o),
                _ => Err(missing("user_info")),
            })
            .collect::<Result<_, _>>()?,
        Ok(Value::Object(o)) => vec![o],
        _ => return Err(missing("user_info")),
    };
    Ok(super::methods::form_fields(list))
}

/// Read an open-card call from its parameters (already verified).
pub fn parse(params: &BTreeMap<String, String>) -> Result<OpenCard, String> {
    let biz: Map<String, Value> = match params.get("biz_content") {
        Some(b) => serde_json::from_str(b).map_err(|_| missing("biz_content"))?,
        None => Map::new(),
    };
    let get = |k: &str| -> Option<String> {
        params
            .get(k)
            .cloned()
            .or_else(|| match biz.get(k) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(v @ Value::Array(_)) | Some(v @ Value::Object(_)) => Some(v.to_string()),
                _ => None,
            })
            .filter(|v| !v.is_empty())
    };
    let need = |k: &str, max: usize| -> Result<String, String> {
        get(k).filter(|v| plain(v, max)).ok_or_else(|| missing(k))
    };
    let user_id = get("user_id");
    let open_id = get("open_id");
    match (&user_id, &open_id) {
        (None, None) => return Err(missing("user_id")),
        (Some(u), _) if !plain(u, 32) => return Err(missing("user_id")),
        (_, Some(o)) if !plain(o, 128) => return Err(missing("open_id")),
        _ => {}
    }
    Ok(OpenCard {
        user_id,
        open_id,
        template_id: need("template_id", 64)?,
        out_serial_no: need("out_serial_no", 64)?,
        biz_card_no: need("biz_card_no", 64)?,
        user_info: match get("user_info") {
            Some(t) if t.len() <= 10_240 => form_values(&t)?,
            Some(_) => return Err(missing("user_info")),
            None => BTreeMap::new(),
        },
    })
}

/// Whether `params` carry a good signature by `verify` (Alipay's key): over
/// every parameter but `sign` (the OpenAPI convention), or also without
/// `sign_type` (the notification convention).
pub fn verified(
    params: &BTreeMap<String, String>,
    verify: impl Fn(SignType, &[u8], &str) -> bool,
) -> bool {
    let Some(sign) = params.get("sign") else {
        return false;
    };
    let Ok(sign_type) = params
        .get("sign_type")
        .map_or("RSA2", String::as_str)
        .parse::<SignType>()
    else {
        return false;
    };
    if verify(sign_type, string_to_sign(params).as_bytes(), sign) {
        return true;
    }
    let mut without = params.clone();
    without.remove("sign_type");
    verify(sign_type, string_to_sign(&without).as_bytes(), sign)
}

/// The answer: `{"response": node, "sign": "..."}`, the node signed as
/// emitted.
pub fn answer(node: &Value, sign: impl Fn(&[u8]) -> String) -> String {
    let node = node.to_string();
    let signature = sign(node.as_bytes());
    format!(
        "{{\"response\":{node},\"sign\":{}}}",
        Value::String(signature)
    )
}

/// An answer's node and signature, for the one who called (the sandbox):
/// the node's exact text, to verify, and the node.
pub fn read_answer(body: &str) -> Result<(String, String, Map<String, Value>), String> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        response: &'a serde_json::value::RawValue,
        sign: String,
    }
    let raw: Raw<'_> = serde_json::from_str(body).map_err(|e| format!("not an SPI answer: {e}"))?;
    let node: Map<String, Value> =
        serde_json::from_str(raw.response.get()).map_err(|e| format!("`response`: {e}"))?;
    Ok((raw.response.get().to_string(), raw.sign, node))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BTreeMap<String, String> {
        [
            ("method", OPENCARD),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("utc_timestamp", "2026-12-07 10:00:00"),
            ("user_id", "2088000000000001"),
            ("template_id", "20261207000000000000000000000001"),
            ("out_serial_no", "AS0001"),
            ("biz_card_no", "BREW0001"),
            ("user_info", r#"[{"OPEN_FORM_FIELD_MOBILE":"13800000001"}]"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn a_request_parses_from_fields_or_biz_content() {
        let p = params();
        let c = parse(&p).unwrap();
        assert_eq!(c.biz_card_no, "BREW0001");
        assert_eq!(c.user_info["OPEN_FORM_FIELD_MOBILE"], "13800000001");
        let mut inner = BTreeMap::new();
        inner.insert("method".to_string(), OPENCARD.to_string());
        let biz: Map<String, Value> = p
            .iter()
            .filter(|(k, _)| {
                !["method", "charset", "sign_type", "utc_timestamp"].contains(&k.as_str())
            })
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        inner.insert("biz_content".into(), Value::Object(biz).to_string());
        assert!(parse(&inner) == Ok(c));
        let mut bad = params();
        bad.remove("biz_card_no");
        let e = parse(&bad).err().unwrap();
        assert!(e.contains("biz_card_no"), "{e}");
        bad = params();
        bad.insert("user_info".into(), "13800000001".into());
        let e = parse(&bad).err().unwrap();
        assert!(!e.contains("13800000001"), "a value leaked: {e}");
    }

    #[test]
    fn the_signature_covers_every_parameter() {
        let mut p = params();
        let content = string_to_sign(&p);
        p.insert("sign".into(), format!("sig:{content}"));
        let check = |_: SignType, data: &[u8], sign: &str| {
            sign.strip_prefix("sig:") == Some(std::str::from_utf8(data).unwrap())
        };
        assert!(verified(&p, check));
        p.insert("biz_card_no".into(), "BREW0002".into());
        assert!(!verified(&p, check));
        p.remove("sign");
        assert!(!verified(&p, check));
    }
}
