//! The gateway seam: what cardform asks of Alipay, one typed call per method,
//! behind a trait. It owns the shape of the conversation (who is asking, which
//! method, which wire types) and must never know about resources, plans or
//! state: the provider maps the domain onto these calls.
//!
//! - [`Gateway`]: the typed calls (writes, and the reads drift and import need:
//!   template.query and batchquery). [`Client`] is the production
//!   implementation: signed, verified, over reqwest.
//! - [`governor::Governor`]: a [`Gateway`] wrapping another, adding retry with
//!   backoff and jitter and throttle pauses keyed by (app_id, merchant), so a
//!   throttled merchant slows only itself. Its clock and randomness are handed
//!   in, so its behaviour is testable without sleeping.
//!
//! The global limit on calls in flight stays in the transport (see
//! `Client::with_max_in_flight`): a call is built and signed before it waits
//! for a slot, which only the transport can arrange.

pub mod governor;
pub mod limiter;

use futures_util::future::BoxFuture;
use serde_json::Value;

use crate::alipay::client::decode_checked;
use crate::alipay::methods::*;
use crate::alipay::{Call, Client, GatewayError};
use crate::model::Address;
use crate::secret::Secret;

/// The answer to one call.
pub type Answer<'a, T> = BoxFuture<'a, Result<T, GatewayError>>;

/// Who a call is made for: a merchant (its app_auth_token, when the app acts
/// for it) and, for messages only, the resource it serves.
#[derive(Debug, Clone)]
pub struct Scope {
    pub merchant: String,
    pub token: Option<Secret>,
    /// The resource the call is for, if any: named in retry messages.
    pub subject: Option<Address>,
}

impl Scope {
    pub fn merchant(merchant: &str, token: Option<&Secret>) -> Self {
        Scope {
            merchant: merchant.to_string(),
            token: token.cloned(),
            subject: None,
        }
    }

    pub fn about(mut self, subject: &Address) -> Self {
        self.subject = Some(subject.clone());
        self
    }
}

/// The gateway's methods, typed. Implementations answer one call each;
/// retrying is the governor's business.
pub trait Gateway: Send + Sync {
    /// The app every call is signed as.
    fn app_id(&self) -> &str;

    fn upload_image<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a ImageUploadRequest,
    ) -> Answer<'a, ImageUploadResponse>;

    /// template.create, sent exactly as journalled (the request's JSON), so a
    /// replay after a crash is byte-for-byte the same request.
    fn create_template<'a>(
        &'a self,
        at: &'a Scope,
        journalled: &'a Value,
    ) -> Answer<'a, TemplateIdResponse>;

    fn modify_template<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a TemplateModifyRequest,
    ) -> Answer<'a, TemplateIdResponse>;

    fn query_template<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a TemplateQueryRequest,
    ) -> Answer<'a, TemplateQueryResponse>;

    fn list_templates<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a TemplateBatchQueryRequest,
    ) -> Answer<'a, TemplateBatchQueryResponse>;

    fn set_form<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a FormTemplateSetRequest,
    ) -> Answer<'a, EmptyResponse>;

    fn apply_url<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a ActivateUrlApplyRequest,
    ) -> Answer<'a, ActivateUrlApplyResponse>;

    /// alipay.system.oauth.token: a member's auth_code or refresh token for
    /// an access token. A code is single-use: never retried blindly.
    fn oauth_token<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a OauthTokenRequest,
    ) -> Answer<'a, OauthTokenResponse>;

    /// activateform.query, as the member (`auth_token`).
    fn query_form<'a>(
        &'a self,
        at: &'a Scope,
        member: &'a Secret,
        req: &'a ActivateFormQueryRequest,
    ) -> Answer<'a, ActivateFormQueryResponse>;

    /// card.open, as the member (`auth_token`); idempotent per `out_serial_no`.
    fn open_card<'a>(
        &'a self,
        at: &'a Scope,
        member: &'a Secret,
        req: &'a CardOpenRequest,
    ) -> Answer<'a, CardOpenResponse>;

    fn update_card<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a CardUpdateRequest,
    ) -> Answer<'a, CardUpdateResponse>;

    fn query_card<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a CardQueryRequest,
    ) -> Answer<'a, CardQueryResponse>;

    fn delete_card<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a CardDeleteRequest,
    ) -> Answer<'a, CardDeleteResponse>;
}

