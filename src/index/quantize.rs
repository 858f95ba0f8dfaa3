//! Scalar quantization of stored vectors (SQ8, as FAISS `QT_8bit` and Qdrant's scalar
//! quantization): each dimension `d` is mapped to a byte with its own range, trained on the
//! data,
//!
//! ```text
//! code_d = round((x_d - min_d) / scale_d)  clamped to 0..=255,   scale_d = (max_d - min_d) / 255
//! x̂_d    = min_d + scale_d · code_d
//! ```
//!
//! so a vector costs `dim` bytes instead of `4·dim`. A query stays in `f32` (asymmetric
//! distance): for a query `q` the ordering key of [`Metric::key`] to the decoded `x̂` is
//!
//! ```text
//! l2:          |q - x̂|²  = |a|² + Σ scale_d² code_d² − 2 Σ (a_d · scale_d) code_d,   a = q − min
//! cosine, dot: 1 − q·x̂   = (1 − q·min) − Σ (q_d · scale_d) code_d
//! ```
//!
//! i.e. `c + t(x) + Σ w_d code_d` with the query's constant `c` and weights `w`
//! ([`Sq8::probe`]) and one number per stored vector ([`Sq8::encode`]: `t = Σ scale² code²` for
//! l2; for cosine and dot `u = Σ min·scale·code`, which the asymmetric key does not use). The
//! sum is the kernel of a quantized search: [`dot_u8`], or, for dimensions up to
//! [`I16_MAX_DIM`], the same sum over integers with `w` rounded to `i16` under one scale
//! ([`quantize_weights`], [`I16Kernel`]): half the instructions, an error of at most
//! `scale / 2 · Σ code_d` in the key, which re-ranking on the f32 vectors removes.
//!
//! Between two stored vectors (neighbour selection while building) both sides are codes
//! (symmetric distance), with `K(x, y) = Σ scale_d² x_d y_d` ([`dot_u8_u8`]):
//!
//! ```text
//! l2:          |x̂ - ŷ|² = t(x) + t(y) − 2 K(x, y)
//! cosine, dot: 1 − x̂·ŷ  = (1 − Σ min²) − u(x) − u(y) − K(x, y)
//! ```
//!
//! Each kernel has AVX-512 and AVX2 versions tested against an f64 loop.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

use super::metric::Metric;

/// How the HNSW graph stores the vectors it walks over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantize {
    /// Full `f32` vectors in the graph (the default): exact distances during the walk, 4 bytes
    /// a dimension in memory.
    #[default]
    None,
    /// One byte a dimension (per-dimension min/max), the best candidates re-scored on the
    /// `f32` vectors, which stay on disk (memory-mapped) once the index is reopened. About a
    /// quarter of the memory traffic per distance; recall at a given `ef` slightly lower
    /// before re-ranking.
    Sq8,
}

impl Quantize {
    /// The name used in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Quantize::None => "none",
            Quantize::Sq8 => "sq8",
        }
    }

    /// Whether this is the default (for `skip_serializing_if`, so that manifests written
    /// before quantization existed keep their checksum).
    pub fn is_none(&self) -> bool {
        *self == Quantize::None
    }
}

impl std::str::FromStr for Quantize {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let choices: [(&[&str], _); 2] = [(&["none"], Quantize::None), (&["sq8"], Quantize::Sq8)];
        crate::error::parse_choice("quantize", s, &choices)
    }
}

/// A trained SQ8 quantizer: per-dimension minimum and step. See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sq8 {
    metric: Metric,
    min: Vec<f32>,
    scale: Vec<f32>,
    /// scale², the weights of the symmetric kernel.
    scale2: Vec<f32>,
    /// 1 − Σ min² (cosine and dot).
    one_minus_m2: f32,
}

impl Sq8 {
    /// Train on `vectors` (row-major, `dim` floats a row, at least one row, already prepared
    /// for `metric`): each dimension's range is its minimum and maximum over the rows.
    pub fn train(metric: Metric, dim: usize, vectors: &[f32]) -> Result<Self> {
        if dim == 0 || vectors.is_empty() || !vectors.len().is_multiple_of(dim) {
            return Err(Error::Shape(format!(
                "sq8 training: {} floats are not whole rows of dimension {dim}",
                vectors.len()
            )));
        }
        Self::train_rows(metric, dim, vectors.chunks_exact(dim))
    }

