//! Distance kernels over `f32` slices: squared Euclidean distance and inner product.
//!
//! Each kernel exists as a portable scalar loop and, on x86_64, as AVX2+FMA and AVX-512F
//! versions chosen once at run time ([`crate::cpu`]). The SIMD versions are tested
//! against the scalar ones (`tests/index_graph.rs`). Callers on the hot path take the function
//! pointers from [`kernels`] once and call them directly.

use std::sync::OnceLock;

/// A distance kernel: both slices have the same length (callers check it).
pub type DistanceFn = fn(&[f32], &[f32]) -> f32;

/// A bounded squared-L2 kernel: returns the exact value when it is <= `bound`, and otherwise
/// some partial sum > `bound` (it stops early once the partial sum, which only grows, passes
/// the bound). Below the bound it is bit-identical to the unbounded kernel of the same set.
pub type BoundedDistanceFn = fn(&[f32], &[f32], f32) -> f32;

/// The kernels chosen for this CPU.
#[derive(Clone, Copy, Debug)]
pub struct DistanceKernels {
    /// Squared Euclidean distance.
    pub l2_squared: DistanceFn,
    /// Inner product.
    pub dot: DistanceFn,
    /// Squared Euclidean distance with early exit above a bound.
    pub l2_squared_bounded: BoundedDistanceFn,
    /// Which instruction set was chosen: `"avx512f"`, `"avx2+fma"` or `"scalar"`.
    pub level: &'static str,
}

/// The fastest kernels this CPU supports, detected once.
pub fn kernels() -> &'static DistanceKernels {
    static K: OnceLock<DistanceKernels> = OnceLock::new();
    K.get_or_init(detect)
}

fn detect() -> DistanceKernels {
    #[cfg(target_arch = "x86_64")]
    {
        if std::env::var_os("TWINDEX_NO_SIMD").is_none() {
            if crate::cpu::has_avx512f() {
                return DistanceKernels {
                    l2_squared: x86::l2_squared_avx512,
                    dot: x86::dot_avx512,
                    l2_squared_bounded: x86::l2_squared_bounded_avx512,
                    level: "avx512f",
                };
            }
            if crate::cpu::has_avx2_fma() {
                return DistanceKernels {
                    l2_squared: x86::l2_squared_avx2,
                    dot: x86::dot_avx2,
                    l2_squared_bounded: x86::l2_squared_bounded_avx2,
                    level: "avx2+fma",
                };
            }
        }
    }
    DistanceKernels {
        l2_squared: l2_squared_scalar,
        dot: dot_scalar,
        l2_squared_bounded: l2_squared_bounded_scalar,
        level: "scalar",
    }
}

/// Squared Euclidean distance with the fastest kernel for this CPU.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2_squared)(a, b)
}

/// Inner product with the fastest kernel for this CPU.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

/// Portable squared Euclidean distance (eight partial sums, so the compiler vectorises it with
/// the baseline instruction set). Extra elements of the longer slice are ignored.
pub fn l2_squared_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        let d = x - y;
        s += d * d;
    }
    s
}

/// Portable bounded squared Euclidean distance (see [`BoundedDistanceFn`]); same summation order
/// as [`l2_squared_scalar`], checking the bound every 128 elements.
pub fn l2_squared_bounded_scalar(a: &[f32], b: &[f32], bound: f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    let mut i = 0;
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..8 {
            let d = x[j] - y[j];
            acc[j] += d * d;
        }
        i += 8;
        if i % 128 == 0 {
            let partial: f32 = acc.iter().sum();
            if partial > bound {
                return partial;
            }
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        let d = x - y;
        s += d * d;
    }
    s
}

/// Portable inner product (see [`l2_squared_scalar`]).
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

