//! Plots without a plotting crate: ROC curves as hand-written SVG, and a PNG grid of image pairs
//! captioned with their predicted distance (digits drawn with a built-in 5x7 bitmap font).
//! Files are written atomically (temp file, fsync, rename).

use crate::error::{Error, Result};
use crate::fsutil::atomic_write;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};
use std::fmt::Write as _;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// ROC curves as SVG
// ---------------------------------------------------------------------------------------------

/// Plot area geometry of the ROC SVG, in px.
const SVG_LEFT: f64 = 70.0;
const SVG_TOP: f64 = 40.0;
const SVG_PLOT: f64 = 420.0;
const SVG_WIDTH: f64 = SVG_LEFT + SVG_PLOT + 30.0;
const SVG_HEIGHT: f64 = SVG_TOP + SVG_PLOT + 60.0;

/// Line colours, one per curve in turn (matplotlib's tab10).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Escape text for an SVG text node or attribute.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Pixel coordinates of an (fpr, tpr) point.
fn svg_xy(fpr: f64, tpr: f64) -> (f64, f64) {
    (SVG_LEFT + fpr * SVG_PLOT, SVG_TOP + (1.0 - tpr) * SVG_PLOT)
}

/// The points worth drawing: drop repeats and the middle of straight horizontal or vertical
/// runs (a ROC staircase keeps only its corners).
fn corners(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len());
    for &p in points {
        if out.last() == Some(&p) {
            continue;
        }
        if out.len() >= 2 {
            let (a, b) = (out[out.len() - 2], out[out.len() - 1]);
            if (a.0 == b.0 && b.0 == p.0) || (a.1 == b.1 && b.1 == p.1) {
                out.pop();
            }
        }
        out.push(p);
    }
    out
}

/// One ROC curve to plot: `(label, points, auc)` with points `(fpr, tpr)` in [0, 1].
pub type RocSeries<'a> = (&'a str, &'a [(f64, f64)], f64);

