//! Key material: the app private key (signs requests) and the Alipay public key
//! (verifies responses).
//!
//! Alipay hands keys out as one-line base64 (PKCS#1 "for non-Java", PKCS#8 "for
//! Java", SubjectPublicKeyInfo for public keys); people also paste PEM. Both are
//! accepted. Signing uses aws-lc-rs (constant time, ~6x faster than the `rsa`
//! crate); the `rsa` crate only reads and converts the formats, and signs the
//! legacy SHA-1 `RSA` sign type, which aws-lc-rs does not offer.
//!
//! Key material never appears in `Debug`, `Display` or any error: errors name
//! where the key came from, never what it contains.

use std::fmt;
use std::path::PathBuf;

use aws_lc_rs::signature::{self as lc, RsaKeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;

use super::sign::SignType;

/// Where a key was read from, for messages. Never holds the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
    Inline(&'static str),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file `{}`", p.display()),
            KeySource::Env(name) => write!(f, "environment variable `{name}`"),
            KeySource::Inline(what) => write!(f, "{what}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the {role} from {source_}: {reason}")]
    Read {
        role: &'static str,
        source_: KeySource,
        reason: String,
    },
    #[error(
        "the {role} from {source_} is not a valid key: {reason}\nhint: expected {expected}, as PEM or as the one-line base64 form Alipay's key tool produces"
    )]
    Invalid {
        role: &'static str,
        source_: KeySource,
        reason: &'static str,
        expected: &'static str,
    },
    #[error("the {role} from {source_} is {bits}-bit RSA; Alipay requires RSA-2048 or larger")]
    TooSmall {
        role: &'static str,
        source_: KeySource,
        bits: usize,
    },
}

/// Strip PEM armour and whitespace, then base64-decode. Returns the DER and whether
/// the armour said which structure it holds.
fn decode_text(text: &str) -> Option<(Vec<u8>, Option<String>)> {
    let mut label = None;
    let mut body = String::with_capacity(text.len());
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            label = Some(rest.trim_end_matches('-').trim().to_string());
            continue;
        }
        if line.starts_with("-----END ") {
            continue;
        }
        body.extend(line.chars().filter(|c| !c.is_whitespace()));
    }
    if body.is_empty() {
        return None;
    }
    B64.decode(body.as_bytes()).ok().map(|der| (der, label))
}

/// The app private key. Signs the string-to-sign of every request.
pub struct AppPrivateKey {
    pair: RsaKeyPair,
    /// Kept for the legacy SHA-1 sign type only; signs with blinding (`sign_with_rng`).
    legacy: rsa::RsaPrivateKey,
    source: KeySource,
}

impl fmt::Debug for AppPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppPrivateKey")
            .field("source", &self.source)
            .field("key", &"<redacted>")
            .finish()
    }
}

const PRIVATE_ROLE: &str = "app private key";
const PUBLIC_ROLE: &str = "Alipay public key";

impl AppPrivateKey {
    /// Parse PKCS#8 or PKCS#1, PEM or one-line base64.
    pub fn parse(text: &str, source: KeySource) -> Result<Self, KeyError> {
        let invalid = |reason| KeyError::Invalid {
            role: PRIVATE_ROLE,
            source_: source.clone(),
            reason,
            expected: "an RSA private key (PKCS#1 or PKCS#8)",
        };
        let (der, label) = decode_text(text).ok_or_else(|| invalid("it is not PEM or base64"))?;
        if label.as_deref().is_some_and(|l| l.contains("PUBLIC")) {
            return Err(invalid("it is a public key"));
        }
        if label.as_deref() == Some("ENCRYPTED PRIVATE KEY") {
            return Err(invalid("it is encrypted; export it without a passphrase"));
        }
        let key = rsa::RsaPrivateKey::from_pkcs8_der(&der)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_der(&der))
            .map_err(|_| invalid("it is neither PKCS#8 nor PKCS#1 RSA key data"))?;
        let bits = key.size() * 8;
        if bits < 2048 {
            return Err(KeyError::TooSmall {
                role: PRIVATE_ROLE,
                source_: source,
                bits,
            });
        }
        let pkcs8 = key
            .to_pkcs8_der()
            .map_err(|_| invalid("it cannot be re-encoded as PKCS#8"))?;
        let pair = RsaKeyPair::from_pkcs8(pkcs8.as_bytes())
            .map_err(|_| invalid("the RSA parameters are inconsistent"))?;
        Ok(Self {
            pair,
            legacy: key,
            source,
        })
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Sign `data` and return standard base64, as the `sign` parameter carries it.
    pub fn sign(&self, sign_type: SignType, data: &[u8]) -> String {
        match sign_type {
            SignType::Rsa2 => {
                let mut sig = vec![0u8; self.pair.public_modulus_len()];
                self.pair
                    .sign(
                        &lc::RSA_PKCS1_SHA256,
                        &aws_lc_rs::rand::SystemRandom::new(),
                        data,
                        &mut sig,
                    )
                    .expect("bug: RSA-2048 PKCS#1 v1.5 signing cannot fail for a validated key");
                B64.encode(sig)
            }
            SignType::Rsa => {
                use rsa::signature::{RandomizedSigner, SignatureEncoding};
                let signer = rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(self.legacy.clone());
                let sig = signer.sign_with_rng(&mut rand::thread_rng(), data);
                B64.encode(sig.to_bytes())
            }
        }
    }

