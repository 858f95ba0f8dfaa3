//! An online verifier chosen by cross-validation over writers, so that it generalises: every
//! choice (features, resampling, DTW band, how a questioned signature's distances to the 5
//! references combine, the per-writer normalisation) is made on the cross-validation writers
//! (SVC2004 1-20) only; the test writers (21-30) are scored once, at the end, with the choice
//! made on all cross-validation writers.
//!
//! The grid is the literature's (z-normalised x, y; direction as sine and cosine; speed;
//! curvature; DTW with and without a band; min and mean of the distances to the references,
//! each alone or divided by the spread of the writer's references, and min and mean fused).
//! The cross-validated figure is nested: for each fold of writers, the candidate and its
//! threshold are chosen on the other folds and the fold is scored with them; the figure is the
//! mean over folds of the held-out EER (and of the held-out half total error rate at the chosen
//! threshold).

use super::PenCorpus;
use crate::error::{Error, Result};
use crate::eval::dtw::dtw_banded;
use crate::eval::{eer, far_frr_at};
use crate::model::pen::{PenFeature, PenPreprocess, Resample};
use crate::train::{Observer, Progress};
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;

/// How the distances of a questioned signature to a writer's references become one distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Combine {
    Min,
    Mean,
    /// `min` divided by the mean distance among the references (the writer's spread).
    MinNorm,
    MeanNorm,
    /// `(min + mean) / 2`.
    MinMean,
    /// `(min + mean) / 2` divided by the spread.
    MinMeanNorm,
    /// The smallest of the distances each divided by its reference's own mean distance to the
    /// other references (a per-reference spread).
    MinRefNorm,
    /// The mean of the distances each divided by its reference's own spread.
    MeanRefNorm,
}

impl Combine {
    pub const ALL: [Combine; 8] = [
        Combine::Min,
        Combine::Mean,
        Combine::MinNorm,
        Combine::MeanNorm,
        Combine::MinMean,
        Combine::MinMeanNorm,
        Combine::MinRefNorm,
        Combine::MeanRefNorm,
    ];

    /// The combined distance of `d` (distances to the references) given the references'
    /// mean pairwise distance `spread` and each reference's mean distance to the others
    /// (`ref_spread`, one per reference).
    pub fn apply(self, d: &[f32], spread: f32, ref_spread: &[f32]) -> f32 {
        let rel = || d.iter().zip(ref_spread).map(|(&x, &r)| x / r.max(1e-6));
        match self {
            Combine::MinRefNorm => return rel().fold(f32::INFINITY, f32::min),
            Combine::MeanRefNorm => return rel().sum::<f32>() / d.len() as f32,
            _ => {}
        }
        let min = d.iter().copied().fold(f32::INFINITY, f32::min);
        let mean = d.iter().sum::<f32>() / d.len() as f32;
        let s = spread.max(1e-6);
        match self {
            Combine::Min => min,
            Combine::Mean => mean,
            Combine::MinNorm => min / s,
            Combine::MeanNorm => mean / s,
            Combine::MinMean => (min + mean) / 2.0,
            Combine::MinMeanNorm => (min + mean) / 2.0 / s,
            Combine::MinRefNorm | Combine::MeanRefNorm => unreachable!("handled above"),
        }
    }
}

/// One point of the grid.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub features: Vec<PenFeature>,
    pub resample: Resample,
    pub points: usize,
    /// Sakoe-Chiba band in points (`points`: unconstrained).
    pub band: usize,
    pub combine: Combine,
}

/// The grid of feature sets x resampling x band (the distances), each with every [`Combine`].
pub fn default_grid() -> Vec<(PenPreprocess, usize)> {
    use PenFeature::*;
    let sets: Vec<Vec<PenFeature>> = vec![
        vec![X, Y],
        vec![X, Y, Dx, Dy],
        vec![X, Y, SinDir, CosDir],
        vec![X, Y, SinDir, CosDir, Speed],
        vec![X, Y, Dx, Dy, Speed, Curvature],
        vec![X, Y, SinDir, CosDir, Speed, Curvature],
        vec![SinDir, CosDir, Speed, Curvature],
    ];
    let points = 120;
    let mut out = Vec::new();
    for f in &sets {
        for resample in [Resample::Time, Resample::ArcLength] {
            for band in [12, 30, points] {
                out.push((
                    PenPreprocess {
                        points,
                        features: f.clone(),
                        standardize: true,
                        resample,
                    },
                    band,
                ));
            }
        }
    }
    out
}

