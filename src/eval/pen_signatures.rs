//! The online signature protocol (SVC2004 Task 1 trajectories), writer-independent: for each
//! writer of a set, genuine samples `1..=n_refs` are the references; questioned are the other
//! genuine samples (positive), the writer's skilled forgeries (samples 21-40: skilled
//! negatives) and, for the random-forgery figure, the other writers' questioned genuine
//! samples (random negatives). A questioned signature's distances to the references are
//! combined by an [`Aggregate`]; one global threshold serves every writer.
//!
//! Scorers plug in as a distance between two signatures (indices into the signature list):
//! DTW over features, Euclidean distance of twin embeddings, or a fusion of several such
//! distances ([`LogisticFusion`]).
//!
//! The protocol's runs (`train sequence`, `eval --protocol signatures-online`, `verify
//! --signature`) are in `runs`: [`train_online`], [`evaluate_signatures_online`],
//! [`verify_signature`].

pub mod cv;
mod runs;

pub use cv::{cross_validate_online, OnlineCvReport};
pub use runs::{
    evaluate_signatures_online, load_online_corpus, load_online_encoder, online_summary,
    train_online, verify_signature, PenEvalReport, PenEvalRun, PenTrainReport, PenTrainRun,
    SignatureVerdict,
};

use super::dtw::dtw_banded;
use super::protocol::Aggregate;
use super::{eer, far_frr_at, roc_auc};
use crate::corpus::trajectory::{read_trajectory, scan_svc2004, PenSignature, Trajectory};
use crate::error::{Error, Result};
use crate::index::Metric;
use crate::model::pen::PenPreprocess;
use crate::model::sequence::SequenceModel;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a questioned signature is, relative to the claimed writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialKind {
    /// The writer's own signature.
    Genuine,
    /// A skilled forgery of the writer's signature.
    Skilled,
    /// Another writer's genuine signature.
    Random,
}

/// One verification attempt: `query` claimed to be `writer`, whose references are `refs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    pub writer: usize,
    pub refs: Vec<usize>,
    pub query: usize,
    pub kind: TrialKind,
}

/// An inclusive range of writer numbers parsed from `A-B` (or a single `A`).
pub fn parse_writer_range(s: &str) -> Result<Vec<usize>> {
    let bad = || {
        Error::InvalidArgument(format!(
            "writer range {s:?}: expected A-B with 1 <= A <= B, e.g. 21-30"
        ))
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let a: usize = a.parse().map_err(|_| bad())?;
    let b: usize = b.parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a..=b).collect())
}

/// The trials of `writers` (each must have genuine samples `1..=n_refs` in `sigs`).
/// `random`: also the random-forgery trials (each writer against every other writer's
/// questioned genuine samples).
pub fn online_trials(
    sigs: &[PenSignature],
    writers: &[usize],
    n_refs: usize,
    random: bool,
) -> Result<Vec<Trial>> {
    let mut out = Vec::new();
    let questioned_genuine = |w: usize| {
        (0..sigs.len())
            .filter(move |&i| sigs[i].writer == w && sigs[i].genuine && sigs[i].sample > n_refs)
    };
    for &w in writers {
        let refs: Vec<usize> = (0..sigs.len())
            .filter(|&i| sigs[i].writer == w && sigs[i].genuine && sigs[i].sample <= n_refs)
            .collect();
        if refs.len() != n_refs || n_refs == 0 {
            return Err(Error::InvalidArgument(format!(
                "writer {w}: {} genuine reference samples 1..={n_refs} found, expected {n_refs}",
                refs.len()
            )));
        }
        let mut push = |q: usize, kind| {
            out.push(Trial {
                writer: w,
                refs: refs.clone(),
                query: q,
                kind,
            })
        };
        for q in questioned_genuine(w) {
            push(q, TrialKind::Genuine);
        }
        for q in (0..sigs.len()).filter(|&i| sigs[i].writer == w && !sigs[i].genuine) {
            push(q, TrialKind::Skilled);
        }
        if random {
            for &o in writers.iter().filter(|&&o| o != w) {
                for q in questioned_genuine(o) {
                    push(q, TrialKind::Random);
                }
            }
        }
    }
    Ok(out)
}

