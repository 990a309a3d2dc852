//! The preview font: subsets of Noto Sans CJK SC (OFL, `assets/fonts`) built
//! into the binary, so previews draw Chinese on a machine with no fonts.

use std::sync::OnceLock;

use ab_glyph::{Font as _, FontRef, GlyphId, PxScale, ScaleFont as _};

static REGULAR: &[u8] = include_bytes!("../../assets/fonts/NotoSansSC-Regular.otf");
static BOLD: &[u8] = include_bytes!("../../assets/fonts/NotoSansSC-Bold.otf");

/// One weight of the preview font.
pub struct Face(FontRef<'static>);

pub fn face(bold: bool) -> &'static Face {
    static R: OnceLock<Face> = OnceLock::new();
    static B: OnceLock<Face> = OnceLock::new();
    let (cell, bytes) = if bold { (&B, BOLD) } else { (&R, REGULAR) };
    cell.get_or_init(|| {
        Face(FontRef::try_from_slice(bytes).expect("bug: the built-in preview font parses"))
    })
}

impl Face {
    pub fn font(&self) -> &FontRef<'static> {
        &self.0
    }

    /// Whether the font draws `c` (otherwise its missing-glyph box).
    pub fn has(&self, c: char) -> bool {
        c.is_control() || self.0.glyph_id(c) != GlyphId(0)
    }

    /// The width of `text` at `px` pixels (advances and kerning). `px` is
    /// ab_glyph's scale: the font's height from ascent to descent.
    pub fn width(&self, text: &str, px: f32) -> f32 {
        let f = self.0.as_scaled(PxScale::from(px));
        let mut w = 0.0;
        let mut prev: Option<GlyphId> = None;
        for c in text.chars() {
            let g = f.glyph_id(c);
            if let Some(p) = prev {
                w += f.kern(p, g);
            }
            w += f.h_advance(g);
            prev = Some(g);
        }
        w
    }

    /// Ascent at `px` (from the top of the line to the baseline).
    pub fn ascent(&self, px: f32) -> f32 {
        self.0.as_scaled(PxScale::from(px)).ascent()
    }

    /// `text` as the wallet shows a line that does not fit: cut at a
    /// character and ended with `…`. Returns the text and whether it was cut.
    pub fn fit(&self, text: &str, px: f32, max: f32) -> (String, bool) {
        if self.width(text, px) <= max {
            return (text.to_string(), false);
        }
        let ellipsis = self.width("…", px);
        let mut out = String::new();
        let mut w = 0.0;
        for c in text.chars() {
            let cw = self.width(c.encode_utf8(&mut [0; 4]), px);
            if w + cw + ellipsis > max {
                break;
            }
            w += cw;
            out.push(c);
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('…');
        (out, true)
    }
}

/// The characters of `text` the preview font cannot draw.
pub fn missing(text: &str) -> Vec<char> {
    let mut out: Vec<char> = text.chars().filter(|c| !face(false).has(*c)).collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_is_drawn_and_long_text_is_cut_with_an_ellipsis() {
        assert!(missing("会员卡 Brew Club ¥12.50 · 积分").is_empty());
        assert_eq!(missing("😀"), vec!['😀']);
        let f = face(true);
        // Sizes are ab_glyph's: `px` is the font's height (ascent to
        // descent, 1.448 em for Noto Sans CJK), so a full-width CJK glyph
        // (one em) is px / 1.448 wide.
        let w = f.width("会员", 40.0);
        assert!(
            (2.0 * 40.0 / 1.448 - 1.0..=2.0 * 40.0 / 1.448 + 1.0).contains(&w),
            "{w}"
        );
        let (short, cut) = f.fit("Brew Club", 40.0, 1000.0);
        assert_eq!((short.as_str(), cut), ("Brew Club", false));
        let (long, cut) = f.fit("A very long card name that cannot fit", 40.0, 300.0);
        assert!(cut && long.ends_with('…'), "{long}");
        assert!(f.width(&long, 40.0) <= 300.0);
    }
}
