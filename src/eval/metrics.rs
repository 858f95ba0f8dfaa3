//! Evaluation metrics for pair classification (is this pair a duplicate?) and for retrieval
//! (ranked neighbour lists).
//!
//! Score convention: a *similarity*, greater means more alike; a pair is predicted positive iff
//! `score >= threshold`. Positives are labelled `true`. Every function validates its input and
//! returns an error on a length mismatch, an empty input, a non-finite score, or a single class
//! where the metric needs both.
//!
//! Pair metrics share one sweep over the distinct scores in descending order: each distinct score
//! `s` is one operating point ("positive iff score >= s"), plus the point where nothing is
//! positive. Ties are never split, so the results match scikit-learn's `roc_auc_score` and
//! `average_precision_score`. Thresholds returned for calibration are midpoints between
//! consecutive distinct scores (as sentence-transformers' `BinaryClassificationEvaluator`), so
//! they sit safely between the two classes of scores they separate.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// The shared sweep
// ---------------------------------------------------------------------------------------------

/// One operating point of the sweep: predicted positive iff `score >= cut score`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cut {
    /// The lowest score predicted positive (sklearn's threshold); `+inf` for "nothing positive".
    pub score: f32,
    /// A threshold with the same predictions, halfway to the next lower distinct score.
    pub threshold: f32,
    /// True positives at this point.
    pub tp: usize,
    /// False positives at this point.
    pub fp: usize,
}

/// All operating points of a scored, labelled set, from "nothing positive" to "all positive".
#[derive(Debug, Clone)]
pub(crate) struct Sweep {
    /// Number of positive labels.
    pub pos: usize,
    /// Number of negative labels.
    pub neg: usize,
    /// Operating points by decreasing threshold; `cuts[0]` predicts nothing positive and the
    /// last one predicts everything positive.
    pub cuts: Vec<Cut>,
}

/// Which classes a metric needs present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    Nothing,
    Positives,
    Both,
}

/// Check lengths, emptiness and finiteness; count the classes and check `needs`.
/// Returns (positives, negatives).
pub(crate) fn check_pairs(
    scores: &[f32],
    labels: &[bool],
    what: &str,
    needs: Needs,
) -> Result<(usize, usize)> {
    if scores.len() != labels.len() {
        return Err(Error::dim(
            scores.len(),
            labels.len(),
            format!("{what}: labels (one per score)"),
        ));
    }
    if scores.is_empty() {
        return Err(Error::Empty(format!("{what}: no scores")));
    }
    if let Some((i, s)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "{what}: scores[{i}] is {s}; scores must be finite"
        )));
    }
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    let ok = match needs {
        Needs::Nothing => true,
        Needs::Positives => pos > 0,
        Needs::Both => pos > 0 && neg > 0,
    };
    if !ok {
        let which = if needs == Needs::Both {
            "both positive and negative labels"
        } else {
            "at least one positive label"
        };
        return Err(Error::InvalidArgument(format!(
            "{what} needs {which}; got {pos} positive of {}",
            labels.len()
        )));
    }
    Ok((pos, neg))
}

/// A threshold `t` with `lo < t <= hi`, as close to the midpoint as f32 allows.
fn midpoint(hi: f32, lo: f32) -> f32 {
    let m = ((hi as f64 + lo as f64) / 2.0) as f32;
    if m > lo && m <= hi {
        m
    } else {
        hi
    }
}

/// Validate, sort by descending score and build every operating point.
pub(crate) fn sweep(scores: &[f32], labels: &[bool], what: &str, needs: Needs) -> Result<Sweep> {
    let (pos, neg) = check_pairs(scores, labels, what, needs)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let max = scores[order[0]];
    let mut cuts = vec![Cut {
        score: f32::INFINITY,
        threshold: max.next_up(),
        tp: 0,
        fp: 0,
    }];
    let (mut tp, mut fp) = (0, 0);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let threshold = match order.get(i) {
            Some(&next) => midpoint(s, scores[next]),
            None => s,
        };
        cuts.push(Cut {
            score: s,
            threshold,
            tp,
            fp,
        });
    }
    Ok(Sweep { pos, neg, cuts })
}

// ---------------------------------------------------------------------------------------------
// Confusion counts at a threshold
// ---------------------------------------------------------------------------------------------

/// Confusion counts of pair predictions at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Confusion {
    /// Positives predicted positive.
    pub true_pos: usize,
    /// Negatives predicted positive (false accepts).
    pub false_pos: usize,
    /// Negatives predicted negative.
    pub true_neg: usize,
    /// Positives predicted negative (false rejects).
    pub false_neg: usize,
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl Confusion {
    /// Counts from a sweep point.
    pub(crate) fn from_cut(c: &Cut, pos: usize, neg: usize) -> Self {
        Confusion {
            true_pos: c.tp,
            false_pos: c.fp,
            true_neg: neg - c.fp,
            false_neg: pos - c.tp,
        }
    }

    /// Number of pairs counted.
    pub fn total(&self) -> usize {
        self.true_pos + self.false_pos + self.true_neg + self.false_neg
    }

    /// tp / (tp + fp); 0 when nothing is predicted positive (sklearn's `zero_division=0`).
    pub fn precision(&self) -> f64 {
        ratio(self.true_pos, self.true_pos + self.false_pos)
    }

    /// tp / (tp + fn), the true positive rate; 0 when there are no positives.
    pub fn recall(&self) -> f64 {
        ratio(self.true_pos, self.true_pos + self.false_neg)
    }

    /// 2tp / (2tp + fp + fn); 0 when there are no true positives.
    pub fn f1(&self) -> f64 {
        ratio(
            2 * self.true_pos,
            2 * self.true_pos + self.false_pos + self.false_neg,
        )
    }

    /// (tp + tn) / total.
    pub fn accuracy(&self) -> f64 {
        ratio(self.true_pos + self.true_neg, self.total())
    }

    /// False accept rate fp / (fp + tn), the false positive rate; 0 when there are no negatives.
    pub fn far(&self) -> f64 {
        ratio(self.false_pos, self.false_pos + self.true_neg)
    }

    /// False reject rate fn / (fn + tp) = 1 - recall; 0 when there are no positives.
    pub fn frr(&self) -> f64 {
        ratio(self.false_neg, self.false_neg + self.true_pos)
    }
}

