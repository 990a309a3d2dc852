//! Members' cards (seed 004): the rows a merchant hands cardform, checked
//! against seed 004's formats before any call; the template a row's level
//! opens on; and the keys that make issuing idempotent. Pure: no I/O.
//!
//! Privacy: a row holds members' personal data (user ids, names, phone
//! numbers, birthdays) and secrets (tokens). A row is named in messages by
//! its line and external card number only, and nothing of it is kept but
//! what [`Entry`](crate::state::cards::Entry) holds: keys, a salted digest,
//! the card number Alipay assigned, times.

pub mod trade;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::model::{Address, Attrs, Desired, Kind};
use crate::util::secret::Secret;

/// The columns a cards CSV may have. Any other column is an error (a typo
/// would otherwise drop a value silently).
pub const COLUMNS: &[&str] = &[
    "external_card_no",
    "user_id",
    "open_id",
    "auth_token",
    "refresh_token",
    "open_date",
    "valid_date",
    "level",
    "point",
    "balance",
    "front_label_1",
    "front_value_1",
    "front_label_2",
    "front_value_2",
    "front_label_3",
    "front_value_3",
    "front_label_4",
    "front_value_4",
    "name",
    "gender",
    "birth",
    "cell",
    "channel",
];

/// What a row is for: opening needs the member (user and token) and the
/// card's dates; syncing needs only the card and the values to keep in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Open,
    Sync,
}

/// How cardform acts as the member: a token the merchant holds, or a
/// refresh token exchanged first (both secrets).
#[derive(Clone)]
pub enum MemberAuth {
    Token(Secret),
    Refresh(Secret),
}

/// Who the card is for: an Alipay user id or an open_id.
#[derive(Clone, Default, PartialEq)]
pub struct CardUser {
    pub user_uni_id: Option<String>,
    /// `UID` with a user id.
    pub user_uni_id_type: Option<String>,
    pub open_id: Option<String>,
}

/// A line of text on the card's front.
#[derive(Clone, Default, PartialEq)]
pub struct FrontText {
    pub label: Option<String>,
    pub value: Option<String>,
}

/// What the member told the merchant (personal data).
#[derive(Clone, Default, PartialEq)]
pub struct Member {
    pub name: Option<String>,
    pub gender: Option<String>,
    pub birth: Option<String>,
    pub cell: Option<String>,
}

/// One checked row. `Debug` is deliberately not derived: it holds personal
/// data.
#[derive(Clone)]
pub struct Row {
    /// 1-based line of the row in its file.
    pub line: u64,
    pub external_card_no: String,
    pub user: Option<CardUser>,
    pub auth: Option<MemberAuth>,
    pub open_date: Option<String>,
    pub valid_date: Option<String>,
    pub level: Option<String>,
    pub point: Option<String>,
    pub balance: Option<String>,
    pub front: Vec<FrontText>,
    pub member: Option<Member>,
    pub channel: Option<String>,
}

/// A row's problem: which column, and what is wrong, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub column: Option<String>,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "column `{c}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn bad(column: &str, message: impl Into<String>) -> RowError {
    RowError {
        column: Some(column.to_string()),
        message: message.into(),
    }
}

/// A header's columns, each one of `known` (else the nearest is suggested)
/// and none twice.
pub fn known_columns<'h>(
    header: &'h [String],
    known: &[&str],
) -> Result<std::collections::BTreeSet<&'h str>, String> {
    let mut seen = std::collections::BTreeSet::new();
    for h in header {
        if !known.contains(&h.as_str()) {
            let near = known
                .iter()
                .map(|c| (strsim::jaro_winkler(c, h), c))
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .filter(|(s, _)| *s > 0.8)
                .map(|(_, c)| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "unknown column `{h}`{near}\nhint: the columns are {}",
                known.join(", ")
            ));
        }
        if !seen.insert(h.as_str()) {
            return Err(format!("column `{h}` appears twice"));
        }
    }
    Ok(seen)
}

