//! The runs of the online-signature protocol: `train sequence` (train on some writers, choose
//! the epoch and calibrate every scorer on hold-out writers), `eval --protocol
//! signatures-online` (the scorer and its threshold chosen without the test writers) and
//! `verify --signature` (one questioned signature against references).

use super::{
    calibrate_online, choice_for, eer_threshold, evaluate_online, online_trials,
    parse_writer_range, twin_trial_distances, verify_online, DtwScorer, PenCalibration, PenCorpus,
    PenDecision, PenReport, Scorer, DEFAULT_DTW_THRESHOLD,
};
use crate::corpus::trajectory::read_trajectory;
use crate::error::{Error, Result};
use crate::eval::protocol::Aggregate;
use crate::model::sequence::{SequenceModel, SequenceModelConfig};
use crate::train::sequence::{train_sequence, SequenceEpoch, SequenceItem, SequenceTrainConfig};
use crate::train::{Observer, Progress};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Load the SVC2004 Task 1 trajectories of `dir` (an error naming the folder if it is absent).
pub fn load_online_corpus(dir: &Path) -> Result<PenCorpus> {
    if !dir.exists() {
        return Err(Error::Msg(format!(
            "{}: no such corpus folder (SVC2004 Task 1 trajectories U{{u}}S{{s}}.TXT; pass --corpus DIR)",
            dir.display()
        )));
    }
    PenCorpus::load(dir)
}

/// Load a sequence encoder made by `train sequence` with its online calibration.
pub fn load_online_encoder(dir: &Path) -> Result<(SequenceModel, PenCalibration)> {
    let m = SequenceModel::load(dir)
        .map_err(|e| Error::Msg(format!("loading sequence encoder {}: {e}", dir.display())))?;
    let v = m.config.calibration.clone().ok_or_else(|| {
        Error::Msg(format!(
            "{}: the encoder has no online calibration (train it with `twindex train sequence`)",
            dir.display()
        ))
    })?;
    let cal = serde_json::from_value(v)
        .map_err(|e| Error::Msg(format!("{}: calibration: {e}", dir.display())))?;
    Ok((m, cal))
}

/// Where `train sequence` reads and writes, and which writers play which part.
#[derive(Debug, Clone)]
pub struct PenTrainRun<'a> {
    /// The folder of trajectories.
    pub corpus: &'a Path,
    /// Writers trained on (`A-B`).
    pub train_writers: &'a str,
    /// Writers held out of training (`A-B`): the epoch, aggregates, thresholds and fusion
    /// weights are chosen on them.
    pub holdout_writers: &'a str,
    /// Genuine samples 1..=N of each writer are the references.
    pub references: usize,
    /// The DTW scorer calibrated beside the twin.
    pub dtw: DtwScorer,
    /// The command line, for the training record.
    pub command: &'a str,
    /// The encoder directory written.
    pub out: &'a Path,
}

/// What `train sequence` did.
#[derive(Debug, Clone, Serialize)]
pub struct PenTrainReport {
    pub model: String,
    pub selected_epoch: usize,
    pub untrained_holdout_eer: f64,
    pub train_writers: Vec<usize>,
    pub holdout_writers: Vec<usize>,
    pub calibration: PenCalibration,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub history: Vec<SequenceEpoch>,
}

