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

/// What `twindex eval --pairs` reports: pair classification of a text encoder, with
/// `pair_accuracy` at a threshold chosen (best F1) on dev pairs, or on the evaluated pairs
/// themselves (optimistic) when there are none.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TextPairEval {
    pub model: String,
    pub pairs: String,
    pub n_pairs: usize,
    pub n_positive: usize,
    pub pair_accuracy: f64,
    /// Cosine similarity: a pair is a duplicate iff `similarity >= threshold`.
    pub threshold: f32,
    pub threshold_source: String,
    pub threshold_chosen_on_evaluated_pairs: bool,
    pub distinct_texts: usize,
    pub roc_auc: f64,
    pub average_precision: f64,
    pub best_f1: f64,
    pub best_f1_threshold: f32,
    pub best_accuracy: f64,
    pub best_accuracy_threshold: f32,
    pub encode_seconds: f64,
    pub encode_cpu_seconds: f64,
    pub cpu_seconds_per_1000_texts: f64,
}

impl std::fmt::Display for TextPairEval {
    /// The report for a person, four lines.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(
            f,
            "text encoder {} on {} ({} pairs, {} duplicates), cosine similarity:",
            r.model, r.pairs, r.n_pairs, r.n_positive
        )?;
        writeln!(
            f,
            "  ROC-AUC {:.4}; AP {:.4}; best F1 {:.4} at >= {:.4}; best accuracy {:.4} at >= {:.4}",
            r.roc_auc,
            r.average_precision,
            r.best_f1,
            r.best_f1_threshold,
            r.best_accuracy,
            r.best_accuracy_threshold
        )?;
        writeln!(
            f,
            "  accuracy {:.4} at >= {:.4} (best F1 on {})",
            r.pair_accuracy, r.threshold, r.threshold_source
        )?;
        write!(
            f,
            "  encoded in {:.1} s ({:.1} CPU-s)",
            r.encode_seconds, r.encode_cpu_seconds
        )
    }
}

/// Evaluate `enc` (loaded from `model`) on `pairs` (read from `pairs_path`), choosing the
/// threshold on the pairs of `dev` when given.
pub fn evaluate_text_pairs(
    enc: &TextEncoder,
    model: &std::path::Path,
    pairs_path: &std::path::Path,
    pairs: &[TextPair],
    dev: Option<&std::path::Path>,
    batch: usize,
) -> Result<TextPairEval> {
    let sw = crate::timing::Stopwatch::start();
    let scores = pair_similarities(enc, pairs, batch)?;
    let (wall, cpu) = (sw.wall(), sw.cpu());
    let rep = text_pair_report(&scores, pairs)?;
    let labels: Vec<bool> = pairs.iter().map(|p| p.duplicate).collect();
    let (cal, source) = match dev {
        Some(d) => {
            let dev = crate::corpus::pairs::read_pairs_tsv(d)?;
            let ds = pair_similarities(enc, &dev, batch)?;
            let dl: Vec<bool> = dev.iter().map(|p| p.duplicate).collect();
            (super::calibrate_best_f1(&ds, &dl)?, d.display().to_string())
        }
        None => (
            super::calibrate_best_f1(&scores, &labels)?,
            format!("{} (the evaluated pairs)", pairs_path.display()),
        ),
    };
    let acc = metrics::accuracy_at(&scores, &labels, cal.threshold)?;
    // Each distinct text is encoded once (`pair_similarities`): the cost is per distinct text.
    let n_texts = pairs
        .iter()
        .flat_map(|p| [p.a.as_str(), p.b.as_str()])
        .collect::<std::collections::HashSet<_>>()
        .len();
    Ok(TextPairEval {
        model: model.display().to_string(),
        pairs: pairs_path.display().to_string(),
        n_pairs: rep.n_pairs,
        n_positive: rep.n_positive,
        pair_accuracy: acc,
        threshold: cal.threshold,
        threshold_source: source,
        threshold_chosen_on_evaluated_pairs: dev.is_none(),
        distinct_texts: n_texts,
        roc_auc: rep.roc_auc,
        average_precision: rep.average_precision,
        best_f1: rep.best_f1,
        best_f1_threshold: rep.best_f1_threshold,
        best_accuracy: rep.best_accuracy,
        best_accuracy_threshold: rep.best_accuracy_threshold,
        encode_seconds: wall,
        encode_cpu_seconds: cpu,
        cpu_seconds_per_1000_texts: cpu * 1000.0 / n_texts as f64,
    })
}

/// What `twindex eval --pairs --retrieval` reports: duplicate retrieval by the encoder, BM25
/// and their RRF hybrid over the same queries and corpus.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RetrievalComparison {
    pub model: String,
    pub pairs: String,
    pub queries: usize,
    pub corpus: usize,
    pub encoder: DupRetrievalReport,
    pub bm25: DupRetrievalReport,
    pub hybrid_rrf: DupRetrievalReport,
}

