//! Rasterising a [`Layout`]: tiny-skia for shapes and images, ab_glyph for
//! the glyphs.

use ab_glyph::{Font as _, PxScale, ScaleFont as _, point};
use tiny_skia::{
    Color, FillRule, FilterQuality, Mask, Paint, PathBuilder, Pixmap, PixmapPaint, Rect as SkRect,
    Stroke, Transform,
};

use super::color::Rgb;
use super::font;
use super::layout::{Layout, PAGE, Panel, RADIUS, Rect, Text};

/// The images a card uses, decoded (`None`: no pixels to show).
pub struct CardImages<'a> {
    pub background: Option<&'a Pixmap>,
    pub logo: Option<&'a Pixmap>,
    pub level_icon: Option<&'a Pixmap>,
    pub icons: Vec<Option<&'a Pixmap>>,
}

fn color(c: Rgb, alpha: u8) -> Color {
    Color::from_rgba8(c.0, c.1, c.2, alpha)
}

fn rounded(r: &Rect, radius: f32) -> Option<tiny_skia::Path> {
    let radius = radius.min(r.w / 2.0).min(r.h / 2.0);
    if radius <= 0.0 {
        return Some(PathBuilder::from_rect(SkRect::from_xywh(
            r.x, r.y, r.w, r.h,
        )?));
    }
    // Quarter circles by cubic Béziers (k = 0.5523).
    let k = 0.5523 * radius;
    let (x0, y0, x1, y1) = (r.x, r.y, r.right(), r.bottom());
    let mut pb = PathBuilder::new();
    pb.move_to(x0 + radius, y0);
    pb.line_to(x1 - radius, y0);
    pb.cubic_to(x1 - radius + k, y0, x1, y0 + radius - k, x1, y0 + radius);
    pb.line_to(x1, y1 - radius);
    pb.cubic_to(x1, y1 - radius + k, x1 - radius + k, y1, x1 - radius, y1);
    pb.line_to(x0 + radius, y1);
    pb.cubic_to(x0 + radius - k, y1, x0, y1 - radius + k, x0, y1 - radius);
    pb.line_to(x0, y0 + radius);
    pb.cubic_to(x0, y0 + radius - k, x0 + radius - k, y0, x0 + radius, y0);
    pb.close();
    pb.finish()
}

/// Draw `img` scaled into `r`, clipped to a rounded rectangle of `radius`.
fn image_into(canvas: &mut Pixmap, img: &Pixmap, r: &Rect, radius: f32) {
    let Some(path) = rounded(r, radius) else {
        return;
    };
    let Some(mut mask) = Mask::new(canvas.width(), canvas.height()) else {
        return;
    };
    mask.fill_path(&path, FillRule::Winding, true, Transform::identity());
    let sx = r.w / img.width() as f32;
    let sy = r.h / img.height() as f32;
    // At the image's own size (a 1020 x 643 background) pixels are copied;
    // scaled (logos, icons), filtered.
    let exact = (sx - 1.0).abs() < 1e-6 && (sy - 1.0).abs() < 1e-6;
    let paint = PixmapPaint {
        quality: if exact {
            FilterQuality::Nearest
        } else {
            FilterQuality::Bicubic
        },
        ..PixmapPaint::default()
    };
    canvas.draw_pixmap(
        0,
        0,
        img.as_ref(),
        &paint,
        Transform::from_row(sx, 0.0, 0.0, sy, r.x, r.y),
        Some(&mask),
    );
}

fn fill(canvas: &mut Pixmap, r: &Rect, radius: f32, c: Rgb, alpha: u8) {
    if let Some(path) = rounded(r, radius) {
        let mut paint = Paint::default();
        paint.set_color(color(c, alpha));
        paint.anti_alias = true;
        canvas.fill_path(
            &path,
            &paint,
            FillRule::Winding,
            Transform::identity(),
            None,
        );
    }
}

fn stroke(canvas: &mut Pixmap, r: &Rect, radius: f32, c: Rgb, width: f32) {
    if let Some(path) = rounded(r, radius) {
        let mut paint = Paint::default();
        paint.set_color(color(c, 255));
        paint.anti_alias = true;
        let s = Stroke {
            width,
            ..Stroke::default()
        };
        canvas.stroke_path(&path, &paint, &s, Transform::identity(), None);
    }
}

/// Where an image is missing: a flat grey area with its name.
fn placeholder(canvas: &mut Pixmap, r: &Rect, radius: f32, label: &str) {
    fill(canvas, r, radius, Rgb(140, 146, 153), 255);
    let px = (r.h / 6.0).clamp(14.0, 28.0);
    let face = font::face(false);
    let (t, _) = face.fit(label, px, r.w - 8.0);
    let w = face.width(&t, px);
    glyphs(
        canvas,
        &t,
        r.x + (r.w - w) / 2.0,
        r.y + (r.h - px * 1.4) / 2.0,
        px,
        false,
        Rgb::WHITE,
    );
}