/// Per writer: the DTW distances of every one of his signatures to each of his 5 references,
/// and the references' spread.
struct WriterDistances {
    writer: usize,
    /// `(questioned signature's distances to the references, genuine?)`.
    questioned: Vec<(Vec<f32>, bool)>,
    spread: f32,
    ref_spread: Vec<f32>,
}

fn writer_distances(
    corpus: &PenCorpus,
    feats: &[Vec<f32>],
    channels: usize,
    band: usize,
    writers: &[usize],
) -> Result<Vec<WriterDistances>> {
    writers
        .par_iter()
        .map(|&w| {
            let of = |g: bool| -> Vec<usize> {
                (0..corpus.sigs.len())
                    .filter(|&i| corpus.sigs[i].writer == w && corpus.sigs[i].genuine == g)
                    .collect()
            };
            let (gen, forged) = (of(true), of(false));
            let refs: Vec<usize> = gen
                .iter()
                .copied()
                .filter(|&i| corpus.sigs[i].sample <= 5)
                .collect();
            if refs.len() != 5 {
                return Err(Error::InvalidArgument(format!(
                    "writer {w}: {} genuine reference samples 1-5 found, expected 5",
                    refs.len()
                )));
            }
            let d = |a: usize, b: usize| dtw_banded(&feats[a], &feats[b], channels, band);
            let mut among = [0f32; 25];
            for a in 0..5 {
                for b in a + 1..5 {
                    let v = d(refs[a], refs[b])?;
                    among[a * 5 + b] = v;
                    among[b * 5 + a] = v;
                }
            }
            let spread = among.iter().sum::<f32>() / 20.0;
            let ref_spread: Vec<f32> = (0..5)
                .map(|a| among[a * 5..a * 5 + 5].iter().sum::<f32>() / 4.0)
                .collect();
            let mut questioned = Vec::new();
            for &q in gen.iter().filter(|q| !refs.contains(q)).chain(&forged) {
                let ds = refs
                    .iter()
                    .map(|&r| d(q, r))
                    .collect::<Result<Vec<f32>>>()?;
                questioned.push((ds, corpus.sigs[q].genuine));
            }
            Ok(WriterDistances {
                writer: w,
                questioned,
                spread,
                ref_spread,
            })
        })
        .collect()
}

/// Similarity scores (negated combined distances) and labels of `writers`.
fn scores(wd: &[WriterDistances], combine: Combine, writers: &[usize]) -> (Vec<f32>, Vec<bool>) {
    let mut s = Vec::new();
    let mut y = Vec::new();
    for w in wd.iter().filter(|w| writers.contains(&w.writer)) {
        for (d, g) in &w.questioned {
            s.push(-combine.apply(d, w.spread, &w.ref_spread));
            y.push(*g);
        }
    }
    (s, y)
}

/// One held-out fold of the nested cross-validation.
#[derive(Debug, Clone, Serialize)]
pub struct FoldResult {
    pub writers: String,
    /// The candidate chosen on the other folds (index into the report's `grid_top` order is
    /// not kept: the candidate itself).
    pub chosen: Candidate,
    /// EER of the chosen candidate on the other folds (where it was chosen).
    pub inner_eer: f64,
    pub eer: f64,
    /// FAR and FRR at the threshold chosen on the other folds.
    pub far: f64,
    pub frr: f64,
}

/// A candidate's EER on every cross-validation writer.
#[derive(Debug, Clone, Serialize)]
pub struct GridRow {
    pub candidate: Candidate,
    pub eer: f64,
}

