//! Pair losses over a batch and a reference set, as pytorch-metric-learning (PML) defines them
//! (its definitions and defaults; STYLE habits 3 and 18): multi-similarity, SupCon, NT-Xent,
//! circle, generalised lifted structure and the angular loss.
//!
//! Each is a free function of `emb` `[N, D]` (the batch, differentiated), `reference`
//! `[M, D]` (the batch itself, or a cross-batch memory, [`super::xbm`]) and a [`PairMask`]
//! (which pairs count). Shapes are checked and a mismatch is an error naming both. All but the
//! lifted structure loss use cosine similarity of L2-normalised rows; lifted uses Euclidean
//! distance of L2-normalised rows (PML's default `LpDistance`). The reductions are PML's: a
//! mean over rows (multi-similarity, lifted), over positive pairs (NT-Xent, angular) or over
//! the rows with a positive loss (SupCon, circle: `AvgNonZeroReducer`).

use super::pairs::{
    constant, cosine_matrix, host2, mask_tensor, masked_logsumexp, mean_of_positive, softplus,
    unit_distance_matrix, unit_rows, PairMask,
};
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// A zero loss that keeps `emb` in the graph (PML's `zero_loss`: `sum(emb * 0)`).
fn zero(emb: &Tensor) -> Result<Tensor> {
    emb.affine(0.0, 0.0)?.sum_all()
}

/// The loss `what` of `emb` against `reference` under `mask`: the shapes checked, zero (still
/// joined to `emb`'s graph) when the mask holds no pair, else `body()`.
fn over_pairs(
    (emb, reference, mask): (&Tensor, &Tensor, &PairMask),
    what: &str,
    body: impl FnOnce() -> Result<Tensor>,
) -> Result<Tensor> {
    mask.check(emb, reference, what)?;
    if mask.n_pos() + mask.n_neg() == 0 {
        return zero(emb);
    }
    body()
}

/// Multi-similarity loss (Wang et al., CVPR 2019; PML `MultiSimilarityLoss`), mean over the
/// rows `i` of `(1/alpha) log(1 + sum_pos exp(-alpha (s_ij - base))) + (1/beta) log(1 +
/// sum_neg exp(beta (s_ik - base)))`, `s` the cosine similarity. PML's defaults: alpha 2,
/// beta 50, base 0.5.
pub fn multi_similarity(
    emb: &Tensor,
    reference: &Tensor,
    mask: &PairMask,
    alpha: f64,
    beta: f64,
    base: f64,
) -> Result<Tensor> {
    over_pairs((emb, reference, mask), "multi_similarity", || {
        let s = cosine_matrix(emb, reference)?;
        let pos = (masked_logsumexp(&s.affine(-alpha, alpha * base)?, &mask.pos, true)? / alpha)?;
        let neg = (masked_logsumexp(&s.affine(beta, -beta * base)?, &mask.neg, true)? / beta)?;
        (pos + neg)?.mean_all()
    })
}

/// Supervised contrastive loss (Khosla et al., NeurIPS 2020; PML `SupConLoss`): per row `i`,
/// `-(1/|P_i|) sum_{p in P_i} log(exp(s_ip / t) / sum_{a in P_i u N_i} exp(s_ia / t))`, then
/// the mean over rows with a positive loss. 0 without a positive or a negative pair in the
/// mask. PML's default temperature: 0.1.
pub fn supcon(
    emb: &Tensor,
    reference: &Tensor,
    mask: &PairMask,
    temperature: f64,
) -> Result<Tensor> {
    mask.check(emb, reference, "supcon")?;
    if mask.n_pos() == 0 || mask.n_neg() == 0 {
        return zero(emb);
    }
    let (n, m) = (mask.n, mask.m);
    let x = (cosine_matrix(emb, reference)? / temperature)?;
    let both: Vec<bool> = mask
        .pos
        .iter()
        .zip(&mask.neg)
        .map(|(&p, &q)| p || q)
        .collect();
    let denom = masked_logsumexp(&x, &both, false)?.unsqueeze(1)?;
    let log_prob = x.broadcast_sub(&denom)?;
    let pos = mask_tensor(&mask.pos, n, m, emb)?.to_dtype(emb.dtype())?;
    let counts: Vec<f64> = (0..n)
        .map(|i| mask.pos[i * m..(i + 1) * m].iter().filter(|&&b| b).count() as f64)
        .collect();
    // PML divides by (count + the dtype's smallest normal number); a row without positives
    // sums to 0 either way.
    let tiny = if emb.dtype() == candle_core::DType::F64 {
        f64::MIN_POSITIVE
    } else {
        f32::MIN_POSITIVE as f64
    };
    let counts = constant(counts.iter().map(|c| c + tiny).collect(), (n, 1), emb)?.squeeze(1)?;
    let per_row = ((log_prob * pos)?.sum(1)? / counts)?.neg()?;
    mean_of_positive(&per_row)
}

