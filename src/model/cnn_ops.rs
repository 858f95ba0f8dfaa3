//! Fast CPU kernels for the small image CNNs, as candle custom ops with their own backward.
//!
//! candle's generic `conv2d` spends much of a LeNet training step computing the gradient of the
//! (constant) input images with a `conv_transpose2d`, uses a scalar `tanh`, and its `avg_pool2d`
//! backward only works when kernel == stride. These ops fix that for the layers twindex uses:
//!
//! - [`conv2d_act`]: valid, stride-1 convolution + bias + activation in one op, parallel over
//!   chunks of the batch (forward and backward each one parallel region), with an opt-out of the
//!   input gradient for the first layer. Single-channel inputs (a first layer) are convolved
//!   directly in register blocks; others by im2col + gemm, tiled to stay in L2.
//! - [`avg_pool2`] / [`max_pool2`]: 2x2, stride-2 pooling with backward.
//! - [`fast_tanh`]: a vectorisable rational approximation (Eigen's), within 1e-6 of `f32::tanh`.
//!
//! Layout is NHWC (`[batch, height, width, channels]`, as Keras) and weights are HWIO
//! (`[kh, kw, c_in, c_out]`). Every op is checked against candle's generic path in tests. The
//! hot loops are compiled twice by `simd_fn!` (AVX2+FMA picked at run time, else baseline); the
//! hottest (the single-channel convolution forward and weight gradient, the planar transpose of
//! its gradient, 2x2 pooling) also have explicit intrinsics in `x86` (AVX2+FMA, and AVX-512VL
//! for the weight gradient's 20 accumulators), because Rust never fuses `a += b * c` into an
//! FMA and the auto-vectorised blocks spilled their accumulators.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::gemm::sgemm;

/// Activation applied after a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    Identity,
    Tanh,
    Relu,
}

/// Eigen's rational approximation of tanh (max error about 1e-7 relative); vectorises.
#[inline(always)]
pub fn fast_tanh(x: f32) -> f32 {
    const A1: f32 = 4.893_524_6e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525e-3;
    const B2: f32 = 2.268_434_6e-3;
    const B4: f32 = 1.185_347_1e-4;
    const B6: f32 = 1.198_258_4e-6;
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let mut p = A13;
    p = p * x2 + A11;
    p = p * x2 + A9;
    p = p * x2 + A7;
    p = p * x2 + A5;
    p = p * x2 + A3;
    p = p * x2 + A1;
    p *= x;
    let mut q = B6;
    q = q * x2 + B4;
    q = q * x2 + B2;
    q = q * x2 + B0;
    p / q
}

use super::has_avx2_fma;

simd_fn! {
    fn act_in_place(act: Act, v: &mut [f32]) {
        match act {
            Act::Identity => {}
            Act::Tanh => v.iter_mut().for_each(|x| *x = fast_tanh(*x)),
            Act::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
        }
    }
}

simd_fn! {
    /// `g * act'(y)` where `y = act(pre)`.
    fn act_grad(act: Act, y: &[f32], g: &[f32]) -> Vec<f32> {
        match act {
            Act::Identity => g.to_vec(),
            Act::Tanh => y.iter().zip(g).map(|(&y, &g)| g * (1.0 - y * y)).collect(),
            Act::Relu => y
                .iter()
                .zip(g)
                .map(|(&y, &g)| if y > 0.0 { g } else { 0.0 })
                .collect(),
        }
    }
}

/// Taps per kernel row summed at once by the AVX-512 weight-gradient kernel.
const MAX_KW_ROW: usize = 5;

/// Lanes of the direct convolution's register blocks (one AVX2 register).
const LANES: usize = 8;
/// Output channels per register block of the direct convolution.
const OC_BLOCK: usize = 4;

/// One register block of [`conv1c_fwd`]: `acc[q][l] += sum over taps of w[tap][q] *
/// x[di][j + dj]` for `OC_BLOCK` channels (weights from `wb`, row stride `o`) and `LANES` columns
/// starting at `x` (row stride `g.w`). Only constant indices, so the block stays in registers.
#[inline(always)]
fn conv1c_block(
    g: ConvGeom,
    x: &[f32],
    wb: &[f32],
    o: usize,
    mut acc: [[f32; LANES]; OC_BLOCK],
) -> [[f32; LANES]; OC_BLOCK] {
    for di in 0..g.kh {
        let row = &x[di * g.w..];
        for dj in 0..g.kw {
            let s: &[f32; LANES] = row[dj..dj + LANES].try_into().expect("lanes");
            let wr: &[f32; OC_BLOCK] = wb[(di * g.kw + dj) * o..][..OC_BLOCK]
                .try_into()
                .expect("block");
            for q in 0..OC_BLOCK {
                for l in 0..LANES {
                    acc[q][l] += wr[q] * s[l];
                }
            }
        }
    }
    acc
}

/// One register block of [`conv1c_wgrad`] over whole `LANES` columns: `a[q][l] += sum over rows
/// and column blocks of plane[q][i][j] * x[i][j]` (`plane` rows of stride `owp`, `oh` rows per
/// channel; `x` rows of stride `w`), for `full` columns.
#[inline(always)]
fn conv1c_wgrad_block(
    x: &[f32],
    w: usize,
    plane: &[f32],
    (oh, owp, full): (usize, usize, usize),
) -> [[f32; LANES]; OC_BLOCK] {
    let mut a = [[0f32; LANES]; OC_BLOCK];
    for i in 0..oh {
        let src = &x[i * w..];
        for j0 in (0..full).step_by(LANES) {
            let s: &[f32; LANES] = src[j0..j0 + LANES].try_into().expect("lanes");
            for q in 0..OC_BLOCK {
                let gr: &[f32; LANES] = plane[(q * oh + i) * owp + j0..][..LANES]
                    .try_into()
                    .expect("lanes");
                for l in 0..LANES {
                    a[q][l] += gr[l] * s[l];
                }
            }
        }
    }
    a
}