/// The aggregated distance of each trial under the pairwise distance `dist` (computed in
/// parallel; the references' spread once per writer).
pub fn trial_distances(
    trials: &[Trial],
    agg: Aggregate,
    dist: &(dyn Fn(usize, usize) -> f32 + Sync),
) -> Vec<f32> {
    // The spread of each distinct reference set.
    let mut ref_sets: Vec<&Vec<usize>> = trials.iter().map(|t| &t.refs).collect();
    ref_sets.sort();
    ref_sets.dedup();
    let among: Vec<Vec<f32>> = ref_sets
        .par_iter()
        .map(|refs| {
            if !agg.normalized() {
                return Vec::new();
            }
            let mut v = Vec::new();
            for (k, &a) in refs.iter().enumerate() {
                for &b in &refs[k + 1..] {
                    v.push(dist(a, b));
                }
            }
            v
        })
        .collect();
    trials
        .par_iter()
        .map(|t| {
            let k = ref_sets.binary_search(&&t.refs).expect("listed above");
            let d: Vec<f32> = t.refs.iter().map(|&r| dist(t.query, r)).collect();
            agg.apply(&d, &among[k])
        })
        .collect()
}

/// Similarity scores (the one conversion: `1 - distance`) and labels (genuine = true) of the
/// trials of the kinds in `keep`.
pub fn scores_of(
    trials: &[Trial],
    dist: &[f32],
    keep: &[TrialKind],
) -> (Vec<f32>, Vec<bool>, Vec<usize>) {
    let (mut s, mut y, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for (t, &d) in trials.iter().zip(dist) {
        if keep.contains(&t.kind) {
            s.push(Metric::L2.similarity(d));
            y.push(t.kind == TrialKind::Genuine);
            w.push(t.writer);
        }
    }
    (s, y, w)
}

/// The distance threshold at the equal error rate of genuine vs skilled trials (how the
/// global threshold is chosen, on writers other than the test writers).
pub fn eer_threshold(trials: &[Trial], dist: &[f32]) -> Result<f32> {
    let (s, y, _) = scores_of(trials, dist, &[TrialKind::Genuine, TrialKind::Skilled]);
    Ok(Metric::L2.distance_for_similarity(eer(&s, &y)?.1))
}

/// What the online protocol measured for one scorer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PenReport {
    pub protocol: String,
    pub scorer: String,
    pub writers: Vec<usize>,
    pub references: usize,
    pub aggregate: Aggregate,
    /// Genuine vs skilled forgeries, one threshold for all writers.
    pub eer: f64,
    pub roc_auc: f64,
    /// Genuine vs other writers' genuine signatures.
    pub random_forgery_eer: f64,
    pub random_forgery_roc_auc: f64,
    /// Mean of the per-writer skilled EERs (writer-dependent thresholds: an upper bound).
    pub mean_writer_eer: f64,
    /// The decision threshold (a distance; accept iff distance <= threshold), chosen without
    /// these writers, and the error rates there.
    pub threshold: Option<f32>,
    pub far: Option<f64>,
    pub frr: Option<f64>,
    pub random_far: Option<f64>,
    pub n_genuine: usize,
    pub n_skilled: usize,
    pub n_random: usize,
}

/// Score `trials` (distances `dist`, one per trial) into the report.
pub fn online_report(
    scorer: &str,
    writers: &[usize],
    n_refs: usize,
    agg: Aggregate,
    trials: &[Trial],
    dist: &[f32],
    threshold: Option<f32>,
) -> Result<PenReport> {
    if trials.len() != dist.len() {
        return Err(Error::dim(trials.len(), dist.len(), "trial distances"));
    }
    let (s, y, who) = scores_of(trials, dist, &[TrialKind::Genuine, TrialKind::Skilled]);
    let (rs, ry, _) = scores_of(trials, dist, &[TrialKind::Genuine, TrialKind::Random]);
    let mut per = Vec::new();
    for w in writers {
        let idx: Vec<usize> = (0..who.len()).filter(|&i| who[i] == *w).collect();
        let ws: Vec<f32> = idx.iter().map(|&i| s[i]).collect();
        let wy: Vec<bool> = idx.iter().map(|&i| y[i]).collect();
        per.push(eer(&ws, &wy)?.0);
    }
    let (mut far, mut frr, mut random_far) = (None, None, None);
    if let Some(t) = threshold {
        let st = Metric::L2.similarity(t);
        let (a, r) = far_frr_at(&s, &y, st)?;
        far = Some(a);
        frr = Some(r);
        random_far = Some(far_frr_at(&rs, &ry, st)?.0);
    }
    let count = |k| trials.iter().filter(|t| t.kind == k).count();
    let has_random = count(TrialKind::Random) > 0;
    Ok(PenReport {
        protocol: "signatures-online".into(),
        scorer: scorer.into(),
        writers: writers.to_vec(),
        references: n_refs,
        aggregate: agg,
        eer: eer(&s, &y)?.0,
        roc_auc: roc_auc(&s, &y)?,
        random_forgery_eer: if has_random {
            eer(&rs, &ry)?.0
        } else {
            f64::NAN
        },
        random_forgery_roc_auc: if has_random {
            roc_auc(&rs, &ry)?
        } else {
            f64::NAN
        },
        mean_writer_eer: per.iter().sum::<f64>() / per.len().max(1) as f64,
        threshold,
        far,
        frr,
        random_far,
        n_genuine: count(TrialKind::Genuine),
        n_skilled: count(TrialKind::Skilled),
        n_random: count(TrialKind::Random),
    })
}

