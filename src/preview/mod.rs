//! Card previews: a template drawn as the Alipay wallet shows a membership
//! card (seed 003, "Fields on the membership card"), from the domain model
//! alone. [`layout`] decides where everything goes (pure, tested
//! structurally); `draw` rasterises it (tiny-skia, ab_glyph, the built-in
//! CJK font in [`font`]); [`render`] returns the picture with the warnings a
//! reviewer needs (text the wallet would cut, text unreadable against the
//! background under it, characters the font cannot draw).

pub mod color;
mod draw;
pub mod font;
pub mod layout;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use tiny_skia::Pixmap;

use self::color::AA_CONTRAST;
use self::layout::{Layout, Rect, Role};
use crate::model::template::TemplateAttrs;
use crate::model::{Address, Attrs, Desired, Kind};

/// The largest image side decoded (the gateway takes 1020 x 643 backgrounds
/// and 500 x 500 logos; anything far larger is refused, not decoded).
const MAX_SIDE: u32 = 4096;

/// Decode a PNG, JPEG or GIF (first frame) into pixels.
pub fn decode(bytes: &[u8]) -> Result<Pixmap, String> {
    let size = imagesize::blob_size(bytes).map_err(|_| "unreadable image header".to_string())?;
    if size.width as u64 > u64::from(MAX_SIDE) || size.height as u64 > u64::from(MAX_SIDE) {
        return Err(format!(
            "{} x {} pixels is larger than previews decode ({MAX_SIDE} per side)",
            size.width, size.height
        ));
    }
    match imagesize::image_type(bytes) {
        Ok(imagesize::ImageType::Png) => Pixmap::decode_png(bytes).map_err(|e| e.to_string()),
        Ok(imagesize::ImageType::Jpeg) => {
            use zune_jpeg::zune_core::bytestream::ZCursor;
            use zune_jpeg::zune_core::colorspace::ColorSpace;
            use zune_jpeg::zune_core::options::DecoderOptions;
            let options = DecoderOptions::default()
                .jpeg_set_out_colorspace(ColorSpace::RGBA)
                .set_max_width(MAX_SIDE as usize)
                .set_max_height(MAX_SIDE as usize);
            let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
            let rgba = d.decode().map_err(|e| format!("{e:?}"))?;
            let info = d.info().ok_or("no JPEG header")?;
            rgba_pixmap(rgba, u32::from(info.width), u32::from(info.height))
        }
        Ok(imagesize::ImageType::Gif) => {
            let mut options = gif::DecodeOptions::new();
            options.set_color_output(gif::ColorOutput::RGBA);
            let mut d = options
                .read_info(std::io::Cursor::new(bytes))
                .map_err(|e| e.to_string())?;
            let frame = d
                .read_next_frame()
                .map_err(|e| e.to_string())?
                .ok_or("a GIF without frames")?;
            rgba_pixmap(
                frame.buffer.to_vec(),
                u32::from(frame.width),
                u32::from(frame.height),
            )
        }
        _ => Err("previews draw PNG, JPEG and GIF images (not BMP)".to_string()),
    }
}

fn rgba_pixmap(mut rgba: Vec<u8>, w: u32, h: u32) -> Result<Pixmap, String> {
    // tiny-skia keeps premultiplied alpha.
    for p in rgba.chunks_exact_mut(4) {
        let a = u16::from(p[3]);
        for c in &mut p[..3] {
            *c = ((u16::from(*c) * a + 127) / 255) as u8;
        }
    }
    let size = tiny_skia::IntSize::from_wh(w, h).ok_or("an empty image")?;
    Pixmap::from_vec(rgba, size).ok_or_else(|| "image data of the wrong size".to_string())
}

/// Where a template's images come from: their pixels by image address.
pub trait ImageSource: Sync {
    fn pixels(&self, image: &str) -> Option<Arc<Pixmap>>;
}

/// The images of the manifests, read from their files once each.
pub struct DesiredImages<'a> {
    desired: &'a Desired,
    cache: Mutex<HashMap<PathBuf, Option<Arc<Pixmap>>>>,
    /// Content hash -> a file holding it (built on first use).
    by_sha: std::sync::OnceLock<HashMap<&'a str, &'a Path>>,
}

impl<'a> DesiredImages<'a> {
    pub fn new(desired: &'a Desired) -> Self {
        DesiredImages {
            desired,
            cache: Mutex::default(),
            by_sha: std::sync::OnceLock::new(),
        }
    }