/// Check a CSV header: every column known, none twice, and the ones the
/// purpose needs present.
pub fn check_header(header: &[String], purpose: Purpose) -> Result<(), String> {
    let seen = known_columns(header, COLUMNS)?;
    let mut need = vec!["external_card_no"];
    if purpose == Purpose::Open {
        need.extend(["open_date", "valid_date"]);
        if !seen.contains("user_id") && !seen.contains("open_id") {
            return Err(
                "opening cards needs the member: a `user_id` or `open_id` column".to_string(),
            );
        }
        if !seen.contains("auth_token") && !seen.contains("refresh_token") {
            return Err("opening cards needs the member's authorisation: an `auth_token` or `refresh_token` column (card.open is made as the member)".to_string());
        }
    }
    for n in need {
        if !seen.contains(n) {
            return Err(format!("the `{n}` column is required"));
        }
    }
    Ok(())
}

pub fn is_time(v: &str) -> bool {
    chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S").is_ok() && v.len() == 19
}

pub fn is_date(v: &str) -> bool {
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok() && v.len() == 10
}

/// A point or balance: a number with at most two decimals.
pub fn is_amount(v: &str) -> bool {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let int = int.strip_prefix('-').unwrap_or(int);
    !int.is_empty()
        && int.len() <= 16
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 2
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(v.contains('.') && frac.is_empty())
}

/// An amount in hundredths, exactly (`is_amount`'s form; a leading `+` too).
fn cents(v: &str) -> Option<i128> {
    let v = v.trim();
    let (neg, body) = match v.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    if !is_amount(body) || body.starts_with('-') {
        return None;
    }
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let n = int.parse::<i128>().ok()? * 100 + format!("{frac:0<2}").parse::<i128>().ok()?;
    Some(if neg { -n } else { n })
}

/// The points message's change from `old` to `new` points: signed (`+20`,
/// `-15.5`), `None` when nothing moved or either is not a number.
pub fn point_change(old: &str, new: &str) -> Option<String> {
    let d = cents(new)? - cents(old)?;
    if d == 0 {
        return None;
    }
    let sign = if d < 0 { "-" } else { "+" };
    let (int, frac) = (d.abs() / 100, d.abs() % 100);
    Some(match frac {
        0 => format!("{sign}{int}"),
        f if f % 10 == 0 => format!("{sign}{int}.{}", f / 10),
        f => format!("{sign}{int}.{f:02}"),
    })
}

/// A user id Alipay hands out: 16 digits starting 2088.
pub fn is_user_id(v: &str) -> bool {
    v.len() == 16 && v.starts_with("2088") && v.bytes().all(|b| b.is_ascii_digit())
}

fn plain(v: &str, max: usize) -> bool {
    !v.is_empty() && v.chars().count() <= max && !v.chars().any(char::is_control)
}