/// Logistic regression over several scorers' distances: `p(genuine) = sigmoid(w . z + b)`,
/// `z` the distances standardised with the training mean and deviation. Its fused distance
/// is `1 - p`. Fitted on training writers only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogisticFusion {
    /// Names of the fused scorers, in input order.
    pub inputs: Vec<String>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub weights: Vec<f64>,
    pub bias: f64,
}

impl LogisticFusion {
    /// Fit by Newton's method (IRLS) with a small ridge (`1e-3`) on the weights, classes
    /// weighted equally. `x`: one row of distances per trial; `genuine`: the labels.
    pub fn fit(inputs: Vec<String>, x: &[Vec<f32>], genuine: &[bool]) -> Result<Self> {
        let k = inputs.len();
        if x.is_empty() || x.len() != genuine.len() || x.iter().any(|r| r.len() != k) || k == 0 {
            return Err(Error::Shape(format!(
                "fusion: {} rows of {} inputs and {} labels",
                x.len(),
                k,
                genuine.len()
            )));
        }
        let npos = genuine.iter().filter(|&&g| g).count();
        let nneg = genuine.len() - npos;
        if npos == 0 || nneg == 0 {
            return Err(Error::InvalidArgument(
                "fusion needs genuine and forged trials".into(),
            ));
        }
        let n = x.len() as f64;
        let mean: Vec<f64> = (0..k)
            .map(|j| x.iter().map(|r| r[j] as f64).sum::<f64>() / n)
            .collect();
        let std: Vec<f64> = (0..k)
            .map(|j| {
                (x.iter()
                    .map(|r| (r[j] as f64 - mean[j]).powi(2))
                    .sum::<f64>()
                    / n)
                    .sqrt()
                    .max(1e-12)
            })
            .collect();
        let z: Vec<Vec<f64>> = x
            .iter()
            .map(|r| (0..k).map(|j| (r[j] as f64 - mean[j]) / std[j]).collect())
            .collect();
        let cw = |g: bool| {
            if g {
                0.5 * n / npos as f64
            } else {
                0.5 * n / nneg as f64
            }
        };
        // Parameters theta = (w_0..w_{k-1}, b).
        let mut th = vec![0f64; k + 1];
        for _ in 0..50 {
            let mut g = vec![0f64; k + 1];
            let mut h = vec![vec![0f64; k + 1]; k + 1];
            for (zi, &yi) in z.iter().zip(genuine) {
                let mut f = th[k];
                for j in 0..k {
                    f += th[j] * zi[j];
                }
                let p = 1.0 / (1.0 + (-f).exp());
                let c = cw(yi);
                let r = c * (p - f64::from(u8::from(yi)));
                let wv = c * p * (1.0 - p);
                let xi: Vec<f64> = zi.iter().copied().chain(std::iter::once(1.0)).collect();
                for a in 0..=k {
                    g[a] += r * xi[a];
                    for b in 0..=k {
                        h[a][b] += wv * xi[a] * xi[b];
                    }
                }
            }
            for a in 0..k {
                g[a] += 1e-3 * th[a];
                h[a][a] += 1e-3;
            }
            let step = solve(h, g).ok_or_else(|| Error::Msg("fusion: singular Hessian".into()))?;
            let mut delta = 0.0f64;
            for a in 0..=k {
                th[a] -= step[a];
                delta = delta.max(step[a].abs());
            }
            if delta < 1e-9 {
                break;
            }
        }
        Ok(LogisticFusion {
            inputs,
            mean,
            std,
            weights: th[..k].to_vec(),
            bias: th[k],
        })
    }

