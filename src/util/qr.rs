//! QR codes of activation URLs as PNG files, for in-store posters (the `png`
//! crate writes them: 1-bit grayscale, no `image` crate in the build).

/// Encode a 1-bit grayscale image, stored without compression (its size
/// follows from its pixels: the tests and benchmarks that make images of a
/// given byte size rely on it); `dark(x, y)` is true for black pixels.
pub fn png(width: u32, height: u32, dark: impl Fn(u32, u32) -> bool) -> Vec<u8> {
    encode(width, height, dark, png::Compression::NoCompression)
}

fn encode(
    width: u32,
    height: u32,
    dark: impl Fn(u32, u32) -> bool,
    compression: png::Compression,
) -> Vec<u8> {
    let row = width.div_ceil(8) as usize;
    let mut data = Vec::with_capacity(row * height as usize);
    for y in 0..height {
        for bx in 0..row {
            let mut byte = 0u8;
            for bit in 0..8 {
                let x = bx as u32 * 8 + bit;
                // 1 = white in grayscale; dark pixels are 0.
                if x >= width || !dark(x, y) {
                    byte |= 0x80 >> bit;
                }
            }
            data.push(byte);
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    encoder.set_compression(compression);
    let mut writer = encoder
        .write_header()
        .expect("bug: a PNG header always writes to memory");
    writer
        .write_image_data(&data)
        .expect("bug: the image data matches its header");
    writer
        .finish()
        .expect("bug: a PNG always finishes in memory");
    out
}

/// A QR code PNG for `text`: 8 pixels a module, 4-module quiet zone.
pub fn qr_png(text: &str) -> Result<Vec<u8>, String> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| format!("cannot encode a QR code: {e}"))?;
    let n = code.width() as u32;
    let colors = code.to_colors();
    let (scale, quiet) = (8u32, 4u32);
    let size = (n + 2 * quiet) * scale;
    Ok(encode(
        size,
        size,
        |x, y| {
            let (mx, my) = (x / scale, y / scale);
            if mx < quiet || my < quiet || mx >= n + quiet || my >= n + quiet {
                return false;
            }
            colors[((my - quiet) * n + (mx - quiet)) as usize] == qrcode::Color::Dark
        },
        png::Compression::Balanced,
    ))
}