/// What the cross-validation and the one test measured.
#[derive(Debug, Clone, Serialize)]
pub struct OnlineCvReport {
    pub protocol: &'static str,
    pub cv_writers: String,
    pub folds: Vec<FoldResult>,
    /// Mean over folds of the held-out EER: the cross-validated figure.
    pub cv_eer: f64,
    /// Mean over folds of the held-out half total error rate `(FAR + FRR) / 2` at the
    /// threshold chosen on the other folds.
    pub cv_hter: f64,
    /// The candidate chosen on all cross-validation writers, and its EER there.
    pub chosen: Candidate,
    pub chosen_cv_writers_eer: f64,
    /// Its threshold (a combined DTW distance) at the cross-validation writers' EER.
    pub threshold: f32,
    /// The test writers, scored once with `chosen` and `threshold`.
    pub test_writers: String,
    pub eer: f64,
    pub roc_auc: f64,
    pub far: f64,
    pub frr: f64,
    /// `eer - cv_eer`.
    pub gap: f64,
    /// The ten best candidates on all cross-validation writers.
    pub grid_top: Vec<GridRow>,
    pub grid_size: usize,
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
}

/// The best candidate on `writers`: (distance index, combine, EER, similarity threshold).
fn best_on(all: &[Vec<WriterDistances>], writers: &[usize]) -> Result<(usize, Combine, f64, f32)> {
    let mut best: Option<(usize, Combine, f64, f32)> = None;
    for (i, wd) in all.iter().enumerate() {
        for c in Combine::ALL {
            let (s, y) = scores(wd, c, writers);
            let (e, t) = eer(&s, &y)?;
            if best.as_ref().is_none_or(|b| e < b.2) {
                best = Some((i, c, e, t));
            }
        }
    }
    best.ok_or_else(|| Error::Empty("online cross-validation: an empty grid".into()))
}

