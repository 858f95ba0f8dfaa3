//! The two image verification protocols: ORL faces (one-shot identification of unseen people,
//! verification, open-set rejection) and SVC2004 signatures (writer-independent, skilled
//! forgeries). Both work on embeddings under Euclidean distance, so the same code scores a
//! trained encoder and the raw-pixel baseline. The runs of `train image` and `eval` on these
//! protocols live in the submodules: training with class or writer hold-out and ensembles
//! (`train`), evaluation with an encoder or raw pixels (`evaluate`), and the one calibration
//! pipeline of image encoders ([`calibrate_encoder`]).

mod calibrate_encoder;
mod evaluate;
mod train;
mod train_idx;

pub use calibrate_encoder::{calibrate_encoder, CalibrationPairs};
pub use evaluate::{evaluate_orl, evaluate_protocol, ProtocolEvalReport, Scored};
pub use train::{
    assemble, folder_preprocess, member_line, orl_summary, parse_size, train_folder, train_image,
    train_image_folder, train_orl, train_split, AssembledRow, Calibrate, FolderOptions,
    FolderProtocol, FolderRun, FolderRunReport, FolderTrainReport, ImageRun, ProtocolTrainReport,
    MAX_INPUT_SIDE, SIGNATURE_DEV_WRITERS, SIGNATURE_KEEP_BEST_TRAIN_WRITERS,
    SIGNATURE_TEST_WRITERS, SIGNATURE_TRAIN_WRITERS,
};
pub use train_idx::{train_idx, IdxEncoderReport, IdxEnsembleReport, IdxRun, IdxTrainReport};

use super::{calibrate_best_f1, calibrate_target_far, eer, far_frr_at, roc_auc, ThresholdReport};
use crate::corpus::folder::{self, FolderItem, ImageFolder};
use crate::corpus::ImageSet;
use crate::error::{Error, Result};
use crate::index::Metric;
use crate::model::{ImageModel, Preprocess};
use serde::{Deserialize, Serialize};
use std::path::Path;

fn l2(a: &[f32], b: &[f32]) -> f32 {
    Metric::L2.distance(a, b)
}

fn sim(d: f32) -> f32 {
    Metric::L2.similarity(d)
}

// ---------------------------------------------------------------------------------------------
// ORL faces
// ---------------------------------------------------------------------------------------------

/// The number in a subject name such as `s17`.
pub fn subject_number(name: &str) -> Option<usize> {
    let digits: String = name.chars().filter(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// One ORL fold: the subjects training may see and the unseen ones it is tested on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OrlFold {
    /// 0..4: fold `f` leaves subjects `10f+1 ..= 10f+10` unseen.
    pub fold: usize,
    pub train_subjects: Vec<String>,
    pub unseen_subjects: Vec<String>,
}

/// Keep the folds numbered in `only` (all four when empty); a number that is not a fold (0-3)
/// is refused, naming it (it would otherwise leave no fold and every figure NaN).
pub fn select_orl_folds(folds: Vec<OrlFold>, only: &[usize]) -> Result<Vec<OrlFold>> {
    if let Some(bad) = only.iter().find(|&&f| !folds.iter().any(|x| x.fold == f)) {
        return Err(Error::InvalidArgument(format!(
            "--folds {bad}: the ORL protocol has folds 0 to {}",
            folds.len().saturating_sub(1)
        )));
    }
    Ok(folds
        .into_iter()
        .filter(|x| only.is_empty() || only.contains(&x.fold))
        .collect())
}

/// The four subject-disjoint folds of the ORL protocol over `folder` (40 subjects `s1..s40`
/// of 10 images each; an error naming the folder otherwise).
pub fn orl_folds(folder: &ImageFolder) -> Result<Vec<OrlFold>> {
    let mut bad = Vec::new();
    for c in &folder.classes {
        let n = folder.items.iter().filter(|i| &i.label == c).count();
        if subject_number(c).is_none() || n != 10 {
            bad.push(format!("{c} ({n} images)"));
        }
    }
    if folder.classes.len() != 40 || !bad.is_empty() {
        return Err(Error::format(
            &folder.root,
            format!(
                "the ORL protocol expects 40 subjects s1..s40 of 10 images each, found {} classes{}",
                folder.classes.len(),
                if bad.is_empty() {
                    String::new()
                } else {
                    format!("; not fitting: {}", bad.join(", "))
                }
            ),
        ));
    }
    Ok((0..4)
        .map(|f| {
            let unseen = |c: &String| {
                let n = subject_number(c).unwrap_or(0);
                n > 10 * f && n <= 10 * f + 10
            };
            OrlFold {
                fold: f,
                train_subjects: folder
                    .classes
                    .iter()
                    .filter(|c| !unseen(c))
                    .cloned()
                    .collect(),
                unseen_subjects: folder
                    .classes
                    .iter()
                    .filter(|c| unseen(c))
                    .cloned()
                    .collect(),
            }
        })
        .collect())
}

/// What one fold measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrlFoldReport {
    pub fold: usize,
    /// Share of probes whose nearest enrolled image is their own subject, averaged over the
    /// 10 choices of enrolment image.
    pub identification_accuracy: f64,
    /// ROC-AUC of all pairs of the unseen subjects' images (same person vs not).
    pub verification_roc_auc: f64,
    pub verification_eer: f64,
    /// The distance threshold used for decisions (`distance <= threshold`: same person).
    pub threshold: f32,
    /// FAR and FRR of the verification pairs at `threshold`.
    pub far: f64,
    pub frr: f64,
    /// Share of a stranger's images (an unseen subject left out of enrolment) accepted as
    /// someone enrolled: nearest enrolled image within `threshold`.
    pub open_set_false_accept: f64,
    /// Share of enrolled subjects' probes accepted as the right person (nearest enrolled image
    /// is theirs and within `threshold`).
    pub open_set_correct_accept: f64,
}

