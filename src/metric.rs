//! The distance metrics as names and the crate's one score convention and decision rule: the
//! part of [`Metric`] that every layer needs (encoder configs, the index, query, eval), kept
//! below them all. The vector arithmetic (distances, ordering keys, normalisation) is in
//! [`crate::index::metric`].
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

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

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
        let choices: [(&[&str], _); 3] = [
            (&["l2"], Metric::L2),
            (&["cosine"], Metric::Cosine),
            (&["dot"], Metric::Dot),
        ];
        crate::error::parse_choice("unknown metric", s, &choices)
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