    /// The fused distance `1 - p(genuine)` of one row of input distances.
    pub fn distance(&self, x: &[f32]) -> f32 {
        let mut f = self.bias;
        for (j, &v) in x.iter().enumerate().take(self.weights.len()) {
            f += self.weights[j] * (v as f64 - self.mean[j]) / self.std[j];
        }
        (1.0 - 1.0 / (1.0 + (-f).exp())) as f32
    }
}

// ---------------------------------------------------------------------------------------------
// Scorers: DTW, the sequence twin, and their fusion
// ---------------------------------------------------------------------------------------------

/// An online signature corpus in memory: the listing and every trajectory, in the same order.
pub struct PenCorpus {
    pub sigs: Vec<PenSignature>,
    pub trajectories: Vec<Trajectory>,
}

impl PenCorpus {
    /// Read an SVC2004 Task 1 folder (`U{u}S{s}.TXT`), every file parsed up front.
    pub fn load(dir: &Path) -> Result<Self> {
        let sigs = scan_svc2004(dir)?;
        let trajectories = sigs
            .par_iter()
            .map(|s| read_trajectory(&s.path))
            .collect::<Result<Vec<_>>>()?;
        Ok(PenCorpus { sigs, trajectories })
    }

    /// Feature sequences of every signature under `pre` (in parallel).
    pub fn features(&self, pre: &PenPreprocess) -> Result<Vec<Vec<f32>>> {
        self.trajectories.par_iter().map(|t| pre.apply(t)).collect()
    }

    /// Each signature's pen-down time in seconds (the time between consecutive pen-down
    /// points, summed; at least a millisecond).
    pub fn pen_down_seconds(&self) -> Vec<f32> {
        self.trajectories.iter().map(pen_down_seconds).collect()
    }

    /// Writers present.
    pub fn writers(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.sigs.iter().map(|s| s.writer).collect();
        w.dedup();
        w
    }
}

/// The pen-down time of a trajectory in seconds (see [`PenCorpus::pen_down_seconds`]).
pub fn pen_down_seconds(t: &Trajectory) -> f32 {
    let ts = t.monotonic_times();
    let mut ms = 0.0;
    for i in 1..ts.len() {
        if t.points[i].down && t.points[i - 1].down {
            ms += ts[i] - ts[i - 1];
        }
    }
    (ms.max(1.0) / 1000.0) as f32
}

/// The DTW scorer: features, band, aggregate and a tempo term. The defaults were chosen on
/// training writers only (the mean EER of writers 1-10 and 11-20; docs/faces-and-signatures.md):
/// features x, y, dx, dy, curvature, sin and cos of the direction (0.115; x, y, dx, dy: 0.145),
/// mean-norm (min-norm 0.133), band 12 of 120 points (24: same), tempo weight 1 (0: 0.115,
/// 0.5: 0.078, 0.75: 0.077, 1: 0.074, 1.5: 0.095, 2: 0.106).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DtwScorer {
    pub preprocess: PenPreprocess,
    /// Sakoe-Chiba half-width in points. Default 12 (a tenth of 120 points). Wider: more
    /// warping allowed, slower (linear in the band).
    pub band: usize,
    /// Default `mean-norm`: the mean distance to the references over the references' own
    /// mean pairwise distance.
    pub aggregate: Aggregate,
    /// Weight of the tempo term added to the aggregated DTW distance: `|ln(T_q) - mean
    /// ln(T_ref)|`, with T the pen-down time. Time-uniform resampling and standardised
    /// features make DTW blind to how fast a signature was written, and forgers write slower.
    /// Default 1; 0 (what a stored scorer without the field means): DTW alone.
    #[serde(default)]
    pub tempo_weight: f32,
}

impl Default for DtwScorer {
    fn default() -> Self {
        use crate::model::pen::PenFeature as F;
        DtwScorer {
            preprocess: PenPreprocess {
                features: vec![F::X, F::Y, F::Dx, F::Dy, F::Curvature, F::SinDir, F::CosDir],
                ..PenPreprocess::default()
            },
            band: 12,
            aggregate: Aggregate::MeanNorm,
            tempo_weight: 1.0,
        }
    }
}