    /// [`Sq8::train`] over rows given one by one (each `dim` floats; at least one).
    pub fn train_rows<'a>(
        metric: Metric,
        dim: usize,
        rows: impl IntoIterator<Item = &'a [f32]>,
    ) -> Result<Self> {
        let mut min = vec![f32::INFINITY; dim];
        let mut max = vec![f32::NEG_INFINITY; dim];
        let mut n = 0usize;
        for row in rows {
            if row.len() != dim {
                return Err(Error::dim(dim, row.len(), "sq8 training row"));
            }
            for ((lo, hi), &x) in min.iter_mut().zip(max.iter_mut()).zip(row) {
                *lo = lo.min(x);
                *hi = hi.max(x);
            }
            n += 1;
        }
        if n == 0 || dim == 0 {
            return Err(Error::Empty("sq8 training: no rows".into()));
        }
        let scale = min
            .iter()
            .zip(&max)
            .map(|(lo, hi)| (hi - lo) / 255.0)
            .collect();
        Ok(Self::with(metric, min, scale))
    }

    /// Rebuild from stored parameters (see [`Sq8::min`], [`Sq8::scale`]).
    pub fn from_parts(metric: Metric, min: Vec<f32>, scale: Vec<f32>) -> Result<Self> {
        if min.len() != scale.len() || min.is_empty() {
            return Err(Error::Shape(format!(
                "sq8: {} minima and {} scales",
                min.len(),
                scale.len()
            )));
        }
        if let Some(d) =
            (0..min.len()).find(|&d| !min[d].is_finite() || !scale[d].is_finite() || scale[d] < 0.0)
        {
            return Err(Error::InvalidArgument(format!(
                "sq8 dimension {d}: min {} scale {} (expected finite, scale >= 0)",
                min[d], scale[d]
            )));
        }
        Ok(Self::with(metric, min, scale))
    }

    fn with(metric: Metric, min: Vec<f32>, scale: Vec<f32>) -> Self {
        let scale2 = scale.iter().map(|s| s * s).collect();
        let m2: f64 = min.iter().map(|&m| m as f64 * m as f64).sum();
        Sq8 {
            metric,
            min,
            scale,
            scale2,
            one_minus_m2: (1.0 - m2) as f32,
        }
    }

    /// The dimension.
    pub fn dim(&self) -> usize {
        self.min.len()
    }

    /// Per-dimension minimum.
    pub fn min(&self) -> &[f32] {
        &self.min
    }

    /// Per-dimension step (`(max − min) / 255`; 0 for a constant dimension).
    pub fn scale(&self) -> &[f32] {
        &self.scale
    }

    /// Encode a prepared vector into `codes` (`dim` bytes); returns its term (`t` = Σ
    /// scale²·code² for `l2`, `u` = Σ min·scale·code otherwise). Values outside the trained
    /// range are clamped.
    pub fn encode(&self, v: &[f32], codes: &mut [u8]) -> f32 {
        let (mut t, mut u) = (0.0f64, 0.0f64);
        for d in 0..self.min.len() {
            let s = self.scale[d];
            let c = if s > 0.0 {
                round_to_u8((v[d] - self.min[d]) / s)
            } else {
                0
            };
            codes[d] = c;
            let y = s as f64 * c as f64;
            t += y * y;
            u += self.min[d] as f64 * y;
        }
        match self.metric {
            Metric::L2 => t as f32,
            Metric::Cosine | Metric::Dot => u as f32,
        }
    }

    /// Whether the asymmetric key adds the stored term (`l2`: 1) or not (0).
    pub fn term_weight(&self) -> f32 {
        match self.metric {
            Metric::L2 => 1.0,
            Metric::Cosine | Metric::Dot => 0.0,
        }
    }

    /// The key between two stored vectors from their terms and codes, with `kernel` a
    /// [`dot_u8_u8`] kernel (see the module documentation).
    #[inline(always)]
    pub fn symmetric(&self, kernel: U8U8Kernel, ta: f32, a: &[u8], tb: f32, b: &[u8]) -> f32 {
        let k = kernel(&self.scale2, a, b);
        match self.metric {
            Metric::L2 => ta + tb - 2.0 * k,
            Metric::Cosine | Metric::Dot => self.one_minus_m2 - ta - tb - k,
        }
    }

    /// The decoded vector `x̂` of `codes` (for tests and diagnostics).
    pub fn decode(&self, codes: &[u8]) -> Vec<f32> {
        codes
            .iter()
            .enumerate()
            .map(|(d, &c)| self.min[d] + self.scale[d] * c as f32)
            .collect()
    }

    /// A prepared query's weights `w` (written to `w`, `dim` floats) and constant `c`: the key
    /// to a stored vector with codes `x` and term `t` is `c + t + dot_u8(w, x)`.
    pub fn probe(&self, q: &[f32], w: &mut Vec<f32>) -> f32 {
        w.clear();
        match self.metric {
            Metric::L2 => {
                let mut c = 0.0f32;
                for ((&x, &lo), &s) in q.iter().zip(&self.min).zip(&self.scale) {
                    let a = x - lo;
                    c += a * a;
                    w.push(-2.0 * a * s);
                }
                c
            }
            Metric::Cosine | Metric::Dot => {
                let mut qm = 0.0f32;
                for ((&x, &lo), &s) in q.iter().zip(&self.min).zip(&self.scale) {
                    qm += x * lo;
                    w.push(-x * s);
                }
                1.0 - qm
            }
        }
    }
}

