//! Telling a damaged PostgreSQL state from a plausible one: the same promise
//! as sled's integrity checkpoint, by PostgreSQL's means.
//!
//! `meta` carries an *account* of the state: how many rows it holds
//! (`resources`, `intents`, `forgotten`) and a 128-bit digest (two bigints,
//! `d1` and `d2`): the XOR of SHA-256 over each row's table, key and stored
//! text, and over `meta`'s own lineage, serial and binding. Every change
//! cardform makes updates the account in the same transaction as the rows
//! (by XOR and addition, which commute, so runs on different merchants
//! writing at once keep it right). Every read adds the rows up again: a row
//! deleted, added or edited by hand, a table truncated, the serial rolled
//! back or the `meta` row deleted no longer adds up, and the state is
//! refused before any gateway call, naming the schema and `state recover`.
//!
//! It guards against accidents and unlucky operators, not against someone
//! who recomputes the digest: they could as well edit the gateway.

use postgres::GenericClient;

use super::db_error;
use super::schema::Names;
use crate::state::StateError;

/// Count and digest of a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Account {
    pub rows: i64,
    pub d1: i64,
    pub d2: i64,
}

/// The tables' tags in the digest.
pub const RESOURCE: &str = "resources";
pub const INTENT: &str = "intents";
pub const FORGOTTEN: &str = "forgotten";

fn term(parts: &[&[u8]]) -> (i64, i64) {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let d = ctx.finish();
    let b = d.as_ref();
    let half = |r: &[u8]| i64::from_be_bytes(r.try_into().expect("8 bytes"));
    (half(&b[..8]), half(&b[8..16]))
}

impl Account {
    fn xor(&mut self, (a, b): (i64, i64)) {
        self.d1 ^= a;
        self.d2 ^= b;
    }

    /// A row of `table` counted in.
    pub fn add(&mut self, table: &str, key: &str, text: &str) {
        self.rows += 1;
        self.xor(term(&[table.as_bytes(), key.as_bytes(), text.as_bytes()]));
    }

    /// A row of `table` counted out.
    pub fn remove(&mut self, table: &str, key: &str, text: &str) {
        self.rows -= 1;
        self.xor(term(&[table.as_bytes(), key.as_bytes(), text.as_bytes()]));
    }

    /// `meta`'s own fields, in (or out: XOR is its own inverse).
    pub fn meta(&mut self, lineage: &str, serial: i64, binding: Option<&str>) {
        self.xor(term(&[
            b"meta",
            lineage.as_bytes(),
            &serial.to_be_bytes(),
            binding.unwrap_or("\u{0}none").as_bytes(),
        ]));
    }
}

/// `meta`'s fields and its recorded account (`None`: not yet counted, a
/// state written before accounts existed).
pub struct MetaRow {
    pub lineage: String,
    pub serial: i64,
    pub binding: Option<String>,
    pub account: Option<Account>,
}

/// Read `meta` (locked for update with `for_update`); a missing row is
/// damage, never an empty state.
pub fn meta_row(
    c: &mut impl GenericClient,
    s: &Names,
    for_update: bool,
) -> Result<MetaRow, StateError> {
    let rows = c
        .query(
            &format!(
                "SELECT lineage, serial, binding, row_count, d1, d2 FROM {}{}",
                s.meta,
                if for_update { " FOR UPDATE" } else { "" }
            ),
            &[],
        )
        .map_err(db_error)?;
    let [row] = rows.as_slice() else {
        return Err(damaged(
            s,
            format!(
                "its `meta` table holds {} row(s) instead of one (lineage, serial and the integrity account)",
                rows.len()
            ),
        ));
    };
    let account = match (row.get(3), row.get(4), row.get(5)) {
        (Some(rows), Some(d1), Some(d2)) => Some(Account { rows, d1, d2 }),
        _ => None,
    };
    Ok(MetaRow {
        lineage: row.get(0),
        serial: row.get(1),
        binding: row.get(2),
        account,
    })
}

/// Apply a change's `delta` to the recorded account.
pub fn record(
    c: &mut impl GenericClient,
    s: &Names,
    delta: &Account,
) -> Result<(), postgres::Error> {
    c.execute(
        &format!(
            "UPDATE {} SET row_count = row_count + $1, d1 = d1 # $2, d2 = d2 # $3",
            s.meta
        ),
        &[&delta.rows, &delta.d1, &delta.d2],
    )
    .map(|_| ())
}

/// Set the recorded account outright.
pub fn set(c: &mut impl GenericClient, s: &Names, a: &Account) -> Result<(), postgres::Error> {
    c.execute(
        &format!("UPDATE {} SET row_count = $1, d1 = $2, d2 = $3", s.meta),
        &[&a.rows, &a.d1, &a.d2],
    )
    .map(|_| ())
}

/// Count every row as it is now (each table read once).
pub fn count(c: &mut impl GenericClient, s: &Names) -> Result<Account, StateError> {
    let meta = meta_row(c, s, false)?;
    let mut a = Account::default();
    a.meta(&meta.lineage, meta.serial, meta.binding.as_deref());
    for (table, sql) in [
        (
            RESOURCE,
            format!("SELECT address, record FROM {}", s.resources),
        ),
        (INTENT, format!("SELECT address, intent FROM {}", s.intents)),
        (
            FORGOTTEN,
            format!("SELECT template_id, address FROM {}", s.forgotten),
        ),
    ] {
        for row in c.query(&sql, &[]).map_err(db_error)? {
            a.add(table, row.get(0), row.get(1));
        }
    }
    Ok(a)
}

pub fn damaged(s: &Names, reason: String) -> StateError {
    StateError::Damaged {
        place: format!("PostgreSQL schema `{}`", s.schema),
        backup: format!("table `{}`", s.backups),
        reason,
    }
}

/// Why `found` does not match `recorded`.
pub fn verify(s: &Names, recorded: &Account, found: &Account) -> Result<(), StateError> {
    if recorded == found {
        return Ok(());
    }
    Err(damaged(
        s,
        if recorded.rows != found.rows {
            format!(
                "it holds {} row(s) where cardform's last change left {} (rows were deleted or added outside cardform)",
                found.rows, recorded.rows
            )
        } else {
            "its rows or its serial were changed outside cardform (they no longer match the integrity account cardform keeps with every change)".to_string()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_order_free_and_undone_by_removal() {
        let mut a = Account::default();
        a.add(RESOURCE, "x", "1");
        a.add(RESOURCE, "y", "2");
        let mut b = Account::default();
        b.add(RESOURCE, "y", "2");
        b.add(RESOURCE, "x", "1");
        assert_eq!(a, b);
        b.remove(RESOURCE, "y", "2");
        b.add(RESOURCE, "y", "3");
        assert_ne!(a, b);
        assert_eq!(a.rows, b.rows);
        let mut m = a;
        m.meta("l", 1, None);
        m.meta("l", 1, None);
        assert_eq!(m, a);
        m.meta("l", 1, None);
        let mut n = a;
        n.meta("l", 2, None);
        assert_ne!(m, n, "a serial is part of the digest");
    }
}