/// Draw a line of text with its top at `y`.
fn glyphs(canvas: &mut Pixmap, text: &str, x: f32, y: f32, px: f32, bold: bool, c: Rgb) {
    let face = font::face(bold);
    let font = face.font();
    let scaled = font.as_scaled(PxScale::from(px));
    let baseline = y + (px * 1.4 - (scaled.ascent() - scaled.descent())) / 2.0 + scaled.ascent();
    let (w, h) = (canvas.width() as i32, canvas.height() as i32);
    let data = canvas.data_mut();
    let mut caret = x;
    let mut prev = None;
    for ch in text.chars() {
        let id = scaled.glyph_id(ch);
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(px, point(caret, baseline));
        caret += scaled.h_advance(id);
        prev = Some(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let b = outline.px_bounds();
        outline.draw(|gx, gy, cov| {
            let px_x = b.min.x as i32 + gx as i32;
            let px_y = b.min.y as i32 + gy as i32;
            if px_x < 0 || px_y < 0 || px_x >= w || px_y >= h || cov <= 0.0 {
                return;
            }
            let i = ((px_y * w + px_x) * 4) as usize;
            let a = cov.min(1.0);
            // Premultiplied "source over" with an opaque colour.
            for (k, v) in [c.0, c.1, c.2, 255].into_iter().enumerate() {
                let dst = f32::from(data[i + k]);
                data[i + k] = (f32::from(v) * a + dst * (1.0 - a)).round() as u8;
            }
        });
    }
}

fn panel(canvas: &mut Pixmap, p: &Panel) {
    if let Some((c, a)) = p.fill {
        fill(canvas, &p.rect, p.radius, c, a);
    }
    if let Some(c) = p.stroke {
        stroke(canvas, &p.rect, p.radius, c, 3.0);
    }
}

fn text(canvas: &mut Pixmap, t: &Text) {
    glyphs(canvas, &t.text, t.rect.x, t.rect.y, t.px, t.bold, t.color);
}

/// Draw the whole preview.
pub fn draw(l: &Layout, images: &CardImages) -> Pixmap {
    let mut canvas = Pixmap::new(l.width, l.height).expect("bug: preview sizes are positive");
    canvas.fill(color(PAGE, 255));
    match images.background {
        Some(bg) => image_into(&mut canvas, bg, &l.card, RADIUS),
        None => placeholder(&mut canvas, &l.card, RADIUS, "background image"),
    }
    let ring = Rect {
        x: l.logo.x - 4.0,
        y: l.logo.y - 4.0,
        w: l.logo.w + 8.0,
        h: l.logo.h + 8.0,
    };
    fill(&mut canvas, &ring, ring.w / 2.0, Rgb::WHITE, 255);
    match images.logo {
        Some(logo) => image_into(&mut canvas, logo, &l.logo, l.logo.w / 2.0),
        None => placeholder(&mut canvas, &l.logo, l.logo.w / 2.0, "logo"),
    }
    for p in &l.panels {
        panel(&mut canvas, p);
    }
    if let Some(r) = &l.level_icon {
        match images.level_icon {
            Some(icon) => image_into(&mut canvas, icon, r, r.w / 2.0),
            None => placeholder(&mut canvas, r, r.w / 2.0, ""),
        }
    }
    for (i, (r, _)) in l.icons.iter().enumerate() {
        match images.icons.get(i).copied().flatten() {
            Some(icon) => image_into(&mut canvas, icon, r, 12.0),
            None => fill(&mut canvas, r, 12.0, Rgb(220, 224, 230), 255),
        }
    }
    for t in &l.texts {
        text(&mut canvas, t);
    }
    canvas
}

/// The mean colour of `r` in `img` drawn over `card` (what a text box on
/// the card face is read against).
pub fn mean_under(img: &Pixmap, card: &Rect, r: &Rect) -> Rgb {
    let sx = img.width() as f32 / card.w;
    let sy = img.height() as f32 / card.h;
    let x0 = (((r.x - card.x) * sx).floor().max(0.0) as u32).min(img.width() - 1);
    let y0 = (((r.y - card.y) * sy).floor().max(0.0) as u32).min(img.height() - 1);
    let x1 = (((r.right() - card.x) * sx).ceil() as u32).clamp(x0 + 1, img.width());
    let y1 = (((r.bottom() - card.y) * sy).ceil() as u32).clamp(y0 + 1, img.height());
    let (mut sum, mut n) = ([0u64; 3], 0u64);
    for y in y0..y1 {
        for x in x0..x1 {
            if let Some(p) = img.pixel(x, y) {
                let p = p.demultiply();
                sum[0] += u64::from(p.red());
                sum[1] += u64::from(p.green());
                sum[2] += u64::from(p.blue());
                n += 1;
            }
        }
    }
    let n = n.max(1);
    Rgb((sum[0] / n) as u8, (sum[1] / n) as u8, (sum[2] / n) as u8)
}

/// Outline `r` (a changed region) in a side-by-side picture.
pub fn outline(canvas: &mut Pixmap, r: &Rect, dx: f32) {
    let r = Rect {
        x: r.x + dx - 6.0,
        y: r.y - 6.0,
        w: r.w + 12.0,
        h: r.h + 12.0,
    };
    stroke(canvas, &r, 8.0, Rgb(255, 64, 64), 5.0);
}