/// Cross-validate the grid over `cv_writers` in `n_folds` consecutive folds, choose on all of
/// them, then score `test_writers` once.
pub fn cross_validate_online(
    dir: &Path,
    cv_writers: &[usize],
    n_folds: usize,
    test_writers: &[usize],
    on: &Observer,
) -> Result<OnlineCvReport> {
    let sw = crate::timing::Stopwatch::start();
    if n_folds < 2 || cv_writers.len() < n_folds {
        return Err(Error::InvalidArgument(format!(
            "--folds: {n_folds} folds of {} cross-validation writers (need at least 2 folds, one writer each)",
            cv_writers.len()
        )));
    }
    if let Some(w) = test_writers.iter().find(|w| cv_writers.contains(w)) {
        return Err(Error::InvalidArgument(format!(
            "--test-writers and --calibration-writers overlap (writer {w})"
        )));
    }
    let corpus = PenCorpus::load(dir)?;
    let have = corpus.writers();
    if let Some(w) = cv_writers
        .iter()
        .chain(test_writers)
        .find(|w| !have.contains(w))
    {
        return Err(Error::InvalidArgument(format!(
            "writer {w} is not in {}",
            dir.display()
        )));
    }
    let grid = default_grid();
    on(Progress::Line(format!(
        "online cross-validation: {} distances x {} combinations on writers {}, {} folds",
        grid.len(),
        Combine::ALL.len(),
        crate::eval::signatures::writer_ranges(cv_writers),
        n_folds
    )));
    let mut all = Vec::new();
    for (pre, band) in &grid {
        let feats = corpus.features(pre)?;
        all.push(writer_distances(
            &corpus,
            &feats,
            pre.channels(),
            *band,
            cv_writers,
        )?);
    }
    let cand = |i: usize, c: Combine| Candidate {
        features: grid[i].0.features.clone(),
        resample: grid[i].0.resample,
        points: grid[i].0.points,
        band: grid[i].1,
        combine: c,
    };
    let per = cv_writers.len().div_ceil(n_folds);
    let mut folds = Vec::new();
    for f in cv_writers.chunks(per) {
        let inner: Vec<usize> = cv_writers
            .iter()
            .copied()
            .filter(|w| !f.contains(w))
            .collect();
        let (i, c, inner_eer, t) = best_on(&all, &inner)?;
        let (s, y) = scores(&all[i], c, f);
        let (far, frr) = far_frr_at(&s, &y, t)?;
        let r = FoldResult {
            writers: crate::eval::signatures::writer_ranges(f),
            chosen: cand(i, c),
            inner_eer,
            eer: eer(&s, &y)?.0,
            far,
            frr,
        };
        on(Progress::Line(format!(
            "fold {}: chosen on the others (EER {:.4}): {:?} {:?} band {} {:?}; held out EER {:.4}, FAR {:.4}, FRR {:.4}",
            r.writers, inner_eer, r.chosen.features, r.chosen.resample, r.chosen.band, r.chosen.combine, r.eer, far, frr
        )));
        folds.push(r);
    }
    let n = folds.len() as f64;
    let cv_eer = folds.iter().map(|f| f.eer).sum::<f64>() / n;
    let cv_hter = folds.iter().map(|f| (f.far + f.frr) / 2.0).sum::<f64>() / n;
    let mut rows = Vec::new();
    for (i, wd) in all.iter().enumerate() {
        for c in Combine::ALL {
            let (s, y) = scores(wd, c, cv_writers);
            rows.push(GridRow {
                candidate: cand(i, c),
                eer: eer(&s, &y)?.0,
            });
        }
    }
    rows.sort_by(|a, b| a.eer.total_cmp(&b.eer));
    let grid_size = rows.len();
    rows.truncate(10);
    let (i, c, chosen_eer, t) = best_on(&all, cv_writers)?;
    let chosen = cand(i, c);
    // The test writers, once.
    let (pre, band) = &grid[i];
    let feats = corpus.features(pre)?;
    let wd = writer_distances(&corpus, &feats, pre.channels(), *band, test_writers)?;
    let (s, y) = scores(&wd, c, test_writers);
    let (far, frr) = far_frr_at(&s, &y, t)?;
    let test_eer = eer(&s, &y)?.0;
    let r = OnlineCvReport {
        protocol: "signatures-online",
        cv_writers: crate::eval::signatures::writer_ranges(cv_writers),
        folds,
        cv_eer,
        cv_hter,
        chosen,
        chosen_cv_writers_eer: chosen_eer,
        threshold: -t,
        test_writers: crate::eval::signatures::writer_ranges(test_writers),
        eer: test_eer,
        roc_auc: crate::eval::roc_auc(&s, &y)?,
        far,
        frr,
        gap: test_eer - cv_eer,
        grid_top: rows,
        grid_size,
        cpu_seconds: sw.cpu(),
        wall_seconds: sw.wall(),
    };
    on(Progress::Line(format!(
        "cross-validated EER {:.4} (HTER {:.4}) on writers {}; chosen on all of them: {:?} {:?} band {} {:?} (EER {:.4}); writers {}: EER {:.4}, FAR {:.4}, FRR {:.4} at the chosen threshold; gap {:+.4}; {:.0} CPU-s",
        r.cv_eer, r.cv_hter, r.cv_writers, r.chosen.features, r.chosen.resample, r.chosen.band, r.chosen.combine, r.chosen_cv_writers_eer, r.test_writers, r.eer, r.far, r.frr, r.gap, r.cpu_seconds
    )));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distances 1, 2, 6 to three references whose spread is 2: min 1, mean 3, (1 + 3) / 2 = 2;
    /// divided by the spread: 0.5, 1.5, 1. With per-reference spreads 4, 1, 2 the relative
    /// distances are 0.25, 2, 3: min 0.25, mean 5.25 / 3 = 1.75.
    #[test]
    fn combine_by_hand() {
        let d = [1.0, 2.0, 6.0];
        let got: Vec<f32> = Combine::ALL
            .iter()
            .map(|c| c.apply(&d, 2.0, &[4.0, 1.0, 2.0]))
            .collect();
        assert_eq!(got, vec![1.0, 3.0, 0.5, 1.5, 2.0, 1.0, 0.25, 1.75]);
    }
}
