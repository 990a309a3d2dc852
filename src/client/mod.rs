//! The signed gateway client (the one place that speaks HTTP to Alipay): builds the common parameters, signs, encodes (form or
//! multipart), sends over a pooled reqwest client, and opens the signed envelope.
//!
//! 1. merge common params + API params (+ `biz_content`) into one sorted map;
//! 2. sign the string-to-sign with the app key;
//! 3. common params (and `sign`) go in the query string, the rest in the body,
//!    as the official Python SDK places them; file parts are never signed;
//! 4. the response node is verified against the Alipay public key before any
//!    field of it is believed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

pub use crate::alipay::Call;
use crate::alipay::aes::AesKey;
use crate::alipay::cert::CertMode;
use crate::alipay::envelope;
use crate::alipay::error::GatewayError;
use crate::alipay::keys::{AlipayPublicKey, AppPrivateKey};
pub use crate::alipay::methods::{FilePart, biz_json};
use crate::alipay::sign::{SignType, string_to_sign};
use crate::gateway::{Answer, Gateway, Scope};

/// The largest response body read: far above any card API answer (a
/// batchquery page of 20 templates is a few KB; an activation URL at most 100 KB).
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The protocol parameters that travel in the query string (PY placement).
const QUERY_PARAMS: &[&str] = &[
    "app_id",
    "method",
    "format",
    "charset",
    "sign_type",
    "sign",
    "timestamp",
    "version",
    "app_auth_token",
    "auth_token",
    "notify_url",
    "return_url",
    "encrypt_type",
    "app_cert_sn",
    "alipay_root_cert_sn",
];

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub endpoint: Url,
    pub app_id: String,
    pub sign_type: SignType,
    pub private_key: Arc<AppPrivateKey>,
    /// In certificate mode, taken from the Alipay public-key certificate.
    pub alipay_public_key: Arc<AlipayPublicKey>,
    /// Public-key-certificate mode: the SNs every request carries and the
    /// certificate responses must be signed under.
    pub cert: Option<Arc<CertMode>>,
    /// AES content encryption: `biz_content` goes encrypted, responses come back so.
    pub encrypt_key: Option<Arc<AesKey>>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "refusing plain http endpoint `{0}`: only loopback addresses may use http\nhint: use https://, or `sandbox` for the embedded sandbox"
    )]
    PlainHttp(String),
    #[error("endpoint `{0}` is not an http(s) URL")]
    Scheme(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// Is this URL allowed? https anywhere; http only to loopback.
pub fn check_endpoint(url: &Url) -> Result<(), ConfigError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(ConfigError::PlainHttp(url.to_string()))
            }
        }
        _ => Err(ConfigError::Scheme(url.to_string())),
    }
}

/// The timestamp parameter: China time (UTC+8), whatever the host's zone.
pub fn timestamp_now() -> String {
    crate::alipay::clock::now()
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    config: Arc<GatewayConfig>,
    /// Slots for calls in flight, if limited (see [`Client::with_max_in_flight`]).
    in_flight: Option<Arc<tokio::sync::Semaphore>>,
}

impl Client {
    pub fn new(config: GatewayConfig) -> Result<Self, ConfigError> {
        check_endpoint(&config.endpoint)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            // A redirect would carry the signed query (app_auth_token
            // included) and the body to another origin: never follow one,
            // never send a Referer.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .user_agent(concat!("cardform/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Http(e.to_string()))?;
        Ok(Self {
            http,
            config: Arc::new(config),
            in_flight: None,
        })
    }

    /// Allow at most `n` calls in flight at once (shared by every clone). A
    /// call is built and signed before it waits for a slot and holds the slot
    /// only while on the wire, so one call's signing overlaps the others'
    /// round trips.
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.in_flight = Some(Arc::new(tokio::sync::Semaphore::new(n.max(1))));
        self
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Build the signed parameter set for a call.
    pub fn signed_params(&self, call: &Call) -> BTreeMap<String, String> {
        let c = &self.config;
        let mut params = BTreeMap::new();
        params.insert("app_id".into(), c.app_id.clone());
        params.insert("method".into(), call.method.clone());
        params.insert("format".into(), "JSON".into());
        params.insert("charset".into(), "utf-8".into());
        params.insert("sign_type".into(), c.sign_type.as_str().into());
        params.insert("timestamp".into(), timestamp_now());
        params.insert("version".into(), "1.0".into());
        if let Some(token) = &call.app_auth_token {
            params.insert("app_auth_token".into(), token.expose().to_string());
        }
        if let Some(token) = &call.auth_token {
            params.insert("auth_token".into(), token.expose().to_string());
        }
        if let Some(cert) = &c.cert {
            params.insert("app_cert_sn".into(), cert.app_cert_sn.clone());
            params.insert(
                "alipay_root_cert_sn".into(),
                cert.alipay_root_cert_sn.clone(),
            );
        }
        if let Some(biz) = &call.biz_content {
            // Encrypt, then sign the ciphertext (gateway.md §9).
            match &c.encrypt_key {
                Some(key) => {
                    params.insert("biz_content".into(), key.encrypt(biz));
                    params.insert("encrypt_type".into(), "AES".into());
                }
                None => {
                    params.insert("biz_content".into(), biz.clone());
                }
            }
        }
        for (k, v) in &call.params {
            params.insert(k.clone(), v.clone());
        }
        // Empty values are neither signed nor sent (gateway.md §4.1 step 3).
        params.retain(|k, v| !v.is_empty() && k != "sign");
        let sign_type = params
            .get("sign_type")
            .and_then(|s| s.parse().ok())
            .unwrap_or(c.sign_type);
        let sign = c
            .private_key
            .sign(sign_type, string_to_sign(&params).as_bytes());
        params.insert("sign".into(), sign);
        params
    }