impl DtwScorer {
    /// Aggregated DTW distance of each trial, from the feature sequences `feats` (one per
    /// signature of the corpus), plus the tempo term from the pen-down times `pen_down`
    /// (seconds, one per signature).
    pub fn trial_distances(
        &self,
        trials: &[Trial],
        feats: &[Vec<f32>],
        pen_down: &[f32],
    ) -> Vec<f32> {
        let c = self.preprocess.channels();
        let dtw = trial_distances(trials, self.aggregate, &|a, b| {
            dtw_banded(&feats[a], &feats[b], c, self.band).unwrap_or(f32::INFINITY)
        });
        if self.tempo_weight == 0.0 {
            return dtw;
        }
        trials
            .iter()
            .zip(dtw)
            .map(|(t, d)| d + self.tempo_weight * tempo_distance(t, pen_down))
            .collect()
    }
}

/// `|ln(T_query) - mean ln(T_ref)|` over pen-down times.
pub fn tempo_distance(t: &Trial, pen_down: &[f32]) -> f32 {
    let mean = t.refs.iter().map(|&r| pen_down[r].ln()).sum::<f32>() / t.refs.len().max(1) as f32;
    (pen_down[t.query].ln() - mean).abs()
}

/// The default DTW scorer's decision threshold (a `mean-norm` distance) where no encoder's
/// calibration gives one: the EER point of SVC2004 writers 1-20 (genuine vs skilled), as
/// `twindex eval --protocol signatures-online --scorer dtw` prints it.
pub const DEFAULT_DTW_THRESHOLD: f32 = 1.3230;

/// Which score decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scorer {
    /// The sequence twin's embedding distance.
    Twin,
    /// Banded DTW over the features.
    Dtw,
    /// Logistic fusion of the twin and DTW.
    Fusion,
}

impl Scorer {
    pub fn name(self) -> &'static str {
        match self {
            Scorer::Twin => "twin",
            Scorer::Dtw => "dtw",
            Scorer::Fusion => "fusion",
        }
    }
}

/// A scorer's decision settings as chosen on hold-out writers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorerChoice {
    pub aggregate: Aggregate,
    /// Distance threshold (accept iff distance <= threshold): the EER point of the hold-out
    /// writers' genuine vs skilled trials.
    pub threshold: f32,
    pub holdout_eer: f64,
}

/// What `train sequence` chose on the hold-out writers, stored in the encoder's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PenCalibration {
    pub holdout_writers: Vec<usize>,
    pub references: usize,
    pub twin: ScorerChoice,
    pub dtw: DtwScorer,
    pub dtw_choice: ScorerChoice,
    /// Inputs: the twin's and DTW's aggregated distances.
    pub fusion: LogisticFusion,
    pub fusion_choice: ScorerChoice,
}

/// Twin embeddings of every signature of `corpus` (`n x dim`).
pub fn twin_embeddings(model: &SequenceModel, corpus: &PenCorpus) -> Result<Vec<f32>> {
    let feats = corpus.features(&model.config.preprocess)?;
    model.embed(&feats, 128)
}

/// Aggregated twin distance of each trial from the embeddings `emb` (`n x dim`).
pub fn twin_trial_distances(trials: &[Trial], agg: Aggregate, emb: &[f32], dim: usize) -> Vec<f32> {
    let row = |i: usize| &emb[i * dim..(i + 1) * dim];
    trial_distances(trials, agg, &|a, b| Metric::L2.distance(row(a), row(b)))
}

/// The fused distance of each trial from the twin's and DTW's aggregated distances.
pub fn fused_distances(f: &LogisticFusion, twin: &[f32], dtw: &[f32]) -> Vec<f32> {
    twin.iter()
        .zip(dtw)
        .map(|(&a, &b)| f.distance(&[a, b]))
        .collect()
}

