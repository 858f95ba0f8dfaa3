//! Dense kernels for the inference-only BERT forward ([`super::fastbert`]): a linear layer
//! `y = x Wᵀ + b` (optionally followed by erf GELU) with its weights packed once at load.
//!
//! The [`LinearKernel`]s, picked at run time from the CPU's features (fastest first):
//!
//! - [`LinearKernel::Amx`] ([`LinearPrecision::Bf16`]): Intel AMX tiles (`tdpbf16ps`, 16x16 float32
//!   accumulators per tile) through inline assembly; weights rounded to bfloat16 (nearest
//!   even), activations rounded to bfloat16 on entry to each linear layer, float32 sums.
//! - [`LinearKernel::Avx512Bf16`] ([`LinearPrecision::Bf16`]): the same arithmetic with `vdpbf16ps`.
//!   On Sapphire Rapids no faster than float32 (measured: slower), kept for CPUs with
//!   AVX512-BF16 but no AMX.
//! - [`LinearKernel::Avx512F32`] ([`LinearPrecision::F32`]): float32 register-blocked micro-kernel (6 rows
//!   x 64 columns of accumulators), weights packed in panels of 64 columns.
//! - [`LinearKernel::Portable`] ([`LinearPrecision::F32`]): the `gemm` crate and a scalar epilogue.
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
pub enum LinearPrecision {
    /// float32 weights and activations: the reference, within float rounding of candle.
    F32,
    /// bfloat16 weights and layer inputs, float32 accumulation (AVX512-BF16 only; elsewhere
    /// the layer falls back to float32).
    Bf16,
}

impl std::str::FromStr for LinearPrecision {
    type Err = crate::error::Error;
    fn from_str(s: &str) -> crate::error::Result<Self> {
        let choices: [(&[&str], _); 2] = [
            (&["f32", "float32"], LinearPrecision::F32),
            (&["bf16", "bfloat16"], LinearPrecision::Bf16),
        ];
        crate::error::parse_choice("precision", &s.to_ascii_lowercase(), &choices)
    }
}

/// The precision this CPU runs for `want` (bfloat16 needs AMX or AVX512-BF16).
pub fn effective_precision(want: LinearPrecision) -> LinearPrecision {
    LinearKernel::best(want).precision()
}

/// A linear-layer implementation (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinearKernel {
    /// AMX-BF16 tiles.
    Amx,
    /// AVX512-BF16 `vdpbf16ps`.
    Avx512Bf16,
    /// AVX-512F float32.
    Avx512F32,
    /// The `gemm` crate, float32, any CPU.
    Portable,
}

impl LinearKernel {
    /// The arithmetic of this kernel.
    pub fn precision(self) -> LinearPrecision {
        match self {
            LinearKernel::Amx | LinearKernel::Avx512Bf16 => LinearPrecision::Bf16,
            LinearKernel::Avx512F32 | LinearKernel::Portable => LinearPrecision::F32,
        }
    }

    /// Whether this CPU (and OS, for AMX) runs the kernel.
    pub fn available(self) -> bool {
        match self {
            LinearKernel::Amx => has_amx(),
            LinearKernel::Avx512Bf16 => has_bf16(),
            LinearKernel::Avx512F32 => has_avx512(),
            LinearKernel::Portable => true,
        }
    }

    /// The fastest kernel this CPU has for `precision`; float32 when it has no bfloat16 one.
    pub fn best(precision: LinearPrecision) -> LinearKernel {
        let order: &[LinearKernel] = match precision {
            LinearPrecision::Bf16 => &[
                LinearKernel::Amx,
                LinearKernel::Avx512Bf16,
                LinearKernel::Avx512F32,
            ],
            LinearPrecision::F32 => &[LinearKernel::Avx512F32],
        };
        order
            .iter()
            .copied()
            .find(|k| k.available())
            .unwrap_or(LinearKernel::Portable)
    }
}

fn has_avx512() -> bool {
    crate::cpu::has_avx512f()
}

/// AMX-BF16 and AMX-TILE in CPUID, AVX-512F for the epilogue, and (Linux) permission from the
/// kernel to use the tile data state, requested once per process.
fn has_amx() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            if !has_avx512() {
                return false;
            }
            // CPUID leaf 7 exists on every CPU with AVX-512 (checked above).
            let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
            let (amx_bf16, amx_tile) = (edx >> 22 & 1 == 1, edx >> 24 & 1 == 1);
            if !(amx_bf16 && amx_tile) {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: arch_prctl with these arguments only changes which extended states the
            // process may use; failure (old kernel, no AMX) is reported by its return value.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            rc == 0
        })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

