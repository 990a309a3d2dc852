//! A faithful emulator of the Alipay `gateway.do` (axum on tokio): the same
//! protocol (query + form/multipart parameters merged, absolute-form request
//! targets, RSA request signatures checked against the registered app key with
//! code of its own, responses signed with its platform key in the exact envelope
//! the official SDKs verify), the card APIs' business rules, persistence under
//! its data directory, and fault injection.
//!
//! It depends on nothing of the client side but the plain request/response data
//! types in `alipay::methods`.

mod business;
pub mod certs;
pub mod faults;
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

pub use faults::Faults;
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

/// The largest request body: the largest legal upload (5 MB) with room for
/// its multipart framing and parameters. Larger is answered 413 before it is
/// read.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// A client must send a request's body within this long (its head within
/// [`crate::util::serve::HEADER_TIMEOUT`]); a slow client is closed, not waited on.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A failed call, as the gateway reports it.
#[derive(Debug, Clone)]
pub(crate) struct Fail {
    pub code: &'static str,
    pub msg: &'static str,
    pub sub_code: String,
    pub sub_msg: String,
}

impl Fail {
    pub fn missing(sub_code: &str, sub_msg: &str) -> Self {
        Fail {
            code: "40001",
            msg: "Missing Required Arguments",
            sub_code: sub_code.into(),
            sub_msg: sub_msg.into(),
        }
    }
    pub fn invalid(sub_code: &str, sub_msg: impl Into<String>) -> Self {
        Fail {
            code: "40002",
            msg: "Invalid Arguments",
            sub_code: sub_code.into(),
            sub_msg: sub_msg.into(),
        }
    }
    pub fn business(sub_code: &str, sub_msg: impl Into<String>) -> Self {
        Fail {
            code: "40004",
            msg: "Business Failed",
            sub_code: sub_code.into(),
            sub_msg: sub_msg.into(),
        }
    }
    pub fn unavailable() -> Self {
        Fail {
            code: "20000",
            msg: "Service Currently Unavailable",
            sub_code: "isp.unknow-error".into(),
            sub_msg: "The system is busy.".into(),
        }
    }
    pub fn throttled() -> Self {
        Fail {
            code: "40005",
            msg: "Call Limited",
            sub_code: "isv.app-call-limited".into(),
            sub_msg: "Call frequency exceeds the limit for this app.".into(),
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Fail {
            code: "20000",
            msg: "Service Currently Unavailable",
            sub_code: "isp.unknow-error".into(),
            sub_msg: format!("sandbox storage error: {e}"),
        }
    }

    fn node(&self) -> String {
        serde_json::json!({
            "code": self.code, "msg": self.msg,
            "sub_code": self.sub_code, "sub_msg": self.sub_msg,
        })
        .to_string()
    }
}

impl From<store::StoreError> for Fail {
    fn from(e: store::StoreError) -> Self {
        Fail::internal(e)
    }
}

/// The merged request: query + body text params, and any file parts.
pub(crate) struct Incoming {
    pub params: Vec<(String, String)>,
    pub files: BTreeMap<String, Bytes>,
}

impl Incoming {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

fn too_large() -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request bodies may be at most {MAX_BODY_BYTES} bytes"),
    )
        .into_response()
}

/// Why a request could not be read: a gateway failure, or a body over the limit.
enum Unreadable {
    Fail(Fail),
    TooLarge,
}

impl From<Fail> for Unreadable {
    fn from(f: Fail) -> Self {
        Unreadable::Fail(f)
    }
}

fn body_error(e: impl std::fmt::Display, what: &str) -> Unreadable {
    let text = e.to_string();
    if text.contains("length limit") || text.contains("too large") {
        Unreadable::TooLarge
    } else {
        Unreadable::Fail(Fail::invalid("isv.upload-fail", format!("{what}: {text}")))
    }
}