/// Parse and check one record (`values` in the header's order). Every
/// problem of the row is returned, not only the first.
pub fn parse_row(
    header: &[String],
    values: &[&str],
    line: u64,
    purpose: Purpose,
) -> Result<Row, Vec<RowError>> {
    let mut errors = Vec::new();
    if values.len() != header.len() {
        return Err(vec![RowError {
            column: None,
            message: format!(
                "has {} fields; the header has {}",
                values.len(),
                header.len()
            ),
        }]);
    }
    let cols: BTreeMap<&str, &str> = header
        .iter()
        .map(String::as_str)
        .zip(values.iter().map(|v| v.trim()))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let get = |c: &str| cols.get(c).map(|v| v.to_string());
    let external_card_no = get("external_card_no").unwrap_or_default();
    if external_card_no.is_empty() {
        errors.push(bad("external_card_no", "is required"));
    } else if !plain(&external_card_no, 64) || external_card_no.contains(char::is_whitespace) {
        errors.push(bad(
            "external_card_no",
            "must be at most 64 characters, without spaces",
        ));
    }
    let user = match (get("user_id"), get("open_id")) {
        (Some(u), None) => {
            if !is_user_id(&u) {
                errors.push(bad("user_id", "must be 16 digits starting 2088"));
            }
            Some(CardUser {
                user_uni_id: Some(u),
                user_uni_id_type: Some("UID".into()),
                open_id: None,
            })
        }
        (None, Some(o)) => {
            if !plain(&o, 64) {
                errors.push(bad("open_id", "must be 1 to 64 characters"));
            }
            Some(CardUser {
                open_id: Some(o),
                ..Default::default()
            })
        }
        (Some(_), Some(_)) => {
            errors.push(bad("user_id", "give `user_id` or `open_id`, not both"));
            None
        }
        (None, None) => {
            if purpose == Purpose::Open {
                errors.push(bad(
                    "user_id",
                    "the member is required (`user_id` or `open_id`)",
                ));
            }
            None
        }
    };
    let auth = match (get("auth_token"), get("refresh_token")) {
        (Some(t), None) => Some(MemberAuth::Token(Secret::new(t))),
        (None, Some(t)) => Some(MemberAuth::Refresh(Secret::new(t))),
        (Some(_), Some(_)) => {
            errors.push(bad(
                "auth_token",
                "give `auth_token` or `refresh_token`, not both",
            ));
            None
        }
        (None, None) => {
            if purpose == Purpose::Open {
                errors.push(bad(
                    "auth_token",
                    "the member's authorisation is required (`auth_token` or `refresh_token`)",
                ));
            }
            None
        }
    };
    for t in ["auth_token", "refresh_token"] {
        if let Some(v) = cols.get(t)
            && !plain(v, 256)
        {
            errors.push(bad(t, "must be at most 256 characters"));
        }
    }
    let mut date = |c: &str| {
        let v = get(c);
        match &v {
            Some(v) if !is_time(v) => errors.push(bad(c, "must be yyyy-MM-dd HH:mm:ss")),
            None if purpose == Purpose::Open => errors.push(bad(c, "is required")),
            _ => {}
        }
        v
    };
    let open_date = date("open_date");
    let valid_date = date("valid_date");
    if let (Some(o), Some(v)) = (&open_date, &valid_date)
        && is_time(o)
        && is_time(v)
        && v <= o
    {
        errors.push(bad("valid_date", "must be after open_date"));
    }
    let level = get("level");
    if let Some(l) = &level
        && !plain(l, 64)
    {
        errors.push(bad("level", "must be 1 to 64 characters"));
    }
    let mut amount = |c: &str| {
        let v = get(c);
        if let Some(v) = &v
            && !is_amount(v)
        {
            errors.push(bad(c, "must be a number with at most two decimals"));
        }
        v
    };
    let point = amount("point");
    let balance = amount("balance");
    let mut front = Vec::new();
    for i in 1..=4 {
        let (lc, vc) = (format!("front_label_{i}"), format!("front_value_{i}"));
        let (label, value) = (get(&lc), get(&vc));
        if let Some(l) = &label
            && l.chars().count() > 4
        {
            errors.push(bad(&lc, "at most 4 characters (seed 004)"));
        }
        if let Some(v) = &value
            && v.chars().count() > 32
        {
            errors.push(bad(&vc, "at most 32 characters"));
        }
        if label.is_none() && value.is_some() {
            errors.push(bad(&lc, format!("`{vc}` needs its label")));
        }
        if label.is_some() || value.is_some() {
            front.push(FrontText { label, value });
        }
    }
    let gender = get("gender").map(|g| g.to_ascii_uppercase());
    if let Some(g) = &gender
        && g != "MALE"
        && g != "FEMALE"
    {
        errors.push(bad("gender", "must be MALE or FEMALE"));
    }
    let birth = get("birth");
    if let Some(b) = &birth
        && !is_date(b)
    {
        errors.push(bad("birth", "must be yyyy-MM-dd"));
    }
    let name = get("name");
    if let Some(n) = &name
        && !plain(n, 64)
    {
        errors.push(bad("name", "must be at most 64 characters"));
    }
    let cell = get("cell");
    if let Some(c) = &cell
        && !plain(c, 32)
    {
        errors.push(bad("cell", "must be at most 32 characters"));
    }
    let member = (name.is_some() || gender.is_some() || birth.is_some() || cell.is_some())
        .then_some({
            Member {
                name,
                gender,
                birth,
                cell,
            }
        });
    let channel = get("channel");
    if let Some(c) = &channel
        && !plain(c, 64)
    {
        errors.push(bad("channel", "must be 1 to 64 characters"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Row {
        line,
        external_card_no,
        user,
        auth,
        open_date,
        valid_date,
        level,
        point,
        balance,
        front,
        member,
        channel,
    })
}

/// The templates a `--template` address opens cards on: one template, or a
/// family of tiers (`template.club.<level>`), one per level.
#[derive(Debug, Clone)]
pub struct Target {
    /// The family's address (`merchant.brew/template.club`), or the
    /// untiered template's: what out_serial_no is derived from.
    pub family: Address,
    /// level -> tier template address; empty for an untiered template.
    pub tiers: BTreeMap<String, Address>,
    /// The level a row without one opens on (a tier named on the command line).
    pub default_level: Option<String>,
}

impl Target {
    /// Resolve `--template` against the manifests.
    pub fn resolve(desired: &Desired, address: &Address) -> Result<Target, String> {
        if address.kind != Kind::Template {
            return Err(format!("`{address}` is not a template address"));
        }
        let levels_of = |a: &Address| match desired.resources.get(a).map(|r| &r.attrs) {
            Some(Attrs::Template(t)) => Some(t.levels.iter().map(|l| l.level.clone()).collect()),
            _ => None,
        };
        let family_of = |a: &Address, levels: &Vec<String>| -> Option<(Address, String)> {
            levels.iter().find_map(|l| {
                let base = a.name.strip_suffix(&format!(".{l}"))?;
                Some((Address::new(&a.merchant, Kind::Template, base), l.clone()))
            })
        };
        let tiers_of = |family: &Address, levels: &Vec<String>| -> BTreeMap<String, Address> {
            levels
                .iter()
                .map(|l| {
                    (
                        l.clone(),
                        Address::new(
                            &family.merchant,
                            Kind::Template,
                            &format!("{}.{l}", family.name),
                        ),
                    )
                })
                .filter(|(_, a)| desired.resources.contains_key(a))
                .collect()
        };
        if let Some(levels) = levels_of(address) {
            let levels: Vec<String> = levels;
            if let Some((family, level)) = family_of(address, &levels) {
                return Ok(Target {
                    tiers: tiers_of(&family, &levels),
                    family,
                    default_level: Some(level),
                });
            }
            // An untiered template (levels, if any, are configured on it).
            return Ok(Target {
                family: address.clone(),
                tiers: BTreeMap::new(),
                default_level: None,
            });
        }
        // A family named by its base: its tiers are `<name>.<level>`.
        let prefix = format!("{}.", address.name);
        let tier = desired.resources.keys().find(|a| {
            a.kind == Kind::Template
                && a.merchant == address.merchant
                && a.name.starts_with(&prefix)
        });
        if let Some(t) = tier
            && let Some(levels) = levels_of(t)
            && let Some((family, _)) = family_of(t, &levels)
            && &family == address
        {
            return Ok(Target {
                tiers: tiers_of(&family, &levels),
                family,
                default_level: None,
            });
        }
        Err(format!(
            "no template `{address}` in the manifests\nhint: `cardform plan` lists the addresses; a tiered template is `template.<name>` (its tiers are `template.<name>.<level>`)"
        ))
    }

    /// The template a row's level opens on.
    pub fn template_for(&self, level: Option<&str>) -> Result<&Address, RowError> {
        if self.tiers.is_empty() {
            return match level {
                None => Ok(&self.family),
                Some(_) => Err(bad(
                    "level",
                    format!(
                        "`{}` has no tiers, so a row cannot name a level",
                        self.family
                    ),
                )),
            };
        }
        let level = level.or(self.default_level.as_deref()).ok_or_else(|| {
            bad(
                "level",
                format!(
                    "is required: `{}` has tiers ({})",
                    self.family,
                    self.levels().join(", ")
                ),
            )
        })?;
        self.tiers.get(level).ok_or_else(|| {
            bad(
                "level",
                format!(
                    "`{level}` is not a level of `{}` (its levels: {})",
                    self.family,
                    self.levels().join(", ")
                ),
            )
        })
    }

    pub fn levels(&self) -> Vec<String> {
        self.tiers.keys().cloned().collect()
    }
}

/// out_serial_no for a card: the same for the same template family and
/// external card number, whoever runs it and however often (at most 64
/// characters; this is 32).
pub fn out_serial_no(family: &Address, external_card_no: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"cardform card\0");
    h.update(family.to_string().as_bytes());
    h.update(b"\0");
    h.update(external_card_no.as_bytes());
    format!("cf{}", &hex::encode(h.finalize())[..30])
}

/// The ledger's key for a card opened through the open-card SPI: one per
/// Alipay `out_serial_no` (Alipay's retries repeat it).
pub fn spi_serial_no(family: &Address, alipay_out_serial_no: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"cardform spi\0");
    h.update(family.to_string().as_bytes());
    h.update(b"\0");
    h.update(alipay_out_serial_no.as_bytes());
    format!("cs{}", &hex::encode(h.finalize())[..30])
}