    /// Pixels of the file at `path` (cached; `None` if it cannot be drawn).
    pub fn file(&self, path: &Path) -> Option<Arc<Pixmap>> {
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
        {
            return hit.clone();
        }
        let decoded = crate::util::bounded::read(path, 5 * 1024 * 1024)
            .ok()
            .and_then(|b| decode(&b).ok())
            .map(Arc::new);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_path_buf(), decoded.clone());
        decoded
    }

    /// The source file of the image with this content hash, if the manifests
    /// have one (how a plan's "before" finds an image the state recorded).
    pub fn by_sha(&self, sha: &str) -> Option<Arc<Pixmap>> {
        let index = self.by_sha.get_or_init(|| {
            let mut index = HashMap::new();
            for r in self.desired.resources.values() {
                if let Attrs::Image(i) = &r.attrs
                    && i.id.is_none()
                {
                    index.entry(i.sha256.as_str()).or_insert(i.source.as_path());
                }
            }
            index
        });
        self.file(index.get(sha)?)
    }
}

impl ImageSource for DesiredImages<'_> {
    fn pixels(&self, image: &str) -> Option<Arc<Pixmap>> {
        let address: Address = image.parse().ok()?;
        match &self.desired.resources.get(&address)?.attrs {
            Attrs::Image(i) if i.id.is_none() => self.file(&i.source),
            _ => None,
        }
    }
}

/// Something a reviewer should know about a preview.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub role: Role,
    pub message: String,
}

pub struct Rendered {
    pub layout: Layout,
    pub pixmap: Pixmap,
    pub warnings: Vec<Warning>,
}

impl Rendered {
    pub fn png(&self) -> Vec<u8> {
        encode(&self.pixmap)
    }
}

/// A PNG of `p`, compressed fast (fdeflate): the default deflate took half
/// of a preview's time for files a fifth smaller.
pub fn encode(p: &Pixmap) -> Vec<u8> {
    let rgba = p.clone().take_demultiplied();
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, p.width(), p.height());
        e.set_color(png::ColorType::Rgba);
        e.set_depth(png::BitDepth::Eight);
        e.set_compression(png::Compression::Fast);
        let mut w = e
            .write_header()
            .expect("bug: an in-memory PNG header always writes");
        w.write_image_data(&rgba)
            .expect("bug: an in-memory PNG always encodes");
    }
    out
}

/// The tier a template is, if it is one: the level code its address ends in.
pub fn tier_of<'a>(address: &'a Address, t: &TemplateAttrs) -> Option<&'a str> {
    let (_, level) = address.name.rsplit_once('.')?;
    t.levels.iter().any(|l| l.level == level).then_some(level)
}

/// Draw one template.
pub fn render(t: &TemplateAttrs, level: Option<&str>, images: &dyn ImageSource) -> Rendered {
    let layout = layout::layout(t, level);
    let background = images.pixels(&t.style.background);
    let logo = images.pixels(&t.style.logo);
    let level_icon = level
        .and_then(|l| t.levels.iter().find(|x| x.level == l))
        .and_then(|l| l.level_icon.as_deref())
        .and_then(|a| images.pixels(a));
    let icons: Vec<Option<Arc<Pixmap>>> = layout
        .icons
        .iter()
        .map(|(_, a)| a.as_deref().and_then(|a| images.pixels(a)))
        .collect();
    let pixmap = draw::draw(
        &layout,
        &draw::CardImages {
            background: background.as_deref(),
            logo: logo.as_deref(),
            level_icon: level_icon.as_deref(),
            icons: icons.iter().map(|i| i.as_deref()).collect(),
        },
    );
    let mut warnings = warnings(&layout, background.as_deref());
    for (what, address, pixels) in [
        ("background", &t.style.background, &background),
        ("logo", &t.style.logo, &logo),
    ] {
        if pixels.is_none() {
            warnings.push(Warning {
                role: Role::Image,
                message: format!(
                    "the {what} `{address}` has no pixels to draw here (an adopted image id, a BMP, or a file no longer readable): a grey placeholder stands in for it"
                ),
            });
        }
    }
    Rendered {
        layout,
        pixmap,
        warnings,
    }
}