/// `Σ w_d · c_d`: the kernel of a quantized distance. Both slices have the same length
/// (callers check it).
pub type U8Kernel = fn(&[f32], &[u8]) -> f32;

/// The fastest [`dot_u8`] for this CPU, detected once (`TWINDEX_NO_SIMD` forces the portable
/// loop).
pub fn dot_u8_kernel() -> U8Kernel {
    static K: OnceLock<U8Kernel> = OnceLock::new();
    *K.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("TWINDEX_NO_SIMD").is_none() {
                if crate::cpu::has_avx512f() {
                    return x86::dot_u8_avx512;
                }
                if crate::cpu::has_avx2_fma() {
                    return x86::dot_u8_avx2;
                }
            }
        }
        dot_u8_portable
    })
}

/// `Σ w_d · c_d` over integers: the walk's kernel, with the query's weights rounded to 16 bits
/// ([`quantize_weights`]). Exact for dimensions up to [`I16_MAX_DIM`].
pub type I16Kernel = fn(&[i16], &[u8]) -> i64;

/// The largest dimension [`I16Kernel`]s take: a 32-bit lane of the AVX2 kernel sums `dim / 8`
/// products of at most `32767 · 255` (AVX-512: `dim / 16`), below 2^31 up to here; the lanes
/// are added in `i64`.
pub const I16_MAX_DIM: usize = 2000;

/// Round `w` to `i16` with one scale (the largest magnitude maps to 32767); returns the scale
/// (`w_d ≈ scale · out_d`, each within `scale / 2`).
pub fn quantize_weights(w: &[f32], out: &mut Vec<i16>) -> f32 {
    let m = w.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    out.clear();
    if m == 0.0 || !m.is_finite() {
        out.resize(w.len(), 0);
        return 0.0;
    }
    let scale = m / 32767.0;
    out.extend(w.iter().map(|&x| round_to_i16(x / scale)));
    scale
}

/// `x` rounded half away from zero, then clamped to `0..=255`. The float-to-integer cast
/// truncates (SSE2's `cvttps2dq`, vectorisable), where `f32::round` is a libm call on the
/// baseline target (it needs SSE4.1): a query's weights are rounded on every search.
#[inline(always)]
fn round_to_u8(x: f32) -> u8 {
    ((x + 0.5f32.copysign(x)) as i32).clamp(0, 255) as u8
}

/// `x` rounded half away from zero, then clamped to `-32767..=32767` (see [`round_to_u8`]).
#[inline(always)]
fn round_to_i16(x: f32) -> i16 {
    ((x + 0.5f32.copysign(x)) as i32).clamp(-32767, 32767) as i16
}

/// The fastest [`I16Kernel`] for this CPU, detected once.
pub fn dot_i16_u8_kernel() -> I16Kernel {
    static K: OnceLock<I16Kernel> = OnceLock::new();
    *K.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("TWINDEX_NO_SIMD").is_none() {
                if crate::cpu::has_avx512bw() {
                    return x86::dot_i16_u8_avx512;
                }
                if crate::cpu::has_avx2() {
                    return x86::dot_i16_u8_avx2;
                }
            }
        }
        dot_i16_u8_portable
    })
}

