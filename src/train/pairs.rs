//! The pairs a pair loss looks at, and the tensor pieces every pair loss shares.
//!
//! A pair loss compares `N` query embeddings (the batch) with `M` reference embeddings (the
//! batch itself, or a cross-batch memory, [`super::xbm`]). Which (query `i`, reference `j`)
//! pairs count is a [`PairMask`]: `pos[i * M + j]` for a positive pair (same label, never an
//! item with itself), `neg[i * M + j]` for a negative pair (different labels). Without a miner
//! every pair counts (pytorch-metric-learning's `get_all_pairs_indices`); a miner keeps a
//! subset ([`super::mining::multi_similarity_pairs`], or triplets turned into pairs as
//! pytorch-metric-learning's `convert_to_pairs` does).
//!
//! The helpers work in the embeddings' dtype (f32 for training, f64 in the oracle tests).

use super::mining::Triplet;
use candle_core::{bail, DType, Result, Tensor, D};

/// Which (query, reference) pairs count: positives and negatives, row-major `[n * m]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PairMask {
    /// Queries (rows).
    pub n: usize,
    /// References (columns).
    pub m: usize,
    /// Positive pairs: same label, not an item with itself.
    pub pos: Vec<bool>,
    /// Negative pairs: different labels.
    pub neg: Vec<bool>,
    /// The queries' labels (`[n]`).
    pub labels: Vec<u32>,
    /// The references' labels (`[m]`).
    pub ref_labels: Vec<u32>,
}

impl PairMask {
    /// Every pair of a batch with itself: `i != j` with equal labels are positives, different
    /// labels negatives.
    pub fn all_pairs(labels: &[u32]) -> Self {
        let self_cols: Vec<usize> = (0..labels.len()).collect();
        Self::against(labels, labels, Some(&self_cols)).expect("same lengths")
    }

    /// Every pair of the queries (`labels`) with a reference set (`ref_labels`); `self_cols[i]`,
    /// where given, is the column that holds query `i` itself (a cross-batch memory holds the
    /// batch too), never a positive of it (pytorch-metric-learning's `remove_self_comparisons`).
    pub fn against(
        labels: &[u32],
        ref_labels: &[u32],
        self_cols: Option<&[usize]>,
    ) -> Result<Self> {
        let (n, m) = (labels.len(), ref_labels.len());
        if let Some(s) = self_cols {
            if s.len() != n || s.iter().any(|&c| c >= m) {
                bail!(
                    "PairMask: {n} queries need {n} self columns below {m}, got {}",
                    s.len()
                );
            }
        }
        let mut pos = vec![false; n * m];
        let mut neg = vec![false; n * m];
        for i in 0..n {
            for j in 0..m {
                if labels[i] == ref_labels[j] {
                    pos[i * m + j] = self_cols.is_none_or(|s| s[i] != j);
                } else {
                    neg[i * m + j] = true;
                }
            }
        }
        Ok(PairMask {
            n,
            m,
            pos,
            neg,
            labels: labels.to_vec(),
            ref_labels: ref_labels.to_vec(),
        })
    }

    /// The pairs of mined triplets of a batch with itself: `(a, p)` positive and `(a, n)`
    /// negative (pytorch-metric-learning's `convert_to_pairs`).
    pub fn from_triplets(labels: &[u32], triplets: &[Triplet]) -> Result<Self> {
        let n = labels.len();
        let mut mask = PairMask {
            n,
            m: n,
            pos: vec![false; n * n],
            neg: vec![false; n * n],
            labels: labels.to_vec(),
            ref_labels: labels.to_vec(),
        };
        for t in triplets {
            let (a, p, q) = (t.a as usize, t.p as usize, t.n as usize);
            if a >= n || p >= n || q >= n {
                bail!("PairMask: triplet ({a}, {p}, {q}) outside a batch of {n}");
            }
            mask.pos[a * n + p] = true;
            mask.neg[a * n + q] = true;
        }
        Ok(mask)
    }

    /// Number of positive pairs.
    pub fn n_pos(&self) -> usize {
        self.pos.iter().filter(|&&b| b).count()
    }

    /// Number of negative pairs.
    pub fn n_neg(&self) -> usize {
        self.neg.iter().filter(|&&b| b).count()
    }

    /// Check that `emb` is `[n, D]` and `reference` is `[m, D]` for this mask.
    pub fn check(&self, emb: &Tensor, reference: &Tensor, what: &str) -> Result<()> {
        let (n, d) = emb.dims2().map_err(|_| {
            candle_core::Error::Msg(format!(
                "{what}: embeddings must be [N, D], got {:?}",
                emb.dims()
            ))
        })?;
        let (m, d2) = reference.dims2().map_err(|_| {
            candle_core::Error::Msg(format!(
                "{what}: reference embeddings must be [M, D], got {:?}",
                reference.dims()
            ))
        })?;
        if d != d2 || n != self.n || m != self.m {
            bail!(
                "{what}: embeddings {n}x{d} and references {m}x{d2} for a {}x{} pair mask",
                self.n,
                self.m
            );
        }
        if !matches!(emb.dtype(), DType::F32 | DType::F64) || emb.dtype() != reference.dtype() {
            bail!(
                "{what}: embeddings must be f32 or f64 (got {:?} and {:?})",
                emb.dtype(),
                reference.dtype()
            );
        }
        Ok(())
    }
}