/// NT-Xent (normalised temperature-scaled cross-entropy; Chen et al., SimCLR 2020; PML
/// `NTXentLoss`) with labels: per positive pair `(i, j)`,
/// `-log(exp(s_ij / t) / (exp(s_ij / t) + sum_{k in N_i} exp(s_ik / t)))`, the mean over
/// positive pairs. 0 without a positive or a negative pair. PML's default temperature: 0.07.
pub fn ntxent(
    emb: &Tensor,
    reference: &Tensor,
    mask: &PairMask,
    temperature: f64,
) -> Result<Tensor> {
    mask.check(emb, reference, "ntxent")?;
    let n_pos = mask.n_pos();
    if n_pos == 0 || mask.n_neg() == 0 {
        return zero(emb);
    }
    let (n, m) = (mask.n, mask.m);
    let x = (cosine_matrix(emb, reference)? / temperature)?;
    // log of the negatives' sum per row; a row without negatives has none (-inf): its pairs'
    // loss is log(1) = 0, so a large negative stand-in does.
    let lse_neg = masked_logsumexp(&x, &mask.neg, false)?;
    let has_neg: Vec<u8> = (0..n)
        .map(|i| mask.neg[i * m..(i + 1) * m].iter().any(|&b| b) as u8)
        .collect();
    let has_neg = Tensor::from_vec(has_neg, n, emb.device())?;
    let none = constant(vec![-1e30; n], (n, 1), emb)?.squeeze(1)?;
    let lse_neg = has_neg.where_cond(&lse_neg, &none)?.unsqueeze(1)?;
    // -log(e^a / (e^a + e^b)) = softplus(b - a).
    let per_pair = softplus(&lse_neg.broadcast_sub(&x)?)?;
    let pos = mask_tensor(&mask.pos, n, m, emb)?.to_dtype(emb.dtype())?;
    (per_pair * pos)?.sum_all()? / n_pos as f64
}

/// Circle loss (Sun et al., CVPR 2020; PML `CircleLoss`, pair labels): per row,
/// `softplus(logsumexp_pos(-gamma a_p (s_p - (1 - m))) + logsumexp_neg(gamma a_n (s_n - m)))`
/// with the detached weights `a_p = max(0, 1 + m - s_p)`, `a_n = max(0, s_n + m)`; rows
/// without a positive or a negative give 0; the mean over rows with a positive loss. PML's
/// defaults: m 0.4, gamma 80.
pub fn circle(
    emb: &Tensor,
    reference: &Tensor,
    mask: &PairMask,
    m: f64,
    gamma: f64,
) -> Result<Tensor> {
    over_pairs((emb, reference, mask), "circle", || {
        let (rows, cols) = (mask.n, mask.m);
        let s = cosine_matrix(emb, reference)?;
        let sv = host2(&s)?;
        let (mut wp, mut wn) = (vec![0f64; rows * cols], vec![0f64; rows * cols]);
        for i in 0..rows {
            for j in 0..cols {
                wp[i * cols + j] = -gamma * (1.0 + m - sv[i][j]).max(0.0);
                wn[i * cols + j] = gamma * (sv[i][j] + m).max(0.0);
            }
        }
        let lp = (s.affine(1.0, -(1.0 - m))? * constant(wp, (rows, cols), emb)?)?;
        let ln = (s.affine(1.0, -m)? * constant(wn, (rows, cols), emb)?)?;
        let lse =
            (masked_logsumexp(&lp, &mask.pos, false)? + masked_logsumexp(&ln, &mask.neg, false)?)?;
        let full: Vec<f64> = (0..rows)
            .map(|i| {
                let row = i * cols..(i + 1) * cols;
                let p = mask.pos[row.clone()].iter().any(|&b| b);
                let q = mask.neg[row].iter().any(|&b| b);
                (p && q) as u8 as f64
            })
            .collect();
        let per_row = (softplus(&lse)? * constant(full, (rows, 1), emb)?.squeeze(1)?)?;
        mean_of_positive(&per_row)
    })
}

