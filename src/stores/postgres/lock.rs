//! Locks that cannot go stale: session-level advisory locks, held on the
//! store's own connection. A run that is killed, or whose connection drops,
//! releases them with its session; nothing is left to unlock by hand. A row
//! in `locks` per held scope says who holds it (pid, host, operation,
//! since), for the message another run shows; a row whose session is gone is
//! ignored, and overwritten by the next holder.
//!
//! Scopes: the whole state (`state`), or some merchants of it
//! (`merchant/<name>`, each exclusive, with the whole-state key shared), so
//! two runs on different merchants of one project proceed at once, while a
//! whole-state run (an apply of everything, `state import`, ...) excludes
//! every other writer. Keys are the first 8 bytes of SHA-256 of
//! `state/<schema>[/merchant/<name>]`: distinct states never block each other.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use postgres::Client;
use sha2::Digest;

use super::db_error;
use super::schema::Names;
use crate::state::StateError;
use crate::state::backend::{LockError, LockInfo};

/// What a writer locks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Whole,
    Merchants(BTreeSet<String>),
}

/// An advisory-lock key for a name.
pub fn key(name: &str) -> i64 {
    let d = sha2::Sha256::digest(name.as_bytes());
    i64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

fn state_key(s: &Names) -> i64 {
    key(&format!("state/{}", s.schema))
}

fn merchant_key(s: &Names, merchant: &str) -> i64 {
    key(&format!("state/{}/merchant/{merchant}", s.schema))
}

/// The `locks` rows a scope writes.
fn rows(scope: &Scope) -> Vec<String> {
    match scope {
        Scope::Whole => vec!["state".into()],
        Scope::Merchants(ms) => ms.iter().map(|m| format!("merchant/{m}")).collect(),
    }
}

/// One advisory lock to take: key, shared?
fn plan(s: &Names, scope: &Scope) -> Vec<(i64, bool)> {
    match scope {
        Scope::Whole => vec![(state_key(s), false)],
        Scope::Merchants(ms) => {
            let mut keys = vec![(state_key(s), true)];
            // Sorted (a BTreeSet), so two runs never wait on each other in a cycle.
            keys.extend(ms.iter().map(|m| (merchant_key(s, m), false)));
            keys
        }
    }
}

/// Take `scope`'s locks on this session, waiting up to `timeout`; then
/// record who holds them.
pub fn acquire(
    c: &mut Client,
    s: &Names,
    scope: &Scope,
    info: &LockInfo,
    timeout: Duration,
    describe: &str,
) -> Result<(), StateError> {
    let started = Instant::now();
    let mut held: Vec<(i64, bool)> = Vec::new();
    for (k, shared) in plan(s, scope) {
        let got = if timeout.is_zero() {
            let f = if shared {
                "pg_try_advisory_lock_shared"
            } else {
                "pg_try_advisory_lock"
            };
            c.query_one(&format!("SELECT {f}($1)"), &[&k])
                .map_err(db_error)?
                .get::<_, bool>(0)
        } else {
            let left = timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1));
            let f = if shared {
                "pg_advisory_lock_shared"
            } else {
                "pg_advisory_lock"
            };
            c.batch_execute(&format!("SET lock_timeout = {}", left.as_millis()))
                .map_err(db_error)?;
            let r = c.query_one(&format!("SELECT {f}($1)"), &[&k]);
            c.batch_execute("SET lock_timeout = 0").map_err(db_error)?;
            match r {
                Ok(_) => true,
                Err(e) if e.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) => false,
                Err(e) => return Err(db_error(e)),
            }
        };
        if !got {
            release(c, &held)?;
            let holder = holder_of(c, s, scope)?;
            let waited = started.elapsed();
            return Err(match holder {
                Some(holder) => LockError::Held {
                    dir: describe.to_string(),
                    holder,
                    waited,
                },
                None => LockError::Busy {
                    dir: describe.to_string(),
                    waited,
                },
            }
            .into());
        }
        held.push((k, shared));
    }
    let text = serde_json::to_string(info).expect("bug: lock info serializes");
    for row in rows(scope) {
        c.execute(
            &format!(
                "INSERT INTO {} (scope, backend_pid, info) VALUES ($1, pg_backend_pid(), $2)
                 ON CONFLICT (scope) DO UPDATE SET backend_pid = pg_backend_pid(), info = $2",
                s.locks
            ),
            &[&row, &text],
        )
        .map_err(db_error)?;
    }
    Ok(())
}

fn release(c: &mut Client, held: &[(i64, bool)]) -> Result<(), StateError> {
    for (k, shared) in held {
        let f = if *shared {
            "pg_advisory_unlock_shared"
        } else {
            "pg_advisory_unlock"
        };
        c.query_one(&format!("SELECT {f}($1)"), &[k])
            .map_err(db_error)?;
    }
    Ok(())
}

/// Who holds a lock that conflicts with `scope`, from the rows of live sessions.
pub fn holder_of(c: &mut Client, s: &Names, scope: &Scope) -> Result<Option<LockInfo>, StateError> {
    // A whole-state writer conflicts with every row; a merchant writer with
    // the whole-state row and its merchants' rows.
    let wanted: Option<Vec<String>> = match scope {
        Scope::Whole => None,
        Scope::Merchants(_) => {
            let mut r = rows(scope);
            r.push("state".into());
            Some(r)
        }
    };
    let live = live_rows(c, s)?;
    Ok(live
        .into_iter()
        .find(|(scope, _)| wanted.as_ref().is_none_or(|w| w.contains(scope)))
        .map(|(_, info)| info))
}

/// The lock rows whose session is still connected.
pub fn live_rows(c: &mut Client, s: &Names) -> Result<Vec<(String, LockInfo)>, StateError> {
    let rows = c
        .query(
            &format!(
                "SELECT scope, info FROM {} WHERE backend_pid IN (SELECT pid FROM pg_stat_activity) ORDER BY scope",
                s.locks
            ),
            &[],
        )
        .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let scope: String = r.get(0);
            let info: String = r.get(1);
            Some((scope, serde_json::from_str(&info).ok()?))
        })
        .collect())
}

/// Drop the rows of sessions that are gone; returns what they said.
pub fn clear_stale(c: &mut Client, s: &Names) -> Result<Vec<LockInfo>, StateError> {
    let rows = c
        .query(
            &format!(
                "DELETE FROM {} WHERE backend_pid NOT IN (SELECT pid FROM pg_stat_activity) RETURNING info",
                s.locks
            ),
            &[],
        )
        .map_err(db_error)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| serde_json::from_str(r.get::<_, &str>(0)).ok())
        .collect())
}