/// The ORL protocol on the embeddings of one fold's unseen subjects: `emb` holds `n_subjects x
/// 10` rows of `dim` floats, subject after subject, images in order. `threshold` is the
/// calibrated distance threshold (chosen without these subjects).
pub fn orl_fold_report(
    fold: usize,
    emb: &[f32],
    dim: usize,
    n_subjects: usize,
    per_subject: usize,
    threshold: f32,
) -> Result<OrlFoldReport> {
    let n = n_subjects * per_subject;
    if emb.len() != n * dim || n_subjects < 2 || per_subject < 2 {
        return Err(Error::dim(n * dim, emb.len(), "ORL fold embeddings"));
    }
    let row = |i: usize| &emb[i * dim..(i + 1) * dim];
    let mut d = vec![0f32; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let v = l2(row(i), row(j));
            d[i * n + j] = v;
            d[j * n + i] = v;
        }
    }
    let subj = |i: usize| i / per_subject;
    // Closed-set identification with one enrolment image e per subject.
    let (mut correct, mut probes) = (0usize, 0usize);
    // Open set: each subject in turn is the stranger, the others are enrolled with image e.
    let (mut fa, mut stranger_probes, mut ca, mut enrolled_probes) = (0usize, 0usize, 0, 0);
    for e in 0..per_subject {
        let gallery: Vec<usize> = (0..n_subjects).map(|s| s * per_subject + e).collect();
        for q in 0..n {
            if q % per_subject == e {
                continue;
            }
            let best = gallery
                .iter()
                .copied()
                .min_by(|&a, &b| d[q * n + a].total_cmp(&d[q * n + b]))
                .expect("at least two subjects");
            probes += 1;
            correct += usize::from(subj(best) == subj(q));
        }
        for stranger in 0..n_subjects {
            let enrolled: Vec<usize> = gallery
                .iter()
                .copied()
                .filter(|&g| subj(g) != stranger)
                .collect();
            for q in 0..n {
                let nearest = enrolled
                    .iter()
                    .copied()
                    .min_by(|&a, &b| d[q * n + a].total_cmp(&d[q * n + b]))
                    .expect("at least one enrolled");
                let accepted = crate::index::is_duplicate(d[q * n + nearest], threshold);
                if subj(q) == stranger {
                    stranger_probes += 1;
                    fa += usize::from(accepted);
                } else if q % per_subject != e {
                    enrolled_probes += 1;
                    ca += usize::from(accepted && subj(nearest) == subj(q));
                }
            }
        }
    }
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            scores.push(sim(d[i * n + j]));
            labels.push(subj(i) == subj(j));
        }
    }
    let (far, frr) = far_frr_at(&scores, &labels, sim(threshold))?;
    Ok(OrlFoldReport {
        fold,
        identification_accuracy: correct as f64 / probes as f64,
        verification_roc_auc: roc_auc(&scores, &labels)?,
        verification_eer: eer(&scores, &labels)?.0,
        threshold,
        far,
        frr,
        open_set_false_accept: fa as f64 / stranger_probes as f64,
        open_set_correct_accept: ca as f64 / enrolled_probes as f64,
    })
}

