//! QR codes of activation URLs as PNG files, for in-store posters. The PNG is
//! written by hand (1-bit grayscale, stored deflate) to keep the `image` crate
//! out of the build.

/// Encode a 1-bit grayscale image; `dark(x, y)` is true for black pixels.
pub fn png(width: u32, height: u32, dark: impl Fn(u32, u32) -> bool) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let row = width.div_ceil(8) as usize;
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for y in 0..height {
        raw.push(0);
        for bx in 0..row {
            let mut byte = 0u8;
            for bit in 0..8 {
                let x = bx as u32 * 8 + bit;
                // 1 = white in grayscale; dark pixels are 0.
                if x >= width || !dark(x, y) {
                    byte |= 0x80 >> bit;
                }
            }
            raw.push(byte);
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push((i + 1 == blocks.len()) as u8);
        z.extend((block.len() as u16).to_le_bytes());
        z.extend((!(block.len() as u16)).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([1, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
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
    Ok(png(size, size, |x, y| {
        let (mx, my) = (x / scale, y / scale);
        if mx < quiet || my < quiet || mx >= n + quiet || my >= n + quiet {
            return false;
        }
        colors[((my - quiet) * n + (mx - quiet)) as usize] == qrcode::Color::Dark
    }))
}