/// Explicit AVX2+FMA kernels for the single-channel convolution. Rust does not fuse `a += b * c`
/// into an FMA (it would change rounding), so the auto-vectorised loops above issue a multiply
/// and an add per tap; these keep the accumulators in registers and use `vfmadd`.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ConvGeom, LANES, OC_BLOCK};
    use std::arch::x86_64::*;

    /// `NV` vectors of 8 output columns x 4 channels of one output row: bias plus the sum over
    /// taps of weight x input. `x` points at the block's first input (row `i`, column `j0`).
    #[inline(always)]
    unsafe fn fwd_block<const NV: usize>(
        g: ConvGeom,
        x: *const f32,
        wb: *const f32,
        o: usize,
        bias: *const f32,
    ) -> [[__m256; NV]; OC_BLOCK] {
        let mut acc = [[_mm256_setzero_ps(); NV]; OC_BLOCK];
        for (q, a) in acc.iter_mut().enumerate() {
            let b = _mm256_set1_ps(*bias.add(q));
            for v in a.iter_mut() {
                *v = b;
            }
        }
        for di in 0..g.kh {
            let row = x.add(di * g.w);
            for dj in 0..g.kw {
                let mut s = [_mm256_setzero_ps(); NV];
                for (v, sv) in s.iter_mut().enumerate() {
                    *sv = _mm256_loadu_ps(row.add(dj + v * LANES));
                }
                let wr = wb.add((di * g.kw + dj) * o);
                for (q, a) in acc.iter_mut().enumerate() {
                    let wq = _mm256_broadcast_ss(&*wr.add(q));
                    for v in 0..NV {
                        a[v] = _mm256_fmadd_ps(wq, s[v], a[v]);
                    }
                }
            }
        }
        acc
    }

    /// The 4x4 transpose within each 128-bit half: lane `l` of `a[r]` (in either half) goes to
    /// lane `r` of the result's vector `l`.
    #[inline(always)]
    unsafe fn transpose_4x4(a: [__m256; 4]) -> [__m256; 4] {
        let t0 = _mm256_unpacklo_ps(a[0], a[1]);
        let t1 = _mm256_unpackhi_ps(a[0], a[1]);
        let t2 = _mm256_unpacklo_ps(a[2], a[3]);
        let t3 = _mm256_unpackhi_ps(a[2], a[3]);
        [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
        ]
    }

    /// Store 4 channel vectors of 8 columns into NHWC rows of stride `o` (4 floats per column).
    #[inline(always)]
    unsafe fn store_4x8(y: *mut f32, o: usize, a: [__m256; 4]) {
        let u = transpose_4x4(a);
        for (c, uc) in u.iter().enumerate() {
            _mm_storeu_ps(y.add(c * o), _mm256_castps256_ps128(*uc));
            _mm_storeu_ps(y.add((c + 4) * o), _mm256_extractf128_ps::<1>(*uc));
        }
    }

    #[inline(always)]
    unsafe fn fwd_run<const NV: usize>(
        g: ConvGeom,
        x: &[f32],
        wt: &[f32],
        bias: &[f32],
        y: &mut [f32],
        (i, j0, oc0): (usize, usize, usize),
    ) {
        let (ow, o) = (g.ow(), g.o);
        debug_assert!(j0 + NV * LANES <= ow && oc0 + OC_BLOCK <= o);
        debug_assert!((i + g.kh - 1) * g.w + j0 + NV * LANES + g.kw - 1 <= x.len());
        let acc = fwd_block::<NV>(
            g,
            x.as_ptr().add(i * g.w + j0),
            wt.as_ptr().add(oc0),
            o,
            bias.as_ptr().add(oc0),
        );
        let yp = y.as_mut_ptr().add((i * ow + j0) * o + oc0);
        for (v, ((a0, a1), (a2, a3))) in acc[0]
            .iter()
            .zip(&acc[1])
            .zip(acc[2].iter().zip(&acc[3]))
            .enumerate()
        {
            store_4x8(yp.add(v * LANES * o), o, [*a0, *a1, *a2, *a3]);
        }
    }

    /// The gradient rows of one output row made planar: `gy` (`[ow, o]`, NHWC) to
    /// `plane[(oc * oh + i) * owp + j]` for whole blocks of 8 columns (the inverse of
    /// [`store_4x8`]); returns the columns done.
    ///
    /// # Safety
    /// The CPU must have AVX2; `o` a multiple of 4, `gy` one output row, `plane` sized for
    /// `o * oh` rows of stride `owp`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn planar_row(
        gy: &[f32],
        (i, oh, ow, o, owp): (usize, usize, usize, usize, usize),
        plane: &mut [f32],
    ) -> usize {
        let full = ow / LANES * LANES;
        assert!(o % OC_BLOCK == 0 && gy.len() >= ow * o && plane.len() >= o * oh * owp);
        let (g, p) = (gy.as_ptr(), plane.as_mut_ptr());
        for j0 in (0..full).step_by(LANES) {
            for oc0 in (0..o).step_by(OC_BLOCK) {
                let col = |c: usize| g.add((j0 + c) * o + oc0);
                let u: [__m256; 4] = std::array::from_fn(|c| {
                    _mm256_set_m128(_mm_loadu_ps(col(c + 4)), _mm_loadu_ps(col(c)))
                });
                let a = transpose_4x4(u);
                for (q, aq) in a.iter().enumerate() {
                    _mm256_storeu_ps(p.add(((oc0 + q) * oh + i) * owp + j0), *aq);
                }
            }
        }
        full
    }

    /// [`super::pool_fwd_image`] for `c` a multiple of 4: four channels per 128-bit operation.
    ///
    /// # Safety
    /// The CPU must have AVX2; `img` holds `h x w x c`, `yb` `(h/2) x (w/2) x c` floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn pool_fwd_image(
        kind: super::Pool2,
        (h, w, c): (usize, usize, usize),
        img: &[f32],
        yb: &mut [f32],
    ) {
        assert!(c % 4 == 0 && img.len() >= h * w * c && yb.len() >= (h / 2) * (w / 2) * c);
        let (x, y) = (img.as_ptr(), yb.as_mut_ptr());
        let quarter = _mm_set1_ps(0.25);
        super::for_windows((h, w, c), 4, |o, p| {
            let [a, b, cc, d] = p.map(|q| _mm_loadu_ps(x.add(q)));
            let v = match kind {
                super::Pool2::Avg => {
                    _mm_mul_ps(quarter, _mm_add_ps(_mm_add_ps(_mm_add_ps(a, b), cc), d))
                }
                super::Pool2::Max => _mm_max_ps(_mm_max_ps(a, b), _mm_max_ps(cc, d)),
            };
            _mm_storeu_ps(y.add(o), v);
        });
    }

    /// Average-pooling backward of one image for `c` a multiple of 4: a quarter of each
    /// output gradient to each of its four inputs.
    ///
    /// # Safety
    /// The CPU must have AVX2; `gb` holds `(h/2) x (w/2) x c`, `gxb` `h x w x c` floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avg_pool_bwd_image(
        (h, w, c): (usize, usize, usize),
        gb: &[f32],
        gxb: &mut [f32],
    ) {
        assert!(c % 4 == 0 && gb.len() >= (h / 2) * (w / 2) * c && gxb.len() >= h * w * c);
        let (g, x) = (gb.as_ptr(), gxb.as_mut_ptr());
        let quarter = _mm_set1_ps(0.25);
        super::for_windows((h, w, c), 4, |o, p| {
            let v = _mm_mul_ps(quarter, _mm_loadu_ps(g.add(o)));
            for q in p {
                _mm_storeu_ps(x.add(q), v);
            }
        });
    }

    /// [`super::conv1c_fwd`] for `o` a multiple of 4, on AVX2+FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `x`, `wt`, `bias`, `y` sized as `conv1c_fwd` requires.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn conv1c_fwd(g: ConvGeom, x: &[f32], wt: &[f32], bias: &[f32], y: &mut [f32]) {
        let (oh, ow, o) = (g.oh(), g.ow(), g.o);
        assert!(o % OC_BLOCK == 0 && x.len() >= g.h * g.w && y.len() >= oh * ow * o);
        assert!(wt.len() >= g.kh * g.kw * o && bias.len() >= o);
        for i in 0..oh {
            for oc0 in (0..o).step_by(OC_BLOCK) {
                let mut j0 = 0;
                while ow - j0 >= 3 * LANES {
                    fwd_run::<3>(g, x, wt, bias, y, (i, j0, oc0));
                    j0 += 3 * LANES;
                }
                if ow - j0 >= 2 * LANES {
                    fwd_run::<2>(g, x, wt, bias, y, (i, j0, oc0));
                    j0 += 2 * LANES;
                }
                if ow - j0 >= LANES {
                    fwd_run::<1>(g, x, wt, bias, y, (i, j0, oc0));
                    j0 += LANES;
                }
                for j in j0..ow {
                    for q in 0..OC_BLOCK {
                        let mut a = bias[oc0 + q];
                        for di in 0..g.kh {
                            for dj in 0..g.kw {
                                a = x[(i + di) * g.w + j + dj]
                                    .mul_add(wt[(di * g.kw + dj) * o + oc0 + q], a);
                            }
                        }
                        y[(i * ow + j) * o + oc0 + q] = a;
                    }
                }
            }
        }
    }

    /// One tap's weight-gradient sums over whole `LANES` column blocks for 4 channels:
    /// `sum over rows i, blocks j0 of plane[q][i][j0..] * x[i][j0..]`, as 4 vectors.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `x` holds `oh` rows of stride `w` from the tap's offset
    /// with at least `full` columns each, `plane` `4 * oh` rows of stride `owp`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn wgrad_block(
        x: &[f32],
        w: usize,
        plane: &[f32],
        (oh, owp, full): (usize, usize, usize),
    ) -> [[f32; LANES]; OC_BLOCK] {
        assert!(oh == 0 || ((oh - 1) * w + full <= x.len() && OC_BLOCK * oh * owp <= plane.len()));
        let mut a = [_mm256_setzero_ps(); OC_BLOCK];
        let (xp, pp) = (x.as_ptr(), plane.as_ptr());
        for i in 0..oh {
            let src = xp.add(i * w);
            for j0 in (0..full).step_by(LANES) {
                let s = _mm256_loadu_ps(src.add(j0));
                for (q, aq) in a.iter_mut().enumerate() {
                    let gr = _mm256_loadu_ps(pp.add((q * oh + i) * owp + j0));
                    *aq = _mm256_fmadd_ps(gr, s, *aq);
                }
            }
        }
        let mut out = [[0f32; LANES]; OC_BLOCK];
        for (o, aq) in out.iter_mut().zip(&a) {
            _mm256_storeu_ps(o.as_mut_ptr(), *aq);
        }
        out
    }

    /// Most taps per kernel row [`wgrad_taps`] handles.
    pub const MAX_KW: usize = super::MAX_KW_ROW;

    /// Whether [`wgrad_taps`] can run: AVX-512 (F and VL, for 32 vector registers) besides
    /// AVX2 and FMA.
    pub fn has_avx512vl() -> bool {
        super::has_avx2_fma() && crate::cpu::has_avx512f_vl()
    }

    /// The weight-gradient block sums of all `KW` taps of one kernel row at once: each 4-channel
    /// gradient load is shared by the `KW` taps (20 accumulators for `KW` = 5, which needs
    /// AVX-512's 32 registers). Result `[dj][q][lane]`, rows `dj >= KW` zero.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA, AVX-512F and AVX-512VL; `x` holds `oh` rows of stride `w`
    /// from the kernel row's offset, each at least `full + KW - 1` long (`full + KW - 1 <= w`),
    /// `plane` `4 * oh` rows of stride `owp`.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    pub unsafe fn wgrad_taps<const KW: usize>(
        x: &[f32],
        w: usize,
        plane: &[f32],
        (oh, owp, full): (usize, usize, usize),
    ) -> [[[f32; LANES]; OC_BLOCK]; MAX_KW] {
        assert!(KW <= MAX_KW && full + KW - 1 <= w);
        assert!(
            oh == 0
                || ((oh - 1) * w + full + KW - 1 <= x.len() && OC_BLOCK * oh * owp <= plane.len())
        );
        let mut a = [[_mm256_setzero_ps(); OC_BLOCK]; KW];
        let (xp, pp) = (x.as_ptr(), plane.as_ptr());
        for i in 0..oh {
            let src = xp.add(i * w);
            for j0 in (0..full).step_by(LANES) {
                let mut gr = [_mm256_setzero_ps(); OC_BLOCK];
                for (q, g) in gr.iter_mut().enumerate() {
                    *g = _mm256_loadu_ps(pp.add((q * oh + i) * owp + j0));
                }
                for (dj, ad) in a.iter_mut().enumerate() {
                    let s = _mm256_loadu_ps(src.add(j0 + dj));
                    for q in 0..OC_BLOCK {
                        ad[q] = _mm256_fmadd_ps(gr[q], s, ad[q]);
                    }
                }
            }
        }
        let mut out = [[[0f32; LANES]; OC_BLOCK]; MAX_KW];
        for (od, ad) in out.iter_mut().zip(&a) {
            for (o, aq) in od.iter_mut().zip(ad) {
                _mm256_storeu_ps(o.as_mut_ptr(), *aq);
            }
        }
        out
    }
}

