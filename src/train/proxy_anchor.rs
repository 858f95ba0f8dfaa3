//! Proxy-anchor loss (Kim et al., CVPR 2020; pytorch-metric-learning's `ProxyAnchorLoss`): one
//! trainable proxy per class, each proxy the anchor of its class's items.

use super::pairs::{cosine_matrix, masked_logsumexp};
use candle_core::{bail, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Proxy-anchor loss of `emb` `[N, D]` with class `labels` `[N]` against `proxies` `[C, D]`
/// (cosine similarity `s` of L2-normalised rows):
/// `(1/|C+|) sum_{c in C+} log(1 + sum_{i: y_i = c} exp(-alpha (s_ic - margin)))
///  + (1/C) sum_c log(1 + sum_{i: y_i != c} exp(alpha (s_ic + margin)))`,
/// `C+` the classes present in the batch. PML's defaults: margin 0.1, alpha 32.
pub fn proxy_anchor(
    emb: &Tensor,
    proxies: &Tensor,
    labels: &[u32],
    margin: f64,
    alpha: f64,
) -> Result<Tensor> {
    let (n, _, c) = super::loss::proxy_shapes(emb, proxies, labels, "proxy_anchor")?;
    if emb.dtype() != proxies.dtype() {
        bail!(
            "proxy_anchor: embeddings are {:?} but proxies {:?}",
            emb.dtype(),
            proxies.dtype()
        );
    }
    // [C, N]: class c's row holds its similarity to every item.
    let s = cosine_matrix(proxies, emb)?;
    let mut pos = vec![false; c * n];
    for (i, &y) in labels.iter().enumerate() {
        pos[y as usize * n + i] = true;
    }
    let neg: Vec<bool> = pos.iter().map(|&b| !b).collect();
    let with_pos = (0..c)
        .filter(|&k| pos[k * n..(k + 1) * n].iter().any(|&b| b))
        .count();
    let pos_term = masked_logsumexp(&s.affine(-alpha, alpha * margin)?, &pos, true)?;
    let neg_term = masked_logsumexp(&s.affine(alpha, alpha * margin)?, &neg, true)?;
    (pos_term.sum_all()? / with_pos.max(1) as f64)? + (neg_term.sum_all()? / c as f64)?
}

/// `classes` trainable proxies of dimension `dim`, drawn as PML draws them (Kaiming normal,
/// fan-out: standard deviation `sqrt(2 / classes)`; drawn by Box-Muller) from a ChaCha8 RNG seeded with `seed`.
pub fn init_proxies(classes: usize, dim: usize, seed: u64, dev: &Device) -> Result<Var> {
    if classes == 0 || dim == 0 {
        bail!("init_proxies: need at least one class and one dimension (got {classes}x{dim})");
    }
    let std = (2.0 / classes as f64).sqrt();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Box-Muller: two uniforms on (0, 1] give a standard normal.
    let v: Vec<f32> = (0..classes * dim)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Var::from_vec(v, (classes, dim), dev)
}
