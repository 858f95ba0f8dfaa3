//! Twin-network losses as free functions over tensors (STYLE habit 3).
//!
//! Shapes: embeddings `[N, D]`; distances and labels `[N]`. `y = 1` marks a similar pair.

use candle_core::{Result, Tensor, D};

/// The floor under a squared distance before its square root (Keras' `K.epsilon()`), which keeps
/// the gradient of `sqrt` finite for identical embeddings.
pub const DIST_EPS: f64 = 1e-7;

fn check_rows(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.rank() != 2 || a.dims() != b.dims() {
        candle_core::bail!(
            "{what}: expected two [N, D] tensors of the same shape, got {:?} and {:?}",
            a.dims(),
            b.dims()
        );
    }
    Ok(())
}

/// Row-wise squared Euclidean distance `sum((a-b)^2)`: `[N, D] x [N, D] -> [N]`.
pub fn squared_distance(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_rows(a, b, "squared_distance")?;
    (a - b)?.sqr()?.sum(D::Minus1)
}

/// Row-wise Euclidean distance `sqrt(max(sum((a-b)^2), eps))` as in the seed.
pub fn euclidean_distance(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    squared_distance(a, b)?.clamp(DIST_EPS, f64::MAX)?.sqrt()
}

/// Contrastive loss, mean over pairs: `y*d^2 + (1-y)*max(0, margin-d)^2`.
/// `d`: distances `[N]`; `y`: 1.0 (similar) or 0.0 (dissimilar) `[N]`.
pub fn contrastive(d: &Tensor, y: &Tensor, margin: f64) -> Result<Tensor> {
    if d.rank() != 1 || d.dims() != y.dims() {
        candle_core::bail!(
            "contrastive: expected d and y of shape [N], got {:?} and {:?}",
            d.dims(),
            y.dims()
        );
    }
    let pos = (y * d.sqr()?)?;
    let hinge = (d.affine(-1.0, margin)?.relu()?.sqr()? * y.affine(-1.0, 1.0)?)?;
    (pos + hinge)?.mean_all()
}

/// Triplet loss, mean over triplets: `max(0, d_ap - d_an + margin)`. `d_ap`, `d_an`: `[N]`.
pub fn triplet(d_ap: &Tensor, d_an: &Tensor, margin: f64) -> Result<Tensor> {
    if d_ap.rank() != 1 || d_ap.dims() != d_an.dims() {
        candle_core::bail!(
            "triplet: expected d_ap and d_an of shape [N], got {:?} and {:?}",
            d_ap.dims(),
            d_an.dims()
        );
    }
    (d_ap - d_an)?.affine(1.0, margin)?.relu()?.mean_all()
}

/// Triplet loss over mined `(anchor, positive, negative)` rows of `emb` (`[N, D]`);
/// `squared` uses squared Euclidean distances (FaceNet) instead of plain ones. The mean is over
/// all the triplets, or with `non_zero` over those with a positive loss (0 when there are none;
/// pytorch-metric-learning's `AvgNonZeroReducer`, its `TripletMarginLoss` default).
pub fn triplet_mined(
    emb: &Tensor,
    triplets: &[super::mining::Triplet],
    margin: f64,
    squared: bool,
    non_zero: bool,
) -> Result<Tensor> {
    if triplets.is_empty() {
        candle_core::bail!("triplet_mined: no triplets");
    }
    let dev = emb.device();
    let idx = |f: fn(&super::mining::Triplet) -> u32| -> Result<Tensor> {
        Tensor::from_vec(
            triplets.iter().map(f).collect::<Vec<u32>>(),
            triplets.len(),
            dev,
        )
    };
    let a = emb.index_select(&idx(|t| t.a)?, 0)?;
    let p = emb.index_select(&idx(|t| t.p)?, 0)?;
    let n = emb.index_select(&idx(|t| t.n)?, 0)?;
    let (dap, dan) = if squared {
        (squared_distance(&a, &p)?, squared_distance(&a, &n)?)
    } else {
        (euclidean_distance(&a, &p)?, euclidean_distance(&a, &n)?)
    };
    if !non_zero {
        return triplet(&dap, &dan, margin);
    }
    let terms = (dap - dan)?.affine(1.0, margin)?.relu()?;
    let positive: Vec<f32> = terms.to_vec1()?;
    let count = positive.iter().filter(|&&v| v > 0.0).count().max(1);
    terms.sum_all()? / count as f64
}