simd_fn! {
    /// Direct convolution of one single-channel image (a network's first layer, where im2col
    /// rows would be only `kw` floats), bias included, into `y` (NHWC `[oh, ow, o]`). Register
    /// blocks of `OC_BLOCK` channels x `LANES` output columns share each input load.
    fn conv1c_fwd(g: ConvGeom, x: &[f32], wt: &[f32], bias: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if g.o.is_multiple_of(OC_BLOCK) && has_avx2_fma() {
            // SAFETY: AVX2 and FMA are present (checked just above); sizes are asserted inside.
            unsafe { x86::conv1c_fwd(g, x, wt, bias, y) };
            return;
        }
        let (oh, ow, o, w, taps) = (g.oh(), g.ow(), g.o, g.w, g.kh * g.kw);
        for i in 0..oh {
            for oc0 in (0..o).step_by(OC_BLOCK) {
                let nq = OC_BLOCK.min(o - oc0);
                let mut j0 = 0;
                while j0 < ow {
                    let nl = LANES.min(ow - j0);
                    let mut acc = [[0f32; LANES]; OC_BLOCK];
                    for (q, a) in acc.iter_mut().enumerate().take(nq) {
                        *a = [bias[oc0 + q]; LANES];
                    }
                    if nl == LANES && nq == OC_BLOCK {
                        // Whole block: constant indices only, so `acc` stays in registers.
                        let wb = &wt[oc0..];
                        acc = conv1c_block(g, &x[i * w + j0..], wb, o, acc);
                    } else {
                        for tap in 0..taps {
                            let (di, dj) = (tap / g.kw, tap % g.kw);
                            let src = &x[(i + di) * w + dj + j0..];
                            let mut s = [0f32; LANES];
                            s[..nl].copy_from_slice(&src[..nl]);
                            let wr = &wt[tap * o + oc0..];
                            for q in 0..nq {
                                for l in 0..LANES {
                                    acc[q][l] += wr[q] * s[l];
                                }
                            }
                        }
                    }
                    for l in 0..nl {
                        let yo = &mut y[(i * ow + j0 + l) * o + oc0..][..nq];
                        for (q, v) in yo.iter_mut().enumerate() {
                            *v = acc[q][l];
                        }
                    }
                    j0 += LANES;
                }
            }
        }
    }
}

