//! Colours as the manifests write them (`rgb(55,112,179)`, `#3770b3`) and
//! the WCAG 2 contrast between two of them.

/// An opaque sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    pub const WHITE: Rgb = Rgb(255, 255, 255);

    /// `rgb(r,g,b)` (what the gateway's `bg_color` takes) or `#rrggbb`.
    pub fn parse(s: &str) -> Option<Rgb> {
        let s = s.trim();
        if let Some(hex) = s.strip_prefix('#') {
            if hex.len() != 6 || !hex.is_ascii() {
                return None;
            }
            let c = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
            return Some(Rgb(c(0)?, c(2)?, c(4)?));
        }
        let inner = s.strip_prefix("rgb(")?.strip_suffix(')')?;
        let mut parts = inner.split(',').map(|p| p.trim().parse::<u8>().ok());
        let rgb = Rgb(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(rgb)
    }

    /// Relative luminance (WCAG 2.x).
    pub fn luminance(self) -> f64 {
        let lin = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(self.0) + 0.7152 * lin(self.1) + 0.0722 * lin(self.2)
    }

    /// The contrast ratio of two colours, 1 to 21.
    pub fn contrast(self, other: Rgb) -> f64 {
        let (a, b) = (self.luminance(), other.luminance());
        let (hi, lo) = if a > b { (a, b) } else { (b, a) };
        (hi + 0.05) / (lo + 0.05)
    }
}

impl std::fmt::Display for Rgb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rgb({},{},{})", self.0, self.1, self.2)
    }
}

/// WCAG AA for normal text.
pub const AA_CONTRAST: f64 = 4.5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_parse_and_contrast_as_wcag_says() {
        assert_eq!(Rgb::parse("rgb(55,112,179)"), Some(Rgb(55, 112, 179)));
        assert_eq!(Rgb::parse(" rgb( 1, 2 ,3 ) "), Some(Rgb(1, 2, 3)));
        assert_eq!(Rgb::parse("#3770B3"), Some(Rgb(55, 112, 179)));
        assert_eq!(Rgb::parse("rgb(256,0,0)"), None);
        assert_eq!(Rgb::parse("rgb(1,2)"), None);
        assert_eq!(Rgb::parse("rgb(1,2,3,4)"), None);
        assert_eq!(Rgb::parse("blue"), None);
        // Black on white is 21:1; white on white 1:1; WCAG's own example
        // #777777 on white is 4.48:1 (just under AA).
        assert!((Rgb(0, 0, 0).contrast(Rgb::WHITE) - 21.0).abs() < 1e-9);
        assert!((Rgb::WHITE.contrast(Rgb::WHITE) - 1.0).abs() < 1e-9);
        let grey = Rgb(0x77, 0x77, 0x77).contrast(Rgb::WHITE);
        assert!((grey - 4.48).abs() < 0.01, "{grey}");
    }
}
