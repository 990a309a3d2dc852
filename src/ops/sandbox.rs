//! `cardform sandbox serve`: run the sandbox gateway until interrupted;
//! `cardform sandbox keygen`: make an app key pair to register with it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::alipay::{AppPrivateKey, KeySource};

use crate::sandbox::{self, RunningSandbox, SandboxConfig};

/// Read `--app id=path` key files and start serving.
pub async fn serve(
    listen: std::net::SocketAddr,
    data: std::path::PathBuf,
    apps: Vec<(String, std::path::PathBuf)>,
    faults: sandbox::Faults,
) -> Result<RunningSandbox> {
    let mut keys = Vec::new();
    for (app_id, path) in apps {
        let text = crate::bounded::read_text(&path, crate::bounded::MAX_SECRET_BYTES)
            .map_err(|e| anyhow::anyhow!("the public key of app `{app_id}`: {e}"))?;
        keys.push((app_id, text));
    }
    Ok(sandbox::start(SandboxConfig {
        listen,
        data_dir: data,
        apps: keys,
        faults,
    })
    .await?)
}

/// Write a fresh RSA-2048 app key pair into `dir`: `app_private.pem`
/// (PKCS#8, readable by its owner only) and `app_public.txt` (one-line base64
/// SubjectPublicKeyInfo: what `sandbox serve --app` and the Alipay console
/// take). Never overwrites a private key.
pub fn keygen(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the directory `{}`", dir.display()))?;
    let private = dir.join("app_private.pem");
    let public = dir.join("app_public.txt");
    if private.exists() {
        bail!(
            "`{}` already exists; refusing to overwrite a private key\nhint: choose another --out directory",
            private.display()
        );
    }
    let pem = AppPrivateKey::generate_pem();
    let key = AppPrivateKey::parse(&pem, KeySource::File(private.clone()))?;
    sandbox::write_private(&private, pem.as_bytes())
        .with_context(|| format!("cannot write `{}`", private.display()))?;
    std::fs::write(&public, format!("{}\n", key.public_key_base64()))
        .with_context(|| format!("cannot write `{}`", public.display()))?;
    Ok((private, public))
}
