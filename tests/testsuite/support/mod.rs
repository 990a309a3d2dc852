//! Test support, every helper shared by more than one test module: run the
//! real `cardform` binary, start a real sandbox process, make images, free
//! ports, copies of example projects ([`project`]), workspaces ([`work`]),
//! a PostgreSQL server ([`pg`]). Waits on conditions (a line printed, a
//! process exit), never on fixed sleeps.

#![allow(dead_code)]

pub mod pg;
pub mod project;
pub mod work;

pub use pg::cluster;
pub use project::*;
pub use work::Work;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const APP_ID: &str = "2021000000000001";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cardform"))
}

pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// A `cardform` command with no CARDFORM_* variables inherited.
pub fn cardform() -> Command {
    let mut cmd = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("CARDFORM_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn fails(self) -> Self {
        assert_ne!(
            self.code, 0,
            "expected failure\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
    #[track_caller]
    pub fn stdout_has(self, needle: &str) -> Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout
        );
        self
    }
}

pub fn run(cmd: &mut Command) -> Run {
    Run::from(cmd.output().expect("cardform runs"))
}

/// A `cardform sandbox serve` child process on a free loopback port.
pub struct Sandbox {
    child: Child,
    pub url: String,
    pub dir: PathBuf,
}

impl Sandbox {
    pub fn start(dir: &Path, extra: &[&str]) -> Sandbox {
        let mut args = vec![
            "--app".to_string(),
            format!("{APP_ID}={}", data("keys/app_a_public_spki.txt").display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Sandbox::serve(dir, &args)
    }

    /// `sandbox serve --data dir` with exactly `args` (apps included).
    pub fn serve(dir: &Path, args: &[String]) -> Sandbox {
        let mut child = cardform()
            .args(["sandbox", "serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sandbox starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("sandbox prints its address").unwrap();
        let url = first
            .strip_prefix("sandbox listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Sandbox {
            child,
            url,
            dir: dir.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn platform_key(&self) -> PathBuf {
        self.dir.join("platform_public.pem")
    }

    /// `cardform` pointed at this sandbox as app A.
    pub fn cardform(&self) -> Command {
        let mut cmd = cardform();
        cmd.env("CARDFORM_ENDPOINT", &self.url)
            .env("CARDFORM_APP_ID", APP_ID)
            .env("CARDFORM_PRIVATE_KEY", data("keys/app_a_private_pkcs1.txt"))
            .env("CARDFORM_ALIPAY_PUBLIC_KEY", self.platform_key());
        cmd
    }

    pub fn api(&self, method: &str, biz: &str) -> Run {
        run(self.cardform().args(["api", method, "--biz-content", biz]))
    }

    /// Stop and start again on the same data, with `extra` arguments.
    pub fn restart(&mut self, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.clone();
        *self = Sandbox::start(&dir, extra);
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A valid 1-bit grayscale PNG of the given size (the library's own writer).
/// `seed` varies the pixels so that images of one size can differ in content.
pub fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    cardform::util::qr::png(width, height, |x, y| {
        ((x ^ y) as u8).wrapping_mul(31).wrapping_add(seed) & 1 == 1
    })
}

pub fn write_png(path: &Path, width: u32, height: u32, seed: u8) {
    std::fs::write(path, png(width, height, seed)).unwrap();
}

/// One HTTP/1.0 exchange (the connection closes after it, so the body is
/// whatever follows the headers): a test's browser or member's phone.
pub struct HttpAnswer {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

pub fn http(method: &str, url: &str, body: Option<&str>) -> HttpAnswer {
    http_with(method, url, &[], body)
}

/// [`http`] with extra request headers.
pub fn http_with(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpAnswer {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).expect("connects");
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    // A server may answer (413, 401) before reading the whole body and
    // close: a failed write is not the test's business, the answer is.
    let _ = write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut raw = Vec::new();
    // A reset after the answer (the server closed with our body unread)
    // leaves what was read.
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let location = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    });
    HttpAnswer {
        status,
        location,
        body: body.to_string(),
    }
}

impl Sandbox {
    /// A member submitting the activation form of `activation_url` (the
    /// decoded apply_card_url): the sandbox's answer, as JSON.
    pub fn activate(&self, activation_url: &str, ask: serde_json::Value) -> serde_json::Value {
        let mut ask = ask;
        ask["activation_url"] = activation_url.into();
        let a = http(
            "POST",
            &format!(
                "{}/_sandbox/activate",
                self.url.trim_end_matches("/gateway.do")
            ),
            Some(&ask.to_string()),
        );
        assert!(a.status < 300 || a.status == 502, "{} {}", a.status, a.body);
        serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("{e}: {}", a.body))
    }

    /// The member's access token for an auth_code (alipay.system.oauth.token
    /// through `cardform api`).
    pub fn member_token(&self, code: &str) -> String {
        let r = run(self.cardform().args([
            "api",
            "alipay.system.oauth.token",
            "--param",
            "grant_type=authorization_code",
            "--param",
            &format!("code={code}"),
        ]))
        .ok()
        .json();
        r["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }
}

/// A loopback port free now (for a server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