/// Every [`I16Kernel`] this CPU can run, with its name.
pub fn dot_i16_u8_kernels() -> Vec<(&'static str, I16Kernel)> {
    let mut v: Vec<(&'static str, I16Kernel)> = vec![("portable", dot_i16_u8_portable)];
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::has_avx2() {
            v.push(("avx2", x86::dot_i16_u8_avx2));
        }
        if crate::cpu::has_avx512bw() {
            v.push(("avx512bw", x86::dot_i16_u8_avx512));
        }
    }
    v
}

/// The oracle of [`I16Kernel`]: a sequential loop in `i64`.
pub fn dot_i16_u8_scalar(w: &[i16], c: &[u8]) -> i64 {
    w.iter().zip(c).map(|(&a, &b)| a as i64 * b as i64).sum()
}

/// Portable [`I16Kernel`] (the compiler vectorises the `i32` sum).
pub fn dot_i16_u8_portable(w: &[i16], c: &[u8]) -> i64 {
    w.iter()
        .zip(c)
        .fold(0i64, |s, (&a, &b)| s + (a as i32 * b as i32) as i64)
}

/// `Σ w_d · a_d · b_d`: the kernel of a distance between two codes. The slices have the same
/// length (callers check it).
pub type U8U8Kernel = fn(&[f32], &[u8], &[u8]) -> f32;

/// The fastest [`dot_u8_u8`] for this CPU, detected once.
pub fn dot_u8_u8_kernel() -> U8U8Kernel {
    static K: OnceLock<U8U8Kernel> = OnceLock::new();
    *K.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("TWINDEX_NO_SIMD").is_none() {
                if crate::cpu::has_avx512f() {
                    return x86::dot_u8_u8_avx512;
                }
                if crate::cpu::has_avx2_fma() {
                    return x86::dot_u8_u8_avx2;
                }
            }
        }
        dot_u8_u8_portable
    })
}

/// `Σ w_d · a_d · b_d` with the fastest kernel for this CPU.
#[inline]
pub fn dot_u8_u8(w: &[f32], a: &[u8], b: &[u8]) -> f32 {
    dot_u8_u8_kernel()(w, a, b)
}

/// Every [`dot_u8_u8`] kernel this CPU can run, with its name.
pub fn dot_u8_u8_kernels() -> Vec<(&'static str, U8U8Kernel)> {
    let mut v: Vec<(&'static str, U8U8Kernel)> = vec![("portable", dot_u8_u8_portable)];
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::has_avx2_fma() {
            v.push(("avx2+fma", x86::dot_u8_u8_avx2));
        }
        if crate::cpu::has_avx512f() {
            v.push(("avx512f", x86::dot_u8_u8_avx512));
        }
    }
    v
}

/// The oracle of [`dot_u8_u8`]: a sequential loop in `f64`.
pub fn dot_u8_u8_scalar(w: &[f32], a: &[u8], b: &[u8]) -> f32 {
    w.iter()
        .zip(a.iter().zip(b))
        .map(|(&w, (&x, &y))| w as f64 * x as f64 * y as f64)
        .sum::<f64>() as f32
}

/// Portable [`dot_u8_u8`]: eight partial sums.
pub fn dot_u8_u8_portable(w: &[f32], a: &[u8], b: &[u8]) -> f32 {
    let n = w.len().min(a.len()).min(b.len());
    let mut acc = [0.0f32; 8];
    let mut i = 0;
    while i + 8 <= n {
        for j in 0..8 {
            acc[j] += w[i + j] * (a[i + j] as u32 * b[i + j] as u32) as f32;
        }
        i += 8;
    }
    let mut s: f32 = acc.iter().sum();
    while i < n {
        s += w[i] * (a[i] as u32 * b[i] as u32) as f32;
        i += 1;
    }
    s
}

/// `Σ w_d · c_d` with the fastest kernel for this CPU.
#[inline]
pub fn dot_u8(w: &[f32], c: &[u8]) -> f32 {
    dot_u8_kernel()(w, c)
}

