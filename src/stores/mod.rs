//! The state backends, and the one place that maps a state location to one
//! (OpenTofu's backend registry): [`sled`] (a local directory, the default),
//! [`postgres`] (a shared database), [`memory`] (tests); [`migrate`]
//! upgrades old records whatever the backend; [`contract`] is the test every
//! backend passes. Everything outside this room goes through
//! `state::Backend`: a new backend is its folder here plus one line in
//! [`Location::backend`].

#[doc(hidden)]
pub mod contract;
pub mod memory;
pub mod migrate;
pub mod postgres;
pub mod sled;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::state::Backend;

/// Where a state lives, as `--state` / `CARDFORM_STATE` say it: a directory
/// (the sled backend, the default) or a `postgres://` URL (the PostgreSQL
/// backend, for states shared by a team or pipelines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Dir(PathBuf),
    Postgres(self::postgres::PgUrl),
}

impl Location {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once("://") {
            Some((scheme, _))
                if scheme.eq_ignore_ascii_case("postgres")
                    || scheme.eq_ignore_ascii_case("postgresql") =>
            {
                self::postgres::PgUrl::parse(s).map(Location::Postgres)
            }
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '+') =>
            {
                Err(format!(
                    "`{scheme}://` is not a state backend cardform knows (a directory is)"
                ))
            }
            // A libpq key/value connection string (`host=db password=...`):
            // not a directory; said so with its password redacted.
            _ if s.split_whitespace().any(|w| {
                [
                    "host=",
                    "hostaddr=",
                    "dbname=",
                    "user=",
                    "password=",
                    "port=",
                ]
                .iter()
                .any(|k| w.starts_with(k))
            }) && s.contains('=') =>
            {
                Err(format!(
                    "`{}` looks like a key/value connection string; cardform takes a PostgreSQL state as a URL\nhint: postgres://USER@HOST:PORT/DATABASE?schema=NAME (the password percent-encoded in the URL, or in PGPASSWORD)",
                    self::postgres::url::redact_text(s)
                ))
            }
            _ => Ok(Location::Dir(PathBuf::from(s))),
        }
    }

    /// A directory on this machine for local companions of the state (the
    /// embedded sandbox's data): the state directory, or for a database
    /// state `./state`.
    pub fn local_dir(&self) -> &Path {
        match self {
            Location::Dir(d) => d,
            Location::Postgres(_) => Path::new("state"),
        }
    }

    /// A directory state (the sled backend).
    pub fn dir(path: impl Into<PathBuf>) -> Self {
        Location::Dir(path.into())
    }

    /// Whether the state is a local directory (the default kind).
    pub fn is_local(&self) -> bool {
        matches!(self, Location::Dir(_))
    }

    /// The location as a child process's `--state` argument: a URL keeps its
    /// password (it goes nowhere but that child's arguments).
    pub fn to_arg(&self) -> std::ffi::OsString {
        match self {
            Location::Dir(d) => d.clone().into_os_string(),
            Location::Postgres(u) => u.expose().into(),
        }
    }

    /// Another state kept the same way, named `name`: a schema of that name
    /// in the same database, or a directory of that name beside this one.
    pub fn separate(&self, name: &str) -> Location {
        match self {
            Location::Dir(d) => Location::Dir(d.parent().unwrap_or(Path::new(".")).join(name)),
            Location::Postgres(u) => Location::Postgres(u.with_schema(name)),
        }
    }

    /// The backend that keeps a state here: the one line per backend.
    pub fn backend(&self) -> Box<dyn Backend> {
        match self {
            Location::Dir(d) => Box::new(self::sled::backend::SledBackend::new(d)),
            Location::Postgres(u) => Box::new(self::postgres::PgBackend::new(u)),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Dir(d) => write!(f, "{}", d.display()),
            Location::Postgres(u) => write!(f, "{u}"),
        }
    }
}