simd_fn! {
    /// Weight-gradient partial sums of a single-channel convolution for one image: `gy` is the
    /// gradient of the pre-activation output (NHWC `[oh, ow, o]`), `plane` scratch of the same
    /// size (the gradient made planar, zero-padded to whole `LANES` blocks per row), `acc`
    /// (`[kh*kw, o, LANES]`) accumulates across images; the caller sums its last axis.
    fn conv1c_wgrad(g: ConvGeom, x: &[f32], gy: &[f32], plane: &mut [f32], acc: &mut [f32]) {
        let (oh, ow, o, w) = (g.oh(), g.ow(), g.o, g.w);
        let owp = ow.div_ceil(LANES) * LANES;
        let fast = has_avx2_fma();
        for i in 0..oh {
            for oc in 0..o {
                plane[(oc * oh + i) * owp + ow..(oc * oh + i + 1) * owp].fill(0.0);
            }
            #[allow(unused_mut)]
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if fast && o % OC_BLOCK == 0 {
                // SAFETY: AVX2 is present; sizes are asserted inside.
                done = unsafe { x86::planar_row(&gy[i * ow * o..], (i, oh, ow, o, owp), plane) };
            }
            for j in done..ow {
                let gp = &gy[(i * ow + j) * o..][..o];
                for (oc, &v) in gp.iter().enumerate() {
                    plane[(oc * oh + i) * owp + j] = v;
                }
            }
        }
        let full = ow / LANES * LANES;
        #[cfg(target_arch = "x86_64")]
        let taps512 = g.kw <= x86::MAX_KW && full + g.kw <= w + 1 && x86::has_avx512vl();
        for di in 0..g.kh {
            for oc0 in (0..o).step_by(OC_BLOCK) {
                let nq = OC_BLOCK.min(o - oc0);
                let pl = &plane[oc0 * oh * owp..];
                let xr = &x[di * w..];
                // All taps of this kernel row at once, where the CPU allows.
                #[allow(unused_mut)]
                let mut row_sums: Option<[[[f32; LANES]; OC_BLOCK]; MAX_KW_ROW]> = None;
                #[cfg(target_arch = "x86_64")]
                if taps512 && nq == OC_BLOCK {
                    // SAFETY: AVX2, FMA, AVX-512F/VL present; sizes are asserted inside.
                    row_sums = Some(unsafe {
                        match g.kw {
                            5 => x86::wgrad_taps::<5>(xr, w, pl, (oh, owp, full)),
                            4 => x86::wgrad_taps::<4>(xr, w, pl, (oh, owp, full)),
                            3 => x86::wgrad_taps::<3>(xr, w, pl, (oh, owp, full)),
                            2 => x86::wgrad_taps::<2>(xr, w, pl, (oh, owp, full)),
                            _ => x86::wgrad_taps::<1>(xr, w, pl, (oh, owp, full)),
                        }
                    });
                }
            for dj in 0..g.kw {
                let tap = di * g.kw + dj;
                let mut a = if let Some(r) = &row_sums {
                    r[dj]
                } else if nq == OC_BLOCK {
                    let xs = &x[di * w + dj..];
                    #[cfg(target_arch = "x86_64")]
                    if fast {
                        // SAFETY: AVX2 and FMA are present; sizes are asserted inside.
                        unsafe { x86::wgrad_block(xs, w, pl, (oh, owp, full)) }
                    } else {
                        conv1c_wgrad_block(xs, w, pl, (oh, owp, full))
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    conv1c_wgrad_block(xs, w, pl, (oh, owp, full))
                } else {
                    [[0f32; LANES]; OC_BLOCK]
                };
                for i in 0..oh {
                    let src = &x[(i + di) * w + dj..];
                    let start = if nq == OC_BLOCK { full } else { 0 };
                    for j0 in (start..ow).step_by(LANES) {
                        let nl = LANES.min(ow - j0);
                        let mut s = [0f32; LANES];
                        s[..nl].copy_from_slice(&src[j0..j0 + nl]);
                        for q in 0..nq {
                            let gr: &[f32; LANES] = plane[((oc0 + q) * oh + i) * owp + j0..]
                                [..LANES]
                                .try_into()
                                .expect("lanes");
                            for l in 0..LANES {
                                a[q][l] += gr[l] * s[l];
                            }
                        }
                    }
                }
                for (q, aq) in a.iter().enumerate().take(nq) {
                    let dst = &mut acc[(tap * o + oc0 + q) * LANES..][..LANES];
                    for l in 0..LANES {
                        dst[l] += aq[l];
                    }
                }
            }
            }
        }
    }
}

/// Add `bias` (`[o]`) to every row of the NHWC output `y` (`[.., o]`).
fn add_bias(y: &mut [f32], bias: &[f32]) {
    for row in y.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// Borrow a tensor's data as a contiguous f32 slice (copying only if it is not contiguous).
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    match (&*s, l.contiguous_offsets()) {
        (Storage::Cpu(cs), Some((a, b))) => f(&cs.as_slice::<f32>()?[a..b]),
        _ => {
            drop(s);
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            f(&v)
        }
    }
}

fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous f32 tensor"),
    }
}

/// Geometry of a valid, stride-1 convolution over an NHWC batch.
#[derive(Debug, Clone, Copy)]
struct ConvGeom {
    b: usize,
    h: usize,
    w: usize,
    c: usize,
    kh: usize,
    kw: usize,
    o: usize,
}

impl ConvGeom {
    fn oh(&self) -> usize {
        self.h + 1 - self.kh
    }
    fn ow(&self) -> usize {
        self.w + 1 - self.kw
    }
    /// Patch length (im2col row length).
    fn k(&self) -> usize {
        self.kh * self.kw * self.c
    }
    /// Output pixels per image.
    fn p(&self) -> usize {
        self.oh() * self.ow()
    }
    fn in_size(&self) -> usize {
        self.h * self.w * self.c
    }
    /// Images per im2col tile: the patch matrix of a tile (about 256 KiB) stays in the L2
    /// cache between the im2col and the gemm that reads it.
    fn tile_images(&self) -> usize {
        (65_536 / (self.p() * self.k()).max(1)).max(1)
    }

    /// im2col of `nb` images starting at `x` (NHWC) into `col` (`[nb * p, k]`, row-major).
    /// Rows of a patch are short (`kw * c` floats); the common lengths are copied as fixed-size
    /// arrays (inline moves) instead of `memcpy` calls, which dominated the profile.
    fn im2col(&self, x: &[f32], nb: usize, col: &mut [f32]) {
        match self.kw * self.c {
            5 => self.im2col_n::<5>(x, nb, col),
            20 => self.im2col_n::<20>(x, nb, col),
            160 => self.im2col_n::<160>(x, nb, col),
            _ => self.im2col_n::<0>(x, nb, col),
        }
    }

    /// im2col with patch rows of `N` floats (`N = 0`: any length, copied with `memcpy`).
    fn im2col_n<const N: usize>(&self, x: &[f32], nb: usize, col: &mut [f32]) {
        let (oh, ow, k, c, w) = (self.oh(), self.ow(), self.k(), self.c, self.w);
        let row_len = self.kw * c;
        let isz = self.in_size();
        let mut r = 0;
        for bi in 0..nb {
            let img = &x[bi * isz..(bi + 1) * isz];
            for i in 0..oh {
                for j in 0..ow {
                    let dst = &mut col[r..r + k];
                    for di in 0..self.kh {
                        let src = &img[((i + di) * w + j) * c..][..row_len];
                        let d = &mut dst[di * row_len..(di + 1) * row_len];
                        if N == 0 {
                            d.copy_from_slice(src);
                        } else {
                            let d: &mut [f32; N] = d.try_into().expect("row length");
                            *d = *<&[f32; N]>::try_from(src).expect("row length");
                        }
                    }
                    r += k;
                }
            }
        }
    }