/// Row-wise cosine distance `1 - cos(a, b)`: `[N, D] x [N, D] -> [N]` (sentence-transformers'
/// `SiameseDistanceMetric.COSINE_DISTANCE`; each norm floored at 1e-8 as `F.cosine_similarity`).
pub fn cosine_distance(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_rows(a, b, "cosine_distance")?;
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?.clamp(1e-8, f64::MAX)?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?.clamp(1e-8, f64::MAX)?;
    (dot / (na * nb)?)?.affine(-1.0, 1.0)
}

/// Online contrastive loss (sentence-transformers' `OnlineContrastiveLoss`), a **sum** over the
/// hard pairs of the batch: positives farther than the nearest negative, negatives nearer than
/// the farthest positive: `sum_hard_pos d^2 + sum_hard_neg max(0, margin - d)^2`.
/// With no positive in the batch, negatives nearer than the negatives' mean count; with no
/// negative, positives farther than the positives' mean. `d`, `y`: `[N]`, `y` 1.0 or 0.0.
pub fn online_contrastive(d: &Tensor, y: &Tensor, margin: f64) -> Result<Tensor> {
    if d.rank() != 1 || d.dims() != y.dims() {
        candle_core::bail!(
            "online_contrastive: expected d and y of shape [N], got {:?} and {:?}",
            d.dims(),
            y.dims()
        );
    }
    let dv = d.to_vec1::<f32>()?;
    let yv = y.to_vec1::<f32>()?;
    let pos: Vec<f32> = dv
        .iter()
        .zip(&yv)
        .filter(|(_, &y)| y == 1.0)
        .map(|(&d, _)| d)
        .collect();
    let neg: Vec<f32> = dv
        .iter()
        .zip(&yv)
        .filter(|(_, &y)| y == 0.0)
        .map(|(&d, _)| d)
        .collect();
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    let neg_below = if pos.is_empty() {
        mean(&neg)
    } else {
        pos.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    };
    let pos_above = if neg.is_empty() {
        mean(&pos)
    } else {
        neg.iter().copied().fold(f32::INFINITY, f32::min)
    };
    let (mut hard_pos, mut hard_neg) = (Vec::with_capacity(dv.len()), Vec::with_capacity(dv.len()));
    for (&d, &y) in dv.iter().zip(&yv) {
        hard_pos.push(if y == 1.0 && d > pos_above { 1f32 } else { 0.0 });
        hard_neg.push(if y == 0.0 && d < neg_below { 1f32 } else { 0.0 });
    }
    let dev = d.device();
    let hp = Tensor::from_vec(hard_pos, dv.len(), dev)?.to_dtype(d.dtype())?;
    let hn = Tensor::from_vec(hard_neg, dv.len(), dev)?.to_dtype(d.dtype())?;
    let pos_loss = (d.sqr()? * hp)?.sum_all()?;
    let neg_loss = (d.affine(-1.0, margin)?.relu()?.sqr()? * hn)?.sum_all()?;
    pos_loss + neg_loss
}

/// Rows of `t` scaled to unit length (the norm floored at 1e-12).
fn unit_rows(t: &Tensor) -> Result<Tensor> {
    let n = t
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    t.broadcast_div(&n)
}

/// Multiple negatives ranking loss (InfoNCE with in-batch negatives; sentence-transformers'
/// `MultipleNegativesRankingLoss` on (anchor, positive, negatives...) rows): row `i` of
/// `anchors` `[N, D]` must be nearer to `candidates[i]` than to every other candidate.
/// `candidates` `[M, D]`, `M >= N`, holds the N positives first, then any hard negatives of the
/// batch (sentence-transformers' layout: every anchor is scored against all of them).
/// Cross-entropy over `scale * cos(anchor_i, candidate_j)` with target `j = i`, mean over
/// anchors.
pub fn multiple_negatives_ranking(
    anchors: &Tensor,
    candidates: &Tensor,
    scale: f64,
) -> Result<Tensor> {
    let (n, d) = anchors.dims2()?;
    let (m, d2) = candidates.dims2()?;
    if d != d2 || m < n {
        candle_core::bail!(
            "multiple_negatives_ranking: {n}x{d} anchors and {m}x{d2} candidates: need the same D and at least one candidate (the positive) per anchor"
        );
    }
    let scores = (unit_rows(anchors)?.matmul(&unit_rows(candidates)?.t()?)? * scale)?;
    let target = Tensor::arange(0u32, n as u32, anchors.device())?;
    candle_nn::loss::cross_entropy(&scores, &target)
}

