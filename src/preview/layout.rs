//! Where everything goes on a card preview: pure geometry from a template's
//! attributes, so tests can check the layout without looking at pixels.
//!
//! The card face is drawn at the background image's real size, 1020 x 643
//! (the size Alipay requires, seed 003), with the wallet's rounded corners:
//! the round logo top left, the card name (`style.name`) beside it and the
//! brand name under it, the tier's level name in a badge top right, the
//! slogan and the per-card front text lines in the middle, the card number
//! (prefix and the masked suffix) bottom left, all in the template's text
//! colour (`bg_color` at the gateway; white where the manifest sets none, as
//! the wallet draws it). Below the card, as the card page shows them: the
//! columns (title, and the value or a placeholder for the member's own), the
//! card's action buttons and the benefits.

use super::color::Rgb;
use super::font;
use crate::model::template::{ColumnLayout, TemplateAttrs};

pub const CARD_W: f32 = 1020.0;
pub const CARD_H: f32 = 643.0;
/// The wallet's corner radius, scaled to the 1020-pixel card.
pub const RADIUS: f32 = 36.0;
const MARGIN: f32 = 40.0;
const PAD: f32 = 48.0;
const LOGO: f32 = 120.0;
/// The tallest picture drawn (1100 x 8192 RGBA: 36 MB).
pub const MAX_HEIGHT: u32 = 8192;
/// The card page's background, text and accent colours.
pub const PAGE: Rgb = Rgb(242, 243, 245);
pub const INK: Rgb = Rgb(51, 51, 51);
pub const MUTED: Rgb = Rgb(153, 153, 153);
pub const ACCENT: Rgb = Rgb(22, 119, 255);
/// The level badge: over the background, black at this opacity under light
/// text, white under dark text.
pub const BADGE_ALPHA: u8 = 96;

/// The level badge's colour for text of colour `text`.
pub fn badge(text: Rgb) -> Rgb {
    if text.luminance() > 0.4 {
        Rgb(0, 0, 0)
    } else {
        Rgb::WHITE
    }
}

/// A rectangle in canvas pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Rect {
    pub fn right(&self) -> f32 {
        self.x + self.w
    }
    pub fn bottom(&self) -> f32 {
        self.y + self.h
    }
    pub fn contains(&self, other: &Rect) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.right() <= self.right() + 0.5
            && other.bottom() <= self.bottom() + 0.5
    }
}

/// What a piece of text is, for tests and warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Name,
    Brand,
    Level,
    Slogan,
    FrontText,
    CardNumber,
    ColumnTitle,
    ColumnValue,
    Action,
    BenefitTitle,
    BenefitText,
    /// Not a text: an image the preview could not draw.
    Image,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Name => "the card name (style.name)",
            Role::Brand => "the brand name (style.brand_name)",
            Role::Level => "the level name (level_name)",
            Role::Slogan => "the slogan (style.slogan)",
            Role::FrontText => "a front text line",
            Role::CardNumber => "the card number",
            Role::ColumnTitle => "a column title",
            Role::ColumnValue => "a column value",
            Role::Action => "an action's text",
            Role::BenefitTitle => "a benefit title",
            Role::BenefitText => "a benefit description",
            Role::Image => "an image",
        }
    }
}

/// A line of text, already cut to fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    pub role: Role,
    /// As drawn (ending in `…` when cut).
    pub text: String,
    /// As written.
    pub full: String,
    pub cut: bool,
    /// The line's box: `x`, the top of the line, the drawn width, the line height.
    pub rect: Rect,
    pub px: f32,
    pub bold: bool,
    pub color: Rgb,
    /// On the card face (over the background image), not on the page.
    pub on_card: bool,
}

/// A filled or outlined rounded rectangle.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub rect: Rect,
    pub radius: f32,
    pub fill: Option<(Rgb, u8)>,
    pub stroke: Option<Rgb>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub card: Rect,
    pub logo: Rect,
    pub level_icon: Option<Rect>,
    /// Grid column icons (`column_layout: grid`).
    pub icons: Vec<(Rect, Option<String>)>,
    /// Drawn before the texts.
    pub panels: Vec<Panel>,
    pub texts: Vec<Text>,
}

