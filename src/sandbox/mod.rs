//! A faithful emulator of the Alipay `gateway.do` (axum on tokio): the same
//! protocol (query + form/multipart parameters merged, absolute-form request
//! targets, RSA request signatures checked against the registered app key with
//! code of its own, responses signed with its platform key in the exact envelope
//! the official SDKs verify), the card APIs' business rules, persistence under
//! its data directory, and fault injection.
//!
//! It depends on nothing of the client side but the plain request/response data
//! types in `alipay::methods`.
//!
//! This file starts it (keys, apps, routes); `protocol` reads and checks
//! requests and signs answers; `business` holds the card APIs' rules, a file
//! per API family (images, templates, forms, cards, members); `endpoints`
//! the test endpoints; [`store`] the persisted records; [`faults`] latency,
//! errors and throttling on demand.

mod business;
pub mod certs;
mod endpoints;
pub mod faults;
mod protocol;
pub mod store;
pub mod verify;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::signature::{self as lc, RsaKeyPair};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{FixedOffset, NaiveDateTime, Utc};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use tokio::sync::Mutex;

use crate::alipay::aes::AesKey;

use endpoints::*;
pub use faults::Faults;
use protocol::*;
pub use protocol::{BODY_TIMEOUT, MAX_BODY_BYTES};
use store::Store;

/// How far a request timestamp may be from the sandbox clock (the real gateway's
/// tolerance is UNCONFIRMED; see the README).
pub const TIMESTAMP_SKEW_MINUTES: i64 = 15;

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Apps to register: (app_id, public key text, or an app certificate's
    /// PEM in certificate mode).
    pub apps: Vec<(String, String)>,
    pub faults: Faults,
    /// Act as a gateway in public-key-certificate mode (see [`certs`]).
    pub cert_mode: bool,
    /// Issue a new Alipay certificate before serving (certificate mode).
    pub rotate_alipay_cert: bool,
    /// Apps with AES content encryption switched on: (app_id, base64 key).
    /// Once on, it stays on (as at Alipay).
    pub encrypt_keys: Vec<(String, String)>,
}

impl Default for SandboxConfig {
    /// A loopback port picked by the system, public-key mode, no faults.
    fn default() -> Self {
        SandboxConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: PathBuf::new(),
            apps: Vec::new(),
            faults: Faults::default(),
            cert_mode: false,
            rotate_alipay_cert: false,
            encrypt_keys: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot use the sandbox data directory `{dir}`: {reason}")]
    DataDir { dir: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error(
        "app `{app_id}`: the public key is not RSA SubjectPublicKeyInfo (PEM or base64), nor an RSA app certificate (PEM)"
    )]
    AppKey { app_id: String },
    #[error(
        "app `{app_id}` is registered with a certificate, which needs certificate mode\nhint: add --cert-mode"
    )]
    CertNeedsCertMode { app_id: String },
    #[error("app `{app_id}`: {reason}")]
    EncryptKey { app_id: String, reason: String },
}

pub(crate) struct Shared {
    store: Store,
    platform: RsaKeyPair,
    /// Certificate mode: the SNs checked and announced.
    authority: Option<certs::Authority>,
    faults: Faults,
    throttle: faults::Throttles,
    /// Serializes mutating business calls, so idempotency checks are race-free.
    write_lock: Mutex<()>,
    base_url: String,
    /// Registered app keys, parsed on first use (apps are registered before
    /// serving starts).
    app_keys: std::sync::RwLock<std::collections::HashMap<String, verify::AppKey>>,
    /// AES content-encryption keys of the apps that have it switched on.
    encrypt_keys: std::collections::HashMap<String, AesKey>,
}

/// A sandbox serving in the background of this process.
pub struct RunningSandbox {
    pub addr: SocketAddr,
    /// Certificate mode: the SN responses are signed under.
    pub alipay_cert_sn: Option<String>,
    pub data_dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSandbox {
    /// The gateway URL, e.g. `http://127.0.0.1:41234/gateway.do`.
    pub fn gateway_url(&self) -> String {
        format!("http://{}/gateway.do", self.addr)
    }

    /// The platform public key clients verify responses with.
    pub fn platform_public_key_path(&self) -> PathBuf {
        self.data_dir.join("platform_public.pem")
    }

    /// Members who authorised `app_id` before, made through the test
    /// endpoint `POST /_sandbox/members` (for benchmarks that run the
    /// sandbox in their own process): `[{"user_id", "auth_token", ..}]`.
    pub async fn enrol(&self, app_id: &str, count: usize) -> Result<serde_json::Value, String> {
        let url = format!("http://{}/_sandbox/members", self.addr);
        let answer = reqwest::Client::new()
            .post(url)
            .body(serde_json::json!({"app_id": app_id, "count": count}).to_string())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("the sandbox's members endpoint failed: {e}"))?;
        answer
            .json()
            .await
            .map_err(|e| format!("the sandbox's members endpoint answered oddly: {e}"))
    }

    /// A member submitting the form of `activation_url` (the test endpoint
    /// `POST /_sandbox/activate`, not delivered): the callback URL Alipay
    /// would send the member's browser to.
    pub async fn activate(&self, activation_url: &str, phone: &str) -> Result<String, String> {
        let url = format!("http://{}/_sandbox/activate", self.addr);
        let answer: serde_json::Value = reqwest::Client::new()
            .post(url)
            .body(
                serde_json::json!({
                    "activation_url": activation_url,
                    "fields": {"OPEN_FORM_FIELD_MOBILE": phone},
                    "deliver": false,
                })
                .to_string(),
            )
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("the sandbox's activate endpoint failed: {e}"))?
            .json()
            .await
            .map_err(|e| format!("the sandbox's activate endpoint answered oddly: {e}"))?;
        answer["callback_url"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no callback_url in {answer}"))
    }

