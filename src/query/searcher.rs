//! k-NN search over an [`Index`] with the duplicate decision at the stored (or given) threshold.

use crate::error::Result;
use crate::index::Index;
use serde::Serialize;

/// One neighbour of a query (the `query --json` `results` entries of ../shared/CLI.md).
#[derive(Debug, Clone, Serialize)]
pub struct QueryHit {
    pub id: u64,
    pub label: String,
    pub source: String,
    /// Distance under the index's metric (smaller = closer).
    pub distance: f32,
    /// Similarity (greater = closer), from [`crate::index::Metric::similarity`].
    pub similarity: f32,
    /// Whether the neighbour is within the duplicate threshold (`distance <= threshold`);
    /// false when no threshold is known.
    pub duplicate: bool,
}

/// The `k` nearest items of `query`, with the duplicate decision taken at
/// `threshold_distance` when given, else at the index's calibrated threshold.
pub fn search(
    index: &Index,
    query: &[f32],
    k: usize,
    ef: Option<usize>,
    threshold_distance: Option<f32>,
) -> Result<Vec<QueryHit>> {
    let thr = threshold_distance.or_else(|| index.threshold_distance());
    let metric = index.metric();
    index
        .search(query, k, ef)?
        .into_iter()
        .map(|h| {
            let v = index.get(h.id)?;
            Ok(QueryHit {
                id: h.id,
                label: v.item.label.clone(),
                source: v.item.source.clone(),
                distance: h.distance,
                similarity: metric.similarity(h.distance),
                duplicate: thr.is_some_and(|t| h.distance <= t),
            })
        })
        .collect()
}