impl std::fmt::Display for RetrievalComparison {
    /// A table: one row per system.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "duplicate retrieval: {} queries, {} indexed texts",
            self.queries, self.corpus
        )?;
        write!(
            f,
            "{:<12} {:>9} {:>10} {:>7} {:>8}",
            "system", "recall@1", "recall@10", "MRR@10", "nDCG@10"
        )?;
        for (name, r) in [
            ("encoder", &self.encoder),
            ("bm25", &self.bm25),
            ("hybrid_rrf", &self.hybrid_rrf),
        ] {
            write!(
                f,
                "\n{:<12} {:>9.4} {:>10.4} {:>7.4} {:>8.4}",
                name, r.recall_at_1, r.recall_at_10, r.mrr_at_10, r.ndcg_at_10
            )?;
        }
        Ok(())
    }
}

/// Compare the encoder, BM25 and their hybrid on duplicate retrieval over `pairs` (with the
/// texts of `distractors` also indexed); `note` hears what is being done.
pub fn compare_retrieval(
    enc: &TextEncoder,
    model: &std::path::Path,
    pairs_path: &std::path::Path,
    pairs: &[TextPair],
    distractors: &[TextPair],
    batch: usize,
    note: &dyn Fn(&str),
) -> Result<RetrievalComparison> {
    use crate::query::hybrid::{fuse, Bm25};
    let set = duplicate_retrieval_set(pairs, distractors);
    note(&format!(
        "{} queries over {} distinct texts",
        set.queries.len(),
        set.corpus.len()
    ));
    let texts: Vec<&str> = set.corpus.iter().map(String::as_str).collect();
    let sw = crate::timing::Stopwatch::start();
    let emb = enc.encode(&texts, batch)?;
    note(&format!(
        "encoded {} texts in {:.1} s ({:.1} CPU-s)",
        texts.len(),
        sw.wall(),
        sw.cpu()
    ));
    let depth = 100;
    let dense = dense_rankings(&emb, enc.dim(), &set.queries, depth);
    let lex = Bm25::new(&texts)?;
    let bm25: Vec<Vec<usize>> = set
        .queries
        .iter()
        .map(|&q| lex.ranking(texts[q], Some(q), depth))
        .collect::<Result<_>>()?;
    let hybrid: Vec<Vec<usize>> = dense.iter().zip(&bm25).map(|(d, b)| fuse(d, b)).collect();
    Ok(RetrievalComparison {
        model: model.display().to_string(),
        pairs: pairs_path.display().to_string(),
        queries: set.queries.len(),
        corpus: set.corpus.len(),
        encoder: score_rankings(&set, &dense)?,
        bm25: score_rankings(&set, &bm25)?,
        hybrid_rrf: score_rankings(&set, &hybrid)?,
    })
}

/// Average precision of `enc` on dev pairs: the score by which `train text` keeps its best
/// epoch.
pub fn dev_average_precision(enc: &TextEncoder, dev: &[TextPair]) -> Result<f64> {
    let s = pair_similarities(enc, dev, 32)?;
    Ok(text_pair_report(&s, dev)?.average_precision)
}

/// What `twindex eval --pairs` measures: pair classification, or duplicate retrieval.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum TextEvaluation {
    Pairs(TextPairEval),
    Retrieval(RetrievalComparison),
}

impl std::fmt::Display for TextEvaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextEvaluation::Pairs(r) => r.fmt(f),
            TextEvaluation::Retrieval(r) => r.fmt(f),
        }
    }
}

/// `twindex eval --pairs`: the text encoder in `model` on the pairs file `pairs_path`: with
/// `retrieval` (the distractor pair files), [`compare_retrieval`]; else
/// [`evaluate_text_pairs`] with the threshold chosen on `dev` (a note says when it is chosen
/// on the evaluated pairs themselves).
pub fn evaluate_text(
    model: &std::path::Path,
    pairs_path: &std::path::Path,
    dev: Option<&std::path::Path>,
    retrieval: Option<&[std::path::PathBuf]>,
    batch: usize,
    note: &dyn Fn(&str),
) -> Result<TextEvaluation> {
    let enc = TextEncoder::load(model)?;
    let pairs = crate::corpus::pairs::read_pairs_tsv(pairs_path)?;
    if let Some(files) = retrieval {
        let mut distractors = Vec::new();
        for d in files {
            distractors.extend(crate::corpus::pairs::read_pairs_tsv(d)?);
        }
        let c = compare_retrieval(&enc, model, pairs_path, &pairs, &distractors, batch, note)?;
        return Ok(TextEvaluation::Retrieval(c));
    }
    let r = evaluate_text_pairs(&enc, model, pairs_path, &pairs, dev, batch)?;
    if r.threshold_chosen_on_evaluated_pairs {
        note("note: no --dev pairs, so pair_accuracy is measured at a threshold chosen on the evaluated pairs themselves (optimistic); pass --dev for an honest figure");
    }
    Ok(TextEvaluation::Pairs(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(a: &str, b: &str, d: bool) -> TextPair {
        TextPair {
            a: a.into(),
            b: b.into(),
            duplicate: d,
            negatives: Vec::new(),
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