/// The ORL protocol over all folds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrlReport {
    pub protocol: String,
    /// Mean over folds.
    pub identification_accuracy: f64,
    pub verification_roc_auc: f64,
    pub verification_eer: f64,
    pub open_set_false_accept: f64,
    pub open_set_correct_accept: f64,
    pub far: f64,
    pub frr: f64,
    pub folds: Vec<OrlFoldReport>,
}

/// Average fold reports into the protocol's report.
pub fn orl_report(folds: Vec<OrlFoldReport>) -> OrlReport {
    let m = |f: fn(&OrlFoldReport) -> f64| folds.iter().map(f).sum::<f64>() / folds.len() as f64;
    OrlReport {
        protocol: "orl".into(),
        identification_accuracy: m(|r| r.identification_accuracy),
        verification_roc_auc: m(|r| r.verification_roc_auc),
        verification_eer: m(|r| r.verification_eer),
        open_set_false_accept: m(|r| r.open_set_false_accept),
        open_set_correct_accept: m(|r| r.open_set_correct_accept),
        far: m(|r| r.far),
        frr: m(|r| r.frr),
        folds,
    }
}

/// Similarity (1 - L2 distance) and "same label" of every pair `i < j` of `emb` rows.
pub fn all_pair_scores(emb: &[f32], dim: usize, labels: &[u32]) -> (Vec<f32>, Vec<bool>) {
    let n = labels.len();
    let (mut scores, mut same) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            scores.push(sim(l2(
                &emb[i * dim..(i + 1) * dim],
                &emb[j * dim..(j + 1) * dim],
            )));
            same.push(labels[i] == labels[j]);
        }
    }
    (scores, same)
}

/// ROC-AUC over every pair of `emb` (`labels` per row): the training loop's dev score
/// ([`crate::train::image::DevScore`]).
pub fn all_pairs_roc_auc(emb: &[f32], dim: usize, labels: &[u32]) -> Result<f64> {
    let (s, y) = all_pair_scores(emb, dim, labels);
    roc_auc(&s, &y)
}

/// Calibrate a distance threshold on all pairs of `emb` (`labels` per row): best F1, or the
/// lowest FAR-bounded threshold when `target_far` is given. Returns the distance threshold and
/// the calibration (scores as similarities).
pub fn calibrate_pairs(
    emb: &[f32],
    dim: usize,
    labels: &[u32],
    target_far: Option<f64>,
) -> Result<(f32, ThresholdReport)> {
    let (scores, y) = all_pair_scores(emb, dim, labels);
    let cal = match target_far {
        Some(t) => calibrate_target_far(&scores, &y, t)?,
        None => calibrate_best_f1(&scores, &y)?,
    };
    Ok((Metric::L2.distance_for_similarity(cal.threshold), cal))
}

// ---------------------------------------------------------------------------------------------
// Signatures
// ---------------------------------------------------------------------------------------------

pub use crate::corpus::signatures::Signature;

/// Read a signature folder (its `labels.tsv`, or the `<writer>/genuine-NN.png` layout):
/// [`crate::corpus::signatures::read_signature_folder`].
pub fn read_signatures(root: &Path) -> Result<Vec<Signature>> {
    crate::corpus::signatures::read_signature_folder(root)
}

pub use crate::query::verify::Aggregate;

/// Distances between every two of `rows` (by index into `emb` of width `dim`).
pub fn pairwise_l2(emb: &[f32], dim: usize, rows: &[usize]) -> Vec<f32> {
    let row = |i: usize| &emb[i * dim..(i + 1) * dim];
    let mut out = Vec::new();
    for (k, &a) in rows.iter().enumerate() {
        for &b in &rows[k + 1..] {
            out.push(l2(row(a), row(b)));
        }
    }
    out
}