/// out_serial_no for a member activating with no card of their own: one
/// card per Alipay member and template family, keyed by a digest salted
/// with the ledger's secret salt (the ledger never holds the member's id,
/// and a second activation, a fresh scan after "scan again" included,
/// answers the member's card instead of opening another).
pub fn member_serial_no(family: &Address, salt: &[u8], alipay_user: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"cardform member\0");
    h.update(salt);
    h.update(family.to_string().as_bytes());
    h.update(b"\0");
    h.update(alipay_user.as_bytes());
    format!("ca{}", &hex::encode(h.finalize())[..30])
}

/// out_serial_no of an activation by `request_id` (cardform before issue
/// 28: one card per activation; kept to read such cards).
pub fn activation_serial_no(family: &Address, request_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"cardform activation\0");
    h.update(family.to_string().as_bytes());
    h.update(b"\0");
    h.update(request_id.as_bytes());
    format!("ca{}", &hex::encode(h.finalize())[..30])
}

/// A keyed digest (the ledger's own salt): equal values give equal digests,
/// and a digest says nothing about the values (no dictionary of phone
/// numbers reverses it without the salt).
fn digest(salt: &[u8], parts: &[Option<&str>]) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    for p in parts {
        match p {
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
            None => h.update([0]),
        }
    }
    hex::encode(&h.finalize()[..16])
}

