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

/// Duplicate retrieval over a question corpus: every distinct text of the test pairs and of
/// the distractor pairs is indexed; each test text that has a duplicate among the test pairs
/// is a query, its duplicates (direct partners) the relevant items, itself excluded.
#[derive(Debug, Clone)]
pub struct DupRetrievalSet {
    /// Distinct texts, test texts first.
    pub corpus: Vec<String>,
    /// Corpus positions of the queries.
    pub queries: Vec<usize>,
    /// Relevant corpus positions of each query.
    pub relevant: Vec<Vec<usize>>,
}

/// Build the set from test pairs and distractor pairs.
pub fn duplicate_retrieval_set(test: &[TextPair], distractors: &[TextPair]) -> DupRetrievalSet {
    let mut pos: HashMap<String, usize> = HashMap::new();
    let mut corpus: Vec<String> = Vec::new();
    let mut add = |t: &str, corpus: &mut Vec<String>| -> usize {
        *pos.entry(t.to_string()).or_insert_with(|| {
            corpus.push(t.to_string());
            corpus.len() - 1
        })
    };
    let mut rel: HashMap<usize, Vec<usize>> = HashMap::new();
    for p in test {
        let (a, b) = (add(&p.a, &mut corpus), add(&p.b, &mut corpus));
        if p.duplicate && a != b {
            rel.entry(a).or_default().push(b);
            rel.entry(b).or_default().push(a);
        }
    }
    for p in distractors {
        add(&p.a, &mut corpus);
        add(&p.b, &mut corpus);
    }
    let mut queries: Vec<usize> = rel.keys().copied().collect();
    queries.sort_unstable();
    let relevant = queries
        .iter()
        .map(|q| {
            let mut r = rel[q].clone();
            r.sort_unstable();
            r.dedup();
            r
        })
        .collect();
    DupRetrievalSet {
        corpus,
        queries,
        relevant,
    }
}

/// Duplicate-retrieval figures of one system.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DupRetrievalReport {
    pub recall_at_1: f64,
    pub recall_at_10: f64,
    pub mrr_at_10: f64,
    pub ndcg_at_10: f64,
    pub n_queries: usize,
    pub n_corpus: usize,
}

/// Score rankings (corpus positions per query, best first, the query itself already removed).
pub fn score_rankings(
    set: &DupRetrievalSet,
    rankings: &[Vec<usize>],
) -> Result<DupRetrievalReport> {
    let rel: Vec<Vec<bool>> = rankings
        .iter()
        .zip(&set.relevant)
        .map(|(r, good)| {
            r.iter()
                .take(10)
                .map(|i| good.binary_search(i).is_ok())
                .collect()
        })
        .collect();
    let n: Vec<usize> = set.relevant.iter().map(Vec::len).collect();
    Ok(DupRetrievalReport {
        recall_at_1: metrics::recall_at_k(&rel, &n, 1)?,
        recall_at_10: metrics::recall_at_k(&rel, &n, 10)?,
        mrr_at_10: metrics::mrr_at_k(&rel, &n, 10)?,
        ndcg_at_10: metrics::ndcg_at_k(&rel, &n, 10)?,
        n_queries: set.queries.len(),
        n_corpus: set.corpus.len(),
    })
}

/// Exact cosine rankings (unit-length rows `emb`, `dim` wide): the `depth` best corpus
/// positions of each query, itself excluded.
pub fn dense_rankings(emb: &[f32], dim: usize, queries: &[usize], depth: usize) -> Vec<Vec<usize>> {
    use rayon::prelude::*;
    let n = emb.len() / dim;
    queries
        .par_iter()
        .map(|&q| {
            let qv = &emb[q * dim..(q + 1) * dim];
            let mut s: Vec<(f32, usize)> = (0..n)
                .filter(|&j| j != q)
                .map(|j| {
                    (
                        emb[j * dim..(j + 1) * dim]
                            .iter()
                            .zip(qv)
                            .map(|(a, b)| a * b)
                            .sum(),
                        j,
                    )
                })
                .collect();
            let d = depth.min(s.len());
            if d < s.len() && d > 0 {
                s.select_nth_unstable_by(d - 1, |a, b| b.0.total_cmp(&a.0));
                s.truncate(d);
            }
            s.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            s.into_iter().map(|(_, j)| j).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(a: &str, b: &str, d: bool) -> TextPair {
        TextPair {
            a: a.into(),
            b: b.into(),
            duplicate: d,
        }
    }

    #[test]
    fn retrieval_set_and_scores() {
        let test = [tp("a", "b", true), tp("c", "d", false), tp("a", "e", true)];
        let set = duplicate_retrieval_set(&test, &[tp("x", "a", false)]);
        assert_eq!(set.corpus, vec!["a", "b", "c", "d", "e", "x"]);
        // queries: a (0) -> [b, e] = [1, 4]; b (1) -> [0]; e (4) -> [0]
        assert_eq!(set.queries, vec![0, 1, 4]);
        assert_eq!(set.relevant, vec![vec![1, 4], vec![0], vec![0]]);
        // a finds e first (rel), b finds x then a (rank 2), e finds nothing relevant.
        let r = score_rankings(&set, &[vec![4, 2], vec![5, 0], vec![2, 3]]).unwrap();
        // recall@1 = 1/3 (only a); recall@10 = 2/3; MRR@10 = (1 + 1/2 + 0) / 3 = 0.5
        assert!((r.recall_at_1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.recall_at_10 - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.mrr_at_10 - 0.5).abs() < 1e-12);
        // dense: 3 unit vectors in 2-d; query 0 = (1,0): nearest is 2 = (0.8,0.6), then 1 = (0,1).
        let emb = [1.0, 0.0, 0.0, 1.0, 0.8, 0.6];
        assert_eq!(dense_rankings(&emb, 2, &[0], 5), vec![vec![2, 1]]);
    }
}
