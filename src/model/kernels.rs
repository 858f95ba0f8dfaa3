//! Dense kernels for the inference-only BERT forward ([`super::fastbert`]): a linear layer
//! `y = x Wᵀ + b` (optionally followed by erf GELU) with its weights packed once at load.
//!
//! Three implementations, picked at run time from the CPU's features:
//!
//! - [`Precision::Bf16`] on AVX512-BF16: weights rounded to bfloat16 (round to nearest even),
//!   activations rounded to bfloat16 on entry to each linear layer, products accumulated in
//!   float32 with `vdpbf16ps`. About twice the float32 kernel's arithmetic per cycle.
//! - [`Precision::F32`] on AVX-512F: float32 register-blocked micro-kernel (6 rows x 64
//!   columns of accumulators), weights packed in panels of 64 columns.
//! - anything else: the `gemm` crate (float32) and a scalar epilogue.
//!
//! Each is tested against [`linear_reference`], a float64 loop.

/// Columns per packed weight panel (four AVX-512 vectors of float32).
const NR: usize = 64;
/// Rows per micro-kernel call (6 x 4 accumulators + 4 weight vectors + 1 broadcast <= 32).
const MR: usize = 6;
/// Rows of activations per outer block (kept in L2 while every weight panel passes).
const MC: usize = 48;
/// Depth per block for float32: a 128 x 64 weight micro-panel is 32 KiB (fits L1d).
const KC_F32: usize = 128;
/// Depth per block for bfloat16 (even): a 256 x 64 micro-panel is also 32 KiB.
const KC_BF16: usize = 256;

/// Arithmetic of the linear layers (everything else runs in float32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// float32 weights and activations: the reference, within float rounding of candle.
    F32,
    /// bfloat16 weights and layer inputs, float32 accumulation (AVX512-BF16 only; elsewhere
    /// the layer falls back to float32).
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(crate::error::Error::InvalidArgument(format!(
                "precision {s:?}: expected f32 or bf16"
            ))),
        }
    }
}

/// Which kernel this CPU runs for `want` (the precision actually used).
pub fn effective_precision(want: Precision) -> Precision {
    match want {
        Precision::Bf16 if has_bf16() => Precision::Bf16,
        _ => Precision::F32,
    }
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn has_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx512() && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Round a float32 to bfloat16 bits, to nearest even (as `vcvtneps2bf16`; NaN stays NaN).
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// The float32 value of bfloat16 bits.
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// erf with a rational approximation on [-4, 4] (|error| < 1e-6; outside, erf is ±1 in
/// float32). The same coefficients as the vector version, so all paths agree.
#[inline(always)]
pub fn erf_approx(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(ERF_A[6], ERF_A[5]);
    for &c in ERF_A[..5].iter().rev() {
        p = x2.mul_add(p, c);
    }
    p *= x;
    let mut q = x2.mul_add(ERF_B[4], ERF_B[3]);
    for &c in ERF_B[..3].iter().rev() {
        q = x2.mul_add(q, c);
    }
    p / q
}

/// Numerator coefficients (odd powers 1, 3, ..., 13) of the erf approximation (Eigen's).
const ERF_A: [f32; 7] = [
    -1.609_603_3e-2,
    -2.954_6e-3,
    -7.349_906_3e-4,
    -5.692_506_4e-5,
    -2.101_024e-6,
    2.770_681_4e-8,
    -2.726_142_3e-10,
];
/// Denominator coefficients (even powers 0, 2, ..., 8).
const ERF_B: [f32; 5] = [
    -1.426_474e-2,
    -7.373_329e-3,
    -1.682_827e-3,
    -2.133_740_6e-4,
    -1.456_607_2e-5,
];

/// GELU as BERT defines it: `x/2 (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// A linear layer `y = x Wᵀ + b` with `W` (`n x k`, row-major as in PyTorch) packed for one
/// kernel.
pub struct Linear {
    n: usize,
    k: usize,
    bias: Vec<f32>,
    packed: Packed,
}

enum Packed {
    /// `[panel][k][NR]` float32, zero-padded to whole panels.
    F32(Vec<f32>),
    /// `[panel][k2 / 2][NR][2]` bfloat16 bits (`k2` = k rounded up to even), zero-padded.
    Bf16 { data: Vec<u16>, k2: usize },
    /// `W` as given (`n x k`), for the `gemm` crate.
    Plain(Vec<f32>),
}

impl std::fmt::Debug for Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linear")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("precision", &self.precision())
            .finish_non_exhaustive()
    }
}

