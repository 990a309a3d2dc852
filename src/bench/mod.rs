//! `cardform bench`: the documented benchmarks. They generate a project, then
//! time the real binary as a child process (wall time, peak memory from
//! getrusage). Figures are printed, never asserted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde::Serialize;

use crate::alipay::{AppPrivateKey, KeySource, SignType};
use crate::sandbox::{self, Faults, SandboxConfig};
use crate::stores::Location;

/// A `1-bit` PNG, enough for the sandbox and the manifest checks.
fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    crate::util::qr::png(width, height, |x, y| {
        (x / 7 + y / 5 + seed as u32).is_multiple_of(3)
    })
}

/// Write a project: `merchants` x `templates`, each template with a form and an
/// activation URL, two images per merchant (shared files).
pub fn generate(dir: &Path, merchants: usize, templates: usize) -> Result<()> {
    generate_with(dir, merchants, templates, false)
}

/// The same, each merchant with its own app_auth_token (a file per merchant)
/// when `tokens`: an ISV's program, one namespace per merchant.
pub fn generate_with(dir: &Path, merchants: usize, templates: usize, tokens: bool) -> Result<()> {
    if tokens {
        std::fs::create_dir_all(dir.join("tokens"))?;
        for m in 0..merchants {
            std::fs::write(
                dir.join(format!("tokens/m{m:05}")),
                format!("202611BB{m:05}bench"),
            )?;
        }
    }
    std::fs::create_dir_all(dir.join("images"))?;
    std::fs::write(dir.join("images/logo.png"), png(500, 500, 1))?;
    std::fs::write(dir.join("images/background.png"), png(1020, 643, 2))?;
    let mut y = String::from(
        "gateway:\n  endpoint: sandbox\ndefaults:\n  images:\n    logo: { file: images/logo.png, role: logo }\n    background: { file: images/background.png, role: background }\n  templates:\n    standard:\n      card_number: { suffix_length: 16 }\n      write_off: qrcode\n      style: { name: \"${var:brand} Club\", logo: logo, background: background }\n      columns: [{ code: POINT, title: Points }]\n      field_rules: [{ field: Point, rule: from_request, value: Point }]\n      form: { required: [mobile], optional: [name] }\n      activation_url: { callback: \"https://cards.example.com/cb\" }\nmerchants:\n",
    );
    for m in 0..merchants {
        y.push_str(&format!(
            "  m{m:05}:\n    variables: {{ brand: Brand {m} }}\n"
        ));
        if tokens {
            y.push_str(&format!("    app_auth_token: {{ file: tokens/m{m:05} }}\n"));
        }
        y.push_str("    templates:\n");
        for t in 0..templates {
            y.push_str(&format!(
                "      t{t}: {{ extends: standard, card_number: {{ prefix: T{t} }} }}\n"
            ));
        }
    }
    std::fs::write(dir.join("cardform.yaml"), y)?;
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct PlanBench {
    pub merchants: usize,
    pub resources: usize,
    pub runs_ms: Vec<u128>,
    pub best_ms: u128,
    pub peak_rss_mb: f64,
}

/// `--state` for a child process (the URL with its password: it goes
/// nowhere but the child's arguments).
fn state_arg(l: &Location) -> std::ffi::OsString {
    l.to_arg()
}

/// Where a benchmark keeps its state: sled under `work`, or a schema of its
/// own in the given database (`bench_<what>_<pid>`).
fn state_location(work: &Path, pg: Option<&Location>, what: &str) -> Location {
    match pg {
        None => Location::dir(work.join(format!("state-{what}"))),
        Some(shared) => shared.separate(&format!("bench_{what}_{}", std::process::id())),
    }
}

/// Wait for `child` (spawned, not yet waited for) and return its exit code and
/// its peak RSS in MB, from `wait4` on that child alone.
fn wait_with_peak_rss(child: &std::process::Child) -> Result<(Option<i32>, f64)> {
    let mut status = 0;
    // SAFETY: wait4 only writes the status and the rusage it is given; the
    // child is ours and has not been reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    if pid < 0 {
        bail!(
            "waiting for the benchmark child failed: {}",
            std::io::Error::last_os_error()
        );
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Ok((code, usage.ru_maxrss as f64 / 1024.0))
}

/// Wait for `child` and return its exit code and its own peak RSS in MB,
/// read from `/proc/<pid>/status` (`VmHWM`, the high-water mark of the
/// child's own address space) while it runs. Unlike `wait4`'s `ru_maxrss`,
/// it is not charged with this process's RSS at the fork: a benchmark
/// process holding a sandbox full of cards measures its child truly.
fn wait_with_hwm(child: &mut std::process::Child) -> Result<(Option<i32>, f64)> {
    let path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child.try_wait()? {
            return Ok((status.code(), peak_kb as f64 / 1024.0));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn children_cpu() -> Duration {
    // SAFETY: as above.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn cardform() -> Result<Command> {
    let mut c = Command::new(std::env::current_exe().context("cannot find the cardform binary")?);
    for k in crate::settings::cardform_variables() {
        c.env_remove(k);
    }
    Ok(c)
}

/// Generate the plan benchmark's project under `work` and seed a state that
/// matches it, as if applied (ids are made up: plan never calls the gateway).
/// Returns the number of resources. [`plan`] runs this in a child process.
pub fn prepare_plan(
    work: &Path,
    merchants: usize,
    templates: usize,
    pg: Option<&Location>,
) -> Result<usize> {
    let project = work.join("project");
    generate(&project, merchants, templates)?;
    let desired = crate::ops::load::load(&project, &Default::default())?;
    // Given a URL, it is the schema `bench plan` chose for this run.
    let location = match pg {
        Some(shared) => shared.clone(),
        None => state_location(work, None, "plan"),
    };
    let store = location.backend().open("bench", Duration::ZERO)?;
    let mut snap = store.snapshot()?;
    for (i, r) in desired.resources.values().enumerate() {
        let mut ids = crate::state::Ids::default();
        match r.address.kind {
            crate::model::Kind::Image => ids.image_id = Some(format!("{i:032}")),
            _ => ids.template_id = Some(format!("{i:032}")),
        }
        snap.resources.insert(
            r.address.clone(),
            crate::state::ResourceState {
                address: r.address.clone(),
                kind: r.address.kind,
                ids,
                hash: r.attrs.hash(),
                attrs: crate::state::raw_attrs(&r.attrs),
                applied_at: crate::state::now_rfc3339(),
            },
        );
    }
    store.replace_all(&snap)?;
    Ok(desired.resources.len())
}

/// Plan with no changes on a generated project whose state already matches.
///
/// Peak memory is each plan process's own. The kernel charges a spawned child
/// with its parent's peak RSS up to the child's exec, so the project is
/// generated and the state seeded in a child of its own (`bench
/// prepare-plan`), this process stays small, and each plan run is reaped with
/// `wait4` for its own figures.
pub fn plan(
    work: &Path,
    merchants: usize,
    templates: usize,
    runs: usize,
    pg: Option<&Location>,
) -> Result<PlanBench> {
    let project = work.join("project");
    let state = state_arg(&state_location(work, pg, "plan"));
    let mut prepare = cardform()?;
    if pg.is_some() {
        prepare.arg("--state").arg(&state);
    }
    let prepared = prepare
        .args(["bench", "prepare-plan", "--merchants"])
        .arg(merchants.to_string())
        .arg("--templates")
        .arg(templates.to_string())
        .arg("--dir")
        .arg(work)
        .output()?;
    if !prepared.status.success() {
        bail!(
            "preparing the plan benchmark failed:\n{}",
            String::from_utf8_lossy(&prepared.stderr)
        );
    }
    let resources: usize = String::from_utf8_lossy(&prepared.stdout)
        .trim()
        .parse()
        .context("bench prepare-plan did not print a resource count")?;
    let mut times = Vec::new();
    let mut peak_rss_mb: f64 = 0.0;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let mut child = cardform()?
            .arg("--state")
            .arg(&state)
            .args(["plan", "--detailed-exitcode", "-p"])
            .arg(&project)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
        }
        let (code, rss) = wait_with_peak_rss(&child)?;
        times.push(start.elapsed().as_millis());
        peak_rss_mb = peak_rss_mb.max(rss);
        if code != Some(0) {
            bail!("the benchmark plan did not come back empty (exit {code:?}):\n{stderr}");
        }
    }
    Ok(PlanBench {
        merchants,
        resources,
        best_ms: *times.iter().min().unwrap_or(&0),
        runs_ms: times,
        peak_rss_mb,
    })
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ApplyRun {
    /// 40005 answers met (with a configured rate limit: none, if it holds).
    pub throttled: u64,
    pub retries: u64,
    pub wall_ms: u128,
    pub calls_per_s: f64,
    /// Calls/s over the latency bound; none without latency.
    pub fraction_of_bound: Option<f64>,
    pub client_cpu_ms: u128,
}

#[derive(Debug, Serialize)]
pub struct ApplyBench {
    pub templates: usize,
    pub calls: usize,
    pub parallelism: usize,
    pub latency_ms: u128,
    /// parallelism / latency; none without latency (CPU-bound).
    pub latency_bound_calls_per_s: Option<f64>,
    /// The app's rate limit, configured and enforced by the sandbox.
    pub rate_limit: Option<f64>,
    /// Each run from an empty state against an empty sandbox.
    pub runs: Vec<ApplyRun>,
    /// The median run (by wall time).
    pub median: ApplyRun,
    pub sign_us: f64,
    /// Signing time / client CPU time, in the median run.
    pub signing_share_of_client_cpu: f64,
}

/// Apply `templates` new templates (with images, forms, URLs) against a
/// sandbox with injected latency, served from this process; `runs` times,
/// each from an empty state against an empty sandbox.
pub async fn apply(
    work: &Path,
    templates: usize,
    latency: Duration,
    parallelism: usize,
    runs: usize,
    pg: Option<&Location>,
    rate_limit: Option<f64>,
) -> Result<ApplyBench> {
    let per = 5;
    let merchants = templates.div_ceil(per);
    let project = work.join("project");
    generate(&project, merchants, per)?;
    if let Some(r) = rate_limit {
        // The project holds to the limit the sandbox enforces.
        let file = project.join("cardform.yaml");
        let text = std::fs::read_to_string(&file)?;
        std::fs::write(
            &file,
            text.replacen(
                "gateway:\n",
                &format!("gateway:\n  rate_limits: {{ per_second: {r} }}\n"),
                1,
            ),
        )?;
    }
    let key_pem = AppPrivateKey::generate_pem();
    let key_path: PathBuf = work.join("app.pem");
    std::fs::write(&key_path, &key_pem)?;
    let key = AppPrivateKey::parse(&key_pem, KeySource::File(key_path.clone()))?;
    // Per merchant: one batchquery (are there templates this state does not
    // know?), two image uploads, and per template a create, a form, a URL.
    let calls = merchants * 3 + merchants * per * 3;
    let bound = (!latency.is_zero()).then(|| parallelism as f64 / latency.as_secs_f64());
    let mut results = Vec::new();
    for run in 0..runs.max(1) {
        let running = sandbox::start(SandboxConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: work.join(format!("sandbox-{run}")),
            apps: vec![("2021000000000009".into(), key.public_key_base64())],
            faults: Faults {
                latency,
                throttle_rps: rate_limit,
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
        .await?;
        let cpu_before = children_cpu();
        let start = Instant::now();
        let mut cmd = cardform()?;
        cmd.arg("--state")
            .arg(state_arg(&state_location(
                work,
                pg,
                &format!("apply_{run}"),
            )))
            .args([
                "apply",
                "--auto-approve",
                "--json",
                "--parallelism",
                &parallelism.to_string(),
                "-p",
            ])
            .arg(&project)
            .env("CARDFORM_ENDPOINT", running.gateway_url())
            .env("CARDFORM_APP_ID", "2021000000000009")
            .env("CARDFORM_PRIVATE_KEY", &key_path)
            .env(
                "CARDFORM_ALIPAY_PUBLIC_KEY",
                running.platform_public_key_path(),
            );
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        let wall = start.elapsed();
        let cpu = children_cpu().saturating_sub(cpu_before);
        running.stop().await;
        if !out.status.success() {
            bail!(
                "the benchmark apply failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let rate = calls as f64 / wall.as_secs_f64();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        results.push(ApplyRun {
            throttled: report["throttled"].as_object().map_or(0, |m| {
                m.values().map(|t| t["answers"].as_u64().unwrap_or(0)).sum()
            }),
            retries: report["retries"].as_u64().unwrap_or(0),
            wall_ms: wall.as_millis(),
            calls_per_s: rate,
            fraction_of_bound: bound.map(|b| rate / b),
            client_cpu_ms: cpu.as_millis(),
        });
    }
    // Cost of one client signature (the request signing every call pays).
    let msg = vec![b'x'; 600];
    let n = 300;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(key.sign(SignType::Rsa2, &msg));
    }
    let sign = t.elapsed() / n;
    let mut order: Vec<usize> = (0..results.len()).collect();
    order.sort_by_key(|&i| results[i].wall_ms);
    let median = results[order[order.len() / 2]];
    Ok(ApplyBench {
        templates: merchants * per,
        calls,
        parallelism,
        latency_ms: latency.as_millis(),
        latency_bound_calls_per_s: bound,
        rate_limit,
        sign_us: sign.as_secs_f64() * 1e6,
        signing_share_of_client_cpu: (sign.as_secs_f64() * calls as f64)
            / (median.client_cpu_ms as f64 / 1000.0).max(1e-9),
        median,
        runs: results,
    })
}

#[derive(Debug, Serialize)]
pub struct RefreshBench {
    pub merchants: usize,
    pub templates: usize,
    pub latency_ms: u128,
    /// `cardform drift` on an unchanged program: the cheap pass only.
    pub quiet: RefreshRun,
    /// After every template of one merchant was edited outside cardform.
    pub one_merchant_edited: RefreshRun,
}

#[derive(Debug, Serialize)]
pub struct RefreshRun {
    pub wall_ms: u128,
    pub calls: u64,
    pub checked: u64,
    pub queried: u64,
    pub drifted: usize,
}

/// Apply `merchants` x `templates` against a fast sandbox, then time
/// `cardform drift` against the same sandbox data with `latency`.
pub async fn refresh(
    work: &Path,
    merchants: usize,
    templates: usize,
    latency: Duration,
) -> Result<RefreshBench> {
    let project = work.join("project");
    generate_with(&project, merchants, templates, true)?;
    let key_pem = AppPrivateKey::generate_pem();
    let key_path: PathBuf = work.join("app.pem");
    std::fs::write(&key_path, &key_pem)?;
    let key = AppPrivateKey::parse(&key_pem, KeySource::File(key_path.clone()))?;
    let app = "2021000000000009";
    let start_sandbox = |latency: Duration| {
        sandbox::start(SandboxConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: work.join("sandbox"),
            apps: vec![(app.into(), key.public_key_base64())],
            faults: Faults {
                latency,
                ..Faults::default()
            },
            ..SandboxConfig::default()
        })
    };
    let run = |running: &sandbox::RunningSandbox, args: &[&str]| -> Result<Command> {
        let mut cmd = cardform()?;
        cmd.arg("--state")
            .arg(work.join("state"))
            .args(args)
            .arg("-p")
            .arg(&project)
            .env("CARDFORM_ENDPOINT", running.gateway_url())
            .env("CARDFORM_APP_ID", app)
            .env("CARDFORM_PRIVATE_KEY", &key_path)
            .env(
                "CARDFORM_ALIPAY_PUBLIC_KEY",
                running.platform_public_key_path(),
            );
        Ok(cmd)
    };
    let fast = start_sandbox(Duration::ZERO).await?;
    let mut cmd = run(&fast, &["apply", "--auto-approve", "--parallelism", "16"])?;
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    if !out.status.success() {
        bail!(
            "the benchmark's apply failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fast.stop().await;
    let slow = start_sandbox(latency).await?;
    let drift = |slow: &sandbox::RunningSandbox| -> Result<Command> {
        run(slow, &["drift", "--format", "json"])
    };
    let measure = |mut cmd: Command| async move {
        let start = Instant::now();
        let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
        let wall = start.elapsed();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "cardform drift printed no report:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok::<_, anyhow::Error>(RefreshRun {
            wall_ms: wall.as_millis(),
            calls: n("calls"),
            checked: n("checked"),
            queried: n("queried"),
            drifted: v["drifted"].as_array().map_or(0, Vec::len),
        })
    };
    let quiet = measure(drift(&slow)?).await?;
    // A console edit of every template of the first merchant.
    let state: serde_json::Value = {
        let mut cmd = cardform()?;
        cmd.arg("--state")
            .arg(work.join("state"))
            .args(["state", "export"]);
        serde_json::from_slice(&cmd.output()?.stdout)?
    };
    let ids: Vec<String> = state["resources"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("merchant.m00000/template."))
        .filter_map(|(_, r)| r["ids"]["template_id"].as_str().map(str::to_string))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let biz = serde_json::json!({
            "request_id": format!("bench-console-{i}"),
            "template_id": id,
            "column_info_list": [{ "code": "POINT", "title": "Edited", "operate_type": "staticinfo" }],
        });
        let mut cmd = cardform()?;
        cmd.arg("--state")
            .arg(work.join("state"))
            .args([
                "api",
                "alipay.marketing.card.template.modify",
                "--biz-content",
            ])
            .arg(biz.to_string())
            .env("CARDFORM_APP_AUTH_TOKEN", "202611BB00000bench")
            .env("CARDFORM_ENDPOINT", slow.gateway_url())
            .env("CARDFORM_APP_ID", app)
            .env("CARDFORM_PRIVATE_KEY", &key_path)
            .env(
                "CARDFORM_ALIPAY_PUBLIC_KEY",
                slow.platform_public_key_path(),
            );
        let out = cmd.output()?;
        if !out.status.success() {
            bail!(
                "the console edit failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let one_merchant_edited = measure(drift(&slow)?).await?;
    slow.stop().await;
    Ok(RefreshBench {
        merchants,
        templates: merchants * templates,
        latency_ms: latency.as_millis(),
        quiet,
        one_merchant_edited,
    })
}

/// One timed `cards open` run.
#[derive(Debug, Clone, Serialize)]
pub struct CardsRun {
    pub wall_ms: u128,
    pub cards_per_s: f64,
    pub peak_rss_mb: f64,
    pub opened: u64,
    pub already_open: u64,
    pub calls: u64,
    pub throttled: u64,
}

#[derive(Debug, Serialize)]
pub struct CardsBench {
    pub rows: usize,
    pub parallelism: usize,
    pub latency_ms: u128,
    /// parallelism / latency: card.open calls per second at most.
    pub latency_bound_per_s: Option<f64>,
    /// The app's rate limit (configured and enforced by the sandbox).
    pub rate_limit: Option<f64>,
    pub csv_mb: f64,
    /// From an empty ledger: every row opens a card.
    pub first: CardsRun,
    /// The same file again: every card is open already; nothing is called.
    pub again: CardsRun,
    /// Trades synced on the open cards (`cards consume`), if asked for.
    pub trades: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trades_csv_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume: Option<CardsRun>,
    /// The same trades again: each synced already; nothing is called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consume_again: Option<CardsRun>,
}

/// `cards open` over `rows` generated members (each with an auth_token the
/// sandbox issued) against a sandbox with `latency` (and, with
/// `rate_limit`, the app's limit enforced there and configured in the
/// project); then the same file again. Peak memory from `wait4`.
pub async fn cards(
    work: &Path,
    rows: usize,
    latency: Duration,
    parallelism: usize,
    rate_limit: Option<f64>,
    trades: usize,
) -> Result<CardsBench> {
    let project = work.join("project");
    std::fs::create_dir_all(project.join("images"))?;
    std::fs::write(project.join("images/logo.png"), png(500, 500, 1))?;
    std::fs::write(project.join("images/background.png"), png(1020, 643, 2))?;
    let limits = rate_limit
        .map(|r| format!("  rate_limits: {{ per_second: {r} }}\n"))
        .unwrap_or_default();
    std::fs::write(
        project.join("cardform.yaml"),
        format!(
            "project: bench-cards\ngateway:\n  endpoint: sandbox\n{limits}merchants:\n  brew:\n    images:\n      logo: {{ file: images/logo.png, role: logo }}\n      bg: {{ file: images/background.png, role: background }}\n    templates:\n      club:\n        card_number: {{ prefix: BREW, suffix_length: 12 }}\n        write_off: qrcode\n        style: {{ name: Brew Club, logo: logo, background: bg }}\n        tiers:\n          - {{ level: silver }}\n          - {{ level: gold }}\n"
        ),
    )?;
    let rig = Rig::new(work, work.join("state").into_os_string())?;
    let env = |cmd: &mut Command, running: &sandbox::RunningSandbox| rig.env(cmd, running);
    // Set up on a fast sandbox: the templates, and the members' tokens.
    let fast = rig.start(Faults::default()).await?;
    rig.apply(&project, &fast).await?;
    let csv_path = work.join("cards.csv");
    {
        let mut w = csv::Writer::from_path(&csv_path)?;
        w.write_record([
            "external_card_no",
            "user_id",
            "auth_token",
            "open_date",
            "valid_date",
            "level",
            "point",
            "balance",
        ])?;
        let mut made = 0;
        while made < rows {
            let n = (rows - made).min(50_000);
            let members = fast.enrol(rig.app, n).await.map_err(anyhow::Error::msg)?;
            for m in members.as_array().context("members")? {
                let i = made;
                made += 1;
                w.write_record([
                    format!("B-{i:07}").as_str(),
                    m["user_id"].as_str().unwrap_or_default(),
                    m["auth_token"].as_str().unwrap_or_default(),
                    "2024-01-01 10:00:00",
                    "2099-12-31 23:59:59",
                    if i % 3 == 0 { "gold" } else { "silver" },
                    &(i % 1000).to_string(),
                    "10.50",
                ])?;
            }
        }
        w.flush()?;
    }
    fast.stop().await;
    let running = rig
        .start(Faults {
            latency,
            throttle_rps: rate_limit,
            ..Faults::default()
        })
        .await?;
    let timed = |job: &str, csv: &Path, results: &str| -> Result<CardsRun> {
        let mut cmd = cardform()?;
        env(&mut cmd, &running);
        cmd.args([
            "cards",
            job,
            "--json",
            "--template",
            "merchant.brew/template.club",
            "--parallelism",
            &parallelism.to_string(),
            "-p",
        ])
        .arg(&project)
        .arg("--csv")
        .arg(csv)
        .arg("--results")
        .arg(work.join(results))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
        let start = Instant::now();
        let mut child = cmd.spawn()?;
        let mut stdout = child.stdout.take().context("stdout")?;
        let reading = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
        });
        let (code, peak) = wait_with_hwm(&mut child)?;
        let wall = start.elapsed();
        let text = reading
            .join()
            .map_err(|_| anyhow::anyhow!("reading the report panicked"))??;
        if code != Some(0) {
            bail!("the benchmark's cards {job} failed (exit {code:?}):\n{text}");
        }
        let r: serde_json::Value = serde_json::from_str(&text)?;
        let count = |k: &str| r["counts"][k].as_u64().unwrap_or(0);
        Ok(CardsRun {
            wall_ms: wall.as_millis(),
            cards_per_s: r["counts"]["rows"].as_u64().unwrap_or(0) as f64 / wall.as_secs_f64(),
            peak_rss_mb: peak,
            opened: count("opened") + count("synced"),
            already_open: count("already_open") + count("already_synced"),
            calls: r["calls"].as_u64().unwrap_or(0),
            throttled: r["throttled"].as_u64().unwrap_or(0),
        })
    };
    let first = tokio::task::block_in_place(|| timed("open", &csv_path, "results-1.csv"))?;
    let again = tokio::task::block_in_place(|| timed("open", &csv_path, "results-2.csv"))?;
    // Trades on the open cards (`cards consume`), spread over them, each
    // card's in rising time; then the same file again.
    let (trades_csv, consumed) = if trades > 0 {
        let path = work.join("trades.csv");
        let mut w = csv::Writer::from_path(&path)?;
        w.write_record([
            "external_card_no",
            "trade_no",
            "trade_type",
            "trade_time",
            "trade_name",
            "act_pay_amount",
            "point",
            "balance",
        ])?;
        let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .context("a date")?;
        for k in 0..trades {
            let card = k % rows;
            let time = start + chrono::Duration::seconds((k / rows) as i64 * 60);
            w.write_record([
                format!("B-{card:07}").as_str(),
                &format!("T-{k:09}"),
                if k % 10 == 9 { "RETURN" } else { "TRADE" },
                &time.format("%Y-%m-%d %H:%M:%S").to_string(),
                "Latte",
                "30.00",
                &((k / rows) * 10).to_string(),
                "10.50",
            ])?;
        }
        w.flush()?;
        let first = tokio::task::block_in_place(|| timed("consume", &path, "trades-1.csv"))?;
        let again = tokio::task::block_in_place(|| timed("consume", &path, "trades-2.csv"))?;
        (
            Some(std::fs::metadata(&path)?.len() as f64 / 1e6),
            Some((first, again)),
        )
    } else {
        (None, None)
    };
    running.stop().await;
    Ok(CardsBench {
        rows,
        parallelism,
        latency_ms: latency.as_millis(),
        latency_bound_per_s: (!latency.is_zero())
            .then(|| parallelism as f64 / latency.as_secs_f64()),
        rate_limit,
        csv_mb: std::fs::metadata(&csv_path)?.len() as f64 / 1e6,
        first,
        again,
        trades,
        trades_csv_mb: trades_csv,
        consume: consumed.as_ref().map(|c| c.0.clone()),
        consume_again: consumed.map(|c| c.1),
    })
}

/// What the card benchmarks share: an app key of their own, the sandbox's
/// data directory, the state, and how a child `cardform` reaches them.
struct Rig {
    app: &'static str,
    key_path: PathBuf,
    key: AppPrivateKey,
    data: PathBuf,
    /// `--state`: a directory or a postgres:// URL.
    state: std::ffi::OsString,
}

impl Rig {
    fn new(work: &Path, state: std::ffi::OsString) -> Result<Rig> {
        let key_pem = AppPrivateKey::generate_pem();
        let key_path = work.join("app.pem");
        std::fs::write(&key_path, &key_pem)?;
        let key = AppPrivateKey::parse(&key_pem, KeySource::File(key_path.clone()))?;
        Ok(Rig {
            app: "2021000000000009",
            key_path,
            key,
            data: work.join("sandbox"),
            state,
        })
    }

    /// The sandbox on the rig's data, with `faults`.
    async fn start(&self, faults: Faults) -> Result<sandbox::RunningSandbox> {
        Ok(sandbox::start(SandboxConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: self.data.clone(),
            apps: vec![(self.app.into(), self.key.public_key_base64())],
            faults,
            ..SandboxConfig::default()
        })
        .await?)
    }

    /// A child `cardform` pointed at `running` and the rig's state.
    fn env(&self, cmd: &mut Command, running: &sandbox::RunningSandbox) {
        cmd.arg("--state")
            .arg(&self.state)
            .env("CARDFORM_ENDPOINT", running.gateway_url())
            .env("CARDFORM_APP_ID", self.app)
            .env("CARDFORM_PRIVATE_KEY", &self.key_path)
            .env(
                "CARDFORM_ALIPAY_PUBLIC_KEY",
                running.platform_public_key_path(),
            );
    }

    /// Apply `project` against `running`.
    async fn apply(&self, project: &Path, running: &sandbox::RunningSandbox) -> Result<()> {
        let mut apply = cardform()?;
        self.env(&mut apply, running);
        apply.args(["apply", "--auto-approve", "-p"]).arg(project);
        let out = tokio::task::spawn_blocking(move || apply.output()).await??;
        if !out.status.success() {
            bail!(
                "the benchmark's apply failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// One `bench serve` run.
#[derive(Debug, Clone, Serialize)]
pub struct ServeBench {
    pub replicas: usize,
    pub activations: usize,
    pub latency_ms: u128,
    pub parallelism: usize,
    /// replicas x parallelism / (3 calls x latency): activations a second at most.
    pub bound_per_s: f64,
    pub opened: usize,
    pub failed: usize,
    pub wall_ms: u128,
    pub per_s: f64,
}

/// `cards serve` under a burst: `replicas` services (sharing a PostgreSQL
/// state when there are several), `activations` members whose callbacks
/// arrive at once, round-robin, against a sandbox answering `latency` after
/// each call. Each activation is three gateway calls in a row.
pub async fn serve(
    work: &Path,
    replicas: usize,
    activations: usize,
    latency: Duration,
    parallelism: usize,
    pg: Option<&Location>,
) -> Result<ServeBench> {
    if replicas > 1 && pg.is_none() {
        bail!(
            "several replicas share a PostgreSQL state: pass --state postgres://...\nhint: a ledger beside a local state is one process's"
        );
    }
    let project = work.join("project");
    std::fs::create_dir_all(project.join("images"))?;
    std::fs::write(project.join("images/logo.png"), png(500, 500, 1))?;
    std::fs::write(project.join("images/background.png"), png(1020, 643, 2))?;
    std::fs::write(
        project.join("cardform.yaml"),
        "project: bench-serve\ngateway:\n  endpoint: sandbox\nmerchants:\n  brew:\n    images:\n      logo: { file: images/logo.png, role: logo }\n      bg: { file: images/background.png, role: background }\n    templates:\n      club:\n        card_number: { prefix: BREW, suffix_length: 12 }\n        write_off: qrcode\n        style: { name: Brew Club, logo: logo, background: bg }\n        form: { required: [mobile] }\n        activation_url:\n          callback: http://127.0.0.1:9/activated\n          issue: { level: silver }\n        tiers:\n          - { level: silver }\n          - { level: gold }\n",
    )?;
    // The URL with its password (it goes nowhere but the children's
    // arguments), in a schema of its own.
    let state = state_arg(&state_location(work, pg, "serve"));
    let rig = Rig::new(work, state)?;
    let env = |cmd: &mut Command, running: &sandbox::RunningSandbox| rig.env(cmd, running);
    // Applied and the members' callbacks made on a fast sandbox.
    let fast = rig.start(Faults::default()).await?;
    rig.apply(&project, &fast).await?;
    let mut output = cardform()?;
    env(&mut output, &fast);
    output.args(["output", "--format", "json"]);
    let out = tokio::task::spawn_blocking(move || output.output()).await??;
    let urls: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "the benchmark's output failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let silver = urls["brew"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|t| t["address"] == "merchant.brew/template.club.silver")
        })
        .and_then(|t| t["apply_card_url"].as_str())
        .context("no activation URL")?
        .to_string();
    let mut callbacks = Vec::with_capacity(activations);
    for i in 0..activations {
        let cb = fast
            .activate(&silver, &format!("139{i:08}"))
            .await
            .map_err(anyhow::Error::msg)?;
        let path = cb.find("/activated").context("a callback path")?;
        callbacks.push(cb[path..].to_string());
    }
    fast.stop().await;
    let running = rig
        .start(Faults {
            latency,
            ..Faults::default()
        })
        .await?;
    let mut children = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..replicas {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let mut cmd = cardform()?;
        env(&mut cmd, &running);
        cmd.args(["cards", "serve", "-p"])
            .arg(&project)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--parallelism", &parallelism.to_string()])
            .args(["--failure-budget", "1000000"])
            .args(["--client-failure-budget", "1000000"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let first = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .map(|_| line)
        })
        .await??;
        if !first.starts_with("cards serve listening") {
            bail!("cards serve did not start: {first}");
        }
        children.push(child);
        ports.push(port);
    }
    let started = Instant::now();
    let answers = futures_util::stream::iter(callbacks.iter().enumerate().map(|(i, path)| {
        let url = format!("http://127.0.0.1:{}{path}", ports[i % ports.len()]);
        // Members wait as long as the burst takes: the benchmark measures
        // the service, not a browser's patience.
        async move { sandbox::deliver_callback(&url, Duration::from_secs(600)).await }
    }))
    .buffer_unordered(512)
    .collect::<Vec<_>>()
    .await;
    let wall = started.elapsed();
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    running.stop().await;
    // The member's page: a redirect to done_url, or "your card is ready".
    let opened = answers
        .iter()
        .filter(|a| matches!(a, Ok((302 | 200, _))))
        .count();

    Ok(ServeBench {
        replicas,
        activations,
        latency_ms: latency.as_millis(),
        parallelism,
        bound_per_s: (replicas * parallelism) as f64 / (3.0 * latency.as_secs_f64().max(1e-6)),
        opened,
        failed: activations - opened,
        wall_ms: wall.as_millis(),
        per_s: opened as f64 / wall.as_secs_f64(),
    })
}