/// Every [`dot_u8`] kernel this CPU can run, with its name (for the tests against the oracle).
pub fn dot_u8_kernels() -> Vec<(&'static str, U8Kernel)> {
    let mut v: Vec<(&'static str, U8Kernel)> = vec![("portable", dot_u8_portable)];
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::has_avx2_fma() {
            v.push(("avx2+fma", x86::dot_u8_avx2));
        }
        if crate::cpu::has_avx512f() {
            v.push(("avx512f", x86::dot_u8_avx512));
        }
    }
    v
}

/// The oracle: a plain sequential loop in `f64`.
pub fn dot_u8_scalar(w: &[f32], c: &[u8]) -> f32 {
    w.iter()
        .zip(c)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum::<f64>() as f32
}

/// Portable version: eight partial sums, which the compiler vectorises with the baseline
/// instruction set.
pub fn dot_u8_portable(w: &[f32], c: &[u8]) -> f32 {
    let n = w.len().min(c.len());
    let mut acc = [0.0f32; 8];
    let mut wc = w[..n].chunks_exact(8);
    let mut cc = c[..n].chunks_exact(8);
    for (a, b) in (&mut wc).zip(&mut cc) {
        for j in 0..8 {
            acc[j] += a[j] * b[j] as f32;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (a, &b) in wc.remainder().iter().zip(cc.remainder()) {
        s += a * b as f32;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub fn dot_u8_avx2(w: &[f32], c: &[u8]) -> f32 {
        let n = w.len().min(c.len());
        // SAFETY: chosen only after avx2 and fma were detected; reads stay below n.
        unsafe { avx2(w.as_ptr(), c.as_ptr(), n) }
    }

    pub fn dot_u8_avx512(w: &[f32], c: &[u8]) -> f32 {
        let n = w.len().min(c.len());
        // SAFETY: chosen only after avx512f was detected; reads stay below n.
        unsafe { avx512(w.as_ptr(), c.as_ptr(), n) }
    }

    pub fn dot_i16_u8_avx2(w: &[i16], c: &[u8]) -> i64 {
        let n = w.len().min(c.len());
        // SAFETY: chosen only after avx2 was detected; reads stay below n.
        unsafe { avx2_i16(w.as_ptr(), c.as_ptr(), n) }
    }

    pub fn dot_i16_u8_avx512(w: &[i16], c: &[u8]) -> i64 {
        let n = w.len().min(c.len());
        // SAFETY: chosen only after avx512bw was detected; reads stay below n.
        unsafe { avx512_i16(w.as_ptr(), c.as_ptr(), n) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn avx2_i16(w: *const i16, c: *const u8, n: usize) -> i64 {
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i + 16 <= n {
            let x = _mm256_cvtepu8_epi16(_mm_loadu_si128(c.add(i) as *const __m128i));
            let y = _mm256_loadu_si256(w.add(i) as *const __m256i);
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(y, x));
            i += 16;
        }
        let mut lanes = [0i32; 8];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc);
        let mut sum: i64 = lanes.iter().map(|&x| x as i64).sum();
        while i < n {
            sum += (*w.add(i) as i32 * *c.add(i) as i32) as i64;
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn avx512_i16(w: *const i16, c: *const u8, n: usize) -> i64 {
        let mut acc = _mm512_setzero_si512();
        let mut i = 0;
        while i + 32 <= n {
            let x = _mm512_cvtepu8_epi16(_mm256_loadu_si256(c.add(i) as *const __m256i));
            let y = _mm512_loadu_si512(w.add(i) as *const _);
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(y, x));
            i += 32;
        }
        let lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc));
        let hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc, 1));
        let mut sum = _mm512_reduce_add_epi64(_mm512_add_epi64(lo, hi));
        while i < n {
            sum += (*w.add(i) as i32 * *c.add(i) as i32) as i64;
            i += 1;
        }
        sum
    }

    pub fn dot_u8_u8_avx2(w: &[f32], a: &[u8], b: &[u8]) -> f32 {
        let n = w.len().min(a.len()).min(b.len());
        // SAFETY: chosen only after avx2 and fma were detected; reads stay below n.
        unsafe { avx2_u8u8(w.as_ptr(), a.as_ptr(), b.as_ptr(), n) }
    }

    pub fn dot_u8_u8_avx512(w: &[f32], a: &[u8], b: &[u8]) -> f32 {
        let n = w.len().min(a.len()).min(b.len());
        // SAFETY: chosen only after avx512f was detected; reads stay below n.
        unsafe { avx512_u8u8(w.as_ptr(), a.as_ptr(), b.as_ptr(), n) }
    }

    // The products a·b are below 2^16: multiplied as 32-bit integers, converted to f32 exactly.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_u8u8(w: *const f32, a: *const u8, b: *const u8, n: usize) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(a.add(i) as *const __m128i));
            let y = _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.add(i) as *const __m128i));
            let p = _mm256_cvtepi32_ps(_mm256_mullo_epi32(x, y));
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(i)), p, acc);
            i += 8;
        }
        let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        let mut sum = _mm_cvtss_f32(s);
        while i < n {
            sum += *w.add(i) * (*a.add(i) as u32 * *b.add(i) as u32) as f32;
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512_u8u8(w: *const f32, a: *const u8, b: *const u8, n: usize) -> f32 {
        let mut acc = _mm512_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let x = _mm512_cvtepu8_epi32(_mm_loadu_si128(a.add(i) as *const __m128i));
            let y = _mm512_cvtepu8_epi32(_mm_loadu_si128(b.add(i) as *const __m128i));
            let p = _mm512_cvtepi32_ps(_mm512_mullo_epi32(x, y));
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(i)), p, acc);
            i += 16;
        }
        let mut sum = _mm512_reduce_add_ps(acc);
        while i < n {
            sum += *w.add(i) * (*a.add(i) as u32 * *b.add(i) as u32) as f32;
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(w: *const f32, c: *const u8, n: usize) -> f32 {
        let mut a0 = _mm256_setzero_ps();
        let mut a1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            let b = _mm_loadu_si128(c.add(i) as *const __m128i);
            let lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
            let hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(b, 8)));
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(i)), lo, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(i + 8)), hi, a1);
            i += 16;
        }
        let v = _mm256_add_ps(a0, a1);
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        let mut sum = _mm_cvtss_f32(s);
        while i < n {
            sum += *w.add(i) * *c.add(i) as f32;
            i += 1;
        }
        sum
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(w: *const f32, c: *const u8, n: usize) -> f32 {
        let mut a0 = _mm512_setzero_ps();
        let mut a1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            let b0 = _mm_loadu_si128(c.add(i) as *const __m128i);
            let b1 = _mm_loadu_si128(c.add(i + 16) as *const __m128i);
            let x0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b0));
            let x1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b1));
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(i)), x0, a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(i + 16)), x1, a1);
            i += 32;
        }
        if i + 16 <= n {
            let b0 = _mm_loadu_si128(c.add(i) as *const __m128i);
            let x0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b0));
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w.add(i)), x0, a0);
            i += 16;
        }
        let mut sum = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        while i < n {
            sum += *w.add(i) * *c.add(i) as f32;
            i += 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {

    /// The cast-based rounding equals `f32::round` then clamping, exact halves included.
    #[test]
    fn rounding_matches_std() {
        let mut x = -40000.0f32;
        while x < 40000.0 {
            for v in [x, x.floor() + 0.5, -(x.floor() + 0.5)] {
                assert_eq!(
                    round_to_i16(v),
                    v.round().clamp(-32767.0, 32767.0) as i16,
                    "{v}"
                );
                assert_eq!(
                    round_to_u8(v / 100.0),
                    (v / 100.0).round().clamp(0.0, 255.0) as u8
                );
            }
            x += 0.37;
        }
    }
    use super::*;

    /// The metric's ordering key between `a` and `b`, in f64: squared distance for l2,
    /// `1 - a.b` otherwise.
    fn key_f64(metric: Metric, a: &[f32], b: &[f32]) -> f64 {
        let it = a.iter().zip(b).map(|(&a, &b)| (a as f64, b as f64));
        match metric {
            Metric::L2 => it.map(|(a, b)| (a - b).powi(2)).sum(),
            _ => 1.0 - it.map(|(a, b)| a * b).sum::<f64>(),
        }
    }
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn kernels_match_the_f64_oracle() {
        let seed = 15;
        println!("seed {seed}");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for n in [
            0usize, 1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 100, 384, 784, 1000,
        ] {
            let w: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let c: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let want = dot_u8_scalar(&w, &c);
            // Each term is below 255 in size: the f32 sums may differ from the f64 one by
            // rounding only, about n · 255 · 2^-24 at worst.
            let tol = 1e-5 * (1.0 + n as f32 * 255.0);
            for (name, k) in dot_u8_kernels() {
                let got = k(&w, &c);
                assert!((got - want).abs() <= tol, "{name} n={n}: {got} vs {want}");
            }
            let mut w16 = Vec::new();
            let ws = quantize_weights(&w, &mut w16);
            for (d, (&a, &b)) in w.iter().zip(&w16).enumerate() {
                assert!((a - ws * b as f32).abs() <= ws * 0.5 + 1e-7, "weight {d}");
            }
            let extreme: Vec<i16> = (0..n)
                .map(|d| if d % 3 == 0 { -32767 } else { 32767 })
                .collect();
            let full = vec![255u8; n];
            for (ww, cc) in [(&w16, &c), (&extreme, &full)] {
                let want = dot_i16_u8_scalar(ww, cc);
                for (name, k) in dot_i16_u8_kernels() {
                    assert_eq!(k(ww, cc), want, "{name} i16 n={n}");
                }
            }
            let c2: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let want = dot_u8_u8_scalar(&w, &c, &c2);
            let tol = 1e-5 * (1.0 + n as f32 * 65025.0);
            for (name, k) in dot_u8_u8_kernels() {
                let got = k(&w, &c, &c2);
                assert!(
                    (got - want).abs() <= tol,
                    "{name} u8u8 n={n}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn asymmetric_key_equals_the_key_to_the_decoded_vector() {
        let seed = 16;
        println!("seed {seed}");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dim = 37;
        let data: Vec<f32> = (0..50 * dim)
            .map(|_| rng.random_range(-3.0f32..5.0))
            .collect();
        for metric in [Metric::L2, Metric::Dot, Metric::Cosine] {
            let sq = Sq8::train(metric, dim, &data).unwrap();
            let mut codes = vec![0u8; dim];
            let mut w = Vec::new();
            let q: Vec<f32> = (0..dim).map(|_| rng.random_range(-3.0f32..5.0)).collect();
            for row in data.chunks_exact(dim) {
                let t = sq.encode(row, &mut codes);
                let x = sq.decode(&codes);
                // Decoding is within half a step of the original in every dimension.
                for d in 0..dim {
                    assert!((x[d] - row[d]).abs() <= sq.scale()[d] * 0.5 + 1e-5);
                }
                let c = sq.probe(&q, &mut w);
                let got = c + sq.term_weight() * t + dot_u8_scalar(&w, &codes);
                // Oracle: the metric's key between q and the decoded vector, in f64.
                let want = key_f64(metric, &q, &x);
                assert!(
                    (got as f64 - want).abs() <= 1e-3 * (1.0 + want.abs()),
                    "{metric:?}: {got} vs {want}"
                );
                // Symmetric: against the first row's decoded vector.
                let mut c0 = vec![0u8; dim];
                let t0 = sq.encode(&data[..dim], &mut c0);
                let x0 = sq.decode(&c0);
                let got = sq.symmetric(dot_u8_u8_scalar, t, &codes, t0, &c0);
                let want = key_f64(metric, &x0, &x);
                assert!(
                    (got as f64 - want).abs() <= 1e-3 * (1.0 + want.abs()),
                    "{metric:?} symmetric: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn constant_dimension_and_out_of_range_values() {
        let sq = Sq8::train(Metric::L2, 2, &[1.0, 0.0, 1.0, 10.0]).unwrap();
        assert_eq!(sq.scale()[0], 0.0);
        let mut codes = [0u8; 2];
        sq.encode(&[7.0, 20.0], &mut codes);
        assert_eq!(codes, [0, 255]);
        sq.encode(&[1.0, -5.0], &mut codes);
        assert_eq!(codes, [0, 0]);
        assert!(Sq8::from_parts(Metric::L2, vec![0.0], vec![-1.0]).is_err());
        assert!("sq4".parse::<Quantize>().is_err());
        assert_eq!("sq8".parse::<Quantize>().unwrap(), Quantize::Sq8);
    }
}