/// Hint the CPU to fetch the cache line at `p` (a no-op off x86_64).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SIMD kernels. The safe wrappers are only handed out by `detect` after the CPU
    //! features were checked; they read `min(a.len(), b.len())` elements.
    use std::arch::x86_64::*;

    pub fn l2_squared_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: selected only when avx2 and fma are detected; reads stay below n.
        unsafe { l2_avx2(a.as_ptr(), b.as_ptr(), n) }
    }

    pub fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: as above.
        unsafe { dot_avx2_raw(a.as_ptr(), b.as_ptr(), n) }
    }

    pub fn l2_squared_bounded_avx2(a: &[f32], b: &[f32], bound: f32) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: selected only when avx2 and fma are detected; reads stay below n.
        unsafe { l2_avx2_bounded(a.as_ptr(), b.as_ptr(), n, bound) }
    }

    pub fn l2_squared_bounded_avx512(a: &[f32], b: &[f32], bound: f32) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: selected only when avx512f is detected; reads stay below n (masked tail).
        unsafe { l2_avx512_bounded(a.as_ptr(), b.as_ptr(), n, bound) }
    }

    pub fn l2_squared_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: selected only when avx512f is detected; reads stay below n (masked tail).
        unsafe { l2_avx512(a.as_ptr(), b.as_ptr(), n) }
    }

    pub fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: as above.
        unsafe { dot_avx512_raw(a.as_ptr(), b.as_ptr(), n) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0x55>(s, s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn l2_avx2(pa: *const f32, pb: *const f32, n: usize) -> f32 {
        l2_avx2_bounded(pa, pb, n, f32::INFINITY)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn l2_avx2_bounded(pa: *const f32, pb: *const f32, n: usize, bound: f32) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, a) in acc.iter_mut().enumerate() {
                let d = _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                );
                *a = _mm256_fmadd_ps(d, d, *a);
            }
            i += 32;
            if i % 128 == 0 && bound < f32::INFINITY {
                let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                let partial = hsum256(s);
                if partial > bound {
                    return partial;
                }
            }
        }
        while i + 8 <= n {
            let d = _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)));
            acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut r = hsum256(s);
        while i < n {
            let d = *pa.add(i) - *pb.add(i);
            r += d * d;
            i += 1;
        }
        r
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2_raw(pa: *const f32, pb: *const f32, n: usize) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                    *a,
                );
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut r = hsum256(s);
        while i < n {
            r += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        r
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn l2_avx512(pa: *const f32, pb: *const f32, n: usize) -> f32 {
        l2_avx512_bounded(pa, pb, n, f32::INFINITY)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn l2_avx512_bounded(pa: *const f32, pb: *const f32, n: usize, bound: f32) -> f32 {
        let mut a0 = _mm512_setzero_ps();
        let mut a1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            let d0 = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            let d1 = _mm512_sub_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
            );
            a0 = _mm512_fmadd_ps(d0, d0, a0);
            a1 = _mm512_fmadd_ps(d1, d1, a1);
            i += 32;
            if i % 128 == 0 && bound < f32::INFINITY {
                let partial = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
                if partial > bound {
                    return partial;
                }
            }
        }
        if i + 16 <= n {
            let d = _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)));
            a0 = _mm512_fmadd_ps(d, d, a0);
            i += 16;
        }
        if i < n {
            let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
            let d = _mm512_sub_ps(
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
            );
            a1 = _mm512_fmadd_ps(d, d, a1);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(a0, a1))
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dot_avx512_raw(pa: *const f32, pb: *const f32, n: usize) -> f32 {
        let mut a0 = _mm512_setzero_ps();
        let mut a1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), a0);
            a1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(pa.add(i + 16)),
                _mm512_loadu_ps(pb.add(i + 16)),
                a1,
            );
            i += 32;
        }
        if i + 16 <= n {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), a0);
            i += 16;
        }
        if i < n {
            let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
            a1 = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
                a1,
            );
        }
        _mm512_reduce_add_ps(_mm512_add_ps(a0, a1))
    }

    /// Every kernel set available on this CPU, for the tests.
    pub fn available() -> Vec<super::DistanceKernels> {
        let mut v = Vec::new();
        if crate::cpu::has_avx2_fma() {
            v.push(super::DistanceKernels {
                l2_squared: l2_squared_avx2,
                dot: dot_avx2,
                l2_squared_bounded: l2_squared_bounded_avx2,
                level: "avx2+fma",
            });
        }
        if crate::cpu::has_avx512f() {
            v.push(super::DistanceKernels {
                l2_squared: l2_squared_avx512,
                dot: dot_avx512,
                l2_squared_bounded: l2_squared_bounded_avx512,
                level: "avx512f",
            });
        }
        v
    }
}

/// Every kernel set this CPU can run, scalar first. For tests and benchmarks that compare
/// implementations.
pub fn available_kernels() -> Vec<DistanceKernels> {
    let mut v = vec![DistanceKernels {
        l2_squared: l2_squared_scalar,
        dot: dot_scalar,
        l2_squared_bounded: l2_squared_bounded_scalar,
        level: "scalar",
    }];
    #[cfg(target_arch = "x86_64")]
    v.extend(x86::available());
    v
}