/// Train the sequence twin on `run.train_writers`, keeping the epoch with the lowest hold-out
/// EER (min-norm aggregate), calibrate every scorer on the hold-out writers, store the
/// calibration and the training record, save to `run.out`.
pub fn train_online(
    run: &PenTrainRun,
    cfg: &SequenceTrainConfig,
    mcfg: SequenceModelConfig,
    on: &Observer,
) -> Result<PenTrainReport> {
    let corpus = load_online_corpus(run.corpus)?;
    let train_w = parse_writer_range(run.train_writers)?;
    let hold_w = parse_writer_range(run.holdout_writers)?;
    if train_w.iter().any(|w| hold_w.contains(w)) {
        return Err(Error::Msg(
            "--train-writers and --holdout-writers overlap".into(),
        ));
    }
    let items: Vec<SequenceItem> = corpus
        .sigs
        .iter()
        .zip(&corpus.trajectories)
        .filter(|(s, _)| train_w.contains(&s.writer))
        .map(|(s, t)| SequenceItem {
            trajectory: t.clone(),
            writer: s.writer,
            genuine: s.genuine,
        })
        .collect();
    if items.is_empty() {
        return Err(Error::Msg(format!(
            "{}: no signatures of writers {}",
            run.corpus.display(),
            run.train_writers
        )));
    }
    let hold_trials = online_trials(&corpus.sigs, &hold_w, run.references, false)?;
    let hold_feats = corpus.features(&mcfg.preprocess)?;
    on(Progress::Line(format!(
        "training the sequence twin on {} signatures of writers {}; epochs chosen on writers {} ({} trials)",
        items.len(),
        run.train_writers,
        run.holdout_writers,
        hold_trials.len()
    )));
    let mut evaluate = |m: &SequenceModel, _epoch: usize| -> Result<f64> {
        let emb = m.embed(&hold_feats, 128)?;
        let d = twin_trial_distances(&hold_trials, Aggregate::MinNorm, &emb, m.config.dim);
        Ok(1.0 - choice_for(&hold_trials, Aggregate::MinNorm, &d)?.holdout_eer)
    };
    let mut on_epoch = |e: &SequenceEpoch| {
        on(Progress::Line(format!(
            "epoch {:>3}: loss {:.4}  hold-out EER {:.4}  ({:.1} s, {:.1} CPU-s)",
            e.epoch,
            e.loss,
            1.0 - e.score,
            e.wall_seconds,
            e.cpu_seconds
        )))
    };
    let mut o = train_sequence(&items, cfg, mcfg, &mut on_epoch, &mut evaluate)?;
    let cal = calibrate_online(&corpus, &o.model, &run.dtw, &hold_w, run.references)?;
    o.model.config.threshold = cal.twin.threshold;
    // Plain structs of numbers and strings always serialise.
    o.model.config.calibration =
        Some(serde_json::to_value(&cal).expect("a calibration serialises"));
    o.model.config.training["command"] = run.command.into();
    o.model.config.training["train_writers"] = train_w.clone().into();
    o.model.config.training["corpus"] = run.corpus.display().to_string().into();
    o.model.save(run.out)?;
    on(Progress::Line(format!(
        "untrained network: hold-out EER {:.4}",
        1.0 - o.untrained_score
    )));
    on(Progress::Line(format!(
        "kept epoch {}; on hold-out writers {}: twin EER {:.4} ({:?}), dtw EER {:.4}, fusion EER {:.4} (weights {:?}); training {:.1} s, {:.1} CPU-s; saved {}",
        o.selected_epoch,
        run.holdout_writers,
        cal.twin.holdout_eer,
        cal.twin.aggregate,
        cal.dtw_choice.holdout_eer,
        cal.fusion_choice.holdout_eer,
        cal.fusion.weights,
        o.wall_seconds,
        o.cpu_seconds,
        run.out.display()
    )));
    Ok(PenTrainReport {
        model: run.out.display().to_string(),
        selected_epoch: o.selected_epoch,
        untrained_holdout_eer: 1.0 - o.untrained_score,
        train_writers: train_w,
        holdout_writers: hold_w,
        calibration: cal,
        wall_seconds: o.wall_seconds,
        cpu_seconds: o.cpu_seconds,
        history: o.history,
    })
}

/// What `eval --protocol signatures-online` scores and with what.
#[derive(Debug, Clone)]
pub struct PenEvalRun<'a> {
    /// The folder of trajectories.
    pub corpus: &'a Path,
    /// The sequence encoder (twin and fusion; for DTW its calibrated settings), if any.
    pub model: Option<&'a Path>,
    /// The scorer (default: fusion with an encoder, else DTW).
    pub scorer: Option<Scorer>,
    /// The writers tested (`A-B`).
    pub test_writers: &'a str,
    /// Without an encoder: the writers on which DTW's threshold is chosen (`A-B`).
    pub calibration_writers: &'a str,
    /// Genuine samples 1..=N of each writer are the references.
    pub references: usize,
    /// Without an encoder: the DTW settings.
    pub dtw: DtwScorer,
}

