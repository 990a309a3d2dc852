//! Typed gateway errors. The executor decides "retry" or "give up" from
//! [`GatewayError::class`], never by parsing messages.

use std::fmt;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transient: retry with backoff (20000 isp.*, HTTP 5xx, timeouts, dropped connections).
    Retryable,
    /// Rate limited: retry, and slow down.
    Throttled,
    /// Retrying cannot help (40001, 40002, 40004, 40006, bad signatures, ...).
    Permanent,
}

impl ErrorClass {
    pub fn can_retry(self) -> bool {
        !matches!(self, ErrorClass::Permanent)
    }
}

/// A non-10000 answer from the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub method: String,
    pub code: String,
    pub msg: String,
    pub sub_code: Option<String>,
    pub sub_msg: Option<String>,
    /// False when the gateway sent the error without a `sign` (some early failures).
    pub signed: bool,
}

impl ApiError {
    /// Replace every occurrence of `secret` in the gateway's texts.
    pub fn redact(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        self.msg = self.msg.replace(secret, "<redacted>");
        if let Some(m) = self.sub_msg.as_mut() {
            *m = m.replace(secret, "<redacted>");
        }
    }

    pub fn class(&self) -> ErrorClass {
        let sub = self.sub_code.as_deref().unwrap_or("");
        if self.code == "40005" || sub.ends_with("-call-limited") {
            ErrorClass::Throttled
        } else if self.code == "20000" {
            ErrorClass::Retryable
        } else {
            ErrorClass::Permanent
        }
    }
}

/// A failure that concerns a merchant's relation with the app rather than
/// one call: every other call for that merchant would fail the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantBlock {
    /// `aop.invalid-app-auth-token`, `aop.app-auth-token-time-out`.
    Authorisation,
    /// `aop.invalid-app-auth-token-no-api`: the merchant has not granted the API.
    ApiNotGranted,
    /// `isv.insufficient-user-permissions`.
    UserPermission,
    /// 40006 `isv.insufficient-isv-permissions`: the app lacks the product.
    AppProduct,
}

impl MerchantBlock {
    /// What must happen, in words, for `merchant`.
    pub fn hint(self, merchant: &str) -> String {
        match self {
            MerchantBlock::Authorisation => format!(
                "merchant `{merchant}` must authorise the app again: its app_auth_token is invalid or expired (re-run the merchant's authorisation, then update the token)"
            ),
            MerchantBlock::ApiNotGranted => format!(
                "merchant `{merchant}` has not granted the app the membership-card APIs: ask them to authorise these APIs (or re-authorise with them included)"
            ),
            MerchantBlock::UserPermission => format!(
                "merchant `{merchant}` lacks the permission this call needs: the merchant must grant it to the app"
            ),
            MerchantBlock::AppProduct => format!(
                "the app lacks the product for merchant `{merchant}`'s calls (40006): sign the membership-card product for the app in the Alipay console"
            ),
        }
    }
}

impl MerchantBlock {
    /// The block a sub_code names, if it concerns the whole merchant.
    pub fn of(sub_code: &str) -> Option<MerchantBlock> {
        match sub_code {
            "aop.invalid-app-auth-token" | "aop.app-auth-token-time-out" => {
                Some(MerchantBlock::Authorisation)
            }
            "aop.invalid-app-auth-token-no-api" => Some(MerchantBlock::ApiNotGranted),
            "isv.insufficient-user-permissions" => Some(MerchantBlock::UserPermission),
            "isv.insufficient-isv-permissions" => Some(MerchantBlock::AppProduct),
            _ => None,
        }
    }
}