impl Layout {
    pub fn text(&self, role: Role) -> Option<&Text> {
        self.texts.iter().find(|t| t.role == role)
    }
}

/// The card number as members see it: the prefix, then the suffix masked in
/// groups of four (`*`: the font's bullet is full-width).
pub fn card_number(prefix: Option<&str>, suffix_length: u8) -> String {
    let mut out = prefix.unwrap_or("").to_string();
    for i in 0..usize::from(suffix_length) {
        if i % 4 == 0 && !out.is_empty() {
            out.push(' ');
        }
        out.push('*');
    }
    out
}

struct Builder {
    texts: Vec<Text>,
    text_color: Rgb,
}

impl Builder {
    #[allow(clippy::too_many_arguments)]
    fn text(
        &mut self,
        role: Role,
        s: &str,
        x: f32,
        y: f32,
        px: f32,
        bold: bool,
        max: f32,
        color: Rgb,
        on_card: bool,
    ) -> Rect {
        let face = font::face(bold);
        let (drawn, cut) = face.fit(s, px, max.max(px));
        let rect = Rect {
            x,
            y,
            w: face.width(&drawn, px),
            h: px * 1.4,
        };
        self.texts.push(Text {
            role,
            text: drawn,
            full: s.to_string(),
            cut,
            rect,
            px,
            bold,
            color,
            on_card,
        });
        rect
    }
}