/// Render ROC curves as a standalone SVG document. Each curve is `(label, points, auc)` with
/// points `(fpr, tpr)` in [0, 1] (as from [`crate::eval::metrics::roc_curve`]); the legend shows
/// each label with its AUC.
pub fn roc_svg(curves: &[RocSeries]) -> Result<String> {
    if curves.is_empty() {
        return Err(Error::Empty("roc_svg: no curves".into()));
    }
    for (i, (label, points, auc)) in curves.iter().enumerate() {
        if points.is_empty() {
            return Err(Error::Empty(format!(
                "roc_svg: curve {i} ({label}) has no points"
            )));
        }
        if let Some((j, p)) = points
            .iter()
            .enumerate()
            .find(|(_, p)| !(0.0..=1.0).contains(&p.0) || !(0.0..=1.0).contains(&p.1))
        {
            return Err(Error::InvalidArgument(format!(
                "roc_svg: curve {i} ({label}) point {j} is {p:?}; fpr and tpr must be in [0, 1]"
            )));
        }
        if !auc.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "roc_svg: curve {i} ({label}) has AUC {auc}"
            )));
        }
    }

    let mut s = String::new();
    // Writing to a String cannot fail; the results are ignored below with `let _`.
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" viewBox="0 0 {SVG_WIDTH} {SVG_HEIGHT}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(
        s,
        r##"  <rect width="{SVG_WIDTH}" height="{SVG_HEIGHT}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        s,
        r#"  <text x="{}" y="{}" text-anchor="middle" font-size="15">ROC</text>"#,
        SVG_LEFT + SVG_PLOT / 2.0,
        SVG_TOP - 14.0
    );

    // Grid and ticks every 0.2.
    s.push_str("  <!-- grid and ticks -->\n");
    s.push_str(r##"  <g stroke="#dddddd" stroke-width="1">"##);
    s.push('\n');
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        let (x, _) = svg_xy(v, 0.0);
        let (_, y) = svg_xy(0.0, v);
        let (x0, y0) = svg_xy(0.0, 0.0);
        let (x1, y1) = svg_xy(1.0, 1.0);
        let _ = writeln!(
            s,
            r#"    <line x1="{x:.2}" y1="{y1:.2}" x2="{x:.2}" y2="{y0:.2}"/>"#
        );
        let _ = writeln!(
            s,
            r#"    <line x1="{x0:.2}" y1="{y:.2}" x2="{x1:.2}" y2="{y:.2}"/>"#
        );
    }
    s.push_str("  </g>\n");
    s.push_str(r##"  <g fill="#333333">"##);
    s.push('\n');
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        let (x, y0) = svg_xy(v, 0.0);
        let (x0, y) = svg_xy(0.0, v);
        let _ = writeln!(
            s,
            r#"    <text x="{x:.2}" y="{:.2}" text-anchor="middle">{v:.1}</text>"#,
            y0 + 18.0
        );
        let _ = writeln!(
            s,
            r#"    <text x="{:.2}" y="{:.2}" text-anchor="end">{v:.1}</text>"#,
            x0 - 8.0,
            y + 4.0
        );
    }
    s.push_str("  </g>\n");

    // Axes, labels and chance diagonal.
    s.push_str("  <!-- axes -->\n");
    let (x0, y0) = svg_xy(0.0, 0.0);
    let (x1, y1) = svg_xy(1.0, 1.0);
    let _ = writeln!(
        s,
        r##"  <rect x="{x0:.2}" y="{y1:.2}" width="{SVG_PLOT}" height="{SVG_PLOT}" fill="none" stroke="#333333" stroke-width="1.2"/>"##
    );
    let _ = writeln!(
        s,
        r#"  <text x="{:.2}" y="{:.2}" text-anchor="middle">False positive rate (FAR)</text>"#,
        (x0 + x1) / 2.0,
        y0 + 42.0
    );
    let (lx, ly) = (x0 - 48.0, (y0 + y1) / 2.0);
    let _ = writeln!(
        s,
        r#"  <text x="{lx:.2}" y="{ly:.2}" text-anchor="middle" transform="rotate(-90 {lx:.2} {ly:.2})">True positive rate (recall)</text>"#
    );
    let _ = writeln!(
        s,
        r##"  <line x1="{x0:.2}" y1="{y0:.2}" x2="{x1:.2}" y2="{y1:.2}" stroke="#999999" stroke-width="1" stroke-dasharray="5,4"/>"##
    );

    // Curves.
    for (i, (label, points, _)) in curves.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let _ = writeln!(
            s,
            "  <!-- curve {i}: {} -->",
            xml_escape(label).replace("--", "- -")
        );
        let mut pts = String::new();
        for (j, &(fpr, tpr)) in corners(points).iter().enumerate() {
            let (x, y) = svg_xy(fpr, tpr);
            let sep = if j == 0 { "" } else { " " };
            let _ = write!(pts, "{sep}{x:.2},{y:.2}");
        }
        let _ = writeln!(
            s,
            r#"  <polyline fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round" points="{pts}"/>"#
        );
    }

    // Legend, bottom right inside the plot.
    s.push_str("  <!-- legend -->\n");
    let row = 20.0;
    let longest = curves
        .iter()
        .map(|(l, _, _)| l.chars().count() + 12)
        .max()
        .unwrap_or(0) as f64;
    let w = 40.0 + longest * 7.2;
    let h = 10.0 + row * curves.len() as f64;
    let (bx, by) = (x1 - w - 10.0, y0 - h - 10.0);
    let _ = writeln!(
        s,
        r##"  <rect x="{bx:.2}" y="{by:.2}" width="{w:.2}" height="{h:.2}" fill="#ffffff" fill-opacity="0.9" stroke="#bbbbbb"/>"##
    );
    for (i, (label, _, auc)) in curves.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let y = by + 5.0 + row * (i as f64 + 0.5);
        let _ = writeln!(
            s,
            r#"  <line x1="{:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="{colour}" stroke-width="3"/>"#,
            bx + 8.0,
            bx + 30.0
        );
        let _ = writeln!(
            s,
            r#"  <text x="{:.2}" y="{:.2}">{} (AUC {auc:.3})</text>"#,
            bx + 36.0,
            y + 4.5,
            xml_escape(label)
        );
    }
    s.push_str("</svg>\n");
    Ok(s)
}