    /// Whether `public` is this key's public half.
    pub fn is_pair_of(&self, public: &rsa::RsaPublicKey) -> bool {
        self.legacy.to_public_key() == *public
    }

    /// The RSA key, for encoding it in other forms (`keys generate`, CSRs).
    pub fn rsa(&self) -> &rsa::RsaPrivateKey {
        &self.legacy
    }

    /// The matching public key as one-line base64 SubjectPublicKeyInfo (what the
    /// Alipay console asks for, and what the sandbox registers).
    pub fn public_key_base64(&self) -> String {
        let der = self
            .legacy
            .to_public_key()
            .to_public_key_der()
            .expect("bug: an RSA public key always encodes");
        B64.encode(der.as_bytes())
    }

    /// Generate a fresh RSA-2048 key, returned as PKCS#8 PEM text.
    pub fn generate_pem() -> String {
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .expect("bug: RSA-2048 key generation failed");
        key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .expect("bug: an RSA key always encodes")
            .to_string()
    }
}

/// The Alipay (platform) public key. Verifies response signatures.
#[derive(Clone)]
pub struct AlipayPublicKey {
    /// PKCS#1 `RSAPublicKey` DER, the form aws-lc-rs's verifier takes.
    pkcs1: Vec<u8>,
    source: KeySource,
}

impl fmt::Debug for AlipayPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlipayPublicKey")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl AlipayPublicKey {
    /// Parse SubjectPublicKeyInfo (PEM or one-line base64) or PKCS#1 `RSA PUBLIC KEY`.
    pub fn parse(text: &str, source: KeySource) -> Result<Self, KeyError> {
        let invalid = |reason| KeyError::Invalid {
            role: PUBLIC_ROLE,
            source_: source.clone(),
            reason,
            expected: "an RSA public key (SubjectPublicKeyInfo)",
        };
        let (der, label) = decode_text(text).ok_or_else(|| invalid("it is not PEM or base64"))?;
        if label.as_deref().is_some_and(|l| l.contains("PRIVATE")) {
            return Err(invalid(
                "it is a private key; use the public key Alipay shows in its console",
            ));
        }
        let key = match rsa::RsaPublicKey::from_public_key_der(&der)
            .or_else(|_| rsa::RsaPublicKey::from_pkcs1_der(&der))
        {
            Ok(key) => key,
            Err(_)
                if rsa::RsaPrivateKey::from_pkcs1_der(&der).is_ok()
                    || rsa::RsaPrivateKey::from_pkcs8_der(&der).is_ok() =>
            {
                return Err(invalid(
                    "it is a private key; use the public key Alipay shows in its console",
                ));
            }
            Err(_) => return Err(invalid("it is not RSA public key data")),
        };
        let bits = key.size() * 8;
        if bits < 2048 {
            return Err(KeyError::TooSmall {
                role: PUBLIC_ROLE,
                source_: source,
                bits,
            });
        }
        let pkcs1 = key
            .to_pkcs1_der()
            .map_err(|_| invalid("it cannot be re-encoded"))?
            .into_vec();
        Ok(Self { pkcs1, source })
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Verify a base64 `sign` over `data`. False on any malformation.
    pub fn verify(&self, sign_type: SignType, data: &[u8], sign_b64: &str) -> bool {
        let Ok(sig) = B64.decode(sign_b64.as_bytes()) else {
            return false;
        };
        let alg: &'static dyn lc::VerificationAlgorithm = match sign_type {
            SignType::Rsa2 => &lc::RSA_PKCS1_2048_8192_SHA256,
            SignType::Rsa => &lc::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
        };
        UnparsedPublicKey::new(alg, &self.pkcs1)
            .verify(data, &sig)
            .is_ok()
    }
}
