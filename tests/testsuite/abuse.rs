//! Inputs that try to exhaust memory or hang, and HTTP clients that abuse
//! the sandbox. Each is refused clearly, inside a bounded address space
//! (`prlimit --as`), and the sandbox stays up.
//!
//! `MALLOC_ARENA_MAX=2` keeps glibc from reserving 64 MB of address space
//! per thread: what `--as` then bounds is memory actually taken.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

const AS_LIMIT: &str = "--as=300000000";

/// `cardform ARGS` under a 300 MB address-space limit.
fn limited(dir: &Path) -> Command {
    let mut c = Command::new("prlimit");
    c.arg(AS_LIMIT)
        .arg(bin())
        .current_dir(dir)
        .env("MALLOC_ARENA_MAX", "2")
        .env("NO_COLOR", "1");
    for (k, _) in std::env::vars() {
        if k.starts_with("CARDFORM_") {
            c.env_remove(k);
        }
    }
    c
}

/// Refused with exit 1 (not killed by the limit), the message contains
/// `needle`, and stderr stays small.
#[track_caller]
fn refused(r: Run, needle: &str) {
    assert_eq!(
        r.code,
        1,
        "stderr: {}",
        &r.stderr[..r.stderr.len().min(2000)]
    );
    assert!(
        r.stderr.contains(needle),
        "lacks {needle:?}: {}",
        &r.stderr[..r.stderr.len().min(2000)]
    );
    assert!(
        r.stderr.len() < 100_000,
        "{} bytes of errors",
        r.stderr.len()
    );
}

#[test]
fn manifests_that_would_exhaust_memory_are_refused_within_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // A 1 MB string aliased 20,000 times.
    let mut bomb = format!(
        "variables: &x {{ v: \"{}\" }}\nmerchants:\n  m: [",
        "x".repeat(1_000_000)
    );
    bomb.push_str(&vec!["*x"; 20_000].join(","));
    bomb.push_str("]\n");
    std::fs::write(d.join("bomb.yaml"), bomb).unwrap();
    refused(
        run(limited(d).args(["validate", "bomb.yaml"])),
        "bytes of text (anchors and aliases included)",
    );
    // 1.9 million list elements.
    let list = format!("merchants: [{}]\n", vec!["1"; 1_900_000].join(","));
    std::fs::write(d.join("list.yaml"), list).unwrap();
    refused(
        run(limited(d).args(["validate", "list.yaml"])),
        "nodes (anchors and aliases included)",
    );
    // A quarter of a million mistakes: the first hundred, and a note.
    let many: Vec<String> = (0..250_000).map(|i| format!("k{i}: 1")).collect();
    std::fs::write(
        d.join("many.yaml"),
        format!("merchants: {{{}}}\n", many.join(",")),
    )
    .unwrap();
    refused(
        run(limited(d).args(["validate", "many.yaml"])),
        "more schema errors in this file, not shown",
    );
    // A 5-million-character value is quoted in a few hundred characters.
    std::fs::write(
        d.join("long.yaml"),
        format!(
            "merchants:\n  m:\n    templates:\n      t:\n        style: {{ banner_url: \"{}\" }}\n",
            "y".repeat(5_000_000)
        ),
    )
    .unwrap();
    let r = run(limited(d).args(["validate", "long.yaml"]));
    refused(r, "…");
    // Tags mean nothing in a manifest: refused where they are.
    std::fs::write(
        d.join("tag.yaml"),
        "merchants:\n  m:\n    display_name: !!binary aGVsbG8=\n",
    )
    .unwrap();
    let r = run(limited(d).args(["validate", "tag.yaml", "--format", "json"]));
    assert_eq!(r.code, 1);
    let d0 = &r.json()["diagnostics"][0];
    assert!(
        d0["message"]
            .as_str()
            .unwrap()
            .contains("YAML tags are not allowed in a manifest (found `!!binary`)"),
        "{d0}"
    );
    // Located at the tagged value.
    assert_eq!(
        (d0["line"].as_u64(), d0["column"].as_u64()),
        (Some(3), Some(28))
    );
}