/// The layout of one template's preview. `level` is the tier this template
/// is, if it is one (its level code).
pub fn layout(t: &TemplateAttrs, level: Option<&str>) -> Layout {
    let text_color = t
        .style
        .text_color
        .as_deref()
        .and_then(Rgb::parse)
        .unwrap_or(Rgb::WHITE);
    let mut b = Builder {
        texts: Vec::new(),
        text_color,
    };
    let card = Rect {
        x: MARGIN,
        y: MARGIN,
        w: CARD_W,
        h: CARD_H,
    };
    let logo = Rect {
        x: card.x + PAD,
        y: card.y + PAD,
        w: LOGO,
        h: LOGO,
    };
    let mut panels = Vec::new();
    let tier = level.and_then(|l| t.levels.iter().find(|x| x.level == l));
    // The level badge, top right: its width decides the room for the name.
    let mut level_icon = None;
    let mut name_right = card.right() - PAD;
    if let Some(tier) = tier {
        let label = tier
            .level_name
            .clone()
            .unwrap_or_else(|| tier.level.clone());
        let px = 28.0;
        let icon = if tier.level_icon.is_some() {
            36.0 + 10.0
        } else {
            0.0
        };
        let max = 300.0;
        let (drawn, _) = font::face(true).fit(&label, px, max);
        let w = font::face(true).width(&drawn, px) + 2.0 * 22.0 + icon;
        let pill = Rect {
            x: card.right() - PAD - w,
            y: card.y + PAD + 8.0,
            w,
            h: 52.0,
        };
        panels.push(Panel {
            rect: pill,
            radius: 26.0,
            fill: Some((badge(b.text_color), BADGE_ALPHA)),
            stroke: None,
        });
        if tier.level_icon.is_some() {
            level_icon = Some(Rect {
                x: pill.x + 18.0,
                y: pill.y + 8.0,
                w: 36.0,
                h: 36.0,
            });
        }
        let tc = b.text_color;
        b.text(
            Role::Level,
            &label,
            pill.x + 22.0 + icon,
            pill.y + (52.0 - px * 1.4) / 2.0,
            px,
            true,
            max,
            tc,
            true,
        );
        name_right = pill.x - 20.0;
    }
    let tc = b.text_color;
    let name_x = logo.right() + 28.0;
    b.text(
        Role::Name,
        &t.style.name,
        name_x,
        card.y + PAD + 2.0,
        46.0,
        true,
        name_right - name_x,
        tc,
        true,
    );
    if let Some(brand) = &t.style.brand_name {
        b.text(
            Role::Brand,
            brand,
            name_x,
            card.y + PAD + 70.0,
            30.0,
            false,
            card.right() - PAD - name_x,
            tc,
            true,
        );
    }
    // The middle: the slogan, then the member's own front text lines.
    let mut y = logo.bottom() + 56.0;
    if let Some(slogan) = &t.style.slogan {
        let r = b.text(
            Role::Slogan,
            slogan,
            card.x + PAD,
            y,
            32.0,
            false,
            CARD_W - 2.0 * PAD,
            tc,
            true,
        );
        y = r.bottom() + 12.0;
    }
    if t.style.show_front_text == Some(true) {
        for line in [
            "Front text line 1 (per card)",
            "Front text line 2 (per card)",
        ] {
            let r = b.text(
                Role::FrontText,
                line,
                card.x + PAD,
                y,
                28.0,
                false,
                CARD_W - 2.0 * PAD,
                tc,
                true,
            );
            y = r.bottom() + 4.0;
        }
    }
    b.text(
        Role::CardNumber,
        &card_number(t.card_number.prefix.as_deref(), t.card_number.suffix_length),
        card.x + PAD,
        card.bottom() - PAD - 50.0,
        36.0,
        true,
        CARD_W - 2.0 * PAD,
        tc,
        true,
    );

    // The card page below the card.
    let mut y = card.bottom() + MARGIN;
    let inner_x = card.x + 40.0;
    let inner_w = CARD_W - 80.0;
    let mut icons = Vec::new();
    if !t.columns.is_empty() {
        let grid = t.style.column_layout == Some(ColumnLayout::Grid);
        if grid {
            let per_row = 4usize;
            let cell_w = CARD_W / per_row as f32;
            let rows = t.columns.len().div_ceil(per_row);
            let h = rows as f32 * 170.0 + 20.0;
            panels.push(section(card.x, y, h));
            for (i, c) in t.columns.iter().enumerate() {
                let cx = card.x + (i % per_row) as f32 * cell_w;
                let cy = y + 20.0 + (i / per_row) as f32 * 170.0;
                icons.push((
                    Rect {
                        x: cx + (cell_w - 64.0) / 2.0,
                        y: cy + 16.0,
                        w: 64.0,
                        h: 64.0,
                    },
                    c.icon.clone(),
                ));
                let face = font::face(false);
                let (drawn, _) = face.fit(&c.title, 28.0, cell_w - 24.0);
                let w = face.width(&drawn, 28.0);
                b.text(
                    Role::ColumnTitle,
                    &c.title,
                    cx + (cell_w - w) / 2.0,
                    cy + 96.0,
                    28.0,
                    false,
                    cell_w - 24.0,
                    INK,
                    false,
                );
            }
            y += h + 24.0;
        } else {
            let row = 92.0;
            let h = row * t.columns.len() as f32;
            panels.push(section(card.x, y, h));
            for (i, c) in t.columns.iter().enumerate() {
                let ry = y + i as f32 * row;
                if i > 0 {
                    panels.push(Panel {
                        rect: Rect {
                            x: inner_x,
                            y: ry,
                            w: inner_w,
                            h: 2.0,
                        },
                        radius: 0.0,
                        fill: Some((Rgb(238, 238, 238), 255)),
                        stroke: None,
                    });
                }
                let ty = ry + (row - 32.0 * 1.4) / 2.0;
                b.text(
                    Role::ColumnTitle,
                    &c.title,
                    inner_x,
                    ty,
                    32.0,
                    false,
                    inner_w * 0.55,
                    INK,
                    false,
                );
                let value = column_value(c, tier.and_then(|t| t.level_name.as_deref()));
                let face = font::face(false);
                let (drawn, _) = face.fit(&value, 30.0, inner_w * 0.4);
                let w = face.width(&drawn, 30.0);
                b.text(
                    Role::ColumnValue,
                    &value,
                    inner_x + inner_w - w,
                    ry + (row - 30.0 * 1.4) / 2.0,
                    30.0,
                    false,
                    inner_w * 0.4,
                    MUTED,
                    false,
                );
            }
            y += h + 24.0;
        }
    }
    if !t.actions.is_empty() {
        let mut x = card.x;
        let mut row_y = y;
        for a in &t.actions {
            let face = font::face(false);
            let (drawn, _) = face.fit(&a.text, 30.0, CARD_W - 80.0);
            let w = face.width(&drawn, 30.0) + 80.0;
            if x + w > card.right() && x > card.x {
                x = card.x;
                row_y += 100.0;
            }
            let r = Rect {
                x,
                y: row_y,
                w,
                h: 80.0,
            };
            panels.push(Panel {
                rect: r,
                radius: 40.0,
                fill: Some((Rgb::WHITE, 255)),
                stroke: Some(ACCENT),
            });
            b.text(
                Role::Action,
                &a.text,
                x + 40.0,
                row_y + (80.0 - 30.0 * 1.4) / 2.0,
                30.0,
                false,
                CARD_W - 80.0,
                ACCENT,
                false,
            );
            x += w + 20.0;
        }
        y = row_y + 80.0 + 24.0;
    }
    if !t.benefits.is_empty() {
        let lines: usize = t
            .benefits
            .iter()
            .map(|b| 1 + b.descriptions.as_ref().map_or(0, Vec::len))
            .sum();
        let h = 40.0 + lines as f32 * 46.0 + t.benefits.len() as f32 * 12.0;
        panels.push(section(card.x, y, h));
        let mut by = y + 20.0;
        for benefit in &t.benefits {
            let r = b.text(
                Role::BenefitTitle,
                &benefit.title,
                inner_x,
                by,
                32.0,
                true,
                inner_w,
                INK,
                false,
            );
            by = r.bottom();
            for d in benefit.descriptions.iter().flatten() {
                let r = b.text(
                    Role::BenefitText,
                    &format!("· {d}"),
                    inner_x,
                    by,
                    28.0,
                    false,
                    inner_w,
                    MUTED,
                    false,
                );
                by = r.bottom() + 6.0;
            }
            by += 12.0;
        }
        y += h + 24.0;
    }
    Layout {
        width: (CARD_W + 2.0 * MARGIN) as u32,
        // A page longer than this (thousands of columns or benefits) is cut:
        // a picture's memory stays bounded whatever the manifest holds.
        height: ((y + MARGIN - 24.0).max(card.bottom() + MARGIN) as u32).min(MAX_HEIGHT),
        card,
        logo,
        level_icon,
        icons,
        panels,
        texts: b.texts,
    }
}