impl Linear {
    /// Pack `w` (`n x k` row-major) and `bias` (`n`) for `precision` on this CPU (see
    /// [`effective_precision`]).
    pub fn new(w: &[f32], bias: Vec<f32>, n: usize, k: usize, precision: Precision) -> Self {
        assert_eq!(w.len(), n * k, "weight is not {n} x {k}");
        assert_eq!(bias.len(), n, "bias is not {n}");
        let panels = n.div_ceil(NR);
        let packed = if effective_precision(precision) == Precision::Bf16 {
            let k2 = k.next_multiple_of(2);
            let mut data = vec![0u16; panels * k2 * NR];
            for col in 0..n {
                let (p, j) = (col / NR, col % NR);
                for kk in 0..k {
                    let at = p * k2 * NR + (kk / 2) * NR * 2 + j * 2 + kk % 2;
                    data[at] = f32_to_bf16(w[col * k + kk]);
                }
            }
            Packed::Bf16 { data, k2 }
        } else if has_avx512() {
            let mut data = vec![0f32; panels * k * NR];
            for col in 0..n {
                let (p, j) = (col / NR, col % NR);
                for kk in 0..k {
                    data[p * k * NR + kk * NR + j] = w[col * k + kk];
                }
            }
            Packed::F32(data)
        } else {
            Packed::Plain(w.to_vec())
        };
        Linear { n, k, bias, packed }
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The arithmetic this layer runs in.
    pub fn precision(&self) -> Precision {
        match self.packed {
            Packed::Bf16 { .. } => Precision::Bf16,
            _ => Precision::F32,
        }
    }

    /// `y = x Wᵀ + b` (then GELU if `gelu`) for `m` rows: `x` is `m x k`, `y` is `m x n`, both
    /// row-major. `scratch` holds the bfloat16 copy of `x` (reused across calls).
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32], gelu: bool, scratch: &mut Vec<u16>) {
        let (n, k) = (self.n, self.k);
        assert!(
            x.len() >= m * k && y.len() >= m * n,
            "linear: buffers too small"
        );
        if m == 0 {
            return;
        }
        match &self.packed {
            #[cfg(target_arch = "x86_64")]
            Packed::F32(w) => {
                // SAFETY: the constructor packed `w` only when AVX-512F was detected; sizes are
                // checked above and the packing covers whole panels.
                unsafe { avx512::gemm_f32(m, n, k, x, w, &self.bias, y, gelu) }
            }
            #[cfg(target_arch = "x86_64")]
            Packed::Bf16 { data, k2 } => {
                scratch.clear();
                scratch.resize(m * k2, 0);
                // SAFETY: packed only when AVX512-BF16 was detected; sizes as above.
                unsafe {
                    avx512::to_bf16_rows(x, m, k, *k2, scratch);
                    avx512::gemm_bf16(m, n, *k2, scratch, data, &self.bias, y, gelu)
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Packed::F32(_) | Packed::Bf16 { .. } => unreachable!("packed without AVX-512"),
            Packed::Plain(w) => {
                let _ = scratch;
                // SAFETY: x is m x k (row stride k), w is n x k so wᵀ is k x n with row stride 1
                // and column stride k, y is m x n (row stride n); all sizes checked above.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        y.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        x.as_ptr(),
                        1,
                        k as isize,
                        w.as_ptr(),
                        k as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                };
                for row in y[..m * n].chunks_exact_mut(n) {
                    for (v, b) in row.iter_mut().zip(&self.bias) {
                        *v += b;
                        if gelu {
                            *v = self::gelu(*v);
                        }
                    }
                }
            }
        }
    }
}