/// `(N, D, C)` of embeddings `[N, D]`, `proxies` `[C, D]` and one class label below C a row,
/// or an error naming `loss` and the shapes.
pub(crate) fn proxy_shapes(
    emb: &Tensor,
    proxies: &Tensor,
    labels: &[u32],
    loss: &str,
) -> Result<(usize, usize, usize)> {
    let (n, d) = emb.dims2()?;
    let (c, d2) = proxies.dims2()?;
    if d != d2 || labels.len() != n || labels.iter().any(|&y| y as usize >= c) {
        candle_core::bail!(
            "{loss}: {n}x{d} embeddings, {c}x{d2} proxies, {} labels (largest {:?}): need the same D, one label per row, labels below C",
            labels.len(),
            labels.iter().max()
        );
    }
    Ok((n, d, c))
}

/// Additive angular margin loss (ArcFace, Deng et al. 2019): embeddings `emb` `[N, D]` and one
/// learned proxy per class `proxies` `[C, D]`, both L2-normalised; the logit of item `i` for
/// class `c` is `scale * cos(theta_ic)`, except for its own class `y_i`, where the angle is
/// widened by `margin` radians: `scale * cos(theta_iy + margin)`; cross-entropy, mean over items.
/// Past `theta + margin > pi`, where the cosine would turn back up, the target logit falls
/// linearly instead (`cos(theta) - margin * sin(margin)`), as in the reference implementation.
pub fn additive_angular_margin(
    emb: &Tensor,
    proxies: &Tensor,
    labels: &[u32],
    margin: f64,
    scale: f64,
) -> Result<Tensor> {
    let (n, _, c) = proxy_shapes(emb, proxies, labels, "additive_angular_margin")?;
    let cos = unit_rows(emb)?
        .matmul(&unit_rows(proxies)?.t()?)?
        .clamp(-1.0 + 1e-6, 1.0 - 1e-6)?;
    let mut onehot = vec![0f32; n * c];
    for (i, &y) in labels.iter().enumerate() {
        onehot[i * c + y as usize] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, (n, c), emb.device())?;
    let cos_y = (&cos * &onehot)?.sum(1)?;
    let sin_y = (1.0 - cos_y.sqr()?)?.sqrt()?;
    let phi = ((&cos_y * margin.cos())? - (&sin_y * margin.sin())?)?;
    let fallback = (&cos_y - margin * margin.sin())?;
    let th = (std::f64::consts::PI - margin).cos();
    let phi = cos_y.ge(th)?.where_cond(&phi, &fallback)?;
    let delta = (phi - &cos_y)?.unsqueeze(1)?;
    let logits = ((&cos + onehot.broadcast_mul(&delta)?)? * scale)?;
    let target = Tensor::from_vec(labels.to_vec(), n, emb.device())?;
    candle_nn::loss::cross_entropy(&logits, &target)
}

