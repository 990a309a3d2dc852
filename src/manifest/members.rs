//! The members file an `issue` block names: members who already hold a
//! (physical) card, by phone number. Columns `cell`, `external_card_no`,
//! and optionally `level`, `point`, `balance`. Personal data: read into
//! memory, never logged, never in a message (a row is its line).

use std::collections::HashMap;
use std::path::Path;

/// A member's existing card.
#[derive(Clone)]
pub struct Holder {
    pub external_card_no: String,
    pub level: Option<String>,
    pub point: Option<String>,
    pub balance: Option<String>,
}

const COLUMNS: &[&str] = &["cell", "external_card_no", "level", "point", "balance"];

/// Read and check the file: phone -> card. `levels`: the template's tier
/// levels (empty: untiered, no level allowed).
pub fn load(path: &Path, levels: &[&str]) -> Result<HashMap<String, Holder>, String> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the members file `{shown}`: {e}"))?;
    let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(file);
    let header: Vec<String> = r
        .headers()
        .map_err(|_| format!("{shown}:1: cannot read the header"))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    for h in &header {
        if !COLUMNS.contains(&h.as_str()) {
            return Err(format!(
                "{shown}:1: unknown column `{h}` (the columns are {})",
                COLUMNS.join(", ")
            ));
        }
    }
    let col = |n: &str| header.iter().position(|h| h == n);
    let (Some(cell), Some(ext)) = (col("cell"), col("external_card_no")) else {
        return Err(format!(
            "{shown}:1: the members file needs `cell` and `external_card_no` columns"
        ));
    };
    let (level, point, balance) = (col("level"), col("point"), col("balance"));
    let mut out = HashMap::new();
    let mut cards = std::collections::HashSet::new();
    for item in r.records() {
        let rec = item.map_err(|e| {
            format!(
                "{shown}:{}: the row cannot be read as UTF-8 CSV",
                e.position().map_or(0, |p| p.line())
            )
        })?;
        let line = rec.position().map_or(0, |p| p.line());
        if rec.len() != header.len() {
            return Err(format!(
                "{shown}:{line}: has {} fields; the header has {}",
                rec.len(),
                header.len()
            ));
        }
        let get = |i: Option<usize>| {
            i.and_then(|i| rec.get(i))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let Some(phone) = get(Some(cell)) else {
            return Err(format!("{shown}:{line}: column `cell` is empty"));
        };
        let Some(card) = get(Some(ext)) else {
            return Err(format!(
                "{shown}:{line}: column `external_card_no` is empty"
            ));
        };
        if card.len() > 64 || card.contains(char::is_whitespace) {
            return Err(format!(
                "{shown}:{line}: column `external_card_no`: at most 64 characters, without spaces"
            ));
        }
        let lvl = get(level);
        match (&lvl, levels.is_empty()) {
            (Some(_), true) => {
                return Err(format!(
                    "{shown}:{line}: column `level`: the template has no tiers"
                ));
            }
            (Some(l), false) if !levels.contains(&l.as_str()) => {
                return Err(format!(
                    "{shown}:{line}: column `level`: not a level of the template ({})",
                    levels.join(", ")
                ));
            }
            _ => {}
        }
        let (p, b) = (get(point), get(balance));
        for (name, v) in [("point", &p), ("balance", &b)] {
            if let Some(v) = v
                && !crate::cards::is_amount(v)
            {
                return Err(format!(
                    "{shown}:{line}: column `{name}`: must be a number with at most two decimals"
                ));
            }
        }
        if !cards.insert(card.clone()) {
            return Err(format!(
                "{shown}:{line}: column `external_card_no`: the card is listed twice"
            ));
        }
        if out
            .insert(
                phone,
                Holder {
                    external_card_no: card,
                    level: lvl,
                    point: p,
                    balance: b,
                },
            )
            .is_some()
        {
            return Err(format!(
                "{shown}:{line}: column `cell`: the phone number is listed twice"
            ));
        }
    }
    Ok(out)
}

/// [`load`], for `validate`: only whether the file is right.
pub fn check_file(path: &Path, levels: &[&str]) -> Result<(), String> {
    load(path, levels).map(|_| ())
}