impl Client {
    fn typed<'a, R: ApiRequest + Sync>(
        &'a self,
        at: &'a Scope,
        req: &'a R,
    ) -> Answer<'a, R::Response>
    where
        R::Response: Send,
    {
        Box::pin(self.call(req, at.token.as_ref()))
    }

    fn as_member<'a, R: ApiRequest + Sync>(
        &'a self,
        at: &'a Scope,
        member: &'a Secret,
        req: &'a R,
    ) -> Answer<'a, R::Response>
    where
        R::Response: Send,
    {
        Box::pin(async move {
            let mut call = crate::alipay::client::call_for(req, at.token.clone());
            call.auth_token = Some(member.clone());
            let node = self.execute(&call).await?;
            decode_checked::<R>(node)
        })
    }
}

/// The production gateway: every call signed with the app's key and every
/// answer verified with Alipay's.
impl Gateway for Client {
    fn app_id(&self) -> &str {
        &self.config().app_id
    }

    fn upload_image<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a ImageUploadRequest,
    ) -> Answer<'a, ImageUploadResponse> {
        self.typed(at, req)
    }

    fn create_template<'a>(
        &'a self,
        at: &'a Scope,
        journalled: &'a Value,
    ) -> Answer<'a, TemplateIdResponse> {
        Box::pin(async move {
            let call = Call {
                method: TemplateCreateRequest::METHOD.into(),
                biz_content: Some(journalled.to_string()),
                app_auth_token: at.token.clone(),
                ..Call::default()
            };
            let node = self.execute(&call).await?;
            decode_checked::<TemplateCreateRequest>(node)
        })
    }

    fn modify_template<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a TemplateModifyRequest,
    ) -> Answer<'a, TemplateIdResponse> {
        self.typed(at, req)
    }

    fn query_template<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a TemplateQueryRequest,
    ) -> Answer<'a, TemplateQueryResponse> {
        self.typed(at, req)
    }

    fn list_templates<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a TemplateBatchQueryRequest,
    ) -> Answer<'a, TemplateBatchQueryResponse> {
        self.typed(at, req)
    }

    fn set_form<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a FormTemplateSetRequest,
    ) -> Answer<'a, EmptyResponse> {
        self.typed(at, req)
    }

    fn apply_url<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a ActivateUrlApplyRequest,
    ) -> Answer<'a, ActivateUrlApplyResponse> {
        self.typed(at, req)
    }

    fn oauth_token<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a OauthTokenRequest,
    ) -> Answer<'a, OauthTokenResponse> {
        self.typed(at, req)
    }

    fn query_form<'a>(
        &'a self,
        at: &'a Scope,
        member: &'a Secret,
        req: &'a ActivateFormQueryRequest,
    ) -> Answer<'a, ActivateFormQueryResponse> {
        self.as_member(at, member, req)
    }

    fn open_card<'a>(
        &'a self,
        at: &'a Scope,
        member: &'a Secret,
        req: &'a CardOpenRequest,
    ) -> Answer<'a, CardOpenResponse> {
        self.as_member(at, member, req)
    }

    fn update_card<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a CardUpdateRequest,
    ) -> Answer<'a, CardUpdateResponse> {
        self.typed(at, req)
    }

    fn query_card<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a CardQueryRequest,
    ) -> Answer<'a, CardQueryResponse> {
        self.typed(at, req)
    }

    fn delete_card<'a>(
        &'a self,
        at: &'a Scope,
        req: &'a CardDeleteRequest,
    ) -> Answer<'a, CardDeleteResponse> {
        self.typed(at, req)
    }
}
