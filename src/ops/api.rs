//! `cardform api`: one raw signed call.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{Map, Value};

use super::gateway::Connection;
use crate::alipay::{Call, FilePart, GatewayError};
use crate::util::secret::Secret;

pub struct RawCall {
    pub method: String,
    pub biz_content: Option<String>,
    pub params: Vec<(String, String)>,
    pub files: Vec<(String, PathBuf)>,
    pub app_auth_token: Option<Secret>,
}

/// Sniff a MIME type from the first bytes, as the Python SDK does.
fn mime(bytes: &[u8]) -> &'static str {
    match imagesize::image_type(bytes) {
        Ok(imagesize::ImageType::Png) => "image/png",
        Ok(imagesize::ImageType::Jpeg) => "image/jpeg",
        Ok(imagesize::ImageType::Gif) => "image/gif",
        Ok(imagesize::ImageType::Bmp) => "image/bmp",
        _ => "application/octet-stream",
    }
}

/// Build the call (reading files), then send it. The outer error is a local
/// problem (unreadable file); the inner one is the gateway's answer.
pub async fn call(
    conn: &Connection,
    raw: RawCall,
) -> Result<Result<Map<String, Value>, GatewayError>> {
    if let Some(biz) = &raw.biz_content {
        serde_json::from_str::<Value>(biz).context("--biz-content is not valid JSON")?;
    }
    let mut files = Vec::new();
    for (field, path) in &raw.files {
        // A raw call sends what it is given (the gateway checks sizes); the
        // bound only keeps a wrong path (a device, a huge file) from being read.
        let bytes = crate::util::bounded::read(path, 64 * 1024 * 1024)
            .map_err(|e| anyhow::anyhow!("file part `{field}`: {e}"))?;
        files.push(FilePart {
            field: field.clone(),
            filename: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| field.clone()),
            mime: mime(&bytes).to_string(),
            bytes,
        });
    }
    let call = Call {
        method: raw.method,
        biz_content: raw.biz_content,
        params: raw.params.into_iter().collect::<BTreeMap<_, _>>(),
        files,
        app_auth_token: raw.app_auth_token,
        auth_token: None,
        retry: Default::default(),
        check: None,
    };
    Ok(conn.client.execute(&call).await)
}
