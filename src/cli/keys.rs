//! `cardform keys generate`: arguments and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use super::Outcome;
use crate::ops;
use crate::render;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Make an app key pair (PKCS#8 and PKCS#1 PEM, the console's one-line
    /// public key) and a CSR for certificate mode
    Generate {
        /// Directory to write the files into
        #[arg(long, value_name = "DIR", default_value = "keys")]
        out: PathBuf,
        /// The CSR's subject (certificate mode), e.g. "CN=My Shop,O=My Company,C=CN"
        #[arg(
            long,
            value_name = "DN",
            default_value = "CN=cardform app,O=cardform,C=CN"
        )]
        subject: String,
    },
}

pub fn exec(cmd: Command) -> Outcome {
    match cmd {
        Command::Generate { out, subject } => {
            let g = ops::keys::generate(&out, &subject)?;
            let show = |p: &PathBuf| p.display().to_string();
            render::line(&format!(
                "Wrote an RSA-2048 app key pair to {}:",
                out.display()
            ));
            for (path, what) in [
                (
                    &g.private_pkcs8,
                    "private key, PKCS#8 PEM (cardform, Java, Node.js)",
                ),
                (&g.private_pkcs1, "private key, PKCS#1 PEM (PHP, Python)"),
                (
                    &g.public_line,
                    "public key, one line (the console's 应用公钥; sandbox --app)",
                ),
                (&g.public_pem, "public key, PEM"),
                (
                    &g.csr,
                    "certificate signing request (certificate mode: upload to the console)",
                ),
            ] {
                render::line(&format!("  {:<28} {what}", show(path)));
            }
            render::line(
                "The private keys are readable by you only; keep them out of version control.",
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
