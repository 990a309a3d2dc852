//! A hostile gateway: a small HTTP server between cardform and a real sandbox
//! process that redirects, lies after a call took effect, or signs a
//! "Success" without the ids. No answer may cost an id, make a duplicate or
//! send the token anywhere but the gateway.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::support::*;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answer every request with this redirect status to the thief.
    Redirect(u16),
    /// Forward template.create, then answer an unsigned 40004 error_response.
    UnsignedErrorAfterEffect,
    /// Forward `method`, then answer a signed "Success" without its fields.
    SuccessWithoutIds(&'static str),
}

struct Hostile {
    url: String,
    /// Every request's head, as received.
    heads: Arc<Mutex<Vec<String>>>,
}

/// Read one HTTP/1.1 request: head and body (Content-Length or chunked).
fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        body.resize(len, 0);
        s.read_exact(&mut body).ok()?;
    } else if lower.contains("transfer-encoding: chunked") {
        while !body.ends_with(b"0\r\n\r\n") {
            if s.read(&mut byte).ok()? == 0 {
                break;
            }
            body.push(byte[0]);
        }
    }
    Some((head, body))
}

fn respond(s: &mut TcpStream, status: &str, headers: &str, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\ncontent-type: application/json;charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
        body.len()
    );
}

/// Send the request on to the sandbox and return its raw response.
fn forward(sandbox: &str, head: &str, body: &[u8]) -> Vec<u8> {
    let addr = sandbox
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let mut up = TcpStream::connect(addr).unwrap();
    let head: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    up.write_all(head.as_bytes()).unwrap();
    up.write_all(b"connection: close\r\n\r\n").unwrap();
    up.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = up.read_to_end(&mut out);
    out
}

fn method_of(head: &str) -> String {
    let target = head.split(' ').nth(1).unwrap_or("");
    url::Url::parse(&format!("http://x{target}"))
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "method")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default()
}

impl Hostile {
    fn start(mode: Mode, sandbox: &Sandbox, thief: &str) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/gateway.do", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let platform_key = {
            let path = sandbox.dir.join("platform_private.pem");
            let text = std::fs::read_to_string(&path).unwrap();
            cardform::alipay::AppPrivateKey::parse(&text, cardform::alipay::KeySource::File(path))
                .unwrap()
        };
        let (sb_url, thief, seen) = (sandbox.url.clone(), thief.to_string(), heads.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { continue };
                let Some((head, body)) = read_request(&mut s) else {
                    continue;
                };
                seen.lock().unwrap().push(head.clone());
                let method = method_of(&head);
                match mode {
                    Mode::Redirect(status) => respond(
                        &mut s,
                        &format!("{status} Moved"),
                        &format!("location: {thief}\r\n"),
                        "",
                    ),
                    Mode::UnsignedErrorAfterEffect
                        if method == "alipay.marketing.card.template.create" =>
                    {
                        forward(&sb_url, &head, &body);
                        respond(
                            &mut s,
                            "200 OK",
                            "",
                            r#"{"error_response":{"code":"40004","msg":"Business Failed","sub_code":"INVALID_PARAMETER","sub_msg":"refused"}}"#,
                        );
                    }
                    Mode::SuccessWithoutIds(m) if method == m => {
                        forward(&sb_url, &head, &body);
                        let node = r#"{"code":"10000","msg":"Success"}"#;
                        let sign =
                            platform_key.sign(cardform::alipay::SignType::Rsa2, node.as_bytes());
                        let name = format!("{}_response", m.replace('.', "_"));
                        respond(
                            &mut s,
                            "200 OK",
                            "",
                            &format!(r#"{{"{name}":{node},"sign":"{sign}"}}"#),
                        );
                    }
                    _ => {
                        let out = forward(&sb_url, &head, &body);
                        let _ = s.write_all(&out);
                    }
                }
            }
        });
        Hostile { url, heads }
    }
}

/// A listener that counts connections (the place a redirect points at).
fn thief() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/steal", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if conn.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (url, hits)
}

struct Setup {
    tmp: tempfile::TempDir,
    sandbox: Sandbox,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coffee"),
            &tmp.path().join("coffee"),
        );
        let sandbox = Sandbox::start(&tmp.path().join("sandbox"), &[]);
        Setup { tmp, sandbox }
    }
    /// `cardform` against `endpoint` (the sandbox's keys), in the temp dir.
    fn at(&self, endpoint: &str) -> std::process::Command {
        let mut c = self.sandbox.cardform();
        c.current_dir(self.tmp.path())
            .env("CARDFORM_ENDPOINT", endpoint);
        c
    }
    fn templates_at_gateway(&self) -> usize {
        let r = self
            .sandbox
            .api(
                "alipay.marketing.card.template.batchquery",
                r#"{"page_no":1,"page_size":20}"#,
            )
            .ok()
            .json();
        r["template_total"].as_u64().unwrap() as usize
    }
    fn state(&self) -> Value {
        run(self.at(&self.sandbox.url).args(["state", "export"]))
            .ok()
            .json()
    }
}

