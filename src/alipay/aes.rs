//! AES content encryption (`encrypt_type=AES`, gateway.md §9): `biz_content`
//! is encrypted before signing, and an encrypted response's node is a JSON
//! string of base64 ciphertext, verified as sent and then decrypted.
//!
//! AES-CBC with a zero IV and PKCS#7 padding, base64 in and out, the key the
//! console shows as base64 (16 bytes: AES-128; 24 and 32 are accepted too).
//! The same as the official SDKs: Java `com.alipay.api.internal.util.
//! AlipayEncrypt` (`AES/CBC/PKCS5Padding`, zero IV), Node `alipay-sdk`
//! `src/util.ts` `aesEncryptText` / `aesDecryptText` (crypto-js AES, zero IV,
//! its default PKCS#7), Python `aop/api/util/EncryptUtils.py`. A known-answer
//! test below pins the Node SDK's output.

use std::fmt;

use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::keys::KeySource;

/// The content-encryption key. Never printed.
#[derive(Clone)]
pub struct AesKey {
    bytes: Vec<u8>,
    source: KeySource,
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AesKey")
            .field("source", &self.source)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the AES content-encryption key from {source_} is not usable: {reason}\nhint: it is the base64 text the Alipay console shows under 接口内容加密方式 (24 characters for AES-128)"
)]
pub struct AesKeyError {
    pub source_: KeySource,
    pub reason: String,
}

const ZERO_IV: [u8; 16] = [0; 16];

impl AesKey {
    /// Parse the base64 key text (surrounding whitespace ignored).
    pub fn parse(text: &str, source: KeySource) -> Result<Self, AesKeyError> {
        let err = |reason: String| AesKeyError {
            source_: source.clone(),
            reason,
        };
        let bytes = B64
            .decode(text.trim().as_bytes())
            .map_err(|_| err("it is not base64".into()))?;
        if ![16, 24, 32].contains(&bytes.len()) {
            return Err(err(format!(
                "it decodes to {} bytes; an AES key is 16, 24 or 32 bytes",
                bytes.len()
            )));
        }
        Ok(Self { bytes, source })
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    fn unbound(&self) -> UnboundCipherKey {
        let alg = match self.bytes.len() {
            16 => &AES_128,
            24 => &AES_192,
            _ => &AES_256,
        };
        UnboundCipherKey::new(alg, &self.bytes).expect("bug: the key length was checked")
    }

    /// Encrypt text and return base64, as `biz_content` carries it.
    pub fn encrypt(&self, plain: &str) -> String {
        let key = PaddedBlockEncryptingKey::cbc_pkcs7(self.unbound())
            .expect("bug: AES-CBC accepts every AES key");
        let mut buf = plain.as_bytes().to_vec();
        key.less_safe_encrypt(
            &mut buf,
            EncryptionContext::Iv128(FixedLength::from(ZERO_IV)),
        )
        .expect("bug: CBC encryption with a 16-byte IV cannot fail");
        B64.encode(buf)
    }

    /// Decrypt base64 ciphertext to text. `None` if it is not base64, not
    /// whole blocks, badly padded or not UTF-8: whatever the cause, the key
    /// and the content do not belong together.
    pub fn decrypt(&self, cipher_b64: &str) -> Option<String> {
        let mut buf = B64.decode(cipher_b64.trim().as_bytes()).ok()?;
        let key = PaddedBlockDecryptingKey::cbc_pkcs7(self.unbound()).ok()?;
        let plain = key
            .decrypt(
                &mut buf,
                DecryptionContext::Iv128(FixedLength::from(ZERO_IV)),
            )
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    /// A fresh random AES-128 key as the console shows it (base64).
    pub fn generate_base64() -> String {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes).expect("bug: the system RNG failed");
        B64.encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> AesKey {
        AesKey::parse(text, KeySource::Env("TEST".into())).unwrap()
    }

    /// Computed with the Node SDK's own helper (alipay-sdk 4.14.0,
    /// `require('alipay-sdk/dist/commonjs/util.js').aesEncryptText(text, key)`).
    #[test]
    fn encryption_matches_the_node_sdk() {
        let k = key("aYA0GP8JEW+D7/UFaskCWA==");
        let plain = r#"{"template_id":"20240101000000000000001","会员":"金卡"}"#;
        let expected = NODE_VECTOR;
        assert_eq!(k.encrypt(plain), expected);
        assert_eq!(k.decrypt(expected).as_deref(), Some(plain));
    }

    const NODE_VECTOR: &str =
        "fcMHjDWElxfiUIZ2ViPoYQKlG5sCX4FfjOBuriJhjtKYEkCFyNpAsDzyNEACSJQQSGmSqQEPEd3mXM8crOwpXw==";

    #[test]
    fn wrong_keys_and_damaged_content_are_refused() {
        let k = key("aYA0GP8JEW+D7/UFaskCWA==");
        let other = key("AAAAAAAAAAAAAAAAAAAAAA==");
        let c = k.encrypt("{\"a\":1}");
        assert_eq!(other.decrypt(&c), None);
        assert_eq!(k.decrypt("not base64!"), None);
        assert_eq!(k.decrypt("AAAA"), None);
        let e = AesKey::parse("AAAA", KeySource::Env("K".into())).unwrap_err();
        assert!(e.to_string().contains("3 bytes"), "{e}");
        assert!(e.to_string().contains("environment variable `K`"), "{e}");
    }

    #[test]
    fn the_key_never_prints() {
        let k = key("aYA0GP8JEW+D7/UFaskCWA==");
        assert!(!format!("{k:?}").contains("aYA0"));
    }
}
