//! The sandbox's own request-signature check, written apart from the client's
//! string-to-sign builder and with a different RSA implementation (the `rsa`
//! crate), so that a bug shared by both sides cannot pass unnoticed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;

/// Content the gateway checks a request signature against: all received text
/// parameters except `sign` and empty ones, sorted by name, `k=v` joined by `&`.
pub fn signed_content(params: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = params
        .iter()
        .filter(|(k, v)| k != "sign" && !k.is_empty() && !v.is_empty())
        .collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Parse a registered app public key (one-line base64 SPKI or PEM).
pub fn parse_app_key(text: &str) -> Option<RsaPublicKey> {
    if text.contains("-----BEGIN") {
        return RsaPublicKey::from_public_key_pem(text.trim()).ok();
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD.decode(compact).ok()?;
    RsaPublicKey::from_public_key_der(&der).ok()
}

/// Verify `sign` (base64) over `content` with SHA256withRSA (`RSA2`) or
/// SHA1withRSA (`RSA`).
pub fn verify(key: &RsaPublicKey, sign_type: &str, content: &str, sign: &str) -> bool {
    let Ok(raw) = STANDARD.decode(sign.trim()) else {
        return false;
    };
    let Ok(sig) = Signature::try_from(raw.as_slice()) else {
        return false;
    };
    match sign_type {
        "RSA2" => VerifyingKey::<sha2::Sha256>::new(key.clone())
            .verify(content.as_bytes(), &sig)
            .is_ok(),
        "RSA" => VerifyingKey::<sha1::Sha1>::new(key.clone())
            .verify(content.as_bytes(), &sig)
            .is_ok(),
        _ => false,
    }
}
