//! Certificate mode: the sandbox's certificate authority, kept in its data
//! directory and made on first start with `--cert-mode`:
//!
//! - `ca_private.pem`: the root CA's key (never leaves the directory);
//! - `alipay_root_cert.crt`: the root bundle clients configure. Like Alipay's
//!   own, it mixes algorithms: Alipay's published SM2 and ECDSA roots (which
//!   every SDK skips) around the sandbox's RSA root (which counts), so a
//!   client that forgets to skip non-RSA roots fails here as it would there;
//! - `alipay_cert.crt`: the Alipay public-key certificate, for the platform
//!   key the sandbox signs responses with, issued by the root.
//!
//! A rotation issues a new `alipay_cert.crt` (the old one is kept as
//! `alipay_cert.previous.crt`): a client still holding the old one sees
//! responses under an SN it does not know.

use std::path::Path;

use rsa::RsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, LineEnding};
use x509_cert::Certificate;

use super::SandboxError;
use crate::alipay::cert;
use crate::pki::{self, Period};

/// Alipay's published root bundle: its non-RSA roots go into the sandbox's.
const PUBLISHED_ROOTS: &str = include_str!("../../tests/data/certs/alipayRootCert.crt");

pub const ROOT_FILE: &str = "alipay_root_cert.crt";
pub const ALIPAY_CERT_FILE: &str = "alipay_cert.crt";
const CA_KEY_FILE: &str = "ca_private.pem";
const ROOT_DN: &str =
    "CN=cardform Sandbox Root CA R1,OU=Certification Authority,O=cardform sandbox,C=CN";
const ALIPAY_DN: &str =
    "CN=cardform Sandbox Alipay OpenAPI,OU=Alipay OpenAPI,O=cardform sandbox,C=CN";

/// The serial numbers the sandbox checks and announces.
#[derive(Debug, Clone)]
pub struct Authority {
    /// What requests must carry as `alipay_root_cert_sn` (its RSA root among them).
    pub root_sn: String,
    /// The SN of the sandbox's RSA root alone.
    pub rsa_root_sn: String,
    /// What responses carry as `alipay_cert_sn`.
    pub alipay_cert_sn: String,
    root: Certificate,
    key: RsaPrivateKey,
}

fn dd(dir: &Path, reason: impl std::fmt::Display) -> SandboxError {
    SandboxError::DataDir {
        dir: dir.display().to_string(),
        reason: reason.to_string(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), SandboxError> {
    std::fs::write(dir.join(name), text).map_err(|e| dd(dir, e))
}

/// Load the authority from `dir`, making what is missing; with `rotate`,
/// issue a new Alipay certificate.
pub fn ensure(
    dir: &Path,
    platform: &RsaPrivateKey,
    rotate: bool,
) -> Result<Authority, SandboxError> {
    let key_path = dir.join(CA_KEY_FILE);
    let root_path = dir.join(ROOT_FILE);
    let (key, bundle_text) = if key_path.exists() && root_path.exists() {
        let key = std::fs::read_to_string(&key_path)
            .ok()
            .and_then(|t| RsaPrivateKey::from_pkcs8_pem(&t).ok())
            .ok_or_else(|| dd(dir, format!("{CA_KEY_FILE} is not a PKCS#8 RSA key")))?;
        let text = std::fs::read_to_string(&root_path).map_err(|e| dd(dir, e))?;
        (key, text)
    } else {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .map_err(|e| dd(dir, format!("key generation failed: {e}")))?;
        let root =
            pki::root(&key, ROOT_DN, Period::days_from_now(20 * 365)).map_err(|e| dd(dir, e))?;
        let published = cert::parse_bundle(PUBLISHED_ROOTS).map_err(|e| dd(dir, e))?;
        let mut text = String::new();
        for (i, c) in published
            .iter()
            .filter(|c| !cert::rsa_signed(c))
            .enumerate()
        {
            text.push_str(&pki::pem(c).map_err(|e| dd(dir, e))?);
            if i == 0 {
                text.push_str(&pki::pem(&root).map_err(|e| dd(dir, e))?);
            }
        }
        let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| dd(dir, e))?;
        super::write_private(&key_path, pem.as_bytes()).map_err(|e| dd(dir, e))?;
        write(dir, ROOT_FILE, &text)?;
        let _ = std::fs::remove_file(dir.join(ALIPAY_CERT_FILE));
        (key, text)
    };
    let bundle =
        cert::parse_bundle(&bundle_text).map_err(|e| dd(dir, format!("{ROOT_FILE}: {e}")))?;
    let root = bundle
        .iter()
        .find(|c| {
            cert::rsa_signed(c)
                && cert::public_key_der(c)
                    .ok()
                    .and_then(|der| rsa::RsaPublicKey::from_public_key_der(&der).ok())
                    == Some(key.to_public_key())
        })
        .cloned()
        .ok_or_else(|| dd(dir, format!("{ROOT_FILE} holds no root for {CA_KEY_FILE}")))?;
    let root_sn = cert::root_cert_sn(&bundle).map_err(|e| dd(dir, e))?;
    let alipay_path = dir.join(ALIPAY_CERT_FILE);
    if rotate && alipay_path.exists() {
        std::fs::rename(&alipay_path, dir.join("alipay_cert.previous.crt"))
            .map_err(|e| dd(dir, e))?;
    }
    let alipay = if alipay_path.exists() {
        let text = std::fs::read_to_string(&alipay_path).map_err(|e| dd(dir, e))?;
        cert::parse_bundle(&text)
            .map_err(|e| dd(dir, format!("{ALIPAY_CERT_FILE}: {e}")))?
            .remove(0)
    } else {
        let c = pki::issue(
            &root,
            &key,
            ALIPAY_DN,
            &platform.to_public_key(),
            Period::days_from_now(5 * 365),
        )
        .map_err(|e| dd(dir, e))?;
        write(
            dir,
            ALIPAY_CERT_FILE,
            &pki::pem(&c).map_err(|e| dd(dir, e))?,
        )?;
        c
    };
    Ok(Authority {
        root_sn,
        rsa_root_sn: cert::cert_sn(&root),
        alipay_cert_sn: cert::cert_sn(&alipay),
        root,
        key,
    })
}

impl Authority {
    /// Issue an app certificate from a CSR, as the console does when an app
    /// switches to certificate mode.
    pub fn issue_app_cert(&self, csr_pem: &str, days: u64) -> Result<String, pki::PkiError> {
        let c = pki::issue_from_csr(&self.root, &self.key, csr_pem, Period::days_from_now(days))?;
        pki::pem(&c)
    }

    /// Whether a request's `alipay_root_cert_sn` names the sandbox's RSA root.
    pub fn accepts_root_sn(&self, sent: &str) -> bool {
        sent.split('_').any(|sn| sn == self.rsa_root_sn)
    }
}