#[test]
fn files_a_manifest_names_are_read_only_when_regular_and_small() {
    let tmp = tempfile::tempdir().unwrap();
    let proj = tmp.path().join("proj");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/coffee"),
        &proj,
    );
    let fifo = tmp.path().join("fifo.png");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let huge = tmp.path().join("huge.png");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    let original = std::fs::read_to_string(proj.join("cardform.yaml")).unwrap();
    for (target, needle) in [
        ("/dev/zero", "is not a regular file"),
        ("/dev/urandom", "is not a regular file"),
        (fifo.to_str().unwrap(), "is not a regular file"),
        (huge.to_str().unwrap(), "is 3221225472 bytes"),
    ] {
        std::fs::write(
            proj.join("cardform.yaml"),
            original.replacen("images/logo.png", target, 1),
        )
        .unwrap();
        refused(run(limited(tmp.path()).args(["validate", "proj"])), needle);
        // A key file that is no file is refused by validate too.
        std::fs::write(
            proj.join("cardform.yaml"),
            original.replacen(
                "gateway:\n",
                &format!("gateway:\n  private_key: {{ file: \"{target}\" }}\n"),
                1,
            ),
        )
        .unwrap();
        let key_needle = if needle.starts_with("is 3") {
            "a key or token file is at most 65536 bytes"
        } else {
            needle
        };
        refused(
            run(limited(tmp.path()).args(["validate", "proj"])),
            key_needle,
        );
    }
}

/// Send raw bytes to the sandbox and read what comes back until it closes
/// the connection (panics if it has not after 30 s).
fn raw(sb: &Sandbox, request: &[u8]) -> String {
    let addr = sb
        .url
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the sandbox closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_sandbox_bounds_bodies_connections_and_slow_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(&tmp.path().join("sb"), &[]);
    // A declared 60 MB body is refused before it is read.
    let head = "POST /gateway.do HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 62914560\r\nconnection: close\r\n\r\n";
    let answer = raw(&sb, head.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // So is a chunked one that grows past the limit, by many clients at once;
    // the sandbox's memory stays bounded.
    let chunk = vec![b'a'; 1 << 20];
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let url = sb.url.clone();
            let chunk = chunk.clone();
            std::thread::spawn(move || {
                let addr = url.strip_prefix("http://").unwrap().split('/').next().unwrap().to_string();
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let _ = s.write_all(b"POST /gateway.do HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\n\r\n");
                for _ in 0..20 {
                    if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
                        || s.write_all(&chunk).is_err()
                        || s.write_all(b"\r\n").is_err()
                    {
                        break;
                    }
                }
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                String::from_utf8_lossy(&out).into_owned()
            })
        })
        .collect();
    for t in threads {
        let answer = t.join().unwrap();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 413"),
            "{answer}"
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", sb.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(hwm_kb < 300 * 1024, "the sandbox peaked at {hwm_kb} kB");
    // A client that never finishes its request head is closed (`raw` waits
    // for the close).
    let answer = raw(&sb, b"POST /gateway.do HTTP/1.1\r\nhost: x\r\n");
    assert!(!answer.contains("200 OK"), "{answer}");
    // `charset` is required (the reference marks it so); `format` is not.
    let q = r#"{"page_no":1,"page_size":20}"#;
    run(sb.cardform().args([
        "api",
        "alipay.marketing.card.template.batchquery",
        "--biz-content",
        q,
        "--param",
        "charset=",
    ]))
    .fails()
    .stderr_has("isv.invalid-charset");
    run(sb.cardform().args([
        "api",
        "alipay.marketing.card.template.batchquery",
        "--biz-content",
        q,
        "--param",
        "format=",
    ]))
    .ok();
    // And the sandbox still answers properly.
    sb.api(
        "alipay.marketing.card.template.batchquery",
        r#"{"page_no":1,"page_size":20}"#,
    )
    .ok();
}