/// Questioned-signature scores of writers: for each writer, references are samples
/// `1..=n_refs` (genuine); questioned are the other genuine samples (positive) and the skilled
/// forgeries (negative). Returns (distances, genuine?, writer) per questioned signature.
/// `emb` has one row per signature of `sigs`.
pub fn signature_scores(
    sigs: &[Signature],
    emb: &[f32],
    dim: usize,
    n_refs: usize,
    agg: Aggregate,
) -> Result<(Vec<f32>, Vec<bool>, Vec<usize>)> {
    if emb.len() != sigs.len() * dim {
        return Err(Error::dim(
            sigs.len() * dim,
            emb.len(),
            "signature embeddings",
        ));
    }
    let row = |i: usize| &emb[i * dim..(i + 1) * dim];
    let mut writers: Vec<usize> = sigs.iter().map(|s| s.writer).collect();
    writers.dedup();
    let (mut dist, mut genuine, mut who) = (Vec::new(), Vec::new(), Vec::new());
    for w in writers {
        let refs: Vec<usize> = (0..sigs.len())
            .filter(|&i| sigs[i].writer == w && sigs[i].genuine && sigs[i].sample <= n_refs)
            .collect();
        if refs.len() != n_refs {
            return Err(Error::InvalidArgument(format!(
                "writer {w}: {} genuine reference samples 1..={n_refs} found, expected {n_refs}",
                refs.len()
            )));
        }
        let among = if agg.normalized() {
            pairwise_l2(emb, dim, &refs)
        } else {
            Vec::new()
        };
        for q in (0..sigs.len()).filter(|&i| sigs[i].writer == w && !refs.contains(&i)) {
            let ds: Vec<f32> = refs.iter().map(|&r| l2(row(q), row(r))).collect();
            dist.push(agg.apply(&ds, &among));
            genuine.push(sigs[q].genuine);
            who.push(w);
        }
    }
    Ok((dist, genuine, who))
}

/// What the signature protocol measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignatureReport {
    pub protocol: String,
    pub writers: Vec<usize>,
    pub references: usize,
    pub aggregate: Aggregate,
    /// Equal error rate with one threshold for all writers (genuine vs skilled forgeries).
    pub eer: f64,
    pub roc_auc: f64,
    /// Mean over writers of each writer's own EER (a per-writer threshold; an upper bound on
    /// what writer-dependent thresholds could do).
    pub mean_writer_eer: f64,
    /// The decision threshold (distance) and FAR / FRR there.
    pub threshold: f32,
    pub far: f64,
    pub frr: f64,
    pub n_genuine: usize,
    pub n_forged: usize,
}

/// Score the protocol given per-questioned distances (from [`signature_scores`]) and a
/// distance threshold (`None`: the EER threshold of these scores).
pub fn signature_report(
    writers: Vec<usize>,
    n_refs: usize,
    agg: Aggregate,
    dist: &[f32],
    genuine: &[bool],
    who: &[usize],
    threshold: Option<f32>,
) -> Result<SignatureReport> {
    let scores: Vec<f32> = dist.iter().map(|&d| sim(d)).collect();
    let (e, t) = eer(&scores, genuine)?;
    let thr = threshold.unwrap_or(Metric::L2.distance_for_similarity(t));
    let (far, frr) = far_frr_at(&scores, genuine, sim(thr))?;
    let mut per = Vec::new();
    for w in &writers {
        let idx: Vec<usize> = (0..who.len()).filter(|&i| who[i] == *w).collect();
        let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
        let g: Vec<bool> = idx.iter().map(|&i| genuine[i]).collect();
        per.push(eer(&s, &g)?.0);
    }
    Ok(SignatureReport {
        protocol: "signatures".into(),
        references: n_refs,
        aggregate: agg,
        eer: e,
        roc_auc: roc_auc(&scores, genuine)?,
        mean_writer_eer: per.iter().sum::<f64>() / per.len().max(1) as f64,
        threshold: thr,
        far,
        frr,
        n_genuine: genuine.iter().filter(|&&g| g).count(),
        n_forged: genuine.iter().filter(|&&g| !g).count(),
        writers,
    })
}

// ---------------------------------------------------------------------------------------------
// The protocol drivers: embed a protocol's items with an encoder (or raw pixels) and score them.
// ---------------------------------------------------------------------------------------------

