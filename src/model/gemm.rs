//! The general single-precision matrix product (the `gemm` crate) with explicit strides, shared
//! by the CNN ops ([`super::cnn_ops`]) and the BERT trainer ([`super::gradbert`]).

/// Row-major single-precision gemm: `dst[m,n] (+)= lhs[m,k] @ rhs[k,n]` with explicit strides
/// (row stride, column stride) for each operand. `accumulate` adds to `dst` instead of overwriting.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
) {
    sgemm_with(
        m,
        n,
        k,
        dst,
        dst_rs,
        accumulate,
        (lhs, lhs_rs, lhs_cs),
        (rhs, rhs_rs, rhs_cs),
        gemm::Parallelism::None,
    )
}

/// All of rayon's threads (the `--threads` of the run) for the `gemm` crate when there are
/// several, else none.
pub(crate) fn rayon_parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    }
}

/// An operand of [`sgemm_with`]: data, row stride, column stride.
pub(crate) type Operand<'a> = (&'a [f32], usize, usize);

/// [`sgemm`] with the operands as [`Operand`]s and a choice of parallelism.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_with(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): Operand,
    (rhs, rhs_rs, rhs_cs): Operand,
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    debug_assert!(dst.len() >= (m - 1) * dst_rs + n);
    debug_assert!(k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the slices cover every index the strides address (checked above in debug builds,
    // and by construction at every call site).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}