/// The aggregate (of min, min-norm, mean, mean-norm) with the lowest EER on `trials` under
/// `dist_of`, with its distances and EER threshold.
pub fn choose_aggregate(
    trials: &[Trial],
    dist_of: &dyn Fn(Aggregate) -> Vec<f32>,
) -> Result<(ScorerChoice, Vec<f32>)> {
    let mut best: Option<(ScorerChoice, Vec<f32>)> = None;
    for agg in [
        Aggregate::Min,
        Aggregate::MinNorm,
        Aggregate::Mean,
        Aggregate::MeanNorm,
    ] {
        let d = dist_of(agg);
        let (s, y, _) = scores_of(trials, &d, &[TrialKind::Genuine, TrialKind::Skilled]);
        let (e, t) = eer(&s, &y)?;
        if best.as_ref().is_none_or(|b| e < b.0.holdout_eer) {
            best = Some((
                ScorerChoice {
                    aggregate: agg,
                    threshold: Metric::L2.distance_for_similarity(t),
                    holdout_eer: e,
                },
                d,
            ));
        }
    }
    Ok(best.expect("four aggregates"))
}

/// The choice for fixed distances: their EER and EER threshold on `trials`.
pub fn choice_for(trials: &[Trial], agg: Aggregate, dist: &[f32]) -> Result<ScorerChoice> {
    let (s, y, _) = scores_of(trials, dist, &[TrialKind::Genuine, TrialKind::Skilled]);
    let (e, t) = eer(&s, &y)?;
    Ok(ScorerChoice {
        aggregate: agg,
        threshold: Metric::L2.distance_for_similarity(t),
        holdout_eer: e,
    })
}

/// Calibrate every scorer on the hold-out writers' trials: the twin's aggregate and
/// threshold, DTW's threshold (its settings `dtw` fixed beforehand), and the fusion's weights
/// and threshold (fitted on genuine vs skilled trials). Nothing of the test writers is used.
pub fn calibrate_online(
    corpus: &PenCorpus,
    model: &SequenceModel,
    dtw: &DtwScorer,
    holdout: &[usize],
    n_refs: usize,
) -> Result<PenCalibration> {
    let trials = online_trials(&corpus.sigs, holdout, n_refs, false)?;
    let emb = twin_embeddings(model, corpus)?;
    let dim = model.config.dim;
    let (twin, td) = choose_aggregate(&trials, &|a| twin_trial_distances(&trials, a, &emb, dim))?;
    let feats = corpus.features(&dtw.preprocess)?;
    let dd = dtw.trial_distances(&trials, &feats, &corpus.pen_down_seconds());
    let dtw_choice = choice_for(&trials, dtw.aggregate, &dd)?;
    let x: Vec<Vec<f32>> = td.iter().zip(&dd).map(|(&a, &b)| vec![a, b]).collect();
    let y: Vec<bool> = trials
        .iter()
        .map(|t| t.kind == TrialKind::Genuine)
        .collect();
    let fusion = LogisticFusion::fit(vec!["twin".into(), "dtw".into()], &x, &y)?;
    let fd = fused_distances(&fusion, &td, &dd);
    let fusion_choice = choice_for(&trials, Aggregate::Min, &fd)?;
    Ok(PenCalibration {
        holdout_writers: holdout.to_vec(),
        references: n_refs,
        twin,
        dtw: dtw.clone(),
        dtw_choice,
        fusion,
        fusion_choice,
    })
}

/// Evaluate one scorer on `writers` of `corpus`: the trials (with random forgeries), the
/// distances, the report at the hold-out threshold. `model` and `cal` are needed for the twin
/// and the fusion; DTW alone uses `dtw` and `dtw_threshold`.
pub fn evaluate_online(
    corpus: &PenCorpus,
    writers: &[usize],
    n_refs: usize,
    scorer: Scorer,
    model: Option<(&SequenceModel, &PenCalibration)>,
    dtw: &DtwScorer,
    dtw_threshold: Option<f32>,
) -> Result<PenReport> {
    let trials = online_trials(&corpus.sigs, writers, n_refs, true)?;
    let need_model = || {
        model.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the {} scorer needs a trained sequence encoder",
                scorer.name()
            ))
        })
    };
    let dtw_d = |d: &DtwScorer| -> Result<Vec<f32>> {
        let feats = corpus.features(&d.preprocess)?;
        Ok(d.trial_distances(&trials, &feats, &corpus.pen_down_seconds()))
    };
    let (dist, agg, thr) = match scorer {
        Scorer::Dtw => (dtw_d(dtw)?, dtw.aggregate, dtw_threshold),
        Scorer::Twin => {
            let (m, cal) = need_model()?;
            let emb = twin_embeddings(m, corpus)?;
            let d = twin_trial_distances(&trials, cal.twin.aggregate, &emb, m.config.dim);
            (d, cal.twin.aggregate, Some(cal.twin.threshold))
        }
        Scorer::Fusion => {
            let (m, cal) = need_model()?;
            let emb = twin_embeddings(m, corpus)?;
            let td = twin_trial_distances(&trials, cal.twin.aggregate, &emb, m.config.dim);
            let dd = dtw_d(&cal.dtw)?;
            (
                fused_distances(&cal.fusion, &td, &dd),
                Aggregate::Min,
                Some(cal.fusion_choice.threshold),
            )
        }
    };
    online_report(scorer.name(), writers, n_refs, agg, &trials, &dist, thr)
}

