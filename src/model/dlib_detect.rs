//! dlib's MMOD CNN face detector (`mmod_human_face_detector.dat`), read from dlib's own file and
//! run as dlib runs it: the image and its `pyramid_down<6>` levels tiled into one input (each
//! level resized bilinearly from the one above, as dlib's `input_rgb_image_pyramid` does), the
//! network (three stride-2 5x5 convolutions, three 5x5 convolutions of 45 filters, each with
//! its folded batch norm and relu, then one 9x9 convolution giving one score a position), every
//! position scoring above 0 mapped back to an image box through the layers' geometry and the
//! pyramid tile it falls in, then dlib's greedy non-maximum suppression.
//!
//! Checked against dlib's Python bindings (`cnn_face_detection_model_v1`) on photos of the
//! faces corpus in `tests/it/dlib_detect.rs`; the references come from
//! `benches/peers/dlib_detect_reference.py`.

pub use super::dlib::Rgb;
use super::dlib::{Reader, Rect};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::Path;

/// dlib's detector file name (in PyPI's `face_recognition_models`).
pub const DETECTOR: &str = "mmod_human_face_detector.dat";

/// One face found: dlib's inclusive box in image pixels and its detection score (the
/// network's output at that position; dlib reports those above 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceDetection {
    pub rect: Rect,
    pub score: f32,
}

#[derive(Debug)]
enum Layer {
    Conv {
        w: Tensor,
        b: Tensor,
        k: usize,
        stride: usize,
        pad: usize,
    },
    /// A batch norm folded into `x * gamma + beta` (dlib's `affine_` built from a `bn_con`).
    Affine {
        gamma: Tensor,
        beta: Tensor,
    },
    Relu,
}

/// dlib's `test_box_overlap`: two boxes overlap when their intersection is more than
/// `iou` of the box spanning both, or more than `covered` of either box.
#[derive(Debug, Clone, Copy)]
struct Overlap {
    iou: f64,
    covered: f64,
}

/// The MMOD face detector: an image pyramid and a fully convolutional scorer.
#[derive(Debug)]
pub struct MmodDetector {
    /// Detector windows (width, height) in pyramid pixels, one output channel each.
    windows: Vec<(usize, usize)>,
    nms: Overlap,
    means: [f32; 3],
    padding: usize,
    outer_padding: usize,
    layers: Vec<Layer>,
    /// The layers as run: each convolution with the affine layer after it folded in.
    plan: Vec<ConvStep>,
}

/// One convolution as run: weights `[out, in * k * k]` (the following affine layer folded
/// in), bias, geometry, and whether a relu follows.
#[derive(Debug)]
struct ConvStep {
    w: Vec<f32>,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    relu: bool,
}

/// Most unfolded input values (floats) held at once: the convolution unfolds this many
/// output rows at a time.
const UNFOLD_FLOATS: usize = 1 << 22;

impl ConvStep {
    /// `input` is `[cin, h, w]`; returns `[cout, oh, ow]` and (oh, ow).
    fn run(&self, input: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        let (k, s, p) = (self.k, self.stride, self.pad);
        let oh = (h + 2 * p).saturating_sub(k) / s + 1;
        let ow = (w + 2 * p).saturating_sub(k) / s + 1;
        if h + 2 * p < k || w + 2 * p < k {
            return (Vec::new(), 0, 0);
        }
        let kk = self.cin * k * k;
        let plane = oh * ow;
        let mut out = vec![0f32; self.cout * plane];
        let rows_at_once = (UNFOLD_FLOATS / (kk * ow).max(1)).max(1);
        let mut cols = vec![0f32; kk * rows_at_once * ow];
        let mut y0 = 0;
        while y0 < oh {
            let rows = rows_at_once.min(oh - y0);
            let n = rows * ow;
            for ci in 0..self.cin {
                let src = &input[ci * h * w..(ci + 1) * h * w];
                for ky in 0..k {
                    for kx in 0..k {
                        let r = (ci * k + ky) * k + kx;
                        let dst = &mut cols[r * n..(r + 1) * n];
                        for oy in 0..rows {
                            let iy = ((y0 + oy) * s + ky) as isize - p as isize;
                            let d = &mut dst[oy * ow..(oy + 1) * ow];
                            if iy < 0 || iy >= h as isize {
                                d.fill(0.0);
                                continue;
                            }
                            let row = &src[iy as usize * w..(iy as usize + 1) * w];
                            for (ox, v) in d.iter_mut().enumerate() {
                                let ix = (ox * s + kx) as isize - p as isize;
                                *v = if ix < 0 || ix >= w as isize {
                                    0.0
                                } else {
                                    row[ix as usize]
                                };
                            }
                        }
                    }
                }
            }
            super::gemm::sgemm_with(
                self.cout,
                n,
                kk,
                &mut out[y0 * ow..],
                plane,
                false,
                (&self.w, kk, 1),
                (&cols[..kk * n], n, 1),
                super::gemm::rayon_parallelism(),
            );
            y0 += rows;
        }
        for (c, o) in out.chunks_mut(plane).enumerate() {
            let b = self.b[c];
            if self.relu {
                o.iter_mut().for_each(|v| *v = (*v + b).max(0.0));
            } else {
                o.iter_mut().for_each(|v| *v += b);
            }
        }
        (out, oh, ow)
    }
}

