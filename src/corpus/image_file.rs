//! Single image files (PNG, PGM/PNM, JPEG) as greyscale pixels at a model's input size.

use crate::error::{Error, Result};
use std::path::Path;

/// The largest image side read (pixels): larger images are refused before they are decoded.
pub const MAX_SIDE: u32 = 12_000;

/// Read `path` as 8-bit greyscale at its own size. A file that is not a readable image, or one
/// without pixels, is an error naming it.
pub fn read_grey(path: &Path) -> Result<image::GrayImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_grey(&bytes, path)
}

/// Decode image bytes (PNG, PGM/PNM, JPEG) as 8-bit greyscale; `name` is what errors call
/// them. Images wider or taller than [`MAX_SIDE`] are refused without being decoded.
pub fn decode_grey(bytes: &[u8], name: &Path) -> Result<image::GrayImage> {
    let g = decode(bytes, name)?.to_luma8();
    if g.width() == 0 || g.height() == 0 {
        return Err(Error::format(name, "image has no pixels"));
    }
    Ok(g)
}

/// Decode image bytes (PNG, PGM/PNM, JPEG) as 8-bit RGB, as face_recognition's
/// `load_image_file` reads them (greyscale spread over the three channels, alpha dropped,
/// 16-bit samples taken down to 8); `name` is what errors call them. Sizes as [`decode_grey`].
pub fn decode_rgb(bytes: &[u8], name: &Path) -> Result<image::RgbImage> {
    let g = decode(bytes, name)?.to_rgb8();
    if g.width() == 0 || g.height() == 0 {
        return Err(Error::format(name, "image has no pixels"));
    }
    Ok(g)
}

fn decode(bytes: &[u8], name: &Path) -> Result<image::DynamicImage> {
    let bad =
        |e: String| Error::format(name, format!("not a readable PNG, PGM or JPEG image: {e}"));
    let mut r = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(1 << 30);
    r.limits(limits);
    let img = r.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => Error::format(
            name,
            format!("image is larger than {MAX_SIDE}x{MAX_SIDE} pixels (refused)"),
        ),
        e => bad(e.to_string()),
    })?;
    Ok(img)
}

/// Resize a greyscale image to `width x height` keeping the aspect ratio and padding with
/// `pad` (see [`load_grey`]).
pub fn fit_grey(g: image::GrayImage, width: usize, height: usize, pad: u8) -> Vec<u8> {
    let (w, h) = (g.width() as usize, g.height() as usize);
    if (w, h) == (width, height) {
        return g.into_raw();
    }
    let scale = (width as f64 / w as f64).min(height as f64 / h as f64);
    let nw = ((w as f64 * scale).round() as u32).clamp(1, width as u32);
    let nh = ((h as f64 * scale).round() as u32).clamp(1, height as u32);
    let r = image::imageops::resize(&g, nw, nh, image::imageops::FilterType::Triangle);
    let mut out = vec![pad; width * height];
    let (ox, oy) = ((width - nw as usize) / 2, (height - nh as usize) / 2);
    for y in 0..nh as usize {
        for x in 0..nw as usize {
            out[(oy + y) * width + ox + x] = r.get_pixel(x as u32, y as u32)[0];
        }
    }
    out
}

/// Ink on paper made comparable across scanners: the paper is told from the ink by Otsu's
/// threshold over the grey levels; every paper pixel becomes pure white (255), the ink's grey
/// levels are stretched so its darkest pixel is 0, and the image is cropped to the ink's
/// bounding box plus a margin of 2 pixels. An image with no two grey levels is returned as it
/// is. Dark ink on light paper is expected (signature scans).
pub fn ink_normalise(g: image::GrayImage) -> image::GrayImage {
    let (w, h) = (g.width(), g.height());
    let px = g.as_raw();
    let mut hist = [0u64; 256];
    for &p in px {
        hist[p as usize] += 1;
    }
    let t = otsu(&hist);
    let Some(t) = t else { return g };
    let lo = px.iter().copied().min().unwrap_or(0);
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0u32, 0u32);
    for y in 0..h {
        for x in 0..w {
            if px[(y * w + x) as usize] <= t {
                x0 = x0.min(x);
                y0 = y0.min(y);
                x1 = x1.max(x);
                y1 = y1.max(y);
            }
        }
    }
    if x0 > x1 {
        return g;
    }
    let (x0, y0) = (x0.saturating_sub(2), y0.saturating_sub(2));
    let (x1, y1) = ((x1 + 2).min(w - 1), (y1 + 2).min(h - 1));
    let span = (t as f32 - lo as f32).max(1.0);
    image::GrayImage::from_fn(x1 - x0 + 1, y1 - y0 + 1, |x, y| {
        let p = px[((y + y0) * w + x + x0) as usize];
        image::Luma([if p > t {
            255
        } else {
            ((p - lo) as f32 / span * 254.0).round() as u8
        }])
    })
}

