//! Test data shared by the integration tests: seeded random vectors. Every draw is ChaCha8 from
//! `seed_from_u64(seed)`, so a seed printed by a test reproduces its data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ops::Range;
use twindex::index::Matrix;

/// `n` vectors of `dim` floats, row after row, each uniform in `range`.
pub fn uniform(seed: u64, n: usize, dim: usize, range: Range<f32>) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * dim)
        .map(|_| rng.random_range(range.clone()))
        .collect()
}

/// `n` vectors of `dim` floats, each uniform in [-1, 1): the usual test vectors.
pub fn vectors(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    uniform(seed, n, dim, -1.0..1.0)
}

/// [`uniform`] as a `rows x cols` matrix.
pub fn matrix(seed: u64, rows: usize, cols: usize, range: Range<f32>) -> Matrix<f32> {
    Matrix {
        rows,
        cols,
        data: uniform(seed, rows, cols, range),
    }
}

/// `n` points of dimension `dim` around `clusters` random centres (uniform in [-1, 1)), with
/// Gaussian noise of standard deviation `spread`.
pub fn clustered(seed: u64, n: usize, dim: usize, clusters: usize, spread: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<f32> = (0..clusters * dim)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.random_range(0..clusters);
        for j in 0..dim {
            out.push(centres[c * dim + j] + spread * gauss(&mut rng));
        }
    }
    out
}

/// A standard normal draw (Box-Muller).
fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}