fn check_threshold(threshold: f32, what: &str) -> Result<()> {
    if threshold.is_nan() {
        return Err(Error::InvalidArgument(format!("{what}: threshold is NaN")));
    }
    Ok(())
}

/// Confusion counts when a pair is predicted positive iff `score >= threshold`.
pub fn confusion_at(scores: &[f32], labels: &[bool], threshold: f32) -> Result<Confusion> {
    check_pairs(scores, labels, "confusion_at", Needs::Nothing)?;
    check_threshold(threshold, "confusion_at")?;
    let mut c = Confusion::default();
    for (&s, &l) in scores.iter().zip(labels) {
        match (s >= threshold, l) {
            (true, true) => c.true_pos += 1,
            (true, false) => c.false_pos += 1,
            (false, false) => c.true_neg += 1,
            (false, true) => c.false_neg += 1,
        }
    }
    Ok(c)
}

/// Share of pairs classified correctly when a pair is predicted positive iff
/// `score >= threshold`.
pub fn accuracy_at(scores: &[f32], labels: &[bool], threshold: f32) -> Result<f64> {
    Ok(confusion_at(scores, labels, threshold)?.accuracy())
}

pub use crate::index::metric::decision_accuracy;

/// (false accept rate, false reject rate) when a pair is predicted positive iff
/// `score >= threshold`: FAR = fp / negatives, FRR = fn / positives. Needs both classes.
pub fn far_frr_at(scores: &[f32], labels: &[bool], threshold: f32) -> Result<(f64, f64)> {
    check_pairs(scores, labels, "far_frr_at", Needs::Both)?;
    let c = confusion_at(scores, labels, threshold)?;
    Ok((c.far(), c.frr()))
}

// ---------------------------------------------------------------------------------------------
// Threshold-free pair metrics
// ---------------------------------------------------------------------------------------------

/// The ROC curve as `(fpr, tpr, threshold)` points, one per distinct score in descending order,
/// preceded by `(0, 0, +inf)`: scikit-learn's `roc_curve(..., drop_intermediate=False)`.
/// `threshold` is the lowest score predicted positive at that point. Needs both classes.
pub fn roc_curve(scores: &[f32], labels: &[bool]) -> Result<Vec<(f64, f64, f32)>> {
    let sw = sweep(scores, labels, "roc_curve", Needs::Both)?;
    Ok(sw
        .cuts
        .iter()
        .map(|c| (ratio(c.fp, sw.neg), ratio(c.tp, sw.pos), c.score))
        .collect())
}

/// Area under the ROC curve by the trapezoid rule over distinct thresholds, so tied scores
/// count one half (as scikit-learn's `roc_auc_score`, and equal to the Mann-Whitney U
/// statistic / (positives * negatives)). Needs both classes.
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> Result<f64> {
    Ok(auc_of(&sweep(scores, labels, "roc_auc", Needs::Both)?))
}

fn auc_of(sw: &Sweep) -> f64 {
    // Sum in integer units of (1/neg) * (1/(2 pos)) to stay exact until the final division.
    let mut twice_area: u128 = 0;
    for w in sw.cuts.windows(2) {
        let dfp = (w[1].fp - w[0].fp) as u128;
        twice_area += dfp * (w[0].tp + w[1].tp) as u128;
    }
    twice_area as f64 / (2.0 * sw.pos as f64 * sw.neg as f64)
}

/// Average precision exactly as scikit-learn's `average_precision_score`: the step-wise sum
/// `sum_n (R_n - R_{n-1}) * P_n` over distinct thresholds (no interpolation). Needs at least one
/// positive.
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Result<f64> {
    Ok(ap_of(&sweep(
        scores,
        labels,
        "average_precision",
        Needs::Positives,
    )?))
}

fn ap_of(sw: &Sweep) -> f64 {
    let mut ap = 0.0;
    for w in sw.cuts.windows(2) {
        let dtp = w[1].tp - w[0].tp;
        if dtp > 0 {
            ap += (dtp as f64 / sw.pos as f64) * ratio(w[1].tp, w[1].tp + w[1].fp);
        }
    }
    ap
}

// ---------------------------------------------------------------------------------------------
// Best thresholds
// ---------------------------------------------------------------------------------------------

/// Best accuracy over all thresholds and the threshold reaching it, as sentence-transformers'
/// `BinaryClassificationEvaluator`: sweep the sorted scores, threshold = midpoint between
/// consecutive distinct scores. Unlike it, tied scores are never split, and the two degenerate
/// operating points (nothing positive: threshold just above the top score; everything positive:
/// threshold = the lowest score) are candidates too. Among equal accuracies the highest
/// threshold wins. Works with a single class.
pub fn best_accuracy(scores: &[f32], labels: &[bool]) -> Result<(f64, f32)> {
    Ok(best_accuracy_cut(&sweep(
        scores,
        labels,
        "best_accuracy",
        Needs::Nothing,
    )?))
}

fn best_accuracy_cut(sw: &Sweep) -> (f64, f32) {
    let mut best = (-1.0, f32::NAN);
    for c in &sw.cuts {
        let acc = Confusion::from_cut(c, sw.pos, sw.neg).accuracy();
        if acc > best.0 {
            best = (acc, c.threshold);
        }
    }
    best
}