fn find_tag(buf: &[u8], from: usize, names: &[&[u8]]) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 2 < buf.len() {
        if buf[i] == 0x01 {
            let n = buf[i + 1] as usize;
            for (k, name) in names.iter().enumerate() {
                if name.len() == n && buf[i + 2..].starts_with(name) {
                    return Some((i, k));
                }
            }
        }
        i += 1;
    }
    None
}

impl MmodDetector {
    /// Read `mmod_human_face_detector.dat` (or an MMOD network of the same shape).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes, path)
    }

    /// Parse the bytes of a detector file; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut r = Reader::new(bytes, path);
        let (at, _) = find_tag(bytes, 0, &[b"loss_mmod_"])
            .filter(|(at, _)| *at < 64)
            .ok_or_else(|| r.err("no loss_mmod_ layer: not dlib's MMOD detector"))?;
        r.seek(at);
        r.string()?;
        // mmod_options
        let ver = r.int()?;
        let windows = match ver {
            1 => vec![(
                r.count(1 << 16, "window width")?,
                r.count(1 << 16, "window height")?,
            )],
            2..=4 => r.list(1024, "detector window count", |r| {
                let v = r.int()?;
                let w = r.count(1 << 16, "window width")?;
                let h = r.count(1 << 16, "window height")?;
                if v == 2 {
                    r.string()?;
                }
                Ok((w, h))
            })?,
            _ => return Err(r.err(&format!("mmod_options version {ver}, expected 1 to 4"))),
        };
        if windows.is_empty() || windows.iter().any(|&(w, h)| w == 0 || h == 0) {
            return Err(r.err("no detector window, or an empty one"));
        }
        let _loss_false_alarm = r.double()?;
        let _loss_missed = r.double()?;
        let _truth_iou = r.double()?;
        let nms = Overlap {
            iou: r.double()?,
            covered: r.double()?,
        };
        if !(0.0..=1.0).contains(&nms.iou) || !(0.0..=1.0).contains(&nms.covered) {
            return Err(r.err("non-maximum suppression thresholds outside 0..1"));
        }
        if ver >= 4 {
            // Version 4 may enable bounding box regression, which this reader does not run.
            return Err(r.err("mmod_options version 4 (bounding box regression) is not supported"));
        }
        // The input layer: means and the pyramid's paddings.
        let (at, k) = find_tag(
            bytes,
            r.position(),
            &[b"input_rgb_image_pyramid", b"input_rgb_image_pyramid2"],
        )
        .ok_or_else(|| r.err("no input_rgb_image_pyramid layer"))?;
        r.seek(at);
        r.string()?;
        let means = [r.float()?, r.float()?, r.float()?];
        let (padding, outer_padding) = if k == 1 {
            (
                r.count(1 << 16, "pyramid padding")?,
                r.count(1 << 16, "pyramid outer padding")?,
            )
        } else {
            (10, 11)
        };
        // The layers, input to output (dlib writes each layer's details after its input).
        let names: [&[u8]; 6] = [
            b"con_4",
            b"bn_con2",
            b"affine_",
            b"affine_2",
            b"relu_",
            b"relu_2",
        ];
        let mut layers = Vec::new();
        let mut pos = r.position();
        while let Some((at, k)) = find_tag(bytes, pos, &names) {
            r.seek(at);
            r.string()?;
            let layer = match k {
                0 => {
                    let c = r.con_layer()?;
                    Layer::Conv {
                        w: c.filters,
                        b: c.bias,
                        k: c.k,
                        stride: c.stride,
                        pad: c.pad,
                    }
                }
                1 => {
                    // bn_con2: params (gamma, beta), two alias tensors, the batch statistics,
                    // the running statistics, counters, multipliers and eps.
                    let (_, params) = r.tensor()?;
                    for _ in 0..2 {
                        if r.int()? != 1 {
                            return Err(r.err("alias_tensor version, expected 1"));
                        }
                        for _ in 0..4 {
                            r.int()?;
                        }
                    }
                    let _means = r.tensor()?;
                    let _invstds = r.tensor()?;
                    let (_, rm) = r.tensor()?;
                    let (_, rv) = r.tensor()?;
                    r.int()?;
                    r.int()?;
                    for _ in 0..4 {
                        r.double()?;
                    }
                    let eps = r.double()? as f32;
                    let c = params.len() / 2;
                    if c == 0 || params.len() != 2 * c || rm.len() != c || rv.len() != c {
                        return Err(
                            r.err("a batch norm whose statistics do not match its channels")
                        );
                    }
                    // dlib's affine_(bn_): gamma / sqrt(var + eps), beta - gamma' * mean.
                    let g: Vec<f32> = (0..c).map(|i| params[i] / (rv[i] + eps).sqrt()).collect();
                    let b: Vec<f32> = (0..c).map(|i| params[c + i] - g[i] * rm[i]).collect();
                    Layer::Affine {
                        gamma: Tensor::from_vec(g, (1, c, 1, 1), &Device::Cpu)?,
                        beta: Tensor::from_vec(b, (1, c, 1, 1), &Device::Cpu)?,
                    }
                }
                2 | 3 => {
                    let (_, params) = r.tensor()?;
                    let c = params.len() / 2;
                    if c == 0 || params.len() != 2 * c {
                        return Err(r.err("an affine layer with an odd parameter count"));
                    }
                    Layer::Affine {
                        gamma: Tensor::from_slice(&params[..c], (1, c, 1, 1), &Device::Cpu)?,
                        beta: Tensor::from_slice(&params[c..], (1, c, 1, 1), &Device::Cpu)?,
                    }
                }
                _ => Layer::Relu,
            };
            layers.push(layer);
            pos = r.position();
        }
        // Check the chain: 3 input channels, channel counts agree, the last convolution gives
        // one score per detector window.
        let mut ch = 3;
        for l in &layers {
            match l {
                Layer::Conv { w, .. } => {
                    let d = w.dims();
                    if d[1] != ch {
                        return Err(r.err(&format!(
                            "a convolution takes {} channels where {ch} arrive",
                            d[1]
                        )));
                    }
                    ch = d[0];
                }
                Layer::Affine { gamma, .. } => {
                    if gamma.dims()[1] != ch {
                        return Err(r.err("an affine layer's channels differ from its input's"));
                    }
                }
                Layer::Relu => {}
            }
        }
        match layers.last() {
            Some(Layer::Conv { .. }) if ch == windows.len() => {}
            _ => {
                return Err(r.err(&format!(
                    "the network must end in a convolution with one output per detector window ({}); it gives {ch}",
                    windows.len()
                )))
            }
        }
        let plan = plan_of(&layers).map_err(|m| r.err(&m))?;
        Ok(MmodDetector {
            windows,
            nms,
            means,
            padding,
            outer_padding,
            layers,
            plan,
        })
    }

    /// The detector windows (width, height), in pyramid pixels: the smallest face found
    /// without upsampling is about this size.
    pub fn windows(&self) -> &[(usize, usize)] {
        &self.windows
    }

    /// Faces in `img`, best first, after upsampling the image `upsample` times (dlib's
    /// `pyramid_up`, each about doubling the side; the Python bindings' second argument).
    pub fn detect(&self, img: Rgb, upsample: u32) -> Result<Vec<FaceDetection>> {
        if img.pixels.len() != img.width * img.height * 3 {
            return Err(Error::InvalidArgument(format!(
                "an RGB image of {}x{} needs {} bytes, got {}",
                img.width,
                img.height,
                img.width * img.height * 3,
                img.pixels.len()
            )));
        }
        let mut owned: Option<(Vec<u8>, usize, usize)> = None;
        for _ in 0..upsample {
            let src = match &owned {
                Some((p, w, h)) => Rgb {
                    pixels: p,
                    width: *w,
                    height: *h,
                },
                None => img,
            };
            owned = Some(pyramid_up(src));
        }
        let src = match &owned {
            Some((p, w, h)) => Rgb {
                pixels: p,
                width: *w,
                height: *h,
            },
            None => img,
        };
        let mut dets = self.detect_at_scale(src)?;
        for d in &mut dets {
            // pyramid_down<2>::rect_down, once per upsampling, then dlib's rounding.
            let (mut l, mut t, mut r, mut b) = (
                d.rect.left as f64,
                d.rect.top as f64,
                d.rect.right as f64,
                d.rect.bottom as f64,
            );
            for _ in 0..upsample {
                (l, t, r, b) = (
                    l / 2.0 - 1.25,
                    t / 2.0 - 0.75,
                    r / 2.0 - 1.25,
                    b / 2.0 - 0.75,
                );
            }
            d.rect = Rect {
                left: l.round() as i64,
                top: t.round() as i64,
                right: r.round() as i64,
                bottom: b.round() as i64,
            };
        }
        Ok(dets)
    }

    fn detect_at_scale(&self, img: Rgb) -> Result<Vec<FaceDetection>> {
        let rects = tiled_pyramid_rects(img.height, img.width, self.padding, self.outer_padding);
        if rects.rects.is_empty() {
            return Ok(Vec::new());
        }
        let (nr, nc) = (rects.tensor_rows, rects.tensor_cols);
        let plane = nr * nc;
        let mut data = vec![0f32; 3 * plane];
        let r0 = rects.rects[0];
        for ch in 0..3 {
            let p = &mut data[ch * plane..(ch + 1) * plane];
            for y in 0..img.height {
                let row = &mut p[(r0.top as usize + y) * nc + r0.left as usize..][..img.width];
                for (x, v) in row.iter_mut().enumerate() {
                    *v = (img.pixels[(y * img.width + x) * 3 + ch] as f32 - self.means[ch]) / 256.0;
                }
            }
        }
        for i in 1..rects.rects.len() {
            for ch in 0..3 {
                let p = &mut data[ch * plane..(ch + 1) * plane];
                resize_bilinear_in_place(p, nc, rects.rects[i - 1], rects.rects[i]);
            }
        }
        let (mut x, mut h, mut w) = (data, nr, nc);
        for step in &self.plan {
            (x, h, w) = step.run(&x, h, w);
        }
        let (k, onr, onc, out) = (self.windows.len(), h, w, x);
        // Each position's score above 0 becomes a window centred on the input point it maps to.
        let mut dets: Vec<(Rect, f32)> = Vec::new();
        for (ki, &(ww, wh)) in self.windows.iter().enumerate().take(k) {
            for r in 0..onr {
                for c in 0..onc {
                    let score = out[(ki * onr + r) * onc + c];
                    if score <= 0.0 {
                        continue;
                    }
                    let (px, py) = self.output_to_input(c as f64, r as f64);
                    let (hw, hh) = ((ww as f64 - 1.0) / 2.0, (wh as f64 - 1.0) / 2.0);
                    let rect = rects.to_image(px - hw, py - hh, px + hw, py + hh);
                    dets.push((rect, score));
                }
            }
        }
        dets.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut kept: Vec<FaceDetection> = Vec::new();
        for (rect, score) in dets {
            if kept.iter().any(|k| self.nms.overlaps(&k.rect, &rect)) {
                continue;
            }
            kept.push(FaceDetection { rect, score });
        }
        Ok(kept)
    }

    /// dlib's `output_tensor_to_input_tensor`: each convolution maps `p` to
    /// `p * stride - padding + k / 2`, from the last layer to the first.
    fn output_to_input(&self, mut x: f64, mut y: f64) -> (f64, f64) {
        for l in self.layers.iter().rev() {
            if let Layer::Conv { k, stride, pad, .. } = l {
                let off = (k / 2) as f64 - *pad as f64;
                x = x * *stride as f64 + off;
                y = y * *stride as f64 + off;
            }
        }
        (x, y)
    }
}