/// Hold `n_dev` classes of `classes` out (chosen by `seed`): (train classes, dev classes).
pub fn split_classes(
    classes: &[String],
    n_dev: usize,
    seed: u64,
) -> Result<(Vec<String>, Vec<String>)> {
    if n_dev < 2 || classes.len() < n_dev + 2 {
        return Err(Error::InvalidArgument(format!(
            "--dev-classes {n_dev}: need at least 2 dev classes and 2 training classes ({} classes in the corpus)",
            classes.len()
        )));
    }
    let mut order: Vec<usize> = (0..classes.len()).collect();
    crate::corpus::sampler::shuffle(&mut order, seed ^ 0xDE5);
    let dev: Vec<usize> = order[..n_dev].to_vec();
    let pick = |keep: bool| {
        classes
            .iter()
            .enumerate()
            .filter(|(i, _)| dev.contains(i) == keep)
            .map(|(_, c)| c.clone())
            .collect::<Vec<_>>()
    };
    Ok((pick(false), pick(true)))
}

/// Embed the unseen subjects of `fold` with `model` and score the fold.
pub fn orl_fold_with_model(
    f: &ImageFolder,
    fold: &OrlFold,
    model: &ImageModel,
) -> Result<OrlFoldReport> {
    let items = f.with_labels(&fold.unseen_subjects);
    let set =
        crate::model::image::load_set(&items, &fold.unseen_subjects, &model.config.preprocess)?;
    let emb = model.embed_pixels(&set.pixels, set.n, 256)?;
    orl_fold_report(
        fold.fold,
        &emb,
        model.config.dim,
        fold.unseen_subjects.len(),
        10,
        model.config.threshold,
    )
}

/// Score the signature protocol on writers 21-30 with `model`; `threshold`: the decision
/// threshold (None: calibrate here: best F1, or `target_far`). Returns the report and the
/// calibration record (JSON).
pub fn signatures_with_model(
    sigs: &[Signature],
    model: &ImageModel,
    agg: Aggregate,
    threshold: Option<f32>,
    target_far: Option<f64>,
    writers: &[usize],
) -> Result<(SignatureReport, crate::calibration::EncoderCalibration)> {
    let (test, set) = signature_test_set(sigs, &model.config.preprocess, writers)?;
    let emb = model.embed_pixels(&set.pixels, set.n, 128)?;
    signatures_from_embeddings(&test, &emb, model.config.dim, agg, threshold, target_far)
}

/// The signatures of the test `writers` (default 21-30) and their images read with `pre`.
pub fn signature_test_set(
    sigs: &[Signature],
    pre: &Preprocess,
    writers: &[usize],
) -> Result<(Vec<Signature>, ImageSet)> {
    let test: Vec<Signature> = sigs
        .iter()
        .filter(|s| writers.contains(&s.writer))
        .cloned()
        .collect();
    if let Some(w) = writers
        .iter()
        .find(|w| !test.iter().any(|s| s.writer == **w))
    {
        return Err(Error::InvalidArgument(format!(
            "--test-writers: the corpus has no signatures of writer {w}"
        )));
    }
    let items: Vec<FolderItem> = test.iter().map(|s| s.item.clone()).collect();
    let set = crate::model::image::load_set(&items, &folder::classes_of(&items), pre)?;
    Ok((test, set))
}

pub fn signatures_from_embeddings(
    test: &[Signature],
    emb: &[f32],
    dim: usize,
    agg: Aggregate,
    threshold: Option<f32>,
    target_far: Option<f64>,
) -> Result<(SignatureReport, crate::calibration::EncoderCalibration)> {
    let (dist, genuine, who) = signature_scores(test, emb, dim, 5, agg)?;
    let metric = crate::index::Metric::L2;
    let scores: Vec<f32> = dist.iter().map(|&d| metric.similarity(d)).collect();
    let cal = match target_far {
        Some(t) => crate::eval::calibrate_target_far(&scores, &genuine, t)?,
        None => crate::eval::calibrate_best_f1(&scores, &genuine)?,
    };
    let thr = threshold.unwrap_or(metric.distance_for_similarity(cal.threshold));
    let mut writers: Vec<usize> = test.iter().map(|s| s.writer).collect();
    writers.dedup();
    let report = signature_report(writers, 5, agg, &dist, &genuine, &who, Some(thr))?;
    let calv = crate::calibration::EncoderCalibration {
        report: cal,
        aggregate: Some(agg),
        writers: Some(format!(
            "{}-{} (5 references each; questioned S6-S20 genuine, S21-S40 skilled forgeries)",
            test.first().map_or(0, |s| s.writer),
            test.last().map_or(0, |s| s.writer)
        )),
        pair_threshold: None,
        spread_threshold: None,
    };
    Ok((report, calv))
}

