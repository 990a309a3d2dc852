//! Example projects copied to a temp directory with a state of their own
//! (a directory or a PostgreSQL schema), run against the embedded sandbox or
//! a sandbox process; and the scenarios more than one backend runs.

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};

use serde_json::Value;

use super::*;

pub const TOKENS: [(&str, &str, &str); 3] = [
    (
        "tea",
        "TEA_APP_AUTH_TOKEN",
        "202405BBtea0000000000000000000000000X01",
    ),
    (
        "bakery",
        "BAKERY_APP_AUTH_TOKEN",
        "202405BBbakery00000000000000000000000X01",
    ),
    (
        "noodles",
        "NOODLES_APP_AUTH_TOKEN",
        "202405BBnoodles0000000000000000000000X01",
    ),
];

/// A copy of an example project in a temp dir, with its own state directory.
pub struct Project {
    pub tmp: tempfile::TempDir,
    /// A `postgres://` state instead of the `state/` directory.
    state_url: Option<String>,
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

impl Project {
    pub fn example(name: &str) -> Project {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(name),
            &tmp.path().join("project"),
        );
        Project {
            tmp,
            state_url: None,
        }
    }
    /// The same, with its state in PostgreSQL at `url`.
    pub fn example_on(name: &str, url: String) -> Project {
        Project {
            state_url: Some(url),
            ..Project::example(name)
        }
    }
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("project")
    }
    pub fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
    pub fn edit(&self, name: &str, from: &str, to: &str) {
        let p = self.file(name);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{from:?} not in {name}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }
    /// `cardform` with this project's state, on the embedded sandbox.
    pub fn cmd(&self) -> Command {
        let mut c = cardform();
        match &self.state_url {
            Some(url) => c.arg("--state").arg(url),
            None => c.arg("--state").arg(self.state()),
        };
        for (_, var, token) in TOKENS {
            c.env(var, token);
        }
        c
    }
    /// The same, against a sandbox process.
    pub fn cmd_at(&self, sb: &Sandbox) -> Command {
        let mut c = self.cmd();
        c.env("CARDFORM_ENDPOINT", &sb.url)
            .env("CARDFORM_APP_ID", APP_ID)
            .env("CARDFORM_PRIVATE_KEY", data("keys/app_a_private_pkcs1.txt"))
            .env("CARDFORM_ALIPAY_PUBLIC_KEY", sb.platform_key());
        c
    }
    pub fn plan(&self, c: &mut Command) -> Run {
        run(c
            .args(["plan", "-p"])
            .arg(self.dir())
            .arg("--detailed-exitcode"))
    }
    pub fn apply(&self, c: &mut Command) -> Run {
        run(c.args(["apply", "--auto-approve", "-p"]).arg(self.dir()))
    }
    pub fn export(&self) -> Value {
        run(self.cmd().args(["state", "export"])).ok().json()
    }
}

/// The templates the sandbox holds for the app (or a merchant's token); faults
/// may hit this call too, so it is repeated until it answers (bounded).
pub fn batchquery(p: &Project, sb: &Sandbox, token: Option<&str>) -> Value {
    for _ in 0..50 {
        let mut c = p.cmd_at(sb);
        if let Some(t) = token {
            c.env("CARDFORM_APP_AUTH_TOKEN", t);
        }
        let r = run(c.args([
            "api",
            "alipay.marketing.card.template.batchquery",
            "--biz-content",
            r#"{"page_no":1,"page_size":20}"#,
        ]));
        if r.code == 0 {
            return r.json();
        }
    }
    panic!("batchquery never answered");
}

pub fn template_ids(state: &Value) -> Vec<(String, String)> {
    state["resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v["ids"]["template_id"].as_str()?.to_string())))
        .filter(|(k, _)| k.contains("/template."))
        .collect()
}

/// An apply in the background, with its progress lines (stderr) to wait on.
pub fn spawn_apply(
    p: &Project,
    sb: &Sandbox,
    parallelism: usize,
) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut child = p
        .cmd_at(sb)
        .args([
            "apply",
            "--auto-approve",
            "--parallelism",
            &parallelism.to_string(),
            "-p",
        ])
        .arg(p.dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

/// kill -9 at many points of an apply, then run it again: it converges with
/// no duplicate template at the sandbox and no lost id. For a project whose
/// state is anywhere (sled, PostgreSQL).
pub fn kill_9_at_many_points_then_converge_with(p: Project) {
    let tmp = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(
        &tmp.path().join("sb"),
        &["--latency", "30ms", "--drop-rate", "0.15"],
    );
    let total = 18;
    for stop_after in [0, 1, 3, 5, 8, 11, 14] {
        let (mut child, mut lines) = spawn_apply(&p, &sb, 3);
        let mut done = 0;
        while done < stop_after {
            match lines.next() {
                Some(Ok(l)) if l.contains(" done") => done += 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let r = p.apply(&mut p.cmd_at(&sb));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(p.plan(&mut p.cmd_at(&sb)).code, 0);
    let state = p.export();
    assert_eq!(state["resources"].as_object().unwrap().len(), total);
    assert!(state["intents"].as_object().unwrap().is_empty());
    // Per merchant, the gateway holds exactly the templates in state.
    let ids = template_ids(&state);
    for (merchant, _, token) in TOKENS {
        let mine: Vec<&String> = ids
            .iter()
            .filter(|(a, _)| a.starts_with(&format!("merchant.{merchant}/")))
            .map(|(_, id)| id)
            .collect();
        let bq = batchquery(&p, &sb, Some(token));
        let at_gateway: Vec<String> = bq["mcard_template"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["template_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            at_gateway.len(),
            mine.len(),
            "{merchant}: gateway {at_gateway:?} vs state {mine:?}"
        );
        for id in mine {
            assert!(
                at_gateway.contains(id),
                "{merchant}: {id} in state but not at the gateway"
            );
        }
    }
}
