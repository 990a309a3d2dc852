//! One gateway call as plain data, before signing, and the typed view of it:
//! a request type ([`ApiRequest`]) becomes a [`Call`] and the verified
//! response node becomes the request's response type. Pure: the client signs
//! and sends calls, the gateway seam retries them by their [`Retry`] class.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::GatewayError;
use super::methods::{ApiRequest, Encoding, FilePart, Retry};
use crate::util::secret::Secret;

/// One gateway call, before signing.
#[derive(Debug, Clone, Default)]
pub struct Call {
    pub method: String,
    pub biz_content: Option<String>,
    /// API text params and overrides of common params (e.g. a pinned `timestamp`).
    pub params: BTreeMap<String, String>,
    pub files: Vec<FilePart>,
    pub app_auth_token: Option<Secret>,
    /// A member's access token (card.open, activateform.query).
    pub auth_token: Option<Secret>,
    /// Whether the governor may send it again after a failure.
    pub retry: Retry,
    /// Whether a verified answer carries what the method returns (its ids):
    /// run inside each attempt, so a success without them is a failed
    /// attempt like any other (counted, retried by its class).
    pub check: Option<NodeCheck>,
}

/// A method's check of its verified response node.
pub type NodeCheck = fn(&Map<String, Value>) -> Result<(), GatewayError>;

fn check_node<R: ApiRequest>(node: &Map<String, Value>) -> Result<(), GatewayError> {
    decode_checked::<R>(node.clone()).map(|_| ())
}

/// Deserialize a verified node into a typed response.
pub fn decode_node<T: DeserializeOwned>(
    method: &str,
    node: Map<String, Value>,
) -> Result<T, GatewayError> {
    serde_json::from_value(Value::Object(node)).map_err(|e| GatewayError::Malformed {
        method: method.into(),
        detail: format!("unexpected response fields: {e}"),
    })
}

/// Deserialize a verified node and check that it carries what the method
/// must return: a signed "Success" without its ids is a failed call.
pub fn decode_checked<R: ApiRequest>(
    node: Map<String, Value>,
) -> Result<R::Response, GatewayError> {
    let response = decode_node(R::METHOD, node)?;
    R::check(&response).map_err(|detail| GatewayError::Malformed {
        method: R::METHOD.into(),
        detail: format!("a success without what the method returns: {detail}"),
    })?;
    Ok(response)
}

/// The unsigned call for a typed request: the wire type says how its fields
/// travel, the client owns turning that into a call.
pub fn call_for<R: ApiRequest>(request: &R, app_auth_token: Option<Secret>) -> Call {
    let mut call = Call {
        method: R::METHOD.to_string(),
        app_auth_token,
        retry: R::RETRY,
        check: Some(check_node::<R>),
        ..Call::default()
    };
    match request.encoding() {
        Encoding::BizContent(biz) => call.biz_content = Some(biz),
        Encoding::TopLevel { params, files } => {
            call.params.extend(params);
            call.files = files;
        }
    }
    call
}
