//! Settings: command-line flags, `CARDFORM_*` environment variables and (later)
//! the manifest's gateway block, merged into one value. Flags win over the
//! environment, which wins over the manifest. This is the only module that
//! reads the environment.

use std::path::PathBuf;

use url::Url;

use crate::stores::Location;

use crate::alipay::SignType;
use crate::model::{GatewayBlock, SecretRef};
use crate::util::secret::Secret;

/// What the command line says about the gateway and the state, as plain
/// data (`cli` fills it from its flags; nothing here knows clap).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub endpoint: Option<String>,
    pub app_id: Option<String>,
    pub private_key: Option<PathBuf>,
    pub alipay_public_key: Option<PathBuf>,
    pub sign_type: Option<SignType>,
    /// Certificate mode: the app certificate, the Alipay public-key
    /// certificate and the Alipay root bundle.
    pub app_cert: Option<PathBuf>,
    pub alipay_cert: Option<PathBuf>,
    pub alipay_root_cert: Option<PathBuf>,
    /// The AES content-encryption key (a file holding the base64 key).
    pub encrypt_key: Option<PathBuf>,
    /// `--state`.
    pub state: Option<PathBuf>,
}

/// Where calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An in-process sandbox persisted under the state directory.
    Embedded,
    Url(Url),
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub endpoint: Endpoint,
    pub app_id: Option<String>,
    /// A path, or (from a manifest) an environment variable holding the key.
    pub private_key: Option<SecretRef>,
    pub alipay_public_key: Option<SecretRef>,
    /// Public-key-certificate mode (any of the three set): all three are
    /// needed, and the Alipay public key comes from `alipay_cert`.
    pub app_cert: Option<SecretRef>,
    pub alipay_cert: Option<SecretRef>,
    pub alipay_root_cert: Option<SecretRef>,
    /// AES content encryption.
    pub encrypt_key: Option<SecretRef>,
    pub app_auth_token: Option<Secret>,
    pub sign_type: SignType,
    /// Faults for the embedded sandbox (`CARDFORM_SANDBOX_FAULTS`, e.g.
    /// `latency=20ms,error_rate=0.1`), for tests and demos.
    pub sandbox_faults: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub gateway: GatewaySettings,
    /// Where the state lives (`--state` / `CARDFORM_STATE`; `state` by default).
    pub state: Location,
    /// The project's directory, when a project was read.
    pub project_root: Option<PathBuf>,
}

impl Settings {
    /// A directory on this machine for the state's local companions (the
    /// embedded sandbox's data): the state directory; for a database state,
    /// `.cardform` in the project's directory (never the working directory,
    /// which changes from run to run), else `./state`.
    pub fn local_dir(&self) -> PathBuf {
        match (&self.state, &self.project_root) {
            (Location::Postgres(_), Some(root)) => root.join(".cardform"),
            _ => self.state.local_dir().to_path_buf(),
        }
    }

    /// These settings for the project at `root`.
    pub fn for_project(mut self, root: &std::path::Path) -> Self {
        self.project_root = Some(root.to_path_buf());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "invalid endpoint `{value}` (from {origin}): {reason}\nhint: use an https:// URL, or `sandbox` for the embedded sandbox"
    )]
    Endpoint {
        value: String,
        origin: &'static str,
        reason: String,
    },
    #[error("invalid state location (from {origin}): {reason}")]
    State {
        origin: &'static str,
        reason: String,
    },
}

/// The state directory when nothing names one (relative to where cardform runs).
const DEFAULT_STATE: &str = "state";

/// `--state`, else `CARDFORM_STATE`: what wins over the manifests' `state:`.
fn state_from_flags(flags: &Overrides) -> Option<Result<Location, SettingsError>> {
    match (flags.state.as_ref(), env("CARDFORM_STATE")) {
        (Some(flag), _) => Some(location(&flag.to_string_lossy(), "--state")),
        (None, Some(v)) => Some(location(&v, "CARDFORM_STATE")),
        (None, None) => None,
    }
}

fn location(value: &str, origin: &'static str) -> Result<Location, SettingsError> {
    match Location::parse(value).map_err(|reason| SettingsError::State { origin, reason })? {
        // A URL without a password takes PGPASSWORD's, as libpq's tools do.
        Location::Postgres(u) => Ok(Location::Postgres(
            u.with_default_password(env("PGPASSWORD")),
        )),
        l => Ok(l),
    }
}

/// Read one environment variable; empty counts as unset.
#[allow(clippy::disallowed_methods)] // the one reader of the environment
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The names of the `CARDFORM_*` variables set now (a benchmark clears them
/// for the child it times).
#[allow(clippy::disallowed_methods)] // the one reader of the environment
pub fn cardform_variables() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("CARDFORM_"))
        .collect()
}

pub fn parse_endpoint(value: &str, origin: &'static str) -> Result<Endpoint, SettingsError> {
    if value == "sandbox" {
        return Ok(Endpoint::Embedded);
    }
    Url::parse(value)
        .map(Endpoint::Url)
        .map_err(|e| SettingsError::Endpoint {
            value: value.into(),
            origin,
            reason: e.to_string(),
        })
}

