//! `cardform api`: one raw signed call, arguments and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Outcome, key_path, key_value};
use crate::ops;
use crate::render;
use crate::settings::{Overrides, Settings};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Gateway method, e.g. alipay.marketing.card.template.query
    pub method: String,
    /// biz_content as JSON
    #[arg(long, value_name = "JSON")]
    pub biz_content: Option<String>,
    /// Extra text parameter (repeatable); also overrides a common parameter
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = key_value)]
    pub params: Vec<(String, String)>,
    /// File part of a multipart upload (repeatable), e.g. image_content=logo.png
    #[arg(long = "file", value_name = "NAME=PATH", value_parser = key_path)]
    pub files: Vec<(String, PathBuf)>,
}

pub async fn exec(args: Args, flags: &Overrides) -> Outcome {
    let settings = Settings::resolve(flags)?;
    let conn = ops::gateway::connect(&settings.gateway, &settings.local_dir()).await?;
    let result = ops::api::call(
        &conn,
        ops::api::RawCall {
            method: args.method,
            biz_content: args.biz_content,
            params: args.params,
            files: args.files,
            app_auth_token: settings.gateway.app_auth_token.clone(),
        },
    )
    .await;
    conn.close().await;
    match result? {
        Ok(node) => {
            render::json(&node);
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            render::gateway_error(&err);
            Ok(ExitCode::FAILURE)
        }
    }
}
