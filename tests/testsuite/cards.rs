//! Members' cards (issue 16): bulk digitisation with kill -9 and re-runs,
//! sync, the activation callback service under repeated and dropped
//! callbacks, and no member data anywhere cardform writes.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// A project with a tiered template (silver, gold), a form, and an
/// activation URL whose callback is `cards serve` on `port`.
fn project(dir: &Path, port: u16, members: &str) -> PathBuf {
    let p = dir.join("project");
    std::fs::create_dir_all(p.join("images")).unwrap();
    write_png(&p.join("images/logo.png"), 500, 500, 1);
    write_png(&p.join("images/bg.png"), 1020, 643, 2);
    std::fs::write(p.join("members.csv"), members).unwrap();
    std::fs::write(
        p.join("cardform.yaml"),
        format!(
            r#"project: members
merchants:
  brew:
    images:
      logo: {{ file: images/logo.png, role: logo }}
      bg: {{ file: images/bg.png, role: background }}
    templates:
      club:
        card_number: {{ prefix: BREW, suffix_length: 12 }}
        write_off: qrcode
        style: {{ name: Brew Club, logo: logo, background: bg }}
        form: {{ required: [mobile], optional: [name, birthday] }}
        activation_url:
          callback: http://127.0.0.1:{port}/activated
          issue:
            level: silver
            members: {{ file: members.csv }}
            done_url: https://brew.example.com/welcome
        tiers:
          - {{ level: silver, level_name: Silver }}
          - {{ level: gold, level_name: Gold }}
"#
        ),
    )
    .unwrap();
    p
}

/// The till's bearer token in the tests (`Setup::take_transactions`).
const TOKEN: &str = "till-secret-0123456789";

struct Setup {
    tmp: tempfile::TempDir,
    sb: Sandbox,
    project: PathBuf,
    /// A directory, or a postgres:// URL.
    state: PathBuf,
    port: u16,
    /// Environment every `cardform` of this setup runs with.
    env: Vec<(String, String)>,
}

impl Setup {
    fn new(members: &str) -> Setup {
        Setup::with_state(members, None)
    }

    fn with_state(members: &str, state: Option<&str>) -> Setup {
        Setup::build(members, state, None)
    }