/// Batch-hard triplet loss (Hermans et al.; sentence-transformers' `BatchHardTripletLoss` with
/// Euclidean distance): per anchor of `emb` `[N, D]` its farthest same-label item and its
/// nearest other-label item, `mean(max(0, d_ap - d_an + margin))`. Anchors without a positive
/// or a negative in the batch are skipped (a grouped batch sampler leaves none).
pub fn batch_hard_triplet(emb: &Tensor, labels: &[u32], margin: f64) -> Result<Tensor> {
    let (n, dim) = emb.dims2()?;
    if labels.len() != n {
        candle_core::bail!(
            "batch_hard_triplet: {n} embeddings but {} labels",
            labels.len()
        );
    }
    let ev = emb
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let dist = super::mining::distance_matrix(&ev, n, dim, false);
    let trips = super::mining::mine_triplets(
        &dist,
        labels,
        super::mining::Miner::BatchHard,
        margin as f32,
        0,
    );
    if trips.is_empty() {
        // No anchor with both a positive and a negative: nothing to learn, zero loss.
        return emb.sum_all()?.affine(0.0, 0.0);
    }
    triplet_mined(emb, &trips, margin, false, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// ArcFace against an f64 computation written out here, including an item whose angle to
    /// its proxy is past `pi - margin` (the linear fall-back), and the gradient against central
    /// differences.
    #[test]
    fn additive_angular_margin_matches_f64() {
        let (m, s) = (0.5f64, 8.0f64);
        // 3 items in 2-d, 3 classes; item 2 points away from its class-0 proxy.
        let e = [[1.0f64, 0.2], [0.3, -1.0], [-1.0, -0.1]];
        let p = [[1.0f64, 0.0], [0.0, -2.0], [-0.5, 0.5]];
        let y = [0u32, 1, 0];
        let oracle = |e: &[[f64; 2]; 3]| -> f64 {
            let unit = |v: [f64; 2]| {
                let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
                [v[0] / n, v[1] / n]
            };
            let mut total = 0.0;
            for i in 0..3 {
                let ei = unit(e[i]);
                let logits: Vec<f64> = (0..3)
                    .map(|c| {
                        let pc = unit(p[c]);
                        let cos = ei[0] * pc[0] + ei[1] * pc[1];
                        let v = if c == y[i] as usize {
                            let theta = cos.acos();
                            if theta + m <= std::f64::consts::PI {
                                (theta + m).cos()
                            } else {
                                cos - m * m.sin()
                            }
                        } else {
                            cos
                        };
                        s * v
                    })
                    .collect();
                let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
                let lse = mx + logits.iter().map(|l| (l - mx).exp()).sum::<f64>().ln();
                total += lse - logits[y[i] as usize];
            }
            total / 3.0
        };
        let dev = &Device::Cpu;
        let flat = |a: &[[f64; 2]; 3]| a.iter().flatten().map(|&v| v as f32).collect::<Vec<_>>();
        let ev = Var::from_vec(flat(&e), (3, 2), dev).unwrap();
        let pt = Tensor::from_vec(flat(&p), (3, 2), dev).unwrap();
        let l = additive_angular_margin(&ev, &pt, &y, m, s).unwrap();
        let got = l.to_scalar::<f32>().unwrap() as f64;
        let want = oracle(&e);
        assert!(
            (got - want).abs() < 1e-4 * want.abs().max(1.0),
            "{got} vs {want}"
        );
        let g = l.backward().unwrap();
        let ge = g
            .get(&ev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for k in 0..6 {
            let h = 1e-5;
            let (mut a, mut b) = (e, e);
            a[k / 2][k % 2] += h;
            b[k / 2][k % 2] -= h;
            let fd = (oracle(&a) - oracle(&b)) / (2.0 * h);
            assert!(
                (ge[k] as f64 - fd).abs() < 2e-3 * fd.abs().max(1.0),
                "grad {k}: {} vs {fd}",
                ge[k]
            );
        }
    }

    /// Oracle: the losses and their gradients in f64, written out by hand.
    #[test]
    fn contrastive_value_and_gradient_match_f64() {
        let a = [
            [0.1f64, 0.5, -0.3],
            [1.0, 0.0, 0.2],
            [0.0, 0.0, 0.0],
            [0.3, -0.2, 0.9],
        ];
        let b = [
            [0.2f64, 0.1, -0.1],
            [0.0, 0.5, 0.2],
            [0.3, 0.4, 0.0],
            [0.31, -0.2, 0.9],
        ];
        let y = [1.0f64, 0.0, 0.0, 1.0];
        let m = 1.0;
        // d_i = sqrt(sum (a-b)^2); L = mean(y d^2 + (1-y) max(0, m-d)^2)
        // dL/da_i = (1/N) * [y*2(a-b) + (1-y)*(-2)max(0,m-d) * (a-b)/d]
        let n = a.len() as f64;
        let mut loss = 0.0;
        let mut grad = [[0.0f64; 3]; 4];
        for i in 0..4 {
            let diff: Vec<f64> = (0..3).map(|j| a[i][j] - b[i][j]).collect();
            let d = diff.iter().map(|x| x * x).sum::<f64>().sqrt();
            let h = (m - d).max(0.0);
            loss += y[i] * d * d + (1.0 - y[i]) * h * h;
            for j in 0..3 {
                grad[i][j] = (y[i] * 2.0 * diff[j] - (1.0 - y[i]) * 2.0 * h * diff[j] / d) / n;
            }
        }
        loss /= n;
        let dev = Device::Cpu;
        let flat = |x: &[[f64; 3]; 4]| x.iter().flatten().map(|&v| v as f32).collect::<Vec<_>>();
        let av = Var::from_vec(flat(&a), (4, 3), &dev).unwrap();
        let bt = Tensor::from_vec(flat(&b), (4, 3), &dev).unwrap();
        let yt =
            Tensor::from_vec(y.iter().map(|&v| v as f32).collect::<Vec<_>>(), 4, &dev).unwrap();
        let d = euclidean_distance(&av, &bt).unwrap();
        let l = contrastive(&d, &yt, m).unwrap();
        let got = l.to_scalar::<f32>().unwrap() as f64;
        assert!((got - loss).abs() < 1e-6, "loss {got} vs {loss}");
        let g = l.backward().unwrap();
        let ga = g.get(&av).unwrap().to_vec2::<f32>().unwrap();
        for i in 0..4 {
            for j in 0..3 {
                assert!(
                    (ga[i][j] as f64 - grad[i][j]).abs() < 1e-5,
                    "grad[{i}][{j}] {} vs {}",
                    ga[i][j],
                    grad[i][j]
                );
            }
        }
    }

    #[test]
    fn triplet_value_and_gradient_match_f64() {
        let dev = Device::Cpu;
        // d_ap, d_an pairs: (0.2, 1.5) -> 0, (0.9, 1.0) -> 0.4, (1.2, 0.3) -> 1.4 with margin 0.5
        // mean = (0 + 0.4 + 1.4) / 3 = 0.6; d/d(d_ap) = [0, 1/3, 1/3]
        let dap = Var::from_vec(vec![0.2f32, 0.9, 1.2], 3, &dev).unwrap();
        let dan = Tensor::from_vec(vec![1.5f32, 1.0, 0.3], 3, &dev).unwrap();
        let l = triplet(&dap, &dan, 0.5).unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 0.6).abs() < 1e-6);
        let g = l
            .backward()
            .unwrap()
            .get(&dap)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = [0.0, 1.0 / 3.0, 1.0 / 3.0];
        for k in 0..3 {
            assert!((g[k] - want[k]).abs() < 1e-6, "{g:?}");
        }
    }

    #[test]
    fn triplet_mean_over_non_zero_terms_matches_f64() {
        use crate::train::mining::Triplet;
        let dev = Device::Cpu;
        // Points on a line: 0, 0.2, 1.5 | 3, 3.9, 2.8. Margin 0.5.
        let x = [0.0f32, 0.2, 1.5, 3.0, 3.9, 2.8];
        let emb = Var::from_vec(x.to_vec(), (6, 1), &dev).unwrap();
        let t = |a, p, n| Triplet { a, p, n };
        // (0,1,2): 0.2 - 1.5 + 0.5 < 0 -> 0; (2,1,5): 1.3 - 1.3 + 0.5 = 0.5;
        // (3,4,2): 0.9 - 1.5 + 0.5 < 0 -> 0; (4,3,5): 0.9 - 1.1 + 0.5 = 0.3.
        let trips = [t(0, 1, 2), t(2, 1, 5), t(3, 4, 2), t(4, 3, 5)];
        let want_all = (0.5 + 0.3) / 4.0;
        let want_nz = (0.5 + 0.3) / 2.0;
        let all = triplet_mined(&emb, &trips, 0.5, false, false).unwrap();
        let nz = triplet_mined(&emb, &trips, 0.5, false, true).unwrap();
        assert!((all.to_scalar::<f32>().unwrap() as f64 - want_all).abs() < 1e-5);
        assert!((nz.to_scalar::<f32>().unwrap() as f64 - want_nz).abs() < 1e-5);
        // Gradient of the non-zero mean, each active term's over 2: term (2,1,5) is
        // (x2 - x1) - (x5 - x2) + m: d/dx2 = 2, d/dx1 = -1, d/dx5 = -1; term (4,3,5) is
        // (x4 - x3) - (x4 - x5) + m: d/dx3 = -1, d/dx5 = +1, d/dx4 = 0.
        let grads = nz.backward().unwrap();
        let g: Vec<f32> = grads
            .get(&emb)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = [0.0, -0.5, 1.0, -0.5, 0.0, 0.0];
        for k in 0..6 {
            assert!((g[k] as f64 - want[k]).abs() < 1e-5, "{g:?} vs {want:?}");
        }
        // No active term: zero, not a division by zero.
        let easy = [t(0, 1, 4)];
        let z = triplet_mined(&emb, &easy, 0.5, false, true).unwrap();
        assert_eq!(z.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn bad_shapes_are_rejected() {
        let dev = Device::Cpu;
        let a = Tensor::zeros((3, 2), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros((2, 2), candle_core::DType::F32, &dev).unwrap();
        assert!(euclidean_distance(&a, &b).is_err());
        let d = Tensor::zeros(3, candle_core::DType::F32, &dev).unwrap();
        let y = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
        assert!(contrastive(&d, &y, 1.0).is_err());
        assert!(triplet(&d, &y, 1.0).is_err());
    }
}