/// Otsu's threshold of a grey-level histogram: the level `t` maximising the between-class
/// variance of `<= t` and `> t`. `None` when fewer than two levels occur.
pub fn otsu(hist: &[u64; 256]) -> Option<u8> {
    let total: u64 = hist.iter().sum();
    let sum: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut w0, mut s0, mut best) = (0u64, 0f64, None::<(f64, u8)>);
    for (t, &c) in hist.iter().enumerate().take(255) {
        w0 += c;
        s0 += t as f64 * c as f64;
        let w1 = total - w0;
        if w0 == 0 || w1 == 0 {
            continue;
        }
        let (m0, m1) = (s0 / w0 as f64, (sum - s0) / w1 as f64);
        let between = w0 as f64 * w1 as f64 * (m0 - m1) * (m0 - m1);
        if best.is_none_or(|(b, _)| between > b) {
            best = Some((between, t as u8));
        }
    }
    best.map(|(_, t)| t)
}

/// Load `path` as 8-bit greyscale, resized to `width x height` keeping the aspect ratio and
/// padding the rest with `pad` (the background value). Images already at that size are used
/// as they are. A file that is not a readable image is an error naming it.
pub fn load_grey(path: &Path, width: usize, height: usize, pad: u8) -> Result<Vec<u8>> {
    Ok(fit_grey(read_grey(path)?, width, height, pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 6x4 page with two ink pixels (grey 10 and 60) on paper of 200 and 220: Otsu splits
    /// {10, 60} from {200, 220}; the crop is the ink's box (columns 2-3, row 1) plus 2 pixels of
    /// margin, clipped to the page: columns 0-5, rows 0-3; the ink stretches to 0 and
    /// (60-10)/(60-10)*254 = 254, the paper becomes 255.
    #[test]
    fn ink_normalise_by_hand() {
        let mut g = image::GrayImage::from_pixel(6, 4, image::Luma([200]));
        g.put_pixel(0, 0, image::Luma([220]));
        g.put_pixel(2, 1, image::Luma([10]));
        g.put_pixel(3, 1, image::Luma([60]));
        let mut hist = [0u64; 256];
        for p in g.as_raw() {
            hist[*p as usize] += 1;
        }
        let t = otsu(&hist).unwrap();
        assert!((60..200).contains(&t), "{t}");
        let r = ink_normalise(g);
        assert_eq!((r.width(), r.height()), (6, 4));
        assert_eq!(r.get_pixel(2, 1)[0], 0);
        assert_eq!(r.get_pixel(3, 1)[0], 254);
        assert_eq!(r.get_pixel(0, 0)[0], 255);
        // A wider page crops: 20x4, ink at column 10 only -> columns 8-12.
        let mut g = image::GrayImage::from_pixel(20, 4, image::Luma([250]));
        g.put_pixel(10, 1, image::Luma([0]));
        let r = ink_normalise(g);
        assert_eq!((r.width(), r.height()), (5, 4));
        assert_eq!(r.get_pixel(2, 1)[0], 0);
    }

    #[test]
    fn reads_pgm_resizes_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        // A 4x2 binary PGM: left half 0, right half 255.
        let mut pgm = b"P5\n4 2\n255\n".to_vec();
        pgm.extend_from_slice(&[0, 0, 255, 255, 0, 0, 255, 255]);
        let p = dir.path().join("a.pgm");
        std::fs::write(&p, &pgm).unwrap();
        assert_eq!(
            load_grey(&p, 4, 2, 0).unwrap(),
            vec![0, 0, 255, 255, 0, 0, 255, 255]
        );
        // To 4x4: scale 1, two padding rows above and below? (4-2)/2 = 1 row on top.
        let r = load_grey(&p, 4, 4, 9).unwrap();
        assert_eq!(&r[..4], &[9, 9, 9, 9]);
        assert_eq!(&r[12..], &[9, 9, 9, 9]);
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let e = load_grey(&bad, 28, 28, 0).unwrap_err().to_string();
        assert!(e.contains("bad.png"), "{e}");
        // A PGM that claims more pixels than it has.
        let t = dir.path().join("trunc.pgm");
        std::fs::write(&t, b"P5\n28 28\n255\n\x00\x01").unwrap();
        assert!(load_grey(&t, 28, 28, 0)
            .unwrap_err()
            .to_string()
            .contains("trunc.pgm"));
    }
}