/// Write ROC curves to `path` as SVG (see [`roc_svg`]), atomically.
pub fn write_roc_svg(path: &Path, curves: &[RocSeries]) -> Result<()> {
    atomic_write(path, roc_svg(curves)?.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Image-pair grid as PNG
// ---------------------------------------------------------------------------------------------

/// One image pair of a grid: two images of the same size, the model's distance between them,
/// and whether they truly are the same (green frame) or different (red frame).
#[derive(Debug, Clone, Copy)]
pub struct PairTile<'a> {
    /// Left image: `width * height` grey bytes or `width * height * 3` RGB bytes, row-major.
    pub left: &'a [u8],
    /// Right image, same layout and size as `left`.
    pub right: &'a [u8],
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// The predicted distance, printed under the pair as `d=0.123`.
    pub value: f32,
    /// Ground truth: the pair shows the same thing.
    pub is_same: bool,
}

/// Glyph cell of the bitmap font and its scale in the caption.
const GLYPH_W: u32 = 5;
const GLYPH_H: u32 = 7;
const FONT_SCALE: u32 = 2;
/// Horizontal advance of one character, in output pixels.
const ADVANCE: u32 = (GLYPH_W + 1) * FONT_SCALE;
/// Space around cells, between the two images of a pair, and the frame's thickness.
const PAD: u32 = 10;
const GAP: u32 = 4;
const BORDER: u32 = 3;
/// Images are scaled up by nearest neighbour until their longer side reaches this (at most 4x).
const MIN_SIDE: u32 = 64;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([32, 32, 32]);
const GREEN: Rgb<u8> = Rgb([44, 160, 44]);
const RED: Rgb<u8> = Rgb([214, 39, 40]);

/// A 5x7 glyph, one byte per row, bit 4 the leftmost pixel; `None` for characters the font
/// lacks. Covers what captions print: digits, `.`, `-`, `=`, `+` and the letters of `d`,
/// `same`, `diff`, `nan`, `inf`.
fn glyph(c: char) -> Option<[u8; 7]> {
    Some(match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        ' ' => [0x00; 7],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'i' => [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        's' => [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        _ => return None,
    })
}

/// Width in output pixels of `text` in the caption font.
fn text_width(text: &str) -> u32 {
    (text.chars().count() as u32 * ADVANCE).saturating_sub(FONT_SCALE)
}

/// Draw `text` with its top-left corner at (x, y); a character the font lacks is drawn as a
/// hollow box. Pixels outside the image are clipped.
fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str, colour: Rgb<u8>) {
    const BOX: [u8; 7] = [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F];
    for (i, c) in text.chars().enumerate() {
        let rows = glyph(c).unwrap_or(BOX);
        let gx = x + i as u32 * ADVANCE;
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits & (0x10 >> col) == 0 {
                    continue;
                }
                for dy in 0..FONT_SCALE {
                    for dx in 0..FONT_SCALE {
                        let px = gx + col * FONT_SCALE + dx;
                        let py = y + r as u32 * FONT_SCALE + dy;
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, colour);
                        }
                    }
                }
            }
        }
    }
}

/// Fill a rectangle.
fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, colour: Rgb<u8>) {
    for py in y..(y + h).min(img.height()) {
        for px in x..(x + w).min(img.width()) {
            img.put_pixel(px, py, colour);
        }
    }
}

/// Copy a grey or RGB image into `img` at (x, y), each pixel blown up to `scale` x `scale`.
fn blit(img: &mut RgbImage, x: u32, y: u32, src: &[u8], w: u32, h: u32, scale: u32) {
    let rgb = src.len() == (w * h * 3) as usize;
    for sy in 0..h {
        for sx in 0..w {
            let i = (sy * w + sx) as usize;
            let p = if rgb {
                Rgb([src[3 * i], src[3 * i + 1], src[3 * i + 2]])
            } else {
                Rgb([src[i]; 3])
            };
            fill(img, x + sx * scale, y + sy * scale, scale, scale, p);
        }
    }
}

