//! `train image` on an MNIST-style (IDX) corpus: train one encoder or an ensemble, calibrate
//! the threshold on the seed pairs of held-out images (else of the training images; never the
//! test images), save, and report.

use super::train::{assemble, member_line, AssembledRow};
use super::{calibrate_encoder, CalibrationPairs};
use crate::corpus::{seed_pairs, TrainTest};
use crate::error::{Error, Result};
use crate::model::{ImageModel, ImageModelConfig, TrainingRecord};
use crate::train::image::EpochStats;
use crate::train::image::{best_threshold_accuracy, embed_set, pair_distances};
use crate::train::{
    EnsembleTrainConfig, ImageTrainConfig, LossKind, Observer, Progress, Throughput, TrainEvent,
};
use serde::Serialize;
use std::path::Path;

/// Where an IDX training run reads and writes.
#[derive(Debug, Clone, Copy)]
pub struct IdxRun<'a> {
    /// The corpus as named on the command line (for the training record).
    pub corpus_name: &'a str,
    /// Its folder (for progress lines).
    pub corpus_dir: &'a Path,
    /// Training images held out of training (0: none): they then stand in for the test set.
    pub holdout: usize,
    /// The command line, for the training record.
    pub command: &'a str,
    /// The encoder directory written.
    pub out: &'a Path,
}

/// What training one encoder did.
#[derive(Debug, Clone, Serialize)]
pub struct IdxEncoderReport {
    pub model: String,
    pub arch: &'static str,
    pub loss: String,
    pub miner: String,
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    #[serde(flatten)]
    pub throughput: Throughput,
    /// Pair accuracy at the best threshold for those pairs, of the epoch kept, on the test set
    /// (without a hold-out) or on held-out training data (never both).
    pub test_pair_accuracy: Option<f64>,
    pub held_out_pair_accuracy: Option<f64>,
    pub pair_accuracy_epoch: Option<usize>,
    /// `test` or `held-out`.
    pub evaluated_on: &'static str,
    pub holdout: usize,
    pub selected_epoch: Option<usize>,
    pub threshold: f32,
    pub history: Vec<EpochStats>,
}

/// What training an ensemble did: each member's row, then the ensemble's.
#[derive(Debug, Clone, Serialize)]
pub struct IdxEnsembleReport {
    pub model: String,
    pub arch: &'static str,
    pub ensemble: usize,
    pub ensemble_by: &'static str,
    pub parallel: usize,
    pub seed: u64,
    pub threads: usize,
    pub dim: usize,
    pub threshold: f32,
    pub evaluated_on: &'static str,
    pub holdout: usize,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub members: Vec<AssembledRow>,
}

/// The report of [`train_idx`].
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum IdxTrainReport {
    Encoder(IdxEncoderReport),
    Ensemble(IdxEnsembleReport),
}

/// The progress of a single encoder: a bar per epoch, a line per epoch (`eval_set`: what its
/// pair accuracy is measured on), the epoch kept.
fn idx_progress(eval_set: &str, epochs: usize, ev: TrainEvent) -> Option<Progress> {
    Some(match ev {
        TrainEvent::Step(s) => Progress::Bar {
            label: format!("epoch {}/{epochs}", s.epoch),
            len: s.steps as u64,
            pos: s.step as u64,
            prefix: (s.step % 20 == 0).then(|| format!("loss {:.4}", s.loss)),
        },
        TrainEvent::Selected { epoch, score } => Progress::Line(format!(
            "kept epoch {epoch} (best {eval_set} score {score:.4})"
        )),
        TrainEvent::Epoch(h) => Progress::Line(format!(
            "epoch {:>2}: loss {:.5}  {eval_set} pair accuracy {}{:.4} (best threshold)  {:.0} examples/s ({:.1} s wall, {:.1} s CPU)",
            h.epoch,
            h.loss,
            // A fixed distance means nothing for L2-normalised encoders (their threshold
            // lands near 1.3): only the best-threshold figure then.
            if h.normalized {
                String::new()
            } else {
                format!("{:.4} (at d <= {:.2}), ", h.test_pair_accuracy, h.pair_threshold)
            },
            h.test_best_accuracy,
            h.examples as f64 / h.wall_seconds,
            h.wall_seconds,
            h.cpu_seconds
        )),
    })
}

