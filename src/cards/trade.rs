//! Running a card after it is open: a trade at the till
//! (`alipay.marketing.card.consume.sync`) and a points-expiry reminder
//! (`alipay.marketing.card.message.notify`), as CSV rows or the till's JSON,
//! checked before any call; and the keys that make each one happen once,
//! ever. Pure: no I/O.
//!
//! Neither holds anything personal: a card number, a trade number, amounts
//! and times. The ledger keeps only a salted digest of them.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{RowError, bad, digest, is_amount, is_time, plain};

/// The card a trade or reminder is for: the merchant's number (a card
/// cardform opened from a CSV), or Alipay's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardRef {
    External(String),
    Biz(String),
}

impl CardRef {
    /// How a row is named in messages and results (a card number, never
    /// anything of the member).
    pub fn shown(&self) -> &str {
        match self {
            CardRef::External(s) | CardRef::Biz(s) => s,
        }
    }
}

/// BenefitInfoDetail: a benefit a trade used or gained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Benefit {
    pub benefit_type: String,
    pub amount: Option<String>,
    pub count: Option<String>,
    pub description: Option<String>,
}

/// One trade on a card, with the card's values after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    pub line: u64,
    pub card: CardRef,
    pub trade_no: String,
    /// OPEN, TRADE (a purchase), DEPOSIT (a top-up), RETURN (a refund).
    pub trade_type: String,
    /// yyyy-MM-dd HH:mm:ss
    pub trade_time: String,
    pub trade_name: Option<String>,
    pub trade_amount: Option<String>,
    pub act_pay_amount: Option<String>,
    pub point: Option<String>,
    pub balance: Option<String>,
    pub level: Option<String>,
    pub shop_code: Option<String>,
    pub memo: Option<String>,
    pub swipe_cert_type: Option<String>,
    pub used: Option<Benefit>,
    pub gained: Option<Benefit>,
}

/// A points-expiry reminder (notify_type POINT_REMIND).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub line: u64,
    pub card: CardRef,
    pub expired_point: String,
    /// When the points expire (yyyy-MM-dd HH:mm:ss).
    pub expired_time: String,
}

pub const TRADE_COLUMNS: &[&str] = &[
    "external_card_no",
    "biz_card_no",
    "trade_no",
    "trade_type",
    "trade_time",
    "trade_name",
    "trade_amount",
    "act_pay_amount",
    "point",
    "balance",
    "level",
    "shop_code",
    "memo",
    "swipe_cert_type",
    "use_benefit_type",
    "use_benefit_amount",
    "use_benefit_count",
    "use_benefit_description",
    "gain_benefit_type",
    "gain_benefit_amount",
    "gain_benefit_count",
    "gain_benefit_description",
];

pub const REMINDER_COLUMNS: &[&str] = &[
    "external_card_no",
    "biz_card_no",
    "expired_point",
    "expired_time",
];

pub const TRADE_TYPES: &[&str] = &["OPEN", "TRADE", "DEPOSIT", "RETURN"];

/// A header's columns: each known, none twice, the required ones there, and
/// the card named by exactly one of `external_card_no` / `biz_card_no`.
pub fn check_header(header: &[String], known: &[&str], required: &[&str]) -> Result<(), String> {
    let seen = super::known_columns(header, known)?;
    match (
        seen.contains("external_card_no"),
        seen.contains("biz_card_no"),
    ) {
        (false, false) => {
            return Err(
                "the card is required: an `external_card_no` or `biz_card_no` column".into(),
            );
        }
        (true, true) => {
            return Err("give `external_card_no` or `biz_card_no`, not both columns".into());
        }
        _ => {}
    }
    for n in required {
        if !seen.contains(n) {
            return Err(format!("the `{n}` column is required"));
        }
    }
    Ok(())
}

pub fn check_trade_header(header: &[String]) -> Result<(), String> {
    check_header(
        header,
        TRADE_COLUMNS,
        &["trade_no", "trade_type", "trade_time"],
    )
}

pub fn check_reminder_header(header: &[String]) -> Result<(), String> {
    check_header(header, REMINDER_COLUMNS, &["expired_point", "expired_time"])
}