/// The caption under a pair: the distance and the ground truth, e.g. `d=0.123 same`.
fn caption(t: &PairTile) -> (String, &'static str) {
    let v = if t.value.is_finite() {
        format!("d={:.3}", t.value)
    } else {
        format!("d={}", t.value).to_lowercase()
    };
    (v, if t.is_same { "same" } else { "diff" })
}

/// Render a grid of image pairs, `cols` pairs per row, each pair framed in green (same) or red
/// (different) with its distance printed underneath. Small images are scaled up (nearest
/// neighbour, at most 4x) so their longer side reaches 64 px; pairs of different sizes are
/// centred in equal cells.
pub fn pair_grid_image(pairs: &[PairTile], cols: usize) -> Result<RgbImage> {
    if pairs.is_empty() {
        return Err(Error::Empty("pair_grid_image: no pairs".into()));
    }
    if cols == 0 {
        return Err(Error::InvalidArgument(
            "pair_grid_image: cols must be >= 1".into(),
        ));
    }
    for (i, t) in pairs.iter().enumerate() {
        if t.width == 0 || t.height == 0 || t.width > 4096 || t.height > 4096 {
            return Err(Error::InvalidArgument(format!(
                "pair_grid_image: pairs[{i}] is {}x{}; each side must be in 1..=4096",
                t.width, t.height
            )));
        }
        let grey = (t.width * t.height) as usize;
        for (side, buf) in [("left", t.left), ("right", t.right)] {
            if buf.len() != grey && buf.len() != 3 * grey {
                return Err(Error::dim(
                    grey,
                    buf.len(),
                    format!("pairs[{i}].{side} (width*height grey or 3*width*height RGB bytes)"),
                ));
            }
        }
    }

    let max_side = pairs
        .iter()
        .map(|t| t.width.max(t.height))
        .max()
        .unwrap_or(1);
    let scale = MIN_SIDE.div_ceil(max_side).clamp(1, 4);
    let pair_size = |t: &PairTile| {
        (
            2 * t.width * scale + GAP + 2 * BORDER,
            t.height * scale + 2 * BORDER,
        )
    };
    let caption_w = |t: &PairTile| {
        let (v, truth) = caption(t);
        text_width(&format!("{v} {truth}"))
    };
    let cell_w = pairs
        .iter()
        .map(|t| pair_size(t).0.max(caption_w(t)))
        .max()
        .unwrap_or(1);
    let pair_h = pairs.iter().map(|t| pair_size(t).1).max().unwrap_or(1);
    let caption_h = GLYPH_H * FONT_SCALE + 8;
    let cell_h = pair_h + caption_h;

    let cols = cols.min(pairs.len()) as u32;
    let rows = (pairs.len() as u32).div_ceil(cols);
    let width = PAD + cols * (cell_w + PAD);
    let height = PAD + rows * (cell_h + PAD);
    let mut img = RgbImage::from_pixel(width, height, WHITE);

    for (i, t) in pairs.iter().enumerate() {
        let (r, c) = (i as u32 / cols, i as u32 % cols);
        let (cx, cy) = (PAD + c * (cell_w + PAD), PAD + r * (cell_h + PAD));
        let (pw, ph) = pair_size(t);
        let (px, py) = (cx + (cell_w - pw) / 2, cy + (pair_h - ph) / 2);
        let frame = if t.is_same { GREEN } else { RED };
        fill(&mut img, px, py, pw, ph, frame);
        let sw = t.width * scale;
        blit(
            &mut img,
            px + BORDER,
            py + BORDER,
            t.left,
            t.width,
            t.height,
            scale,
        );
        blit(
            &mut img,
            px + BORDER + sw + GAP,
            py + BORDER,
            t.right,
            t.width,
            t.height,
            scale,
        );

        let (v, truth) = caption(t);
        let full = format!("{v} {truth}");
        let tx = cx + (cell_w - text_width(&full)) / 2;
        let ty = cy + pair_h + 5;
        draw_text(&mut img, tx, ty, &v, INK);
        let truth_x = tx + (v.chars().count() as u32 + 1) * ADVANCE;
        draw_text(&mut img, truth_x, ty, truth, frame);
    }
    Ok(img)
}

