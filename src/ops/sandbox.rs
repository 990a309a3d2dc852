//! `cardform sandbox serve`: run the sandbox gateway until interrupted;
//! `cardform sandbox issue-cert`: issue an app certificate from a CSR, as
//! the console does.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::sandbox::{self, RunningSandbox, SandboxConfig};

/// What `sandbox serve` was asked for.
pub struct Serve {
    pub listen: std::net::SocketAddr,
    pub data: PathBuf,
    /// `--app id=path`: a public key file, or an app certificate in certificate mode.
    pub apps: Vec<(String, PathBuf)>,
    pub faults: sandbox::Faults,
    pub cert_mode: bool,
    pub rotate_alipay_cert: bool,
    /// `--encrypt-key id=path`: a file holding the app's base64 AES key.
    pub encrypt_keys: Vec<(String, PathBuf)>,
}

/// Read the files the flags name and start serving.
pub async fn serve(s: Serve) -> Result<RunningSandbox> {
    let read = |what: &str, app_id: &str, path: &Path| -> Result<String> {
        crate::util::bounded::read_text(path, crate::util::bounded::MAX_SECRET_BYTES)
            .map_err(|e| anyhow::anyhow!("the {what} of app `{app_id}`: {e}"))
    };
    let mut keys = Vec::new();
    for (app_id, path) in s.apps {
        let text = read("public key", &app_id, &path)?;
        keys.push((app_id, text));
    }
    let mut encrypt_keys = Vec::new();
    for (app_id, path) in s.encrypt_keys {
        let text = read("AES key", &app_id, &path)?;
        encrypt_keys.push((app_id, text));
    }
    if s.rotate_alipay_cert && !s.cert_mode {
        bail!("--rotate-alipay-cert needs --cert-mode");
    }
    Ok(sandbox::start(SandboxConfig {
        listen: s.listen,
        data_dir: s.data,
        apps: keys,
        faults: s.faults,
        cert_mode: s.cert_mode,
        rotate_alipay_cert: s.rotate_alipay_cert,
        encrypt_keys,
    })
    .await?)
}

/// Issue an app certificate from a CSR with the sandbox's certificate
/// authority (made on first use, as `serve --cert-mode` would).
pub fn issue_cert(data: &Path, csr: &Path, out: &Path, days: u64) -> Result<()> {
    let text = crate::util::bounded::read_text(csr, crate::util::bounded::MAX_SECRET_BYTES)
        .map_err(|e| anyhow::anyhow!("the certificate request: {e}"))?;
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the directory `{}`", data.display()))?;
    let platform = sandbox::platform_rsa_key(data)?;
    let authority = sandbox::certs::ensure(data, &platform, false)?;
    let pem = authority
        .issue_app_cert(&text, days)
        .map_err(|e| anyhow::anyhow!("`{}`: {e}", csr.display()))?;
    std::fs::write(out, pem).with_context(|| format!("cannot write `{}`", out.display()))?;
    Ok(())
}