/// The oracle: `y = x Wᵀ + b` (then GELU) in float64, with the inputs first rounded to
/// bfloat16 when `precision` is [`Precision::Bf16`] (as the fast kernel sees them).
#[allow(clippy::too_many_arguments)]
pub fn linear_reference(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    m: usize,
    n: usize,
    k: usize,
    gelu: bool,
    precision: Precision,
) -> Vec<f32> {
    let q = |v: f32| match precision {
        Precision::F32 => v as f64,
        Precision::Bf16 => bf16_to_f32(f32_to_bf16(v)) as f64,
    };
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = bias[j] as f64;
            for kk in 0..k {
                s += q(x[i * k + kk]) * q(w[j * k + kk]);
            }
            let s = if gelu {
                0.5 * s * (1.0 + candle_core::cpu::erf::erf_f64(s / std::f64::consts::SQRT_2))
            } else {
                s
            };
            y[i * n + j] = s as f32;
        }
    }
    y
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{ERF_A, ERF_B, KC_BF16, KC_F32, MC, MR, NR};
    use std::arch::x86_64::*;

    /// Lane masks of the four column vectors of a panel holding `ncols` valid columns.
    #[inline(always)]
    fn col_masks(ncols: usize) -> [__mmask16; 4] {
        let mut m = [0; 4];
        for (j, v) in m.iter_mut().enumerate() {
            let lanes = ncols.saturating_sub(16 * j).min(16);
            *v = if lanes == 16 {
                0xffff
            } else {
                ((1u32 << lanes) - 1) as u16
            };
        }
        m
    }

    /// GELU on 16 lanes, the same rational erf as [`super::erf_approx`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn gelu16(x: __m512) -> __m512 {
        let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let z = _mm512_min_ps(_mm512_max_ps(z, _mm512_set1_ps(-4.0)), _mm512_set1_ps(4.0));
        let z2 = _mm512_mul_ps(z, z);
        let mut p = _mm512_fmadd_ps(z2, _mm512_set1_ps(ERF_A[6]), _mm512_set1_ps(ERF_A[5]));
        for &c in ERF_A[..5].iter().rev() {
            p = _mm512_fmadd_ps(z2, p, _mm512_set1_ps(c));
        }
        p = _mm512_mul_ps(z, p);
        let mut q = _mm512_fmadd_ps(z2, _mm512_set1_ps(ERF_B[4]), _mm512_set1_ps(ERF_B[3]));
        for &c in ERF_B[..3].iter().rev() {
            q = _mm512_fmadd_ps(z2, q, _mm512_set1_ps(c));
        }
        let erf = _mm512_div_ps(p, q);
        let half_x = _mm512_mul_ps(x, _mm512_set1_ps(0.5));
        _mm512_fmadd_ps(half_x, erf, half_x)
    }

    /// Start the accumulators of an `R x 64` tile: from the bias on the first depth block,
    /// else from what the previous block stored in `c`.
    #[inline(always)]
    unsafe fn load_acc<const R: usize>(
        c: *mut f32,
        ldc: usize,
        bias: *const f32,
        masks: &[__mmask16; 4],
        first: bool,
    ) -> [[__m512; 4]; R] {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        if first {
            for j in 0..4 {
                let b = _mm512_maskz_loadu_ps(masks[j], bias.add(16 * j));
                for row in acc.iter_mut() {
                    row[j] = b;
                }
            }
        } else {
            for (r, row) in acc.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(masks[j], c.add(r * ldc + 16 * j));
                }
            }
        }
        acc
    }

    /// Store an `R x 64` tile (GELU first when this is the last depth block and `gelu`).
    #[inline(always)]
    unsafe fn store_acc<const R: usize>(
        mut acc: [[__m512; 4]; R],
        c: *mut f32,
        ldc: usize,
        masks: &[__mmask16; 4],
        gelu: bool,
    ) {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                if gelu {
                    *v = gelu16(*v);
                }
                _mm512_mask_storeu_ps(c.add(r * ldc + 16 * j), masks[j], *v);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_f32<const R: usize>(
        a: *const f32,
        lda: usize,
        b: *const f32,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        bias: *const f32,
        ncols: usize,
        first: bool,
        last_gelu: bool,
    ) {
        let masks = col_masks(ncols);
        let mut acc = load_acc::<R>(c, ldc, bias, &masks, first);
        for kk in 0..kc {
            let bp = b.add(kk * NR);
            let bv = [
                _mm512_loadu_ps(bp),
                _mm512_loadu_ps(bp.add(16)),
                _mm512_loadu_ps(bp.add(32)),
                _mm512_loadu_ps(bp.add(48)),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * lda + kk));
                for j in 0..4 {
                    row[j] = _mm512_fmadd_ps(av, bv[j], row[j]);
                }
            }
        }
        store_acc::<R>(acc, c, ldc, &masks, last_gelu);
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn kernel_bf16<const R: usize>(
        a: *const u16,
        lda: usize,
        b: *const u16,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        bias: *const f32,
        ncols: usize,
        first: bool,
        last_gelu: bool,
    ) {
        let masks = col_masks(ncols);
        let mut acc = load_acc::<R>(c, ldc, bias, &masks, first);
        for kp in 0..kc / 2 {
            let bp = b.add(kp * NR * 2) as *const __m512i;
            let bv: [__m512bh; 4] = [
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp)),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.add(1))),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.add(2))),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.add(3))),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let pair = (a.add(r * lda + 2 * kp) as *const i32).read_unaligned();
                let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair));
                for j in 0..4 {
                    row[j] = _mm512_dpbf16_ps(row[j], av, bv[j]);
                }
            }
        }
        store_acc::<R>(acc, c, ldc, &masks, last_gelu);
    }

    /// `y (m x n) = x (m x k) Wᵀ + bias`, W packed `[panel][k][NR]`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm_f32(
        m: usize,
        n: usize,
        k: usize,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        y: &mut [f32],
        gelu: bool,
    ) {
        let panels = n.div_ceil(NR);
        debug_assert!(w.len() >= panels * k * NR);
        for i0 in (0..m).step_by(MC) {
            let mc = MC.min(m - i0);
            for k0 in (0..k).step_by(KC_F32) {
                let kc = KC_F32.min(k - k0);
                let (first, last) = (k0 == 0, k0 + kc == k);
                for p in 0..panels {
                    let b = w.as_ptr().add(p * k * NR + k0 * NR);
                    let ncols = NR.min(n - p * NR);
                    let bias = bias.as_ptr().add(p * NR);
                    let mut i = 0;
                    while i < mc {
                        let r = MR.min(mc - i);
                        let a = x.as_ptr().add((i0 + i) * k + k0);
                        let c = y.as_mut_ptr().add((i0 + i) * n + p * NR);
                        let g = last && gelu;
                        match r {
                            6 => kernel_f32::<6>(a, k, b, kc, c, n, bias, ncols, first, g),
                            5 => kernel_f32::<5>(a, k, b, kc, c, n, bias, ncols, first, g),
                            4 => kernel_f32::<4>(a, k, b, kc, c, n, bias, ncols, first, g),
                            3 => kernel_f32::<3>(a, k, b, kc, c, n, bias, ncols, first, g),
                            2 => kernel_f32::<2>(a, k, b, kc, c, n, bias, ncols, first, g),
                            _ => kernel_f32::<1>(a, k, b, kc, c, n, bias, ncols, first, g),
                        }
                        i += r;
                    }
                }
            }
        }
    }

    /// `y (m x n) = x (m x k2, bfloat16) Wᵀ + bias`, W packed `[panel][k2/2][NR][2]`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn gemm_bf16(
        m: usize,
        n: usize,
        k2: usize,
        x: &[u16],
        w: &[u16],
        bias: &[f32],
        y: &mut [f32],
        gelu: bool,
    ) {
        let panels = n.div_ceil(NR);
        debug_assert!(w.len() >= panels * k2 * NR && x.len() >= m * k2);
        for i0 in (0..m).step_by(MC) {
            let mc = MC.min(m - i0);
            for k0 in (0..k2).step_by(KC_BF16) {
                let kc = KC_BF16.min(k2 - k0);
                let (first, last) = (k0 == 0, k0 + kc == k2);
                for p in 0..panels {
                    let b = w.as_ptr().add(p * k2 * NR + k0 * NR);
                    let ncols = NR.min(n - p * NR);
                    let bias = bias.as_ptr().add(p * NR);
                    let mut i = 0;
                    while i < mc {
                        let r = MR.min(mc - i);
                        let a = x.as_ptr().add((i0 + i) * k2 + k0);
                        let c = y.as_mut_ptr().add((i0 + i) * n + p * NR);
                        let g = last && gelu;
                        match r {
                            6 => kernel_bf16::<6>(a, k2, b, kc, c, n, bias, ncols, first, g),
                            5 => kernel_bf16::<5>(a, k2, b, kc, c, n, bias, ncols, first, g),
                            4 => kernel_bf16::<4>(a, k2, b, kc, c, n, bias, ncols, first, g),
                            3 => kernel_bf16::<3>(a, k2, b, kc, c, n, bias, ncols, first, g),
                            2 => kernel_bf16::<2>(a, k2, b, kc, c, n, bias, ncols, first, g),
                            _ => kernel_bf16::<1>(a, k2, b, kc, c, n, bias, ncols, first, g),
                        }
                        i += r;
                    }
                }
            }
        }
    }

    /// Round the rows of `x` (`m x k`) to bfloat16 into `out` (`m x k2`, zero-padded).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn to_bf16_rows(x: &[f32], m: usize, k: usize, k2: usize, out: &mut [u16]) {
        for i in 0..m {
            let src = &x[i * k..(i + 1) * k];
            let dst = &mut out[i * k2..(i + 1) * k2];
            let mut c = 0;
            while c + 16 <= k {
                let v = _mm512_loadu_ps(src.as_ptr().add(c));
                let h = _mm512_cvtneps_pbh(v);
                _mm256_storeu_si256(
                    dst.as_mut_ptr().add(c) as *mut __m256i,
                    std::mem::transmute::<__m256bh, __m256i>(h),
                );
                c += 16;
            }
            for j in c..k {
                dst[j] = super::f32_to_bf16(src[j]);
            }
            for d in dst[k..].iter_mut() {
                *d = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random fill in [-1, 1) (xorshift), seed printed by the caller.
    fn fill(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn erf_approx_matches_f64_erf() {
        let mut worst = 0f64;
        for i in -6000..=6000 {
            let x = i as f32 * 1e-3;
            let e = candle_core::cpu::erf::erf_f64(x as f64);
            worst = worst.max((erf_approx(x) as f64 - e).abs());
        }
        assert!(worst < 2e-6, "max |erf error| {worst}");
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to even (1.0).
        assert_eq!(f32_to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to even (0x3f82).
        assert_eq!(f32_to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_to_f32(f32_to_bf16(-2.5)), -2.5);
    }

    /// Every kernel this CPU has, on awkward shapes (rows not a multiple of 6 or 48, columns
    /// not a multiple of 64, odd depth, depth over one block), against the float64 oracle.
    #[test]
    fn linear_kernels_match_reference() {
        for &(m, n, k, gelu) in &[
            (1, 1, 1, false),
            (7, 70, 33, true),
            (50, 128, 300, false),
            (13, 200, 513, true),
        ] {
            let seed = (m * 1000 + n * 10 + k) as u64;
            let x = fill(m * k, seed);
            let w = fill(n * k, seed + 1);
            let b = fill(n, seed + 2);
            for precision in [Precision::F32, Precision::Bf16] {
                let lin = Linear::new(&w, b.clone(), n, k, precision);
                let want = linear_reference(&x, &w, &b, m, n, k, gelu, lin.precision());
                let mut got = vec![0f32; m * n];
                lin.forward(&x, m, &mut got, gelu, &mut Vec::new());
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    // float32 accumulation of k terms of size <= 1.
                    let tol = 1e-5 * (k as f32).sqrt() + 1e-5;
                    assert!(
                        (g - e).abs() <= tol,
                        "{:?} m {m} n {n} k {k} seed {seed}: y[{i}] = {g}, want {e}",
                        lin.precision()
                    );
                }
            }
        }
    }
}
