//! A PostgreSQL state location: `postgres://user:password@host:port/db`,
//! with cardform's own `schema=NAME` query parameter (default `cardform`):
//! one state per schema, so several projects or environments share a
//! database. The password is a secret: `Display` and `Debug` never show it.

use std::fmt;

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "cardform";

#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// The URL as given, minus `schema` (it goes to the driver).
    url: url::Url,
    schema: String,
    /// `PGPASSWORD`, for a URL without a password (see
    /// [`PgUrl::with_default_password`]).
    default_password: Option<String>,
}

impl PgUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        // A password with an unencoded `@` reads as part of the host or the
        // path: refused (its text redacted) rather than half-shown later.
        if let Some(rest) = text.split_once("://").map(|(_, r)| r) {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            if rest[authority_end..].contains('@') {
                return Err(format!(
                    "`{}`: the part before the last `@` holds `/`, `?` or `#`: a password with such characters (or `@`) must be percent-encoded (`@` as %40, `/` as %2F, `#` as %23)",
                    redact_text(text)
                ));
            }
        }
        let mut url = url::Url::parse(text)
            .map_err(|e| format!("`{}` is not a PostgreSQL URL: {e}", redact_text(text)))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(format!("`{}` is not a postgres:// URL", redact_text(text)));
        }
        let mut schema = DEFAULT_SCHEMA.to_string();
        let mut kept = Vec::new();
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "schema" => schema = v.into_owned(),
                "sslmode" if matches!(v.as_ref(), "require" | "verify-ca" | "verify-full") => {
                    return Err(format!(
                        "`sslmode={v}`: TLS connections to PostgreSQL are not supported by this version\nhint: reach the server over a private network or an SSH tunnel, or use sslmode=disable"
                    ));
                }
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        if !is_identifier(&schema) {
            return Err(format!(
                "schema `{schema}` is not a plain name (lower-case letters, digits and _, starting with a letter or _, at most 63)"
            ));
        }
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        Ok(PgUrl {
            url,
            schema,
            default_password: None,
        })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The same database, another schema (a plain identifier).
    pub fn with_schema(&self, schema: &str) -> PgUrl {
        debug_assert!(is_identifier(schema));
        PgUrl {
            url: self.url.clone(),
            schema: schema.to_string(),
            default_password: self.default_password.clone(),
        }
    }

    /// The whole URL, password and schema included: only for handing to a
    /// child process's arguments, never for printing.
    pub fn expose(&self) -> String {
        let mut u = self.url.clone();
        u.query_pairs_mut().append_pair("schema", &self.schema);
        u.to_string()
    }

    /// The driver's configuration (password included: only for connecting).
    /// With no password in the URL, the default password (`PGPASSWORD`).
    pub fn config(&self) -> Result<postgres::Config, String> {
        let mut c = self
            .url
            .as_str()
            .parse::<postgres::Config>()
            .map_err(|e| format!("`{self}`: {e}"))?;
        if c.get_password().is_none()
            && let Some(p) = &self.default_password
        {
            c.password(p.as_bytes());
        }
        Ok(c)
    }

    /// The password to use when the URL has none (`PGPASSWORD`, as libpq's
    /// tools take it; settings read it). Never shown.
    pub fn with_default_password(mut self, password: Option<String>) -> Self {
        self.default_password = password;
        self
    }
}

/// Lower-case SQL identifier, safe to splice unquoted.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// Query parameters that carry a password (the driver's and libpq's).
fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k == "passfile" || k == "sslpassword"
}