#[test]
fn redirects_are_never_followed_and_carry_nothing_elsewhere() {
    for status in [302, 307, 308] {
        let s = Setup::new();
        let (thief_url, hits) = thief();
        let hostile = Hostile::start(Mode::Redirect(status), &s.sandbox, &thief_url);
        // The merchant acts through a token: what a redirect would carry away.
        let manifest = s.tmp.path().join("coffee/cardform.yaml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(
            &manifest,
            text.replacen(
                "  brew:\n",
                "  brew:\n    app_auth_token: { env: BREW_TOKEN }\n",
                1,
            ),
        )
        .unwrap();
        let r = run(s
            .at(&hostile.url)
            .env("BREW_TOKEN", "202405BBsecret-token")
            .args(["apply", "coffee", "--auto-approve"]))
        .fails();
        assert!(
            r.stderr.contains(&format!(
                "the endpoint answered with a redirect (HTTP {status}) to `{thief_url}`"
            )),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("secret-token"), "{}", r.stderr);
        // Nothing reached the redirect's target, and no request carried a Referer.
        assert_eq!(hits.load(Ordering::SeqCst), 0, "HTTP {status} was followed");
        let heads = hostile.heads.lock().unwrap();
        assert!(
            heads.iter().any(|h| h.contains("secret-token")),
            "the token was in play: {heads:?}"
        );
        assert!(
            heads
                .iter()
                .all(|h| !h.to_ascii_lowercase().contains("\nreferer:")),
            "{heads:?}"
        );
    }
}

#[test]
fn an_unsigned_error_never_ends_a_create_that_may_have_taken_effect() {
    let s = Setup::new();
    let hostile = Hostile::start(Mode::UnsignedErrorAfterEffect, &s.sandbox, "");
    let r = run(s
        .at(&hostile.url)
        .args(["apply", "coffee", "--auto-approve"]))
    .fails();
    assert!(r.stderr.contains("[unsigned response]"), "{}", r.stderr);
    assert_eq!(s.templates_at_gateway(), 3, "the creates took effect");
    assert_eq!(
        s.state()["intents"].as_object().unwrap().len(),
        3,
        "the creates stay in doubt"
    );
    // The honest gateway again: the same request_ids come back, no duplicate.
    run(s
        .at(&s.sandbox.url)
        .args(["apply", "coffee", "--auto-approve"]))
    .ok();
    assert_eq!(s.templates_at_gateway(), 3);
    let state = s.state();
    assert!(state["intents"].as_object().unwrap().is_empty());
    run(s
        .at(&s.sandbox.url)
        .args(["plan", "coffee", "--detailed-exitcode"]))
    .ok();
}

#[test]
fn a_signed_success_without_its_ids_is_a_failed_call() {
    let s = Setup::new();
    let hostile = Hostile::start(
        Mode::SuccessWithoutIds("alipay.marketing.card.template.create"),
        &s.sandbox,
        "",
    );
    let r = run(s
        .at(&hostile.url)
        .args(["apply", "coffee", "--auto-approve"]))
    .fails();
    assert!(
        r.stderr
            .contains("a success without what the method returns: `template_id` is missing"),
        "{}",
        r.stderr
    );
    let state = s.state();
    assert!(
        state["resources"]
            .as_object()
            .unwrap()
            .values()
            .all(|r| r["kind"] != "template"),
        "no template was recorded without its id"
    );
    run(s
        .at(&s.sandbox.url)
        .args(["apply", "coffee", "--auto-approve"]))
    .ok();
    assert_eq!(s.templates_at_gateway(), 3, "replayed, no duplicate");
    run(s
        .at(&s.sandbox.url)
        .args(["plan", "coffee", "--detailed-exitcode"]))
    .ok();

    // An upload "succeeding" without an image_id is failed too, and counted
    // as an upload that may have left an unused image.
    let s = Setup::new();
    let hostile = Hostile::start(
        Mode::SuccessWithoutIds("alipay.offline.material.image.upload"),
        &s.sandbox,
        "",
    );
    let r = run(s
        .at(&hostile.url)
        .args(["apply", "coffee", "--auto-approve", "--json"]))
    .fails();
    assert!(r.stderr.contains("`image_id` is missing"), "{}", r.stderr);
    let report = r.json();
    assert!(
        report["uploads_in_doubt"].as_u64().unwrap() >= 5,
        "{report}"
    );
    assert!(
        r.stderr.contains("may have left unused images at Alipay"),
        "{}",
        r.stderr
    );
}

#[test]
fn creates_in_doubt_never_block_their_own_rerun() {
    // Two merchants without tokens share the app's namespace at the gateway.
    let s = Setup::new();
    cardform::bench::generate(&s.tmp.path().join("two"), 2, 1).unwrap();
    let hostile = Hostile::start(Mode::UnsignedErrorAfterEffect, &s.sandbox, "");
    // Only the first merchant's template goes out: it takes effect, its
    // result is lost, its create stays in doubt.
    run(s.at(&hostile.url).args([
        "apply",
        "two",
        "--auto-approve",
        "--target",
        "merchant.m00000/template.t0",
    ]))
    .fails();
    assert_eq!(s.templates_at_gateway(), 1);
    // The second merchant's first template: the gateway holds one the state
    // has no id for, but the create in doubt accounts for it.
    run(s
        .at(&s.sandbox.url)
        .args(["apply", "two", "--auto-approve"]))
    .ok();
    assert_eq!(s.templates_at_gateway(), 2, "replayed, no duplicate");
}