/// The online-signature protocol's report with where its settings came from (`chosen`).
#[derive(Debug, Clone, Serialize)]
pub struct PenEvalReport {
    #[serde(flatten)]
    pub report: PenReport,
    pub model: Option<String>,
    pub corpus: String,
    /// How the scorer's settings and threshold were chosen.
    pub chosen: String,
    /// The DTW settings (the DTW scorer only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtw: Option<DtwScorer>,
    pub seconds: f64,
    pub cpu_seconds: f64,
}

/// The progress lines of an online report.
pub fn online_summary(r: &PenReport, chosen: &str) -> String {
    let mut s = format!(
        "signatures-online, {} scorer, writers {}-{} ({} references, {} genuine / {} skilled / {} random questioned): EER {:.4}, ROC-AUC {:.4}, random-forgery EER {:.4}, mean per-writer EER {:.4}",
        r.scorer,
        r.writers.first().unwrap_or(&0),
        r.writers.last().unwrap_or(&0),
        r.references,
        r.n_genuine,
        r.n_skilled,
        r.n_random,
        r.eer,
        r.roc_auc,
        r.random_forgery_eer,
        r.mean_writer_eer
    );
    if let (Some(t), Some(far), Some(frr), Some(rf)) = (r.threshold, r.far, r.frr, r.random_far) {
        s += &format!(
            "\n  at the threshold {t:.4} ({chosen}): FAR {far:.4} (skilled), FRR {frr:.4}, FAR {rf:.4} (random)"
        );
    }
    s
}

/// The online-signature protocol on `run.test_writers`. With an encoder, every setting and
/// threshold is the one its calibration chose on its hold-out writers; without one, DTW with
/// `run.dtw`, its threshold the EER point of `run.calibration_writers` (which must not overlap
/// the test writers).
pub fn evaluate_signatures_online(run: &PenEvalRun, on: &Observer) -> Result<PenEvalReport> {
    let scorer = run.scorer.unwrap_or(if run.model.is_some() {
        Scorer::Fusion
    } else {
        Scorer::Dtw
    });
    let sw = crate::timing::Stopwatch::start();
    let corpus = load_online_corpus(run.corpus)?;
    let test = parse_writer_range(run.test_writers)?;
    let loaded = match run.model {
        Some(d) => {
            let (m, cal) = load_online_encoder(d)?;
            if test.iter().any(|w| cal.holdout_writers.contains(w)) {
                on(Progress::Line(format!(
                    "warning: test writers overlap the encoder's hold-out writers {:?}",
                    cal.holdout_writers
                )));
            }
            Some((m, cal))
        }
        None => None,
    };
    // DTW: the encoder's settings and threshold when there is an encoder, else the flags and
    // a threshold chosen on the calibration writers.
    let (dtw, dtw_thr, chosen) = match (&loaded, scorer) {
        (Some((_, cal)), Scorer::Dtw) => (
            cal.dtw.clone(),
            Some(cal.dtw_choice.threshold),
            format!("DTW threshold: EER point of hold-out writers {:?}", cal.holdout_writers),
        ),
        (Some((_, cal)), Scorer::Twin) => (
            cal.dtw.clone(),
            None,
            format!(
                "twin aggregate {:?} and threshold: lowest EER / EER point of hold-out writers {:?}; epoch chosen on the same writers",
                cal.twin.aggregate, cal.holdout_writers
            ),
        ),
        (Some((_, cal)), Scorer::Fusion) => (
            cal.dtw.clone(),
            None,
            format!(
                "fusion weights (logistic, twin + dtw) and threshold fitted on hold-out writers {:?}",
                cal.holdout_writers
            ),
        ),
        (None, _) => {
            let d = run.dtw.clone();
            let cw = parse_writer_range(run.calibration_writers)?;
            if cw.iter().any(|w| test.contains(w)) {
                return Err(Error::Msg("--calibration-writers overlap --test-writers: the threshold would be chosen on test figures".into()));
            }
            let trials = online_trials(&corpus.sigs, &cw, run.references, false)?;
            let feats = corpus.features(&d.preprocess)?;
            let dist = d.trial_distances(&trials, &feats, &corpus.pen_down_seconds());
            let thr = eer_threshold(&trials, &dist)?;
            (
                d,
                Some(thr),
                format!(
                    "DTW threshold: EER point of writers {}; the default DTW settings were chosen on writers 1-20",
                    run.calibration_writers
                ),
            )
        }
    };
    let report = evaluate_online(
        &corpus,
        &test,
        run.references,
        scorer,
        loaded.as_ref().map(|(m, c)| (m, c)),
        &dtw,
        dtw_thr,
    )?;
    on(Progress::Line(online_summary(&report, &chosen)));
    Ok(PenEvalReport {
        report,
        model: run.model.map(|d| d.display().to_string()),
        corpus: run.corpus.display().to_string(),
        chosen,
        dtw: (scorer == Scorer::Dtw).then_some(dtw),
        seconds: sw.wall(),
        cpu_seconds: sw.cpu(),
    })
}