/// Train an image encoder (or with `ens` an ensemble) on an MNIST-style corpus, calibrate its
/// threshold (best F1 on the seed pairs of the held-out images, else of the training images),
/// save it to `run.out` and report.
pub fn train_idx(
    mut data: TrainTest,
    cfg: &ImageTrainConfig,
    ens: Option<&EnsembleTrainConfig>,
    run: &IdxRun,
    on: &Observer,
) -> Result<IdxTrainReport> {
    if run.holdout > 0 {
        if run.holdout * 10 > data.train.n * 5 {
            return Err(Error::Msg(format!(
                "--holdout {} would hold out more than half of the {} training images of {}",
                run.holdout,
                data.train.n,
                run.corpus_dir.display()
            )));
        }
        // The test split plays no part in training then: the held-out images stand in for it.
        let (rest, held) = data.train.split_holdout(run.holdout, cfg.seed);
        data = TrainTest {
            train: rest,
            test: held,
        };
    }
    // Training items held out are not a test set.
    let eval_set = if run.holdout > 0 { "held-out" } else { "test" };
    if let Some(ens) = ens {
        return train_idx_ensemble(&data, cfg, ens, run, eval_set, on)
            .map(IdxTrainReport::Ensemble);
    }
    on(Progress::Line(format!(
        "training {} with {:?} loss on {} ({} train / {} {eval_set} images), seed {}, {} threads",
        cfg.arch.name(),
        cfg.loss,
        run.corpus_dir.display(),
        data.train.n,
        data.test.n,
        cfg.seed,
        rayon::current_num_threads()
    )));
    let mut outcome = crate::train::train_image(&data, cfg, run.corpus_name, &mut |ev| {
        if let Some(p) = idx_progress(eval_set, cfg.epochs, ev) {
            on(p)
        }
    })?;
    // The duplicate threshold: best F1 on the held-out pairs, else on the training pairs
    // (never the test pairs).
    let model = &mut outcome.model;
    model.config.training.command = Some(run.command.to_string());
    let cal_set = if run.holdout > 0 {
        &data.test
    } else {
        &data.train
    };
    let cal = calibrate_encoder(model, cal_set, CalibrationPairs::Seeded(cfg.seed), None)?;
    on(Progress::Line(format!(
        "threshold: distance <= {:.4} (best F1 {:.4} on {} {} pairs)",
        model.config.threshold,
        cal.f1,
        cal.n_pairs,
        if run.holdout > 0 {
            "held-out"
        } else {
            "training"
        }
    )));
    outcome.model.save(run.out)?;
    // The figure of the epoch kept: the selected one with keep-best, else the last.
    let kept = match outcome.model.config.training.selected_epoch {
        Some(e) => outcome.history.iter().find(|h| h.epoch == e),
        None => outcome.history.last(),
    };
    let last = kept.map(|h| h.test_best_accuracy).unwrap_or(0.0);
    let kept_epoch = kept.map(|h| h.epoch);
    on(Progress::Line(format!(
        "saved {} ({eval_set} pair accuracy {:.4} at the best threshold, epoch {})",
        run.out.display(),
        last,
        kept_epoch.unwrap_or(0)
    )));
    let pairs = cfg.loss == LossKind::Contrastive;
    let training = &outcome.model.config.training;
    Ok(IdxTrainReport::Encoder(IdxEncoderReport {
        model: run.out.display().to_string(),
        arch: cfg.arch.name(),
        loss: training.loss.clone(),
        miner: training.miner.clone(),
        epochs: cfg.epochs,
        batch: cfg.batch,
        seed: cfg.seed,
        throughput: Throughput::new(
            outcome.examples,
            outcome.wall_seconds,
            outcome.cpu_seconds,
            pairs,
        ),
        test_pair_accuracy: (eval_set == "test").then_some(last),
        held_out_pair_accuracy: (eval_set != "test").then_some(last),
        pair_accuracy_epoch: kept_epoch,
        evaluated_on: eval_set,
        holdout: run.holdout,
        selected_epoch: training.selected_epoch,
        threshold: outcome.model.config.threshold,
        history: outcome.history.clone(),
    }))
}