    /// Send one call and return the verified response node.
    pub async fn execute(&self, call: &Call) -> Result<Map<String, Value>, GatewayError> {
        let method = call.method.as_str();
        let params = self.signed_params(call);
        let mut url = self.config.endpoint.clone();
        let mut multipart = reqwest::multipart::Form::new();
        let form_body = {
            let mut body = form_urlencoded::Serializer::new(String::new());
            let mut query = url.query_pairs_mut();
            for (k, v) in &params {
                if QUERY_PARAMS.contains(&k.as_str()) {
                    query.append_pair(k, v);
                } else if call.files.is_empty() {
                    body.append_pair(k, v);
                } else {
                    multipart = multipart.text(k.clone(), v.clone());
                }
            }
            body.finish()
        };
        let request = self.http.post(url);
        let request = if call.files.is_empty() {
            request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded;charset=utf-8",
                )
                .body(form_body)
        } else {
            for f in &call.files {
                let part = reqwest::multipart::Part::bytes(f.bytes.clone())
                    .file_name(f.filename.clone())
                    .mime_str(&f.mime)
                    .map_err(|_| GatewayError::Request {
                        method: method.into(),
                        detail: format!("invalid MIME type `{}`", f.mime),
                    })?;
                multipart = multipart.part(f.field.clone(), part);
            }
            request.multipart(multipart)
        };
        let slot = match &self.in_flight {
            Some(slots) => Some(
                slots
                    .acquire()
                    .await
                    .expect("bug: the slots are never closed"),
            ),
            None => None,
        };
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(method, &e))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .map(|l| crate::util::text::clip(l, 200))
                .unwrap_or_else(|| "(no Location)".into());
            return Err(GatewayError::Redirect {
                method: method.into(),
                status: status.as_u16(),
                location,
            });
        }
        if !status.is_success() {
            return Err(GatewayError::HttpStatus {
                method: method.into(),
                status: status.as_u16(),
            });
        }
        let bytes = self.read_body(method, response).await?;
        drop(slot);
        let text = std::str::from_utf8(&bytes).map_err(|_| GatewayError::Malformed {
            method: method.into(),
            detail: "the body is not UTF-8".into(),
        })?;
        let sign_type = params
            .get("sign_type")
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.config.sign_type);
        let verifier = envelope::Verifier {
            key: &self.config.alipay_public_key,
            sign_type,
            cert: self.config.cert.as_deref(),
            aes: self.config.encrypt_key.as_deref(),
        };
        envelope::open(method, text, verifier).map_err(|e| match e {
            // The real gateway echoes the string it checked (app_auth_token
            // included) in some sub_msgs: never let a token reach a message.
            GatewayError::Api(mut api) => {
                for token in [&call.app_auth_token, &call.auth_token]
                    .into_iter()
                    .flatten()
                {
                    api.redact(token.expose());
                }
                GatewayError::Api(api)
            }
            e => e,
        })
    }

    /// The response body, at most [`MAX_RESPONSE_BYTES`]: a gateway answer
    /// never takes unbounded memory.
    async fn read_body(
        &self,
        method: &str,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, GatewayError> {
        let too_big = || GatewayError::Malformed {
            method: method.into(),
            detail: format!("the response is larger than {MAX_RESPONSE_BYTES} bytes"),
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport(method, &e))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport(&self, method: &str, e: &reqwest::Error) -> GatewayError {
        let what = if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "could not connect".to_string()
        } else if e.is_body() || e.is_decode() {
            "the connection dropped while reading the response".to_string()
        } else if e.is_request() {
            "the connection dropped while sending the request".to_string()
        } else {
            "transport error".to_string()
        };
        let mut endpoint = self.config.endpoint.clone();
        endpoint.set_query(None);
        GatewayError::Transport {
            method: method.into(),
            endpoint: endpoint.to_string(),
            what,
        }
    }
}

/// The production gateway: every call signed with the app's key and every
/// answer verified with Alipay's.
impl Gateway for Client {
    fn app_id(&self) -> &str {
        &self.config().app_id
    }

    fn send<'a>(&'a self, _at: &'a Scope, call: &'a Call) -> Answer<'a, Map<String, Value>> {
        Box::pin(self.execute(call))
    }
}
