//! Text for messages: values cut to a length, so a hostile value never floods a message.

/// At most `max` characters of `s`, with an ellipsis when cut: a quoted
/// value never floods a message.
pub fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `msg` with every quoted value (between backticks or double quotes) cut
/// to `max` characters: a 5-million-character value never becomes a
/// 5-million-character message.
pub fn clip_quoted(msg: &str, max: usize) -> String {
    if msg.len() <= max {
        return msg.to_string();
    }
    let mut out = String::with_capacity(msg.len().min(4 * max));
    let mut rest = msg;
    while let Some(i) = rest.find(['`', '"']) {
        let quote = rest[i..].chars().next().unwrap_or('`');
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
        match rest.find(quote) {
            Some(j) => {
                out.push_str(&clip(&rest[..j], max));
                out.push(quote);
                rest = &rest[j + 1..];
            }
            None => {
                out.push_str(&clip(rest, max));
                return out;
            }
        }
    }
    out.push_str(&clip(rest, max));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_clipped() {
        let long = "x".repeat(5000);
        let m = clip_quoted(&format!("`{long}` is not an http(s) URL"), 200);
        assert!(m.len() < 260, "{}", m.len());
        assert!(m.ends_with("…` is not an http(s) URL"), "{m}");
        let m = clip_quoted(&format!("\"{long}\" is not of type \"integer\""), 200);
        assert!(m.ends_with("…\" is not of type \"integer\""), "{m}");
        assert_eq!(clip_quoted("short `a` b", 200), "short `a` b");
    }
}
