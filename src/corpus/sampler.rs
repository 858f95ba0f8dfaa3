//! Samplers that turn a labelled set into training pairs or mined batches.
//!
//! - [`seed_pairs`]: the classic Siamese MNIST pair builder (one positive and one negative per
//!   anchor, balanced classes).
//! - [`PkSampler`]: P classes x K samples per batch, the batch layout that online mining
//!   (batch-all, batch-hard, semi-hard) needs.

use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One training pair: two item indices and whether they are similar (`1.0`) or not (`0.0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub a: usize,
    pub b: usize,
    /// 1.0 for a similar (same-class) pair, 0.0 for a dissimilar one.
    pub y: f32,
}

/// Indices of each class, in the order the items appear.
pub fn class_indices(labels: &[u32]) -> Vec<Vec<usize>> {
    let n_classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut idx = vec![Vec::new(); n_classes];
    for (i, &l) in labels.iter().enumerate() {
        idx[l as usize].push(i);
    }
    idx
}

/// The seed's pair builder: for each class `d` and `i < n` (n = smallest class size - 1), the
/// positive `(x[d][i], x[d][i+1])` then the negative `(x[d][i], x[(d+r)%C][i])` with `r` drawn
/// uniformly from `1..C`. Returns `2 * C * n` pairs, alternating positive / negative.
pub fn seed_pairs(labels: &[u32], seed: u64) -> Result<Vec<Pair>> {
    let idx = class_indices(labels);
    let c = idx.len();
    if c < 2 {
        return Err(Error::InvalidArgument(format!(
            "pair building needs at least 2 classes, found {c}"
        )));
    }
    let min = idx.iter().map(|v| v.len()).min().unwrap_or(0);
    if min < 2 {
        return Err(Error::InvalidArgument(
            "every class needs at least 2 items to build pairs".into(),
        ));
    }
    let n = min - 1;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pairs = Vec::with_capacity(2 * c * n);
    for d in 0..c {
        for i in 0..n {
            pairs.push(Pair {
                a: idx[d][i],
                b: idx[d][i + 1],
                y: 1.0,
            });
            let r = rng.random_range(1..c);
            let dn = (d + r) % c;
            pairs.push(Pair {
                a: idx[d][i],
                b: idx[dn][i],
                y: 0.0,
            });
        }
    }
    Ok(pairs)
}

/// Shuffle pairs in place with a seeded RNG (per epoch: `seed + epoch`).
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    items.shuffle(&mut rng);
}

/// P classes x K samples per batch. Each epoch visits every item about once: classes are drawn
/// with probability proportional to their remaining items; a class with fewer than K items left
/// is refilled from a reshuffled copy of itself (so small classes are oversampled, never skipped).
#[derive(Debug, Clone)]
pub struct PkSampler {
    classes: Vec<Vec<usize>>,
    /// Classes per batch.
    pub p: usize,
    /// Samples per class per batch.
    pub k: usize,
}

impl PkSampler {
    /// A sampler over `labels`; errors when fewer than `p` classes have at least 2 items.
    pub fn new(labels: &[u32], p: usize, k: usize) -> Result<Self> {
        if p < 2 || k < 2 {
            return Err(Error::InvalidArgument(format!(
                "P x K sampling needs P >= 2 and K >= 2, got P={p}, K={k}"
            )));
        }
        let classes: Vec<Vec<usize>> = class_indices(labels)
            .into_iter()
            .filter(|v| v.len() >= 2)
            .collect();
        if classes.len() < p {
            return Err(Error::InvalidArgument(format!(
                "P={p} classes per batch but only {} classes have at least 2 items",
                classes.len()
            )));
        }
        Ok(PkSampler { classes, p, k })
    }

    /// The batches of one epoch (`n_items / (p*k)` batches), each `p*k` indices grouped by class.
    pub fn epoch(&self, seed: u64) -> Vec<Vec<usize>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let total: usize = self.classes.iter().map(|c| c.len()).sum();
        let n_batches = (total / (self.p * self.k)).max(1);
        let mut pools: Vec<Vec<usize>> = self
            .classes
            .iter()
            .map(|c| {
                let mut v = c.clone();
                v.shuffle(&mut rng);
                v
            })
            .collect();
        let mut order: Vec<usize> = (0..self.classes.len()).collect();
        let mut batches = Vec::with_capacity(n_batches);
        for _ in 0..n_batches {
            // Weighted choice of P distinct classes by remaining pool size (+1 so none starve).
            order.shuffle(&mut rng);
            let mut chosen: Vec<usize> = Vec::with_capacity(self.p);
            let mut candidates = order.clone();
            while chosen.len() < self.p {
                let w: usize = candidates.iter().map(|&c| pools[c].len() + 1).sum();
                let mut t = rng.random_range(0..w);
                let mut pick = 0;
                for (j, &c) in candidates.iter().enumerate() {
                    let cw = pools[c].len() + 1;
                    if t < cw {
                        pick = j;
                        break;
                    }
                    t -= cw;
                }
                chosen.push(candidates.swap_remove(pick));
            }
            let mut batch = Vec::with_capacity(self.p * self.k);
            for c in chosen {
                for _ in 0..self.k {
                    if pools[c].is_empty() {
                        let mut v = self.classes[c].clone();
                        v.shuffle(&mut rng);
                        pools[c] = v;
                    }
                    batch.push(pools[c].pop().unwrap());
                }
            }
            batches.push(batch);
        }
        batches
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_pairs_follow_the_recipe() {
        // 3 classes with 4, 3 and 5 items: n = 3 - 1 = 2, so 2 * 3 * 2 = 12 pairs.
        let labels = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 2, 2];
        let pairs = seed_pairs(&labels, 7).unwrap();
        assert_eq!(pairs.len(), 12);
        for (j, p) in pairs.iter().enumerate() {
            let same = labels[p.a] == labels[p.b];
            assert_eq!(p.y == 1.0, same, "pair {j}: {p:?}");
            assert_eq!(p.y == 1.0, j % 2 == 0, "positives and negatives alternate");
        }
        // first positive of class 0 is (x[0][0], x[0][1]) = items (0, 3)
        assert_eq!((pairs[0].a, pairs[0].b), (0, 3));
        assert_eq!(
            seed_pairs(&labels, 7).unwrap(),
            pairs,
            "same seed, same pairs"
        );
    }

    #[test]
    fn pk_batches_have_p_classes_of_k() {
        let labels: Vec<u32> = (0..200).map(|i| (i % 10) as u32).collect();
        let s = PkSampler::new(&labels, 4, 5).unwrap();
        let batches = s.epoch(3);
        assert_eq!(batches.len(), 200 / 20);
        for b in &batches {
            assert_eq!(b.len(), 20);
            let mut cls: Vec<u32> = b.iter().map(|&i| labels[i]).collect();
            for g in cls.chunks(5) {
                assert!(g.iter().all(|&c| c == g[0]), "each group of K is one class");
            }
            cls.sort();
            cls.dedup();
            assert_eq!(cls.len(), 4);
        }
        assert!(PkSampler::new(&labels, 11, 2).is_err());
    }
}
