//! Threshold calibration: choose the duplicate threshold on labelled validation pairs, record
//! every figure measured there, store the result (JSON) in the index manifest, apply it in
//! `query`.
//!
//! A pair is a duplicate iff `score >= threshold` (similarity: greater means more alike).
//! Candidate thresholds are the midpoints between consecutive distinct scores, so a threshold
//! never sits on a validation score. Every method needs both classes in the validation set.

use crate::error::{Error, Result};
use crate::eval::metrics::{best_f1_cut, confusion_at, sweep, Confusion, Needs, Sweep};

pub use crate::calibration::{CalibrationMethod, ThresholdReport};

impl ThresholdReport {
    /// Whether a pair with this similarity score is a duplicate: `score >= threshold`.
    pub fn accepts(&self, score: f32) -> bool {
        score >= self.threshold
    }

    /// The same threshold and method with every figure measured again on other labelled pairs
    /// (calibrate on validation, report on test). Needs both classes.
    pub fn measured_on(&self, scores: &[f32], labels: &[bool]) -> Result<ThresholdReport> {
        sweep(scores, labels, "the test pairs", Needs::Both)?;
        let c = confusion_at(scores, labels, self.threshold)?;
        Ok(Self::from_confusion(
            self.method,
            self.target,
            self.threshold,
            &c,
        ))
    }

    fn from_confusion(
        method: CalibrationMethod,
        target: Option<f64>,
        threshold: f32,
        c: &Confusion,
    ) -> Self {
        ThresholdReport {
            method,
            target,
            threshold,
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
            far: c.far(),
            frr: c.frr(),
            accuracy: c.accuracy(),
            n_pairs: c.total(),
            n_positive: c.true_pos + c.false_neg,
        }
    }
}

/// Measure every figure at `threshold` by counting directly (independent of the sweep).
fn measure(
    scores: &[f32],
    labels: &[bool],
    method: CalibrationMethod,
    target: Option<f64>,
    threshold: f32,
) -> Result<ThresholdReport> {
    let c = confusion_at(scores, labels, threshold)?;
    Ok(ThresholdReport::from_confusion(
        method, target, threshold, &c,
    ))
}

/// Calibrate at the threshold of best F1 ([`crate::eval::metrics::best_f1`]).
pub fn calibrate_best_f1(scores: &[f32], labels: &[bool]) -> Result<ThresholdReport> {
    let sw = sweep(scores, labels, "the calibration pairs", Needs::Both)?;
    let (_, _, _, threshold) = best_f1_cut(&sw);
    measure(scores, labels, CalibrationMethod::BestF1, None, threshold)
}

/// Calibrate at the lowest threshold, i.e. the most recall, whose precision is at least
/// `target` (in (0, 1]). Precision is not monotone in the threshold, so every operating point
/// is checked. An error if no threshold that accepts anything reaches the target.
pub fn calibrate_target_precision(
    scores: &[f32],
    labels: &[bool],
    target: f64,
) -> Result<ThresholdReport> {
    Target::Precision(target).check()?;
    let sw = sweep(scores, labels, "the calibration pairs", Needs::Both)?;
    let precision = |m: &Confusion| m.precision();
    let cut = lowest_cut_where(&sw, |m| m.true_pos > 0 && precision(m) >= target);
    let Some(threshold) = cut else {
        let best = sw
            .cuts
            .iter()
            .map(|c| precision(&Confusion::from_cut(c, sw.pos, sw.neg)))
            .fold(0.0, f64::max);
        return Err(Error::InvalidArgument(format!(
            "--target-precision {target} is unreachable; the best \
             precision at any threshold is {best}"
        )));
    };
    measure(
        scores,
        labels,
        CalibrationMethod::TargetPrecision,
        Some(target),
        threshold,
    )
}