/// Fold each convolution with the affine layer after it (`gamma * (W x + b) + beta`) and note
/// the relu after that.
fn plan_of(layers: &[Layer]) -> std::result::Result<Vec<ConvStep>, String> {
    let v = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
    let mut plan: Vec<ConvStep> = Vec::new();
    for l in layers {
        match l {
            Layer::Conv {
                w,
                b,
                k,
                stride,
                pad,
            } => {
                let d = w.dims();
                plan.push(ConvStep {
                    w: v(w).map_err(|e| e.to_string())?,
                    b: v(b).map_err(|e| e.to_string())?,
                    cin: d[1],
                    cout: d[0],
                    k: *k,
                    stride: *stride,
                    pad: *pad,
                    relu: false,
                });
            }
            Layer::Affine { gamma, beta } => {
                let step = plan
                    .last_mut()
                    .filter(|s| !s.relu)
                    .ok_or("an affine layer that does not follow a convolution")?;
                let (g, bt) = (
                    v(gamma).map_err(|e| e.to_string())?,
                    v(beta).map_err(|e| e.to_string())?,
                );
                let per = step.w.len() / step.cout;
                for c in 0..step.cout {
                    step.w[c * per..(c + 1) * per]
                        .iter_mut()
                        .for_each(|x| *x *= g[c]);
                    step.b[c] = step.b[c] * g[c] + bt[c];
                }
            }
            Layer::Relu => {
                let step = plan
                    .last_mut()
                    .filter(|s| !s.relu)
                    .ok_or("a relu that does not follow a convolution")?;
                step.relu = true;
            }
        }
    }
    Ok(plan)
}

