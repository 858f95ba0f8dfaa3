//! Pair classification of a text encoder (as sentence-transformers' BinaryClassificationEvaluator
//! with cosine similarity): ROC-AUC, AP, best F1 and accuracy with their thresholds.

use super::metrics::{self, PairReport};
use crate::corpus::pairs::TextPair;
use crate::error::Result;
use crate::model::TextEncoder;
use std::collections::HashMap;

/// Cosine similarity of each pair under `enc` (each distinct text is encoded once).
pub fn pair_similarities(enc: &TextEncoder, pairs: &[TextPair], batch: usize) -> Result<Vec<f32>> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut texts: Vec<&str> = Vec::new();
    for p in pairs {
        for t in [p.a.as_str(), p.b.as_str()] {
            index.entry(t).or_insert_with(|| {
                texts.push(t);
                texts.len() - 1
            });
        }
    }
    let emb = enc.encode(&texts, batch)?;
    let d = enc.dim();
    let row = |t: &str| &emb[index[t] * d..(index[t] + 1) * d];
    // Rows are unit length: the dot product is the cosine.
    Ok(pairs
        .iter()
        .map(|p| row(&p.a).iter().zip(row(&p.b)).map(|(x, y)| x * y).sum())
        .collect())
}

/// The pair report of `scores` (cosine similarities) against the pairs' labels.
pub fn text_pair_report(scores: &[f32], pairs: &[TextPair]) -> Result<PairReport> {
    let labels: Vec<bool> = pairs.iter().map(|p| p.duplicate).collect();
    metrics::pair_report(scores, &labels)
}