/// The decision of `verify --signature`, with what was verified.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureVerdict {
    #[serde(flatten)]
    pub decision: PenDecision,
    pub signature: String,
    pub model: Option<String>,
}

impl SignatureVerdict {
    /// One line: the file, ACCEPTED or REJECTED, the scorer's distance against the threshold.
    pub fn summary(&self) -> String {
        let d = &self.decision;
        format!(
            "{}: {} ({} distance {:.4} {} threshold {:.4}, {} reference(s))",
            self.signature,
            if d.accepted { "ACCEPTED" } else { "REJECTED" },
            d.scorer.name(),
            d.distance,
            if d.accepted { "<=" } else { ">" },
            d.threshold,
            d.references
        )
    }
}

/// Decide whether the trajectory file `signature` is by the writer of the `references` files:
/// with the encoder in `model` (its calibration: scorer settings and thresholds) or, without
/// one, DTW at its default settings (`threshold`, else [`DEFAULT_DTW_THRESHOLD`]). `scorer`:
/// default fusion with an encoder, else DTW. `threshold`, when given, decides instead of the
/// calibrated one (accept iff distance <= threshold).
pub fn verify_signature(
    signature: &Path,
    references: &[PathBuf],
    model: Option<&Path>,
    scorer: Option<Scorer>,
    threshold: Option<f32>,
) -> Result<SignatureVerdict> {
    let loaded = model.map(load_online_encoder).transpose()?;
    let scorer = scorer.unwrap_or(if loaded.is_some() {
        Scorer::Fusion
    } else {
        Scorer::Dtw
    });
    let (dtw, dtw_thr) = match &loaded {
        Some((_, cal)) => (cal.dtw.clone(), cal.dtw_choice.threshold),
        None => {
            if scorer != Scorer::Dtw {
                return Err(Error::Msg(format!("the {} scorer needs a sequence encoder: pass --model DIR (made by `twindex train sequence`)", scorer.name())));
            }
            (
                DtwScorer::default(),
                threshold.unwrap_or(DEFAULT_DTW_THRESHOLD),
            )
        }
    };
    let q = read_trajectory(signature)?;
    let refs = references
        .iter()
        .map(|p| read_trajectory(p))
        .collect::<Result<Vec<_>>>()?;
    let decision = verify_online(
        &q,
        &refs,
        scorer,
        loaded.as_ref().map(|(m, c)| (m, c)),
        &dtw,
        dtw_thr,
        threshold,
    )?;
    Ok(SignatureVerdict {
        decision,
        signature: signature.display().to_string(),
        model: model.map(|d| d.display().to_string()),
    })
}