impl Overlap {
    fn overlaps(&self, a: &Rect, b: &Rect) -> bool {
        let area = |l: i64, t: i64, r: i64, bt: i64| -> f64 {
            if r < l || bt < t {
                0.0
            } else {
                ((r - l + 1) * (bt - t + 1)) as f64
            }
        };
        let inner = area(
            a.left.max(b.left),
            a.top.max(b.top),
            a.right.min(b.right),
            a.bottom.min(b.bottom),
        );
        if inner == 0.0 {
            return false;
        }
        let outer = area(
            a.left.min(b.left),
            a.top.min(b.top),
            a.right.max(b.right),
            a.bottom.max(b.bottom),
        );
        inner / outer > self.iou
            || inner / area(a.left, a.top, a.right, a.bottom) > self.covered
            || inner / area(b.left, b.top, b.right, b.bottom) > self.covered
    }
}

/// Where the pyramid's levels sit in the tiled input, and its size.
struct Tiles {
    rects: Vec<Rect>,
    tensor_rows: usize,
    tensor_cols: usize,
}

impl Tiles {
    /// dlib's `tiled_pyramid_to_image` for a box in input coordinates, rounded as dlib
    /// converts a `drectangle` to a `rectangle` (to nearest, halves away from zero).
    fn to_image(&self, l: f64, t: f64, r: f64, b: f64) -> Rect {
        let (cx, cy) = ((l + r) / 2.0, (t + b) / 2.0);
        let (px, py) = (cx.round() as i64, cy.round() as i64);
        // nearest_rect: the first level containing the centre, else the closest.
        let mut best = (0, f64::INFINITY);
        for (i, q) in self.rects.iter().enumerate() {
            let nx = px.clamp(q.left, q.right);
            let ny = py.clamp(q.top, q.bottom);
            if nx == px && ny == py {
                best = (i, 0.0);
                break;
            }
            let d = (((nx - px) * (nx - px) + (ny - py) * (ny - py)) as f64).sqrt();
            if d < best.1 {
                best = (i, d);
            }
        }
        let q = self.rects[best.0];
        let (ox, oy) = (q.left as f64, q.top as f64);
        let up = |mut v: f64| {
            // pyramid_down<6>::point_up, once per level.
            for _ in 0..best.0 {
                v = v * 6.0 / 5.0 + 0.3;
            }
            v
        };
        Rect {
            left: up(l - ox).round() as i64,
            top: up(t - oy).round() as i64,
            right: up(r - ox).round() as i64,
            bottom: up(b - oy).round() as i64,
        }
    }
}