/// Best F1 over all thresholds: `(f1, precision, recall, threshold)`, as sentence-transformers'
/// `BinaryClassificationEvaluator` (midpoint thresholds; ties never split; the lowest score is a
/// candidate so "everything positive" is one). Among equal F1 the highest threshold wins. Needs
/// at least one positive.
pub fn best_f1(scores: &[f32], labels: &[bool]) -> Result<(f64, f64, f64, f32)> {
    let sw = sweep(scores, labels, "best_f1", Needs::Positives)?;
    Ok(best_f1_cut(&sw))
}

pub(crate) fn best_f1_cut(sw: &Sweep) -> (f64, f64, f64, f32) {
    let mut best = (0.0, 0.0, 0.0, f32::NAN);
    for c in sw.cuts.iter().filter(|c| c.tp > 0) {
        let m = Confusion::from_cut(c, sw.pos, sw.neg);
        if m.f1() > best.0 {
            best = (m.f1(), m.precision(), m.recall(), c.threshold);
        }
    }
    best
}

/// Equal error rate `(eer, threshold)`: where the false accept rate (FPR) equals the false
/// reject rate (1 - TPR). `eer` is the crossing found by linear interpolation between the two
/// bracketing operating points of the ROC curve (the usual
/// `brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)`); `threshold` is the midpoint
/// threshold of the bracketing point where |FAR - FRR| is smaller (the higher threshold on a
/// tie), so `far_frr_at(threshold)` brackets `eer`. Needs both classes.
pub fn eer(scores: &[f32], labels: &[bool]) -> Result<(f64, f32)> {
    let sw = sweep(scores, labels, "eer", Needs::Both)?;
    Ok(eer_from_sweep(&sw))
}

fn eer_from_sweep(sw: &Sweep) -> (f64, f32) {
    // FRR - FAR = fn/pos - fp/neg; its sign and size compared exactly as (fn*neg - fp*pos).
    let (pos, neg) = (sw.pos as i128, sw.neg as i128);
    let diff = |c: &Cut| (pos - c.tp as i128) * neg - c.fp as i128 * pos;
    let far = |c: &Cut| ratio(c.fp, sw.neg);
    // The difference goes from pos*neg (nothing positive) to -pos*neg (all positive), never
    // increasing; find the first point at or past the crossing.
    let k = sw
        .cuts
        .iter()
        .position(|c| diff(c) <= 0)
        .expect("the last operating point has FRR 0 and FAR 1");
    let (c0, c1) = (&sw.cuts[k - 1], &sw.cuts[k]);
    let (d0, d1) = (diff(c0), diff(c1));
    if d1 == 0 {
        return (far(c1), c1.threshold);
    }
    let alpha = d0 as f64 / (d0 - d1) as f64;
    let e = far(c0) + alpha * (far(c1) - far(c0));
    let t = if d0 <= -d1 {
        c0.threshold
    } else {
        c1.threshold
    };
    (e, t)
}

// ---------------------------------------------------------------------------------------------
// Pair report
// ---------------------------------------------------------------------------------------------

/// Every threshold-free and best-threshold pair metric at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairReport {
    /// Area under the ROC curve ([`roc_auc`]).
    pub roc_auc: f64,
    /// Average precision ([`average_precision`]).
    pub average_precision: f64,
    /// Best F1 over thresholds ([`best_f1`]).
    pub best_f1: f64,
    /// Threshold reaching `best_f1` (positive iff score >= threshold).
    pub best_f1_threshold: f32,
    /// Best accuracy over thresholds ([`best_accuracy`]).
    pub best_accuracy: f64,
    /// Threshold reaching `best_accuracy`.
    pub best_accuracy_threshold: f32,
    /// Equal error rate ([`eer`]).
    pub eer: f64,
    /// Threshold nearest the equal error rate.
    pub eer_threshold: f32,
    /// Number of scored pairs.
    pub n_pairs: usize,
    /// Number of positive pairs.
    pub n_positive: usize,
}

/// Compute a [`PairReport`] from one sweep. Needs both classes.
pub fn pair_report(scores: &[f32], labels: &[bool]) -> Result<PairReport> {
    let sw = sweep(scores, labels, "the pairs", Needs::Both)?;
    let (best_f1, _, _, best_f1_threshold) = best_f1_cut(&sw);
    let (eer, eer_threshold) = eer_from_sweep(&sw);
    let (best_accuracy, best_accuracy_threshold) = best_accuracy_cut(&sw);
    Ok(PairReport {
        roc_auc: auc_of(&sw),
        average_precision: ap_of(&sw),
        best_f1,
        best_f1_threshold,
        best_accuracy,
        best_accuracy_threshold,
        eer,
        eer_threshold,
        n_pairs: scores.len(),
        n_positive: sw.pos,
    })
}

// ---------------------------------------------------------------------------------------------
// Retrieval metrics
// ---------------------------------------------------------------------------------------------
//
// Input: for each query, the relevance of its ranked results (best first, the query itself
// excluded) and R, the number of items relevant to it in the searched corpus. Queries with
// R = 0 have nothing to find and are left out of every mean (as pytorch-metric-learning leaves
// out "lone" queries); an error if no query is left. A ranked list shorter than needed counts
// its missing positions as not relevant.