/// A row's cells by column, trimmed, empty ones left out; or the row's
/// shape is wrong (then nothing of it may be shown).
fn cells<'a>(header: &'a [String], values: &[&'a str]) -> Result<Cells<'a>, Vec<RowError>> {
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
    Ok(Cells {
        cols: header
            .iter()
            .map(String::as_str)
            .zip(values.iter().map(|v| v.trim()))
            .filter(|(_, v)| !v.is_empty())
            .collect(),
        errors: Vec::new(),
    })
}

/// The cells of one row and the problems found so far.
pub struct Cells<'a> {
    cols: BTreeMap<&'a str, &'a str>,
    errors: Vec<RowError>,
}

impl Cells<'_> {
    /// Build from a JSON object's string values (the till's transactions).
    pub fn of<'a>(cols: BTreeMap<&'a str, &'a str>) -> Cells<'a> {
        Cells {
            cols: cols.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
            errors: Vec::new(),
        }
    }

    fn get(&self, c: &str) -> Option<String> {
        self.cols.get(c).map(|v| v.to_string())
    }

    fn fail(&mut self, column: &str, message: impl Into<String>) {
        self.errors.push(bad(column, message));
    }

    /// A free text of at most `max` characters.
    fn text(&mut self, c: &str, max: usize) -> Option<String> {
        let v = self.get(c);
        if let Some(v) = &v
            && !plain(v, max)
        {
            self.fail(c, format!("must be 1 to {max} characters"));
        }
        v
    }

    fn required_text(&mut self, c: &str, max: usize) -> String {
        let v = self.text(c, max);
        if v.is_none() {
            self.fail(c, "is required");
        }
        v.unwrap_or_default()
    }

    fn amount(&mut self, c: &str) -> Option<String> {
        let v = self.get(c);
        if let Some(v) = &v
            && !is_amount(v)
        {
            self.fail(c, "must be a number with at most two decimals");
        }
        v
    }

    fn time(&mut self, c: &str) -> String {
        let v = self.get(c);
        match &v {
            None => self.fail(c, "is required"),
            Some(v) if !is_time(v) => self.fail(c, "must be yyyy-MM-dd HH:mm:ss"),
            _ => {}
        }
        v.unwrap_or_default()
    }

    fn one_of(&mut self, c: &str, allowed: &[&str]) -> Option<String> {
        let v = self.get(c).map(|v| v.to_ascii_uppercase());
        if let Some(v) = &v
            && !allowed.contains(&v.as_str())
        {
            self.fail(c, format!("must be one of {}", allowed.join(", ")));
        }
        v
    }

    fn card(&mut self) -> CardRef {
        match (self.get("external_card_no"), self.get("biz_card_no")) {
            (Some(e), None) => {
                if !plain(&e, 64) || e.contains(char::is_whitespace) {
                    self.fail(
                        "external_card_no",
                        "must be at most 64 characters, without spaces",
                    );
                }
                CardRef::External(e)
            }
            (None, Some(b)) => {
                if !plain(&b, 32) || b.contains(char::is_whitespace) {
                    self.fail(
                        "biz_card_no",
                        "must be at most 32 characters, without spaces",
                    );
                }
                CardRef::Biz(b)
            }
            (Some(_), Some(_)) => {
                self.fail("external_card_no", "give the card once");
                CardRef::External(String::new())
            }
            (None, None) => {
                self.fail("external_card_no", "the card is required");
                CardRef::External(String::new())
            }
        }
    }

    fn benefit(&mut self, prefix: &str, allowed: &[&str]) -> Option<Benefit> {
        let col = |f: &str| format!("{prefix}_benefit_{f}");
        let ty = self.one_of(&col("type"), allowed);
        let amount = self.amount(&col("amount"));
        let count = self.get(&col("count"));
        if let Some(n) = &count
            && (n.len() > 9 || !n.bytes().all(|b| b.is_ascii_digit()))
        {
            self.fail(&col("count"), "must be a whole number");
        }
        let description = self.text(&col("description"), 256);
        match ty {
            Some(benefit_type) => Some(Benefit {
                benefit_type,
                amount,
                count,
                description,
            }),
            None => {
                if amount.is_some() || count.is_some() || description.is_some() {
                    self.fail(&col("type"), "is required with the benefit's other columns");
                }
                None
            }
        }
    }

    fn done<T>(self, v: T) -> Result<T, Vec<RowError>> {
        if self.errors.is_empty() {
            Ok(v)
        } else {
            Err(self.errors)
        }
    }

    /// A trade from these cells (every problem, never a value).
    pub fn trade(mut self, line: u64) -> Result<Trade, Vec<RowError>> {
        let card = self.card();
        let trade_no = self.required_text("trade_no", 64);
        let trade_type = self.one_of("trade_type", TRADE_TYPES).unwrap_or_else(|| {
            self.fail("trade_type", "is required");
            String::new()
        });
        let trade_time = self.time("trade_time");
        let trade = Trade {
            line,
            card,
            trade_no,
            trade_type,
            trade_time,
            trade_name: self.text("trade_name", 256),
            trade_amount: self.amount("trade_amount"),
            act_pay_amount: self.amount("act_pay_amount"),
            point: self.amount("point"),
            balance: self.amount("balance"),
            level: self.text("level", 64),
            shop_code: self.text("shop_code", 64),
            memo: self.text("memo", 256),
            swipe_cert_type: self.one_of("swipe_cert_type", &["ALIPAY", "ENTITY", "OTHER"]),
            // DISCOUNT is a benefit a trade uses, never one it gains.
            used: self.benefit("use", &["PRE_FUND", "DISCOUNT", "COUPON"]),
            gained: self.benefit("gain", &["PRE_FUND", "COUPON"]),
        };
        self.done(trade)
    }

    pub fn reminder(mut self, line: u64) -> Result<Reminder, Vec<RowError>> {
        let card = self.card();
        let expired_point = self.amount("expired_point").unwrap_or_else(|| {
            self.fail("expired_point", "is required");
            String::new()
        });
        let expired_time = self.time("expired_time");
        self.done(Reminder {
            line,
            card,
            expired_point,
            expired_time,
        })
    }
}

