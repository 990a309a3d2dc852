//! `cardform sandbox serve | keygen`: arguments and dispatch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{Outcome, key_path};
use crate::ops;
use crate::render;
use crate::sandbox::Faults;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Serve POST /gateway.do until interrupted
    Serve(ServeArgs),
    /// Make an app key pair: app_private.pem and app_public.txt (for --app)
    Keygen {
        /// Directory to write the two files into
        #[arg(long, value_name = "DIR", default_value = "keys")]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:8780")]
    pub listen: SocketAddr,
    /// Data directory (platform keys, registered apps, images, templates, cards)
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Register an app and its public key file (repeatable)
    #[arg(long = "app", value_name = "APP_ID=PATH", value_parser = key_path)]
    pub apps: Vec<(String, PathBuf)>,
    /// Time each call takes, e.g. 20ms: the answer leaves this long after the request arrived
    #[arg(long, value_parser = super::duration, default_value = "0ms")]
    pub latency: Duration,
    /// Fraction of calls answered 20000 isp.unknow-error
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction of calls answered HTTP 502
    #[arg(long, default_value_t = 0.0)]
    pub http502_rate: f64,
    /// Fraction of calls whose connection drops after the call took effect
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Calls per second admitted; above it, 40005 isv.app-call-limited
    #[arg(long)]
    pub throttle_rps: Option<f64>,
    /// Throttle only calls with this app_auth_token (repeatable)
    #[arg(long, value_name = "TOKEN", requires = "throttle_rps")]
    pub throttle_token: Vec<String>,
}

pub async fn exec(cmd: Command) -> Outcome {
    match cmd {
        Command::Keygen { out } => {
            let (private, public) = ops::sandbox::keygen(&out)?;
            render::line(&format!(
                "Wrote the app private key to {} and its public key to {}.",
                private.display(),
                public.display()
            ));
            render::line(&format!(
                "Register it: cardform sandbox serve --data sandbox-data --app 2021000000000001={}",
                public.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(a) => {
            for (name, rate) in [
                ("--error-rate", a.error_rate),
                ("--http502-rate", a.http502_rate),
                ("--drop-rate", a.drop_rate),
            ] {
                if !(0.0..=1.0).contains(&rate) {
                    anyhow::bail!("{name} takes a fraction from 0 to 1, got {rate}");
                }
            }
            let faults = Faults {
                latency: a.latency,
                error_rate: a.error_rate,
                http502_rate: a.http502_rate,
                drop_rate: a.drop_rate,
                throttle_rps: a.throttle_rps,
                throttle_tokens: a.throttle_token,
            };
            let running = ops::sandbox::serve(a.listen, a.data, a.apps, faults).await?;
            render::line(&format!(
                "sandbox listening on http://{}/gateway.do",
                running.addr
            ));
            render::line(&format!(
                "platform public key: {}",
                running.platform_public_key_path().display()
            ));
            let _ = tokio::signal::ctrl_c().await;
            running.stop().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
