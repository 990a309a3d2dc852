//! `cardform sandbox serve | issue-cert`: arguments and dispatch.

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
    /// Issue an app certificate from a CSR (`cardform keys generate` makes
    /// one), as the Alipay console does in certificate mode
    IssueCert {
        /// The sandbox's data directory (its certificate authority)
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// The certificate signing request (PEM)
        #[arg(long, value_name = "PATH")]
        csr: PathBuf,
        /// Where to write the app certificate
        #[arg(long, value_name = "PATH", default_value = "app_cert.crt")]
        out: PathBuf,
        /// Days the certificate is valid
        #[arg(long, default_value_t = 365)]
        days: u64,
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
    /// Register an app and its public key file, or with --cert-mode its app
    /// certificate (repeatable)
    #[arg(long = "app", value_name = "APP_ID=PATH", value_parser = key_path)]
    pub apps: Vec<(String, PathBuf)>,
    /// Act as a gateway in public-key-certificate mode: the root bundle and
    /// Alipay certificate are made in the data directory on first start
    #[arg(long)]
    pub cert_mode: bool,
    /// Issue a new Alipay certificate before serving (clients holding the old
    /// one see a rotation)
    #[arg(long, requires = "cert_mode")]
    pub rotate_alipay_cert: bool,
    /// Switch on AES content encryption for an app, with the base64 key in a
    /// file (repeatable; once on, it stays on)
    #[arg(long = "encrypt-key", value_name = "APP_ID=PATH", value_parser = key_path)]
    pub encrypt_keys: Vec<(String, PathBuf)>,
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
    /// Calls per second admitted for each merchant (its app_auth_token); above it, 40005 isv.app-call-limited
    #[arg(long, value_name = "RPS")]
    pub limit_merchant: Option<f64>,
    /// Calls per second admitted for a method (repeatable); above it, 40005 isv.method-call-limited
    #[arg(long, value_name = "METHOD=RPS", value_parser = super::key_value)]
    pub limit_method: Vec<(String, String)>,
    /// Break a merchant's authorisation: every call with TOKEN fails as KIND
    /// (invalid, expired, no-api, no-permission, no-product); repeatable
    #[arg(long, value_name = "TOKEN=KIND", value_parser = super::key_value)]
    pub merchant_fault: Vec<(String, String)>,
}

pub async fn exec(cmd: Command) -> Outcome {
    match cmd {
        Command::IssueCert {
            data,
            csr,
            out,
            days,
        } => {
            ops::sandbox::issue_cert(&data, &csr, &out, days)?;
            render::line(&format!(
                "Wrote the app certificate to {}; register it with: cardform sandbox serve --cert-mode --data {} --app APP_ID={}",
                out.display(),
                data.display(),
                out.display()
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
                limit_merchant: a.limit_merchant.filter(|r| *r > 0.0),
                limit_methods: a
                    .limit_method
                    .into_iter()
                    .map(|(m, r)| {
                        let r = r.parse::<f64>().ok().filter(|r| *r > 0.0).ok_or_else(|| {
                            anyhow::anyhow!(
                                "--limit-method {m}={r}: the rate is not a positive number"
                            )
                        })?;
                        Ok((m, r))
                    })
                    .collect::<anyhow::Result<_>>()?,
                merchant_faults: a
                    .merchant_fault
                    .into_iter()
                    .map(|(t, k)| Ok((t, k.parse().map_err(anyhow::Error::msg)?)))
                    .collect::<anyhow::Result<_>>()?,
            };
            let cert_mode = a.cert_mode;
            let running = ops::sandbox::serve(ops::sandbox::Serve {
                listen: a.listen,
                data: a.data,
                apps: a.apps,
                faults,
                cert_mode,
                rotate_alipay_cert: a.rotate_alipay_cert,
                encrypt_keys: a.encrypt_keys,
            })
            .await?;
            render::line(&format!(
                "sandbox listening on http://{}/gateway.do",
                running.addr
            ));
            if let Some(sn) = &running.alipay_cert_sn {
                let dir = &running.data_dir;
                render::line(&format!(
                    "certificate mode: Alipay certificate {} (SN {sn}), root bundle {}",
                    dir.join(crate::sandbox::certs::ALIPAY_CERT_FILE).display(),
                    dir.join(crate::sandbox::certs::ROOT_FILE).display()
                ));
            } else {
                render::line(&format!(
                    "platform public key: {}",
                    running.platform_public_key_path().display()
                ));
            }
            let _ = tokio::signal::ctrl_c().await;
            running.stop().await;
            Ok(ExitCode::SUCCESS)
        }
    }
}