/// The decision on one questioned signature against a writer's references.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PenDecision {
    pub scorer: Scorer,
    pub accepted: bool,
    /// The deciding distance (the fused distance for `fusion`) and its threshold.
    pub distance: f32,
    pub threshold: f32,
    /// The twin's and DTW's aggregated distances, where computed.
    pub twin_distance: Option<f32>,
    pub dtw_distance: Option<f32>,
    pub references: usize,
}

/// Decide whether `query` is by the writer of `refs` (at least 2 for the `-norm` aggregates).
/// `model` + `cal`: the trained encoder and its calibration (needed for twin and fusion);
/// DTW alone uses `dtw` and `dtw_threshold`. `threshold`, when given, decides instead of the
/// scorer's calibrated threshold.
pub fn verify_online(
    query: &Trajectory,
    refs: &[Trajectory],
    scorer: Scorer,
    model: Option<(&SequenceModel, &PenCalibration)>,
    dtw: &DtwScorer,
    dtw_threshold: f32,
    threshold: Option<f32>,
) -> Result<PenDecision> {
    if refs.is_empty() {
        return Err(Error::Empty("no reference signatures".into()));
    }
    let mut trajectories = vec![query.clone()];
    trajectories.extend(refs.iter().cloned());
    let corpus = PenCorpus {
        sigs: trajectories
            .iter()
            .enumerate()
            .map(|(i, t)| PenSignature {
                path: t.path.clone(),
                writer: 1,
                sample: i,
                genuine: true,
            })
            .collect(),
        trajectories,
    };
    let trial = [Trial {
        writer: 1,
        refs: (1..=refs.len()).collect(),
        query: 0,
        kind: TrialKind::Genuine,
    }];
    let dtw_of = |d: &DtwScorer| -> Result<f32> {
        let feats = corpus.features(&d.preprocess)?;
        Ok(d.trial_distances(&trial, &feats, &corpus.pen_down_seconds())[0])
    };
    let twin_of = |m: &SequenceModel, agg: Aggregate| -> Result<f32> {
        let emb = twin_embeddings(m, &corpus)?;
        Ok(twin_trial_distances(&trial, agg, &emb, m.config.dim)[0])
    };
    let need = || {
        model.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "the {} scorer needs a trained sequence encoder",
                scorer.name()
            ))
        })
    };
    let (distance, calibrated, twin_distance, dtw_distance) = match scorer {
        Scorer::Dtw => {
            let d = dtw_of(dtw)?;
            (d, dtw_threshold, None, Some(d))
        }
        Scorer::Twin => {
            let (m, cal) = need()?;
            let d = twin_of(m, cal.twin.aggregate)?;
            (d, cal.twin.threshold, Some(d), None)
        }
        Scorer::Fusion => {
            let (m, cal) = need()?;
            let t = twin_of(m, cal.twin.aggregate)?;
            let d = dtw_of(&cal.dtw)?;
            (
                cal.fusion.distance(&[t, d]),
                cal.fusion_choice.threshold,
                Some(t),
                Some(d),
            )
        }
    };
    let threshold = threshold.unwrap_or(calibrated);
    Ok(PenDecision {
        scorer,
        accepted: crate::index::is_duplicate(distance, threshold),
        distance,
        threshold,
        twin_distance,
        dtw_distance,
        references: refs.len(),
    })
}

