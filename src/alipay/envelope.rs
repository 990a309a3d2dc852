//! The response envelope (gateway.md §5): locate the `<method>_response` (or
//! `error_response`) node in the raw body, verify the platform signature over
//! exactly the node's raw bytes, and turn the node into data or a typed error.
//!
//! Performs no I/O.

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::aes::AesKey;
use super::cert::CertMode;
use super::error::{ApiError, GatewayError};
use super::keys::AlipayPublicKey;
use super::sign::SignType;

/// How to check a response: the key and algorithm, and in certificate mode
/// the certificate the key came from; the content key if responses may be
/// AES-encrypted.
#[derive(Clone, Copy)]
pub struct Verifier<'a> {
    pub key: &'a AlipayPublicKey,
    pub sign_type: SignType,
    pub cert: Option<&'a CertMode>,
    pub aes: Option<&'a AesKey>,
}

/// The node name for a method: `alipay.a.b` -> `alipay_a_b_response`.
pub fn node_name(method: &str) -> String {
    let mut s = method.replace('.', "_");
    s.push_str("_response");
    s
}

/// Top-level entries of the body, in order, with the raw text of each value.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Parse and verify a gateway response body for `method`. Returns the node's fields
/// on code 10000; a typed error otherwise.
///
/// In certificate mode a top-level `alipay_cert_sn` other than the
/// configured certificate's is refused before the signature is tried: the
/// response was signed with a key this client does not hold. An encrypted
/// node (a JSON string) is verified as sent, quotes included (gateway.md
/// §5.3), then decrypted.
pub fn open(method: &str, body: &str, v: Verifier<'_>) -> Result<Map<String, Value>, GatewayError> {
    let Verifier {
        key,
        sign_type,
        cert,
        aes,
    } = v;
    let malformed = |detail: String| GatewayError::Malformed {
        method: method.to_string(),
        detail,
    };
    let entries: Entries = serde_json::from_str(body).map_err(|e| {
        malformed(format!(
            "the body is not a JSON object ({e}); it starts with {:?}",
            body.chars().take(80).collect::<String>()
        ))
    })?;
    let expected = node_name(method);
    let find = |name: &str| -> Result<Option<&RawValue>, GatewayError> {
        let mut hits = entries.0.iter().filter(|(k, _)| k == name);
        let first = hits.next().map(|(_, v)| *v);
        if hits.next().is_some() {
            return Err(malformed(format!("the node `{name}` occurs twice")));
        }
        Ok(first)
    };
    let (raw, is_error_node) = match find(&expected)? {
        Some(raw) => (raw, false),
        None => match find("error_response")? {
            Some(raw) => (raw, true),
            None => {
                return Err(malformed(format!(
                    "neither `{expected}` nor `error_response` is in the body"
                )));
            }
        },
    };
    let sign = match find("sign")? {
        Some(s) => Some(
            serde_json::from_str::<String>(s.get())
                .map_err(|_| malformed("`sign` is not a string".into()))?,
        ),
        None => None,
    };
    if let (Some(cert), Some(seen)) = (cert, find("alipay_cert_sn")?) {
        let seen = serde_json::from_str::<String>(seen.get())
            .map_err(|_| malformed("`alipay_cert_sn` is not a string".into()))?;
        if seen != cert.alipay_cert_sn {
            return Err(GatewayError::CertRotated {
                method: method.to_string(),
                seen: crate::util::text::clip(&seen, 64),
                configured: cert.alipay_cert_sn.clone(),
                configured_source: cert.alipay_cert_source.to_string(),
            });
        }
    }
    let encrypted = raw.get().starts_with('"');
    let node: Map<String, Value> = if encrypted {
        let Some(aes) = aes else {
            return Err(malformed(
                "the response is AES-encrypted, but no content-encryption key is configured (encrypt_key)".into(),
            ));
        };
        let cipher: String = serde_json::from_str(raw.get())
            .map_err(|_| malformed("the encrypted response node is not a string".into()))?;
        // Verified below before any field is believed; decrypted first only
        // because the code decides whether a signature is required.
        let plain = aes
            .decrypt(&cipher)
            .ok_or_else(|| GatewayError::Undecryptable {
                method: method.to_string(),
                key_source: aes.source().to_string(),
            })?;
        serde_json::from_str(&plain).map_err(|e| {
            malformed(format!(
                "the decrypted response node is not a JSON object: {e}"
            ))
        })?
    } else {
        serde_json::from_str(raw.get())
            .map_err(|e| malformed(format!("the response node is not a JSON object: {e}")))?
    };
    let code = match node.get("code").and_then(Value::as_str) {
        Some(c) => c.to_string(),
        // A success some methods answer without `code` (see
        // `SUCCESS_WITHOUT_CODE`); with a `sub_code` it is a failure.
        None if super::methods::SUCCESS_WITHOUT_CODE.contains(&method) && !is_error_node => {
            if node.contains_key("sub_code") {
                String::new()
            } else {
                "10000".to_string()
            }
        }
        None => return Err(malformed("the response node has no `code`".into())),
    };

    match &sign {
        Some(sign) => {
            let content = raw.get();
            let ok = key.verify(sign_type, content.as_bytes(), sign)
                // The Java SDK retries once with `\/` unescaped; gateways have sent both.
                || (content.contains("\\/")
                    && key.verify(sign_type, content.replace("\\/", "/").as_bytes(), sign));
            if !ok {
                return Err(GatewayError::BadSignature {
                    method: method.to_string(),
                    key_source: key.source().to_string(),
                });
            }
        }
        None if code == "10000" && !is_error_node => {
            return Err(GatewayError::Unsigned {
                method: method.to_string(),
            });
        }
        None => {}
    }

    if code != "10000" || is_error_node {
        let text = |k: &str| node.get(k).and_then(Value::as_str).map(str::to_string);
        return Err(GatewayError::Api(Box::new(ApiError {
            method: method.to_string(),
            code,
            msg: text("msg").unwrap_or_default(),
            sub_code: text("sub_code"),
            sub_msg: text("sub_msg"),
            signed: sign.is_some(),
        })));
    }
    Ok(node)
}
