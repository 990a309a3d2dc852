//! The gateway's protocol as the sandbox speaks it: reading a request (query
//! and form or multipart parameters merged, bounded in size and time), the
//! protocol checks (app, signature, timestamp, certificate SNs, encrypted
//! content), the signed envelope of every answer, and `POST /gateway.do`.

use super::*;

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

pub(crate) fn too_large() -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request bodies may be at most {MAX_BODY_BYTES} bytes"),
    )
        .into_response()
}

/// Why a request could not be read: a gateway failure, or a body over the limit.
pub(crate) enum Unreadable {
    Fail(Fail),
    TooLarge,
}

impl From<Fail> for Unreadable {
    fn from(f: Fail) -> Self {
        Unreadable::Fail(f)
    }
}

pub(crate) fn body_error(e: impl std::fmt::Display, what: &str) -> Unreadable {
    let text = e.to_string();
    if text.contains("length limit") || text.contains("too large") {
        Unreadable::TooLarge
    } else {
        Unreadable::Fail(Fail::invalid("isv.upload-fail", format!("{what}: {text}")))
    }
}

pub(crate) async fn read_request(req: Request) -> Result<Incoming, Unreadable> {
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
pub(crate) fn error_response(fail: Fail) -> Response {
    json_response(format!("{{\"error_response\":{}}}", fail.node()))
}

pub(crate) fn json_response(body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html;charset=utf-8"),
    );
    r
}

impl Shared {
    /// The platform key's RSA2 signature of `data`, base64 (what Alipay
    /// signs an SPI call to a merchant with).
    pub(crate) fn platform_sign(&self, data: &[u8]) -> Option<String> {
        let mut sig = vec![0u8; self.platform.public_modulus_len()];
        self.platform
            .sign(
                &lc::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                data,
                &mut sig,
            )
            .ok()?;
        Some(B64.encode(sig))
    }

    pub(crate) fn app_key(&self, app_id: &str) -> Option<verify::AppKey> {
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

pub(crate) fn sign_sha1(pair: &RsaKeyPair, data: &[u8]) -> Option<Vec<u8>> {
    use aws_lc_rs::encoding::AsDer;
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    let der = pair.as_der().ok()?;
    let key = rsa::RsaPrivateKey::from_pkcs8_der(der.as_ref()).ok()?;
    let signer = rsa::pkcs1v15::SigningKey::<sha1::Sha1>::new(key);
    Some(signer.sign_with_rng(&mut rand::thread_rng(), data).to_vec())
}

pub(crate) fn parse_timestamp(ts: &str) -> Option<i64> {
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
pub(crate) enum Rejection {
    /// An early failure, answered as an unsigned `error_response`.
    Early(Fail),
    /// Answered in the method's node, signed.
    InMethod(String, Framing, Fail),
}

/// Protocol checks, in the order a gateway can make them. Returns the method
/// and how to frame the answer; an encrypted `biz_content` is replaced by
/// its plaintext.
pub(crate) fn check_protocol(
    shared: &Shared,
    inc: &mut Incoming,
) -> Result<(String, Framing), Rejection> {
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
pub(crate) fn check_cert_sns(
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
pub(crate) fn decrypt_content(
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
pub(crate) async fn gateway(State(shared): State<Arc<Shared>>, req: Request) -> Response {
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

pub(crate) async fn answer(shared: &Shared, req: Request) -> Response {
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