/// Raw pixels (preprocessed as `pre` says) as embeddings.
pub fn raw_embeddings(set: &ImageSet, pre: &Preprocess) -> Vec<f32> {
    let per = set.rows * set.cols;
    let mut out = vec![0f32; set.n * per];
    for i in 0..set.n {
        pre.apply(set.image(i), &mut out[i * per..(i + 1) * per]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two well separated clusters per subject: everything perfect; a stranger far away from
    /// everyone is never accepted.
    #[test]
    fn orl_fold_on_separable_embeddings() {
        let (ns, per, dim) = (3, 4, 2);
        let mut emb = Vec::new();
        for s in 0..ns {
            for i in 0..per {
                emb.extend([s as f32 * 10.0 + i as f32 * 0.01, 0.0]);
            }
        }
        let r = orl_fold_report(0, &emb, dim, ns, per, 1.0).unwrap();
        assert_eq!(r.identification_accuracy, 1.0);
        assert_eq!(r.verification_roc_auc, 1.0);
        assert_eq!(r.open_set_false_accept, 0.0);
        assert_eq!(r.open_set_correct_accept, 1.0);
        assert_eq!((r.far, r.frr), (0.0, 0.0));
        // With a huge threshold every stranger is accepted.
        let r = orl_fold_report(0, &emb, dim, ns, per, 100.0).unwrap();
        assert_eq!(r.open_set_false_accept, 1.0);
    }

    /// Identification counted by hand: subject 1's image 1 sits nearer subject 0's images.
    #[test]
    fn orl_identification_counts() {
        // 2 subjects x 2 images on a line: s0 = {0, 1}, s1 = {0.9, 5}.
        let emb = vec![0.0, 1.0, 0.9, 5.0];
        let r = orl_fold_report(0, &emb, 1, 2, 2, 0.5).unwrap();
        // e=0: gallery {0, 0.9}: probe 1.0 -> 0.9 (s1, wrong); probe 5 -> 0.9 (s1, right).
        // e=1: gallery {1.0, 5}: probe 0 -> 1.0 (s0, right); probe 0.9 -> 1.0 (s0, wrong).
        assert_eq!(r.identification_accuracy, 0.5);
    }

    #[test]
    fn signature_scores_min_and_mean() {
        let mk = |w: usize, s: usize, g: bool| Signature {
            item: FolderItem {
                path: format!("u{w}s{s}").into(),
                label: String::new(),
            },
            writer: w,
            sample: s,
            genuine: g,
        };
        let sigs = vec![
            mk(1, 1, true),
            mk(1, 2, true),
            mk(1, 3, true),
            mk(1, 21, false),
        ];
        let emb = vec![0.0, 2.0, 1.0, 4.0];
        let (d, g, w) = signature_scores(&sigs, &emb, 1, 2, Aggregate::Min).unwrap();
        assert_eq!(d, vec![1.0, 2.0]);
        assert_eq!(g, vec![true, false]);
        assert_eq!(w, vec![1, 1]);
        let (d, _, _) = signature_scores(&sigs, &emb, 1, 2, Aggregate::Mean).unwrap();
        assert_eq!(d, vec![1.0, 3.0]);
        // References 0.0 and 2.0 are 2 apart: the -norm figures are halved.
        let (d, _, _) = signature_scores(&sigs, &emb, 1, 2, Aggregate::MinNorm).unwrap();
        assert_eq!(d, vec![0.5, 1.0]);
        let (d, _, _) = signature_scores(&sigs, &emb, 1, 2, Aggregate::MeanNorm).unwrap();
        assert_eq!(d, vec![0.5, 1.5]);
        // One reference: nothing to normalise by.
        assert_eq!(Aggregate::MeanNorm.apply(&[3.0], &[]), 3.0);
        let r = signature_report(
            vec![1],
            2,
            Aggregate::Min,
            &[1.0, 2.0],
            &[true, false],
            &[1, 1],
            None,
        )
        .unwrap();
        assert_eq!(r.eer, 0.0);
        assert_eq!(r.roc_auc, 1.0);
        assert!(r.threshold > 1.0 && r.threshold < 2.0, "{}", r.threshold);
    }
}