    /// Scatter-add of `gcol` (`[nb * p, k]`) back into `gx` (NHWC, zeroed by the caller).
    fn col2im(&self, gcol: &[f32], nb: usize, gx: &mut [f32]) {
        let (oh, ow, k, c, w) = (self.oh(), self.ow(), self.k(), self.c, self.w);
        let row_len = self.kw * c;
        for bi in 0..nb {
            let img = &mut gx[bi * self.in_size()..(bi + 1) * self.in_size()];
            for i in 0..oh {
                for j in 0..ow {
                    let r = ((bi * oh + i) * ow + j) * k;
                    for di in 0..self.kh {
                        let dst = ((i + di) * w + j) * c;
                        let d = &mut img[dst..dst + row_len];
                        let g = &gcol[r + di * row_len..r + (di + 1) * row_len];
                        for t in 0..row_len {
                            d[t] += g[t];
                        }
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Per-thread im2col scratch, grown as needed and reused across steps (no alloc, no memset).
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` with this thread's scratch buffer of at least `n` floats (contents unspecified).
fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < n {
            buf.resize(n, 0.0);
        }
        f(&mut buf[..n])
    })
}

/// Images per parallel chunk: split the batch evenly over the rayon threads.
fn chunk_images(b: usize) -> usize {
    let t = rayon::current_num_threads().max(1);
    b.div_ceil(t).max(1)
}

/// The fused convolution op. See [`conv2d_act`] and [`conv2d_act_pool`].
#[derive(Debug)]
pub struct Conv2dAct {
    pub act: Act,
    /// Compute the gradient with respect to the input (false for a network's first layer).
    pub input_grad: bool,
    /// 2x2 pooling fused after the activation.
    pub pool: Option<Pool2>,
    /// The pre-pool activations of the forward pass, kept for the backward pass when pooling
    /// is fused (the op instance lives in the autograd graph of that one forward call).
    cache: std::sync::Mutex<Vec<f32>>,
}

impl Conv2dAct {
    /// A convolution op; see [`conv2d_act`].
    pub fn new(act: Act, input_grad: bool, pool: Option<Pool2>) -> Self {
        Conv2dAct {
            act,
            input_grad,
            pool,
            cache: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl Conv2dAct {
    /// Forward of one chunk of images: `xc` starts at the chunk's first image, `yc` receives
    /// `act(conv(x) + b)` (NHWC) and, with pooling, `pool` its pooled images.
    fn fwd_chunk(
        &self,
        g: ConvGeom,
        xc: &[f32],
        wt: &[f32],
        bias: &[f32],
        yc: &mut [f32],
        pool: Option<(Pool2, &mut [f32])>,
    ) {
        let (p, k, o) = (g.p(), g.k(), g.o);
        if g.c == 1 {
            for (bi, yi) in yc.chunks_exact_mut(p * o).enumerate() {
                conv1c_fwd(g, &xc[bi * g.in_size()..][..g.in_size()], wt, bias, yi);
            }
        } else {
            let t = g.tile_images();
            with_scratch(t * p * k, |col| {
                for (ti, yt) in yc.chunks_mut(t * p * o).enumerate() {
                    let nt = yt.len() / (p * o);
                    g.im2col(&xc[ti * t * g.in_size()..], nt, col);
                    // y[nt*p, o] = col[nt*p, k] @ w[k, o]
                    sgemm(nt * p, o, k, yt, o, false, col, k, 1, wt, o, 1);
                }
            });
            add_bias(yc, bias);
        }
        act_in_place(self.act, yc);
        if let Some((kind, pc)) = pool {
            let pp = (g.oh() / 2) * (g.ow() / 2) * o;
            for (yi, pi) in yc.chunks_exact(p * o).zip(pc.chunks_exact_mut(pp)) {
                pool_fwd_image(kind, (g.oh(), g.ow(), o), yi, pi);
            }
        }
    }
}

fn conv_geom(xs: &[usize], ws: &[usize], bs: &[usize]) -> Result<ConvGeom> {
    match (xs, ws, bs) {
        (&[b, h, w, c], &[kh, kw, wc, o], &[bo]) if wc == c && bo == o && kh <= h && kw <= w => {
            Ok(ConvGeom {
                b,
                h,
                w,
                c,
                kh,
                kw,
                o,
            })
        }
        _ => candle_core::bail!(
            "conv2d_act: expected x [B,H,W,C], w [KH,KW,C,O], b [O] with KH<=H, KW<=W; got {xs:?}, {ws:?}, {bs:?}"
        ),
    }
}

impl CustomOp3 for Conv2dAct {
    fn name(&self) -> &'static str {
        "twindex-conv2d-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = conv_geom(l1.dims(), l2.dims(), l3.dims())?;
        let x = cpu_slice(s1, l1, "conv2d_act input")?;
        let wt = cpu_slice(s2, l2, "conv2d_act weight")?;
        let bias = cpu_slice(s3, l3, "conv2d_act bias")?;
        let (p, o) = (g.p(), g.o);
        // Zeroed by calloc (fresh pages), then written once by gemm and once by bias + act.
        let mut y = vec![0f32; g.b * p * o];
        let cb = chunk_images(g.b);
        let kind = match self.pool {
            None => {
                y.par_chunks_mut(cb * p * o)
                    .enumerate()
                    .for_each(|(ci, yc)| {
                        self.fwd_chunk(g, &x[ci * cb * g.in_size()..], wt, bias, yc, None)
                    });
                return Ok((CpuStorage::F32(y), Shape::from((g.b, g.oh(), g.ow(), o))));
            }
            Some(kind) => kind,
        };
        // Pooling fused: each chunk also pools its own images (one parallel region).
        let (ph, pw) = (g.oh() / 2, g.ow() / 2);
        if ph == 0 || pw == 0 {
            candle_core::bail!(
                "conv2d_act_pool: output {}x{} too small to pool",
                g.oh(),
                g.ow()
            );
        }
        let pp = ph * pw * o;
        let mut py = vec![0f32; g.b * pp];
        y.par_chunks_mut(cb * p * o)
            .zip(py.par_chunks_mut(cb * pp))
            .enumerate()
            .for_each(|(ci, (yc, pyc))| {
                let xc = &x[ci * cb * g.in_size()..];
                self.fwd_chunk(g, xc, wt, bias, yc, Some((kind, pyc)));
            });
        *self.cache.lock().unwrap() = y;
        Ok((CpuStorage::F32(py), Shape::from((g.b, ph, pw, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = conv_geom(x.dims(), w.dims(), b.dims())?;
        let (p, k, o) = (g.p(), g.k(), g.o);
        let cb = chunk_images(g.b);
        let n_chunks = g.b.div_ceil(cb);
        let input_grad = self.input_grad;
        let mut gx_all = vec![0f32; if input_grad { g.b * g.in_size() } else { 0 }];
        let gx_chunks: Vec<Option<&mut [f32]>> = if input_grad {
            gx_all.chunks_mut(cb * g.in_size()).map(Some).collect()
        } else {
            (0..n_chunks).map(|_| None).collect()
        };
        // The activations the gradient flows back through: the op's output, or with pooling
        // the pre-pool activations kept by the forward pass.
        let cached = match self.pool {
            Some(_) => {
                let a = std::mem::take(&mut *self.cache.lock().unwrap());
                if a.len() != g.b * p * o {
                    candle_core::bail!("conv2d_act_pool: backward without a forward pass");
                }
                Some(a)
            }
            None => None,
        };
        let pp = (g.oh() / 2) * (g.ow() / 2) * o;
        // One parallel region: per chunk of images, pool backward, activation backward, then
        // the convolution's weight, bias and input gradients. Per chunk: (gw [k, o], gb [o]).
        let run = |act_out: &[f32], gr: &[f32], xs: &[f32], wt: &[f32]| {
            gx_chunks
                .into_par_iter()
                .enumerate()
                .map(|(ci, gxc)| {
                    let nb = cb.min(g.b - ci * cb);
                    let act_c = &act_out[ci * cb * p * o..][..nb * p * o];
                    let gc = match self.pool {
                        Some(kind) => {
                            let mut ga = vec![0f32; nb * p * o];
                            let gr_c = &gr[ci * cb * pp..][..nb * pp];
                            for ((ai, gi), gai) in act_c
                                .chunks_exact(p * o)
                                .zip(gr_c.chunks_exact(pp))
                                .zip(ga.chunks_exact_mut(p * o))
                            {
                                pool_bwd_image(kind, (g.oh(), g.ow(), o), ai, gi, gai);
                            }
                            act_grad(self.act, act_c, &ga)
                        }
                        None => act_grad(self.act, act_c, &gr[ci * cb * p * o..][..nb * p * o]),
                    };
                    let x0 = ci * cb * g.in_size();
                    let mut gb = vec![0f32; o];
                    for row in gc.chunks(o) {
                        for (a, v) in gb.iter_mut().zip(row) {
                            *a += v;
                        }
                    }
                    let t = g.tile_images();
                    let mut gw = vec![0f32; k * o];
                    let mut gx = gxc;
                    if g.c == 1 {
                        let mut acc = vec![0f32; k * o * LANES];
                        let plane_len = o * g.oh() * g.ow().div_ceil(LANES) * LANES;
                        with_scratch(plane_len, |plane| {
                            for (bi, gi) in gc.chunks_exact(p * o).enumerate() {
                                let xi = &xs[x0 + bi * g.in_size()..][..g.in_size()];
                                conv1c_wgrad(g, xi, gi, plane, &mut acc);
                            }
                        });
                        // acc is [kh*kw, o, LANES], gw [kh*kw, o].
                        for (v, a) in gw.iter_mut().zip(acc.chunks_exact(LANES)) {
                            *v = a.iter().sum();
                        }
                    }
                    if g.c != 1 || gx.is_some() {
                        with_scratch(t * p * k, |col| {
                            for (ti, gt) in gc.chunks(t * p * o).enumerate() {
                                let nt = gt.len() / (p * o);
                                let xi = ti * t * g.in_size();
                                g.im2col(&xs[x0 + xi..], nt, col);
                                if g.c != 1 {
                                    // gw[k, o] += col^T[k, nt*p] @ gpre[nt*p, o]
                                    sgemm(k, o, nt * p, &mut gw, o, ti > 0, col, 1, k, gt, o, 1);
                                }
                                if let Some(gx) = gx.as_deref_mut() {
                                    // gcol[nt*p, k] = gpre[nt*p, o] @ w^T[o, k]
                                    sgemm(nt * p, k, o, col, k, false, gt, o, 1, wt, 1, o);
                                    g.col2im(col, nt, &mut gx[xi..xi + nt * g.in_size()]);
                                }
                            }
                        });
                    }
                    (gw, gb)
                })
                .collect::<Vec<_>>()
        };
        let parts: Vec<(Vec<f32>, Vec<f32>)> = with_f32(x, |xs| {
            with_f32(w, |wt| {
                with_f32(grad_res, |gr| match &cached {
                    Some(a) => Ok(run(a, gr, xs, wt)),
                    None => with_f32(res, |y| Ok(run(y, gr, xs, wt))),
                })
            })
        })?;
        let mut gw = vec![0f32; k * o];
        let mut gb = vec![0f32; o];
        for (pw, pb) in parts {
            gw.iter_mut().zip(&pw).for_each(|(a, v)| *a += v);
            gb.iter_mut().zip(&pb).for_each(|(a, v)| *a += v);
        }
        let dev = x.device();
        let gw = Tensor::from_vec(gw, w.shape(), dev)?;
        let gb = Tensor::from_vec(gb, b.shape(), dev)?;
        let gx = if input_grad {
            Some(Tensor::from_vec(gx_all, x.shape(), dev)?)
        } else {
            None
        };
        Ok((gx, Some(gw), Some(gb)))
    }
}

/// `act(conv2d(x, w) + b)`: valid padding, stride 1, NHWC input `[B,H,W,C]`, HWIO weight
/// `[KH,KW,C,O]`, bias `[O]`; output `[B, H-KH+1, W-KW+1, O]`. With `input_grad = false` the
/// backward pass skips the gradient with respect to `x` (use it when `x` is data).
pub fn conv2d_act(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    act: Act,
    input_grad: bool,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    x.apply_op3(w, b, Conv2dAct::new(act, input_grad, None))
}

/// `pool(act(conv2d(x, w) + b))` in one op (see [`conv2d_act`]): the pre-pool activations
/// never become a tensor, which saves their allocation and candle's gradient accumulation.
/// Output `[B, (H-KH+1)/2, (W-KW+1)/2, O]`.
pub fn conv2d_act_pool(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    act: Act,
    input_grad: bool,
    pool: Pool2,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    x.apply_op3(w, b, Conv2dAct::new(act, input_grad, Some(pool)))
}

/// 2x2, stride-2 pooling over NHWC (an odd last row/column is dropped, as Keras' 'valid').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool2 {
    Avg,
    Max,
}

fn pool_dims(d: &[usize]) -> Result<(usize, usize, usize, usize)> {
    match d {
        &[b, h, w, c] if h >= 2 && w >= 2 => Ok((b, h, w, c)),
        _ => candle_core::bail!("pool2: expected [B,H,W,C] with H,W >= 2, got {d:?}"),
    }
}

/// The windows of 2x2, stride-2 pooling over one `h x w x c` NHWC image, channels in blocks
/// of `step` (which divides `c`): `f(o, [p00, p01, p10, p11])` with `o` the offset of a block
/// in the pooled image and `p..` those of the same block in the window's four pixels (row,
/// column).
#[inline(always)]
fn for_windows(
    (h, w, c): (usize, usize, usize),
    step: usize,
    mut f: impl FnMut(usize, [usize; 4]),
) {
    let (oh, ow) = (h / 2, w / 2);
    for i in 0..oh {
        for j in 0..ow {
            let p00 = (2 * i * w + 2 * j) * c;
            let p10 = p00 + w * c;
            for cb in (0..c).step_by(step) {
                f(
                    (i * ow + j) * c + cb,
                    [p00 + cb, p00 + c + cb, p10 + cb, p10 + c + cb],
                );
            }
        }
    }
}

simd_fn! {
    /// 2x2 pooling of one NHWC image `img` (`h x w x c`) into `yb`.
    fn pool_fwd_image(kind: Pool2, dims: (usize, usize, usize), img: &[f32], yb: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if dims.2.is_multiple_of(4) && has_avx2_fma() {
            // SAFETY: AVX2 is present; sizes are asserted inside.
            unsafe { x86::pool_fwd_image(kind, dims, img, yb) };
            return;
        }
        let c = dims.2;
        for_windows(dims, c, |o, [p00, p01, p10, p11]| {
            for ch in 0..c {
                let (a, bb, cc, d) = (img[p00 + ch], img[p01 + ch], img[p10 + ch], img[p11 + ch]);
                yb[o + ch] = match kind {
                    Pool2::Avg => 0.25 * (a + bb + cc + d),
                    Pool2::Max => a.max(bb).max(cc.max(d)),
                };
            }
        });
    }
}

simd_fn! {
    /// Backward of [`pool_fwd_image`]: the gradient `gxb` of the image `img` from the gradient
    /// `gb` of its pooled output (`gxb` zeroed by the caller).
    fn pool_bwd_image(kind: Pool2, dims: (usize, usize, usize), img: &[f32], gb: &[f32], gxb: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if kind == Pool2::Avg && dims.2.is_multiple_of(4) && has_avx2_fma() {
            // SAFETY: AVX2 is present; sizes are asserted inside.
            unsafe { x86::avg_pool_bwd_image(dims, gb, gxb) };
            return;
        }
        let c = dims.2;
        for_windows(dims, c, |o, [p00, p01, p10, p11]| {
            let g = &gb[o..][..c];
            match kind {
                Pool2::Avg => {
                    for p in [p00, p01, p10, p11] {
                        for (d, &gv) in gxb[p..p + c].iter_mut().zip(g) {
                            *d = 0.25 * gv;
                        }
                    }
                }
                Pool2::Max => {
                    // Branch-free (vectorises over channels): the first maximal input of each
                    // window gets the gradient, the others zero.
                    for (ch, &gv) in g.iter().enumerate() {
                        let (a, b, cc, d) =
                            (img[p00 + ch], img[p01 + ch], img[p10 + ch], img[p11 + ch]);
                        let m = a.max(b).max(cc.max(d));
                        let ta = a == m;
                        let tb = !ta && b == m;
                        let tc = !ta && !tb && cc == m;
                        let td = !ta && !tb && !tc;
                        gxb[p00 + ch] = if ta { gv } else { 0.0 };
                        gxb[p01 + ch] = if tb { gv } else { 0.0 };
                        gxb[p10 + ch] = if tc { gv } else { 0.0 };
                        gxb[p11 + ch] = if td { gv } else { 0.0 };
                    }
                }
            }
        });
    }
}

/// Pooling forward over NHWC `x` of dims `(b, h, w, c)`: the pooled data and its shape.
fn pool_fwd(
    kind: Pool2,
    (b, h, w, c): (usize, usize, usize, usize),
    x: &[f32],
) -> Result<(Vec<f32>, Shape)> {
    if h < 2 || w < 2 {
        candle_core::bail!("pool2: expected H, W >= 2, got {h}x{w}");
    }
    let (oh, ow) = (h / 2, w / 2);
    let mut y = vec![0f32; b * oh * ow * c];
    let per = oh * ow * c;
    y.par_chunks_mut(per)
        .enumerate()
        .for_each(|(bi, yb)| pool_fwd_image(kind, (h, w, c), &x[bi * h * w * c..], yb));
    Ok((y, Shape::from((b, oh, ow, c))))
}

/// Pooling backward: the gradient with respect to the pooling input `x` (dims `(b, h, w, c)`)
/// from the gradient `g` of its output. Max pooling routes to the first maximal input.
fn pool_bwd(
    kind: Pool2,
    (b, h, w, c): (usize, usize, usize, usize),
    x: &[f32],
    g: &[f32],
) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut gx = vec![0f32; b * h * w * c];
    gx.par_chunks_mut(h * w * c)
        .enumerate()
        .for_each(|(bi, gxb)| {
            let img = &x[bi * h * w * c..(bi + 1) * h * w * c];
            pool_bwd_image(kind, (h, w, c), img, &g[bi * oh * ow * c..], gxb)
        });
    gx
}

impl CustomOp1 for Pool2 {
    fn name(&self) -> &'static str {
        match self {
            Pool2::Avg => "twindex-avg-pool2",
            Pool2::Max => "twindex-max-pool2",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = pool_dims(l.dims())?;
        let x = cpu_slice(s, l, "pool2 input")?;
        let (y, shape) = pool_fwd(*self, dims, x)?;
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dims = pool_dims(arg.dims())?;
        let gx = with_f32(grad_res, |g| {
            with_f32(arg, |x| Ok(pool_bwd(*self, dims, x, g)))
        })?;
        Ok(Some(Tensor::from_vec(gx, arg.shape(), arg.device())?))
    }
}

/// 2x2 average pooling, stride 2, NHWC.
pub fn avg_pool2(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Pool2::Avg)
}

/// 2x2 max pooling, stride 2, NHWC.
pub fn max_pool2(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Pool2::Max)
}

/// Elementwise fast tanh with backward `1 - y^2`.
#[derive(Debug, Clone, Copy)]
pub struct FastTanh;

impl CustomOp1 for FastTanh {
    fn name(&self) -> &'static str {
        "twindex-fast-tanh"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s, l, "tanh input")?;
        let mut y = x.to_vec();
        act_in_place(Act::Tanh, &mut y);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = with_f32(res, |y| {
            with_f32(grad_res, |g| Ok(act_grad(Act::Tanh, y, g)))
        })?;
        Ok(Some(Tensor::from_vec(g, res.shape(), res.device())?))
    }
}

/// Elementwise tanh through [`fast_tanh`], with backward.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(FastTanh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand_tensor(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let v = crate::testutil::XorShift::new(seed).take(n);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The gradients of `sum(t * proj)`: a random projection makes every element of `t` matter.
    fn grads_of(t: Tensor, proj: &Tensor) -> candle_core::backprop::GradStore {
        (t * proj).unwrap().sum_all().unwrap().backward().unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn fast_tanh_matches_std() {
        let mut worst = 0f32;
        for i in -20000..=20000 {
            let x = i as f32 * 0.001;
            worst = worst.max((fast_tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 2e-6, "max |fast_tanh - tanh| = {worst}");
    }

    /// The generic candle path (NCHW conv2d, candle tanh/relu, avg_pool2d) as the oracle.
    fn generic(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> Tensor {
        let xn = x.permute((0, 3, 1, 2)).unwrap();
        let wn = w.permute((3, 2, 0, 1)).unwrap().contiguous().unwrap();
        let y = xn
            .conv2d(&wn, 0, 1, 1, 1)
            .unwrap()
            .broadcast_add(&b.reshape((1, b.dim(0).unwrap(), 1, 1)).unwrap())
            .unwrap();
        let y = match act {
            Act::Tanh => y.tanh().unwrap(),
            Act::Relu => y.relu().unwrap(),
            Act::Identity => y,
        };
        y.permute((0, 2, 3, 1)).unwrap()
    }

    #[test]
    fn conv_forward_and_backward_match_generic_candle() {
        for (act, shape, k, o, seed) in [
            (Act::Tanh, [5, 12, 10, 3], 5, 4, 1u64),
            (Act::Relu, [3, 8, 8, 2], 3, 6, 2),
            (Act::Identity, [4, 6, 7, 1], 5, 2, 3),
            // Single-channel inputs take the direct path: whole register blocks (LeNet's first
            // layer), and column / channel tails.
            (Act::Tanh, [3, 28, 28, 1], 5, 4, 4),
            (Act::Relu, [2, 20, 23, 1], 3, 6, 5),
            // AVX2 blocks of 3, 2 and 1 vectors with a scalar column tail (ow = 33 and 21),
            // several channel blocks, the AVX-512 kernel-row taps for kw = 5 and 3.
            (Act::Tanh, [2, 30, 37, 1], 5, 4, 15),
            (Act::Relu, [2, 20, 23, 1], 3, 8, 16),
            (Act::Tanh, [2, 14, 17, 1], 5, 9, 6),
        ] {
            let x = Var::from_tensor(&rand_tensor(&shape, seed)).unwrap();
            let w = Var::from_tensor(&rand_tensor(&[k, k, shape[3], o], seed + 10)).unwrap();
            let b = Var::from_tensor(&rand_tensor(&[o], seed + 20)).unwrap();
            // A random projection of the output makes every output element matter in the loss.
            let fast = conv2d_act(&x, &w, &b, act, true).unwrap();
            let slow = generic(&x, &w, &b, act);
            assert!(max_abs_diff(&fast, &slow) < 1e-5, "{act:?} forward");
            let proj = rand_tensor(fast.dims(), seed + 30);
            let gf = grads_of(fast, &proj);
            let gs = grads_of(slow, &proj);
            for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                let (a, bb) = (gf.get(v).unwrap(), gs.get(v).unwrap());
                let d = max_abs_diff(a, bb);
                assert!(d < 1e-4, "{act:?} grad {name}: max diff {d}");
            }
            // Without the input gradient, x gets none and w still gets the same.
            let fast = conv2d_act(&x, &w, &b, act, false).unwrap();
            let g = grads_of(fast, &proj);
            assert!(g.get(&x).is_none());
            assert!(max_abs_diff(g.get(&w).unwrap(), gs.get(&w).unwrap()) < 1e-4);
        }
    }

    #[test]
    fn fused_conv_pool_matches_separate_ops() {
        for (act, pool, c, seed) in [
            (Act::Tanh, Pool2::Avg, 2, 11u64),
            (Act::Relu, Pool2::Max, 2, 12),
            (Act::Tanh, Pool2::Avg, 1, 13),
            (Act::Relu, Pool2::Max, 1, 14),
        ] {
            let x = Var::from_tensor(&rand_tensor(&[3, 20, 20, c], seed)).unwrap();
            let w = Var::from_tensor(&rand_tensor(&[5, 5, c, 4], seed + 1)).unwrap();
            let b = Var::from_tensor(&rand_tensor(&[4], seed + 2)).unwrap();
            let fused = conv2d_act_pool(&x, &w, &b, act, true, pool).unwrap();
            let slow = generic(&x, &w, &b, act)
                .contiguous()
                .unwrap()
                .apply_op1(pool)
                .unwrap();
            assert!(
                max_abs_diff(&fused, &slow) < 1e-5,
                "{act:?} {pool:?} forward"
            );
            let proj = rand_tensor(fused.dims(), seed + 3);
            let gf = grads_of(fused, &proj);
            let gs = grads_of(slow, &proj);
            for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                let d = max_abs_diff(gf.get(v).unwrap(), gs.get(v).unwrap());
                assert!(d < 1e-4, "{act:?} {pool:?} grad {name}: max diff {d}");
            }
        }
    }

    #[test]
    fn pools_match_generic_candle() {
        // 5 channels: the portable loops; 8: the AVX2 paths (channels in blocks of 4).
        for c in [5usize, 8] {
            pools_case(c);
        }
    }

    fn pools_case(c: usize) {
        let x = Var::from_tensor(&rand_tensor(&[3, 8, 6, c], 9)).unwrap();
        let proj = rand_tensor(&[3, 4, 3, c], 10);
        let xn = x.permute((0, 3, 1, 2)).unwrap();
        // Average pooling: candle's avg_pool2d and its backward are the oracle.
        let slow = xn.avg_pool2d(2).unwrap().permute((0, 2, 3, 1)).unwrap();
        let fast = avg_pool2(&x).unwrap();
        assert!(max_abs_diff(&fast, &slow) < 1e-6, "avg forward");
        let gf = (&fast * &proj)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gs = grads_of(slow, &proj);
        let d = max_abs_diff(gf.get(&x).unwrap(), gs.get(&x).unwrap());
        assert!(d < 1e-6, "avg backward: max diff {d}");
        // Max pooling: candle's forward is the oracle; its backward scales by 1/4 (it multiplies
        // by the window's mean of the argmax mask), so the backward oracle is written out here:
        // d(sum(y * proj))/dx[b,i,j,c] = proj[b,i/2,j/2,c] if x[b,i,j,c] is its window's max.
        let slow = xn.max_pool2d(2).unwrap().permute((0, 2, 3, 1)).unwrap();
        let fast = max_pool2(&x).unwrap();
        assert!(max_abs_diff(&fast, &slow) < 1e-6, "max forward");
        let gx: Vec<f32> = {
            let g = (&fast * &proj)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            g.get(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let pv = proj.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (h, w) = (8usize, 6usize);
        for b in 0..3 {
            for i in 0..h {
                for j in 0..w {
                    for ch in 0..c {
                        let at = |ii: usize, jj: usize| xv[((b * h + ii) * w + jj) * c + ch];
                        let (wi, wj) = (i / 2 * 2, j / 2 * 2);
                        let m = at(wi, wj)
                            .max(at(wi, wj + 1))
                            .max(at(wi + 1, wj))
                            .max(at(wi + 1, wj + 1));
                        let want = if at(i, j) == m {
                            pv[((b * 4 + i / 2) * 3 + j / 2) * c + ch]
                        } else {
                            0.0
                        };
                        let got = gx[((b * h + i) * w + j) * c + ch];
                        assert!(
                            (got - want).abs() < 1e-6,
                            "max backward at {b},{i},{j},{ch}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn tanh_op_matches_candle() {
        let x = Var::from_tensor(&(rand_tensor(&[7, 13], 4) * 3.0).unwrap()).unwrap();
        let proj = rand_tensor(&[7, 13], 5);
        let fast = tanh(&x).unwrap();
        let slow = x.tanh().unwrap();
        assert!(max_abs_diff(&fast, &slow) < 2e-6);
        let gf = grads_of(fast, &proj);
        let gs = grads_of(slow, &proj);
        assert!(max_abs_diff(gf.get(&x).unwrap(), gs.get(&x).unwrap()) < 1e-5);
    }
}
