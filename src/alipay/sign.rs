//! The request string-to-sign (gateway.md §4.1) and the sign types.
//!
//! Pure functions: no I/O, no clock.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// `sign_type`: `RSA2` is SHA256withRSA (the default, and what Alipay requires of new
/// apps); `RSA` is legacy SHA1withRSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignType {
    #[default]
    Rsa2,
    Rsa,
}

impl SignType {
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Rsa2 => "RSA2",
            SignType::Rsa => "RSA",
        }
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RSA2" => Ok(SignType::Rsa2),
            "RSA" => Ok(SignType::Rsa),
            other => Err(format!(
                "unknown sign type `{other}` (expected RSA2 or RSA)"
            )),
        }
    }
}

/// Every transmitted text parameter except `sign` and empty values, sorted by name,
/// joined as raw (not URL-encoded) `name=value` pairs with `&`.
///
/// `BTreeMap` iterates in byte order of the names, which is the order the official
/// SDKs sort by (all names are ASCII).
pub fn string_to_sign(params: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(params.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (name, value) in params {
        if name == "sign" || name.is_empty() || value.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}