/// dlib's `compute_tiled_image_pyramid_details` for `pyramid_down<6>`: level sizes shrink by
/// 5/6 (floored) while at least 5 rows remain; the levels run down a first column beside each
/// other, then back up along the right edge.
fn tiled_pyramid_rects(nr: usize, nc: usize, padding: usize, outer: usize) -> Tiles {
    let empty = Tiles {
        rects: Vec::new(),
        tensor_rows: 0,
        tensor_cols: 0,
    };
    if nr * nc == 0 {
        return empty;
    }
    let (padding, outer) = (padding as i64, outer as i64);
    let mut sizes: Vec<(i64, i64)> = vec![(nr as i64, nc as i64)];
    let (mut r, mut c) = (nr as i64, nc as i64);
    loop {
        r = (5.0 / 6.0 * r as f64).floor() as i64;
        c = (5.0 / 6.0 * c as f64).floor() as i64;
        if r * c == 0 || r < 5 {
            break;
        }
        sizes.push((r, c));
    }
    let total_height: i64 = sizes.iter().map(|s| s.0 + padding).sum::<i64>() - padding * 2;
    let (h0, w0) = sizes[0];
    let mut height = 0;
    let mut prev_width = 0;
    for &(h, w) in &sizes {
        if w <= w0 - prev_width - padding && (height - h0) * 2 >= total_height - h0 {
            break;
        }
        height += h + padding;
        prev_width = w;
    }
    height -= padding;
    let rect = |l: i64, t: i64, h: i64, w: i64| Rect {
        left: l,
        top: t,
        right: l + w - 1,
        bottom: t + h - 1,
    };
    let mut rects = Vec::with_capacity(sizes.len());
    let mut y = outer;
    let mut i = 0;
    while y < height + outer && i < sizes.len() {
        rects.push(rect(outer, y, sizes[i].0, sizes[i].1));
        y += sizes[i].0 + padding;
        i += 1;
    }
    y -= padding;
    while i < sizes.len() {
        // Bottom-right corner at (outer + w0 - 1, y - 1), going up.
        let (br_x, br_y) = (outer + w0 - 1, y - 1);
        let q = Rect {
            left: br_x - (sizes[i].1 - 1),
            top: br_y - (sizes[i].0 - 1),
            right: br_x,
            bottom: br_y,
        };
        // dlib builds this rectangle from p1 and p1 - size, so it is the same box.
        let first = rects[0];
        let meets_first = q.left.max(first.left) <= q.right.min(first.right)
            && q.top.max(first.top) <= q.bottom.min(first.bottom);
        if meets_first {
            break;
        }
        rects.push(q);
        y -= sizes[i].0 + padding;
        i += 1;
    }
    Tiles {
        rects,
        tensor_rows: (height + outer * 2) as usize,
        tensor_cols: (w0 + outer * 2) as usize,
    }
}