/// Write a grid of image pairs ([`pair_grid_image`]) to `path` as PNG, atomically.
pub fn write_pair_grid_png(path: &Path, pairs: &[PairTile], cols: usize) -> Result<()> {
    let img = pair_grid_image(pairs, cols)?;
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    atomic_write(path, &png)
}

/// One recall-vs-QPS series: `(label, points)` with points `(recall, qps, ef)`.
pub type QpsSeries<'a> = (&'a str, &'a [(f64, f64, usize)]);

/// Render a recall-vs-throughput chart (the ann-benchmarks picture) as SVG: x = recall in
/// `[x_min, 1]`, y = queries per second on a log scale; one polyline per series, each point
/// labelled with its `ef`.
pub fn recall_qps_svg(title: &str, series: &[QpsSeries]) -> Result<String> {
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| (p.0, p.1)))
        .collect();
    if pts.is_empty()
        || pts
            .iter()
            .any(|p| !p.0.is_finite() || p.1.is_nan() || p.1 <= 0.0)
    {
        return Err(Error::InvalidArgument(
            "recall_qps_svg: need points with finite recall and positive qps".into(),
        ));
    }
    let x_min = (pts.iter().map(|p| p.0).fold(1.0, f64::min) * 20.0).floor() / 20.0;
    let x_min = x_min.min(0.95);
    let (lo, hi) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (ly0, ly1) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let sx = |x: f64| SVG_LEFT + (x - x_min) / (1.0 - x_min) * SVG_PLOT;
    let sy = |y: f64| SVG_TOP + (ly1 - y.log10()) / (ly1 - ly0) * SVG_PLOT;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{SVG_WIDTH}\" height=\"{SVG_HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        SVG_LEFT + SVG_PLOT / 2.0,
        xml_escape(title)
    );
    for i in 0..=4 {
        let x = x_min + (1.0 - x_min) * i as f64 / 4.0;
        s += &format!(
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{x:.3}</text>\n",
            sx(x), SVG_TOP, SVG_TOP + SVG_PLOT, SVG_TOP + SVG_PLOT + 16.0
        );
    }
    let mut e = ly0;
    while e <= ly1 + 1e-9 {
        let y = 10f64.powf(e);
        s += &format!(
            "<line x1=\"{0}\" y1=\"{1:.1}\" x2=\"{2}\" y2=\"{1:.1}\" stroke=\"#ddd\"/><text x=\"{3}\" y=\"{4:.1}\" text-anchor=\"end\">{y:.0}</text>\n",
            SVG_LEFT, sy(y), SVG_LEFT + SVG_PLOT, SVG_LEFT - 6.0, sy(y) + 4.0
        );
        e += 1.0;
    }
    s += &format!(
        "<rect x=\"{SVG_LEFT}\" y=\"{SVG_TOP}\" width=\"{SVG_PLOT}\" height=\"{SVG_PLOT}\" fill=\"none\" stroke=\"#333\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">recall@k</text>\n<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">queries per second (log)</text>\n",
        SVG_LEFT + SVG_PLOT / 2.0,
        SVG_TOP + SVG_PLOT + 36.0,
        SVG_TOP + SVG_PLOT / 2.0,
        SVG_TOP + SVG_PLOT / 2.0
    );
    for (i, (label, points)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(p.1)))
            .collect();
        s += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>\n",
            path.join(" ")
        );
        for p in points.iter() {
            s += &format!(
                "<circle cx=\"{0:.1}\" cy=\"{1:.1}\" r=\"3\" fill=\"{colour}\"/><text x=\"{2:.1}\" y=\"{3:.1}\" font-size=\"10\">{4}</text>\n",
                sx(p.0), sy(p.1), sx(p.0) + 4.0, sy(p.1) - 4.0, p.2
            );
        }
        s += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\">{}</text>\n",
            SVG_LEFT + 10.0,
            SVG_TOP + 18.0 + 16.0 * i as f64,
            xml_escape(label)
        );
    }
    s += "</svg>\n";
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("twindex-eval-{}-{name}", std::process::id()))
    }

    #[test]
    fn roc_svg_maps_points_and_escapes_labels() {
        // (0.5, 0.5) -> x = 70 + 0.5 * 420 = 280, y = 40 + (1 - 0.5) * 420 = 250.
        // (0, 0) -> (70, 460); (1, 1) -> (490, 40).
        let pts = [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)];
        let svg = roc_svg(&[("a<b & \"c\"", &pts, 0.75)]).unwrap();
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(r#"points="70.00,460.00 280.00,250.00 490.00,40.00""#));
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot; (AUC 0.750)"));
        assert!(!svg.contains("a<b"));
        // Six ticks per axis labelled 0.0 .. 1.0, and the chance diagonal.
        assert_eq!(svg.matches(">0.4</text>").count(), 2);
        assert!(svg.contains("stroke-dasharray"));
    }

    #[test]
    fn roc_svg_keeps_staircase_corners_only() {
        // A staircase (0,0) (0,.25) (0,.5) (.5,.5) (1,.5) (1,1): the middles of the vertical
        // run (0,.25) and of the horizontal run (.5,.5) go; corners stay.
        let pts = [
            (0.0, 0.0),
            (0.0, 0.25),
            (0.0, 0.5),
            (0.5, 0.5),
            (1.0, 0.5),
            (1.0, 1.0),
        ];
        assert_eq!(
            corners(&pts),
            vec![(0.0, 0.0), (0.0, 0.5), (1.0, 0.5), (1.0, 1.0)]
        );
    }

    #[test]
    fn roc_svg_rejects_bad_curves() {
        assert!(matches!(roc_svg(&[]), Err(Error::Empty(_))));
        assert!(roc_svg(&[("x", &[], 0.5)]).is_err());
        assert!(roc_svg(&[("x", &[(0.0, 1.5)], 0.5)]).is_err());
        assert!(roc_svg(&[("x", &[(f64::NAN, 0.5)], 0.5)]).is_err());
        assert!(roc_svg(&[("x", &[(0.0, 0.5)], f64::NAN)]).is_err());
    }

    #[test]
    fn write_roc_svg_writes_the_rendered_document() {
        let path = temp_file("roc.svg");
        let pts = [(0.0, 0.0), (0.2, 0.8), (1.0, 1.0)];
        let curves = [("model", &pts[..], 0.8)];
        write_roc_svg(&path, &curves).unwrap();
        let back = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, roc_svg(&curves).unwrap());
        // A directory that does not exist is an I/O error naming the path.
        let bad = Path::new("/nonexistent-twindex-dir/roc.svg");
        assert!(matches!(write_roc_svg(bad, &curves), Err(Error::Io { .. })));
    }

    #[test]
    fn font_covers_every_caption_character() {
        for c in "0123456789.-+= d=same diff nan inf".chars() {
            assert!(glyph(c).is_some(), "no glyph for {c:?}");
        }
        for v in [
            0.0f32,
            -1.5,
            123.456,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            let (text, _) = caption(&PairTile {
                left: &[],
                right: &[],
                width: 1,
                height: 1,
                value: v,
                is_same: true,
            });
            assert!(text.chars().all(|c| glyph(c).is_some()), "{text}");
        }
        assert_eq!(text_width("d=1"), 3 * ADVANCE - FONT_SCALE);
    }

    #[test]
    fn draw_text_sets_exactly_the_glyph_pixels() {
        // '1' has 1+2+1+1+1+1+3 = 10 set bits and '.' 2+2 = 4, each FONT_SCALE^2 pixels.
        let mut img = RgbImage::from_pixel(40, 20, WHITE);
        draw_text(&mut img, 1, 1, "1.", INK);
        let inked = img.pixels().filter(|p| **p == INK).count() as u32;
        assert_eq!(inked, 14 * FONT_SCALE * FONT_SCALE);
    }

    #[test]
    fn pair_grid_layout_colours_and_png() {
        // Two 28x28 grey pairs side by side: scale = ceil(64/28) = 3 -> images 84 px.
        // Pair: 2*84 + GAP 4 + 2*BORDER 6 = 178 wide, 84 + 6 = 90 high; caption 14 + 8 = 22.
        // Caption "d=0.250 same" = 12 chars * 12 - 2 = 142 < 178, so cells are 178 x 112.
        // Image: 10 + 2 * (178 + 10) = 386 wide, 10 + 112 + 10 = 132 high.
        let a = vec![200u8; 28 * 28];
        let b: Vec<u8> = (0..28 * 28).map(|i| (i % 256) as u8).collect();
        let pairs = [
            PairTile {
                left: &a,
                right: &b,
                width: 28,
                height: 28,
                value: 0.25,
                is_same: true,
            },
            PairTile {
                left: &b,
                right: &a,
                width: 28,
                height: 28,
                value: 1.5,
                is_same: false,
            },
        ];
        let img = pair_grid_image(&pairs, 4).unwrap();
        assert_eq!(img.dimensions(), (386, 132));
        // Frames: top-left corner of each pair, green then red.
        assert_eq!(*img.get_pixel(10, 10), GREEN);
        assert_eq!(*img.get_pixel(10 + 188, 10), RED);
        // Left image of pair 0 starts inside the frame and is scaled: pixel (0,0) of `a` (200)
        // covers output (13..16, 13..16).
        assert_eq!(*img.get_pixel(13, 13), Rgb([200; 3]));
        assert_eq!(*img.get_pixel(15, 15), Rgb([200; 3]));
        // Right image of pair 0: source pixel (1, 0) = 1 at x = 13 + 84 + 4 + 3.
        assert_eq!(*img.get_pixel(13 + 84 + 4 + 3, 13), Rgb([1; 3]));
        // The caption row holds ink and the truth word in the frame colour.
        let caption_row = 10 + 90..10 + 112;
        let count = |c: Rgb<u8>| {
            caption_row
                .clone()
                .flat_map(|y| (0..188).map(move |x| (x, y)))
                .filter(|&(x, y)| *img.get_pixel(x, y) == c)
                .count()
        };
        assert!(count(INK) > 0 && count(GREEN) > 0);

        // One column: two rows.
        assert_eq!(pair_grid_image(&pairs, 1).unwrap().dimensions(), (198, 254));

        // Written PNG decodes to the same pixels.
        let path = temp_file("grid.png");
        write_pair_grid_png(&path, &pairs, 2).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn pair_grid_takes_rgb_and_rejects_bad_input() {
        let rgb = [255u8, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9];
        let ok = PairTile {
            left: &rgb,
            right: &rgb,
            width: 2,
            height: 2,
            value: 0.0,
            is_same: false,
        };
        // 2x2 -> scale 4 (capped); pair 2*8 + 4 + 6 = 26 wide, but the caption "d=0.000 diff"
        // is 12 * 12 - 2 = 142 wide, so the pair is centred: x = 10 + (142 - 26) / 2 = 68,
        // image at 68 + 3 = 71. Pixel (0,0) red at (71, 13), (1,0) green at (75, 13).
        let img = pair_grid_image(&[ok], 1).unwrap();
        assert_eq!(img.width(), 10 + 142 + 10);
        assert_eq!(*img.get_pixel(71, 13), Rgb([255, 0, 0]));
        assert_eq!(*img.get_pixel(75, 13), Rgb([0, 255, 0]));

        assert!(matches!(pair_grid_image(&[], 1), Err(Error::Empty(_))));
        assert!(pair_grid_image(&[ok], 0).is_err());
        let short = PairTile {
            right: &rgb[..5],
            ..ok
        };
        assert!(matches!(
            pair_grid_image(&[short], 1),
            Err(Error::DimensionMismatch { .. })
        ));
        let zero = PairTile { width: 0, ..ok };
        assert!(pair_grid_image(&[zero], 1).is_err());
    }
}