/// Text cut to fit, text unreadable on the card, characters not drawn.
pub fn warnings(l: &Layout, background: Option<&Pixmap>) -> Vec<Warning> {
    let mut out = Vec::new();
    for t in &l.texts {
        let watched = !matches!(
            t.role,
            Role::ColumnValue | Role::BenefitText | Role::FrontText | Role::CardNumber
        );
        if t.cut && watched {
            out.push(Warning {
                role: t.role,
                message: format!(
                    "{} `{}` does not fit: the wallet shows `{}`",
                    t.role.label(),
                    t.full,
                    t.text
                ),
            });
        }
        let missing = font::missing(&t.full);
        if !missing.is_empty() {
            out.push(Warning {
                role: t.role,
                message: format!(
                    "{} has characters the preview font cannot draw ({}): they are drawn as boxes",
                    t.role.label(),
                    missing.iter().collect::<String>()
                ),
            });
        }
        if let (true, Some(bg)) = (t.on_card, background) {
            let mut under = draw::mean_under(bg, &l.card, &t.rect);
            if t.role == Role::Level {
                // The level name sits on its badge, over the background.
                let a = f32::from(layout::BADGE_ALPHA) / 255.0;
                let b = layout::badge(t.color);
                let mix =
                    |u: u8, b: u8| (f32::from(u) * (1.0 - a) + f32::from(b) * a).round() as u8;
                under = color::Rgb(mix(under.0, b.0), mix(under.1, b.1), mix(under.2, b.2));
            }
            let ratio = t.color.contrast(under);
            if ratio < AA_CONTRAST {
                out.push(Warning {
                    role: t.role,
                    message: format!(
                        "{} is hard to read: text colour {} on a background averaging {} under it has contrast {ratio:.1}:1, below WCAG AA's 4.5:1",
                        t.role.label(),
                        t.color,
                        under
                    ),
                });
            }
        }
    }
    out
}

/// The regions that differ between two layouts of the same template (what a
/// plan outlines on its side-by-side picture).
pub fn changed_regions(before: &Layout, after: &Layout, images_changed: (bool, bool)) -> Vec<Rect> {
    let mut out = Vec::new();
    if images_changed.0 {
        out.push(after.card);
    }
    if images_changed.1 {
        out.push(after.logo);
    }
    for t in &after.texts {
        let same = before.texts.iter().any(|b| {
            b.role == t.role && b.text == t.text && b.color == t.color && b.rect == t.rect
        });
        if !same {
            out.push(t.rect);
        }
    }
    // Something that was there and is gone: outline where it was.
    for b in &before.texts {
        if !after.texts.iter().any(|t| t.role == b.role) {
            out.push(b.rect);
        }
    }
    out
}

/// Two previews side by side (before left, after right), the changed regions
/// outlined on the right.
pub fn side_by_side(before: &Pixmap, after: &Pixmap, changed: &[Rect]) -> Pixmap {
    let gap = 40;
    let w = before.width() + gap + after.width();
    let h = before.height().max(after.height());
    let mut canvas = Pixmap::new(w, h).expect("bug: positive sizes");
    canvas.fill(tiny_skia::Color::from_rgba8(
        layout::PAGE.0,
        layout::PAGE.1,
        layout::PAGE.2,
        255,
    ));
    let paint = tiny_skia::PixmapPaint::default();
    canvas.draw_pixmap(
        0,
        0,
        before.as_ref(),
        &paint,
        tiny_skia::Transform::identity(),
        None,
    );
    let dx = before.width() + gap;
    canvas.draw_pixmap(
        dx as i32,
        0,
        after.as_ref(),
        &paint,
        tiny_skia::Transform::identity(),
        None,
    );
    for r in changed {
        draw::outline(&mut canvas, r, dx as f32);
    }
    canvas
}

/// The templates of `desired` in `scope` (all when `None`), with their tier.
pub fn templates<'a>(
    desired: &'a Desired,
    scope: Option<&std::collections::BTreeSet<Address>>,
) -> Vec<(&'a Address, &'a TemplateAttrs)> {
    desired
        .resources
        .iter()
        .filter(|(a, _)| a.kind == Kind::Template && scope.is_none_or(|s| s.contains(*a)))
        .filter_map(|(a, r)| match &r.attrs {
            Attrs::Template(t) => Some((a, t.as_ref())),
            _ => None,
        })
        .collect()
}

/// Where a template's preview is written under the output directory:
/// `<merchant>/<template name>.png`.
pub fn file_name(address: &Address) -> PathBuf {
    PathBuf::from(address.merchant.as_str()).join(format!("{}.png", address.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_masked_in_groups_of_four() {
        assert_eq!(layout::card_number(Some("BREW"), 12), "BREW **** **** ****");
        assert_eq!(layout::card_number(None, 6), "**** **");
    }

    #[test]
    fn unreadable_images_are_refused_not_decoded() {
        assert!(decode(b"not an image").is_err());
        // A BMP header: recognised, but previews do not draw BMP.
        let mut bmp = b"BM".to_vec();
        bmp.extend([0u8; 60]);
        assert!(decode(&bmp).is_err());
    }
}