impl Row {
    fn front_parts(&self) -> Vec<Option<&str>> {
        let mut parts = Vec::new();
        for i in 0..4 {
            let t = self.front.get(i);
            parts.push(t.and_then(|t| t.label.as_deref()));
            parts.push(t.and_then(|t| t.value.as_deref()));
        }
        parts
    }

    /// The digest of what a card is opened with (not the token, which
    /// changes between runs).
    pub fn open_digest(&self, salt: &[u8]) -> String {
        let user = self.user.as_ref();
        let member = self.member.as_ref();
        let mut parts = vec![
            Some(self.external_card_no.as_str()),
            user.and_then(|u| u.user_uni_id.as_deref()),
            user.and_then(|u| u.open_id.as_deref()),
            self.open_date.as_deref(),
            self.valid_date.as_deref(),
            self.level.as_deref(),
            self.point.as_deref(),
            self.balance.as_deref(),
            member.and_then(|m| m.name.as_deref()),
            member.and_then(|m| m.gender.as_deref()),
            member.and_then(|m| m.birth.as_deref()),
            member.and_then(|m| m.cell.as_deref()),
            self.channel.as_deref(),
        ];
        parts.extend(self.front_parts());
        digest(salt, &parts)
    }

    /// The digest of the values `cards sync` keeps in step.
    pub fn sync_digest(&self, salt: &[u8]) -> String {
        let mut parts = vec![
            self.level.as_deref(),
            self.point.as_deref(),
            self.balance.as_deref(),
        ];
        parts.extend(self.front_parts());
        digest(salt, &parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|s| s.to_string()).collect()
    }

