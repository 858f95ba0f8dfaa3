//! The vector arithmetic of the metrics: distances, the graphs' ordering keys, normalisation,
//! and the checks on incoming vectors. The metric itself, its score convention and the one
//! decision rule are in [`crate::metric`] (re-exported here), below every layer.
//!
//! Inside the graphs the metrics compare an *ordering key* that is cheaper than the distance
//! (squared Euclidean distance for `l2`); [`Metric::key_to_distance`] turns it into the distance.

use crate::error::{Error, Result};

use super::distance::DistanceKernels;

pub use crate::metric::{decision_accuracy, is_duplicate, Metric};

/// Cosine distances below this are the float rounding of one direction compared with itself
/// (stored vectors are unit length within 1e-6, so a self-similarity may read 1 - 2e-6): they
/// are reported as 0.
pub const COSINE_ROUNDING: f32 = 4e-6;

impl Metric {
    /// The distance between `a` and `b` (see the module table). For `cosine` the vectors are
    /// normalised here, so this works on raw vectors too. Slices must have equal length.
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        let k = super::distance::kernels();
        match self {
            Metric::L2 => (k.l2_squared)(a, b).max(0.0).sqrt(),
            Metric::Dot => 1.0 - (k.dot)(a, b),
            Metric::Cosine => {
                let na = (k.dot)(a, a).sqrt();
                let nb = (k.dot)(b, b).sqrt();
                if na == 0.0 || nb == 0.0 {
                    1.0
                } else {
                    self.key_to_distance(1.0 - (k.dot)(a, b) / (na * nb))
                }
            }
        }
    }

    /// The ordering key of two prepared vectors (normalised for `cosine`): squared Euclidean
    /// distance for `l2`, the distance itself otherwise. Monotone in the distance.
    #[inline]
    pub fn key(self, kernels: &DistanceKernels, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L2 => (kernels.l2_squared)(a, b),
            Metric::Cosine | Metric::Dot => 1.0 - (kernels.dot)(a, b),
        }
    }

    /// The distance for an ordering key from [`Metric::key`].
    #[inline]
    pub fn key_to_distance(self, key: f32) -> f32 {
        match self {
            Metric::L2 => key.max(0.0).sqrt(),
            // Below the rounding of unit vectors an item is at 0 from itself, so a threshold
            // of 0 still finds exact duplicates (it read 1.19e-7 and missed them).
            Metric::Cosine if key < COSINE_ROUNDING => 0.0,
            Metric::Cosine | Metric::Dot => key,
        }
    }

    /// Prepare a vector for storage or search under this metric (normalise for `cosine`).
    pub fn prepare(self, v: &mut [f32]) {
        if self.normalizes() {
            normalize(v);
        }
    }
}

/// Scale `v` to unit Euclidean length in place. A zero vector, and a vector already of unit
/// length (within 1e-6), are left as they are, so normalising twice changes no bits.
pub fn normalize(v: &mut [f32]) {
    let n = super::distance::dot(v, v).sqrt();
    if n > 0.0 && n.is_finite() && (n - 1.0).abs() > 1e-6 {
        let inv = 1.0 / n;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Check that `v` holds `dim` finite numbers; `context` names it in the error.
pub fn check_vector(v: &[f32], dim: usize, context: &str) -> Result<()> {
    if v.len() != dim {
        return Err(Error::dim(dim, v.len(), context));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "{context}: component {i} is {} (vectors must be finite)",
            v[i]
        )));
    }
    Ok(())
}

/// Refuse a row of zeros where vectors are normalised (cosine, or an index made with
/// `normalize`): it has no direction, so its distance to everything would be an arbitrary 1.
pub fn check_directions(data: &[f32], dim: usize, context: &str) -> Result<()> {
    if dim == 0 {
        return Ok(());
    }
    match data
        .chunks(dim)
        .position(|row| row.iter().all(|&x| x == 0.0))
    {
        Some(r) => Err(Error::InvalidArgument(format!(
            "{context}: row {r} is all zeros, which has no direction: this index normalises \
             vectors (cosine), so it cannot compare it"
        ))),
        None => Ok(()),
    }
}

/// Check that `data` is a whole number of finite rows of `dim`; returns the row count.
pub fn check_rows(data: &[f32], dim: usize, context: &str) -> Result<usize> {
    if dim == 0 {
        return Err(Error::InvalidArgument(format!(
            "{context}: dimension must be at least 1"
        )));
    }
    if !data.len().is_multiple_of(dim) {
        return Err(Error::Shape(format!(
            "{context}: {} floats is not a whole number of rows of dimension {dim}",
            data.len()
        )));
    }
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "{context}: row {} component {} is {} (vectors must be finite)",
            i / dim,
            i % dim,
            data[i]
        )));
    }
    Ok(data.len() / dim)
}

#[cfg(test)]
mod tests {
    use super::Metric;

    #[test]
    fn metric_names_parse_exactly_and_others_are_named_in_the_error() {
        for m in [Metric::L2, Metric::Cosine, Metric::Dot] {
            assert_eq!(m.name().parse::<Metric>().unwrap(), m);
        }
        for bad in ["cos", "L2", "euclidean", "ip", ""] {
            let e = bad.parse::<Metric>().unwrap_err().to_string();
            assert_eq!(
                e,
                format!("invalid argument: unknown metric {bad:?}: expected l2, cosine or dot")
            );
        }
    }

    /// Every stored cosine vector is at distance exactly 0 from itself, so `--threshold 0`
    /// calls an exact duplicate a duplicate (issue 25: it read 1.19e-7); distinct directions
    /// keep their distance. Seeded vectors (XorShift seed 25), 384-d as MiniLM's.
    #[test]
    fn a_cosine_vector_is_at_zero_from_itself() {
        let mut rng = crate::testutil::XorShift::new(25);
        let k = crate::index::distance::kernels();
        for _ in 0..200 {
            let mut v = rng.take(384);
            Metric::Cosine.prepare(&mut v);
            assert_eq!(Metric::Cosine.distance(&v, &v), 0.0);
            assert_eq!(
                Metric::Cosine.key_to_distance(Metric::Cosine.key(k, &v, &v)),
                0.0
            );
            let mut w = v.clone();
            w[0] += 0.05;
            Metric::Cosine.prepare(&mut w);
            assert!(Metric::Cosine.distance(&v, &w) > 1e-5);
        }
    }
}
