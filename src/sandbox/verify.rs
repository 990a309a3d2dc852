//! The sandbox's own request-signature check. The string it verifies is built
//! here, apart from the client's string-to-sign builder, and registered keys
//! are parsed with the `rsa` crate rather than the client's parser, so that a
//! bug shared by both sides cannot pass unnoticed. The RSA arithmetic itself
//! is aws-lc's: it is pinned by the known-answer tests (the worked example's
//! signature, byte for byte) and by the fidelity run against Alipay's own SDK,
//! and it costs a tenth of the `rsa` crate's on the sandbox's hot path.

use aws_lc_rs::signature::{self as lc, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::RsaPublicKey;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;

/// A registered app's public key, parsed once.
#[derive(Debug, Clone)]
pub struct AppKey {
    /// PKCS#1 `RSAPublicKey` DER, the form aws-lc's verifier takes.
    pkcs1: Vec<u8>,
    /// Registered with a certificate (certificate mode): its SN, which every
    /// request must carry as `app_cert_sn`.
    pub cert_sn: Option<String>,
}

/// Content the gateway checks a request signature against: all received text
/// parameters except `sign` and empty ones, sorted by name, `k=v` joined by `&`.
///
/// A name sent twice counts once, with its last value (the one the methods
/// read): the Node.js SDK's multipart upload sends `app_auth_token` both in
/// the query and as a form field, and signs it once.
pub fn signed_content(params: &[(String, String)]) -> String {
    let mut last: std::collections::BTreeMap<&[u8], (&str, &str)> = Default::default();
    for (k, v) in params {
        if k != "sign" && !k.is_empty() {
            last.insert(k.as_bytes(), (k, v));
        }
    }
    last.values()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Parse a registered app public key (one-line base64 SPKI or PEM), or an
/// app certificate (PEM; its first certificate, as the SDKs read it).
pub fn parse_app_key(text: &str) -> Option<AppKey> {
    let mut cert_sn = None;
    let key = if text.contains("-----BEGIN CERTIFICATE-----") {
        let cert = crate::alipay::cert::parse_bundle(text)
            .ok()?
            .into_iter()
            .next()?;
        cert_sn = Some(crate::alipay::cert::cert_sn(&cert));
        RsaPublicKey::from_public_key_der(&crate::alipay::cert::public_key_der(&cert).ok()?).ok()?
    } else if text.contains("-----BEGIN") {
        RsaPublicKey::from_public_key_pem(text.trim()).ok()?
    } else {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD.decode(compact).ok()?;
        RsaPublicKey::from_public_key_der(&der).ok()?
    };
    let pkcs1 = key.to_pkcs1_der().ok()?.as_bytes().to_vec();
    Some(AppKey { pkcs1, cert_sn })
}

/// Verify `sign` (base64) over `content` with SHA256withRSA (`RSA2`) or
/// SHA1withRSA (`RSA`).
pub fn verify(key: &AppKey, sign_type: &str, content: &str, sign: &str) -> bool {
    let Ok(raw) = STANDARD.decode(sign.trim()) else {
        return false;
    };
    let alg = match sign_type {
        "RSA2" => &lc::RSA_PKCS1_2048_8192_SHA256,
        "RSA" => &lc::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        _ => return false,
    };
    UnparsedPublicKey::new(alg, &key.pkcs1)
        .verify(content.as_bytes(), &raw)
        .is_ok()
}