fn section(x: f32, y: f32, h: f32) -> Panel {
    Panel {
        rect: Rect { x, y, w: CARD_W, h },
        radius: 24.0,
        fill: Some((Rgb::WHITE, 255)),
        stroke: None,
    }
}

/// What a column's value shows before a member has a card: the template's
/// own value, the tier's level name for `LEVEL`, else a placeholder for the
/// member's figure, or `›` where the row opens a page.
fn column_value(c: &crate::model::template::Column, level_name: Option<&str>) -> String {
    use crate::model::template::ColumnAction;
    if let Some(v) = &c.value {
        return v.clone();
    }
    match c.code.as_str() {
        "BALANCE" => "¥ --".to_string(),
        "POINT" => "--".to_string(),
        "LEVEL" => level_name.unwrap_or("--").to_string(),
        _ if c.action != ColumnAction::Static => "›".to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_endless_benefits_stays_a_bounded_picture() {
        let json = serde_json::json!({
            "card_type": "OUT_MEMBER_CARD",
            "card_number": { "suffix_length": 8 },
            "write_off": "qrcode",
            "style": { "name": "x", "logo": "merchant.m/image.l", "background": "merchant.m/image.b" },
            "benefits": (0..10_000).map(|i| serde_json::json!({ "title": format!("benefit {i}") })).collect::<Vec<_>>(),
            "image_hashes": {}
        });
        let t: TemplateAttrs = serde_json::from_value(json).unwrap();
        let l = layout(&t, None);
        assert_eq!(l.height, MAX_HEIGHT);
        assert_eq!(l.width, 1100);
    }
}
