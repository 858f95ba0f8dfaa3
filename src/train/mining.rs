//! Online triplet mining inside a batch (plain Rust over a detached distance matrix; the loss
//! is then computed on the chosen triplets with autograd, see [`super::loss::triplet_mined`]).
//!
//! - `batch-all`: every valid (a, p, n) whose loss is positive.
//! - `batch-hard`: per anchor, the farthest positive and the nearest negative (Hermans et al.).
//! - `semi-hard`: per (a, p), the nearest negative farther than p (`d_an > d_ap`); when none,
//!   the farthest negative (as TensorFlow Addons' `triplet_semihard_loss`).
//! - `none`: per anchor one random positive and one random negative (for the pair losses of
//!   [`super::pair_loss`]: no miner, every pair).
//! - `multi-similarity`: the informative pairs of Wang et al. (CVPR 2019),
//!   [`multi_similarity_pairs`] for the pair losses; for triplet loss the same rule on its
//!   distances, each kept positive with each kept negative of the anchor.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A triplet of row indices into the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triplet {
    pub a: u32,
    pub p: u32,
    pub n: u32,
}

/// Which triplets to train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Miner {
    None,
    BatchAll,
    BatchHard,
    SemiHard,
    /// [`multi_similarity_pairs`] (pair losses); the same rule on distances (triplet loss).
    MultiSimilarity,
}

impl Miner {
    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Miner::None => "none",
            Miner::BatchAll => "batch-all",
            Miner::BatchHard => "batch-hard",
            Miner::SemiHard => "semi-hard",
            Miner::MultiSimilarity => "multi-similarity",
        }
    }
}

/// The multi-similarity miner's epsilon (PML's default).
pub const MS_EPSILON: f32 = 0.1;

/// Pairwise distances of `n` rows of dimension `d` (`emb` row-major): `[n * n]`, squared or not.
pub fn distance_matrix(emb: &[f32], n: usize, d: usize, squared: bool) -> Vec<f32> {
    let mut out = vec![0f32; n * n];
    for i in 0..n {
        for j in (i + 1)..n {
            let s: f32 = emb[i * d..(i + 1) * d]
                .iter()
                .zip(&emb[j * d..(j + 1) * d])
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            let v = if squared { s } else { s.sqrt() };
            out[i * n + j] = v;
            out[j * n + i] = v;
        }
    }
    out
}

/// Choose triplets from the distance matrix `dist` (`[n*n]`) of a batch with `labels`.
/// Anchors without a positive or a negative in the batch are skipped.
pub fn mine_triplets(
    dist: &[f32],
    labels: &[u32],
    miner: Miner,
    margin: f32,
    seed: u64,
) -> Vec<Triplet> {
    let n = labels.len();
    assert_eq!(dist.len(), n * n, "distance matrix must be n x n");
    let mut out = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for a in 0..n {
        let row = &dist[a * n..(a + 1) * n];
        let pos: Vec<usize> = (0..n)
            .filter(|&j| j != a && labels[j] == labels[a])
            .collect();
        let neg: Vec<usize> = (0..n).filter(|&j| labels[j] != labels[a]).collect();
        if pos.is_empty() || neg.is_empty() {
            continue;
        }
        let t = |p: usize, q: usize| Triplet {
            a: a as u32,
            p: p as u32,
            n: q as u32,
        };
        match miner {
            Miner::None => {
                let p = pos[rng.random_range(0..pos.len())];
                let q = neg[rng.random_range(0..neg.len())];
                out.push(t(p, q));
            }
            Miner::BatchAll => {
                for &p in &pos {
                    for &q in &neg {
                        if row[p] - row[q] + margin > 0.0 {
                            out.push(t(p, q));
                        }
                    }
                }
            }
            Miner::BatchHard => {
                let p = *pos
                    .iter()
                    .max_by(|&&x, &&y| row[x].total_cmp(&row[y]))
                    .unwrap();
                let q = *neg
                    .iter()
                    .min_by(|&&x, &&y| row[x].total_cmp(&row[y]))
                    .unwrap();
                out.push(t(p, q));
            }
            Miner::MultiSimilarity => {
                // The miner's rule on distances (PML's `LpDistance` form), each kept positive
                // with each kept negative of the anchor (PML's `convert_to_triplets`).
                let far_pos = pos
                    .iter()
                    .map(|&p| row[p])
                    .fold(f32::NEG_INFINITY, f32::max);
                let near_neg = neg.iter().map(|&q| row[q]).fold(f32::INFINITY, f32::min);
                for &p in pos.iter().filter(|&&p| row[p] + MS_EPSILON > near_neg) {
                    for &q in neg.iter().filter(|&&q| row[q] - MS_EPSILON < far_pos) {
                        out.push(t(p, q));
                    }
                }
            }
            Miner::SemiHard => {
                for &p in &pos {
                    let semi = neg
                        .iter()
                        .filter(|&&q| row[q] > row[p])
                        .min_by(|&&x, &&y| row[x].total_cmp(&row[y]));
                    let q = match semi {
                        Some(&q) => q,
                        None => *neg
                            .iter()
                            .max_by(|&&x, &&y| row[x].total_cmp(&row[y]))
                            .unwrap(),
                    };
                    out.push(t(p, q));
                }
            }
        }
    }
    out
}