impl Settings {
    /// Merge flags over the environment (no manifest).
    pub fn resolve(flags: &Overrides) -> Result<Self, SettingsError> {
        Self::resolve_with(flags, &GatewayBlock::default())
    }

    /// Where the state is when nothing in the manifests moves it: `--state`,
    /// else `CARDFORM_STATE`, else the default directory. A run reads it
    /// while the manifests load, and keeps what it read only if the
    /// settings resolved with the manifests agree (a manifest's `state:`
    /// block yields to both). `None` when the value does not parse: the
    /// full resolution reports that.
    pub fn state_before_manifests(flags: &Overrides) -> Option<Location> {
        match state_from_flags(flags) {
            Some(l) => l.ok(),
            None => Some(Location::dir(DEFAULT_STATE)),
        }
    }

    /// Flags win over `CARDFORM_*` variables, which win over the manifest's
    /// gateway block (how a pipeline points the same manifests elsewhere).
    pub fn resolve_with(flags: &Overrides, manifest: &GatewayBlock) -> Result<Self, SettingsError> {
        let (endpoint_value, origin) = match (
            &flags.endpoint,
            env("CARDFORM_ENDPOINT"),
            &manifest.endpoint,
        ) {
            (Some(v), _, _) => (v.clone(), "--endpoint"),
            (None, Some(v), _) => (v, "CARDFORM_ENDPOINT"),
            (None, None, Some(v)) => (v.clone(), "the manifest's gateway.endpoint"),
            (None, None, None) => ("sandbox".to_string(), "the default"),
        };
        let endpoint = parse_endpoint(&endpoint_value, origin)?;
        let sign_type = match (flags.sign_type, manifest.sign_type.as_deref()) {
            (Some(SignType::Rsa), _) | (None, Some("RSA")) => SignType::Rsa,
            _ => SignType::Rsa2,
        };
        // The manifest's keys are for the gateway it names. The embedded
        // sandbox signs with its own platform key and registers its own
        // development app key, so the same manifests run on it unchanged;
        // flags and CARDFORM_* still choose keys for it.
        let embedded = endpoint == Endpoint::Embedded;
        let path_ref = |flag: &Option<PathBuf>, var: &str, block: &Option<SecretRef>| {
            flag.clone()
                .or_else(|| env(var).map(PathBuf::from))
                .map(SecretRef::File)
                .or_else(|| if embedded { None } else { block.clone() })
        };
        Ok(Settings {
            project_root: None,
            gateway: GatewaySettings {
                endpoint,
                app_id: flags
                    .app_id
                    .clone()
                    .or_else(|| env("CARDFORM_APP_ID"))
                    .or_else(|| manifest.app_id.clone()),
                private_key: path_ref(
                    &flags.private_key,
                    "CARDFORM_PRIVATE_KEY",
                    &manifest.private_key,
                ),
                alipay_public_key: path_ref(
                    &flags.alipay_public_key,
                    "CARDFORM_ALIPAY_PUBLIC_KEY",
                    &manifest.alipay_public_key,
                ),
                app_cert: path_ref(&flags.app_cert, "CARDFORM_APP_CERT", &manifest.app_cert),
                alipay_cert: path_ref(
                    &flags.alipay_cert,
                    "CARDFORM_ALIPAY_CERT",
                    &manifest.alipay_cert,
                ),
                alipay_root_cert: path_ref(
                    &flags.alipay_root_cert,
                    "CARDFORM_ALIPAY_ROOT_CERT",
                    &manifest.alipay_root_cert,
                ),
                encrypt_key: path_ref(
                    &flags.encrypt_key,
                    "CARDFORM_ENCRYPT_KEY",
                    &manifest.encrypt_key,
                ),
                app_auth_token: env("CARDFORM_APP_AUTH_TOKEN").map(Secret::new),
                sign_type,
                sandbox_faults: env("CARDFORM_SANDBOX_FAULTS"),
            },
            state: match (state_from_flags(flags), &manifest.state_url) {
                (Some(l), _) => l?,
                (None, Some(r)) => {
                    let url =
                        read_secret(r, "state URL").map_err(|reason| SettingsError::State {
                            origin: "the manifest's state.url",
                            reason,
                        })?;
                    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                        return Err(SettingsError::State {
                            origin: "the manifest's state.url",
                            reason: format!(
                                "{r} does not hold a postgres:// URL (a state directory is given with --state or CARDFORM_STATE)"
                            ),
                        });
                    }
                    location(&url, "the manifest's state.url")?
                }
                (None, None) => Location::dir(DEFAULT_STATE),
            },
        })
    }
}

/// Read a secret from where it is kept. Errors name the place, never the value.
pub fn read_secret(r: &SecretRef, what: &str) -> Result<String, String> {
    match r {
        SecretRef::File(p) => {
            crate::util::bounded::read_text(p, crate::util::bounded::MAX_SECRET_BYTES)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read the {what}: {e}"))
        }
        SecretRef::Env(name) => env(name).ok_or_else(|| {
            format!("the {what} comes from environment variable `{name}`, which is not set")
        }),
    }
}
