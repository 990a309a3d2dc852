//! Everything cardform shows people: results on stdout, messages on stderr.
//! The only module that writes to the terminal.

use std::io::Write;

use serde::Serialize;

use crate::alipay::GatewayError;

/// Pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, value);
    let _ = writeln!(out);
}

/// A line on stdout.
pub fn line(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// A progress or status note on stderr.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// An error and its causes on stderr, cargo style.
pub fn error(err: &anyhow::Error) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "error: {err}");
    for cause in err.chain().skip(1) {
        let _ = writeln!(e, "  caused by: {cause}");
    }
}

/// A gateway failure: the message, its codes, and whether a retry can help.
pub fn gateway_error(err: &GatewayError) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "error: {err}");
    if let Some(api) = err.api() {
        let _ = writeln!(e, "  code: {}", api.code);
        if let Some(s) = &api.sub_code {
            let _ = writeln!(e, "  sub_code: {s}");
        }
        if let Some(s) = &api.sub_msg {
            let _ = writeln!(e, "  sub_msg: {s}");
        }
    }
    let _ = writeln!(e, "  retry: {}", err.retry_hint());
}