/// The members trained, each calibrated (best F1 on the seed pairs of the held-out images,
/// else of the training images) and scored on the held-out (or test) pairs, then the ensemble
/// calibrated the same way and saved.
fn train_idx_ensemble(
    data: &TrainTest,
    cfg: &ImageTrainConfig,
    ens: &EnsembleTrainConfig,
    run: &IdxRun,
    eval_set: &'static str,
    on: &Observer,
) -> Result<IdxEnsembleReport> {
    on(Progress::Line(format!(
        "training an ensemble of {} {} twins (by {}) with {:?} loss on {} ({} train / {} {eval_set} images), seed {}, {} member(s) at a time on {} threads",
        ens.members,
        cfg.arch.name(),
        ens.by.name(),
        cfg.loss,
        run.corpus_dir.display(),
        data.train.n,
        data.test.n,
        cfg.seed,
        ens.parallel,
        rayon::current_num_threads()
    )));
    let names: Vec<String> = (0..data.train.n_classes()).map(|c| c.to_string()).collect();
    let mut mcfg = ImageModelConfig::new(cfg.arch, data.train.rows, data.train.cols, 1);
    mcfg.class_names = names.clone();
    let mut outcome =
        crate::train::train_ensemble(data, cfg, ens, mcfg, run.corpus_name, &|m, ev| {
            if let Some(l) = member_line(m, &ev, cfg.epochs, eval_set) {
                on(Progress::Line(l))
            }
        })?;
    let cal_set = if run.holdout > 0 {
        &data.test
    } else {
        &data.train
    };
    let test_pairs = seed_pairs(&data.test.labels, cfg.seed.wrapping_add(1))?;
    let calibrate = |m: &mut ImageModel| -> Result<f64> {
        calibrate_encoder(m, cal_set, CalibrationPairs::Seeded(cfg.seed), None)?;
        let temb = embed_set(m, &data.test)?;
        let tdist = pair_distances(&temb, m.config.dim, &test_pairs);
        Ok(best_threshold_accuracy(&tdist, &test_pairs).0)
    };
    let score_key = if eval_set == "test" {
        "test_pair_accuracy"
    } else {
        "held_out_pair_accuracy"
    };
    let (mut model, members) = assemble(&mut outcome, ens, &names, &calibrate, score_key, on)?;
    model.config.training = TrainingRecord {
        command: Some(run.command.to_string()),
        ..model
            .config
            .ensemble
            .as_ref()
            .map(|e| e.members[0].training.clone())
            .unwrap_or_default()
    };
    model.config.training.seed = cfg.seed;
    model.config.training.history = Vec::new();
    model.config.training.selected_epoch = None;
    model.save(run.out)?;
    let ens_acc = members.last().map_or(0.0, AssembledRow::score);
    on(Progress::Line(format!(
        "saved {} ({} members, {}-d; {eval_set} pair accuracy {ens_acc:.4} at the best threshold; training {:.1} s wall, {:.1} CPU-s)",
        run.out.display(),
        ens.members,
        model.config.dim,
        outcome.wall_seconds,
        outcome.cpu_seconds
    )));
    Ok(IdxEnsembleReport {
        model: run.out.display().to_string(),
        arch: cfg.arch.name(),
        ensemble: ens.members,
        ensemble_by: ens.by.name(),
        parallel: ens.parallel,
        seed: cfg.seed,
        threads: rayon::current_num_threads(),
        dim: model.config.dim,
        threshold: model.config.threshold,
        evaluated_on: eval_set,
        holdout: run.holdout,
        wall_seconds: outcome.wall_seconds,
        cpu_seconds: outcome.cpu_seconds,
        members,
    })
}
