//! Alipay's clock: every time cardform sends to Alipay (the `timestamp`
//! parameter, a card's open date, a trade's journal time, a message's
//! occur_time) is China time (UTC+8) to the second, whatever the host's
//! time zone: on a UTC host, local time would be 8 hours early.

use chrono::{DateTime, FixedOffset, Utc};

const FORMAT: &str = "%Y-%m-%d %H:%M:%S";

fn china() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("bug: UTC+8 is a valid offset")
}

/// Now, as Alipay writes times.
pub fn now() -> String {
    at(Utc::now())
}

/// An instant, as Alipay writes times.
pub fn at(t: DateTime<Utc>) -> String {
    t.with_timezone(&china()).format(FORMAT).to_string()
}

/// An RFC 3339 instant (as the state and the ledger keep them), as Alipay
/// writes times; now if it does not parse.
pub fn from_rfc3339(text: &str) -> String {
    DateTime::parse_from_rfc3339(text)
        .map(|t| at(t.to_utc()))
        .unwrap_or_else(|_| now())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_china_time_whatever_the_zone() {
        assert_eq!(
            super::from_rfc3339("2026-12-07T16:30:00Z"),
            "2026-12-08 00:30:00"
        );
        assert_eq!(
            super::from_rfc3339("2026-12-08T00:30:00+08:00"),
            "2026-12-08 00:30:00"
        );
    }
}