pub fn parse_trade(header: &[String], values: &[&str], line: u64) -> Result<Trade, Vec<RowError>> {
    cells(header, values)?.trade(line)
}

pub fn parse_reminder(
    header: &[String],
    values: &[&str],
    line: u64,
) -> Result<Reminder, Vec<RowError>> {
    cells(header, values)?.reminder(line)
}

fn key(kind: &[u8], parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(kind);
    for p in parts {
        h.update(b"\0");
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

impl Trade {
    /// Its journal key: once per (card, trade_no), ever.
    pub fn key(&self, biz_card_no: &str) -> String {
        format!(
            "t:{}",
            key(b"cardform trade", &[biz_card_no, &self.trade_no])
        )
    }

    /// A salted digest of everything the trade sends (the same trade_no
    /// with other content is refused).
    pub fn digest(&self, salt: &[u8]) -> String {
        let b = |b: &Option<Benefit>| -> [Option<String>; 4] {
            match b {
                None => [None, None, None, None],
                Some(b) => [
                    Some(b.benefit_type.clone()),
                    b.amount.clone(),
                    b.count.clone(),
                    b.description.clone(),
                ],
            }
        };
        let (used, gained) = (b(&self.used), b(&self.gained));
        let mut parts: Vec<Option<&str>> = vec![
            Some(&self.trade_type),
            Some(&self.trade_time),
            self.trade_name.as_deref(),
            self.trade_amount.as_deref(),
            self.act_pay_amount.as_deref(),
            self.point.as_deref(),
            self.balance.as_deref(),
            self.level.as_deref(),
            self.shop_code.as_deref(),
            self.memo.as_deref(),
            self.swipe_cert_type.as_deref(),
        ];
        parts.extend(used.iter().chain(gained.iter()).map(|v| v.as_deref()));
        digest(salt, &parts)
    }
}

impl Reminder {
    /// notify_no: derived from the reminder, so the same reminder is one
    /// notify, however often its row is run.
    pub fn notify_no(&self, biz_card_no: &str) -> String {
        format!(
            "cn{}",
            &key(
                b"cardform reminder",
                &[biz_card_no, &self.expired_point, &self.expired_time]
            )[..30]
        )
    }

    /// Its journal key (one reminder per card, points and expiry time).
    pub fn key(&self, biz_card_no: &str) -> String {
        format!("n:{}", &self.notify_no(biz_card_no)[2..])
    }

    pub fn digest(&self, salt: &[u8]) -> String {
        digest(salt, &[Some(&self.expired_point), Some(&self.expired_time)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(cols: &[&str]) -> Vec<String> {
        cols.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_trade_parses_and_its_errors_name_columns_never_values() {
        let header = h(&[
            "external_card_no",
            "trade_no",
            "trade_type",
            "trade_time",
            "act_pay_amount",
            "point",
            "use_benefit_type",
            "gain_benefit_type",
        ]);
        check_trade_header(&header).unwrap();
        let t = parse_trade(
            &header,
            &[
                "P-1",
                "T-1",
                "trade",
                "2026-12-07 10:00:00",
                "12.50",
                "130",
                "",
                "",
            ],
            2,
        )
        .unwrap();
        assert_eq!(t.trade_type, "TRADE");
        assert_eq!(t.card, CardRef::External("P-1".into()));
        let errs = parse_trade(
            &header,
            &[
                "P-2",
                "",
                "SALE",
                "07/12/2026",
                "12.505",
                "x",
                "",
                "DISCOUNT",
            ],
            3,
        )
        .unwrap_err();
        let all: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let all = all.join("\n");
        for col in [
            "trade_no",
            "trade_type",
            "trade_time",
            "act_pay_amount",
            "point",
            "gain_benefit_type",
        ] {
            assert!(all.contains(&format!("column `{col}`")), "{all}");
        }
        for v in ["SALE", "07/12/2026", "12.505"] {
            assert!(!all.contains(v), "a value leaked: {all}");
        }
        // A row of the wrong shape says so and nothing else.
        let short = parse_trade(&header, &["P-3", "T-3"], 4).unwrap_err();
        assert_eq!(short.len(), 1);
        assert!(short[0].column.is_none());
    }

    #[test]
    fn headers_name_the_card_once() {
        assert!(check_trade_header(&h(&["trade_no", "trade_type", "trade_time"])).is_err());
        let both = h(&[
            "external_card_no",
            "biz_card_no",
            "trade_no",
            "trade_type",
            "trade_time",
        ]);
        assert!(check_trade_header(&both).is_err());
        let e = check_reminder_header(&h(&["biz_card_no", "expired_points", "expired_time"]))
            .unwrap_err();
        assert!(e.contains("did you mean `expired_point`"), "{e}");
    }

    #[test]
    fn keys_are_per_card_and_trade_and_digests_see_every_field() {
        let header = h(&[
            "biz_card_no",
            "trade_no",
            "trade_type",
            "trade_time",
            "point",
        ]);
        let t = |no: &str, point: &str| {
            parse_trade(
                &header,
                &["B1", no, "TRADE", "2026-12-07 10:00:00", point],
                2,
            )
            .unwrap()
        };
        assert_eq!(t("T1", "1").key("B1"), t("T1", "2").key("B1"));
        assert_ne!(t("T1", "1").key("B1"), t("T2", "1").key("B1"));
        assert_ne!(t("T1", "1").key("B1"), t("T1", "1").key("B2"));
        let salt = [7u8; 32];
        assert_ne!(t("T1", "1").digest(&salt), t("T1", "2").digest(&salt));
        assert_eq!(t("T1", "1").digest(&salt), t("T1", "1").digest(&salt));
        let rh = h(&["biz_card_no", "expired_point", "expired_time"]);
        let r = parse_reminder(&rh, &["B1", "100", "2026-12-31 23:59:59"], 2).unwrap();
        assert_eq!(r.notify_no("B1").len(), 32);
        assert!(r.key("B1").starts_with("n:"));
    }
}