/// dlib's bilinear `resize_image` between two tiles of one float plane (row stride `stride`):
/// output pixel (c, r) samples the source at (c * sx, r * sy), sx = (in_w - 1) / (out_w - 1).
fn resize_bilinear_in_place(p: &mut [f32], stride: usize, from: Rect, to: Rect) {
    let (iw, ih) = (
        (from.right - from.left + 1) as usize,
        (from.bottom - from.top + 1) as usize,
    );
    let (ow, oh) = (
        (to.right - to.left + 1) as usize,
        (to.bottom - to.top + 1) as usize,
    );
    let sx = (iw as f64 - 1.0) / (ow.max(2) - 1) as f64;
    let sy = (ih as f64 - 1.0) / (oh.max(2) - 1) as f64;
    let (fl, ft) = (from.left as usize, from.top as usize);
    let (tl, tt) = (to.left as usize, to.top as usize);
    let mut y = -sy;
    let mut row = vec![0f32; ow];
    for r in 0..oh {
        y += sy;
        let top = y.floor() as usize;
        let bottom = (top + 1).min(ih - 1);
        let tb = (y - top as f64) as f32;
        for (c, o) in row.iter_mut().enumerate() {
            let x = c as f64 * sx;
            let left = x.floor() as usize;
            let right = (left + 1).min(iw - 1);
            let lr = (x - left as f64) as f32;
            let at = |yy: usize, xx: usize| p[(ft + yy) * stride + fl + xx];
            *o = (1.0 - tb) * ((1.0 - lr) * at(top, left) + lr * at(top, right))
                + tb * ((1.0 - lr) * at(bottom, left) + lr * at(bottom, right));
        }
        p[(tt + r) * stride + tl..][..ow].copy_from_slice(&row);
    }
}