/// Calibrate at the lowest threshold, i.e. the most recall, whose false accept rate
/// (fp / negatives) is at most `target_far` (in [0, 1]). Always reachable: accepting nothing
/// has FAR 0 (then the threshold lies just above the top score and recall is 0).
pub fn calibrate_target_far(
    scores: &[f32],
    labels: &[bool],
    target_far: f64,
) -> Result<ThresholdReport> {
    Target::Far(target_far).check()?;
    let sw = sweep(scores, labels, "the calibration pairs", Needs::Both)?;
    let threshold = lowest_cut_where(&sw, |m| m.far() <= target_far)
        .expect("accepting nothing has FAR 0, within any target");
    measure(
        scores,
        labels,
        CalibrationMethod::TargetFar,
        Some(target_far),
        threshold,
    )
}

/// The midpoint threshold of the lowest operating point satisfying `ok`.
fn lowest_cut_where(sw: &Sweep, ok: impl Fn(&Confusion) -> bool) -> Option<f32> {
    sw.cuts
        .iter()
        .rev()
        .find(|c| ok(&Confusion::from_cut(c, sw.pos, sw.neg)))
        .map(|c| c.threshold)
}

/// Which threshold to choose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Best F1.
    BestF1,
    /// The lowest threshold reaching this precision.
    Precision(f64),
    /// The lowest threshold whose false accept rate stays within this.
    Far(f64),
}

impl Target {
    /// The method as recorded in the manifest (`best_f1`, `target_precision=0.99`, ...).
    pub fn describe(self) -> String {
        match self {
            Target::BestF1 => "best_f1".into(),
            Target::Precision(p) => format!("target_precision={p}"),
            Target::Far(f) => format!("target_far={f}"),
        }
    }

    /// Refuse a target outside its range (precision in (0, 1], FAR in [0, 1]) before any pair
    /// is read or embedded.
    pub fn check(self) -> Result<()> {
        match self {
            Target::Precision(p) if !(p > 0.0 && p <= 1.0) => Err(Error::InvalidArgument(format!(
                "--target-precision: must be in (0, 1], got {p}"
            ))),
            Target::Far(f) if !(0.0..=1.0).contains(&f) => Err(Error::InvalidArgument(format!(
                "--target-far: must be in [0, 1], got {f}"
            ))),
            _ => Ok(()),
        }
    }

    /// Choose the threshold on similarity `scores` of pairs labelled `labels`.
    pub fn calibrate(self, scores: &[f32], labels: &[bool]) -> Result<ThresholdReport> {
        match self {
            Target::BestF1 => calibrate_best_f1(scores, labels),
            Target::Precision(p) => calibrate_target_precision(scores, labels, p),
            Target::Far(f) => calibrate_target_far(scores, labels, f),
        }
    }
}

/// The index's record of a calibration chosen with `target` on the pairs named `source`.
fn stored_calibration(
    cal: &ThresholdReport,
    target: Target,
    source: &str,
) -> crate::index::Calibration {
    crate::index::Calibration {
        threshold: cal.threshold,
        precision: cal.precision,
        recall: cal.recall,
        f1: cal.f1,
        method: target.describe(),
        extra: serde_json::json!({ "pairs": source, "n_pairs": cal.n_pairs, "n_positive": cal.n_positive, "far": cal.far, "frr": cal.frr, "accuracy": cal.accuracy }),
    }
}

/// Calibrate a searcher's index on labelled pairs of queries (embedded with its encoder) and
/// store the threshold in its manifest. `source` names the pairs in the record.
pub fn calibrate_searcher(
    searcher: &crate::query::Searcher,
    pairs: &[(crate::query::Query, crate::query::Query)],
    labels: &[bool],
    target: Target,
    source: &str,
) -> Result<(ThresholdReport, crate::index::Calibration)> {
    let metric = searcher.metric();
    let scores: Vec<f32> = searcher
        .pair_distances(pairs)?
        .into_iter()
        .map(|d| metric.similarity(d))
        .collect();
    let cal = target.calibrate(&scores, labels)?;
    let stored = stored_calibration(&cal, target, source);
    searcher.set_calibration(Some(stored.clone()))?;
    Ok((cal, stored))
}

