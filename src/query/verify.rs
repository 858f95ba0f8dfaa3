//! Decisions about one claimed identity (`verify`) and about who a query is (`identify`).

use super::QueryHit;
use crate::error::{Error, Result};
use crate::index::Index;
use serde::Serialize;

/// The answer to "is this FILE the enrolled `label`?".
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub label: String,
    /// `distance <= threshold` (as `query`'s duplicate decision).
    pub accepted: bool,
    /// The query's distances to the label's enrolled items, combined by `aggregate`.
    pub distance: f32,
    pub threshold: f32,
    pub aggregate: Aggregate,
    /// How many enrolled items carry the label.
    pub references: usize,
    /// The nearest of them.
    pub nearest_id: u64,
}

impl Verification {
    /// The decision for a person: `ACCEPTED as "label" (nearest distance 0.3112 <= threshold
    /// 0.6000, 1 enrolled image(s))`.
    pub fn verdict(&self) -> String {
        format!(
            "{} as {:?} ({} distance {:.4} {} threshold {:.4}, {} enrolled image(s))",
            if self.accepted {
                "ACCEPTED"
            } else {
                "REJECTED"
            },
            self.label,
            self.aggregate.describe(),
            self.distance,
            if self.accepted { "<=" } else { ">" },
            self.threshold,
            self.references
        )
    }
}

/// Compare `query` with every live item labelled `label`; accept iff their combined distance is
/// at most `threshold` (default: the index's calibrated threshold). Errors when the label has no
/// enrolled item or no threshold is known.
pub fn verify(
    index: &Index,
    query: &[f32],
    label: &str,
    threshold: Option<f32>,
    aggregate: Aggregate,
) -> Result<Verification> {
    let threshold = threshold
        .or_else(|| index.threshold_distance())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: no calibrated threshold; pass one or run `twindex calibrate`",
                index.dir().display()
            ))
        })?;
    index.metric().check_threshold(threshold)?;
    if query.len() != index.dim() {
        return Err(Error::dim(index.dim(), query.len(), "query vector"));
    }
    let metric = index.metric();
    let mut refs: Vec<(u64, &[f32])> = Vec::new();
    for id in index.ids() {
        let v = index.get(id)?;
        if v.item.label == label {
            refs.push((id, v.vector));
        }
    }
    check_references(aggregate, label, refs.len())?;
    verify_among(query, &refs, metric, label, threshold, aggregate).ok_or_else(|| {
        let labels = index.labels();
        let shown: Vec<String> = labels.iter().take(10).cloned().collect();
        Error::InvalidArgument(format!(
            "{}: nobody is enrolled as {label:?} ({} labels enrolled{}{})",
            index.dir().display(),
            labels.len(),
            if shown.is_empty() { "" } else { ", e.g. " },
            shown.join(", ")
        ))
    })
}

/// The normalised aggregates divide by the spread among the references, so they need two of
/// them: refused in one line when `label` has exactly one (none is the caller's "not enrolled").
pub fn check_references(aggregate: Aggregate, label: &str, n: usize) -> Result<()> {
    if aggregate.normalized() && n == 1 {
        return Err(Error::InvalidArgument(format!(
            "aggregate {}: needs at least 2 references of {label:?} to measure their spread, \
             and {label:?} has 1; use min or mean, or enrol more",
            aggregate.name()
        )));
    }
    Ok(())
}

/// The verification decision of `query` against the references `(id, vector)` of `label`
/// (any store: the local index or a remote collection). `None` when there are none.
pub fn verify_among(
    query: &[f32],
    refs: &[(u64, &[f32])],
    metric: crate::index::Metric,
    label: &str,
    threshold: f32,
    aggregate: Aggregate,
) -> Option<Verification> {
    if refs.is_empty() {
        return None;
    }
    let mut dist = Vec::with_capacity(refs.len());
    let mut nearest = (f32::INFINITY, 0u64);
    for &(id, v) in refs {
        let d = metric.distance(query, v);
        if d < nearest.0 {
            nearest = (d, id);
        }
        dist.push(d);
    }
    let mut among = Vec::new();
    if aggregate.normalized() {
        for (k, (_, a)) in refs.iter().enumerate() {
            for (_, b) in &refs[k + 1..] {
                among.push(metric.distance(a, b));
            }
        }
    }
    let distance = aggregate.apply(&dist, &among);
    Some(Verification {
        label: label.to_string(),
        accepted: crate::index::is_duplicate(distance, threshold),
        distance,
        threshold,
        aggregate,
        references: dist.len(),
        nearest_id: nearest.1,
    })
}

/// Who the query is: the label of the nearest hit when that hit is within the threshold
/// (`duplicate`) and labelled, else `"unknown"`.
pub fn identify(hits: &[QueryHit]) -> String {
    identified(hits).map_or_else(|| "unknown".into(), |h| h.label.clone())
}

/// The nearest hit when it names who the query is: within the threshold and labelled.
pub fn identified(hits: &[QueryHit]) -> Option<&QueryHit> {
    hits.first().filter(|h| h.duplicate && !h.label.is_empty())
}

pub use crate::calibration::Aggregate;

impl Aggregate {
    /// Combine a query's distances to the references `d`, given the distances among the
    /// references themselves `among` (used by the `-norm` variants; with fewer than 2
    /// references there is nothing to normalise by and the plain figure is returned).
    pub fn apply(self, d: &[f32], among: &[f32]) -> f32 {
        let min = || d.iter().copied().fold(f32::INFINITY, f32::min);
        let mean = || d.iter().sum::<f32>() / d.len().max(1) as f32;
        let spread = || {
            if among.is_empty() {
                1.0
            } else {
                (among.iter().sum::<f32>() / among.len() as f32).max(1e-6)
            }
        };
        match self {
            Aggregate::Min => min(),
            Aggregate::Mean => mean(),
            Aggregate::MinNorm => min() / spread(),
            Aggregate::MeanNorm => mean() / spread(),
        }
    }

    /// Whether the figure is normalised by the references' spread.
    pub fn normalized(self) -> bool {
        matches!(self, Aggregate::MinNorm | Aggregate::MeanNorm)
    }

    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Min => "min",
            Aggregate::Mean => "mean",
            Aggregate::MinNorm => "min-norm",
            Aggregate::MeanNorm => "mean-norm",
        }
    }

    /// A word for the figure, as printed.
    pub fn describe(self) -> &'static str {
        match self {
            Aggregate::Min => "nearest",
            Aggregate::Mean => "mean",
            Aggregate::MinNorm => "nearest/spread",
            Aggregate::MeanNorm => "mean/spread",
        }
    }
}
