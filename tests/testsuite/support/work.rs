//! A workspace: a temp directory with a `work/` folder to copy examples into
//! and run `cardform` in, from any directory below it (relative paths, as a
//! user types them).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::*;

/// A temp directory; `work/` is where commands run.
pub struct Work {
    pub tmp: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Work {
        Work {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("work")
    }
    /// Copy `examples/<example>` to `work/<as_name>`.
    pub fn add(&self, example: &str, as_name: &str) -> PathBuf {
        let to = self.dir().join(as_name);
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(example),
            &to,
        );
        to
    }
    /// `cardform` run in `work/<cwd>` (tokens for the ISV example set).
    pub fn at(&self, cwd: &str) -> Command {
        let mut c = cardform();
        let dir = self.dir().join(cwd);
        std::fs::create_dir_all(&dir).unwrap();
        c.current_dir(dir);
        for var in [
            "TEA_APP_AUTH_TOKEN",
            "BAKERY_APP_AUTH_TOKEN",
            "NOODLES_APP_AUTH_TOKEN",
        ] {
            c.env(var, format!("202405BB{var}"));
        }
        c
    }
    pub fn cmd(&self) -> Command {
        self.at("")
    }
    pub fn export(&self) -> Value {
        run(self.cmd().args(["state", "export"])).ok().json()
    }
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let p = self.dir().join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from:?} not in {file}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }
}
