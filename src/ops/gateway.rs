//! Connect to the configured gateway: read the keys, build the client, and for
//! the `sandbox` endpoint start an in-process sandbox persisted under the state
//! directory, with a development app key created on first use; and the
//! governed connection ([`governed`]) every operation that calls the gateway
//! shares.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::alipay::aes::AesKey;
use crate::alipay::cert::{CertMode, CertText};
use crate::alipay::{AlipayPublicKey, AppPrivateKey, KeySource};
use crate::client::{Client, GatewayConfig};
use crate::model::SecretRef;
use crate::sandbox::{self, Faults, RunningSandbox, SandboxConfig};
use crate::settings::{Endpoint, GatewaySettings, read_secret};

/// The app id the embedded sandbox uses when none is configured.
pub const SANDBOX_APP_ID: &str = "9021000000000001";

/// A client, and the embedded sandbox it talks to (kept alive with it).
pub struct Connection {
    pub client: Client,
    pub sandbox: Option<RunningSandbox>,
}

impl Connection {
    pub async fn close(self) {
        if let Some(s) = self.sandbox {
            s.stop().await;
        }
    }
}

fn source_of(r: &SecretRef) -> KeySource {
    match r {
        SecretRef::File(p) => KeySource::File(p.clone()),
        SecretRef::Env(n) => KeySource::Env(n.clone()),
    }
}

fn private_key(r: &SecretRef) -> Result<AppPrivateKey> {
    let text = read_secret(r, "app private key").map_err(anyhow::Error::msg)?;
    Ok(AppPrivateKey::parse(&text, source_of(r))?)
}

fn public_key(r: &SecretRef) -> Result<AlipayPublicKey> {
    let text = read_secret(r, "Alipay public key").map_err(anyhow::Error::msg)?;
    Ok(AlipayPublicKey::parse(&text, source_of(r))?)
}

fn encrypt_key(settings: &GatewaySettings) -> Result<Option<AesKey>> {
    let Some(r) = &settings.encrypt_key else {
        return Ok(None);
    };
    let text = read_secret(r, "AES content-encryption key").map_err(anyhow::Error::msg)?;
    Ok(Some(AesKey::parse(&text, source_of(r))?))
}

/// How responses are verified: the Alipay public key (public-key mode) or
/// the three certificates (certificate mode, when any of them is set).
enum Trust {
    PublicKey(AlipayPublicKey),
    Cert(CertMode, AlipayPublicKey),
}

fn trust(settings: &GatewaySettings, key: &AppPrivateKey) -> Result<Option<Trust>> {
    let certs = [
        (
            "app_cert",
            "--app-cert / CARDFORM_APP_CERT",
            &settings.app_cert,
        ),
        (
            "alipay_cert",
            "--alipay-cert / CARDFORM_ALIPAY_CERT",
            &settings.alipay_cert,
        ),
        (
            "alipay_root_cert",
            "--alipay-root-cert / CARDFORM_ALIPAY_ROOT_CERT",
            &settings.alipay_root_cert,
        ),
    ];
    if certs.iter().all(|(_, _, r)| r.is_none()) {
        return Ok(settings
            .alipay_public_key
            .as_ref()
            .map(public_key)
            .transpose()?
            .map(Trust::PublicKey));
    }
    if let Some(missing) = certs.iter().find(|(_, _, r)| r.is_none()) {
        let given: Vec<&str> = certs
            .iter()
            .filter(|(_, _, r)| r.is_some())
            .map(|(n, _, _)| *n)
            .collect();
        bail!(
            "certificate mode needs all three certificates, but `{}` is not configured (given: {})\nhint: set {} (or the gateway block's `{}`) to the file from the Alipay console",
            missing.0,
            given.join(", "),
            missing.1,
            missing.0
        );
    }
    if let Some(apk) = &settings.alipay_public_key {
        bail!(
            "both an Alipay public key ({apk}) and certificates are configured; an app is in public-key mode or in certificate mode, not both\nhint: remove alipay_public_key (certificate mode takes Alipay's key from alipay_cert), or the three certificate settings"
        );
    }
    let read = |r: &SecretRef, what: &str| -> Result<(String, KeySource)> {
        let text = read_secret(r, what).map_err(anyhow::Error::msg)?;
        Ok((text, source_of(r)))
    };
    let (Some(app), Some(alipay), Some(root)) = (
        &settings.app_cert,
        &settings.alipay_cert,
        &settings.alipay_root_cert,
    ) else {
        unreachable!("bug: all three were checked above");
    };
    let (app, app_src) = read(app, "app certificate")?;
    let (alipay, alipay_src) = read(alipay, "Alipay certificate")?;
    let (root, root_src) = read(root, "Alipay root certificate")?;
    let (mode, alipay_key) = CertMode::load(
        CertText {
            text: &app,
            source: app_src,
        },
        CertText {
            text: &alipay,
            source: alipay_src,
        },
        CertText {
            text: &root,
            source: root_src,
        },
        key,
        std::time::SystemTime::now(),
    )?;
    Ok(Some(Trust::Cert(mode, alipay_key)))
}

