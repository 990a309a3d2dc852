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
//! AES content encryption (UNCONFIRMED for the SPI: Alipay says every
//! `biz_content` interface can encrypt its request and response, and the SPI
//! has not been seen encrypted): read as the gateway does it (gateway.md
//! §9): a call with `encrypt_type=AES` carries its business parameters in
//! `biz_content` as base64 AES ciphertext, the signature covering the
//! ciphertext; the answer's node is then the JSON string of the node's
//! ciphertext, signed quotes included.
//! Pure: no I/O.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::aes::AesKey;
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

/// AES content encryption of a verified call: an `encrypt_type=AES` call's
/// `biz_content` is decrypted in place with `key`, which is then the key the
/// answer is encrypted with (`None`: a plain call, a plain answer). Why not,
/// never with any content.
pub fn decrypt<'k>(
    params: &mut BTreeMap<String, String>,
    key: Option<&'k AesKey>,
) -> Result<Option<&'k AesKey>, String> {
    match (params.get("encrypt_type").map(String::as_str), key) {
        (None, _) => Ok(None),
        (Some("AES"), Some(key)) => {
            let Some(cipher) = params.get("biz_content") else {
                return Err(missing("biz_content"));
            };
            let plain = key.decrypt(cipher).ok_or_else(|| {
                format!(
                    "`biz_content` cannot be decrypted with the AES content-encryption key from {}",
                    key.source()
                )
            })?;
            params.insert("biz_content".into(), plain);
            Ok(Some(key))
        }
        (Some("AES"), None) => Err(
            "the call is AES-encrypted (encrypt_type=AES), but no content-encryption key is configured (the gateway's encrypt_key)"
                .into(),
        ),
        (Some(_), _) => Err("`encrypt_type` is not AES".into()),
    }
}

/// The answer: `{"response": node, "sign": "..."}`, the node signed as
/// emitted; with `aes`, the node is the JSON string of its ciphertext.
pub fn answer(node: &Value, aes: Option<&AesKey>, sign: impl Fn(&[u8]) -> String) -> String {
    let mut node = node.to_string();
    if let Some(key) = aes {
        node = Value::String(key.encrypt(&node)).to_string();
    }
    let signature = sign(node.as_bytes());
    format!(
        "{{\"response\":{node},\"sign\":{}}}",
        Value::String(signature)
    )
}

/// An answer as the one who called (the sandbox) reads it.
pub struct Answer {
    /// The node's exact text, as signed.
    pub signed: String,
    pub sign: String,
    pub node: Map<String, Value>,
    /// Whether the node came AES-encrypted.
    pub encrypted: bool,
}

/// Read an answer: its signed text and signature, and the node (decrypted
/// with `aes` when it came encrypted).
pub fn read_answer(body: &str, aes: Option<&AesKey>) -> Result<Answer, String> {
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        response: &'a serde_json::value::RawValue,
        sign: String,
    }
    let raw: Raw<'_> = serde_json::from_str(body).map_err(|e| format!("not an SPI answer: {e}"))?;
    let signed = raw.response.get();
    let encrypted = signed.starts_with('"');
    let node: Map<String, Value> = if encrypted {
        let cipher: String =
            serde_json::from_str(signed).map_err(|e| format!("`response`: {e}"))?;
        let key = aes.ok_or("the answer is AES-encrypted, and no key is set to read it")?;
        let plain = key
            .decrypt(&cipher)
            .ok_or("the answer cannot be decrypted with the app's AES key")?;
        serde_json::from_str(&plain).map_err(|e| format!("`response` (decrypted): {e}"))?
    } else {
        serde_json::from_str(signed).map_err(|e| format!("`response`: {e}"))?
    };
    Ok(Answer {
        signed: signed.to_string(),
        sign: raw.sign,
        node,
        encrypted,
    })
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
    fn an_encrypted_call_is_read_and_answered_encrypted() {
        let key = AesKey::parse(
            "aa4BtZ4tspm2wnXLb1ThQA==",
            crate::alipay::KeySource::Inline("test"),
        )
        .unwrap();
        let plain = params();
        let biz: Map<String, Value> = ["user_id", "template_id", "out_serial_no", "biz_card_no"]
            .iter()
            .map(|k| (k.to_string(), Value::String(plain[*k].clone())))
            .collect();
        let mut p: BTreeMap<String, String> = [
            ("method", OPENCARD.to_string()),
            ("encrypt_type", "AES".to_string()),
            ("biz_content", key.encrypt(&Value::Object(biz).to_string())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // No key configured: refused, the content never shown.
        let mut without = p.clone();
        let e = decrypt(&mut without, None).err().unwrap();
        assert!(e.contains("no content-encryption key"), "{e}");
        assert!(decrypt(&mut p, Some(&key)).unwrap().is_some());
        assert_eq!(parse(&p).unwrap().biz_card_no, "BREW0001");
        // Another key cannot read it.
        let other = AesKey::parse(
            &AesKey::generate_base64(),
            crate::alipay::KeySource::Inline("other"),
        )
        .unwrap();
        let mut again = p.clone();
        again.insert("biz_content".into(), key.encrypt("{}"));
        assert!(decrypt(&mut again, Some(&other)).is_err());
        // The answer: a signed string of ciphertext, read back whole.
        let node = serde_json::json!({"code": "10000", "card_info": {"biz_card_no": "BREW0001"}});
        let text = answer(&node, Some(&key), |d| format!("sig:{}", d.len()));
        let a = read_answer(&text, Some(&key)).unwrap();
        assert!(a.encrypted && a.signed.starts_with('"'));
        assert_eq!(a.sign, format!("sig:{}", a.signed.len()));
        assert_eq!(Value::Object(a.node), node);
        assert!(read_answer(&text, None).is_err());
        let a = read_answer(&answer(&node, None, |_| "s".into()), Some(&key)).unwrap();
        assert!(!a.encrypted);
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