fn has_bf16() -> bool {
    crate::cpu::has_avx512bf16()
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
    kernel: LinearKernel,
    packed: Packed,
}

/// 1 KiB, 64-byte aligned: one AMX tile (16 rows of 64 bytes).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Tile([u16; 512]);

/// Reusable buffers of [`Linear::forward`]: the bfloat16 copy of its input.
#[derive(Default)]
pub struct Scratch {
    rows: Vec<u16>,
    tiles: Vec<Tile>,
}

enum Packed {
    /// `[panel][k][NR]` float32, zero-padded to whole panels.
    F32(Vec<f32>),
    /// `[panel][k2 / 2][NR][2]` bfloat16 bits (`k2` = k rounded up to even), zero-padded.
    Bf16 { data: Vec<u16>, k2: usize },
    /// AMX B tiles `[n32 / 16][k32 / 32]`, each `[16 k-pairs][16 columns][2]` bfloat16, where
    /// `n32`, `k32` are n, k rounded up to multiples of 32 (zero-padded).
    Amx { tiles: Vec<Tile>, nkc: usize },
    /// `W` as given (`n x k`), for the `gemm` crate.
    Plain(Vec<f32>),
}

impl std::fmt::Debug for Linear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linear")
            .field("n", &self.n)
            .field("k", &self.k)
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

impl Linear {
    /// Pack `w` (`n x k` row-major) and `bias` (`n`) for the fastest kernel of `precision` on
    /// this CPU ([`LinearKernel::best`]).
    pub fn new(w: &[f32], bias: Vec<f32>, n: usize, k: usize, precision: LinearPrecision) -> Self {
        Self::with_kernel(w, bias, n, k, LinearKernel::best(precision))
    }

    /// Pack for a given kernel. Panics if this CPU lacks it ([`LinearKernel::available`]).
    pub fn with_kernel(
        w: &[f32],
        bias: Vec<f32>,
        n: usize,
        k: usize,
        kernel: LinearKernel,
    ) -> Self {
        assert!(
            kernel.available(),
            "{kernel:?} is not available on this CPU"
        );
        assert_eq!(w.len(), n * k, "weight is not {n} x {k}");
        assert_eq!(bias.len(), n, "bias is not {n}");
        let panels = n.div_ceil(NR);
        let packed = match kernel {
            LinearKernel::Amx => {
                let nkc = k.div_ceil(32);
                let ncb = n.next_multiple_of(32) / 16;
                let mut tiles = vec![Tile([0; 512]); ncb * nkc];
                for col in 0..n {
                    let (cb, c) = (col / 16, col % 16);
                    for kk in 0..k {
                        let (kc, r) = (kk / 32, kk % 32);
                        tiles[cb * nkc + kc].0[(r / 2) * 32 + c * 2 + r % 2] =
                            f32_to_bf16(w[col * k + kk]);
                    }
                }
                Packed::Amx { tiles, nkc }
            }
            LinearKernel::Avx512Bf16 => {
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
            }
            LinearKernel::Avx512F32 => {
                let mut data = vec![0f32; panels * k * NR];
                for col in 0..n {
                    let (p, j) = (col / NR, col % NR);
                    for kk in 0..k {
                        data[p * k * NR + kk * NR + j] = w[col * k + kk];
                    }
                }
                Packed::F32(data)
            }
            LinearKernel::Portable => Packed::Plain(w.to_vec()),
        };
        Linear {
            n,
            k,
            bias,
            kernel,
            packed,
        }
    }

