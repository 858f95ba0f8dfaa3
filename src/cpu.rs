//! What this CPU can run, detected once per process: the one place the crate asks. The SIMD
//! kernels of `index` (distances, quantized walks) and `model` (CNN ops, BERT linear layers,
//! element-wise ops) choose their paths through these functions, and their tests ask the same
//! functions whether the fast path exists here to be compared with its scalar oracle.

use std::sync::OnceLock;

/// The instruction-set extensions the kernels use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// AVX2 with fused multiply-add.
    pub avx2_fma: bool,
    /// AVX2 (integer lanes, without FMA).
    pub avx2: bool,
    /// AVX-512 Foundation.
    pub avx512f: bool,
    /// AVX-512 Vector Length extensions.
    pub avx512vl: bool,
    /// AVX-512 Byte and Word instructions.
    pub avx512bw: bool,
    /// AVX-512 BF16 dot products.
    pub avx512bf16: bool,
}

/// The features of this CPU (none on other architectures).
pub fn features() -> Features {
    static F: OnceLock<Features> = OnceLock::new();
    *F.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Features {
    use std::arch::is_x86_feature_detected as has;
    Features {
        avx2_fma: has!("avx2") && has!("fma"),
        avx2: has!("avx2"),
        avx512f: has!("avx512f"),
        avx512vl: has!("avx512vl"),
        avx512bw: has!("avx512bw"),
        avx512bf16: has!("avx512f") && has!("avx512bf16"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Features {
    Features::default()
}

/// AVX2 and FMA.
pub fn has_avx2_fma() -> bool {
    features().avx2_fma
}

/// AVX2.
pub fn has_avx2() -> bool {
    features().avx2
}

/// AVX-512F.
pub fn has_avx512f() -> bool {
    features().avx512f
}

/// AVX-512F and AVX-512VL.
pub fn has_avx512f_vl() -> bool {
    features().avx512f && features().avx512vl
}

/// AVX-512BW.
pub fn has_avx512bw() -> bool {
    features().avx512bw
}

/// AVX-512F with BF16 dot products.
pub fn has_avx512bf16() -> bool {
    features().avx512bf16
}
