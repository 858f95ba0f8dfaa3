//! The distance metrics and the crate's one score convention.
//!
//! **Distance**: smaller means more alike, 0 for identical (unit) vectors.
//!
//! | metric   | distance `d(a, b)`                           |
//! |----------|----------------------------------------------|
//! | `l2`     | Euclidean distance `‖a − b‖`                  |
//! | `cosine` | `1 − cos(a, b)`, in `[0, 2]`                  |
//! | `dot`    | `1 − a·b` (may be negative for long vectors)  |
//!
//! **Similarity**: greater means more alike. For every metric `similarity = 1 − distance`, so it
//! is the cosine for `cosine`, the inner product for `dot`, and `1 − ‖a − b‖` for `l2` (1 for
//! identical vectors, decreasing without bound). The map is linear, monotone and exactly
//! invertible; [`Metric::similarity`] and [`Metric::distance_for_similarity`] are the only
//! places in the crate that convert between the two.
//!
//! **Decision**: a pair is a duplicate (the same person, writer or question) when its distance is
//! *at most* the threshold: [`is_duplicate`] is the crate's one decision rule, and every layer
//! (training, evaluation, query, serve, verify, dedup) decides through it. A threshold given by a
//! user is checked by [`Metric::check_threshold`].
//!
//! Inside the graphs the metrics compare an *ordering key* that is cheaper than the distance
//! (squared Euclidean distance for `l2`); [`Metric::key_to_distance`] turns it into the distance.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

use super::distance::DistanceKernels;

/// A vector distance. Serialised as `"l2"`, `"cosine"` or `"dot"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Euclidean distance (the default: what MNIST pixels and most metric-learning heads use).
    #[default]
    L2,
    /// Cosine distance; vectors are normalised to unit length when stored and queried.
    Cosine,
    /// `1 − inner product`; for unit vectors it ranks like cosine.
    Dot,
}

impl Metric {
    /// The name used in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Metric::L2 => "l2",
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
        }
    }

    /// Whether vectors are normalised to unit length before being stored or searched.
    pub fn normalizes(self) -> bool {
        matches!(self, Metric::Cosine)
    }

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
                    (1.0 - (k.dot)(a, b) / (na * nb)).max(0.0)
                }
            }
        }
    }

    /// Similarity from a distance: `1 − distance` (greater = more alike).
    #[inline]
    pub fn similarity(self, distance: f32) -> f32 {
        1.0 - distance
    }

    /// The distance that has similarity `sim`: `1 − sim`. The inverse of [`Metric::similarity`].
    #[inline]
    pub fn distance_for_similarity(self, sim: f32) -> f32 {
        1.0 - sim
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
            Metric::Cosine => key.max(0.0),
            Metric::Dot => key,
        }
    }

    /// Check a duplicate threshold (a distance) given for this metric: it must be finite, and not
    /// negative for `l2` and `cosine`, whose distances never are (nothing would be a duplicate,
    /// not even an item compared with itself). `dot` distances may be negative, so any finite
    /// threshold is taken there.
    pub fn check_threshold(self, threshold: f32) -> Result<f32> {
        if !threshold.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "threshold {threshold} is not a finite distance"
            )));
        }
        if threshold < 0.0 && self != Metric::Dot {
            return Err(Error::InvalidArgument(format!(
                "threshold {threshold}: {self} distances are never negative, so nothing would be \
                 a duplicate; expected a distance >= 0"
            )));
        }
        Ok(threshold)
    }

    /// Prepare a vector for storage or search under this metric (normalise for `cosine`).
    pub fn prepare(self, v: &mut [f32]) {
        if self.normalizes() {
            normalize(v);
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Metric {
    type Err = Error;

    /// The names of [`Metric::name`], exactly (what manifests and `--metric` hold).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "l2" => Ok(Metric::L2),
            "cosine" => Ok(Metric::Cosine),
            "dot" => Ok(Metric::Dot),
            other => Err(Error::InvalidArgument(format!(
                "unknown metric {other:?}: expected l2, cosine or dot"
            ))),
        }
    }
}

/// The one decision rule: a pair at `distance` is a duplicate (the same person, writer or
/// question) iff `distance <= threshold`. A pair exactly at the threshold is a duplicate.
#[inline]
pub fn is_duplicate(distance: f32, threshold: f32) -> bool {
    distance <= threshold
}

/// Share of pairs decided right by [`is_duplicate`] at `threshold`: pair `i` at distance
/// `dist[i]` is a duplicate (same class) iff `same[i]`. 0 pairs give 0. The crate's one pair
/// accuracy: training's per-epoch figure, `eval` and the demo all call it.
pub fn decision_accuracy(dist: &[f32], same: &[bool], threshold: f32) -> f64 {
    let ok = dist
        .iter()
        .zip(same)
        .filter(|(&d, &y)| is_duplicate(d, threshold) == y)
        .count();
    ok as f64 / same.len().max(1) as f64
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
}
