//! The gateway seam: what cardform asks of Alipay, one typed call per method,
//! behind a trait. It owns the shape of the conversation (who is asking, which
//! method, which wire types) and must never know about resources, plans or
//! state: the provider maps the domain onto these calls.
//!
//! - [`Gateway`]: one call in, its verified answer out; [`Typed`] makes any
//!   gateway speak typed requests (`alipay::methods`), each carrying its
//!   retry class. `crate::client::Client` is the production implementation:
//!   signed, verified, over HTTP.
//! - [`governor::Governor`]: a [`Gateway`] wrapping another, adding retry with
//!   backoff and jitter and throttle pauses keyed by (app_id, merchant), so a
//!   throttled merchant slows only itself. Its clock and randomness are handed
//!   in, so its behaviour is testable without sleeping.
//!
//! The global limit on calls in flight stays in the transport (see
//! `client::Client::with_max_in_flight`): a call is built and signed before it waits
//! for a slot, which only the transport can arrange.

pub mod governor;
pub mod limiter;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

use crate::alipay::GatewayError;
use crate::alipay::call::{Call, call_for, decode_checked};
use crate::alipay::methods::ApiRequest;
use crate::model::Address;
use crate::util::secret::Secret;

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

/// The gateway, as one call. Implementations send a call and return its
/// verified response node; retrying is the governor's business. Typed calls
/// ([`Typed::call`]) go through it: a new gateway method is a new request
/// type (`alipay::methods`), never a new method of this trait.
pub trait Gateway: Send + Sync {
    /// The app every call is signed as.
    fn app_id(&self) -> &str;

    /// Send one call; the answer is its verified response node.
    fn send<'a>(&'a self, at: &'a Scope, call: &'a Call) -> Answer<'a, Map<String, Value>>;
}

/// Typed calls on any gateway: a request type in, its response type out.
pub trait Typed: Gateway {
    /// A method's typed request, made for `at` (its app_auth_token).
    fn call<'a, R>(&'a self, at: &'a Scope, req: &'a R) -> Answer<'a, R::Response>
    where
        R: ApiRequest + Sync,
        R::Response: Send,
    {
        let call = call_for(req, at.token.clone());
        Box::pin(async move { decode_checked::<R>(self.send(at, &call).await?) })
    }

    /// The same, made as the member whose access token is `member`
    /// (activateform.query, card.open).
    fn call_as<'a, R>(
        &'a self,
        at: &'a Scope,
        member: &'a Secret,
        req: &'a R,
    ) -> Answer<'a, R::Response>
    where
        R: ApiRequest + Sync,
        R::Response: Send,
    {
        let mut call = call_for(req, at.token.clone());
        call.auth_token = Some(member.clone());
        Box::pin(async move { decode_checked::<R>(self.send(at, &call).await?) })
    }
}

impl<G: Gateway + ?Sized> Typed for G {}
