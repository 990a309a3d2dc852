//! A throwaway PostgreSQL cluster for the suite: `initdb` and `postgres`
//! from Debian's `postgresql` package (which `.ci/run` installs), in a temp
//! directory, on a free loopback port, trust authentication. One cluster per
//! test process, started on first use; each test takes a schema of its own,
//! so tests share nothing. As root (CI), the server runs as the `postgres`
//! user, which is how it refuses to run otherwise. A watchdog stops the
//! server when the test process is gone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub struct Cluster {
    port: u16,
    _dir: tempfile::TempDir,
    /// The watchdog shell (the server's parent); it ends with the server.
    _server: std::process::Child,
}

/// The directory of the newest installed PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql; .ci/run does)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server binary")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `cmd` as the user who may run the server.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start() -> Cluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("cardform-pg")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if is_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(out.success());
        }
        let out = as_server_user(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["--auth=trust", "-U", "cardform", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let server = format!(
            "{} -D {} -p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            bin.join("postgres").display(),
            data.display(),
            dir.path().display()
        );
        // The server, and a watchdog that stops it when this process is gone.
        let script = format!(
            "{server} >{log} 2>&1 & pg=$!; while [ -d /proc/{me} ] && kill -0 $pg 2>/dev/null; do sleep 0.5; done; kill -INT $pg 2>/dev/null; wait $pg",
            log = dir.path().join("server.log").display(),
            me = std::process::id()
        );
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        let server = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let cluster = Cluster {
            port,
            _dir: dir,
            _server: server,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(cluster._dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// A URL for a schema of its own (unique in this process).
    pub fn url(&self, name: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        format!(
            "postgres://cardform@127.0.0.1:{}/postgres?schema={name}_{n}",
            self.port
        )
    }

    /// Run SQL with psql as the cluster's superuser.
    #[allow(dead_code)]
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(bin_dir().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "cardform",
            ])
            .args(["-d", "postgres", "-At", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The suite's cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    C.get_or_init(Cluster::start)
}

#[test]
fn the_postgres_backend_keeps_the_contract() {
    let url = cluster().url("contract");
    let location = cardform::stores::Location::parse(&url).unwrap();
    cardform::stores::contract::keeps_the_contract(location.backend().as_ref(), true);
}

use crate::plan_apply::{
    Project, batchquery, kill_9_at_many_points_then_converge_with, spawn_apply,
};
use crate::support::*;

#[test]
fn kill_9_at_many_points_then_converge_on_postgres() {
    kill_9_at_many_points_then_converge_with(Project::example_on("isv", cluster().url("kill9")));
}

#[test]
fn reads_never_wait_writers_name_the_holder_and_a_killed_run_leaves_no_lock() {
    let p = Project::example_on("coffee", cluster().url("locks"));
    let tmp = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(&tmp.path().join("sb"), &["--latency", "300ms"]);
    let (mut child, mut lines) = spawn_apply(&p, &sb, 1);
    // The first change is done: the apply holds the lock.
    lines.next().unwrap().unwrap();
    // Read-only commands answer at once from the last committed state.
    let r = run(p.cmd_at(&sb).args(["plan", "-p"]).arg(p.dir()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    run(p.cmd().args(["output"])).ok();
    run(p.cmd().args(["state", "list"])).ok();
    run(p.cmd().args(["state", "export"])).ok();
    // A second writer is refused, naming the holder.
    let r = p.apply(&mut p.cmd_at(&sb)).fails();
    assert!(
        r.stderr.contains("is locked by `cardform apply`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("pid {}", child.id())),
        "{}",
        r.stderr
    );
    // kill -9: the session ends, and the lock with it; nothing to unlock.
    child.kill().unwrap();
    child.wait().unwrap();
    let r = p.apply(&mut p.cmd_at(&sb));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(p.plan(&mut p.cmd_at(&sb)).code, 0);
    assert_eq!(batchquery(&p, &sb, None)["template_total"], 3);
    let r = run(p.cmd().args(["state", "unlock", "--force"])).ok();
    assert!(!r.stdout.contains("Cleared the lock of"), "{}", r.stdout);
}

#[test]
fn losing_the_database_mid_apply_stops_safely_and_a_rerun_converges() {
    let c = cluster();
    let p = Project::example_on("coffee", c.url("lost"));
    let tmp = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(&tmp.path().join("sb"), &["--latency", "200ms"]);
    let (mut child, mut lines) = spawn_apply(&p, &sb, 2);
    lines.next().unwrap().unwrap();
    // The server drops every cardform session (as a restart or failover would).
    c.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cardform'");
    let mut rest = String::new();
    for l in lines.map_while(Result::ok) {
        rest.push_str(&l);
        rest.push('\n');
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "{rest}");
    assert!(rest.contains("connection to PostgreSQL was lost"), "{rest}");
    let r = p.apply(&mut p.cmd_at(&sb));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(p.plan(&mut p.cmd_at(&sb)).code, 0);
    assert_eq!(batchquery(&p, &sb, None)["template_total"], 3);
}

#[test]
fn state_migrate_round_trips_and_refuses_to_overwrite() {
    let dir_project = Project::example("coffee");
    dir_project.apply(&mut dir_project.cmd()).ok();
    let before = dir_project.export();
    let url = cluster().url("migrate");
    let r = run(dir_project.cmd().args(["state", "migrate", "--to", &url])).ok();
    assert!(r.stdout.contains("Moved 14 resource(s)"), "{}", r.stdout);
    let on_pg = Project::example_on("coffee", url.clone());
    let after = on_pg.export();
    assert_eq!(after, before, "lineage, serial and records are kept");
    // The same project plans no changes against the moved state.
    assert_eq!(on_pg.plan(&mut on_pg.cmd()).code, 0);
    // A target holding a state is not overwritten unless forced.
    let r = run(dir_project.cmd().args(["state", "migrate", "--to", &url])).fails();
    assert!(r.stderr.contains("already holds a state"), "{}", r.stderr);
    run(dir_project
        .cmd()
        .args(["state", "migrate", "--to", &url, "--force"]))
    .ok();
    // And back to a directory.
    let back = tempfile::tempdir().unwrap();
    let back_dir = back.path().join("state");
    run(on_pg
        .cmd()
        .args(["state", "migrate", "--to"])
        .arg(&back_dir))
    .ok();
    let again = run(cardform()
        .arg("--state")
        .arg(&back_dir)
        .args(["state", "export"]))
    .ok()
    .json();
    assert_eq!(again, before);
}

#[test]
fn the_password_never_shows_and_the_manifest_can_name_the_database() {
    let r = run(cardform()
        .args(["state", "list", "--state"])
        .arg("postgres://cardform:hunter2@127.0.0.1:9/nowhere"))
    .fails();
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    assert!(r.stderr.contains("REDACTED"), "{}", r.stderr);

    // `state: { url: { env: ... } }` in the manifest.
    let p = Project::example("coffee");
    p.edit(
        "cardform.yaml",
        "gateway:\n",
        "state:\n  url: { env: SHOP_STATE_URL }\ngateway:\n",
    );
    let url = cluster().url("manifest");
    let r = run(cardform()
        .env("SHOP_STATE_URL", &url)
        .args(["apply", "--auto-approve", "-p"])
        .arg(p.dir())
        .current_dir(p.dir()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let on_pg = Project::example_on("coffee", url);
    assert_eq!(on_pg.export()["resources"].as_object().unwrap().len(), 14);
    // Inline, the URL (and its password) is refused without being echoed.
    p.edit(
        "cardform.yaml",
        "url: { env: SHOP_STATE_URL }",
        "url: postgres://cardform:hunter2@db/x",
    );
    let r = run(cardform().args(["validate"]).arg(p.dir())).fails();
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(!all.contains("hunter2"), "{all}");
    assert!(
        all.contains("`url` must say where the secret comes from"),
        "{all}"
    );
}

/// A targeted apply in the background, with its progress lines.
fn spawn_targeted(
    p: &Project,
    sb: &Sandbox,
    target: &str,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) {
    use std::io::BufRead;
    let mut child = p
        .cmd_at(sb)
        .args([
            "apply",
            "--auto-approve",
            "--parallelism",
            "1",
            "--target",
            target,
            "-p",
        ])
        .arg(p.dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

#[test]
fn runs_on_different_merchants_go_at_once_and_on_the_same_one_wait() {
    let p = Project::example_on("isv", cluster().url("merchants"));
    let tmp = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(&tmp.path().join("sb"), &["--latency", "300ms"]);
    // A plan for noodles, saved before anything is applied.
    let saved = tmp.path().join("noodles.plan");
    run(p
        .cmd_at(&sb)
        .args([
            "plan",
            "--target",
            "merchant.noodles/activation_url.member",
            "--out",
        ])
        .arg(&saved)
        .arg("-p")
        .arg(p.dir()))
    .ok();

    let (mut tea, mut lines) = spawn_targeted(&p, &sb, "merchant.tea/activation_url.member");
    lines.next().unwrap().unwrap();
    // The same merchant: refused at once, naming the holder.
    let r = run(p
        .cmd_at(&sb)
        .args([
            "apply",
            "--auto-approve",
            "--target",
            "merchant.tea/form.member",
            "-p",
        ])
        .arg(p.dir()))
    .fails();
    assert!(
        r.stderr.contains("is locked by `cardform apply`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("pid {}", tea.id())),
        "{}",
        r.stderr
    );
    // Another merchant (one upload): applies while tea's run, four calls
    // from its end, holds its lock.
    let r = run(p
        .cmd_at(&sb)
        .args([
            "apply",
            "--auto-approve",
            "--target",
            "merchant.bakery/image.logo",
            "-p",
        ])
        .arg(p.dir()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        tea.try_wait().unwrap().is_none(),
        "tea's run was still going"
    );
    // The same merchant with --lock-timeout waits for tea's run, then applies.
    let r = run(p
        .cmd_at(&sb)
        .args([
            "apply",
            "--auto-approve",
            "--lock-timeout",
            "2m",
            "--target",
            "merchant.tea/form.member",
            "-p",
        ])
        .arg(p.dir()));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(tea.wait().unwrap().success());
    // The saved noodles plan is still current: only other merchants changed.
    let r = run(p.cmd_at(&sb).arg("apply").arg(&saved));
    assert_eq!(r.code, 0, "{}", r.stderr);
    run(p
        .cmd_at(&sb)
        .args(["apply", "--auto-approve", "-p"])
        .arg(p.dir()))
    .ok();
    assert_eq!(p.plan(&mut p.cmd_at(&sb)).code, 0);
    assert_eq!(p.export()["resources"].as_object().unwrap().len(), 18);
}