fn config(
    endpoint: url::Url,
    app_id: String,
    settings: &GatewaySettings,
    key: AppPrivateKey,
    trust: Trust,
    encrypt_key: Option<AesKey>,
) -> GatewayConfig {
    let (alipay, cert) = match trust {
        Trust::PublicKey(k) => (k, None),
        Trust::Cert(mode, k) => (k, Some(Arc::new(mode))),
    };
    GatewayConfig {
        endpoint,
        app_id,
        sign_type: settings.sign_type,
        private_key: Arc::new(key),
        alipay_public_key: Arc::new(alipay),
        cert,
        encrypt_key: encrypt_key.map(Arc::new),
        connect_timeout: Duration::from_secs(3),
        timeout: Duration::from_secs(15),
    }
}

/// The embedded sandbox's data directory under a state directory.
pub fn sandbox_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("sandbox")
}

pub async fn connect(settings: &GatewaySettings, state_dir: &Path) -> Result<Connection> {
    let faults = match &settings.sandbox_faults {
        Some(spec) => {
            Faults::parse(spec).map_err(|e| anyhow::anyhow!("CARDFORM_SANDBOX_FAULTS: {e}"))?
        }
        None => Faults::default(),
    };
    match &settings.endpoint {
        Endpoint::Url(url) => {
            let Some(app_id) = settings.app_id.clone() else {
                bail!("no app id is configured\nhint: set --app-id or CARDFORM_APP_ID");
            };
            let Some(pk) = &settings.private_key else {
                bail!(
                    "no app private key is configured\nhint: set --private-key or CARDFORM_PRIVATE_KEY to the key file's path"
                );
            };
            let key = private_key(pk)?;
            let Some(trust) = trust(settings, &key)? else {
                bail!(
                    "no Alipay public key is configured\nhint: set --alipay-public-key or CARDFORM_ALIPAY_PUBLIC_KEY to the key file's path (public-key mode), or the three certificates (--app-cert, --alipay-cert, --alipay-root-cert) in certificate mode"
                );
            };
            let client = Client::new(config(
                url.clone(),
                app_id,
                settings,
                key,
                trust,
                encrypt_key(settings)?,
            ))?;
            Ok(Connection {
                client,
                sandbox: None,
            })
        }
        Endpoint::Embedded => {
            if settings.app_cert.is_some()
                || settings.alipay_cert.is_some()
                || settings.alipay_root_cert.is_some()
                || settings.encrypt_key.is_some()
            {
                bail!(
                    "the embedded sandbox speaks public-key mode only\nhint: run `cardform sandbox serve --cert-mode` (and `--encrypt-key` for AES) and set --endpoint to its URL"
                );
            }
            let dir = sandbox_dir(state_dir);
            std::fs::create_dir_all(&dir).with_context(|| {
                format!("cannot create the sandbox directory `{}`", dir.display())
            })?;
            let key = match &settings.private_key {
                Some(path) => private_key(path)?,
                None => {
                    let path = dir.join("dev_app_private.pem");
                    if !path.exists() {
                        sandbox::write_private(&path, AppPrivateKey::generate_pem().as_bytes())
                            .with_context(|| format!("cannot write `{}`", path.display()))?;
                    }
                    private_key(&SecretRef::File(path))?
                }
            };
            let app_id = settings
                .app_id
                .clone()
                .unwrap_or_else(|| SANDBOX_APP_ID.to_string());
            let running = sandbox::start(SandboxConfig {
                listen: "127.0.0.1:0".parse().expect("valid address"),
                data_dir: dir,
                apps: vec![(app_id.clone(), key.public_key_base64())],
                faults,
                ..SandboxConfig::default()
            })
            .await?;
            let alipay = match &settings.alipay_public_key {
                Some(path) => public_key(path)?,
                None => public_key(&SecretRef::File(running.platform_public_key_path()))?,
            };
            let url = url::Url::parse(&running.gateway_url()).expect("sandbox URL is valid");
            let client = Client::new(config(
                url,
                app_id,
                settings,
                key,
                Trust::PublicKey(alipay),
                None,
            ))?;
            Ok(Connection {
                client,
                sandbox: Some(running),
            })
        }
    }
}

/// A governed connection to the gateway (retries, throttle pauses, rate
/// limits), and each merchant's token: what every operation that calls the
/// gateway starts from.
pub struct Reader {
    pub conn: Connection,
    pub provider: Arc<crate::provider::Provider>,
    pub tokens: crate::apply::Tokens,
}

pub async fn governed(
    settings: &crate::settings::Settings,
    desired: &crate::model::Desired,
    options: &crate::apply::Options,
    observer: Arc<dyn crate::gateway::governor::Observer>,
) -> Result<Reader> {
    let conn = connect(&settings.gateway, &settings.local_dir()).await?;
    let client = conn.client.clone().with_max_in_flight(options.parallelism);
    let governor = crate::gateway::governor::Governor::new(Arc::new(client), options.retry.clone())
        .observed_by(observer)
        .with_limits(desired.gateway.rate_limits.clone());
    Ok(Reader {
        conn,
        provider: Arc::new(crate::provider::Provider::new(Arc::new(governor))),
        tokens: super::tokens::tokens(desired),
    })
}