    /// `y = x B + b` with `B` given as a `k x n` row-major matrix (instead of `W = Bᵀ`), for
    /// [`LinearKernel::Avx512F32`]: each panel is a run of `B`'s rows, so packing copies contiguous
    /// slices (the text trainer packs activations and gradients this way every step). `None`
    /// when this CPU lacks AVX-512F.
    pub fn f32_from_kn(b: &[f32], k: usize, n: usize, bias: Vec<f32>) -> Option<Self> {
        if !LinearKernel::Avx512F32.available() {
            return None;
        }
        assert_eq!(b.len(), k * n, "matrix is not {k} x {n}");
        assert_eq!(bias.len(), n, "bias is not {n}");
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        for p in 0..panels {
            let cols = p * NR..n.min((p + 1) * NR);
            let dst = &mut data[p * k * NR..(p + 1) * k * NR];
            for (kk, row) in b.chunks_exact(n).enumerate() {
                dst[kk * NR..kk * NR + cols.len()].copy_from_slice(&row[cols.clone()]);
            }
        }
        Some(Linear {
            n,
            k,
            bias,
            kernel: LinearKernel::Avx512F32,
            packed: Packed::F32(data),
        })
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
    pub fn precision(&self) -> LinearPrecision {
        self.kernel.precision()
    }

    /// The kernel this layer runs.
    pub fn kernel(&self) -> LinearKernel {
        self.kernel
    }

    /// `y = x Wᵀ + b` (then GELU if `gelu`) for `m` rows: `x` is `m x k`, `y` is `m x n`, both
    /// row-major. `scratch` holds the bfloat16 copy of `x` (reused across calls).
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32], gelu: bool, scratch: &mut Scratch) {
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
                unsafe { avx512::gemm_f32((m, n, k), (x, w), &self.bias, y, gelu) }
            }
            #[cfg(target_arch = "x86_64")]
            Packed::Bf16 { data, k2 } => {
                let rows = &mut scratch.rows;
                rows.resize(m * k2, 0);
                // SAFETY: packed only when AVX512-BF16 was detected; sizes as above.
                unsafe {
                    avx512::to_bf16_rows(x, m, k, *k2, rows);
                    avx512::gemm_bf16((m, n, *k2), (rows, data), &self.bias, y, gelu)
                }
            }
            #[cfg(target_arch = "x86_64")]
            Packed::Amx { tiles, nkc } => {
                // Whole 32-row blocks of A tiles; rows past m are zero.
                let a = &mut scratch.tiles;
                a.resize(m.next_multiple_of(32) / 16 * nkc, Tile([0; 512]));
                // SAFETY: packed only when AMX was detected (which implies AVX-512F); the
                // conversion needs AVX512-BF16, else the scalar one runs; sizes as above.
                unsafe {
                    if has_bf16() {
                        avx512::to_bf16_tiles(x, m, k, *nkc, a);
                    } else {
                        to_bf16_tiles_scalar(x, m, k, *nkc, a);
                    }
                    amx::gemm(m, n, *nkc, a, tiles, &self.bias, y, gelu)
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Packed::F32(_) | Packed::Bf16 { .. } | Packed::Amx { .. } => {
                unreachable!("packed without AVX-512")
            }
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

/// `x` (`m x k`) to bfloat16 AMX A tiles `[m32 / 16][nkc]`, each 16 rows x 32 values, rows
/// past `m` and columns past `k` zero.
fn to_bf16_tiles_scalar(x: &[f32], m: usize, k: usize, nkc: usize, out: &mut [Tile]) {
    for i in 0..m.next_multiple_of(32) {
        for kc in 0..nkc {
            let dst = &mut out[(i / 16) * nkc + kc].0[(i % 16) * 32..][..32];
            for (c, d) in dst.iter_mut().enumerate() {
                let kk = kc * 32 + c;
                *d = if i < m && kk < k {
                    f32_to_bf16(x[i * k + kk])
                } else {
                    0
                };
            }
        }
    }
}

/// Multi-head self-attention of each sentence over itself (no mask: the batch is packed,
/// sentence after sentence, `lens` tokens each). `qkv` is `tokens x 3·hidden` (`[q | k | v]`,
/// heads side by side in each), `ctx` receives `tokens x hidden`. `scratch` is reused.
pub fn attention(
    qkv: &[f32],
    ctx: &mut [f32],
    lens: &[usize],
    hidden: usize,
    heads: usize,
    scratch: &mut Vec<f32>,
) {
    let t: usize = lens.iter().sum();
    assert!(qkv.len() >= t * 3 * hidden && ctx.len() >= t * hidden && hidden.is_multiple_of(heads));
    let d = hidden / heads;
    #[cfg(target_arch = "x86_64")]
    if has_avx512() && d.is_multiple_of(16) && d <= 64 {
        // SAFETY: AVX-512F detected; sizes checked above.
        unsafe { avx512::attention(qkv, ctx, lens, hidden, heads, scratch) };
        return;
    }
    attention_reference(qkv, ctx, lens, hidden, heads, scratch);
}

/// [`attention`] in plain loops: the oracle, and the path for CPUs without AVX-512.
pub fn attention_reference(
    qkv: &[f32],
    ctx: &mut [f32],
    lens: &[usize],
    hidden: usize,
    heads: usize,
    scores: &mut Vec<f32>,
) {
    let h = hidden;
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let mut t0 = 0;
    for &len in lens {
        scores.resize(len, 0.0);
        for head in 0..heads {
            let col = head * d;
            for i in 0..len {
                let q = &qkv[(t0 + i) * 3 * h + col..][..d];
                let mut max = f32::NEG_INFINITY;
                for (j, sc) in scores.iter_mut().enumerate() {
                    let k = &qkv[(t0 + j) * 3 * h + h + col..][..d];
                    *sc = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                    max = max.max(*sc);
                }
                let mut sum = 0.0;
                for sc in scores.iter_mut() {
                    *sc = (*sc - max).exp();
                    sum += *sc;
                }
                let inv = 1.0 / sum;
                let out = &mut ctx[(t0 + i) * h + col..][..d];
                out.fill(0.0);
                for (j, &p) in scores.iter().enumerate() {
                    let v = &qkv[(t0 + j) * 3 * h + 2 * h + col..][..d];
                    for (o, x) in out.iter_mut().zip(v) {
                        *o += p * inv * x;
                    }
                }
            }
        }
        t0 += len;
    }
}

/// The oracle: `y = x Wᵀ + b` (then GELU) in float64, with the inputs first rounded to
/// bfloat16 when `precision` is [`LinearPrecision::Bf16`] (as the fast kernel sees them).
#[allow(clippy::too_many_arguments)]
pub fn linear_reference(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    m: usize,
    n: usize,
    k: usize,
    gelu: bool,
    precision: LinearPrecision,
) -> Vec<f32> {
    let q = |v: f32| match precision {
        LinearPrecision::F32 => v as f64,
        LinearPrecision::Bf16 => bf16_to_f32(f32_to_bf16(v)) as f64,
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
    pub(super) unsafe fn gelu16(x: __m512) -> __m512 {
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

    /// One tile of the blocking: `R` rows of `a` (row stride `lda`) times a depth block of
    /// `kc` elements of a packed panel `b`, into `c` (row stride `ldc`), whose `ncols` valid
    /// columns start from `bias` on the first depth block (`first`), else from what the
    /// previous block stored; GELU when this is the last block and the layer has it (`gelu`).
    #[derive(Clone, Copy)]
    struct Tile<T> {
        a: *const T,
        lda: usize,
        b: *const T,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        bias: *const f32,
        ncols: usize,
        first: bool,
        gelu: bool,
    }

    /// Start the accumulators of an `R x 64` tile.
    #[inline(always)]
    unsafe fn load_acc<const R: usize, T>(t: &Tile<T>, masks: &[__mmask16; 4]) -> [[__m512; 4]; R] {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        if t.first {
            for j in 0..4 {
                let b = _mm512_maskz_loadu_ps(masks[j], t.bias.add(16 * j));
                for row in acc.iter_mut() {
                    row[j] = b;
                }
            }
        } else {
            for (r, row) in acc.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = _mm512_maskz_loadu_ps(masks[j], t.c.add(r * t.ldc + 16 * j));
                }
            }
        }
        acc
    }

    /// Store an `R x 64` tile (GELU first when `t.gelu`).
    #[inline(always)]
    unsafe fn store_acc<const R: usize, T>(
        mut acc: [[__m512; 4]; R],
        t: &Tile<T>,
        masks: &[__mmask16; 4],
    ) {
        for (r, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                if t.gelu {
                    *v = gelu16(*v);
                }
                _mm512_mask_storeu_ps(t.c.add(r * t.ldc + 16 * j), masks[j], *v);
            }
        }
    }

    /// The `R x 64` tile `t` (f32 inputs).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_f32<const R: usize>(t: Tile<f32>) {
        let masks = col_masks(t.ncols);
        let mut acc = load_acc::<R, _>(&t, &masks);
        for kk in 0..t.kc {
            let bp = t.b.add(kk * NR);
            let bv = [
                _mm512_loadu_ps(bp),
                _mm512_loadu_ps(bp.add(16)),
                _mm512_loadu_ps(bp.add(32)),
                _mm512_loadu_ps(bp.add(48)),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*t.a.add(r * t.lda + kk));
                for j in 0..4 {
                    row[j] = _mm512_fmadd_ps(av, bv[j], row[j]);
                }
            }
        }
        store_acc::<R, _>(acc, &t, &masks);
    }

    /// The `R x 64` tile `t` (u16 inputs).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn kernel_bf16<const R: usize>(t: Tile<u16>) {
        let masks = col_masks(t.ncols);
        let mut acc = load_acc::<R, _>(&t, &masks);
        for kp in 0..t.kc / 2 {
            let bp = t.b.add(kp * NR * 2) as *const __m512i;
            let bv: [__m512bh; 4] = [
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp)),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.add(1))),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.add(2))),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(bp.add(3))),
            ];
            for (r, row) in acc.iter_mut().enumerate() {
                let pair = (t.a.add(r * t.lda + 2 * kp) as *const i32).read_unaligned();
                let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair));
                for j in 0..4 {
                    row[j] = _mm512_dpbf16_ps(row[j], av, bv[j]);
                }
            }
        }
        store_acc::<R, _>(acc, &t, &masks);
    }

    /// `$kernel::<R>($tile)` for a row count `$r` of 1 to [`MR`].
    macro_rules! for_rows {
        ($kernel:ident, $r:expr, $tile:expr) => {
            match $r {
                6 => $kernel::<6>($tile),
                5 => $kernel::<5>($tile),
                4 => $kernel::<4>($tile),
                3 => $kernel::<3>($tile),
                2 => $kernel::<2>($tile),
                _ => $kernel::<1>($tile),
            }
        };
    }

    /// The cache blocking shared by both precisions, for `y (m x n) = x (m x k) Wᵀ + bias`
    /// with W packed `[panel][k][NR]` (k in elements of `T`, depth blocks of `kc_max`): calls
    /// `tile(rows, t)` for each block of at most [`MR`] rows of one panel.
    #[inline(always)]
    unsafe fn blocks<T>(
        (m, n, k, kc_max): (usize, usize, usize, usize),
        (x, w): (&[T], &[T]),
        bias: &[f32],
        y: &mut [f32],
        gelu: bool,
        mut tile: impl FnMut(usize, Tile<T>),
    ) {
        let panels = n.div_ceil(NR);
        debug_assert!(w.len() >= panels * k * NR && x.len() >= m * k);
        for i0 in (0..m).step_by(MC) {
            let mc = MC.min(m - i0);
            for k0 in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - k0);
                let (first, last) = (k0 == 0, k0 + kc == k);
                for p in 0..panels {
                    let mut i = 0;
                    while i < mc {
                        let r = MR.min(mc - i);
                        let t = Tile {
                            a: x.as_ptr().add((i0 + i) * k + k0),
                            lda: k,
                            b: w.as_ptr().add(p * k * NR + k0 * NR),
                            kc,
                            c: y.as_mut_ptr().add((i0 + i) * n + p * NR),
                            ldc: n,
                            bias: bias.as_ptr().add(p * NR),
                            ncols: NR.min(n - p * NR),
                            first,
                            gelu: last && gelu,
                        };
                        tile(r, t);
                        i += r;
                    }
                }
            }
        }
    }

    /// `y (m x n) = x (m x k) Wᵀ + bias`, W packed `[panel][k][NR]`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm_f32(
        (m, n, k): (usize, usize, usize),
        xw: (&[f32], &[f32]),
        bias: &[f32],
        y: &mut [f32],
        gelu: bool,
    ) {
        // SAFETY (each tile): `blocks` keeps it inside x, w and y; AVX-512F is enabled here.
        blocks((m, n, k, KC_F32), xw, bias, y, gelu, |r, t| unsafe {
            for_rows!(kernel_f32, r, t)
        })
    }

    /// `y (m x n) = x (m x k2, bfloat16) Wᵀ + bias`, W packed `[panel][k2/2][NR][2]`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn gemm_bf16(
        (m, n, k2): (usize, usize, usize),
        xw: (&[u16], &[u16]),
        bias: &[f32],
        y: &mut [f32],
        gelu: bool,
    ) {
        // SAFETY (each tile): as in gemm_f32; AVX512-BF16 is enabled here.
        blocks((m, n, k2, KC_BF16), xw, bias, y, gelu, |r, t| unsafe {
            for_rows!(kernel_bf16, r, t)
        })
    }

    /// e^x on 16 lanes for x <= 0 (relative error ~2e-7): 2^(x log2 e) split into an integer
    /// power (`vscalefps`) and 2^f, |f| <= 1/2, by its Taylor polynomial of degree 7.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        const C: [f32; 8] = [
            1.0,
            std::f32::consts::LN_2,
            0.240_226_5,
            0.055_504_11,
            0.009_618_129,
            0.001_333_355_8,
            1.540_353e-4,
            1.525_273_4e-5,
        ];
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
        let t = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let f = _mm512_sub_ps(t, n);
        let mut p = _mm512_set1_ps(C[7]);
        for &c in C[..7].iter().rev() {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// [`super::attention`] for head sizes a multiple of 16 (up to 64): keys transposed once per
    /// sentence so that a query's scores come 16 keys per vector; vector softmax.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn attention(
        qkv: &[f32],
        ctx: &mut [f32],
        lens: &[usize],
        h: usize,
        heads: usize,
        scratch: &mut Vec<f32>,
    ) {
        let d = h / heads;
        let nd = d / 16;
        let scale = _mm512_set1_ps(1.0 / (d as f32).sqrt());
        let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut t0 = 0;
        for &len in lens {
            let lp = len.next_multiple_of(16);
            scratch.resize(h * lp + lp, 0.0);
            let (kt, sc) = scratch.split_at_mut(h * lp);
            for (c, row) in kt.chunks_exact_mut(lp).enumerate() {
                for (j, v) in row[..len].iter_mut().enumerate() {
                    *v = qkv[(t0 + j) * 3 * h + h + c];
                }
                row[len..].fill(0.0);
            }
            let (kt, sc) = (kt.as_ptr(), sc.as_mut_ptr());
            for head in 0..heads {
                let col = head * d;
                for i in 0..len {
                    let q = qkv.as_ptr().add((t0 + i) * 3 * h + col);
                    let mut mx = neg_inf;
                    for jc in (0..lp).step_by(16) {
                        let mut s = _mm512_setzero_ps();
                        for dd in 0..d {
                            let k = _mm512_loadu_ps(kt.add((col + dd) * lp + jc));
                            s = _mm512_fmadd_ps(_mm512_set1_ps(*q.add(dd)), k, s);
                        }
                        let valid = ((1u32 << (len - jc).min(16)) - 1) as __mmask16;
                        s = _mm512_mask_blend_ps(valid, neg_inf, _mm512_mul_ps(s, scale));
                        _mm512_storeu_ps(sc.add(jc), s);
                        mx = _mm512_max_ps(mx, s);
                    }
                    let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
                    let mut sum = _mm512_setzero_ps();
                    for jc in (0..lp).step_by(16) {
                        let valid = ((1u32 << (len - jc).min(16)) - 1) as __mmask16;
                        let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(sc.add(jc)), mx));
                        let e = _mm512_maskz_mov_ps(valid, e);
                        _mm512_storeu_ps(sc.add(jc), e);
                        sum = _mm512_add_ps(sum, e);
                    }
                    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
                    let out = ctx.as_mut_ptr().add((t0 + i) * h + col);
                    let v = qkv.as_ptr().add(t0 * 3 * h + 2 * h + col);
                    // One 16-wide slice of the head at a time, so the sum stays in a register.
                    for u in 0..nd {
                        let mut a = _mm512_setzero_ps();
                        for j in 0..len {
                            let vj = _mm512_loadu_ps(v.add(j * 3 * h + 16 * u));
                            a = _mm512_fmadd_ps(_mm512_set1_ps(*sc.add(j)), vj, a);
                        }
                        _mm512_storeu_ps(out.add(16 * u), _mm512_mul_ps(a, inv));
                    }
                }
            }
            t0 += len;
        }
    }

    /// [`super::to_bf16_tiles_scalar`] with `vcvtne2ps2bf16`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn to_bf16_tiles(
        x: &[f32],
        m: usize,
        k: usize,
        nkc: usize,
        out: &mut [super::Tile],
    ) {
        let mask = |lanes: usize| -> __mmask16 { ((1u32 << lanes.min(16)) - 1) as u16 };
        for i in 0..m.next_multiple_of(32) {
            for kc in 0..nkc {
                let v = if i < m {
                    let k0 = kc * 32;
                    let left = k - k0;
                    let src = x.as_ptr().wrapping_add(i * k + k0);
                    // Masked-off lanes are never read, so the pointers may pass the row's end.
                    let lo = _mm512_maskz_loadu_ps(mask(left), src);
                    let hi =
                        _mm512_maskz_loadu_ps(mask(left.saturating_sub(16)), src.wrapping_add(16));
                    std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
                } else {
                    _mm512_setzero_si512()
                };
                let dst = out[(i / 16) * nkc + kc].0.as_mut_ptr().add((i % 16) * 32);
                _mm512_store_si512(dst as *mut __m512i, v);
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

/// AMX-BF16 through inline assembly (the AMX intrinsics are not stable Rust). Tile registers
/// are invisible to the compiler, which never uses them, so the accumulators live in `tmm0..3`
/// across the `asm!` blocks of one function.
#[cfg(target_arch = "x86_64")]
mod amx {
    use super::Tile;
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// `ldtilecfg`'s 64-byte operand: palette 1; tiles 0-7 of 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    #[repr(C, align(64))]
    struct Block([f32; 32 * 32]);

    /// `y (m x n) = x Wᵀ + bias` from A tiles `[m32 / 16][nkc]` (see
    /// [`super::to_bf16_tiles_scalar`]) and B tiles `[n32 / 16][nkc]` (see `Packed::Amx`).
    /// Blocks of 32 rows x 32 columns: four accumulator tiles (`tmm0..3`), two A tiles
    /// (`tmm4,5`), two B tiles (`tmm6,7`); every tile is 1 KiB contiguous (stride 64 bytes).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(
        m: usize,
        n: usize,
        nkc: usize,
        a: &[Tile],
        b: &[Tile],
        bias: &[f32],
        y: &mut [f32],
        gelu: bool,
    ) {
        let (mb, nb) = (m.div_ceil(32), n.div_ceil(32));
        debug_assert!(a.len() >= mb * 2 * nkc && b.len() >= nb * 2 * nkc);
        let mut cfg = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            cfg.colsb[t] = 64;
            cfg.rows[t] = 16;
        }
        asm!("ldtilecfg [{}]", in(reg) &cfg, options(nostack, readonly));
        let mut block = Block([0.0; 32 * 32]);
        let stride = 64usize;
        let (a, b) = (a.as_ptr(), b.as_ptr());
        for jb in 0..nb {
            let b0 = b.add(2 * jb * nkc);
            let b1 = b0.add(nkc);
            for ib in 0..mb {
                let a0 = a.add(2 * ib * nkc);
                let a1 = a0.add(nkc);
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                for kc in 0..nkc {
                    asm!(
                        "tileloadd tmm4, [{a0} + {s}*1]",
                        "tileloadd tmm6, [{b0} + {s}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {s}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {s}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.add(kc),
                        a1 = in(reg) a1.add(kc),
                        b0 = in(reg) b0.add(kc),
                        b1 = in(reg) b1.add(kc),
                        s = in(reg) stride,
                        options(nostack, readonly)
                    );
                }
                let c = block.0.as_mut_ptr();
                asm!(
                    "tilestored [{c0} + {ldc}*1], tmm0",
                    "tilestored [{c1} + {ldc}*1], tmm1",
                    "tilestored [{c2} + {ldc}*1], tmm2",
                    "tilestored [{c3} + {ldc}*1], tmm3",
                    c0 = in(reg) c,
                    c1 = in(reg) c.add(16),
                    c2 = in(reg) c.add(16 * 32),
                    c3 = in(reg) c.add(16 * 32 + 16),
                    ldc = in(reg) 32usize * 4,
                    options(nostack)
                );
                let i0 = ib * 32;
                epilogue(&block, m.min(i0 + 32) - i0, n, jb * 32, bias, y, i0, gelu);
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }

    /// Bias (and GELU) on a finished 32 x 32 block, stored into rows `i0..i0 + rows` of `y`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn epilogue(
        block: &Block,
        rows: usize,
        n: usize,
        col0: usize,
        bias: &[f32],
        y: &mut [f32],
        i0: usize,
        gelu: bool,
    ) {
        let mut masks = [0u16; 2];
        for (h, mask) in masks.iter_mut().enumerate() {
            let lanes = n.saturating_sub(col0 + 16 * h).min(16);
            *mask = ((1u32 << lanes) - 1) as u16;
        }
        let b = [
            _mm512_maskz_loadu_ps(masks[0], bias.as_ptr().add(col0)),
            _mm512_maskz_loadu_ps(masks[1], bias.as_ptr().add(col0 + 16)),
        ];
        for r in 0..rows {
            for h in 0..2 {
                let mut v =
                    _mm512_add_ps(_mm512_loadu_ps(block.0.as_ptr().add(r * 32 + 16 * h)), b[h]);
                if gelu {
                    v = super::avx512::gelu16(v);
                }
                let dst = y.as_mut_ptr().add((i0 + r) * n + col0 + 16 * h);
                _mm512_mask_storeu_ps(dst, masks[h], v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random fill in [-1, 1) (xorshift from state `seed`).
    fn fill(n: usize, seed: u64) -> Vec<f32> {
        crate::testutil::XorShift::from_state(seed).take(n)
    }

    /// The AVX-512 attention (what [`attention`] runs on this CPU) against the plain loops, on
    /// lengths around the 16-lane vectors.
    #[test]
    #[cfg_attr(
        not(cpu_avx512f),
        ignore = "needs AVX-512F: this CPU runs the plain-loop attention only"
    )]
    fn attention_matches_reference() {
        assert!(has_avx512(), "build.rs saw AVX-512F, this CPU has none");
        let (h, heads) = (64, 2);
        let lens = [1, 15, 16, 17, 40];
        let t: usize = lens.iter().sum();
        let qkv: Vec<f32> = fill(t * 3 * h, 99).iter().map(|v| v * 3.0).collect();
        let mut want = vec![0f32; t * h];
        attention_reference(&qkv, &mut want, &lens, h, heads, &mut Vec::new());
        let mut got = vec![0f32; t * h];
        // SAFETY: AVX-512F checked above; the head size 32 is a multiple of 16, at most 64.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::attention(&qkv, &mut got, &lens, h, heads, &mut Vec::new())
        };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-5, "ctx[{i}] = {g}, want {w}");
        }
    }

    /// The AVX512-BF16 conversion to AMX A tiles against the scalar one.
    #[test]
    #[cfg_attr(not(cpu_avx512bf16), ignore = "needs AVX512-BF16")]
    fn bf16_tiles_match_scalar() {
        assert!(has_bf16(), "build.rs saw AVX512-BF16, this CPU has none");
        let (m, k) = (37usize, 70usize);
        let nkc = k.div_ceil(32);
        let x = fill(m * k, 5);
        let mut want = vec![Tile([1; 512]); m.next_multiple_of(32) / 16 * nkc];
        to_bf16_tiles_scalar(&x, m, k, nkc, &mut want);
        let mut got = vec![Tile([1; 512]); want.len()];
        // SAFETY: AVX512-BF16 checked above.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::to_bf16_tiles(&x, m, k, nkc, &mut got)
        };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.0, w.0, "tile {i}");
        }
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

    /// `kernel` on awkward shapes (rows not a multiple of 6 or 48, columns not a multiple of
    /// 64, odd depth, depth over one block), against the float64 oracle.
    fn linear_kernel_matches_reference(kernel: LinearKernel) {
        assert!(
            kernel.available(),
            "{kernel:?}: build.rs saw it on this CPU, but it is not available here"
        );
        for &(m, n, k, gelu) in &[
            (1, 1, 1, false),
            (7, 70, 33, true),
            (50, 128, 300, false),
            (13, 200, 513, true),
            (70, 64, 64, false),
        ] {
            let seed = (m * 1000 + n * 10 + k) as u64;
            let x = fill(m * k, seed);
            let w = fill(n * k, seed + 1);
            let b = fill(n, seed + 2);
            let lin = Linear::with_kernel(&w, b.clone(), n, k, kernel);
            let want = linear_reference(&x, &w, &b, m, n, k, gelu, lin.precision());
            let mut got = vec![0f32; m * n];
            lin.forward(&x, m, &mut got, gelu, &mut Scratch::default());
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                // float32 accumulation of k terms of size <= 1.
                let tol = 1e-5 * (k as f32).sqrt() + 1e-5;
                assert!(
                    (g - e).abs() <= tol,
                    "{kernel:?} m {m} n {n} k {k} seed {seed}: y[{i}] = {g}, want {e}"
                );
            }
        }
    }

    #[test]
    #[cfg_attr(
        not(cpu_amx),
        ignore = "needs AMX-BF16 and AMX-TILE (Sapphire Rapids or later)"
    )]
    fn amx_kernel_matches_reference() {
        linear_kernel_matches_reference(LinearKernel::Amx);
    }

    #[test]
    #[cfg_attr(not(cpu_avx512bf16), ignore = "needs AVX512-BF16")]
    fn avx512_bf16_kernel_matches_reference() {
        linear_kernel_matches_reference(LinearKernel::Avx512Bf16);
    }

    #[test]
    #[cfg_attr(not(cpu_avx512f), ignore = "needs AVX-512F")]
    fn avx512_f32_kernel_matches_reference() {
        linear_kernel_matches_reference(LinearKernel::Avx512F32);
    }

    #[test]
    fn portable_kernel_matches_reference() {
        linear_kernel_matches_reference(LinearKernel::Portable);
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// Throughput of each kernel on the shapes of MiniLM-L6 with ~500 tokens per batch:
    /// `cargo test --release --lib kernels::speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn kernel_throughput() {
        const M: usize = 512;
        const REPS: usize = 20;
        for &(n, k, gelu) in &[(1152, 384, false), (1536, 384, true), (384, 1536, false)] {
            let x: Vec<f32> = (0..M * k).map(|i| ((i * 7) % 13) as f32 * 0.01).collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 * 0.01).collect();
            for kernel in [
                LinearKernel::Amx,
                LinearKernel::Avx512Bf16,
                LinearKernel::Avx512F32,
                LinearKernel::Portable,
            ] {
                if !kernel.available() {
                    continue;
                }
                let lin = Linear::with_kernel(&w, vec![0.0; n], n, k, kernel);
                let mut y = vec![0f32; M * n];
                let mut scratch = Scratch::default();
                lin.forward(&x, M, &mut y, gelu, &mut scratch);
                let sw = crate::timing::Stopwatch::start();
                for _ in 0..REPS {
                    lin.forward(&x, M, &mut y, gelu, &mut scratch);
                }
                let cpu = sw.cpu();
                println!(
                    "{kernel:?} m {M} n {n} k {k}: {:.1} GMAC per CPU-s",
                    (M * n * k * REPS) as f64 / cpu / 1e9
                );
            }
        }
    }
}