async fn read_request(req: Request) -> Result<Incoming, Unreadable> {
    let mut params: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let mut files = BTreeMap::new();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let mut mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| body_error(e, "bad multipart body"))?;
        loop {
            let field = mp
                .next_field()
                .await
                .map_err(|e| body_error(e, "bad multipart body"))?;
            let Some(field) = field else { break };
            let name = field.name().unwrap_or_default().to_string();
            let is_file = field.file_name().is_some();
            let data = field
                .bytes()
                .await
                .map_err(|e| body_error(e, "bad multipart body"))?;
            if is_file {
                files.insert(name, data);
            } else {
                let text = String::from_utf8(data.to_vec()).map_err(|_| {
                    Fail::invalid("isv.invalid-charset", format!("part `{name}` is not UTF-8"))
                })?;
                params.push((name, text));
            }
        }
    } else {
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|e| body_error(e, "unreadable body"))?;
        if !body.is_empty() {
            params.extend(form_urlencoded::parse(&body).into_owned());
        }
    }
    Ok(Incoming { params, files })
}

/// An unsigned `error_response` (the early failures seen unsigned in real logs).
fn error_response(fail: Fail) -> Response {
    json_response(format!("{{\"error_response\":{}}}", fail.node()))
}

fn json_response(body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html;charset=utf-8"),
    );
    r
}

impl Shared {
    fn app_key(&self, app_id: &str) -> Option<verify::AppKey> {
        let cached = self.app_keys.read().ok()?.get(app_id).cloned();
        if cached.is_some() {
            return cached;
        }
        let key = store::get::<String>(&self.store.apps, app_id)
            .ok()
            .flatten()
            .and_then(|k| verify::parse_app_key(&k))?;
        if let Ok(mut keys) = self.app_keys.write() {
            keys.insert(app_id.to_string(), key.clone());
        }
        Some(key)
    }