/// Generalised lifted structure loss (Hermans et al. 2017, p. 4; PML
/// `GeneralizedLiftedStructureLoss`): per row, `max(0, logsumexp_pos(d_ij - pos_margin) +
/// logsumexp_neg(neg_margin - d_ik))` with `d` the Euclidean distance of L2-normalised rows;
/// the mean over all rows. PML's defaults: neg_margin 1, pos_margin 0.
pub fn generalized_lifted(
    emb: &Tensor,
    reference: &Tensor,
    mask: &PairMask,
    neg_margin: f64,
    pos_margin: f64,
) -> Result<Tensor> {
    over_pairs((emb, reference, mask), "generalized_lifted", || {
        let d = unit_distance_matrix(emb, reference)?;
        let pos = masked_logsumexp(&d.affine(1.0, -pos_margin)?, &mask.pos, false)?;
        let neg = masked_logsumexp(&d.affine(-1.0, neg_margin)?, &mask.neg, false)?;
        (pos + neg)?.relu()?.mean_all()
    })
}

/// Angular loss (Wang et al., ICCV 2017; PML `AngularLoss`): for each positive pair `(a, p)`
/// of the mask and every reference `n` with another label than `a`,
/// `f = 4 tan^2(alpha) (x_a + x_p)^T x_n - 2 (1 + tan^2(alpha)) x_a^T x_p` on L2-normalised
/// embeddings, `log(1 + sum_n exp f)` per pair, the mean over positive pairs. `alpha_degrees`:
/// PML's default 40. As in PML the negatives are every other-label reference (not the mask's
/// negatives). Unlike PML, `x_n` is normalised too (the paper's definition; PML leaves the
/// negatives as given, which agrees on unit-length input).
pub fn angular(
    emb: &Tensor,
    reference: &Tensor,
    mask: &PairMask,
    alpha_degrees: f64,
) -> Result<Tensor> {
    mask.check(emb, reference, "angular")?;
    if !(alpha_degrees > 0.0 && alpha_degrees < 90.0) {
        candle_core::bail!("angular: alpha must be in (0, 90) degrees, got {alpha_degrees}");
    }
    let (n, m) = (mask.n, mask.m);
    let (mut a_idx, mut p_idx) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in 0..m {
            if mask.pos[i * m + j] {
                a_idx.push(i as u32);
                p_idx.push(j as u32);
            }
        }
    }
    let any_neg = (0..n).any(|i| mask.ref_labels.iter().any(|&l| l != mask.labels[i]));
    if a_idx.is_empty() || !any_neg {
        return zero(emb);
    }
    let pairs = a_idx.len();
    let keep: Vec<bool> = a_idx
        .iter()
        .flat_map(|&a| {
            mask.ref_labels
                .iter()
                .map(move |&l| l != mask.labels[a as usize])
        })
        .collect();
    let ue = unit_rows(emb)?;
    let ur = unit_rows(reference)?;
    let dev = emb.device();
    let xa = ue.index_select(&Tensor::from_vec(a_idx, pairs, dev)?, 0)?;
    let xp = ur.index_select(&Tensor::from_vec(p_idx, pairs, dev)?, 0)?;
    let t2 = alpha_degrees.to_radians().tan().powi(2);
    let ap = (&xa * &xp)?.sum_keepdim(1)?;
    let f = ((&xa + &xp)?.matmul(&ur.t()?)? * (4.0 * t2))?
        .broadcast_sub(&(ap * (2.0 * (1.0 + t2)))?)?;
    masked_logsumexp(&f, &keep, true)?.mean_all()
}