/// A `[n, m]` 0/1 mask tensor (u8) from row-major booleans.
pub(crate) fn mask_tensor(mask: &[bool], n: usize, m: usize, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(
        mask.iter().map(|&b| b as u8).collect::<Vec<u8>>(),
        (n, m),
        like.device(),
    )
}

/// A tensor of `v` (f64 values) in `like`'s dtype and device, of shape `shape`.
pub(crate) fn constant(v: Vec<f64>, shape: (usize, usize), like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, shape, like.device())?.to_dtype(like.dtype())
}

/// The values of a rank-2 tensor as f64 rows (detached: used for masks, maxima, weights).
pub(crate) fn host2(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    t.to_dtype(DType::F64)?.to_vec2::<f64>()
}

/// Rows scaled to unit length, the norm floored at 1e-12 (`torch.nn.functional.normalize`).
pub fn unit_rows(t: &Tensor) -> Result<Tensor> {
    let norm = t
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    t.broadcast_div(&norm)
}

/// Cosine similarities `[N, M]` of the rows of `emb` `[N, D]` and `reference` `[M, D]`.
pub fn cosine_matrix(emb: &Tensor, reference: &Tensor) -> Result<Tensor> {
    unit_rows(emb)?.matmul(&unit_rows(reference)?.t()?)
}

/// Euclidean distances `[N, M]` of the L2-normalised rows (pytorch-metric-learning's default
/// `LpDistance`): `sqrt(2 - 2 cos)`, floored at 1e-12 under the root so that an item's
/// distance to itself (never a pair) keeps a finite gradient.
pub fn unit_distance_matrix(emb: &Tensor, reference: &Tensor) -> Result<Tensor> {
    cosine_matrix(emb, reference)?
        .affine(-2.0, 2.0)?
        .clamp(1e-12, f64::MAX)?
        .sqrt()
}

/// Row-wise `log(sum_j exp(x_ij))` over the `mask`ed entries of `x` `[n, m]` (and a 0 entry
/// too with `add_one`): `[n]`. A row without a masked entry gives 0, as
/// pytorch-metric-learning's `logsumexp(x, keep_mask, add_one)`. Stable (the row maximum,
/// detached, is taken out first); masked-out entries get no gradient.
pub fn masked_logsumexp(x: &Tensor, mask: &[bool], add_one: bool) -> Result<Tensor> {
    let (n, m) = x.dims2()?;
    if mask.len() != n * m {
        bail!(
            "masked_logsumexp: a {n}x{m} matrix with a mask of {}",
            mask.len()
        );
    }
    let xv = host2(x)?;
    let mut maxima = vec![0f64; n];
    let mut empty = vec![0f64; n];
    for i in 0..n {
        let mut mx = if add_one { 0.0 } else { f64::NEG_INFINITY };
        for j in 0..m {
            if mask[i * m + j] {
                mx = mx.max(xv[i][j]);
            }
        }
        if mx == f64::NEG_INFINITY {
            // No entry: the row's sum is 0; adding 1 makes its log 0.
            mx = 0.0;
            empty[i] = 1.0;
        }
        maxima[i] = mx;
    }
    let maxt = constant(maxima.clone(), (n, 1), x)?;
    let ninf = Tensor::full(f64::NEG_INFINITY, (n, m), x.device())?.to_dtype(x.dtype())?;
    let shifted = mask_tensor(mask, n, m, x)?.where_cond(&x.broadcast_sub(&maxt)?, &ninf)?;
    let mut sum = shifted.exp()?.sum(1)?;
    let extra: Vec<f64> = (0..n)
        .map(|i| empty[i] + if add_one { (-maxima[i]).exp() } else { 0.0 })
        .collect();
    sum = (sum + constant(extra, (n, 1), x)?.squeeze(1)?)?;
    sum.log()? + maxt.squeeze(1)?
}

/// Mean of the entries of `losses` `[n]` that are above 0 (pytorch-metric-learning's
/// `AvgNonZeroReducer`); 0 (with a zero gradient) when none is.
pub fn mean_of_positive(losses: &Tensor) -> Result<Tensor> {
    let v = losses.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let keep: Vec<f64> = v.iter().map(|&l| (l > 0.0) as u8 as f64).collect();
    let count: f64 = keep.iter().sum();
    let n = v.len();
    let k = Tensor::from_vec(keep, n, losses.device())?.to_dtype(losses.dtype())?;
    (losses * k)?.sum_all()? / count.max(1.0)
}

/// `log(1 + exp(z))`, stable for large `|z|`: `max(z, 0) + log(1 + exp(-|z|))`.
pub fn softplus(z: &Tensor) -> Result<Tensor> {
    z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?
}