/// A connection text with every password replaced, whatever its form and
/// whether or not it parses: the userinfo of a URL up to its last `@`
/// (a password may hold unencoded `@`, `/` or `#`), `password=` and the
/// like as query parameters, and `password=...` in a key/value
/// connection string (quoted or not).
pub fn redact_text(text: &str) -> String {
    let mut out = match (text.find("://"), text.rfind('@')) {
        (Some(start), Some(at)) if at > start + 3 => {
            let userinfo = &text[start + 3..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let shown = if userinfo.contains(':') {
                format!("{user}:REDACTED")
            } else {
                user.to_string()
            };
            format!("{}://{shown}@{}", &text[..start], &text[at + 1..])
        }
        _ => text.to_string(),
    };
    // key=value pairs, in a query (&-separated) or a connection string
    // (space-separated; a value may be quoted).
    let mut redacted = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(eq) = rest.find('=') {
        let key_start = rest[..eq]
            .rfind(|c: char| c == '&' || c == '?' || c.is_whitespace())
            .map_or(0, |i| i + 1);
        let key = &rest[key_start..eq];
        redacted.push_str(&rest[..=eq]);
        rest = &rest[eq + 1..];
        if is_secret_param(key) {
            let end = if let Some(q) = rest.strip_prefix('\'') {
                // A quoted value: up to the closing unescaped quote.
                let mut i = 0;
                let b = q.as_bytes();
                while i < b.len() && b[i] != b'\'' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                (i + 2).min(rest.len())
            } else {
                rest.find(|c: char| c == '&' || c == '#' || c.is_whitespace())
                    .unwrap_or(rest.len())
            };
            redacted.push_str("REDACTED");
            rest = &rest[end..];
        }
    }
    redacted.push_str(rest);
    out = redacted;
    out
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut u = self.url.clone();
        if u.password().is_some() {
            let _ = u.set_password(Some("REDACTED"));
        }
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_param(&k) {
                    "REDACTED".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.set_query(None);
        if !pairs.is_empty() || self.schema != DEFAULT_SCHEMA {
            let mut q = u.query_pairs_mut();
            q.extend_pairs(pairs);
            if self.schema != DEFAULT_SCHEMA {
                q.append_pair("schema", &self.schema);
            }
        }
        write!(f, "{u}")
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let u = PgUrl::parse("postgres://ci:s3cret@db.internal:5433/cards?schema=shop_a").unwrap();
        assert_eq!(u.schema(), "shop_a");
        assert_eq!(
            u.to_string(),
            "postgres://ci:REDACTED@db.internal:5433/cards?schema=shop_a"
        );
        assert!(!format!("{u:?}").contains("s3cret"));
        let e = PgUrl::parse("postgres://ci:s3cret@db/x?schema=Bad-Name").unwrap_err();
        assert!(!e.contains("s3cret") && e.contains("Bad-Name"), "{e}");
        assert!(!redact_text("postgres://ci:s3cret@[bad").contains("s3cret"));
        // Every form a password takes.
        for (text, secret) in [
            ("postgres://ci:p@ss/w#rd@db/x", "ss/w#rd"),
            ("postgres://ci:p@ss/w#rd@db/x", "w#rd"),
            ("postgres://ci@db/x?password=s3cret&schema=a", "s3cret"),
            ("postgres://ci@db/x?sslpassword=s3cret", "s3cret"),
            ("host=db user=ci password=s3cret dbname=x", "s3cret"),
            ("host=db password='s3 cret' dbname=x", "cret"),
        ] {
            let r = redact_text(text);
            assert!(!r.contains(secret), "{text} -> {r}");
            assert!(r.contains("REDACTED"), "{text} -> {r}");
        }
        let e = PgUrl::parse("postgres://ci:p@ss/w#rd@db/x").unwrap_err();
        assert!(!e.contains("ss/w") && !e.contains("rd@"), "{e}");
        let u = PgUrl::parse("postgres://ci@db/x?password=s3cret&schema=a").unwrap();
        assert!(!u.to_string().contains("s3cret"), "{u}");
        assert!(u.to_string().contains("schema=a"), "{u}");
        assert!(u.expose().contains("s3cret"), "the child gets it");
        let e = PgUrl::parse("postgres://ci:s3cret@db/x?sslmode=require").unwrap_err();
        assert!(!e.contains("s3cret") && e.contains("TLS"), "{e}");
        assert!(
            PgUrl::parse("postgres://u@h/d?sslmode=disable")
                .unwrap()
                .config()
                .is_ok()
        );
    }
}