/// Solve `a x = b` by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-14 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            let pivot = a[c].clone();
            for (ark, ack) in a[r][c..n].iter_mut().zip(&pivot[c..n]) {
                *ark -= f * ack;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0f64; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::trajectory::PenPoint;

    fn sig(writer: usize, sample: usize) -> PenSignature {
        PenSignature {
            path: format!("U{writer}S{sample}.TXT").into(),
            writer,
            sample,
            genuine: sample <= 20,
        }
    }

    #[test]
    fn tempo_term_by_hand() {
        // Pen-down times: refs e^0, e^1, e^2 seconds (mean log 1), query e^3: |3 - 1| = 2.
        let pen_down = [1.0f32, 1.0f32.exp(), 2.0f32.exp(), 3.0f32.exp()];
        let t = Trial {
            writer: 1,
            refs: vec![0, 1, 2],
            query: 3,
            kind: TrialKind::Genuine,
        };
        assert!((tempo_distance(&t, &pen_down) - 2.0).abs() < 1e-5);
        // Down at 0, 10, 20 ms, up at 30, down at 40, 55 ms: 20 + 15 = 35 ms pen-down.
        let p = |t: f64, down: bool| PenPoint {
            x: 0.0,
            y: 0.0,
            t,
            down,
        };
        let tr = Trajectory {
            path: "t".into(),
            points: vec![
                p(0.0, true),
                p(10.0, true),
                p(20.0, true),
                p(30.0, false),
                p(40.0, true),
                p(55.0, true),
            ],
        };
        assert!((pen_down_seconds(&tr) - 0.035).abs() < 1e-6);
    }

    /// A threshold given to the verifier decides instead of the calibrated one, by the one
    /// rule `distance <= threshold`: a signature at exactly that distance is accepted, just
    /// below it rejected.
    #[test]
    fn verify_decides_at_a_given_threshold() {
        let traj = |k: f64| Trajectory {
            path: format!("t{k}").into(),
            points: (0..40)
                .map(|i| {
                    let t = i as f64;
                    PenPoint {
                        x: (t * 0.3).sin() * (1.0 + k) + t * 0.1,
                        y: (t * 0.2 + k).cos(),
                        t: t * 10.0,
                        down: true,
                    }
                })
                .collect(),
        };
        let (q, refs) = (traj(0.3), vec![traj(0.0), traj(0.1)]);
        let dtw = DtwScorer::default();
        let d = verify_online(&q, &refs, Scorer::Dtw, None, &dtw, 1e9, None).unwrap();
        assert!(d.accepted && d.threshold == 1e9 && d.distance > 0.0);
        let at = verify_online(&q, &refs, Scorer::Dtw, None, &dtw, 1e9, Some(d.distance)).unwrap();
        assert_eq!(
            (at.accepted, at.threshold, at.distance),
            (true, d.distance, d.distance)
        );
        let below = d.distance - d.distance * 1e-6;
        let r = verify_online(&q, &refs, Scorer::Dtw, None, &dtw, 1e9, Some(below)).unwrap();
        assert!(!r.accepted);
        // The twin needs an encoder.
        assert!(verify_online(&q, &refs, Scorer::Twin, None, &dtw, 1e9, None).is_err());
    }

    #[test]
    fn trials_and_ranges() {
        assert_eq!(parse_writer_range("21-30").unwrap().len(), 10);
        assert_eq!(parse_writer_range("7").unwrap(), vec![7]);
        assert!(parse_writer_range("30-21").is_err());
        let sigs: Vec<PenSignature> = [1, 2]
            .iter()
            .flat_map(|&w| [1, 2, 3, 21].map(|s| sig(w, s)))
            .collect();
        let t = online_trials(&sigs, &[1, 2], 2, true).unwrap();
        // Per writer: 1 genuine (S3), 1 skilled (S21), 1 random (the other's S3).
        assert_eq!(t.len(), 6);
        assert_eq!(t[0].refs, vec![0, 1]);
        assert_eq!(t[2].kind, TrialKind::Random);
        assert_eq!(t[2].query, 6);
    }

    /// One input that separates the classes: the fitted weight is negative (a larger distance
    /// is less genuine) and the fused distance orders the trials as the input does.
    #[test]
    fn fusion_learns_the_direction() {
        let x: Vec<Vec<f32>> = vec![
            vec![0.1],
            vec![0.2],
            vec![0.35],
            vec![0.3],
            vec![0.6],
            vec![0.7],
        ];
        let y = [true, true, true, false, false, false];
        let f = LogisticFusion::fit(vec!["a".into()], &x, &y).unwrap();
        assert!(f.weights[0] < 0.0, "{f:?}");
        assert!(f.distance(&[0.1]) < f.distance(&[0.7]));
    }
}