/// The multi-similarity miner (Wang et al., CVPR 2019; pytorch-metric-learning's
/// `MultiSimilarityMiner`) over cosine similarities `sim` (`[n * m]`, row-major) and the pairs
/// of `mask`: per row, a positive `j` is kept when `s_ij - epsilon` is below the row's most
/// similar negative, a negative `k` when `s_ik + epsilon` is above its least similar positive.
/// PML's default epsilon: 0.1.
pub fn multi_similarity_pairs(
    sim: &[f32],
    mask: &super::pairs::PairMask,
    epsilon: f32,
) -> super::pairs::PairMask {
    let (n, m) = (mask.n, mask.m);
    assert_eq!(sim.len(), n * m, "similarity matrix must be n x m");
    let mut out = mask.clone();
    for i in 0..n {
        let row = &sim[i * m..(i + 1) * m];
        let (mut max_neg, mut min_pos) = (f32::NEG_INFINITY, f32::INFINITY);
        for (j, &s) in row.iter().enumerate() {
            if mask.neg[i * m + j] {
                max_neg = max_neg.max(s);
            }
            if mask.pos[i * m + j] {
                min_pos = min_pos.min(s);
            }
        }
        for (j, &s) in row.iter().enumerate() {
            let k = i * m + j;
            out.pos[k] = mask.pos[k] && s - epsilon < max_neg;
            out.neg[k] = mask.neg[k] && s + epsilon > min_pos;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made batch on a line: class 0 at x = 0, 1, 5; class 1 at x = 2, 6.
    /// Distances |xi - xj|.
    fn batch() -> (Vec<f32>, Vec<u32>) {
        let x = [0f32, 1.0, 5.0, 2.0, 6.0];
        let labels = vec![0, 0, 0, 1, 1];
        (x.to_vec(), labels)
    }

    #[test]
    fn mining_picks_the_expected_triplets() {
        let (x, labels) = batch();
        let dist = distance_matrix(&x, 5, 1, false);
        assert_eq!(dist[2 * 5 + 3], 3.0);
        // batch-hard, anchor 0 (x=0): farthest positive 2 (d=5), nearest negative 3 (d=2).
        // anchor 1 (x=1): positives 0 (1), 2 (4) -> 2; negatives 3 (1), 4 (5) -> 3.
        // anchor 2 (x=5): positives 0 (5), 1 (4) -> 0; negatives 3 (3), 4 (1) -> 4.
        // anchor 3 (x=2): positive 4 (4); negatives 0 (2), 1 (1), 2 (3) -> 1.
        // anchor 4 (x=6): positive 3 (4); negatives 0 (6), 1 (5), 2 (1) -> 2.
        let hard = mine_triplets(&dist, &labels, Miner::BatchHard, 0.5, 0);
        let got: Vec<(u32, u32, u32)> = hard.iter().map(|t| (t.a, t.p, t.n)).collect();
        assert_eq!(
            got,
            vec![(0, 2, 3), (1, 2, 3), (2, 0, 4), (3, 4, 1), (4, 3, 2)]
        );

        // semi-hard for anchor 0: p=1 (d=1): negatives farther than 1 are 3 (2), 4 (6) -> 3;
        // p=2 (d=5): farther than 5 is only 4 (6) -> 4.
        // anchor 3, p=4 (d=4): negatives 0 (2), 1 (1), 2 (3): none farther -> farthest, 2.
        let semi = mine_triplets(&dist, &labels, Miner::SemiHard, 0.5, 0);
        let of = |a: u32| -> Vec<(u32, u32)> {
            semi.iter()
                .filter(|t| t.a == a)
                .map(|t| (t.p, t.n))
                .collect()
        };
        assert_eq!(of(0), vec![(1, 3), (2, 4)]);
        assert_eq!(of(3), vec![(4, 2)]);

        // batch-all with margin 0.5 keeps d_ap - d_an + 0.5 > 0: anchor 0, p=1 (1):
        // n=3 (2) -> -0.5 no; n=4 (6) no. p=2 (5): n=3 -> 3.5 yes; n=4 -> -0.5 no.
        let all = mine_triplets(&dist, &labels, Miner::BatchAll, 0.5, 0);
        let a0: Vec<(u32, u32)> = all
            .iter()
            .filter(|t| t.a == 0)
            .map(|t| (t.p, t.n))
            .collect();
        assert_eq!(a0, vec![(2, 3)]);
        // Every batch-all triplet violates the margin; every violating triplet is there.
        let mut count = 0;
        for a in 0..5 {
            for p in 0..5 {
                for q in 0..5 {
                    if p != a
                        && labels[p] == labels[a]
                        && labels[q] != labels[a]
                        && dist[a * 5 + p] - dist[a * 5 + q] + 0.5 > 0.0
                    {
                        count += 1;
                    }
                }
            }
        }
        assert_eq!(all.len(), count);

        // multi-similarity on distances (epsilon 0.1): anchor 0: farthest positive 5, nearest
        // negative 2; positives with d + 0.1 > 2: p=2 (5) only; negatives with d - 0.1 < 5:
        // n=3 (2) only -> (2, 3). Anchor 3 (x=2): positive 4 (d=4) with 4.1 > 1 (nearest
        // negative 1); negatives 0 (2), 1 (1), 2 (3), all below 4 + 0.1 -> (4,0), (4,1), (4,2).
        let ms = mine_triplets(&dist, &labels, Miner::MultiSimilarity, 0.5, 0);
        let of = |a: u32| -> Vec<(u32, u32)> {
            ms.iter().filter(|t| t.a == a).map(|t| (t.p, t.n)).collect()
        };
        assert_eq!(of(0), vec![(2, 3)]);
        assert_eq!(of(3), vec![(4, 0), (4, 1), (4, 2)]);

        let rand = mine_triplets(&dist, &labels, Miner::None, 0.5, 3);
        assert_eq!(rand.len(), 5);
        for t in rand {
            assert_eq!(labels[t.a as usize], labels[t.p as usize]);
            assert_ne!(labels[t.a as usize], labels[t.n as usize]);
            assert_ne!(t.a, t.p);
        }
    }
}