    /// Stop serving and wait until the data is flushed and closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Load or create the platform key pair in `dir`.
fn platform_key(dir: &Path) -> Result<(RsaKeyPair, rsa::RsaPrivateKey), SandboxError> {
    let dd = |reason: String| SandboxError::DataDir {
        dir: dir.display().to_string(),
        reason,
    };
    let private = dir.join("platform_private.pem");
    let public = dir.join("platform_public.pem");
    let key = if private.exists() {
        let text = std::fs::read_to_string(&private).map_err(|e| dd(e.to_string()))?;
        rsa::RsaPrivateKey::from_pkcs8_pem(&text)
            .map_err(|_| dd("platform_private.pem is not a PKCS#8 RSA key".into()))?
    } else {
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .map_err(|e| dd(format!("key generation failed: {e}")))?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| dd(e.to_string()))?;
        write_private(&private, pem.as_bytes()).map_err(|e| dd(e.to_string()))?;
        key
    };
    let pub_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| dd(e.to_string()))?;
    std::fs::write(&public, pub_pem).map_err(|e| dd(e.to_string()))?;
    let der = key.to_pkcs8_der().map_err(|e| dd(e.to_string()))?;
    let pair =
        RsaKeyPair::from_pkcs8(der.as_bytes()).map_err(|_| dd("platform key rejected".into()))?;
    Ok((pair, key))
}

/// A member's browser at a callback: one GET, its status and `Location`
/// (for benchmarks that play the members), given up after `patience`.
pub async fn deliver_callback(
    url: &str,
    patience: std::time::Duration,
) -> Result<(u16, Option<String>), String> {
    endpoints::deliver(url, patience).await
}

/// The platform key of a sandbox data directory (made if missing).
pub fn platform_rsa_key(dir: &Path) -> Result<rsa::RsaPrivateKey, SandboxError> {
    platform_key(dir).map(|(_, key)| key)
}

/// Write a private key readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Register (or re-register) an app's public key, or in certificate mode its
/// certificate, in a sandbox data directory.
pub fn register_app(
    store: &Store,
    app_id: &str,
    public_key: &str,
    cert_mode: bool,
) -> Result<(), SandboxError> {
    let Some(key) = verify::parse_app_key(public_key) else {
        return Err(SandboxError::AppKey {
            app_id: app_id.to_string(),
        });
    };
    if key.cert_sn.is_some() && !cert_mode {
        return Err(SandboxError::CertNeedsCertMode {
            app_id: app_id.to_string(),
        });
    }
    store::put(&store.apps, app_id, &public_key.trim().to_string())?;
    Ok(())
}

/// Bind, open the data directory and serve in the background.
pub async fn start(config: SandboxConfig) -> Result<RunningSandbox, SandboxError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| SandboxError::DataDir {
        dir: config.data_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let (platform, platform_rsa) = platform_key(&config.data_dir)?;
    let authority = if config.cert_mode {
        Some(certs::ensure(
            &config.data_dir,
            &platform_rsa,
            config.rotate_alipay_cert,
        )?)
    } else {
        None
    };
    let store = Store::open(&config.data_dir)?;
    for (app_id, key) in &config.apps {
        register_app(&store, app_id, key, config.cert_mode)?;
    }
    for (app_id, key) in &config.encrypt_keys {
        AesKey::parse(
            key,
            crate::alipay::KeySource::Inline("the --encrypt-key file"),
        )
        .map_err(|e| SandboxError::EncryptKey {
            app_id: app_id.clone(),
            reason: e.to_string(),
        })?;
        store::put(&store.encrypt_keys, app_id, &key.trim().to_string())?;
    }
    let mut encrypt_keys = std::collections::HashMap::new();
    for item in store.encrypt_keys.iter() {
        let (k, v) = item.map_err(store::StoreError::from)?;
        let app_id = String::from_utf8_lossy(&k).into_owned();
        let text: String = serde_json::from_slice(&v).unwrap_or_default();
        if let Ok(key) = AesKey::parse(&text, crate::alipay::KeySource::Inline("sandbox data")) {
            encrypt_keys.insert(app_id, key);
        }
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| SandboxError::Bind {
            addr: config.listen,
            reason: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| SandboxError::Bind {
        addr: config.listen,
        reason: e.to_string(),
    })?;
    let alipay_cert_sn = authority.as_ref().map(|a| a.alipay_cert_sn.clone());
    let shared = Arc::new(Shared {
        store,
        platform,
        authority,
        encrypt_keys,
        throttle: faults::Throttles::new(&config.faults),
        faults: config.faults.clone(),
        write_lock: Mutex::new(()),
        base_url: format!("http://{addr}"),
        app_keys: Default::default(),
    });
    let app = Router::new()
        .route("/gateway.do", post(gateway))
        .route("/images/{id}", get(image))
        .route("/_sandbox/activate", post(activate))
        .route("/_sandbox/members", post(enrol))
        .route("/_sandbox/cards", get(cards))
        .route("/_sandbox/cards/{biz_card_no}", get(card))
        .route("/_sandbox/benefits", get(benefits))
        .route("/_sandbox/spi/opencard", post(spi_open))
        // Uploads a little over the gateway's 5 MB reach its own size check
        // (40002 isv.invalid-file-size); anything larger is 413.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        crate::util::serve::serve(listener, app, rx).await;
        let _ = shared.store.flush().await;
    });
    Ok(RunningSandbox {
        addr,
        alipay_cert_sn,
        data_dir: config.data_dir,
        shutdown: Some(tx),
        task: Some(task),
    })
}
