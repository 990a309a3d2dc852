//! Command-line structure (clap derive). Each command file holds an `Args`
//! struct and an `exec` that resolves settings, calls one `ops::` function and
//! hands the result to `render`. No business logic, no printing here.

#![allow(clippy::print_stdout, clippy::print_stderr)] // the rooms that print

mod api;
mod apply;
mod bench;
mod cards;
mod cards_serve;
mod drift;
mod import;
mod keys;
mod plan;
mod preview;
mod sandbox;
mod state;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::render;
use crate::settings::Overrides;

#[derive(Debug, Parser)]
#[command(
    name = "cardform",
    version,
    about = "Plan and apply Alipay membership-card programs from YAML manifests",
    propagate_version = true
)]
pub struct Cli {
    /// State: a directory, or a PostgreSQL URL (postgres://USER@HOST/DB?schema=NAME) [env: CARDFORM_STATE] [default: ./state]
    #[arg(long, global = true, value_name = "DIR|URL", help_heading = GATEWAY)]
    pub state: Option<PathBuf>,
    #[command(flatten)]
    pub gateway: GatewayFlags,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what apply would change, as a diff against the recorded state
    Plan(plan::Args),
    /// Make the gateway match the manifests (or apply a saved plan)
    Apply(apply::Args),
    /// Write a manifest adopting a merchant's existing templates (--generate-config-out)
    Import(import::Args),
    /// Read the gateway and report changes made outside cardform (exit 2 if any)
    Drift(drift::Args),
    /// Template ids and activation URLs per merchant (--qr writes QR codes)
    Output(state::OutputArgs),
    /// Inspect and edit the recorded state
    State(state::Args),
    /// Issue members' cards: bulk open and sync from CSV, query, delete, the activation callback
    #[command(subcommand)]
    Cards(cards::Command),
    /// Make one raw signed gateway call and print the verified response node
    Api(api::Args),
    /// Run the sandbox gateway
    #[command(subcommand)]
    Sandbox(sandbox::Command),
    /// Make app keys and a certificate signing request
    #[command(subcommand)]
    Keys(keys::Command),
    /// Check manifests: schema, references, images, tiers; every problem located
    Validate(validate::Args),
    /// Draw each template as the Alipay wallet shows the card (PNG per template and tier)
    Preview(preview::Args),
    /// Print the manifest JSON Schema
    Schema(validate::SchemaArgs),
    /// Benchmarks: plan at scale, apply throughput (prints figures)
    #[command(subcommand)]
    Bench(bench::Command),
    /// Start a project: a manifest that validates and plans on the embedded sandbox, placeholder images, the JSON Schema, a .gitignore
    Init(InitArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish)
    Completions(CompletionsArgs),
    /// Write man pages (cardform.1 and one per command) into a directory
    Man(ManArgs),
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The project's directory (created if missing) [default: .]
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell, e.g. `cardform completions bash > /etc/bash_completion.d/cardform`
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Where to write the pages, e.g. /usr/local/share/man/man1
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// A run that will wait for the state's lock (`--lock-timeout`) says so,
/// and who holds it, instead of sitting silent.
pub(crate) fn announce_lock_wait(common: &crate::ops::project::Common, flags: &Overrides) {
    if common.lock_timeout.is_zero() {
        return;
    }
    let Some(location) = crate::settings::Settings::state_before_manifests(flags) else {
        return;
    };
    if let Some(h) = location.backend().lock_holder() {
        render::note(&format!(
            "`cardform {}` (pid {} on {}) holds a state lock since {}: waiting up to {} for what this run needs",
            h.operation,
            h.pid,
            h.host,
            h.since,
            humantime::format_duration(common.lock_timeout),
        ));
    }
}

/// The heading the state and gateway flags are listed under in `--help`,
/// apart from each command's own.
const GATEWAY: &str = "Gateway and state (every command)";

/// The gateway flags every gateway-using command accepts.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayFlags {
    /// Gateway URL, or `sandbox` for the embedded sandbox [env: CARDFORM_ENDPOINT]
    #[arg(long, global = true, help_heading = GATEWAY)]
    pub endpoint: Option<String>,
    /// Alipay app id [env: CARDFORM_APP_ID]
    #[arg(long, global = true, help_heading = GATEWAY)]
    pub app_id: Option<String>,
    /// Path of the app private key (PEM or one-line base64) [env: CARDFORM_PRIVATE_KEY]
    #[arg(long, global = true, value_name = "PATH", help_heading = GATEWAY)]
    pub private_key: Option<PathBuf>,
    /// Path of the Alipay public key [env: CARDFORM_ALIPAY_PUBLIC_KEY]
    #[arg(long, global = true, value_name = "PATH", help_heading = GATEWAY)]
    pub alipay_public_key: Option<PathBuf>,
    /// Sign type: RSA2 (SHA256withRSA) or legacy RSA (SHA1withRSA)
    #[arg(long, global = true, value_name = "TYPE", help_heading = GATEWAY)]
    pub sign_type: Option<SignTypeArg>,
    /// Certificate mode: the app certificate (.crt) [env: CARDFORM_APP_CERT]
    #[arg(long, global = true, value_name = "PATH", help_heading = GATEWAY)]
    pub app_cert: Option<PathBuf>,
    /// Certificate mode: Alipay's public-key certificate [env: CARDFORM_ALIPAY_CERT]
    #[arg(long, global = true, value_name = "PATH", help_heading = GATEWAY)]
    pub alipay_cert: Option<PathBuf>,
    /// Certificate mode: the Alipay root certificate bundle [env: CARDFORM_ALIPAY_ROOT_CERT]
    #[arg(long, global = true, value_name = "PATH", help_heading = GATEWAY)]
    pub alipay_root_cert: Option<PathBuf>,
}

