//! `cardform sandbox serve`: run the sandbox gateway until interrupted.

use anyhow::{Context, Result};

use crate::sandbox::{self, RunningSandbox, SandboxConfig};

/// Read `--app id=path` key files and start serving.
pub async fn serve(
    listen: std::net::SocketAddr,
    data: std::path::PathBuf,
    apps: Vec<(String, std::path::PathBuf)>,
    faults: sandbox::Faults,
) -> Result<RunningSandbox> {
    let mut keys = Vec::new();
    for (app_id, path) in apps {
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read the public key of app `{app_id}` from `{}`",
                path.display()
            )
        })?;
        keys.push((app_id, text));
    }
    Ok(sandbox::start(SandboxConfig {
        listen,
        data_dir: data,
        apps: keys,
        faults,
    })
    .await?)
}