/// Validate retrieval input; return the indices of the queries that count (R > 0).
fn check_ranked<R: AsRef<[bool]>>(
    ranked_rel: &[R],
    n_relevant: &[usize],
    what: &str,
) -> Result<Vec<usize>> {
    if ranked_rel.len() != n_relevant.len() {
        return Err(Error::dim(
            ranked_rel.len(),
            n_relevant.len(),
            format!("{what}: n_relevant (one per query)"),
        ));
    }
    if ranked_rel.is_empty() {
        return Err(Error::Empty(format!("{what}: no queries")));
    }
    for (q, (rel, &r)) in ranked_rel.iter().zip(n_relevant).enumerate() {
        let found = rel.as_ref().iter().filter(|&&b| b).count();
        if found > r {
            return Err(Error::InvalidArgument(format!(
                "{what}: query {q} lists {found} relevant results but n_relevant is {r}"
            )));
        }
    }
    let used: Vec<usize> = (0..n_relevant.len())
        .filter(|&q| n_relevant[q] > 0)
        .collect();
    if used.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{what}: no query has a relevant item (every n_relevant is 0)"
        )));
    }
    Ok(used)
}

fn check_k(k: usize, what: &str) -> Result<()> {
    if k == 0 {
        return Err(Error::InvalidArgument(format!("{what}: k must be >= 1")));
    }
    Ok(())
}

/// Mean of `per_query(relevance, R)` over the queries with R > 0.
fn mean_over<R: AsRef<[bool]>>(
    ranked_rel: &[R],
    n_relevant: &[usize],
    what: &str,
    per_query: impl Fn(&[bool], usize) -> f64,
) -> Result<f64> {
    let used = check_ranked(ranked_rel, n_relevant, what)?;
    let sum: f64 = used
        .iter()
        .map(|&q| per_query(ranked_rel[q].as_ref(), n_relevant[q]))
        .sum();
    Ok(sum / used.len() as f64)
}

/// Precision@1: share of queries whose top result is relevant.
pub fn precision_at_1<R: AsRef<[bool]>>(ranked_rel: &[R], n_relevant: &[usize]) -> Result<f64> {
    mean_over(ranked_rel, n_relevant, "precision_at_1", |rel, _| {
        if rel.first() == Some(&true) {
            1.0
        } else {
            0.0
        }
    })
}

/// MAP@R (Musgrave et al., "A Metric Learning Reality Check"; pytorch-metric-learning's
/// `mean_average_precision_at_r`): for a query with R relevant items, AP@R =
/// (1/R) * sum_{i<=R} P(i) * rel(i) over its top R results, where P(i) is the precision of the
/// top i; averaged over queries.
pub fn map_at_r<R: AsRef<[bool]>>(ranked_rel: &[R], n_relevant: &[usize]) -> Result<f64> {
    mean_over(ranked_rel, n_relevant, "map_at_r", |rel, r| {
        let mut hits = 0usize;
        let mut sum = 0.0;
        for (i, &b) in rel.iter().take(r).enumerate() {
            if b {
                hits += 1;
                sum += hits as f64 / (i + 1) as f64;
            }
        }
        sum / r as f64
    })
}

/// R-precision (pytorch-metric-learning's `r_precision`): for a query with R relevant items,
/// the share of its top R results that are relevant; averaged over queries.
pub fn r_precision<R: AsRef<[bool]>>(ranked_rel: &[R], n_relevant: &[usize]) -> Result<f64> {
    mean_over(ranked_rel, n_relevant, "r_precision", |rel, r| {
        rel.iter().take(r).filter(|&&b| b).count() as f64 / r as f64
    })
}

/// Recall@k as duplicate retrieval reports it: the share of queries with at least one relevant
/// item in their top k results (a "hit rate", not the share of relevant items found). For the
/// recall of approximate search against exact search see [`ann_recall`].
pub fn recall_at_k<R: AsRef<[bool]>>(
    ranked_rel: &[R],
    n_relevant: &[usize],
    k: usize,
) -> Result<f64> {
    check_k(k, "recall_at_k")?;
    mean_over(ranked_rel, n_relevant, "recall_at_k", |rel, _| {
        if rel.iter().take(k).any(|&b| b) {
            1.0
        } else {
            0.0
        }
    })
}

/// MRR@k: mean over queries of 1 / rank of the first relevant result within the top k, 0 when
/// none is (ranks start at 1).
pub fn mrr_at_k<R: AsRef<[bool]>>(ranked_rel: &[R], n_relevant: &[usize], k: usize) -> Result<f64> {
    check_k(k, "mrr_at_k")?;
    mean_over(ranked_rel, n_relevant, "mrr_at_k", |rel, _| {
        rel.iter()
            .take(k)
            .position(|&b| b)
            .map_or(0.0, |i| 1.0 / (i + 1) as f64)
    })
}

/// nDCG@k with binary relevance: DCG = sum_{i<=k} rel(i) / log2(i + 1), divided by the ideal
/// DCG of min(R, k) relevant results in the first places.
pub fn ndcg_at_k<R: AsRef<[bool]>>(
    ranked_rel: &[R],
    n_relevant: &[usize],
    k: usize,
) -> Result<f64> {
    check_k(k, "ndcg_at_k")?;
    let gain = |i: usize| 1.0 / ((i + 2) as f64).log2();
    mean_over(ranked_rel, n_relevant, "ndcg_at_k", |rel, r| {
        let dcg: f64 = rel
            .iter()
            .take(k)
            .enumerate()
            .filter(|&(_, &b)| b)
            .map(|(i, _)| gain(i))
            .sum();
        let ideal: f64 = (0..r.min(k)).map(gain).sum();
        dcg / ideal
    })
}

/// Every retrieval metric at once, over the queries with at least one relevant item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// [`precision_at_1`].
    pub precision_at_1: f64,
    /// [`map_at_r`].
    pub map_at_r: f64,
    /// [`recall_at_k`] at `k`.
    pub recall_at_k: f64,
    /// [`mrr_at_k`] at `k`.
    pub mrr_at_k: f64,
    /// [`ndcg_at_k`] at `k`.
    pub ndcg_at_k: f64,
    /// The cut-off of the @k metrics.
    pub k: usize,
    /// Queries counted (those with R > 0).
    pub n_queries: usize,
    /// Queries left out because nothing in the corpus is relevant to them.
    pub n_skipped: usize,
}