/// How a command prints its report: one flag for every command that prints
/// one (`--json` is kept as the short form of `--format json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Human,
    Json,
    Markdown,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Human => "human",
            Format::Json => "json",
            Format::Markdown => "markdown",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct FormatArg {
    /// How to print the report: human, json, or markdown (plan and drift)
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// The same as --format json
    #[arg(long, conflicts_with = "format")]
    json: bool,
}

impl FormatArg {
    /// The format asked for, if `command` offers it.
    pub fn get(&self, command: &str, offered: &[Format]) -> anyhow::Result<Format> {
        let f = if self.json { Format::Json } else { self.format };
        if !offered.contains(&f) {
            anyhow::bail!(
                "`cardform {command}` does not print {}\nhint: --format takes {} here",
                f.as_str(),
                offered
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
        }
        Ok(f)
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SignTypeArg {
    #[value(name = "RSA2")]
    Rsa2,
    #[value(name = "RSA")]
    Rsa,
}

impl Cli {
    /// The flags as plain settings input.
    pub fn overrides(&self) -> Overrides {
        let g = &self.gateway;
        Overrides {
            endpoint: g.endpoint.clone(),
            app_id: g.app_id.clone(),
            private_key: g.private_key.clone(),
            alipay_public_key: g.alipay_public_key.clone(),
            sign_type: g.sign_type.map(|s| match s {
                SignTypeArg::Rsa2 => crate::alipay::SignType::Rsa2,
                SignTypeArg::Rsa => crate::alipay::SignType::Rsa,
            }),
            app_cert: g.app_cert.clone(),
            alipay_cert: g.alipay_cert.clone(),
            alipay_root_cert: g.alipay_root_cert.clone(),
            // The AES key comes from CARDFORM_ENCRYPT_KEY or the gateway
            // block; `--encrypt-key` is the sandbox's (per app).
            encrypt_key: None,
            state: self.state.clone(),
        }
    }
}

/// What a command asks the process to exit with.
pub type Outcome = anyhow::Result<ExitCode>;

pub fn main() -> ExitCode {
    // Every error exits 1, usage errors too (as Terraform does): 2 means only
    // "changes present" under `plan --detailed-exitcode`.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            render::error(&anyhow::anyhow!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            match err.downcast_ref::<crate::manifest::Diagnostics>() {
                Some(diags) => {
                    render::diagnostics(diags);
                    render::note(&format!("error: {diags}"));
                }
                None => render::error(&err),
            }
            ExitCode::FAILURE
        }
    }
}

pub async fn run(cli: Cli) -> Outcome {
    let over = cli.overrides();
    match cli.command {
        Command::Plan(args) => plan::exec(args, &over).await,
        Command::Apply(args) => apply::exec(args, &over).await,
        Command::Drift(args) => drift::exec(args, &over).await,
        Command::Import(args) => import::exec(args, &over).await,
        Command::Output(args) => state::exec_output(args, &over),
        Command::State(args) => state::exec(args, &over),
        Command::Api(args) => api::exec(args, &over).await,
        Command::Cards(cmd) => cards::exec(cmd, &over).await,
        Command::Sandbox(cmd) => sandbox::exec(cmd).await,
        Command::Keys(cmd) => keys::exec(cmd),
        Command::Validate(args) => validate::exec(args, &over),
        Command::Preview(args) => preview::exec(args),
        Command::Schema(args) => validate::exec_schema(args),
        Command::Bench(cmd) => bench::exec(cmd, &over).await,
        Command::Init(args) => {
            let done = crate::ops::init::init(&args.dir)?;
            for f in &done.files {
                render::line(&format!("wrote {}", f.display()));
            }
            let dir = done.dir.display();
            render::line(&format!(
                "\nNext: `cardform validate {dir}`, then `cardform plan {dir}` and `cardform apply {dir}` (on the embedded sandbox).\nReplace images/*.png with your logo (500 x 500) and card background (1020 x 643); for Alipay's gateway see the manifest's gateway block and `cardform keys generate`."
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions(args) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut cmd, "cardform", &mut script);
            render::text(&String::from_utf8_lossy(&script));
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(args) => {
            std::fs::create_dir_all(&args.out)?;
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &args.out)?;
            render::line(&format!("wrote man pages to {}", args.out.display()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Parse `name=value`.
pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected name=value, got `{s}`"))
}

/// A duration argument such as `30s` or `5m` (humantime's syntax).
pub(crate) fn duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (e.g. 20ms, 30s, 5m)"))
}

pub(crate) fn key_path(s: &str) -> Result<(String, PathBuf), String> {
    key_value(s).map(|(k, v)| (k, PathBuf::from(v)))
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every command (duplicate flags
    /// and the like panic at parse time otherwise, only on that command).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