    /// With `aes`, the app has AES content encryption switched on at the
    /// sandbox, and cardform has the key.
    fn build(members: &str, state: Option<&str>, aes: Option<&str>) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let mut sandbox_args = vec![];
        let mut env = vec![];
        if let Some(key) = aes {
            let file = tmp.path().join("aes.key");
            std::fs::write(&file, key).unwrap();
            sandbox_args = vec![
                "--encrypt-key".to_string(),
                format!("{APP_ID}={}", file.display()),
            ];
            env.push(("CARDFORM_ENCRYPT_KEY".to_string(), "aes.key".to_string()));
        }
        let args: Vec<&str> = sandbox_args.iter().map(String::as_str).collect();
        let sb = Sandbox::start(&tmp.path().join("sandbox"), &args);
        let port = free_port();
        let project = project(tmp.path(), port, members);
        let state = state.map_or_else(|| tmp.path().join("state"), PathBuf::from);
        let s = Setup {
            tmp,
            sb,
            project,
            state,
            port,
            env,
        };
        s.cardform()
            .args(["apply", "--auto-approve", "-p"])
            .arg(&s.project)
            .output()
            .map(Run::from)
            .unwrap()
            .ok();
        s
    }

    /// `cardform` on this sandbox and state, run from the temporary
    /// directory (paths relative to it work).
    fn cardform(&self) -> Command {
        self.cardform_on(&self.state.display().to_string())
    }

    /// The same on another state (a directory or a postgres:// URL).
    fn cardform_on(&self, state: &str) -> Command {
        let mut c = self.sb.cardform();
        c.arg("--state")
            .arg(state)
            .current_dir(self.tmp.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn ids(&self) -> BTreeMap<String, String> {
        let out = run(self.cardform().args(["output", "--format", "json"]))
            .ok()
            .json();
        out["brew"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["address"].as_str().unwrap().to_string(),
                    t["template_id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The club takes the till's transactions, with [`TOKEN`] in
    /// `BREW_TILL_TOKEN`.
    fn take_transactions(&self) {
        let manifest = self.project.join("cardform.yaml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(
            &manifest,
            text.replace(
                "done_url: https://brew.example.com/welcome",
                "done_url: https://brew.example.com/welcome\n            transactions: { token: { env: BREW_TILL_TOKEN } }",
            ),
        )
        .unwrap();
    }

    /// The silver tier's activation URL (as `output` gives it).
    fn silver_url(&self) -> String {
        let out = run(self.cardform().args(["output", "--format", "json"]))
            .ok()
            .json();
        out["brew"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["address"] == "merchant.brew/template.club.silver")
            .unwrap()["apply_card_url"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn gateway_url(&self) -> String {
        self.sb.url.trim_end_matches("/gateway.do").to_string()
    }

    fn cards(&self) -> Value {
        let a = http(
            "GET",
            &format!("{}/_sandbox/cards", self.gateway_url()),
            None,
        );
        assert_eq!(a.status, 200, "{}", a.body);
        serde_json::from_str(&a.body).unwrap()
    }

    fn enrol(&self, count: usize) -> Vec<Value> {
        let a = http(
            "POST",
            &format!("{}/_sandbox/members", self.gateway_url()),
            Some(&json!({"app_id": APP_ID, "count": count}).to_string()),
        );
        assert_eq!(a.status, 200, "{}", a.body);
        serde_json::from_str::<Value>(&a.body)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

/// Every file under `dir`, concatenated (what cardform wrote there).
fn bytes_under(dir: &Path, out: &mut Vec<u8>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            bytes_under(&p, out);
        } else {
            out.extend(std::fs::read(&p).unwrap_or_default());
        }
    }
}

/// The needles found in `hay` (each is looked up at positions where its
/// first four bytes occur, so a large haystack stays cheap).
fn found_in(hay: &[u8], needles: &HashSet<String>) -> Vec<String> {
    let mut by_len: BTreeMap<usize, HashSet<&[u8]>> = BTreeMap::new();
    let mut prefixes: HashSet<&[u8]> = HashSet::new();
    for n in needles {
        assert!(n.len() >= 4, "needle too short: {n}");
        by_len.entry(n.len()).or_default().insert(n.as_bytes());
        prefixes.insert(&n.as_bytes()[..4]);
    }
    let mut hits = Vec::new();
    for i in 0..hay.len().saturating_sub(3) {
        if !prefixes.contains(&hay[i..i + 4]) {
            continue;
        }
        for (len, set) in &by_len {
            if let Some(w) = hay.get(i..i + len)
                && set.contains(w)
            {
                hits.push(String::from_utf8_lossy(w).into_owned());
            }
        }
    }
    hits
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Run `cards open` until its results file has `at_least` lines, then kill -9.
fn kill_when(mut cmd: Command, results: &Path, at_least: usize) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if lines(results) >= at_least {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("finished ({status}) before it could be killed");
        }
        assert!(start.elapsed() < Duration::from_secs(300), "too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn parse_results(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

const HEADER: &str = "external_card_no,user_id,auth_token,refresh_token,open_date,valid_date,level,point,balance,name,cell,birth,front_label_1,front_value_1";

/// One good row: every third member on gold, odd ones by refresh token.
fn row(i: usize, m: &Value, point: u32) -> String {
    let (token, refresh) = if i.is_multiple_of(2) {
        (m["auth_token"].as_str().unwrap(), "")
    } else {
        ("", m["refresh_token"].as_str().unwrap())
    };
    format!(
        "P-{i:05},{},{token},{refresh},2024-01-01 10:00:00,2099-12-31 23:59:59,{},{point},{}.50,Member-{i:05},139{i:08},1971-01-{:02},Tier,{}",
        m["user_id"].as_str().unwrap(),
        if i.is_multiple_of(3) {
            "gold"
        } else {
            "silver"
        },
        i % 100,
        1 + i % 28,
        if i.is_multiple_of(3) {
            "Gold"
        } else {
            "Silver"
        },
    )
}

#[test]
fn ten_thousand_rows_survive_kill_9_and_open_each_card_once() {
    const N: usize = 10_000;
    let s = Setup::new("cell,external_card_no\n");
    let members = s.enrol(N);
    let mut good = vec![HEADER.to_string()];
    for (i, m) in members.iter().enumerate() {
        good.push(row(i, m, 10));
    }
    // Three bad rows among the good ones (lines 4, 5002 and 10,004).
    let mut with_bad = good.clone();
    let bad_member = &members[0];
    with_bad.insert(
        3,
        format!(
            "BAD-1,{},tok,,2024-01-01 10:00:00,2099-12-31 23:59:59,silver,1,1,Member-bad,13912345678,1971/01/01,,",
            bad_member["user_id"].as_str().unwrap()
        ),
    );
    with_bad.insert(
        5001,
        "BAD-2,13912345678,tok,,2024-01-01 10:00:00,2099-12-31 23:59:59,silver,1.234,1,,,,,".into(),
    );
    with_bad.push(format!(
        "BAD-3,{},tok,,2024-01-01 10:00:00,2099-12-31 23:59:59,platinum,1,1,,,,,",
        bad_member["user_id"].as_str().unwrap()
    ));
    std::fs::write(s.tmp.path().join("cards.csv"), with_bad.join("\n") + "\n").unwrap();
    std::fs::write(s.tmp.path().join("clean.csv"), good.join("\n") + "\n").unwrap();
    let open = |csv: &str, results: &str| {
        let mut c = s.cardform();
        c.args([
            "cards",
            "open",
            "-p",
            "project",
            "--template",
            "merchant.brew/template.club",
            "--csv",
            csv,
            "--results",
            results,
        ]);
        c
    };
    // Killed early, killed again later, then run to the end.
    kill_when(
        open("cards.csv", "r1.csv"),
        &s.tmp.path().join("r1.csv"),
        1_500,
    );
    kill_when(
        open("cards.csv", "r2.csv"),
        &s.tmp.path().join("r2.csv"),
        6_000,
    );
    let third = run(&mut open("cards.csv", "r3.csv")).fails();
    // The bad rows are named by file, line and column; the others went ahead.
    for want in [
        "cards.csv:4 (BAD-1): invalid: column `birth`: must be yyyy-MM-dd",
        "cards.csv:5002 (BAD-2): invalid: column `user_id`: must be 16 digits starting 2088",
        "column `point`: must be a number with at most two decimals",
        "cards.csv:10004 (BAD-3): invalid: column `level`: `platinum` is not a level",
    ] {
        assert!(third.stdout.contains(want), "{want}\n{}", third.stdout);
    }
    let results = parse_results(&s.tmp.path().join("r3.csv"));
    assert_eq!(results.len(), N + 3);
    let mut biz = HashSet::new();
    for r in &results {
        if r["external_card_no"].starts_with("BAD-") {
            assert_eq!(r["outcome"], "invalid", "{r:?}");
            continue;
        }
        assert!(
            r["outcome"] == "opened" || r["outcome"] == "already_open",
            "{r:?}"
        );
        assert!(biz.insert(r["biz_card_no"].clone()), "twice: {r:?}");
    }
    assert_eq!(biz.len(), N, "every card number is in the results");
    let ids = s.ids();
    let cards = s.cards();
    assert_eq!(cards["open"], N as u64, "exactly one card per row: {cards}");
    let gold = N.div_ceil(3) as u64;
    assert_eq!(
        cards["templates"][&ids["merchant.brew/template.club.gold"]],
        gold
    );
    assert_eq!(
        cards["templates"][&ids["merchant.brew/template.club.silver"]],
        N as u64 - gold
    );

    // A second run opens nothing and calls nothing.
    let again = run(s.cardform().args([
        "cards",
        "open",
        "-p",
        "project",
        "--template",
        "merchant.brew/template.club",
        "--csv",
        "clean.csv",
        "--json",
    ]))
    .ok()
    .json();
    assert_eq!(again["counts"]["opened"], 0, "{again}");
    assert_eq!(again["counts"]["already_open"], N);
    assert_eq!(again["calls"], 0);

    // Sync: 500 rows changed (50 of them to gold from silver) make exactly
    // 500 card.update calls.
    let mut synced = vec![HEADER.to_string()];
    let mut moved = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let mut r = row(i, m, if i % 20 == 1 { 99 } else { 10 });
        if i % 20 == 1 && moved.len() < 50 && i % 3 != 0 {
            r = r.replace(",silver,", ",gold,");
            moved.push(format!("P-{i:05}"));
        }
        synced.push(r);
    }
    std::fs::write(s.tmp.path().join("sync.csv"), synced.join("\n") + "\n").unwrap();
    let sync = |dry: bool| {
        let mut c = s.cardform();
        c.args([
            "cards",
            "sync",
            "-p",
            "project",
            "--template",
            "merchant.brew/template.club",
            "--csv",
            "sync.csv",
            "--json",
        ]);
        if dry {
            c.arg("--dry-run");
        }
        run(&mut c).ok().json()
    };
    let dry = sync(true);
    assert_eq!(dry["counts"]["would"], 500, "{dry}");
    assert_eq!(dry["calls"], 0);
    let done = sync(false);
    assert_eq!(done["counts"]["updated"], 500, "{done}");
    assert_eq!(done["counts"]["unchanged"], N - 500);
    assert_eq!(done["calls"], 500, "one card.update per changed card");
    assert_eq!(sync(false)["calls"], 0, "nothing changed since");
    // A level moved to gold moves the card to the gold tier's template.
    let q = run(s.cardform().args([
        "cards",
        "query",
        "-p",
        "project",
        "--template",
        "merchant.brew/template.club",
        "--card",
        &moved[0],
    ]))
    .ok()
    .json();
    assert_eq!(q["card_info"]["level"], "gold", "{q}");
    assert_eq!(q["card_info"]["point"], "99");
    assert_eq!(
        q["template_id"],
        ids["merchant.brew/template.club.gold"].as_str()
    );
    let cards = s.cards();
    assert_eq!(
        cards["templates"][&ids["merchant.brew/template.club.gold"]],
        gold + 50,
        "{cards}"
    );

    // Delete one: it is gone at Alipay, and a re-open of its row is refused.
    run(s.cardform().args([
        "cards",
        "delete",
        "-p",
        "project",
        "--template",
        "merchant.brew/template.club",
        "--card",
        "P-00002",
    ]))
    .ok()
    .stdout_has("deleted");
    assert_eq!(s.cards()["deleted"], 1);

    // No member field, token or user id in anything cardform wrote: the
    // outputs, the results files, the state directory.
    let mut hay = Vec::new();
    for f in ["r1.csv", "r2.csv", "r3.csv"] {
        hay.extend(std::fs::read(s.tmp.path().join(f)).unwrap());
    }
    hay.extend(third.stdout.as_bytes());
    hay.extend(third.stderr.as_bytes());
    hay.extend(done.to_string().as_bytes());
    bytes_under(&s.state, &mut hay);
    let mut needles: HashSet<String> = HashSet::new();
    for (i, m) in members.iter().enumerate() {
        for k in ["user_id", "auth_token", "refresh_token"] {
            needles.insert(m[k].as_str().unwrap().to_string());
        }
        needles.insert(format!("Member-{i:05}"));
        needles.insert(format!("139{i:08}"));
    }
    needles.insert("1971-01-".into());
    needles.insert("13912345678".into());
    needles.insert("Member-bad".into());
    let hits = found_in(&hay, &needles);
    assert!(
        hits.is_empty(),
        "member data leaked: {:?}",
        &hits[..hits.len().min(5)]
    );
}

/// A `cards serve` child, its address read from its first line; its log
/// (stderr) collected.
struct Serve {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Serve {
    fn start(s: &Setup) -> Serve {
        Serve::start_with(s, &[])
    }

    fn start_with(s: &Setup, env: &[(&str, &str)]) -> Serve {
        Serve::start_on(s, s.port, env)
    }

    fn start_on(s: &Setup, port: u16, env: &[(&str, &str)]) -> Serve {
        let mut child = s
            .cardform()
            .envs(env.iter().copied())
            .args(["cards", "serve", "-p", "project", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut out, &mut first).unwrap();
        assert!(first.starts_with("cards serve listening on"), "{first:?}");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (err, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for l in std::io::BufRead::lines(std::io::BufReader::new(err)) {
                let Ok(l) = l else { break };
                sink.lock().unwrap().push_str(&(l + "\n"));
            }
        });
        Serve { child, log }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open a connection, send the callback, and hang up without reading: a
/// member closing the page (or a network drop).
fn dropped(url: &str) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n").unwrap();
    drop(s);
}

#[test]
fn a_thousand_activations_open_a_thousand_cards_on_the_right_tiers() {
    const N: usize = 1_000;
    const HOLDERS: usize = 100;
    let mut members = String::from("cell,external_card_no,level,point\n");
    for i in 0..HOLDERS {
        members.push_str(&format!("138{i:08},PHYS-{i:04},gold,{}\n", 100 + i));
    }
    let s = Setup::new(&members);
    let ids = s.ids();
    let serve = Serve::start(&s);
    let silver_url = s.silver_url();
    let codes = std::sync::Mutex::new(Vec::new());
    let locations = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        // The callback faces the internet: a client that never finishes its
        // request head is closed (by the server: `read_to_end` returns), while
        // the members go on.
        let port = s.port;
        scope.spawn(move || {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            c.write_all(b"GET /activated?request_id=slow HTTP/1.1\r\nhost: x\r\n")
                .unwrap();
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut c, &mut out).expect("cards serve closes a slow client");
            assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
        });
        for t in 0..8 {
            let (s, silver_url, codes, locations) = (&s, &silver_url, &codes, &locations);
            scope.spawn(move || {
                for i in (t..N).step_by(8) {
                    let phone = if i < HOLDERS {
                        format!("138{i:08}")
                    } else {
                        format!("139{i:08}")
                    };
                    let a = s.sb.activate(
                        silver_url,
                        json!({"fields": {"OPEN_FORM_FIELD_MOBILE": phone,
                            "OPEN_FORM_FIELD_NAME": format!("Member-{i:05}"),
                            "OPEN_FORM_FIELD_BIRTHDAY": "1971-02-03"},
                            "deliver": false}),
                    );
                    let cb = a["callback_url"].as_str().unwrap().to_string();
                    let q: BTreeMap<String, String> = url::Url::parse(&cb)
                        .unwrap()
                        .query_pairs()
                        .into_owned()
                        .collect();
                    codes.lock().unwrap().push(q["auth_code"].clone());
                    let get = || {
                        let r = http("GET", &cb, None);
                        assert_eq!(r.status, 302, "{i}: {}", r.body);
                        r.location.unwrap()
                    };
                    let loc = match i % 10 {
                        // Dropped, then the member (or Alipay) tries again.
                        0 => {
                            dropped(&cb);
                            get()
                        }
                        // A double tap: two callbacks at once.
                        1 | 2 => std::thread::scope(|inner| {
                            let other = inner.spawn(get);
                            let mine = get();
                            assert_eq!(mine, other.join().unwrap(), "{i}: two answers");
                            mine
                        }),
                        _ => get(),
                    };
                    // Repeated later: the same card.
                    if i % 7 == 0 {
                        assert_eq!(get(), loc, "{i}");
                    }
                    locations.lock().unwrap().insert(i, loc);
                }
            });
        }
    });
    let locations = locations.into_inner().unwrap();
    let cards: HashSet<&String> = locations.values().collect();
    assert_eq!(cards.len(), N, "one card per activation");
    assert!(
        locations[&5].starts_with("https://brew.example.com/welcome?biz_card_no=BREW"),
        "{}",
        locations[&5]
    );
    let held = s.cards();
    assert_eq!(held["open"], N as u64, "{held}");
    assert_eq!(
        held["templates"][&ids["merchant.brew/template.club.gold"]],
        HOLDERS as u64
    );
    assert_eq!(
        held["templates"][&ids["merchant.brew/template.club.silver"]],
        (N - HOLDERS) as u64
    );
    // A spent code with an unknown request, and a template not issued here:
    // a clear page, a log line, no card.
    let bad = http(
        "GET",
        &format!(
            "http://127.0.0.1:{}/activated?app_id={APP_ID}&template_id={}&request_id=r-unknown&auth_code={}",
            s.port,
            ids["merchant.brew/template.club.silver"],
            codes.lock().unwrap()[0]
        ),
        None,
    );
    assert_eq!(bad.status, 502);
    assert!(bad.body.contains("scan the code again"), "{}", bad.body);
    let unknown = http(
        "GET",
        &format!(
            "http://127.0.0.1:{}/activated?app_id={APP_ID}&template_id=99999&request_id=r-2&auth_code=x",
            s.port
        ),
        None,
    );
    assert_eq!(unknown.status, 404);
    assert_eq!(s.cards()["open"], N as u64);

    // The log names requests and cards, never the member.
    let log = serve.log.lock().unwrap().clone();
    assert!(
        log.contains(
            "request_id=r-unknown: failed: alipay.system.oauth.token: 40002 isv.code-invalid"
        ),
        "{log}"
    );
    assert!(log.contains("repeated callback"), "{log}");
    let mut hay = log.into_bytes();
    drop(serve);
    // (The ledger is the service's while it runs.) A holder's card is their physical card, with its points.
    let q = run(s.cardform().args([
        "cards",
        "query",
        "-p",
        "project",
        "--template",
        "merchant.brew/template.club",
        "--card",
        "PHYS-0007",
    ]))
    .ok()
    .json();
    assert_eq!(q["card_info"]["point"], "107", "{q}");
    assert_eq!(q["card_info"]["level"], "gold");

    bytes_under(&s.state, &mut hay);
    let mut needles: HashSet<String> = codes.into_inner().unwrap().into_iter().collect();
    for i in 0..N {
        needles.insert(format!("Member-{i:05}"));
        needles.insert(if i < HOLDERS {
            format!("138{i:08}")
        } else {
            format!("139{i:08}")
        });
    }
    needles.insert("1971-02-03".into());
    needles.insert("authusrB".into()); // any access token
    needles.insert("2088000".into()); // any user id
    let hits = found_in(&hay, &needles);
    assert!(
        hits.is_empty(),
        "member data leaked: {:?}",
        &hits[..hits.len().min(5)]
    );
}

#[test]
fn issue_blocks_are_checked_by_validate_and_shown_by_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let p = project(
        tmp.path(),
        8080,
        "cell,external_card_no,level\n13800000001,PHYS-1,gold\n",
    );
    let v = run(cardform().arg("validate").arg(&p)).ok();
    assert!(v.stdout.contains("is valid"), "{}", v.stdout);
    let plan = run(cardform()
        .args(["plan", "--state"])
        .arg(tmp.path().join("state"))
        .arg(&p))
    .ok();
    assert!(
        plan.stdout.contains("merchant.brew/template.club.silver: new members on level `silver`; card holders from `members.csv`"),
        "{}",
        plan.stdout
    );
    let manifest = p.join("cardform.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("level: silver\n", "level: platinum\n"),
    )
    .unwrap();
    std::fs::write(
        p.join("members.csv"),
        "cell,external_card_no,level,point\n13800000001,PHYS-1,gold,1\n13800000002,PHYS-2,gold,1.234\n",
    )
    .unwrap();
    let bad = run(cardform().arg("validate").arg(&p)).fails();
    let all = format!("{}{}", bad.stdout, bad.stderr);
    assert!(all.contains("activation_url.issue.level"), "{all}");
    assert!(
        all.contains("`platinum` is not a level of this template's tiers (silver, gold)"),
        "{all}"
    );
    assert!(all.contains("members.csv:3: column `point`"), "{all}");
    assert!(
        !all.contains("13800000002"),
        "a phone number in a message: {all}"
    );
}

#[test]
fn a_merchant_whose_authorisation_broke_stops_at_once_with_a_hint() {
    let mut s = Setup::new("cell,external_card_no\n");
    let members = s.enrol(200);
    let mut rows = vec![HEADER.to_string()];
    for (i, m) in members.iter().enumerate() {
        rows.push(row(i, m, 1));
    }
    std::fs::write(s.tmp.path().join("cards.csv"), rows.join("\n")).unwrap();
    // The merchant now acts through an app_auth_token, which has expired.
    let manifest = s.project.join("cardform.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace(
            "  brew:\n",
            "  brew:\n    app_auth_token: { env: BREW_TOKEN }\n",
        ),
    )
    .unwrap();
    s.sb.restart(&["--merchant-fault", "tok-brew=expired"]);
    let r = run(s.cardform().env("BREW_TOKEN", "tok-brew").args([
        "cards",
        "open",
        "-p",
        "project",
        "--template",
        "merchant.brew/template.club",
        "--csv",
        "cards.csv",
        "--parallelism",
        "2",
        "--json",
    ]))
    .fails();
    let report = r.json();
    assert!(
        report["merchant_blocked"]
            .as_str()
            .unwrap()
            .contains("merchant `brew` must authorise the app again"),
        "{report}"
    );
    let c = &report["counts"];
    assert_eq!(
        c["failed"].as_u64().unwrap() + c["not_attempted"].as_u64().unwrap(),
        200
    );
    // Only the calls already under way were made: no retries, no budget
    // spent on a merchant that cannot answer.
    assert!(report["calls"].as_u64().unwrap() <= 8, "{report}");
    assert!(c["not_attempted"].as_u64().unwrap() >= 190, "{report}");
    assert!(!r.stderr.contains("tok-brew"), "{}", r.stderr);
    assert_eq!(s.cards()["open"], 0);
}

#[test]
fn cards_serve_killed_mid_activations_never_opens_a_card_twice() {
    const N: usize = 300;
    let s = Setup::new("cell,external_card_no\n");
    let silver_url = s.silver_url();
    // Every member submits the form first; their callbacks are delivered
    // while the service is killed with -9 partway.
    let callbacks: Vec<String> = (0..N)
        .map(|i| {
            s.sb.activate(
                &silver_url,
                json!({"fields": {"OPEN_FORM_FIELD_MOBILE": format!("139{i:08}")}, "deliver": false}),
            )["callback_url"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut serve = Serve::start(&s);
    let answered = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..6 {
            let (callbacks, answered) = (&callbacks, &answered);
            scope.spawn(move || {
                for cb in callbacks.iter().skip(t).step_by(6) {
                    // Refused connections after the kill are expected.
                    let Ok(mut c) = std::net::TcpStream::connect(
                        cb.strip_prefix("http://")
                            .unwrap()
                            .split('/')
                            .next()
                            .unwrap(),
                    ) else {
                        continue;
                    };
                    let path = &cb[cb.find("/activated").unwrap()..];
                    let _ = write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
                    let mut out = String::new();
                    let _ = std::io::Read::read_to_string(&mut c, &mut out);
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        // kill -9 once a third are answered, with callbacks in flight.
        while answered.load(std::sync::atomic::Ordering::SeqCst) < N / 3 {
            std::thread::sleep(Duration::from_millis(2));
        }
        serve.child.kill().unwrap();
        serve.child.wait().unwrap();
    });
    // Restarted, every callback is delivered again (as Alipay or the member
    // would): each answers with its card, or for one cut short whose code
    // is spent, asks the member to scan again. No card twice.
    let _serve = Serve::start(&s);
    let mut cards = HashSet::new();
    let mut again = 0;
    for cb in &callbacks {
        let r = http("GET", cb, None);
        match r.status {
            302 => assert!(cards.insert(r.location.unwrap()), "a card twice for {cb}"),
            502 if r.body.contains("scan the code again") => again += 1,
            other => panic!("{other}: {}", r.body),
        }
    }
    let held = s.cards();
    assert_eq!(
        held["open"],
        cards.len() as u64,
        "{held}; {again} to scan again"
    );
    assert!(cards.len() >= N / 3, "{} cards", cards.len());
    // Those asked to scan again get their card with a fresh activation.
    assert!(
        again <= 12,
        "{again} members cut short (at most the callbacks in flight)"
    );
}

#[test]
fn the_card_ledger_lives_in_postgresql_with_a_shared_state() {
    const N: usize = 400;
    let url = cluster().url("cards");
    let s = Setup::with_state("cell,external_card_no\n", Some(&url));
    let members = s.enrol(N);
    let mut rows = vec![HEADER.to_string()];
    for (i, m) in members.iter().enumerate() {
        rows.push(row(i, m, 5));
    }
    std::fs::write(s.tmp.path().join("cards.csv"), rows.join("\n") + "\n").unwrap();
    let open = |results: &str| {
        let mut c = s.cardform();
        c.args([
            "cards",
            "open",
            "-p",
            "project",
            "--template",
            "merchant.brew/template.club",
            "--csv",
            "cards.csv",
            "--results",
            results,
            "--json",
        ]);
        c
    };
    kill_when(open("r1.csv"), &s.tmp.path().join("r1.csv"), 120);
    let done = run(&mut open("r2.csv")).ok().json();
    assert_eq!(
        done["counts"]["opened"].as_u64().unwrap()
            + done["counts"]["already_open"].as_u64().unwrap(),
        N as u64,
        "{done}"
    );
    assert_eq!(s.cards()["open"], N as u64);
    let again = run(&mut open("r3.csv")).ok().json();
    assert_eq!(again["counts"]["already_open"], N, "{again}");
    assert_eq!(again["calls"], 0);
    // The ledger is in the state's schema, one row per card, nothing personal.
    let schema = url.split("schema=").nth(1).unwrap();
    let n = cluster().psql(&format!(
        "SELECT count(*) FROM {schema}.cards WHERE key LIKE 'c:%'"
    ));
    assert_eq!(n.trim(), N.to_string());
    let dump = cluster().psql(&format!("SELECT key || entry FROM {schema}.cards"));
    let mut needles: HashSet<String> = HashSet::new();
    for (i, m) in members.iter().enumerate() {
        for k in ["user_id", "auth_token", "refresh_token"] {
            needles.insert(m[k].as_str().unwrap().to_string());
        }
        needles.insert(format!("139{i:08}"));
    }
    let hits = found_in(dump.as_bytes(), &needles);
    assert!(hits.is_empty(), "{hits:?}");
}

/// The sandbox's side of `alipay.marketing.card.consume.sync` (a new gateway
/// method: its wire type, the sandbox's rule and a dispatch line): a trade on
/// a card is recorded once per trade_no, the same trade again replays its
/// answer, other content under the same trade_no is refused, a later trade
/// updates the card and an earlier one does not, and the method's formats
/// are enforced.
#[test]
fn consume_sync_records_each_trade_once_and_a_later_time_updates_the_card() {
    let s = Setup::new("cell,external_card_no\n");
    let m = &s.enrol(1)[0];
    std::fs::write(
        s.tmp.path().join("one.csv"),
        format!("{HEADER}\n{}\n", row(0, m, 10)),
    )
    .unwrap();
    let r = run(s.cardform().args([
        "cards",
        "open",
        "-p",
        "project",
        "--template",
        "merchant.brew/template.club",
        "--csv",
        "one.csv",
        "--results",
        "one-results.csv",
        "--json",
    ]))
    .ok()
    .json();
    assert_eq!(r["counts"]["opened"], 1, "{r}");
    let biz = parse_results(&s.tmp.path().join("one-results.csv"))[0]["biz_card_no"].clone();
    let api = |biz_content: &Value| {
        run(s.cardform().args([
            "api",
            "alipay.marketing.card.consume.sync",
            "--biz-content",
            &biz_content.to_string(),
        ]))
    };
    let query = || {
        run(s.cardform().args([
            "api",
            "alipay.marketing.card.query",
            "--biz-content",
            &json!({"target_card_no": biz, "target_card_no_type": "BIZ_CARD"}).to_string(),
        ]))
        .ok()
        .json()
    };
    let trade = |no: &str, time: &str, point: &str| {
        json!({
            "target_card_no": biz, "target_card_no_type": "BIZ_CARD",
            "trade_type": "TRADE", "trade_no": no, "trade_time": time,
            "trade_name": "Latte", "trade_amount": "32.00", "act_pay_amount": "30.00",
            "card_info": {"point": point},
            "gain_benefit_list": [{"benefit_type": "COUPON", "count": "1"}],
            "shop_code": "S001",
        })
    };
    let first = api(&trade("T1", "2024-06-01 10:00:00", "40")).ok().json();
    assert_eq!(first["external_card_no"], "P-00000", "{first}");
    assert_eq!(query()["card_info"]["point"], "40");
    // The same trade again: the same answer, nothing changes.
    let again = api(&trade("T1", "2024-06-01 10:00:00", "40")).ok().json();
    assert_eq!(again, first);
    // Other content under the same trade_no is refused.
    let r = api(&trade("T1", "2024-06-01 10:00:00", "41")).fails();
    assert!(
        r.stderr.contains("40004") && r.stderr.contains("trade_no"),
        "{}",
        r.stderr
    );
    // An earlier trade is recorded but does not overtake the card's state.
    api(&trade("T0", "2024-05-01 10:00:00", "5")).ok();
    assert_eq!(query()["card_info"]["point"], "40");
    // A later one updates it.
    api(&trade("T2", "2024-07-01 10:00:00", "75")).ok();
    assert_eq!(query()["card_info"]["point"], "75");
    // Formats: the trade type, the time, amounts, benefit types, the card.
    for (field, bad) in [
        ("trade_type", json!("BUY")),
        ("trade_time", json!("2024-07-01")),
        ("act_pay_amount", json!("3.005")),
        ("target_card_no_type", json!("EXTERNAL_CARD")),
    ] {
        let mut t = trade("T9", "2024-08-01 10:00:00", "1");
        t[field] = bad;
        let r = api(&t).fails();
        assert!(r.stderr.contains(field), "{field}: {}", r.stderr);
    }
    let mut t = trade("T9", "2024-08-01 10:00:00", "1");
    t["gain_benefit_list"] = json!([{"benefit_type": "DISCOUNT"}]);
    assert!(
        api(&t)
            .fails()
            .stderr
            .contains("gain_benefit_list.benefit_type")
    );
    let mut t = trade("T9", "2024-08-01 10:00:00", "1");
    t["target_card_no"] = json!("999");
    assert!(api(&t).fails().stderr.contains("CARD_NOT_EXIST"));
}

impl Setup {
    /// `cards <job>` on the club template with a CSV and a results file
    /// (relative to the temporary directory).
    fn batch(&self, job: &str, csv: &str, results: Option<&str>) -> Command {
        self.batch_on(&self.state.display().to_string(), job, csv, results)
    }

    fn batch_on(&self, state: &str, job: &str, csv: &str, results: Option<&str>) -> Command {
        let mut c = self.cardform_on(state);
        c.args([
            "cards",
            job,
            "-p",
            "project",
            "--template",
            "merchant.brew/template.club",
            "--csv",
            csv,
        ]);
        if let Some(r) = results {
            c.args(["--results", r]);
        }
        c
    }

    /// Open a card for each of `n` new members; their external card numbers
    /// are `P-00000`... and their biz_card_nos are returned in order.
    fn open_cards(&self, n: usize) -> (Vec<Value>, Vec<String>) {
        let members = self.enrol(n);
        let mut rows = vec![HEADER.to_string()];
        for (i, m) in members.iter().enumerate() {
            rows.push(row(i, m, 10));
        }
        std::fs::write(self.tmp.path().join("open.csv"), rows.join("\n") + "\n").unwrap();
        run(&mut self.batch("open", "open.csv", Some("opened.csv"))).ok();
        let mut biz = vec![String::new(); n];
        for r in parse_results(&self.tmp.path().join("opened.csv")) {
            let i: usize = r["external_card_no"][2..].parse().unwrap();
            biz[i] = r["biz_card_no"].clone();
        }
        (members, biz)
    }

    fn history(&self, biz: &str) -> Value {
        let a = http(
            "GET",
            &format!("{}/_sandbox/cards/{biz}", self.gateway_url()),
            None,
        );
        assert_eq!(a.status, 200, "{}", a.body);
        serde_json::from_str(&a.body).unwrap()
    }
}

const TRADES: &str = "external_card_no,trade_no,trade_type,trade_time,trade_name,trade_amount,act_pay_amount,point,balance,memo,gain_benefit_type,gain_benefit_count";

/// Trade `k` of card `i`: purchases, with a top-up and a refund among them;
/// the card's points after trade k are 10 * (k + 1). Times rise with k.
fn trade_row(i: usize, k: usize) -> String {
    let (ty, name) = match k % 5 {
        3 => ("DEPOSIT", "Top-up"),
        4 => ("RETURN", "Refund"),
        _ => ("TRADE", "Latte"),
    };
    format!(
        "P-{i:05},T-{i:05}-{k:02},{ty},2026-12-{:02} {:02}:{:02}:00,{name},32.00,30.00,{},{}.00,shop 7,{},{}",
        1 + k / 24,
        k % 24,
        i % 60,
        10 * (k + 1),
        100 + k,
        if k.is_multiple_of(5) { "COUPON" } else { "" },
        if k.is_multiple_of(5) { "1" } else { "" },
    )
}

/// issue 26: 10,000 trades from a CSV, killed twice with kill -9 and run
/// again: exactly 10,000 trades at Alipay, each in the results; the same
/// file again sends nothing; the same trade_no with other content is an
/// error for that row; a malformed row is named by its line only.
#[test]
fn ten_thousand_trades_survive_kill_9_and_sync_each_once() {
    const CARDS: usize = 1_000;
    const PER_CARD: usize = 10;
    let s = Setup::new("cell,external_card_no\n");
    let (_, biz) = s.open_cards(CARDS);
    let mut good = vec![TRADES.to_string()];
    // Per card, the latest trade is listed first: the card must still end
    // with the latest trade's values, whatever order they arrive in.
    for i in 0..CARDS {
        good.push(trade_row(i, PER_CARD - 1));
        for k in 0..PER_CARD - 1 {
            good.push(trade_row(i, k));
        }
    }
    let mut with_bad = good.clone();
    with_bad.insert(
        5,
        "P-00001,T-BAD-1,SALE,2026-12-01 10:00:00,x,1,1,1,1,,,".into(),
    );
    with_bad.insert(
        6,
        "P-00001,T-BAD-2,TRADE,2026/12/01,x,1.234,1,1,1,,,".into(),
    );
    // A row whose shape is wrong: its second cell is a secret, never shown.
    with_bad.insert(7, "SECRET-TOKEN-4711,T-BAD-3,TRADE".into());
    with_bad.push(trade_row(0, 0)); // the same trade twice in one file
    std::fs::write(s.tmp.path().join("trades.csv"), with_bad.join("\n") + "\n").unwrap();
    std::fs::write(s.tmp.path().join("clean.csv"), good.join("\n") + "\n").unwrap();
    kill_when(
        s.batch("consume", "trades.csv", Some("t1.csv")),
        &s.tmp.path().join("t1.csv"),
        1_500,
    );
    kill_when(
        s.batch("consume", "trades.csv", Some("t2.csv")),
        &s.tmp.path().join("t2.csv"),
        6_000,
    );
    let third = run(&mut s.batch("consume", "trades.csv", Some("t3.csv"))).fails();
    for want in [
        "trades.csv:6 (P-00001): invalid: column `trade_type`: must be one of OPEN, TRADE, DEPOSIT, RETURN",
        "trades.csv:7 (P-00001): invalid: column `trade_time`: must be yyyy-MM-dd HH:mm:ss",
        "column `trade_amount`: must be a number with at most two decimals",
        "trades.csv:8: invalid: has 3 fields; the header has 12",
        "(P-00000): invalid: the same card and trade_no also on line 3: a trade is synced once",
    ] {
        assert!(third.stdout.contains(want), "{want}\n{}", third.stdout);
    }
    let results = parse_results(&s.tmp.path().join("t3.csv"));
    assert_eq!(results.len(), CARDS * PER_CARD + 4);
    let mut ok = 0;
    for r in &results {
        if r["outcome"] == "invalid" {
            continue;
        }
        assert!(
            r["outcome"] == "synced" || r["outcome"] == "already_synced",
            "{r:?}"
        );
        ok += 1;
    }
    assert_eq!(ok, CARDS * PER_CARD);
    let counts = s.cards();
    assert_eq!(
        counts["trades"],
        (CARDS * PER_CARD) as u64,
        "exactly one trade at Alipay per row: {counts}"
    );
    // The card's history: every trade, oldest first, and the latest
    // trade's values on the card although it was sent first.
    let h = s.history(&biz[7]);
    let trades = h["trades"].as_array().unwrap();
    assert_eq!(trades.len(), PER_CARD, "{h}");
    assert_eq!(trades[0]["trade_no"], "T-00007-00");
    assert_eq!(trades[3]["trade_type"], "DEPOSIT");
    assert_eq!(trades[4]["trade_type"], "RETURN");
    assert_eq!(h["card_info"]["point"], (10 * PER_CARD).to_string(), "{h}");
    assert_eq!(
        h["card_info"]["balance"],
        format!("{}.00", 100 + PER_CARD - 1)
    );

    // The same file again: nothing sent.
    let again = run(s.batch("consume", "clean.csv", None).arg("--json"))
        .ok()
        .json();
    assert_eq!(
        again["counts"]["already_synced"],
        CARDS * PER_CARD,
        "{again}"
    );
    assert_eq!(again["calls"], 0);
    // The same trade_no with other content: an error for that row, no call.
    std::fs::write(
        s.tmp.path().join("changed.csv"),
        format!(
            "{TRADES}\n{}\n",
            trade_row(3, 2).replace(",30.00,", ",31.00,")
        ),
    )
    .unwrap();
    let changed = run(s.batch("consume", "changed.csv", None).arg("--json"))
        .fails()
        .json();
    assert_eq!(changed["calls"], 0, "{changed}");
    assert!(
        changed["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("other values"),
        "{changed}"
    );
    assert_eq!(s.cards()["trades"], (CARDS * PER_CARD) as u64);
    // By Alipay's card number too (a biz_card_no column).
    std::fs::write(
        s.tmp.path().join("by-biz.csv"),
        format!(
            "biz_card_no,trade_no,trade_type,trade_time,point\n{},T-NEW,TRADE,2026-12-31 09:00:00,999\n",
            biz[9]
        ),
    )
    .unwrap();
    let by_biz = run(s.batch("consume", "by-biz.csv", None).arg("--json"))
        .ok()
        .json();
    assert_eq!(by_biz["counts"]["synced"], 1, "{by_biz}");
    assert_eq!(s.history(&biz[9])["card_info"]["point"], "999");

    // Nothing of the malformed row, in any output or results file.
    let mut hay = Vec::new();
    for f in ["t1.csv", "t2.csv", "t3.csv"] {
        hay.extend(std::fs::read(s.tmp.path().join(f)).unwrap());
    }
    hay.extend(third.stdout.as_bytes());
    hay.extend(third.stderr.as_bytes());
    bytes_under(&s.state, &mut hay);
    let needles: HashSet<String> = ["SECRET-TOKEN-4711".to_string()].into();
    assert!(
        found_in(&hay, &needles).is_empty(),
        "a malformed row leaked"
    );
}

/// issue 26: messages to members. `points_message: true` makes `cards sync`
/// carry the change in points (500 changes, 500 updates with it, each the
/// exact change); `cards notify` sends each points-expiry reminder once.
#[test]
fn points_messages_and_reminders_reach_members_once() {
    const N: usize = 600;
    let s = Setup::new("cell,external_card_no\n");
    let (members, biz) = s.open_cards(N);
    let manifest = s.project.join("cardform.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace(
            "done_url: https://brew.example.com/welcome",
            "done_url: https://brew.example.com/welcome\n            points_message: true",
        ),
    )
    .unwrap();
    // The flag is not sent to Alipay: nothing to apply.
    run(s
        .cardform()
        .args(["plan", "-p", "project", "--detailed-exitcode"]))
    .ok();
    let mut rows = vec![HEADER.to_string()];
    for (i, m) in members.iter().enumerate() {
        rows.push(row(i, m, if i < 500 { 11 + i as u32 } else { 10 }));
    }
    std::fs::write(s.tmp.path().join("sync.csv"), rows.join("\n") + "\n").unwrap();
    let done = run(s.batch("sync", "sync.csv", None).arg("--json"))
        .ok()
        .json();
    assert_eq!(done["counts"]["updated"], 500, "{done}");
    assert_eq!(done["counts"]["unchanged"], N - 500);
    let counts = s.cards();
    assert_eq!(counts["messages"]["changed_point"], 500, "{counts}");
    let h = s.history(&biz[7]);
    assert_eq!(h["messages"][0]["changed_point"], "+8", "{h}");
    assert_eq!(h["card_info"]["point"], "18");

    // 300 reminders, once each, however often the file runs.
    let mut reminders = vec!["external_card_no,expired_point,expired_time".to_string()];
    for i in 0..300 {
        reminders.push(format!("P-{i:05},{},2026-12-31 23:59:59", 5 + i % 7));
    }
    std::fs::write(s.tmp.path().join("remind.csv"), reminders.join("\n") + "\n").unwrap();
    let sent = run(s
        .batch("notify", "remind.csv", Some("reminded.csv"))
        .arg("--json"))
    .ok()
    .json();
    assert_eq!(sent["counts"]["notified"], 300, "{sent}");
    let again = run(s.batch("notify", "remind.csv", None).arg("--json"))
        .ok()
        .json();
    assert_eq!(again["counts"]["already_notified"], 300, "{again}");
    assert_eq!(again["calls"], 0);
    assert_eq!(s.cards()["messages"]["POINT_REMIND"], 300);
    let h = s.history(&biz[3]);
    let remind = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "POINT_REMIND")
        .unwrap();
    assert_eq!(remind["expired_point"], "8");

    // Nothing personal in what cardform wrote.
    let mut hay = Vec::new();
    hay.extend(std::fs::read(s.tmp.path().join("reminded.csv")).unwrap());
    hay.extend(done.to_string().as_bytes());
    bytes_under(&s.state, &mut hay);
    let mut needles: HashSet<String> = HashSet::new();
    for (i, m) in members.iter().enumerate() {
        for k in ["user_id", "auth_token", "refresh_token"] {
            needles.insert(m[k].as_str().unwrap().to_string());
        }
        needles.insert(format!("Member-{i:05}"));
    }
    assert!(found_in(&hay, &needles).is_empty(), "member data leaked");
}

/// issue 26: the till posts trades to `cards serve` as they happen. 1,000
/// trades from 8 tills at once, a fifth of them posted twice (in the same
/// request or another): each synced exactly once. No token, a wrong token:
/// refused before any work. Malformed and oversized bodies: clear refusals.
#[test]
fn the_tills_trades_sync_once_each_and_need_the_token() {
    const CARDS: usize = 200;
    const PER_CARD: usize = 5;
    let s = Setup::new("cell,external_card_no\n");
    let (_, biz) = s.open_cards(CARDS);
    s.take_transactions();
    let serve = Serve::start_with(&s, &[("BREW_TILL_TOKEN", TOKEN)]);
    let url = format!("http://127.0.0.1:{}/transactions", s.port);
    let auth = format!("Bearer {TOKEN}");
    let trade = |i: usize, k: usize| {
        json!({
            "external_card_no": format!("P-{i:05}"),
            "trade_no": format!("POS-{i:05}-{k}"),
            "trade_type": if k == 3 { "DEPOSIT" } else { "TRADE" },
            "trade_time": format!("2026-12-07 1{k}:00:00"),
            "trade_name": "Flat white",
            "trade_amount": "28.00",
            "act_pay_amount": 26.5,
            "point": (k + 1) * 10,
        })
    };
    let post = |body: &Value, token: Option<&str>| {
        let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
        http_with("POST", &url, &headers, Some(&body.to_string()))
    };
    // No token, a wrong one: 401, and nothing reaches Alipay.
    let fresh = json!({"template": "merchant.brew/template.club", "transaction": trade(0, 9)});
    assert_eq!(post(&fresh, None).status, 401);
    assert_eq!(post(&fresh, Some("Bearer wrong")).status, 401);
    assert_eq!(
        post(&fresh, Some(TOKEN)).status,
        401,
        "the Bearer scheme is required"
    );
    assert_eq!(s.cards()["trades"], 0);
    // Bodies that are not transactions.
    assert_eq!(post(&json!("nope"), Some(&auth)).status, 400);
    let a = http_with("POST", &url, &[("Authorization", &auth)], Some("{not json"));
    assert_eq!(a.status, 400, "{}", a.body);
    let huge = "x".repeat(2 * 1024 * 1024);
    assert_eq!(
        http_with("POST", &url, &[("Authorization", &auth)], Some(&huge)).status,
        413
    );
    let unknown = json!({"template": "merchant.brew/template.nope", "transaction": trade(0, 9)});
    assert_eq!(post(&unknown, Some(&auth)).status, 404);

    // 8 tills, batches of 25; every fifth batch is posted twice, and every
    // batch repeats its first trade at its end.
    let mut batches: Vec<Vec<Value>> = Vec::new();
    let all: Vec<Value> = (0..CARDS)
        .flat_map(|i| (0..PER_CARD).map(move |k| (i, k)))
        .map(|(i, k)| trade(i, k))
        .collect();
    for chunk in all.chunks(25) {
        let mut b = chunk.to_vec();
        b.push(chunk[0].clone());
        batches.push(b.clone());
        if batches.len().is_multiple_of(5) {
            batches.push(b);
        }
    }
    let answers = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(b) = batches.get(i) else { break };
                    let a = post(
                        &json!({"template": "merchant.brew/template.club", "transactions": b}),
                        Some(&auth),
                    );
                    assert_eq!(a.status, 200, "{}", a.body);
                    answers
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str::<Value>(&a.body).unwrap());
                }
            });
        }
    });
    let (mut synced, mut already) = (0, 0);
    for a in answers.into_inner().unwrap() {
        for r in a["results"].as_array().unwrap() {
            match r["outcome"].as_str().unwrap() {
                "synced" => synced += 1,
                "already_synced" => already += 1,
                other => panic!("{other}: {r}"),
            }
            assert!(r["biz_card_no"].as_str().unwrap().len() > 4, "{r}");
        }
    }
    assert_eq!(synced, CARDS * PER_CARD, "each trade sent once");
    assert!(
        already >= batches.len(),
        "the repeats answered from the journal"
    );
    assert_eq!(s.cards()["trades"], (CARDS * PER_CARD) as u64);
    let h = s.history(&biz[11]);
    assert_eq!(h["trades"].as_array().unwrap().len(), PER_CARD, "{h}");
    assert_eq!(h["card_info"]["point"], "50");
    assert_eq!(h["trades"][0]["act_pay_amount"], "26.5");

    // A bad transaction is named by its index and field; the others go on.
    let a = post(
        &json!({"template": "merchant.brew/template.club.gold", "transactions": [
            trade(1, 7),
            {"external_card_no": "P-00001", "trade_no": "X", "trade_type": "SALE", "trade_time": "2026-12-07 10:00:00"},
            {"external_card_no": "P-00001", "trade_no": "Y", "trade_type": "TRADE", "trade_time": "2026-12-07 10:00:00", "coupon": "1"},
        ]}),
        Some(&auth),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let r: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(r["results"][0]["outcome"], "synced", "{r}");
    assert_eq!(r["results"][1]["outcome"], "invalid");
    assert_eq!(r["results"][1]["field"], "trade_type");
    assert_eq!(r["results"][2]["field"], "coupon");
    let log = serve.log.lock().unwrap().clone();
    assert!(
        log.contains("transactions merchant.brew/template.club"),
        "{log}"
    );
    assert!(!log.contains(TOKEN) && !log.contains("26.5"), "{log}");
}

/// issue 27: 100 members whose connection closes right after the callback
/// arrives (no pause, no retry) get 100 cards, and every callback received
/// is in the log.
#[test]
fn members_who_close_at_once_still_get_their_cards() {
    const N: usize = 100;
    let s = Setup::new("cell,external_card_no\n");
    let serve = Serve::start(&s);
    let urls = run(s.cardform().args(["output", "--format", "json"]))
        .ok()
        .json();
    let silver_url = urls["brew"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["address"] == "merchant.brew/template.club.silver")
        .unwrap()["apply_card_url"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..N {
        let a = s.sb.activate(
            &silver_url,
            json!({"fields": {"OPEN_FORM_FIELD_MOBILE": format!("137{i:08}")}, "deliver": false}),
        );
        dropped(a["callback_url"].as_str().unwrap());
    }
    let start = Instant::now();
    while s.cards()["open"].as_u64().unwrap() < N as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "cards opened: {}; log:\n{}",
            s.cards(),
            serve.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let settled = || {
        serve
            .log
            .lock()
            .unwrap()
            .lines()
            .filter(|l| l.contains("opened card"))
            .count()
    };
    while settled() < N {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            serve.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = serve.log.lock().unwrap().clone();
    let received = log.lines().filter(|l| l.contains(": received")).count();
    assert_eq!(
        received, N,
        "every callback is logged as it arrives:\n{log}"
    );
    assert_eq!(s.cards()["open"], N as u64);
    // Metrics, with nothing of the members in them.
    let base = format!("http://127.0.0.1:{}", s.port);
    let m = http("GET", &format!("{base}/metrics"), None);
    assert_eq!(m.status, 200);
    for want in [
        "cardform_activations_received_total 100",
        "cardform_activations_total{how=\"opened\"} 100",
        "cardform_activation_seconds_count 100",
        "cardform_activations_in_flight 0",
    ] {
        assert!(m.body.contains(want), "{want}\n{}", m.body);
    }
    assert!(!m.body.contains("137000"), "{}", m.body);
    // Liveness and readiness, for a load balancer or an orchestrator.
    assert_eq!(http("GET", &format!("{base}/healthz"), None).status, 200);
    let ready = http("GET", &format!("{base}/readyz"), None);
    assert_eq!(ready.status, 200, "{}", ready.body);
    let Setup { sb, .. } = s;
    sb.stop();
    let ready = http("GET", &format!("{base}/readyz"), None);
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.body.contains("gateway: unreachable"),
        "{}",
        ready.body
    );
    drop(serve);
}

/// issue 27: `state migrate` moves the card ledger with the state (its salt
/// too, or no digest would match): 3,400 cards and 3,400 trades (10,200
/// ledger rows) to PostgreSQL, killed with kill -9 once on the way, and
/// back to a directory; every card is still open and every trade still
/// synced (0 calls), and the source is left as it was.
#[test]
fn the_card_ledger_moves_with_the_state_and_back() {
    const N: usize = 3_400;
    let s = Setup::new("cell,external_card_no\n");
    s.open_cards(N);
    let mut trades = vec!["external_card_no,trade_no,trade_type,trade_time,point".to_string()];
    for i in 0..N {
        trades.push(format!("P-{i:05},T-{i},TRADE,2026-12-07 10:00:00,{i}"));
    }
    std::fs::write(s.tmp.path().join("trades.csv"), trades.join("\n") + "\n").unwrap();
    let consumed = run(s.batch("consume", "trades.csv", None).arg("--json"))
        .ok()
        .json();
    assert_eq!(consumed["counts"]["synced"], N, "{consumed}");
    // Nothing changes at Alipay from here on: each check is 0 calls.
    let quiet = |state: &str| {
        let mut open = s.batch_on(state, "open", "open.csv", None);
        open.arg("--json");
        let o = run(&mut open).ok().json();
        assert_eq!(o["counts"]["already_open"], N, "{state}: {o}");
        assert_eq!(o["calls"], 0, "{state}");
        let mut consume = s.batch_on(state, "consume", "trades.csv", None);
        consume.arg("--json");
        let c = run(&mut consume).ok().json();
        assert_eq!(c["counts"]["already_synced"], N, "{state}: {c}");
        assert_eq!(c["calls"], 0, "{state}");
    };
    let url = crate::support::pg::cluster().url("ledger_moves");
    let schema = url.split("schema=").nth(1).unwrap().to_string();
    let local = s.state.display().to_string();
    let migrate = |from: &str, to: &str, force: bool| {
        let mut c = s.cardform_on(from);
        c.args(["state", "migrate", "--to", to]);
        if force {
            c.arg("--force");
        }
        c
    };
    // Killed once the target is being written (its schema exists).
    let mut child = migrate(&local, &url, false)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let there = crate::support::pg::cluster().psql(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}'"
        ));
        if there.trim() != "0" || child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    child.wait().unwrap();
    // A second run finishes it (refused first if the first wrote anything).
    let again = run(&mut migrate(&local, &url, false));
    if again.code != 0 {
        assert!(again.stderr.contains("--force"), "{}", again.stderr);
        run(&mut migrate(&local, &url, true)).ok();
    }
    let rows = crate::support::pg::cluster().psql(&format!("SELECT count(*) FROM {schema}.cards"));
    assert_eq!(
        rows.trim(),
        (3 * N).to_string(),
        "cards, their index and trades"
    );
    quiet(&url);
    // And back, to a new directory; the source directory still works too.
    let back = s.tmp.path().join("state-back").display().to_string();
    let moved = run(&mut migrate(&url, &back, false)).ok();
    assert!(
        moved
            .stdout
            .contains(&format!("{} card ledger row(s)", 3 * N)),
        "{}",
        moved.stdout
    );
    quiet(&back);
    quiet(&local);
}

/// issue 27: an apply that replaces a template while `cards serve` runs is
/// picked up without a restart (the new template_id's first callback reads
/// the state again); a service on a state with nothing applied refuses to
/// start.
#[test]
fn cards_serve_picks_up_a_replaced_template_without_a_restart() {
    let s = Setup::new("cell,external_card_no\n");
    let serve = Serve::start(&s);
    let before = s.ids();
    let manifest = s.project.join("cardform.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("suffix_length: 12", "suffix_length: 14"),
    )
    .unwrap();
    run(s
        .cardform()
        .args(["apply", "--auto-approve", "-p", "project"]))
    .ok();
    let after = s.ids();
    let silver = "merchant.brew/template.club.silver";
    assert_ne!(before[silver], after[silver], "replaced");
    let url = run(s.cardform().args(["output", "--format", "json"]))
        .ok()
        .json()["brew"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["address"] == silver)
        .unwrap()["apply_card_url"]
        .as_str()
        .unwrap()
        .to_string();
    let a = s.sb.activate(
        &url,
        json!({"fields": {"OPEN_FORM_FIELD_MOBILE": "13700000001"}, "deliver": false}),
    );
    let cb = a["callback_url"].as_str().unwrap().to_string();
    // The same callback until the service knows the new template (it reads
    // the state again at most every few seconds; a 404 spends no code).
    let start = Instant::now();
    let answer = loop {
        let r = http("GET", &cb, None);
        if r.status != 404 {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            serve.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(answer.status, 302, "{}", answer.body);
    let cards = s.cards();
    assert_eq!(cards["templates"][&after[silver]], 1, "{cards}");
    drop(serve);

    // Nothing applied: refused at start, saying what to do.
    let empty = s.tmp.path().join("empty-state");
    let r = run(s.cardform_on(&empty.display().to_string()).args([
        "cards",
        "serve",
        "-p",
        "project",
        "--listen",
        "127.0.0.1:0",
    ]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("run `cardform apply` first"),
        "{}",
        r.stderr
    );
}

/// issue 27: three `cards serve` replicas on one PostgreSQL ledger. 3,000
/// activations sent round-robin, 1,500 through the 3.0 callback and 1,500
/// through the 3.1 SPI, a fifth of each to two replicas at once (a double
/// tap, Alipay's retry: the same card from each), one replica killed with
/// kill -9 mid-burst and started again, then every callback and SPI call
/// delivered again to the next replica: exactly one card per activation at
/// the sandbox, each on its tier, no claim left, and `cards query` answers
/// while they run.
/// A second process on a sled ledger is refused, saying why.
#[test]
fn cards_serve_runs_as_three_replicas_on_postgresql() {
    // Half through the 3.0 callback (silver), half through the 3.1 SPI (gold).
    const N: usize = 1_500;
    const N_SPI: usize = 1_500;
    let url = crate::support::pg::cluster().url("replicas");
    let schema = url.split("schema=").nth(1).unwrap().to_string();
    let s = Setup::with_state("cell,external_card_no\n", Some(&url));
    let manifest = s.project.join("cardform.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace(
            "        write_off: qrcode",
            &format!("        write_off: qrcode\n        spi_app_id: \"{APP_ID}\""),
        )
        .replace(
            "{ level: gold, level_name: Gold }",
            "{ level: gold, level_name: Gold, activation_url: { issue: { flow: spi } } }",
        ),
    )
    .unwrap();
    run(s
        .cardform()
        .args(["apply", "--auto-approve", "-p", "project"]))
    .ok();
    let gold = s.ids()["merchant.brew/template.club.gold"].clone();
    let silver_url = run(s.cardform().args(["output", "--format", "json"]))
        .ok()
        .json()["brew"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["address"] == "merchant.brew/template.club.silver")
        .unwrap()["apply_card_url"]
        .as_str()
        .unwrap()
        .to_string();
    let callbacks: Vec<String> = (0..N)
        .map(|i| {
            s.sb.activate(
                &silver_url,
                json!({"fields": {"OPEN_FORM_FIELD_MOBILE": format!("136{i:08}")}, "deliver": false}),
            )["callback_url"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let replica = |port: u16| {
        let mut child = s
            .cardform()
            .args(["cards", "serve", "-p", "project", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut out, &mut first).unwrap();
        assert!(first.starts_with("cards serve listening on"), "{first:?}");
        child
    };
    let ports = [free_port(), free_port(), free_port()];
    let mut replicas: Vec<std::process::Child> = ports.iter().map(|p| replica(*p)).collect();
    // The callback as sent to one replica (the test is the load balancer).
    let at = |cb: &str, port: u16| {
        let path = &cb[cb.find("/activated").unwrap()..];
        format!("http://127.0.0.1:{port}{path}")
    };
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let first: std::sync::Mutex<BTreeMap<usize, String>> = Default::default();
    let spi_first: std::sync::Mutex<BTreeMap<usize, Value>> = Default::default();
    // One SPI opening (`j`: its own out_serial_no and card number, so that
    // a repeat is Alipay's retry) sent to the replica at `port`: the card
    // the answer names, if the sandbox verified and recorded it.
    let open_spi = |j: usize, template: &str, port: u16| -> Option<Value> {
        let a = http(
            "POST",
            &format!("{}/_sandbox/spi/opencard", s.gateway_url()),
            Some(
                &json!({
                    "spi_url": format!("http://127.0.0.1:{port}/spi"),
                    "template_id": template,
                    "fields": {"OPEN_FORM_FIELD_MOBILE": format!("135{j:08}")},
                    "out_serial_no": format!("AS{j:018}"),
                    "biz_card_no": format!("SPI{j:09}"),
                })
                .to_string(),
            ),
        );
        if a.status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&a.body).ok()?;
        (v["recorded"] == true).then(|| v["card_info"].clone())
    };
    std::thread::scope(|scope| {
        for t in 0..6 {
            let (callbacks, answered, first, at) = (&callbacks, &answered, &first, &at);
            scope.spawn(move || {
                for i in (t..N).step_by(6) {
                    let cb = &callbacks[i];
                    let send = |port: u16| -> Option<String> {
                        let rest = at(cb, port);
                        let host = rest
                            .strip_prefix("http://")
                            .unwrap()
                            .split('/')
                            .next()
                            .unwrap()
                            .to_string();
                        let mut c = std::net::TcpStream::connect(&host).ok()?;
                        let path = &rest[rest.find("/activated").unwrap()..];
                        write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
                        let mut out = String::new();
                        std::io::Read::read_to_string(&mut c, &mut out).ok()?;
                        out.lines()
                            .find_map(|l| l.strip_prefix("location: "))
                            .map(str::to_string)
                    };
                    let mine = if i % 5 == 0 {
                        // Both replicas at once: the same card from each.
                        let (a, b) = std::thread::scope(|inner| {
                            let other = inner.spawn(|| send(ports[(i + 1) % 3]));
                            (send(ports[i % 3]), other.join().unwrap())
                        });
                        if let (Some(a), Some(b)) = (&a, &b) {
                            assert_eq!(a, b, "two replicas, two answers for {i}");
                        }
                        // Replicas 0 and 1 are never killed: both answer
                        // with the card (the second waits for the first's
                        // claim instead of spending the code again).
                        if i % 3 == 0 {
                            assert!(a.is_some() && b.is_some(), "{i}: {a:?} {b:?}");
                        }
                        a.or(b)
                    } else {
                        send(ports[i % 3])
                    };
                    if let Some(loc) = mine {
                        first.lock().unwrap().insert(i, loc);
                    }
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
        for t in 0..4 {
            let (spi_first, gold, open_spi) = (&spi_first, &gold, &open_spi);
            scope.spawn(move || {
                for j in (t..N_SPI).step_by(4) {
                    let send = |port: u16| open_spi(j, gold, port);
                    let mine = if j % 5 == 0 {
                        // Alipay's retry landing on another replica at once.
                        let (a, b) = std::thread::scope(|inner| {
                            let other = inner.spawn(|| send(ports[(j + 1) % 3]));
                            (send(ports[j % 3]), other.join().unwrap())
                        });
                        if let (Some(a), Some(b)) = (&a, &b) {
                            assert_eq!(a, b, "two replicas, two SPI answers for {j}");
                        }
                        a.or(b)
                    } else {
                        send(ports[j % 3])
                    };
                    if let Some(card) = mine {
                        spi_first.lock().unwrap().insert(j, card);
                    }
                }
            });
        }
        // `cards query` answers while the replicas run.
        while answered.load(std::sync::atomic::Ordering::SeqCst) < N / 3 {
            std::thread::sleep(Duration::from_millis(2));
        }
        // kill -9 one replica mid-burst, then start it again.
        replicas[2].kill().unwrap();
        replicas[2].wait().unwrap();
        replicas[2] = replica(ports[2]);
    });
    // Every callback again, to the next replica: each answers with its card
    // (a claim the killed replica left is taken over once stale), or for one
    // cut short whose code is spent, asks the member to scan again.
    let mut cards = HashSet::new();
    let mut again = 0;
    for (i, cb) in callbacks.iter().enumerate() {
        let start = Instant::now();
        let r = loop {
            let r = http("GET", &at(cb, ports[(i + 1) % 3]), None);
            if r.status != 503 {
                break r;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{}", r.body);
        };
        match r.status {
            302 => {
                let loc = r.location.unwrap();
                if let Some(f) = first.lock().unwrap().get(&i) {
                    assert_eq!(&loc, f, "{i}: another card than its first answer");
                }
                assert!(cards.insert(loc), "a card twice for {i}");
            }
            502 if r.body.contains("scan the code again") => again += 1,
            other => panic!("{other}: {}", r.body),
        }
    }
    // Every SPI opening again (Alipay retrying), to the next replica: the
    // same card as first answered, recorded once.
    for j in 0..N_SPI {
        let card = open_spi(j, &gold, ports[(j + 1) % 3]).expect("answered and verified");
        if let Some(f) = spi_first.lock().unwrap().get(&j) {
            assert_eq!(&card, f, "{j}: another SPI answer than the first");
        }
    }
    let held = s.cards();
    assert_eq!(
        held["open"],
        (cards.len() + N_SPI) as u64,
        "{held}; {again} to scan again"
    );
    assert_eq!(held["templates"][&gold], N_SPI as u64, "{held}");
    assert!(
        again <= 12,
        "{again} cut short (at most those in flight at the kill)"
    );
    // `cards query` answers while the replicas run (the ledger is shared).
    let q = cardform_query(&s, &cards);
    assert!(q.contains("card_info"), "{q}");
    let claims = crate::support::pg::cluster().psql(&format!(
        "SELECT count(*) FROM {schema}.cards WHERE key LIKE 'q:%'"
    ));
    assert_eq!(claims.trim(), "0", "no claim left unsettled");
    for mut r in replicas {
        let _ = r.kill();
        let _ = r.wait();
    }

    // On a local state the ledger is one process's, and says so.
    let local = Setup::new("cell,external_card_no\n");
    let _first = Serve::start(&local);
    let r =
        run(local
            .cardform()
            .args(["cards", "serve", "-p", "project", "--listen", "127.0.0.1:0"]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("keep the state in PostgreSQL"),
        "{}",
        r.stderr
    );
}

/// `cards query` of one of the cards (by the external card number the
/// activation's card carries), while replicas run.
fn cardform_query(s: &Setup, cards: &HashSet<String>) -> String {
    let loc = cards.iter().next().unwrap();
    let biz = loc.split("biz_card_no=").nth(1).unwrap();
    let h = s.history(biz);
    let ext = h["card_info"]["external_card_no"]
        .as_str()
        .unwrap()
        .to_string();
    let r = run(s.cardform().args([
        "cards",
        "query",
        "-p",
        "project",
        "--template",
        "merchant.brew/template.club",
        "--card",
        &ext,
    ]));
    format!("{}{}", r.stdout, r.stderr)
}

/// issue 27: the 3.1 open-card SPI. Alipay (the sandbox) posts a member's
/// opening to `cards serve`'s `/spi`, signed with its key; the service
/// answers with the card, signed with the app's key, which the sandbox
/// verifies before it records the card. A retry answers the same card; a
/// members-file holder gets their own card number and points; a call with
/// a bad signature is refused and leaves nothing; the manifest says which
/// flow a template uses, validate checks `spi_app_id`, plan shows it.
#[test]
fn the_open_card_spi_answers_with_the_card_once_per_opening() {
    let s = Setup::new("cell,external_card_no,level,point\n13500000009,PHYS-9,silver,77\n");
    let serve = spi_flow(&s);
    let open = |ask: Value| spi_open(&s, ask);
    let first = open(json!({"fields": {"OPEN_FORM_FIELD_MOBILE": "13500000001"}}));
    assert_eq!(first["verified"], true, "{first}");
    assert_eq!(first["recorded"], true, "{first}");
    assert_eq!(first["code"], "10000");
    assert_eq!(first["card_info"]["biz_card_no"], first["biz_card_no"]);
    assert_eq!(first["card_info"]["level"], "silver");
    // Alipay retries the same opening: the same card, nothing new.
    let again = open(json!({
        "fields": {"OPEN_FORM_FIELD_MOBILE": "13500000001"},
        "out_serial_no": first["out_serial_no"], "biz_card_no": first["biz_card_no"],
    }));
    assert_eq!(again["card_info"], first["card_info"], "{again}");
    assert_eq!(s.cards()["open"], 1);
    // A card holder from the members file: their own number and points.
    let holder = open(json!({"fields": {"OPEN_FORM_FIELD_MOBILE": "13500000009"}}));
    assert_eq!(
        holder["card_info"]["external_card_no"], "PHYS-9",
        "{holder}"
    );
    assert_eq!(holder["card_info"]["point"], "77");
    // A bad signature: refused, and nothing kept (the same opening, signed
    // properly afterwards, is opened then, not answered from the ledger).
    let forged = open(json!({"fields": {"OPEN_FORM_FIELD_MOBILE": "13500000002"}, "tamper": true}));
    assert_eq!(forged["code"], "40002", "{forged}");
    assert_eq!(forged["sub_code"], "isv.invalid-signature");
    assert_eq!(forged["recorded"], false);
    let honest = open(json!({
        "fields": {"OPEN_FORM_FIELD_MOBILE": "13500000002"},
        "out_serial_no": forged["out_serial_no"], "biz_card_no": forged["biz_card_no"],
    }));
    assert_eq!(honest["recorded"], true, "{honest}");
    let log = serve.log.lock().unwrap().clone();
    let serial = forged["out_serial_no"].as_str().unwrap();
    assert!(
        log.contains("spi refused: the signature is not Alipay's"),
        "{log}"
    );
    assert!(
        log.contains(&format!("spi out_serial_no={serial}: opened card")),
        "{log}"
    );
    assert!(
        !log.contains("13500000"),
        "a phone number in the log:\n{log}"
    );
    assert_eq!(s.cards()["open"], 3);
}

/// The club's activation switched to the open-card SPI (validate refuses
/// it without `spi_app_id`; plan shows the flow), applied, and served.
fn spi_flow(s: &Setup) -> Serve {
    let manifest = s.project.join("cardform.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let spi = text.replace(
        "            done_url: https://brew.example.com/welcome",
        "            done_url: https://brew.example.com/welcome\n            flow: spi",
    );
    // Without spi_app_id: refused where it is written.
    std::fs::write(&manifest, &spi).unwrap();
    let r = run(s.cardform().args(["validate", "project"])).fails();
    assert!(
        r.stderr.contains("needs the template's `spi_app_id`"),
        "{}",
        r.stderr
    );
    std::fs::write(
        &manifest,
        spi.replace(
            "        write_off: qrcode",
            &format!("        write_off: qrcode\n        spi_app_id: \"{APP_ID}\""),
        ),
    )
    .unwrap();
    run(s
        .cardform()
        .args(["apply", "--auto-approve", "-p", "project"]))
    .ok();
    let plan = run(s.cardform().args(["plan", "-p", "project"])).ok();
    assert!(
        plan.stdout.contains("through the open-card SPI"),
        "{}",
        plan.stdout
    );
    Serve::start(s)
}

/// A member opening a silver card through the sandbox's SPI caller.
fn spi_open(s: &Setup, mut ask: Value) -> Value {
    ask["spi_url"] = json!(format!("http://127.0.0.1:{}/spi", s.port));
    ask["template_id"] = json!(s.ids()["merchant.brew/template.club.silver"]);
    let a = http(
        "POST",
        &format!("{}/_sandbox/spi/opencard", s.gateway_url()),
        Some(&ask.to_string()),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    serde_json::from_str::<Value>(&a.body).unwrap()
}

/// issue 27: an app with AES content encryption on: Alipay's call carries
/// the opening in encrypted `biz_content` and takes an encrypted answer
/// (signed over the ciphertext); the card opens once, a retry answers it
/// again, and nothing of the member reaches the log.
#[test]
fn the_open_card_spi_speaks_aes_when_the_app_does() {
    let mut s = Setup::build(
        "cell,external_card_no\n",
        None,
        Some("aYA0GP8JEW+D7/UFaskCWA==\n"),
    );
    // On a UTC host the card's open date is still China time (issue 28).
    s.env.push(("TZ".into(), "UTC".into()));
    let serve = spi_flow(&s);
    let first = spi_open(
        &s,
        json!({"fields": {"OPEN_FORM_FIELD_MOBILE": "13500000001"}}),
    );
    let opened = chrono::NaiveDateTime::parse_from_str(
        first["card_info"]["open_date"].as_str().unwrap(),
        "%Y-%m-%d %H:%M:%S",
    )
    .unwrap();
    let china_now = (chrono::Utc::now() + chrono::Duration::hours(8)).naive_utc();
    assert!(
        (china_now - opened).num_seconds().abs() < 120,
        "open_date {opened} is not China time ({china_now})"
    );
    assert_eq!(first["verified"], true, "{first}");
    assert_eq!(first["encrypted"], true, "{first}");
    assert_eq!(first["recorded"], true, "{first}");
    assert_eq!(first["card_info"]["level"], "silver");
    let again = spi_open(
        &s,
        json!({
            "fields": {"OPEN_FORM_FIELD_MOBILE": "13500000001"},
            "out_serial_no": first["out_serial_no"], "biz_card_no": first["biz_card_no"],
        }),
    );
    assert_eq!(again["card_info"], first["card_info"], "{again}");
    assert_eq!(again["encrypted"], true);
    let forged = spi_open(
        &s,
        json!({"fields": {"OPEN_FORM_FIELD_MOBILE": "13500000002"}, "tamper": true}),
    );
    assert_eq!(forged["sub_code"], "isv.invalid-signature", "{forged}");
    assert_eq!(s.cards()["open"], 1);
    let log = serve.log.lock().unwrap().clone();
    assert!(
        !log.contains("13500000"),
        "a phone number in the log:\n{log}"
    );
    assert!(log.contains("opened card"), "{log}");
}

/// issue 27: on a PostgreSQL ledger, two replicas' tills and a bulk `cards
/// consume` take the same 300 trades at once (each trade posted to both
/// tills and in the CSV): each trade reaches Alipay once, claimed by
/// whichever process came first, and every process answers it as synced
/// or already synced.
#[test]
fn replicas_and_a_bulk_run_sync_each_trade_once() {
    const CARDS: usize = 100;
    const PER_CARD: usize = 3;
    let url = cluster().url("trades_at_once");
    let s = Setup::with_state("cell,external_card_no\n", Some(&url));
    s.open_cards(CARDS);
    s.take_transactions();
    let env = [("BREW_TILL_TOKEN", TOKEN)];
    let second = free_port();
    let _a = Serve::start_on(&s, s.port, &env);
    let _b = Serve::start_on(&s, second, &env);
    let mut csv = vec!["external_card_no,trade_no,trade_type,trade_time,point".to_string()];
    let mut trades = vec![];
    for i in 0..CARDS {
        for k in 0..PER_CARD {
            csv.push(format!(
                "P-{i:05},POS-{i:05}-{k},TRADE,2026-12-07 1{k}:00:00,{}",
                k * 10
            ));
            trades.push(json!({
                "external_card_no": format!("P-{i:05}"),
                "trade_no": format!("POS-{i:05}-{k}"),
                "trade_type": "TRADE",
                "trade_time": format!("2026-12-07 1{k}:00:00"),
                "point": k * 10,
            }));
        }
    }
    std::fs::write(s.tmp.path().join("trades.csv"), csv.join("\n") + "\n").unwrap();
    let auth = format!("Bearer {TOKEN}");
    let outcomes = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        let bulk = scope.spawn(|| {
            run(s.batch("consume", "trades.csv", None).arg("--json"))
                .ok()
                .json()
        });
        for port in [s.port, second] {
            let (trades, auth, outcomes) = (&trades, &auth, &outcomes);
            scope.spawn(move || {
                for chunk in trades.chunks(10) {
                    let a = http_with(
                        "POST",
                        &format!("http://127.0.0.1:{port}/transactions"),
                        &[("Authorization", auth)],
                        Some(&json!({"template": "merchant.brew/template.club", "transactions": chunk}).to_string()),
                    );
                    assert_eq!(a.status, 200, "{}", a.body);
                    let v: Value = serde_json::from_str(&a.body).unwrap();
                    for r in v["results"].as_array().unwrap() {
                        outcomes.lock().unwrap().push(r["outcome"].as_str().unwrap().to_string());
                    }
                }
            });
        }
        let b = bulk.join().unwrap();
        let counts = &b["counts"];
        let n = |k: &str| counts[k].as_u64().unwrap_or(0) as usize;
        assert_eq!(n("synced") + n("already_synced"), CARDS * PER_CARD, "{b}");
        let mut o = outcomes.lock().unwrap();
        o.extend(std::iter::repeat_n("synced".to_string(), n("synced")));
        o.extend(std::iter::repeat_n(
            "already_synced".to_string(),
            n("already_synced"),
        ));
    });
    let outcomes = outcomes.into_inner().unwrap();
    let synced = outcomes.iter().filter(|o| *o == "synced").count();
    let already = outcomes.iter().filter(|o| *o == "already_synced").count();
    assert_eq!(synced, CARDS * PER_CARD, "each trade synced by one process");
    assert_eq!(
        synced + already,
        3 * CARDS * PER_CARD,
        "{synced} synced, {already} already synced"
    );
    assert_eq!(
        s.cards()["trades"],
        (CARDS * PER_CARD) as u64,
        "one call a trade"
    );
    let left = cluster().psql(&format!(
        "SELECT count(*) FROM {}.cards WHERE key LIKE 'q:%'",
        url.split("schema=").nth(1).unwrap()
    ));
    assert_eq!(left.trim(), "0", "no claim left");
}

/// issue 28: one member, one card. The same Alipay member activating twice
/// (a second scan, one after a "scan again" page) gets the card they hold;
/// another member gets their own; the ledger keeps no member id.
#[test]
fn a_member_who_activates_twice_keeps_one_card() {
    let s = Setup::new("cell,external_card_no\n");
    let _serve = Serve::start(&s);
    let url = s.silver_url();
    let activate = |user: &str| {
        let a = s.sb.activate(
            &url,
            json!({"fields": {"OPEN_FORM_FIELD_MOBILE": "13700000001"}, "user_id": user}),
        );
        assert_eq!(a["callback_status"], 302, "{a}");
        a["location"].as_str().unwrap().to_string()
    };
    let first = activate("2088000000000101");
    assert_eq!(
        activate("2088000000000101"),
        first,
        "the member's card again"
    );
    assert_eq!(s.cards()["open"], 1, "the same member: the same card");
    activate("2088000000000102");
    assert_eq!(s.cards()["open"], 2, "another member: a card of their own");
    let mut hay = Vec::new();
    bytes_under(&s.state, &mut hay);
    let needles: HashSet<String> = ["2088000000000101", "2088000000000102", "13700000001"]
        .into_iter()
        .map(String::from)
        .collect();
    assert!(
        found_in(&hay, &needles).is_empty(),
        "a member id in the state"
    );
}

/// issue 28: `cards serve` survives its database: every session it holds is
/// cut (as a PostgreSQL restart cuts them); within 10 s it answers again,
/// and /readyz says ready, without a restart of the service.
#[test]
fn cards_serve_connects_again_after_losing_postgresql() {
    let url = cluster().url("serve_reconnect");
    let schema = url.split("schema=").nth(1).unwrap().to_string();
    let s = Setup::with_state("cell,external_card_no\n", Some(&url));
    let serve = Serve::start(&s);
    let activation = s.silver_url();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let activate = || {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let a = s.sb.activate(
            &activation,
            json!({"fields": {"OPEN_FORM_FIELD_MOBILE": format!("1370000{i:04}")}}),
        );
        a["callback_status"].as_u64().unwrap()
    };
    assert_eq!(activate(), 302);
    // Every session of this state's ledger cut.
    let cut = cluster().psql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'cardform:{schema}'"
    ));
    assert_ne!(cut.trim(), "0", "no session was cut");
    let started = Instant::now();
    loop {
        if activate() == 302 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not answering 10 s after the database came back:\n{}",
            serve.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready = http("GET", &format!("http://127.0.0.1:{}/readyz", s.port), None);
    assert_eq!(ready.status, 200, "{}", ready.body);
}

/// issue 29: one member export both opens and syncs, night after night:
/// the points change, `cards sync` updates the cards, and `cards open` of
/// the same (updated) export with new members opens the new ones and calls
/// the others already open (with the hint to sync), exit 0, in a pipe.
#[test]
fn one_member_export_opens_new_members_and_syncs_the_rest() {
    let s = Setup::new("cell,external_card_no\n");
    let members = s.enrol(6);
    let export = |n: usize, point: u32| {
        let mut rows = vec![HEADER.to_string()];
        for (i, m) in members.iter().enumerate().take(n) {
            rows.push(row(i, m, point));
        }
        std::fs::write(s.tmp.path().join("export.csv"), rows.join("\n") + "\n").unwrap();
    };
    export(4, 10);
    run(s.batch("open", "export.csv", None).arg("--json")).ok();
    // The next night: points moved, two members joined.
    export(6, 25);
    let synced = run(s.batch("sync", "export.csv", None).arg("--json")).json();
    assert_eq!(synced["counts"]["updated"], 4, "{synced}");
    let r = run(&mut s.batch("open", "export.csv", Some("night.csv")));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("2 opened") && r.stdout.contains("4 already open"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("`cardform cards sync` with this file"),
        "{}",
        r.stdout
    );
    let results = parse_results(&s.tmp.path().join("night.csv"));
    assert_eq!(
        results
            .iter()
            .filter(|r| r["outcome"] == "already_open")
            .count(),
        4
    );
    assert_eq!(s.cards()["open"], 6);
}

/// issue 27: made-up auth codes cost a bounded number of gateway calls:
/// 500 of them from five client addresses (127.0.0.2-6), with a budget of
/// 10 failed activations a minute per address and 30 in all, spend at
/// most 30 oauth.token calls (plus the callbacks in flight when the budget
/// ran out); the rest are refused (429) without a call.
#[test]
fn made_up_codes_cost_a_bounded_number_of_calls() {
    let s = Setup::new("cell,external_card_no\n");
    let mut child = s
        .cardform()
        .args(["cards", "serve", "-p", "project", "--listen"])
        .arg(format!("127.0.0.1:{}", s.port))
        .args(["--failure-budget", "30", "--client-failure-budget", "10"])
        .args(["--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    let err = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(err), &mut text);
        text
    });
    let silver = s.ids()["merchant.brew/template.club.silver"].clone();
    let statuses = std::sync::Mutex::new(BTreeMap::<u16, usize>::new());
    std::thread::scope(|scope| {
        for c in 2..7u8 {
            let (silver, statuses, port) = (&silver, &statuses, s.port);
            scope.spawn(move || {
                for i in 0..100 {
                    // From 127.0.0.<c>: a client address of its own.
                    let mut conn = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(async {
                            let sock = tokio::net::TcpSocket::new_v4().unwrap();
                            sock.bind(format!("127.0.0.{c}:0").parse().unwrap()).unwrap();
                            sock.connect(format!("127.0.0.1:{port}").parse().unwrap())
                                .await
                                .unwrap()
                                .into_std()
                                .unwrap()
                        });
                    conn.set_nonblocking(false).unwrap();
                    write!(
                        conn,
                        "GET /activated?app_id={APP_ID}&template_id={silver}&request_id=fake{c}x{i}&auth_code=madeup{c}x{i} HTTP/1.0\r\nHost: x\r\n\r\n"
                    )
                    .unwrap();
                    let mut answer = String::new();
                    std::io::Read::read_to_string(&mut conn, &mut answer).unwrap();
                    let status: u16 = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
                    *statuses.lock().unwrap().entry(status).or_default() += 1;
                }
            });
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join().unwrap();
    let spent = log
        .lines()
        .filter(|l| l.contains("failed: alipay.system.oauth.token"))
        .count();
    let statuses = statuses.into_inner().unwrap();
    assert!(
        (30..=35).contains(&spent),
        "oauth.token calls spent: {spent}; answers {statuses:?}"
    );
    assert_eq!(
        statuses.get(&429).copied().unwrap_or(0),
        500 - spent,
        "{statuses:?}"
    );
    assert!(log.contains("too many failed activations"), "{log}");
    // Structured: one JSON object a line, the request id as a field.
    for l in log.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["ts"].is_string() && v["msg"].is_string(), "{l}");
        if v["msg"]
            .as_str()
            .unwrap()
            .starts_with("callback request_id=")
        {
            assert!(v["request_id"].as_str().unwrap().starts_with("fake"), "{l}");
        }
    }
}