/// Compute a [`RetrievalReport`] with cut-off `k` for the @k metrics.
pub fn retrieval_report<R: AsRef<[bool]>>(
    ranked_rel: &[R],
    n_relevant: &[usize],
    k: usize,
) -> Result<RetrievalReport> {
    let used = check_ranked(ranked_rel, n_relevant, "retrieval_report")?;
    Ok(RetrievalReport {
        precision_at_1: precision_at_1(ranked_rel, n_relevant)?,
        map_at_r: map_at_r(ranked_rel, n_relevant)?,
        recall_at_k: recall_at_k(ranked_rel, n_relevant, k)?,
        mrr_at_k: mrr_at_k(ranked_rel, n_relevant, k)?,
        ndcg_at_k: ndcg_at_k(ranked_rel, n_relevant, k)?,
        k,
        n_queries: used.len(),
        n_skipped: ranked_rel.len() - used.len(),
    })
}

/// Recall of approximate search against exact search (defined with the index benchmarks,
/// which need it below this layer).
pub use crate::index::bench::ann_recall;

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::XorShiftStar as Rng;

    /// Random labelled scores where positives score higher on average; scores are quantised to
    /// `levels` values so there are many ties.
    fn random_pairs(rng: &mut Rng, n: usize, levels: u32) -> (Vec<f32>, Vec<bool>) {
        let mut scores = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let l = rng.unit() < 0.4;
            let raw = rng.unit() * 0.7 + if l { 0.3 } else { 0.0 };
            let q = (raw * levels as f64).floor() / levels as f64;
            scores.push(q as f32 * 2.0 - 1.0);
            labels.push(l);
        }
        (scores, labels)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn distance_accuracy_hand_example() {
        // Threshold 0.45, "same" iff d <= 0.45: 0.2 same (label same: right), 0.5 different
        // (label same: wrong), 0.7 different (label different: right), 0.4 same (label
        // different: wrong) -> 2 of 4 = 0.5.
        let d = [0.2, 0.5, 0.7, 0.4];
        let y = [true, true, false, false];
        assert_eq!(decision_accuracy(&d, &y, 0.45), 0.5);
        // Threshold 0.5: the pair exactly at it is "same" (right) -> 3 of 4.
        assert_eq!(decision_accuracy(&d, &y, 0.5), 0.75);
        assert_eq!(decision_accuracy(&d, &y, 0.6), 0.75);
        assert_eq!(decision_accuracy(&[], &[], 0.5), 0.0);
    }

    #[test]
    fn sklearn_hand_example() {
        // y = [0,0,1,1], s = [0.1,0.4,0.35,0.8] (sklearn docs; sklearn gives AUC 0.75,
        // AP 0.8333). By hand, descending: 0.8(+) 0.4(-) 0.35(+) 0.1(-).
        // AP = R-steps * P: 0.5 * 1/1 + 0.5 * 2/3 = 5/6.
        // AUC: pairs (pos, neg): 0.8 beats both, 0.35 beats 0.1 only -> 3/4.
        let s = [0.1, 0.4, 0.35, 0.8];
        let y = [false, false, true, true];
        assert!(close(average_precision(&s, &y).unwrap(), 5.0 / 6.0));
        assert!(close(roc_auc(&s, &y).unwrap(), 0.75));
        // ROC points (fpr, tpr): (0,0) (0,.5) (.5,.5) (.5,1) (1,1), thresholds inf,.8,.4,.35,.1.
        let roc = roc_curve(&s, &y).unwrap();
        let want = [
            (0.0, 0.0, f32::INFINITY),
            (0.0, 0.5, 0.8),
            (0.5, 0.5, 0.4),
            (0.5, 1.0, 0.35),
            (1.0, 1.0, 0.1),
        ];
        assert_eq!(roc, want);
    }

    #[test]
    fn ties_hand_example() {
        // y = [1,0,1,0,1], s = [.5,.5,.9,.1,.5]; the .5 group holds two positives, one negative.
        // ROC (0,0) (0,1/3) (1/2,1) (1,1): trapezoids 0 + 1/2*(1/3+1)/2 + 1/2*1 = 5/6.
        // Mann-Whitney: .9 beats both negatives (2); each .5 positive ties .5 (1/2) and beats
        // .1 (1): 2 + 2*1.5 = 5 of 6 pairs -> 5/6.
        // AP: 1/3 * 1 (at .9) + 2/3 * 3/4 (at .5) = 5/6.
        let s = [0.5, 0.5, 0.9, 0.1, 0.5];
        let y = [true, false, true, false, true];
        assert!(close(roc_auc(&s, &y).unwrap(), 5.0 / 6.0));
        assert!(close(average_precision(&s, &y).unwrap(), 5.0 / 6.0));
    }

    /// AUC as the Mann-Whitney statistic: count concordant (pos, neg) pairs, ties 1/2, in f64.
    fn auc_mann_whitney(s: &[f32], y: &[bool]) -> f64 {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (i, &yi) in y.iter().enumerate() {
            for (j, &yj) in y.iter().enumerate() {
                if yi && !yj {
                    den += 1.0;
                    if s[i] > s[j] {
                        num += 1.0;
                    } else if s[i] == s[j] {
                        num += 0.5;
                    }
                }
            }
        }
        num / den
    }

    /// AP by brute force: for each positive i, the precision among items scoring >= s_i,
    /// averaged over positives. With ties this equals sklearn's step sum (a tie group adds
    /// its positives at the group's precision).
    fn ap_brute(s: &[f32], y: &[bool]) -> f64 {
        let pos = y.iter().filter(|&&l| l).count() as f64;
        let mut sum = 0.0;
        for (i, &yi) in y.iter().enumerate() {
            if yi {
                let above: Vec<usize> = (0..s.len()).filter(|&j| s[j] >= s[i]).collect();
                let tp = above.iter().filter(|&&j| y[j]).count() as f64;
                sum += tp / above.len() as f64;
            }
        }
        sum / pos
    }

    #[test]
    fn auc_and_ap_match_oracles_on_random_data() {
        let seed = 0x9E37_79B9_7F4A_7C15;
        println!("seed = {seed:#x}");
        let mut rng = Rng(seed);
        for round in 0..50 {
            let n = 1 + (rng.next_u64() % 300) as usize;
            let levels = [5, 20, 1000][round % 3];
            let (s, y) = random_pairs(&mut rng, n, levels);
            let pos = y.iter().filter(|&&l| l).count();
            if pos == 0 || pos == n {
                assert!(roc_auc(&s, &y).is_err());
                continue;
            }
            let (got, want) = (roc_auc(&s, &y).unwrap(), auc_mann_whitney(&s, &y));
            assert!((got - want).abs() < 1e-12, "round {round}: {got} vs {want}");
            let (got, want) = (average_precision(&s, &y).unwrap(), ap_brute(&s, &y));
            assert!((got - want).abs() < 1e-12, "round {round}: {got} vs {want}");
        }
    }

    /// Every candidate operating point by brute force: each distinct score s ("positive iff
    /// score >= s") plus "nothing positive"; counted directly.
    fn brute_confusions(s: &[f32], y: &[bool]) -> Vec<Confusion> {
        let mut ts: Vec<f32> = s.to_vec();
        ts.push(f32::INFINITY);
        ts.sort_by(|a, b| b.total_cmp(a));
        ts.dedup();
        ts.iter().map(|&t| confusion_at(s, y, t).unwrap()).collect()
    }

    #[test]
    fn best_f1_and_accuracy_match_brute_force() {
        let seed = 0xD1B5_4A32_D192_ED03;
        println!("seed = {seed:#x}");
        let mut rng = Rng(seed);
        for round in 0..60 {
            let n = 1 + (rng.next_u64() % 200) as usize;
            let (s, y) = random_pairs(&mut rng, n, [4, 30, 5000][round % 3]);
            let all = brute_confusions(&s, &y);

            let want_acc = all.iter().map(|c| c.accuracy()).fold(0.0, f64::max);
            let (acc, t) = best_accuracy(&s, &y).unwrap();
            assert_eq!(acc, want_acc, "round {round}");
            assert_eq!(accuracy_at(&s, &y, t).unwrap(), acc, "round {round}");

            if y.iter().all(|&l| !l) {
                assert!(best_f1(&s, &y).is_err());
                continue;
            }
            let want_f1 = all.iter().map(|c| c.f1()).fold(0.0, f64::max);
            let (f1, p, r, t) = best_f1(&s, &y).unwrap();
            assert_eq!(f1, want_f1, "round {round}");
            // The returned threshold reproduces the figures when applied directly.
            let c = confusion_at(&s, &y, t).unwrap();
            assert_eq!((c.f1(), c.precision(), c.recall()), (f1, p, r));
            // And it sits strictly between two distinct scores (or on the lowest one).
            assert!(
                !s.contains(&t) || s.iter().all(|&x| x >= t),
                "round {round}"
            );
        }
    }

    #[test]
    fn best_thresholds_hand_example() {
        // Descending: .9+ .8+ .7- .6+ .5- .4-. Cuts (tp, fp): (1,0) (2,0) (2,1) (3,1) (3,2) (3,3).
        // F1 = 2tp/(2tp+fp+fn): 2/5, 4/5, 4/6, 6/7, 6/8, 6/9 -> best 6/7 at >= .6, threshold
        // midpoint(.6, .5) = .55, precision 3/4, recall 1.
        // Accuracy (tp+tn)/6: 4/6, 5/6, 4/6, 5/6, 4/6, 3/6 -> best 5/6, first (highest) at >= .8,
        // threshold midpoint(.8, .7) = .75.
        let s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let y = [true, true, false, true, false, false];
        let (f1, p, r, t) = best_f1(&s, &y).unwrap();
        assert!(close(f1, 6.0 / 7.0) && close(p, 0.75) && close(r, 1.0));
        assert!((t - 0.55).abs() < 1e-6);
        let (acc, t) = best_accuracy(&s, &y).unwrap();
        assert!(close(acc, 5.0 / 6.0));
        assert!((t - 0.75).abs() < 1e-6);
    }

    #[test]
    fn midpoint_stays_between_adjacent_floats() {
        let lo = 0.5f32;
        let hi = lo.next_up();
        let t = midpoint(hi, lo);
        assert!(t > lo && t <= hi);
        // Two adjacent scores of different classes are still separated.
        let (f1, _, _, t) = best_f1(&[hi, lo], &[true, false]).unwrap();
        assert_eq!(f1, 1.0);
        assert_eq!(
            far_frr_at(&[hi, lo], &[true, false], t).unwrap(),
            (0.0, 0.0)
        );
    }

    #[test]
    fn eer_hand_examples() {
        // Descending .9+ .8+ .7- .6+ .5- .4- (P = N = 3). (FAR, FRR) per cut:
        // none (0,1); >=.9 (0,2/3); >=.8 (0,1/3); >=.7 (1/3,1/3) -> equal: EER 1/3,
        // threshold midpoint(.7, .6) = .65.
        let s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let y = [true, true, false, true, false, false];
        let (e, t) = eer(&s, &y).unwrap();
        assert!(close(e, 1.0 / 3.0));
        assert!((t - 0.65).abs() < 1e-6);

        // Descending .9+ .8- .7- .6+ .5- (P = 2, N = 3). (FAR, FRR): none (0,1); >=.9 (0,1/2);
        // >=.8 (1/3,1/2), d = 1/6; >=.7 (2/3,1/2), d = -1/6. Crossing halfway:
        // FAR = 1/3 + 1/2 * 1/3 = 1/2 = FRR. |d| ties -> the higher threshold, mid(.8,.7) = .75.
        let s = [0.9, 0.8, 0.7, 0.6, 0.5];
        let y = [true, false, false, true, false];
        let (e, t) = eer(&s, &y).unwrap();
        assert!(close(e, 0.5));
        assert!((t - 0.75).abs() < 1e-6);

        // Perfect separation: EER 0.
        let (e, t) = eer(&[0.9, 0.8, 0.2], &[true, true, false]).unwrap();
        assert_eq!(e, 0.0);
        assert_eq!(
            far_frr_at(&[0.9, 0.8, 0.2], &[true, true, false], t).unwrap(),
            (0.0, 0.0)
        );
    }

    #[test]
    fn eer_threshold_brackets_eer_on_random_data() {
        // At the returned threshold, FAR and FRR lie on either side of the EER (the crossing is
        // on the segment from that point), and |FAR - FRR| is the least over all operating
        // points adjacent to the crossing.
        let seed = 0x1234_5678_9ABC_DEF1;
        println!("seed = {seed:#x}");
        let mut rng = Rng(seed);
        for round in 0..50 {
            let n = 2 + (rng.next_u64() % 200) as usize;
            let (s, y) = random_pairs(&mut rng, n, [6, 50, 10000][round % 3]);
            if y.iter().all(|&l| l) || y.iter().all(|&l| !l) {
                assert!(eer(&s, &y).is_err());
                continue;
            }
            let (e, t) = eer(&s, &y).unwrap();
            let (far, frr) = far_frr_at(&s, &y, t).unwrap();
            assert!(
                far.min(frr) - 1e-12 <= e && e <= far.max(frr) + 1e-12,
                "round {round}"
            );
            assert!((0.0..=1.0).contains(&e));
        }
    }

    #[test]
    fn pair_report_agrees_with_parts() {
        let s = [0.1, 0.4, 0.35, 0.8];
        let y = [false, false, true, true];
        let r = pair_report(&s, &y).unwrap();
        assert_eq!(r.roc_auc, roc_auc(&s, &y).unwrap());
        assert_eq!(r.average_precision, average_precision(&s, &y).unwrap());
        let (f1, _, _, t) = best_f1(&s, &y).unwrap();
        assert_eq!((r.best_f1, r.best_f1_threshold), (f1, t));
        assert_eq!(
            (r.best_accuracy, r.best_accuracy_threshold),
            best_accuracy(&s, &y).unwrap()
        );
        assert_eq!((r.eer, r.eer_threshold), eer(&s, &y).unwrap());
        assert_eq!((r.n_pairs, r.n_positive), (4, 2));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"roc_auc\":0.75"));
    }

    #[test]
    fn bad_pair_inputs_are_errors() {
        let y2 = [true, false];
        assert!(matches!(
            roc_auc(&[0.1], &y2),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(matches!(roc_auc(&[], &[]), Err(Error::Empty(_))));
        assert!(matches!(
            average_precision(&[f32::NAN, 0.2], &y2),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            best_accuracy(&[0.1, f32::INFINITY], &y2),
            Err(Error::InvalidArgument(_))
        ));
        // Single class where the metric is undefined.
        let s = [0.3, 0.2];
        let all_pos = [true, true];
        let all_neg = [false, false];
        assert!(roc_auc(&s, &all_pos).is_err());
        assert!(roc_curve(&s, &all_neg).is_err());
        assert!(average_precision(&s, &all_neg).is_err());
        assert!(best_f1(&s, &all_neg).is_err());
        assert!(eer(&s, &all_pos).is_err());
        assert!(far_frr_at(&s, &all_neg, 0.25).is_err());
        assert!(pair_report(&s, &all_pos).is_err());
        assert!(accuracy_at(&s, &y2, f32::NAN).is_err());
        // Defined with one class: AP with positives only is 1, accuracy is fine.
        assert_eq!(average_precision(&s, &all_pos).unwrap(), 1.0);
        assert_eq!(best_accuracy(&s, &all_neg).unwrap().0, 1.0);
        assert_eq!(accuracy_at(&s, &all_neg, 0.25).unwrap(), 0.5);
    }

    #[test]
    fn threshold_is_inclusive() {
        // score >= threshold is positive: at t = 0.5 the 0.5 pair is accepted.
        let c = confusion_at(&[0.5, 0.4], &[true, false], 0.5).unwrap();
        assert_eq!(
            (c.true_pos, c.false_pos, c.true_neg, c.false_neg),
            (1, 0, 1, 0)
        );
        assert_eq!(
            far_frr_at(&[0.5, 0.4], &[true, false], 0.45).unwrap(),
            (0.0, 0.0)
        );
        assert_eq!(
            far_frr_at(&[0.5, 0.4], &[true, false], 0.4).unwrap(),
            (1.0, 0.0)
        );
        assert_eq!(
            far_frr_at(&[0.5, 0.4], &[true, false], 0.6).unwrap(),
            (0.0, 1.0)
        );
    }

    #[test]
    fn retrieval_hand_example() {
        // q0: R = 3, ranked [T F T F T]; q1: R = 2, ranked [F T T]; q2: R = 0 (skipped).
        // P@1: (1 + 0) / 2 = 1/2.
        // AP@R q0: top 3 = T F T -> (1/1 + 2/3) / 3 = 5/9; q1: top 2 = F T -> (1/2) / 2 = 1/4.
        // MAP@R = (5/9 + 1/4) / 2 = 29/72.
        // recall@1 = 1/2; recall@2 = 1.
        // MRR@2: q0 1/1, q1 1/2 -> 3/4. MRR@1: (1 + 0) / 2 = 1/2.
        // nDCG@3: g(i) = 1/log2(i+1). q0 DCG = g1 + g3 = 1 + 1/2 = 3/2; IDCG (3 rel) =
        // 1 + 1/log2 3 + 1/2. q1 DCG = g2 + g3 = 1/log2 3 + 1/2; IDCG (2 rel) = 1 + 1/log2 3.
        let t = true;
        let f = false;
        let rel = vec![vec![t, f, t, f, t], vec![f, t, t], vec![f, f]];
        let n_rel = [3, 2, 0];
        assert!(close(precision_at_1(&rel, &n_rel).unwrap(), 0.5));
        assert!(close(map_at_r(&rel, &n_rel).unwrap(), 29.0 / 72.0));
        assert!(close(recall_at_k(&rel, &n_rel, 1).unwrap(), 0.5));
        assert!(close(recall_at_k(&rel, &n_rel, 2).unwrap(), 1.0));
        assert!(close(mrr_at_k(&rel, &n_rel, 2).unwrap(), 0.75));
        assert!(close(mrr_at_k(&rel, &n_rel, 1).unwrap(), 0.5));
        let l3 = 1.0 / 3f64.log2();
        let want = ((1.5 / (1.5 + l3)) + ((l3 + 0.5) / (1.0 + l3))) / 2.0;
        assert!(close(ndcg_at_k(&rel, &n_rel, 3).unwrap(), want));

        let r = retrieval_report(&rel, &n_rel, 2).unwrap();
        assert_eq!((r.n_queries, r.n_skipped, r.k), (2, 1, 2));
        assert!(close(r.map_at_r, 29.0 / 72.0) && close(r.recall_at_k, 1.0));

        // A perfect ranking scores 1 everywhere; slices work as well as Vecs.
        let perfect: [&[bool]; 2] = [&[t, t, f], &[t, f, f]];
        let n = [2, 1];
        assert_eq!(map_at_r(&perfect, &n).unwrap(), 1.0);
        assert!(close(ndcg_at_k(&perfect, &n, 3).unwrap(), 1.0));
        // A list shorter than R counts missing places as misses: R = 4, [T] -> (1/1) / 4.
        assert!(close(map_at_r(&[vec![t]], &[4]).unwrap(), 0.25));
    }

    #[test]
    fn map_at_r_matches_definition_on_random_data() {
        // Oracle: AP@R written as in pytorch-metric-learning: precision at each place i <= R
        // (cumulative hits / i) times rel(i), summed, / R.
        let seed = 0xC0FF_EE00_1234_5678;
        println!("seed = {seed:#x}");
        let mut rng = Rng(seed);
        let mut rel = Vec::new();
        let mut n_rel = Vec::new();
        for _ in 0..40 {
            let len = (rng.next_u64() % 30) as usize;
            let v: Vec<bool> = (0..len).map(|_| rng.unit() < 0.3).collect();
            let extra = (rng.next_u64() % 4) as usize;
            n_rel.push(v.iter().filter(|&&b| b).count() + extra);
            rel.push(v);
        }
        let mut sum = 0.0;
        let mut m = 0;
        for (v, &r) in rel.iter().zip(&n_rel) {
            if r == 0 {
                continue;
            }
            m += 1;
            let mut ap = 0.0;
            for i in 0..r.min(v.len()) {
                let cum = v[..=i].iter().filter(|&&b| b).count() as f64;
                ap += cum / (i + 1) as f64 * if v[i] { 1.0 } else { 0.0 };
            }
            sum += ap / r as f64;
        }
        assert!((map_at_r(&rel, &n_rel).unwrap() - sum / m as f64).abs() < 1e-12);
    }

    #[test]
    fn bad_retrieval_inputs_are_errors() {
        let rel = vec![vec![true, false]];
        assert!(matches!(
            map_at_r(&rel, &[1, 2]),
            Err(Error::DimensionMismatch { .. })
        ));
        let empty: Vec<Vec<bool>> = vec![];
        assert!(matches!(map_at_r(&empty, &[]), Err(Error::Empty(_))));
        assert!(recall_at_k(&rel, &[1], 0).is_err());
        assert!(mrr_at_k(&rel, &[1], 0).is_err());
        assert!(ndcg_at_k(&rel, &[1], 0).is_err());
        // More relevant results listed than R says exist.
        assert!(map_at_r(&[vec![true, true]], &[1]).is_err());
        // No query with anything to find.
        assert!(precision_at_1(&[vec![false]], &[0]).is_err());
    }

    #[test]
    fn ann_recall_hand_example() {
        // k = 3. q0 found {1,2,9} vs truth {1,2,3}: 2/3. q1 found {5,4,4} vs {4,5,6}: 2/3
        // (the duplicate 4 counts once). q2 truth has 2 ids -> denominator 2: found {7,8} 1.
        // Mean = (2/3 + 2/3 + 1) / 3 = 7/9.
        let found: Vec<Vec<u32>> = vec![vec![1, 2, 9, 3], vec![5, 4, 4], vec![8, 7]];
        let truth: Vec<Vec<u32>> = vec![vec![1, 2, 3, 9], vec![4, 5, 6], vec![7, 8]];
        assert!(close(ann_recall(&found, &truth, 3).unwrap(), 7.0 / 9.0));
        // k = 1: q0 1 in {1}, q1 5 vs {4} no, q2 8 vs {7} no -> 1/3.
        assert!(close(ann_recall(&found, &truth, 1).unwrap(), 1.0 / 3.0));
        assert!(ann_recall(&found, &truth, 0).is_err());
        assert!(ann_recall(&found[..2], &truth, 3).is_err());
        assert!(ann_recall(&[vec![1u32]], &[Vec::<u32>::new()], 3).is_err());
    }
}