/// The pair losses by name, with their parameters (PML's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loss", rename_all = "kebab-case")]
pub enum PairLoss {
    /// [`multi_similarity`]. Larger `beta`: harder focus on the most similar negatives.
    MultiSimilarity { alpha: f64, beta: f64, base: f64 },
    /// [`supcon`]. Lower temperature: sharper, harder-negative-weighted softmax.
    Supcon { temperature: f64 },
    /// [`ntxent`].
    Ntxent { temperature: f64 },
    /// [`circle`]. Larger `m`: a looser decision boundary; larger `gamma`: sharper weights.
    Circle { m: f64, gamma: f64 },
    /// [`generalized_lifted`].
    Lifted { neg_margin: f64, pos_margin: f64 },
    /// [`angular`], `alpha` in degrees. Smaller: a tighter angle asked for.
    Angular { alpha: f64 },
}

impl PairLoss {
    /// Multi-similarity with PML's defaults (alpha 2, beta 50, base 0.5).
    pub const MULTI_SIMILARITY: PairLoss = PairLoss::MultiSimilarity {
        alpha: 2.0,
        beta: 50.0,
        base: 0.5,
    };
    /// SupCon with PML's default temperature 0.1.
    pub const SUPCON: PairLoss = PairLoss::Supcon { temperature: 0.1 };
    /// NT-Xent with PML's default temperature 0.07.
    pub const NTXENT: PairLoss = PairLoss::Ntxent { temperature: 0.07 };
    /// Circle with PML's defaults (m 0.4, gamma 80).
    pub const CIRCLE: PairLoss = PairLoss::Circle {
        m: 0.4,
        gamma: 80.0,
    };
    /// Generalised lifted structure with PML's defaults (neg_margin 1, pos_margin 0).
    pub const LIFTED: PairLoss = PairLoss::Lifted {
        neg_margin: 1.0,
        pos_margin: 0.0,
    };
    /// Angular with PML's default alpha of 40 degrees.
    pub const ANGULAR: PairLoss = PairLoss::Angular { alpha: 40.0 };

    /// The loss of `emb` against `reference` over the pairs of `mask`.
    pub fn loss(&self, emb: &Tensor, reference: &Tensor, mask: &PairMask) -> Result<Tensor> {
        match *self {
            PairLoss::MultiSimilarity { alpha, beta, base } => {
                multi_similarity(emb, reference, mask, alpha, beta, base)
            }
            PairLoss::Supcon { temperature } => supcon(emb, reference, mask, temperature),
            PairLoss::Ntxent { temperature } => ntxent(emb, reference, mask, temperature),
            PairLoss::Circle { m, gamma } => circle(emb, reference, mask, m, gamma),
            PairLoss::Lifted {
                neg_margin,
                pos_margin,
            } => generalized_lifted(emb, reference, mask, neg_margin, pos_margin),
            PairLoss::Angular { alpha } => angular(emb, reference, mask, alpha),
        }
    }

    /// The name used on the command line and in training records.
    pub fn name(&self) -> &'static str {
        match self {
            PairLoss::MultiSimilarity { .. } => "multi-similarity",
            PairLoss::Supcon { .. } => "supcon",
            PairLoss::Ntxent { .. } => "ntxent",
            PairLoss::Circle { .. } => "circle",
            PairLoss::Lifted { .. } => "lifted",
            PairLoss::Angular { .. } => "angular",
        }
    }
}