impl ApiError {
    /// Whether this failure stops every call for the merchant it was made for.
    pub fn merchant_block(&self) -> Option<MerchantBlock> {
        MerchantBlock::of(self.sub_code.as_deref()?)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed: {} {}", self.method, self.code, self.msg)?;
        match (&self.sub_code, &self.sub_msg) {
            (Some(c), Some(m)) => write!(f, " ({c}: {m})")?,
            (Some(c), None) => write!(f, " ({c})")?,
            (None, Some(m)) => write!(f, " ({m})")?,
            (None, None) => {}
        }
        if !self.signed {
            f.write_str(" [unsigned response]")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Api(Box<ApiError>),
    #[error("`{method}`: {what} talking to {endpoint}")]
    Transport {
        method: String,
        endpoint: String,
        /// "timed out", "connection refused", "connection dropped", ...
        what: String,
    },
    #[error("`{method}`: the gateway answered HTTP {status}")]
    HttpStatus { method: String, status: u16 },
    #[error(
        "`{method}`: the endpoint answered with a redirect (HTTP {status}) to `{location}`; redirects are never followed, since they would carry the signed request and app_auth_token elsewhere\nhint: set the endpoint to the gateway's own URL"
    )]
    Redirect {
        method: String,
        status: u16,
        location: String,
    },
    #[error(
        "`{method}`: the response signature does not verify against the Alipay public key from {key_source}\nhint: check that the key is Alipay's public key for this app (not your app public key), and that the endpoint is the gateway you expect"
    )]
    BadSignature { method: String, key_source: String },
    #[error(
        "`{method}`: the response is signed under Alipay certificate SN {seen}, but the Alipay public-key certificate from {configured_source} has SN {configured}: Alipay has rotated its certificate\nhint: download Alipay's new public-key certificate (alipayCertPublicKey_RSA2.crt) from the Alipay console, replace the configured one, and run again; the call may have taken effect, so a re-run of apply reconciles it"
    )]
    CertRotated {
        method: String,
        seen: String,
        configured: String,
        configured_source: String,
    },
    #[error(
        "`{method}`: the response is AES-encrypted but cannot be decrypted with the content-encryption key from {key_source}\nhint: check that the key is this app's current AES key in the Alipay console"
    )]
    Undecryptable { method: String, key_source: String },
    #[error("`{method}`: the successful response carries no signature; refusing to trust it")]
    Unsigned { method: String },
    #[error("`{method}`: malformed gateway response: {detail}")]
    Malformed { method: String, detail: String },
    #[error("`{method}`: {detail}")]
    Request { method: String, detail: String },
}

impl GatewayError {
    pub fn class(&self) -> ErrorClass {
        match self {
            GatewayError::Api(e) => e.class(),
            GatewayError::Transport { .. } => ErrorClass::Retryable,
            GatewayError::HttpStatus { status, .. } if *status == 429 => ErrorClass::Throttled,
            GatewayError::HttpStatus { status, .. } if *status >= 500 => ErrorClass::Retryable,
            _ => ErrorClass::Permanent,
        }
    }

    /// Whether the call may have taken effect although it failed: the
    /// request may have reached the gateway and no answer signed by Alipay
    /// said it did not.
    pub fn in_doubt(&self) -> bool {
        match self {
            GatewayError::Api(e) => !e.signed,
            GatewayError::Transport { what, .. } => what != "could not connect",
            GatewayError::HttpStatus { .. }
            | GatewayError::Redirect { .. }
            | GatewayError::BadSignature { .. }
            | GatewayError::CertRotated { .. }
            | GatewayError::Undecryptable { .. }
            | GatewayError::Unsigned { .. }
            | GatewayError::Malformed { .. } => true,
            GatewayError::Request { .. } => false,
        }
    }

    /// The gateway's code and sub_code, when the gateway answered at all.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            GatewayError::Api(e) => Some(e),
            _ => None,
        }
    }

    /// One short phrase on whether retrying could help, for messages.
    pub fn retry_hint(&self) -> &'static str {
        match self.class() {
            ErrorClass::Retryable => "a retry may succeed",
            ErrorClass::Throttled => "rate limited: a slower retry may succeed",
            ErrorClass::Permanent => "retrying will not help",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_tokens_are_redacted() {
        let mut e = ApiError {
            method: "m".into(),
            code: "40002".into(),
            msg: "Invalid Arguments".into(),
            sub_code: Some("isv.invalid-signature".into()),
            sub_msg: Some("checked: app_auth_token=202405BBsecret&app_id=1".into()),
            signed: true,
        };
        e.redact("202405BBsecret");
        assert_eq!(
            e.sub_msg.as_deref(),
            Some("checked: app_auth_token=<redacted>&app_id=1")
        );
        assert!(!e.to_string().contains("202405BBsecret"));
    }
}