    /// `{"<node>":<node>[,"alipay_cert_sn":"…"],"sign":"..."}`: compact, node
    /// first, `sign` last, the signature over exactly the node bytes as
    /// emitted. With AES the node is the JSON string of its ciphertext, and
    /// the signature covers that string, quotes included (gateway.md §5.3).
    fn signed(&self, method: &str, framing: &Framing, node: &str) -> Response {
        let encrypted;
        let node = match &framing.aes {
            Some(key) => {
                encrypted = serde_json::Value::String(key.encrypt(node)).to_string();
                encrypted.as_str()
            }
            None => node,
        };
        let mut sig = vec![0u8; self.platform.public_modulus_len()];
        let ok = if framing.sign_type == "RSA" {
            // aws-lc-rs does not sign SHA-1; fall back to the rsa crate for legacy apps.
            sign_sha1(&self.platform, node.as_bytes()).map(|s| sig = s)
        } else {
            self.platform
                .sign(
                    &lc::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    node.as_bytes(),
                    &mut sig,
                )
                .ok()
        };
        if ok.is_none() {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let name = format!("{}_response", method.replace('.', "_"));
        let cert_sn = framing
            .alipay_cert_sn
            .as_deref()
            .map(|sn| format!(",\"alipay_cert_sn\":\"{sn}\""))
            .unwrap_or_default();
        json_response(format!(
            "{{\"{name}\":{node}{cert_sn},\"sign\":\"{}\"}}",
            B64.encode(&sig)
        ))
    }
}

fn sign_sha1(pair: &RsaKeyPair, data: &[u8]) -> Option<Vec<u8>> {
    use aws_lc_rs::encoding::AsDer;
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    let der = pair.as_der().ok()?;
    let key = rsa::RsaPrivateKey::from_pkcs8_der(der.as_ref()).ok()?;
    let signer = rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(key);
    Some(signer.sign_with_rng(&mut rand::thread_rng(), data).to_vec())
}

fn parse_timestamp(ts: &str) -> Option<i64> {
    let naive = NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S").ok()?;
    if ts.len() != 19 {
        return None;
    }
    let cst = FixedOffset::east_opt(8 * 3600)?;
    Some(naive.and_local_timezone(cst).single()?.timestamp())
}

/// How answers to one request are framed: the sign type, in certificate
/// mode the Alipay certificate's SN, and the app's AES key when the request
/// came encrypted (business answers then go encrypted).
pub(crate) struct Framing {
    sign_type: String,
    alipay_cert_sn: Option<String>,
    aes: Option<AesKey>,
}

impl Framing {
    /// The framing of a gateway-level answer: never encrypted.
    fn plain(&self) -> Framing {
        Framing {
            sign_type: self.sign_type.clone(),
            alipay_cert_sn: self.alipay_cert_sn.clone(),
            aes: None,
        }
    }
}

/// Why a request was refused before its method ran.
enum Rejection {
    /// An early failure, answered as an unsigned `error_response`.
    Early(Fail),
    /// Answered in the method's node, signed.
    InMethod(String, Framing, Fail),
}

/// Protocol checks, in the order a gateway can make them. Returns the method
/// and how to frame the answer; an encrypted `biz_content` is replaced by
/// its plaintext.
fn check_protocol(shared: &Shared, inc: &mut Incoming) -> Result<(String, Framing), Rejection> {
    let Some(method) = inc.get("method").map(str::to_string) else {
        return Err(Rejection::Early(Fail::missing(
            "isv.missing-method",
            "method is required",
        )));
    };
    let Some(app_id) = inc.get("app_id") else {
        return Err(Rejection::Early(Fail::missing(
            "isv.missing-app-id",
            "app_id is required",
        )));
    };
    let Some(app_key) = shared.app_key(app_id) else {
        return Err(Rejection::Early(Fail::invalid(
            "isv.invalid-app-id",
            format!("app_id {app_id} is not registered with this gateway"),
        )));
    };
    let sign_type = inc.get("sign_type").unwrap_or("RSA2").to_string();
    let mut framing = Framing {
        sign_type: if sign_type == "RSA" { "RSA" } else { "RSA2" }.to_string(),
        alipay_cert_sn: match (&app_key.cert_sn, &shared.authority) {
            (Some(_), Some(a)) => Some(a.alipay_cert_sn.clone()),
            _ => None,
        },
        aes: None,
    };
    let fail = |f: Fail| Rejection::InMethod(method.clone(), framing.plain(), f);
    let Some(sign) = inc.get("sign") else {
        return Err(fail(Fail::missing(
            "isv.missing-signature",
            "sign is required",
        )));
    };
    if inc.get("sign_type").is_none() {
        return Err(fail(Fail::missing(
            "isv.missing-signature-type",
            "sign_type is required",
        )));
    }
    if sign_type != "RSA2" && sign_type != "RSA" {
        return Err(fail(Fail::invalid(
            "isv.invalid-signature-type",
            format!("sign_type {sign_type} is not supported"),
        )));
    }
    let Some(ts) = inc.get("timestamp") else {
        return Err(fail(Fail::missing(
            "isv.missing-timestamp",
            "timestamp is required",
        )));
    };
    match parse_timestamp(ts) {
        None => {
            return Err(fail(Fail::invalid(
                "isv.invalid-timestamp",
                format!("timestamp `{ts}` is not yyyy-MM-dd HH:mm:ss"),
            )));
        }
        Some(t) if (t - Utc::now().timestamp()).abs() > TIMESTAMP_SKEW_MINUTES * 60 => {
            return Err(fail(Fail::invalid(
                "isv.invalid-timestamp",
                format!(
                    "timestamp `{ts}` is more than {TIMESTAMP_SKEW_MINUTES} minutes from gateway time (UTC+8)"
                ),
            )));
        }
        Some(_) => {}
    }
    if inc.get("version").is_none() {
        return Err(fail(Fail::missing(
            "isv.missing-version",
            "version is required",
        )));
    }
    // The reference marks `charset` required (it decides the bytes that are
    // signed) and `format` optional (JSON is the only one).
    let Some(charset) = inc.get("charset") else {
        return Err(fail(Fail::invalid(
            "isv.invalid-charset",
            "charset is required (utf-8)",
        )));
    };
    if !charset.eq_ignore_ascii_case("utf-8") {
        return Err(fail(Fail::invalid(
            "isv.invalid-charset",
            format!("charset {charset} is not supported by this gateway (use utf-8)"),
        )));
    }
    if let Some(format) = inc.get("format")
        && !format.eq_ignore_ascii_case("json")
    {
        return Err(fail(Fail::invalid(
            "isv.invalid-format",
            format!("format {format} is not supported"),
        )));
    }
    if let (Some(expected), Some(authority)) = (&app_key.cert_sn, &shared.authority) {
        check_cert_sns(inc, app_id, expected, authority).map_err(fail)?;
    }
    let content = verify::signed_content(&inc.params);
    if !verify::verify(&app_key, &sign_type, &content, sign) {
        return Err(fail(Fail::invalid(
            "isv.invalid-signature",
            format!(
                "invalid signature: the request was not signed by the private key matching the public key registered for app_id {}",
                inc.get("app_id").unwrap_or_default()
            ),
        )));
    }
    if !business::knows(&method) {
        return Err(fail(Fail::invalid(
            "isv.invalid-method",
            format!("method {method} does not exist"),
        )));
    }
    let app_id = app_id.to_string();
    let aes = decrypt_content(shared, inc, &app_id).map_err(fail)?;
    framing.aes = aes;
    Ok((method, framing))
}

/// Certificate mode: the request must name the app's registered certificate
/// and the sandbox's root (40001 when absent, 40002 when wrong).
fn check_cert_sns(
    inc: &Incoming,
    app_id: &str,
    expected: &str,
    authority: &certs::Authority,
) -> Result<(), Fail> {
    match inc.get("app_cert_sn") {
        None => {
            return Err(Fail::missing(
                "isv.missing-app-cert-sn",
                &format!(
                    "app_cert_sn is required: app_id {app_id} is in public-key-certificate mode"
                ),
            ));
        }
        Some(sn) if sn != expected => {
            return Err(Fail::invalid(
                "isv.invalid-app-cert-sn",
                format!(
                    "app_cert_sn {} does not match the app certificate registered for app_id {app_id}",
                    crate::util::text::clip(sn, 64)
                ),
            ));
        }
        Some(_) => {}
    }
    match inc.get("alipay_root_cert_sn") {
        None => Err(Fail::missing(
            "isv.missing-root-cert-sn",
            "alipay_root_cert_sn is required in public-key-certificate mode",
        )),
        Some(sn) if !authority.accepts_root_sn(sn) => Err(Fail::invalid(
            "isv.invalid-root-cert-sn",
            format!(
                "alipay_root_cert_sn {} does not name this gateway's root certificate",
                crate::util::text::clip(sn, 200)
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// AES content encryption, after the signature (which covers the
/// ciphertext) verified: decrypt `biz_content` in place. An app with
/// encryption on must encrypt; one without cannot.
fn decrypt_content(
    shared: &Shared,
    inc: &mut Incoming,
    app_id: &str,
) -> Result<Option<AesKey>, Fail> {
    let key = shared.encrypt_keys.get(app_id);
    match (inc.get("encrypt_type"), key) {
        (None, None) => Ok(None),
        (None, Some(_)) if inc.get("biz_content").is_none() => Ok(None),
        (None, Some(_)) => Err(Fail::invalid(
            "isv.invalid-encrypt",
            format!(
                "app_id {app_id} has AES content encryption switched on: biz_content must be encrypted (encrypt_type=AES)"
            ),
        )),
        (Some(t), _) if t != "AES" => Err(Fail::invalid(
            "isv.invalid-encrypt-type",
            format!("encrypt_type {t} is not supported (AES)"),
        )),
        (Some(_), None) => Err(Fail::invalid(
            "isv.invalid-encrypt",
            format!("app_id {app_id} has no AES content-encryption key set"),
        )),
        (Some(_), Some(key)) => {
            if let Some(cipher) = inc.get("biz_content") {
                let plain = key.decrypt(cipher).ok_or_else(|| {
                    Fail::invalid(
                        "isv.decryption-error-not-valid-encrypt-key",
                        "biz_content cannot be decrypted with this app's AES key",
                    )
                })?;
                for (k, v) in inc.params.iter_mut() {
                    if k == "biz_content" {
                        *v = plain.clone();
                    }
                }
            }
            Ok(Some(key.clone()))
        }
    }
}

/// `POST /gateway.do`. With injected latency, the answer leaves that long after
/// the request arrived: the sandbox's own work happens within the latency, as a
/// remote gateway's does, so the latency is what a client sees per call.
async fn gateway(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let answer_at = std::time::Instant::now() + shared.faults.latency;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    let response = match tokio::time::timeout(BODY_TIMEOUT, answer(&shared, req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request body too slow").into_response(),
    };
    faults::sleep_until(answer_at).await;
    response
}

async fn answer(shared: &Shared, req: Request) -> Response {
    let faults = &shared.faults;
    if faults.roll(faults.http502_rate) {
        return (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response();
    }
    let mut inc = match read_request(req).await {
        Ok(inc) => inc,
        Err(Unreadable::Fail(fail)) => return error_response(fail),
        Err(Unreadable::TooLarge) => return too_large(),
    };
    let (method, framing) = match check_protocol(shared, &mut inc) {
        Ok(v) => v,
        Err(Rejection::Early(fail)) => return error_response(fail),
        Err(Rejection::InMethod(method, framing, fail)) => {
            return shared.signed(&method, &framing, &fail.node());
        }
    };
    if let Some(token) = inc.get("app_auth_token")
        && let Some((_, fault)) = faults.merchant_faults.iter().find(|(t, _)| t == token)
    {
        let (code, msg, sub_code, sub_msg) = fault.answer();
        let fail = Fail {
            code,
            msg,
            sub_code: sub_code.into(),
            sub_msg: sub_msg.into(),
        };
        return shared.signed(&method, &framing.plain(), &fail.node());
    }
    if let Err(sub_code) = shared.throttle.admit(inc.get("app_auth_token"), &method) {
        let mut fail = Fail::throttled();
        if sub_code == "isv.method-call-limited" {
            fail.sub_code = sub_code.into();
            fail.sub_msg = format!("Call frequency of {method} exceeds its limit.");
        }
        return shared.signed(&method, &framing.plain(), &fail.node());
    }
    if faults.roll(faults.error_rate) {
        return shared.signed(&method, &framing.plain(), &Fail::unavailable().node());
    }
    let node = match business::dispatch(shared, &method, &inc).await {
        Ok(node) => node,
        Err(fail) => fail.node(),
    };
    if faults.roll(faults.drop_rate) {
        // The call took effect; the answer is lost on the way (the ambiguous case
        // idempotency keys exist for). Abort the body mid-flight.
        return faults::dropped();
    }
    shared.signed(&method, &framing, &node)
}

/// A member activating a card, played by the sandbox (a test endpoint, not
/// Alipay's): `POST /_sandbox/activate` with
/// `{"activation_url": "<decoded apply_card_url>", "fields": {"OPEN_FORM_FIELD_MOBILE": "..."},
/// "user_id": "2088..." (optional: a new member otherwise)}`. The member
/// "submits" the template's form; the answer is where Alipay would send the
/// member's browser: `{"callback_url": "<callback>?app_id=..&template_id=..&request_id=..&auth_code=..[&out_string=..]",
/// "user_id": "...", "request_id": "..."}`.
async fn activate(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Ask {
        activation_url: String,
        #[serde(default)]
        fields: BTreeMap<String, String>,
        #[serde(default)]
        user_id: Option<String>,
        /// Send the member's browser to the callback (a GET, redirects not
        /// followed) and report what it answered; `false` only hands back
        /// the URL (a test then calls it, repeats it or drops it).
        #[serde(default = "yes")]
        deliver: bool,
    }
    fn yes() -> bool {
        true
    }
    let refuse = |why: String| (StatusCode::BAD_REQUEST, why).into_response();
    let ask: Ask = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return refuse(format!("not the expected JSON: {e}")),
    };
    let Ok(url) = url::Url::parse(&ask.activation_url) else {
        return refuse("activation_url is not a URL".into());
    };
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let (Some(app), Some(template_id)) = (q.get("app_id"), q.get("template_id")) else {
        return refuse("activation_url has no app_id or template_id".into());
    };
    let Some(callback) = q.get("callback") else {
        return refuse("the activation URL has no callback: nothing to send the member to".into());
    };
    let submitted = {
        let _guard = shared.write_lock.lock().await;
        business::members::submit(
            &shared.store,
            app,
            template_id,
            ask.user_id.as_deref(),
            &ask.fields,
        )
    };
    let (user_id, request_id, code) = match submitted {
        Ok(v) => v,
        Err(f) => return refuse(format!("{}: {}", f.sub_code, f.sub_msg)),
    };
    if let Err(e) = shared.store.flush().await {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let Ok(mut target) = url::Url::parse(callback) else {
        return refuse("the callback is not a URL".into());
    };
    {
        let mut pairs = target.query_pairs_mut();
        pairs.append_pair("app_id", app);
        pairs.append_pair("template_id", template_id);
        pairs.append_pair("request_id", &request_id);
        pairs.append_pair("auth_code", &code);
        if let Some(o) = q.get("out_string") {
            pairs.append_pair("out_string", o);
        }
    }
    let mut answer = serde_json::json!({
        "callback_url": target.as_str(),
        "user_id": user_id,
        "request_id": request_id,
    });
    if ask.deliver {
        match deliver(target.as_str()).await {
            Ok((status, location)) => {
                answer["callback_status"] = status.into();
                answer["location"] = location.map_or(serde_json::Value::Null, Into::into);
            }
            Err(e) => {
                answer["callback_error"] = e.into();
                return (
                    StatusCode::BAD_GATEWAY,
                    [(header::CONTENT_TYPE, "application/json")],
                    answer.to_string(),
                )
                    .into_response();
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}

/// The cards held (a test endpoint): `GET /_sandbox/cards` answers
/// `{"open": N, "deleted": N, "templates": {"<template_id>": N}}`.
async fn cards(State(shared): State<Arc<Shared>>) -> Response {
    match business::card_counts(&shared.store) {
        Ok((open, deleted, per)) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"open": open, "deleted": deleted, "templates": per}).to_string(),
        )
            .into_response(),
        Err(f) => (StatusCode::INTERNAL_SERVER_ERROR, f.sub_msg).into_response(),
    }
}

/// Members who authorised an app before (a test endpoint): `POST
/// /_sandbox/members` with `{"app_id": "...", "count": N}` (N at most
/// 100,000) answers `[{"user_id", "auth_token", "refresh_token"}, ...]`: the
/// rows of a merchant's existing book, for `cards open`.
async fn enrol(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Ask {
        app_id: String,
        count: usize,
    }
    let ask: Ask = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not the expected JSON: {e}"),
            )
                .into_response();
        }
    };
    if ask.count > 100_000 {
        return (StatusCode::BAD_REQUEST, "at most 100,000 members at once").into_response();
    }
    let made = {
        let _guard = shared.write_lock.lock().await;
        business::members::enrol(&shared.store, &ask.app_id, ask.count)
    };
    let made = match made {
        Ok(m) => m,
        Err(f) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("{}: {}", f.sub_code, f.sub_msg),
            )
                .into_response();
        }
    };
    if let Err(e) = shared.store.flush().await {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let list: Vec<serde_json::Value> = made
        .into_iter()
        .map(|(u, a, r)| serde_json::json!({"user_id": u, "auth_token": a, "refresh_token": r}))
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Array(list).to_string(),
    )
        .into_response()
}

/// The member's browser arriving at the merchant's callback: one GET, the
/// answer's status and `Location` (a redirect is the member's next page).
async fn deliver(url: &str) -> Result<(u16, Option<String>), String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("the callback could not be reached: {}", e.without_url()))?;
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((resp.status().as_u16(), location))
}

async fn image(State(shared): State<Arc<Shared>>, UrlPath(id): UrlPath<String>) -> Response {
    match shared.store.image_bytes.get(id.as_bytes()) {
        Ok(Some(bytes)) => {
            let mime = imagesize::image_type(&bytes)
                .map(business::mime_of)
                .unwrap_or("application/octet-stream");
            ([(header::CONTENT_TYPE, mime)], bytes.to_vec()).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