/// dlib's `pyramid_up` with `pyramid_down<2>` on an RGB image: the output is `2w + 2` by
/// `2h + 1` (the mapped corners, rounded), filled by a bilinear resize rounded to bytes.
pub fn pyramid_up(img: Rgb) -> (Vec<u8>, usize, usize) {
    // rect_up of (0, 0, w-1, h-1): (p + (1.25, 0.75)) * 2, rounded half away from zero.
    let ow = ((img.width as f64 - 1.0 + 1.25) * 2.0).round() as usize + 1;
    let oh = ((img.height as f64 - 1.0 + 0.75) * 2.0).round() as usize + 1;
    let (iw, ih) = (img.width, img.height);
    let sx = (iw as f64 - 1.0) / (ow.max(2) - 1) as f64;
    let sy = (ih as f64 - 1.0) / (oh.max(2) - 1) as f64;
    let mut out = vec![0u8; ow * oh * 3];
    let px = |y: usize, x: usize, ch: usize| img.pixels[(y * iw + x) * 3 + ch] as f32;
    let mut y = -sy;
    for r in 0..oh {
        y += sy;
        let top = y.floor() as usize;
        let bottom = (top + 1).min(ih - 1);
        let tb = (y - top as f64) as f32;
        // dlib's SIMD loop handles 4 columns at a time while the 4th's right neighbour is
        // inside the image, in f32, truncating; the remaining columns in f64, truncated.
        let mut c = 0;
        let x0 = -4.0 * sx;
        let mut xv: [f32; 4] = [0.0, 1.0, 2.0, 3.0].map(|j| (x0 + j * sx) as f32);
        let step = (4.0 * sx) as f32;
        loop {
            xv = xv.map(|x| x + step);
            let lefts = xv.map(|x| x as i64);
            if lefts[3] + 1 >= iw as i64 || c + 3 >= ow {
                break;
            }
            for j in 0..4 {
                let left = lefts[j] as usize;
                let lr = xv[j] - left as f32;
                let w = [
                    (1.0 - tb) * (1.0 - lr),
                    (1.0 - tb) * lr,
                    tb * (1.0 - lr),
                    tb * lr,
                ];
                for ch in 0..3 {
                    let v = w[0] * px(top, left, ch)
                        + w[1] * px(top, left + 1, ch)
                        + w[2] * px(bottom, left, ch)
                        + w[3] * px(bottom, left + 1, ch);
                    out[(r * ow + c + j) * 3 + ch] = v.clamp(0.0, 255.0) as u8;
                }
            }
            c += 4;
        }
        while c < ow {
            let x = c as f64 * sx;
            let left = x.floor() as usize;
            let right = (left + 1).min(iw - 1);
            let lr = x - left as f64;
            let tbd = tb as f64;
            for ch in 0..3 {
                let g = |yy: usize, xx: usize| px(yy, xx, ch) as f64;
                let v = (1.0 - tbd) * ((1.0 - lr) * g(top, left) + lr * g(top, right))
                    + tbd * ((1.0 - lr) * g(bottom, left) + lr * g(bottom, right));
                out[(r * ow + c) * 3 + ch] = v.clamp(0.0, 255.0) as u8;
            }
            c += 1;
        }
    }
    (out, ow, oh)
}