    const OPEN: &[&str] = &[
        "external_card_no",
        "user_id",
        "auth_token",
        "open_date",
        "valid_date",
        "level",
        "point",
        "birth",
        "front_label_1",
        "front_value_1",
    ];

    #[test]
    fn a_good_row_parses_and_its_errors_name_columns_never_values() {
        let h = header(OPEN);
        let ok = parse_row(
            &h,
            &[
                "P-1",
                "2088000000000001",
                "tok",
                "2024-01-01 00:00:00",
                "2099-12-31 23:59:59",
                "gold",
                "10.5",
                "1990-02-03",
                "Tier",
                "Gold",
            ],
            2,
            Purpose::Open,
        );
        assert!(ok.is_ok());
        let errs = parse_row(
            &h,
            &[
                "P-2",
                "13800000000",
                "tok",
                "2024-01-01",
                "2099-12-31 23:59:59",
                "gold",
                "10.555",
                "03/02/1990",
                "Longer",
                "x",
            ],
            3,
            Purpose::Open,
        )
        .err()
        .unwrap();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let all = text.join("\n");
        for col in ["user_id", "open_date", "point", "birth", "front_label_1"] {
            assert!(all.contains(&format!("column `{col}`")), "{all}");
        }
        for value in ["13800000000", "10.555", "03/02/1990", "Longer"] {
            assert!(!all.contains(value), "a value leaked: {all}");
        }
    }

    #[test]
    fn headers_are_checked() {
        assert!(check_header(&header(OPEN), Purpose::Open).is_ok());
        let e = check_header(&header(&["external_card_no", "pont"]), Purpose::Sync).unwrap_err();
        assert!(e.contains("did you mean `point`"), "{e}");
        let e = check_header(
            &header(&["external_card_no", "open_date", "valid_date"]),
            Purpose::Open,
        )
        .unwrap_err();
        assert!(e.contains("user_id"), "{e}");
    }

    #[test]
    fn serial_numbers_are_stable_and_distinct() {
        let a: Address = "merchant.brew/template.club".parse().unwrap();
        let b: Address = "merchant.tea/template.club".parse().unwrap();
        assert_eq!(out_serial_no(&a, "P-1"), out_serial_no(&a, "P-1"));
        assert_ne!(out_serial_no(&a, "P-1"), out_serial_no(&a, "P-2"));
        assert_ne!(out_serial_no(&a, "P-1"), out_serial_no(&b, "P-1"));
        assert_eq!(out_serial_no(&a, "P-1").len(), 32);
        assert_ne!(out_serial_no(&a, "r"), activation_serial_no(&a, "r"));
    }

    #[test]
    fn point_changes_are_exact_and_signed() {
        assert_eq!(point_change("100", "120").as_deref(), Some("+20"));
        assert_eq!(point_change("120.5", "105").as_deref(), Some("-15.5"));
        assert_eq!(point_change("0.01", "0.1").as_deref(), Some("+0.09"));
        assert_eq!(point_change("10", "10.00"), None);
        assert_eq!(point_change("x", "10"), None);
    }

    #[test]
    fn amounts() {
        for ok in ["0", "10", "10.5", "10.50", "-3.2"] {
            assert!(is_amount(ok), "{ok}");
        }
        for bad in ["", "1.", ".5", "1.234", "1e3", "12a"] {
            assert!(!is_amount(bad), "{bad}");
        }
    }
}