/// Where `twindex calibrate` takes its labelled pairs from.
#[derive(Debug, Clone, Copy)]
pub enum PairSource<'a> {
    /// A TSV: for a text index one with named columns (q1, q2, is_duplicate); else plain
    /// `a<TAB>b<TAB>label` lines whose sides are `#ID` (a stored item), image files or IDX
    /// items `FILE:N`.
    File(&'a std::path::Path),
    /// The seed's pairs (seed 1) over the training split of this labelled image corpus.
    Corpus(&'a str),
}

/// One side of a pair: `#ID` is a stored item on every kind of index; otherwise a text (text
/// indexes) or an image file / IDX item `FILE:N` (image indexes).
pub fn pair_side(s: &str, text_index: bool) -> Result<crate::query::Query<'_>> {
    use crate::query::Query;
    if let Some(id) = s.trim().strip_prefix('#') {
        let id: u64 = id
            .parse()
            .map_err(|e| Error::Msg(format!("bad item reference {s:?}: expected #ID: {e}")))?;
        return Ok(Query::Id(id));
    }
    Ok(if text_index {
        Query::Text(s)
    } else {
        Query::Image(s)
    })
}

/// Calibrate a searcher's index with `target` on the pairs of `source` and store the
/// threshold in its manifest.
pub fn calibrate_index(
    searcher: &crate::query::Searcher,
    source: PairSource,
    target: Target,
) -> Result<(ThresholdReport, crate::index::Calibration)> {
    use crate::query::Encoder;
    target.check()?;
    let text_index = matches!(searcher.encoder(), Encoder::Text(_));
    match source {
        PairSource::File(p) => {
            let owned = if text_index {
                crate::corpus::pairs::read_pairs_tsv(p)?
            } else {
                crate::corpus::pairs::read_plain_pairs(p)?
            };
            let mut pairs = Vec::with_capacity(owned.len());
            for t in &owned {
                pairs.push((pair_side(&t.a, text_index)?, pair_side(&t.b, text_index)?));
            }
            let labels: Vec<bool> = owned.iter().map(|t| t.duplicate).collect();
            if labels.is_empty() {
                return Err(Error::Msg(format!(
                    "{}: no labelled pairs to calibrate on",
                    p.display()
                )));
            }
            calibrate_searcher(searcher, &pairs, &labels, target, &p.display().to_string())
        }
        PairSource::Corpus(c) => {
            let Encoder::Image(m) = searcher.encoder() else {
                return Err(Error::Msg(
                    "--corpus needs an index with an image encoder".into(),
                ));
            };
            let (_, data) = crate::corpus::load_corpus(c)?;
            let emb = m.embed_pixels(&data.train.pixels, data.train.n, 512)?;
            let pairs = crate::corpus::seed_pairs(&data.train.labels, 1)?;
            let dist = crate::train::image::pair_distances(&emb, m.config.dim, &pairs);
            let (scores, labels) = super::image::pair_scores(&dist, &pairs);
            let cal = target.calibrate(&scores, &labels)?;
            let source = format!("seed pairs of {c} (train split)");
            let stored = stored_calibration(&cal, target, &source);
            searcher.set_calibration(Some(stored.clone()))?;
            Ok((cal, stored))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::best_f1;

    use crate::testutil::XorShiftStar as Rng;

    /// Both classes guaranteed; scores quantised to `levels` values so there are ties.
    fn random_pairs(rng: &mut Rng, n: usize, levels: u32) -> (Vec<f32>, Vec<bool>) {
        let mut s = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let l = if i < 2 { i == 0 } else { rng.unit() < 0.35 };
            let raw = rng.unit() * 0.75 + if l { 0.25 } else { 0.0 };
            s.push(((raw * levels as f64).floor() / levels as f64) as f32);
            y.push(l);
        }
        (s, y)
    }

    /// Every operating point counted directly: "positive iff score >= s" for each score s,
    /// plus "nothing positive".
    fn brute(s: &[f32], y: &[bool]) -> Vec<Confusion> {
        let mut ts = s.to_vec();
        ts.push(f32::INFINITY);
        ts.iter().map(|&t| confusion_at(s, y, t).unwrap()).collect()
    }

    // Descending: .9+ .8+ .7- .6+ .5- .4-. Per cut (tp, fp): >=.9 (1,0), >=.8 (2,0),
    // >=.7 (2,1), >=.6 (3,1), >=.5 (3,2), >=.4 (3,3).
    // Precision: 1, 1, 2/3, 3/4, 3/5, 1/2. FAR: 0, 0, 1/3, 1/3, 2/3, 1. Recall: 1/3, 2/3, 2/3,
    // 1, 1, 1.
    const S: [f32; 6] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
    const Y: [bool; 6] = [true, true, false, true, false, false];

    #[test]
    fn target_precision_hand_example() {
        // Target 0.75: lowest cut with precision >= .75 is >= .6 -> threshold mid(.6,.5) = .55,
        // precision 3/4, recall 1, FAR 1/3, FRR 0, accuracy 5/6, F1 6/7.
        let c = calibrate_target_precision(&S, &Y, 0.75).unwrap();
        assert!((c.threshold - 0.55).abs() < 1e-6);
        assert_eq!((c.precision, c.recall, c.frr), (0.75, 1.0, 0.0));
        assert!((c.far - 1.0 / 3.0).abs() < 1e-12);
        assert!((c.accuracy - 5.0 / 6.0).abs() < 1e-12);
        assert!((c.f1 - 6.0 / 7.0).abs() < 1e-12);
        assert_eq!((c.n_pairs, c.n_positive), (6, 3));
        // Target 0.8 (and 1.0): precision 3/4 is too low; >= .8 reaches 1 -> threshold .75,
        // recall 2/3.
        for target in [0.8, 1.0] {
            let c = calibrate_target_precision(&S, &Y, target).unwrap();
            assert!((c.threshold - 0.75).abs() < 1e-6);
            assert_eq!(c.precision, 1.0);
            assert!((c.recall - 2.0 / 3.0).abs() < 1e-12);
        }
    }

    #[test]
    fn target_far_hand_example() {
        // FAR 0: lowest cut with no false accept is >= .8 -> threshold .75, recall 2/3.
        let c = calibrate_target_far(&S, &Y, 0.0).unwrap();
        assert!((c.threshold - 0.75).abs() < 1e-6);
        assert_eq!(c.far, 0.0);
        // FAR 0.34: >= .6 (FAR 1/3) -> threshold .55, recall 1.
        let c = calibrate_target_far(&S, &Y, 0.34).unwrap();
        assert!((c.threshold - 0.55).abs() < 1e-6);
        assert_eq!(c.recall, 1.0);
        // FAR 1: everything accepted, threshold = the lowest score.
        let c = calibrate_target_far(&S, &Y, 1.0).unwrap();
        assert_eq!((c.threshold, c.far, c.recall), (0.4, 1.0, 1.0));
        // A top-scored negative: FAR 0 only by accepting nothing.
        let c = calibrate_target_far(&[0.9, 0.5], &[false, true], 0.0).unwrap();
        assert_eq!((c.far, c.recall, c.precision), (0.0, 0.0, 0.0));
        assert!(!c.accepts(0.9));
    }

    #[test]
    fn best_f1_hand_example() {
        // F1 per cut 2tp/(2tp+fp+fn): 2/5, 4/5, 4/6, 6/7, 6/8, 6/9 -> 6/7 at >= .6, threshold .55.
        let c = calibrate_best_f1(&S, &Y).unwrap();
        assert_eq!(c.method, CalibrationMethod::BestF1);
        assert!((c.threshold - 0.55).abs() < 1e-6);
        assert!((c.f1 - 6.0 / 7.0).abs() < 1e-12);
        assert!(c.accepts(0.6) && !c.accepts(0.5));
    }

    #[test]
    fn calibrations_match_brute_force_on_random_data() {
        let seed = 0x5EED_0FCA_11B4_A7E5;
        println!("seed = {seed:#x}");
        let mut rng = Rng(seed);
        for round in 0..40 {
            let n = 2 + (rng.next_u64() % 150) as usize;
            let (s, y) = random_pairs(&mut rng, n, [5, 40, 3000][round % 3]);
            let all = brute(&s, &y);

            // Best F1 agrees with the metric and with brute force.
            let c = calibrate_best_f1(&s, &y).unwrap();
            let want = all.iter().map(|m| m.f1()).fold(0.0, f64::max);
            assert_eq!(c.f1, want, "round {round}");
            assert_eq!(c.f1, best_f1(&s, &y).unwrap().0);

            // Target precision: reached, and no qualifying threshold has more recall.
            for target in [0.5, 0.7, 0.9, 0.99] {
                let best_recall = all
                    .iter()
                    .filter(|m| m.true_pos > 0 && m.precision() >= target)
                    .map(|m| m.recall())
                    .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))));
                match (calibrate_target_precision(&s, &y, target), best_recall) {
                    (Ok(c), Some(r)) => {
                        assert!(c.precision >= target, "round {round} target {target}");
                        assert_eq!(c.recall, r, "round {round} target {target}");
                    }
                    (Err(_), None) => {}
                    (got, want) => panic!("round {round} target {target}: {got:?} vs {want:?}"),
                }
            }

            // Target FAR: within target, and no qualifying threshold has more recall.
            for target in [0.0, 0.01, 0.1, 0.5] {
                let c = calibrate_target_far(&s, &y, target).unwrap();
                let r = all
                    .iter()
                    .filter(|m| m.far() <= target)
                    .map(|m| m.recall())
                    .fold(0.0, f64::max);
                assert!(c.far <= target, "round {round} target {target}");
                assert_eq!(c.recall, r, "round {round} target {target}");
            }
        }
    }

    #[test]
    fn unreachable_and_bad_inputs_are_errors() {
        // Top score is a negative, then one positive tied with a negative: precisions 0 (tp = 0,
        // not a candidate) and 1/3 -> 0.5 unreachable.
        let s = [0.9, 0.5, 0.5];
        let y = [false, true, false];
        assert!(matches!(
            calibrate_target_precision(&s, &y, 0.5),
            Err(Error::InvalidArgument(_))
        ));
        assert!(calibrate_target_precision(&s, &y, 0.3).is_ok());
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(calibrate_target_precision(&S, &Y, bad).is_err(), "{bad}");
        }
        for bad in [-0.1, 1.5, f64::NAN] {
            assert!(calibrate_target_far(&S, &Y, bad).is_err(), "{bad}");
        }
        // Single class, length mismatch, empty.
        assert!(calibrate_best_f1(&[0.1, 0.2], &[true, true]).is_err());
        assert!(calibrate_target_far(&[0.1, 0.2], &[false, false], 0.1).is_err());
        assert!(calibrate_best_f1(&[0.1], &[true, false]).is_err());
        assert!(calibrate_best_f1(&[], &[]).is_err());
    }

    #[test]
    fn serde_round_trip_and_remeasure() {
        let c = calibrate_target_precision(&S, &Y, 0.75).unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"method\":\"target_precision\""));
        assert!(json.contains("\"target\":0.75"));
        let back: ThresholdReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let f1 = serde_json::to_string(&calibrate_best_f1(&S, &Y).unwrap()).unwrap();
        assert!(f1.contains("\"method\":\"best_f1\"") && !f1.contains("target"));

        // Measured on other data: same threshold .55; on [.6+ .56- .5+] accepts .6 and .56:
        // precision 1/2, recall 1/2, FAR 1.
        let m = c
            .measured_on(&[0.6, 0.56, 0.5], &[true, false, true])
            .unwrap();
        assert_eq!(m.threshold, c.threshold);
        assert_eq!((m.precision, m.recall, m.far), (0.5, 0.5, 1.0));
    }
}
