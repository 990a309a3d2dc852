//! `cardform keys generate`: an app key pair in every form Alipay's tools
//! use, and a certificate signing request for certificate mode.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};

use crate::alipay::{AppPrivateKey, KeySource};
use crate::sandbox::write_private;

/// What `keys generate` wrote.
pub struct Generated {
    /// PKCS#8 PEM: what cardform, the Java and Node.js SDKs take.
    pub private_pkcs8: PathBuf,
    /// PKCS#1 PEM: what the PHP and Python SDKs take.
    pub private_pkcs1: PathBuf,
    /// One-line base64 SubjectPublicKeyInfo: what the console asks for
    /// (public-key mode) and `sandbox serve --app` takes.
    pub public_line: PathBuf,
    /// The public key as PEM.
    pub public_pem: PathBuf,
    /// The certificate signing request (certificate mode).
    pub csr: PathBuf,
}

/// Write a fresh RSA-2048 key pair and a CSR for `subject` into `dir`. Never
/// overwrites a private key.
pub fn generate(dir: &Path, subject: &str) -> Result<Generated> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory `{}`", dir.display()))?;
    let out = Generated {
        private_pkcs8: dir.join("app_private.pem"),
        private_pkcs1: dir.join("app_private_pkcs1.pem"),
        public_line: dir.join("app_public.txt"),
        public_pem: dir.join("app_public.pem"),
        csr: dir.join("app.csr"),
    };
    for p in [&out.private_pkcs8, &out.private_pkcs1] {
        if p.exists() {
            bail!(
                "`{}` already exists; refusing to overwrite a private key\nhint: choose another --out directory",
                p.display()
            );
        }
    }
    let pem = AppPrivateKey::generate_pem();
    let key = AppPrivateKey::parse(&pem, KeySource::File(out.private_pkcs8.clone()))?;
    let rsa = key.rsa();
    let pkcs1 = rsa
        .to_pkcs1_pem(LineEnding::LF)
        .context("bug: an RSA key always encodes")?;
    let public_pem = rsa
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .context("bug: an RSA key always encodes")?;
    let csr = crate::pki::csr(rsa, subject).map_err(|e| anyhow::anyhow!("--subject: {e}"))?;
    let write = |p: &Path, text: &str| {
        std::fs::write(p, text).with_context(|| format!("cannot write `{}`", p.display()))
    };
    write_private(&out.private_pkcs8, pem.as_bytes())
        .with_context(|| format!("cannot write `{}`", out.private_pkcs8.display()))?;
    write_private(&out.private_pkcs1, pkcs1.as_bytes())
        .with_context(|| format!("cannot write `{}`", out.private_pkcs1.display()))?;
    write(&out.public_line, &format!("{}\n", key.public_key_base64()))?;
    write(&out.public_pem, &public_pem)?;
    write(&out.csr, &csr)?;
    Ok(out)
}
