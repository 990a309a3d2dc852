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
}

impl PgUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
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
        Ok(PgUrl { url, schema })
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
    pub fn config(&self) -> Result<postgres::Config, String> {
        self.url
            .as_str()
            .parse::<postgres::Config>()
            .map_err(|e| format!("`{self}`: {e}"))
    }
}

/// Lower-case SQL identifier, safe to splice unquoted.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// The URL with any password replaced, from text that may not parse.
pub fn redact_text(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("REDACTED"));
            }
            u.to_string()
        }
        Err(_) => match (text.find("://"), text.rfind('@')) {
            (Some(start), Some(at)) if at > start => {
                format!("{}://REDACTED@{}", &text[..start], &text[at + 1..])
            }
            _ => text.to_string(),
        },
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut u = self.url.clone();
        if u.password().is_some() {
            let _ = u.set_password(Some("REDACTED"));
        }
        if self.schema == DEFAULT_SCHEMA {
            write!(f, "{u}")
        } else {
            u.query_pairs_mut().append_pair("schema", &self.schema);
            write!(f, "{u}")
        }
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
