//! `cardform cards serve`: the activation callback service.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use super::Outcome;
use super::plan::ProjectArgs;
use crate::ops;
use crate::render;
use crate::settings::Overrides;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Address to listen on (put it behind the https URL the activation URL's `callback` names)
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Gateway calls in flight at once (the rate limits still apply): about
    /// parallelism / (3 x gateway latency) activations a second
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    /// Activations that fail at the gateway (made-up or spent codes) may cost at most this many a minute, in all
    #[arg(long, default_value_t = 120, value_name = "PER_MINUTE")]
    pub failure_budget: u32,
    /// ... and at most this many a minute from one client address (behind a proxy: the proxy's)
    #[arg(long, default_value_t = 20, value_name = "PER_MINUTE")]
    pub client_failure_budget: u32,
    /// The log on stderr: lines of text, or one JSON object a line (`ts`, `msg`, `request_id`)
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub async fn exec(args: Args, flags: &Overrides) -> Outcome {
    let log = Arc::new(render::cards::ServeLog {
        json: args.log_format == LogFormat::Json,
    });
    let running = ops::cards_serve::start(
        ops::cards_serve::Request {
            common: args.project.common(None),
            listen: args.listen,
            parallelism: args.parallelism,
            failure_budget: args.failure_budget,
            client_failure_budget: args.client_failure_budget,
        },
        flags,
        log,
    )
    .await?;
    render::cards::serving(running.addr, running.sandbox_url.as_deref());
    shutdown_signal().await;
    running.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM (a service manager's stop).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
