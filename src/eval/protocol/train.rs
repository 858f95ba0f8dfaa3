//! The training runs of the image-folder protocols: train on some classes, choose the epoch
//! and calibrate on held-out ones ([`train_split`]), ensembles assembled from calibrated
//! members ([`assemble`]), and the three runs of `train image` on folders: class hold-out
//! ([`train_folder`]), the ORL folds ([`train_orl`]) and the signature writers
//! ([`crate::eval::signatures::train_signature_corpora`]).

use super::{
    calibrate_encoder, orl_fold_with_model, orl_folds, orl_report, split_classes, Aggregate,
    CalibrationPairs, OrlFoldReport, OrlReport,
};
use crate::corpus::folder::{self, FolderItem, ImageFolder};
use crate::corpus::TrainTest;
use crate::error::{Error, Result};
use crate::model::{EnsembleBy, ImageModel, ImageModelConfig, Preprocess, TrainingRecord};
use crate::train::image::EpochStats;
use crate::train::{
    EnsembleOutcome, EnsembleTrainConfig, ImageTrainConfig, Observer, Progress, TrainEvent,
    TrainOutcome,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;

/// The line of an ensemble member's training event, if it has one: every epoch of a 20-epoch
/// run or shorter, else every 10th and the last; the epoch kept.
pub fn member_line(
    member: usize,
    ev: &TrainEvent,
    epochs: usize,
    eval_set: &str,
) -> Option<String> {
    let who = format!("member {member}");
    match ev {
        TrainEvent::Step(_) => None,
        TrainEvent::Selected { epoch, score } => Some(format!(
            "{who}: kept the weights of epoch {epoch} ({eval_set} score {score:.4})"
        )),
        TrainEvent::Epoch(h) => (epochs <= 20 || h.epoch % 10 == 0 || h.epoch == epochs).then(|| {
            format!(
                "{who} epoch {:>3}: loss {:.4}  {eval_set} pair accuracy {:.4} (best threshold){}  {:.1} s, {:.1} CPU-s (process)",
                h.epoch,
                h.loss,
                h.test_best_accuracy,
                h.test_roc_auc
                    .map(|a| format!(", ROC-AUC {a:.4}"))
                    .unwrap_or_default(),
                h.wall_seconds,
                h.cpu_seconds
            )
        }),
    }
}

/// The progress of a single encoder trained on a dev split: one bar over all epochs, a line
/// every 10th epoch and for the last, the epoch kept.
fn split_progress(who: &str, epochs: usize, ev: TrainEvent) -> Option<Progress> {
    Some(match ev {
        TrainEvent::Step(s) => Progress::Bar {
            label: who.to_string(),
            len: (s.steps * epochs) as u64,
            pos: ((s.epoch - 1) * s.steps + s.step) as u64,
            prefix: Some(format!("epoch {} loss {:.4}", s.epoch, s.loss)),
        },
        TrainEvent::Selected { epoch, score } => Progress::Line(format!(
            "{who}: kept the weights of epoch {epoch} (dev ROC-AUC {score:.4})"
        )),
        TrainEvent::Epoch(h) if h.epoch % 10 == 0 || h.epoch == epochs => Progress::Line(format!(
            "{who} epoch {:>3}: loss {:.4}  dev pair accuracy {:.4} (best threshold), ROC-AUC {:.4}  {:.0} images/s",
            h.epoch,
            h.loss,
            h.test_best_accuracy,
            h.test_roc_auc.unwrap_or(f64::NAN),
            h.examples as f64 / h.wall_seconds
        )),
        TrainEvent::Epoch(_) => return None,
    })
}

/// One row of an assembled ensemble: a member (its seed, its classes for the `cluster`
/// learners, the epoch kept) or the ensemble itself (`"member": "ensemble"`), each with its
/// calibrated threshold and its held-out score under the run's key (e.g. `dev_roc_auc`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum AssembledRow {
    Member {
        member: usize,
        seed: u64,
        classes: Vec<String>,
        selected_epoch: Option<usize>,
        threshold: f32,
        #[serde(flatten)]
        score: BTreeMap<String, f64>,
    },
    Ensemble {
        member: &'static str,
        threshold: f32,
        #[serde(flatten)]
        score: BTreeMap<String, f64>,
    },
}

impl AssembledRow {
    /// The held-out score of the row.
    pub fn score(&self) -> f64 {
        let (Self::Member { score, .. } | Self::Ensemble { score, .. }) = self;
        score.values().next().copied().unwrap_or(0.0)
    }
}

/// Calibrates an encoder in place (threshold and calibration record) and returns its held-out
/// score.
pub type Calibrate<'a> = dyn Fn(&mut ImageModel) -> Result<f64> + 'a;

/// Calibrate each member of a trained ensemble with `calibrate` (which stores the threshold
/// and returns a held-out score, reported under `score_key`), assemble them with equal weights,
/// and calibrate the ensemble the same way. Returns the ensemble and one row per member, then
/// one for the ensemble.
pub fn assemble(
    outcome: &mut EnsembleOutcome,
    ens: &EnsembleTrainConfig,
    class_names: &[String],
    calibrate: &Calibrate,
    score_key: &str,
    on: &Observer,
) -> Result<(ImageModel, Vec<AssembledRow>)> {
    let keyed = |s: f64| BTreeMap::from([(score_key.to_string(), s)]);
    let mut rows = Vec::new();
    let mut member_classes = Vec::new();
    for (i, o) in outcome.members.iter_mut().enumerate() {
        let m = &mut o.model;
        let score = calibrate(m)?;
        let thr = m.config.threshold;
        let classes: Vec<String> = if ens.by == EnsembleBy::Cluster && i > 0 {
            outcome.classes[i]
                .iter()
                .map(|&c| {
                    class_names
                        .get(c as usize)
                        .cloned()
                        .unwrap_or_else(|| c.to_string())
                })
                .collect()
        } else {
            Vec::new()
        };
        on(Progress::Line(format!(
            "member {i} (seed {}{}): {score_key} {score:.4}, threshold {thr:.4}",
            outcome.seeds[i],
            if classes.is_empty() {
                String::new()
            } else {
                format!(", classes {}", classes.join(","))
            }
        )));
        member_classes.push(classes.clone());
        rows.push(AssembledRow::Member {
            member: i,
            seed: outcome.seeds[i],
            classes,
            selected_epoch: m.config.training.selected_epoch,
            threshold: thr,
            score: keyed(score),
        });
    }
    let models: Vec<&ImageModel> = outcome.members.iter().map(|o| &o.model).collect();
    let weights = vec![1.0f32; models.len()];
    let mut model = ImageModel::ensemble_of(&models, ens.by, &weights, member_classes)?;
    let score = calibrate(&mut model)?;
    let thr = model.config.threshold;
    on(Progress::Line(format!(
        "ensemble of {} ({}-d): {score_key} {score:.4}, threshold {thr:.4}",
        models.len(),
        model.config.dim
    )));
    rows.push(AssembledRow::Ensemble {
        member: "ensemble",
        threshold: thr,
        score: keyed(score),
    });
    Ok((model, rows))
}

/// Train on `train` items, evaluating on `dev` each epoch; calibrate the threshold on the dev
/// items' pairs; returns the trained model (not saved). With `ens`, an ensemble: the members
/// trained as `ens` says, each calibrated and scored on the dev items, then assembled (the
/// outcome's history is then empty, its times the whole ensemble's). `who` names the run in
/// progress lines.
#[allow(clippy::too_many_arguments)]
pub fn train_split(
    train_items: &[FolderItem],
    dev_items: &[FolderItem],
    pre: &Preprocess,
    cfg: &ImageTrainConfig,
    ens: Option<&EnsembleTrainConfig>,
    corpus_name: &str,
    target_far: Option<f64>,
    who: &str,
    on: &Observer,
) -> Result<TrainOutcome> {
    let train_classes = folder::classes_of(train_items);
    let dev_classes = folder::classes_of(dev_items);
    let data = TrainTest {
        train: crate::model::image::load_set(train_items, &train_classes, pre)?,
        test: crate::model::image::load_set(dev_items, &dev_classes, pre)?,
    };
    let mut mcfg = ImageModelConfig::new(cfg.arch, pre.height, pre.width, 1);
    mcfg.preprocess = pre.clone();
    mcfg.class_names = train_classes.clone();
    if let Some(ens) = ens {
        on(Progress::Line(format!(
            "{who}: training an ensemble of {} {} twins (by {}) on {} images of {} classes, dev {} images of {} classes, input {}x{}, seed {}, {} member(s) at a time on {} threads",
            ens.members,
            cfg.arch.name(),
            ens.by.name(),
            data.train.n,
            train_classes.len(),
            data.test.n,
            dev_classes.len(),
            pre.height,
            pre.width,
            cfg.seed,
            ens.parallel,
            rayon::current_num_threads()
        )));
        let mut outcome =
            crate::train::train_ensemble(&data, cfg, ens, mcfg, corpus_name, &|m, ev| {
                if let Some(l) = member_line(m, &ev, cfg.epochs, "dev") {
                    on(Progress::Line(l))
                }
            })?;
        let calibrate = |m: &mut ImageModel| -> Result<f64> {
            calibrate_encoder(m, &data.test, CalibrationPairs::All, target_far)?;
            let emb = m.embed_pixels(&data.test.pixels, data.test.n, 256)?;
            super::all_pairs_roc_auc(&emb, m.config.dim, &data.test.labels)
        };
        let (mut model, _) = assemble(
            &mut outcome,
            ens,
            &train_classes,
            &calibrate,
            "dev_roc_auc",
            on,
        )?;
        model.config.training = TrainingRecord {
            seed: cfg.seed,
            ..outcome.members[0].model.config.training.clone()
        };
        model.config.training.history = Vec::new();
        model.config.training.selected_epoch = None;
        on(Progress::Line(format!(
            "{who}: ensemble trained in {:.1} s wall, {:.1} CPU-s",
            outcome.wall_seconds, outcome.cpu_seconds
        )));
        return Ok(TrainOutcome {
            model,
            history: Vec::new(),
            wall_seconds: outcome.wall_seconds,
            cpu_seconds: outcome.cpu_seconds,
            examples: outcome.members.iter().map(|o| o.examples).sum(),
        });
    }
    on(Progress::Line(format!(
        "{who}: training {} on {} images of {} classes, dev {} images of {} classes, input {}x{}, seed {}",
        cfg.arch.name(),
        data.train.n,
        train_classes.len(),
        data.test.n,
        dev_classes.len(),
        pre.height,
        pre.width,
        cfg.seed
    )));
    let mut outcome = crate::train::train_image_with(&data, cfg, mcfg, corpus_name, &mut |ev| {
        if let Some(p) = split_progress(who, cfg.epochs, ev) {
            on(p)
        }
    })?;
    let cal = calibrate_encoder(
        &mut outcome.model,
        &data.test,
        CalibrationPairs::All,
        target_far,
    )?;
    on(Progress::Line(format!(
        "{who}: threshold distance <= {:.4} ({:?} on {} dev pairs: F1 {:.4}, FAR {:.4}, FRR {:.4})",
        outcome.model.config.threshold, cal.method, cal.n_pairs, cal.f1, cal.far, cal.frr
    )));
    Ok(outcome)
}

/// What `train image --corpus FOLDER` (class hold-out) did.
#[derive(Debug, Clone, Serialize)]
pub struct FolderTrainReport {
    /// Where the encoder was saved.
    pub model: String,
    pub train_classes: Vec<String>,
    /// The classes held out of training: the epoch's evaluation and the calibration.
    pub dev_classes: Vec<String>,
    pub threshold: f32,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub history: Vec<EpochStats>,
}

/// Hold `dev_classes` classes of the folder `corpus` out for calibration, train on the rest,
/// save to `out` with `command` in its training record.
#[allow(clippy::too_many_arguments)]
pub fn train_folder(
    corpus: &str,
    label_column: &str,
    pre: &Preprocess,
    cfg: &ImageTrainConfig,
    ens: Option<&EnsembleTrainConfig>,
    dev_classes: usize,
    target_far: Option<f64>,
    command: &str,
    out: &Path,
    on: &Observer,
) -> Result<FolderTrainReport> {
    let f = ImageFolder::scan(Path::new(corpus), label_column)?;
    let (tr, dv) = split_classes(&f.classes, dev_classes, cfg.seed)?;
    let mut o = train_split(
        &f.with_labels(&tr),
        &f.with_labels(&dv),
        pre,
        cfg,
        ens,
        corpus,
        target_far,
        "train",
        on,
    )?;
    o.model.config.training.command = Some(command.to_string());
    o.model.save(out)?;
    on(Progress::Line(format!("saved {}", out.display())));
    Ok(FolderTrainReport {
        model: out.display().to_string(),
        train_classes: tr,
        dev_classes: dv,
        threshold: o.model.config.threshold,
        wall_seconds: o.wall_seconds,
        cpu_seconds: o.cpu_seconds,
        history: o.history,
    })
}

/// A protocol's report with what the training run adds: the members of an ensemble each
/// alone (absent for a single encoder), where the encoder(s) were saved and the training time.
#[derive(Debug, Clone, Serialize)]
pub struct ProtocolTrainReport<R> {
    #[serde(flatten)]
    pub report: R,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<R>,
    pub model: String,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
}

/// The ORL progress line of a report.
pub fn orl_summary(r: &OrlReport) -> String {
    format!(
        "ORL protocol (4 folds x 10 enrolment images): identification accuracy {:.4}, verification ROC-AUC {:.4}, EER {:.4}, at the calibrated thresholds FAR {:.4} FRR {:.4}, open-set: stranger accepted {:.4}, enrolled accepted correctly {:.4}",
        r.identification_accuracy,
        r.verification_roc_auc,
        r.verification_eer,
        r.far,
        r.frr,
        r.open_set_false_accept,
        r.open_set_correct_accept
    )
}

/// The ORL protocol's training run: one encoder per fold in `out/fold-F` (F = 0..3, or only
/// `only_folds`), each trained on the fold's training subjects less `dev_classes` held out
/// for calibration; then each fold scored on its unseen subjects.
#[allow(clippy::too_many_arguments)]
pub fn train_orl(
    corpus: &str,
    label_column: &str,
    pre: &Preprocess,
    cfg: &ImageTrainConfig,
    ens: Option<&EnsembleTrainConfig>,
    dev_classes: usize,
    target_far: Option<f64>,
    only_folds: &[usize],
    command: &str,
    out: &Path,
    on: &Observer,
) -> Result<ProtocolTrainReport<OrlReport>> {
    let f = ImageFolder::scan(Path::new(corpus), label_column)?;
    let folds = super::select_orl_folds(orl_folds(&f)?, only_folds)?;
    let mut reports = Vec::new();
    let mut member_reports: Vec<Vec<OrlFoldReport>> = Vec::new();
    let (mut wall, mut cpu) = (0.0, 0.0);
    for fold in &folds {
        let (tr, dv) = split_classes(&fold.train_subjects, dev_classes, cfg.seed)?;
        let mut o = train_split(
            &f.with_labels(&tr),
            &f.with_labels(&dv),
            pre,
            cfg,
            ens,
            corpus,
            target_far,
            &format!("fold {}", fold.fold),
            on,
        )?;
        wall += o.wall_seconds;
        cpu += o.cpu_seconds;
        let dir = out.join(format!("fold-{}", fold.fold));
        o.model.config.training.command = Some(command.to_string());
        o.model.save(&dir)?;
        let r = orl_fold_with_model(&f, fold, &o.model)?;
        on(Progress::Line(format!(
            "fold {}: identification {:.4}, verification ROC-AUC {:.4}, open-set false accept {:.4}; saved {}",
            fold.fold,
            r.identification_accuracy,
            r.verification_roc_auc,
            r.open_set_false_accept,
            dir.display()
        )));
        // An ensemble's members, each alone on the same unseen people (reported beside the
        // ensemble; nothing is chosen on them).
        if let Some(e) = &o.model.config.ensemble {
            for i in 0..e.members.len() {
                let rm = orl_fold_with_model(&f, fold, &o.model.member(i)?)?;
                on(Progress::Line(format!(
                    "fold {} member {i}: identification {:.4}, verification ROC-AUC {:.4}",
                    fold.fold, rm.identification_accuracy, rm.verification_roc_auc
                )));
                if member_reports.len() <= i {
                    member_reports.resize_with(i + 1, Vec::new);
                }
                member_reports[i].push(rm);
            }
        }
        reports.push(r);
    }
    let report = orl_report(reports);
    let members: Vec<OrlReport> = member_reports.into_iter().map(orl_report).collect();
    for (i, m) in members.iter().enumerate() {
        on(Progress::Line(format!(
            "member {i} alone: identification accuracy {:.4}, verification ROC-AUC {:.4}, EER {:.4}",
            m.identification_accuracy, m.verification_roc_auc, m.verification_eer
        )));
    }
    on(Progress::Line(orl_summary(&report)));
    Ok(ProtocolTrainReport {
        report,
        members,
        model: out.display().to_string(),
        wall_seconds: wall,
        cpu_seconds: cpu,
    })
}

/// The signature writers used for training and for calibration + test.
pub const SIGNATURE_TRAIN_WRITERS: RangeInclusive<usize> = 1..=20;
pub const SIGNATURE_TEST_WRITERS: RangeInclusive<usize> = 21..=30;
/// With keep-best, the writers trained on and those the epoch is chosen on (held out of
/// training; never the test writers).
pub const SIGNATURE_KEEP_BEST_TRAIN_WRITERS: RangeInclusive<usize> = 1..=16;
pub const SIGNATURE_DEV_WRITERS: RangeInclusive<usize> = 17..=20;

/// How the image files of a folder corpus become network input, as chosen by the user (also
/// the flags of `train image` and `eval` for image folders).
#[derive(Debug, Clone, clap::Args)]
pub struct FolderOptions {
    /// Input size HxW for image folders (images are resized keeping their aspect ratio and
    /// padded). Default: 56x46 for ORL-like faces, 64x128 with --protocol signatures.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(usize, usize)>,
    /// Column of labels.tsv holding the class (image folders with a labels.tsv).
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Dark-on-light images (ink on paper): invert so the background is 0 (always for
    /// signatures).
    #[arg(long)]
    pub invert: bool,
    /// Background value 0..255 used to pad resized images (default 255 with --invert, else 0).
    #[arg(long)]
    pub pad: Option<u8>,
    /// Standardise each image (zero mean, unit variance): evens out lighting.
    #[arg(long)]
    pub standardize: bool,
    /// Embed each image and its mirror image and average them (faces; not signatures).
    #[arg(long)]
    pub mirror_average: bool,
    /// Align faces as the face-aligning encoder in DIR does (e.g. one made by `twindex import
    /// dlib-face`): its landmark predictor, face box and template; the input becomes the
    /// aligned HxH chip (--size must be square). The landmark file is copied into the model.
    #[arg(long, value_name = "DIR")]
    pub align_faces: Option<std::path::PathBuf>,
    /// `--protocol orl`: only these folds (0-3, comma-separated), for quick trials; the
    /// protocol's figures need all four.
    #[arg(long, value_delimiter = ',')]
    pub folds: Vec<usize>,
    /// `--protocol signatures`: the writers and corpora trained, chosen and tested on.
    #[command(flatten)]
    pub signatures: crate::eval::signatures::SignatureArgs,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions {
            size: None,
            label_column: "label".into(),
            invert: false,
            pad: None,
            standardize: false,
            mirror_average: false,
            align_faces: None,
            folds: Vec::new(),
            signatures: Default::default(),
        }
    }
}

/// The largest side `--size` takes: larger inputs would allocate gigabytes per batch.
pub const MAX_INPUT_SIDE: usize = 2048;

/// `--size HxW`: both sides 1..=[`MAX_INPUT_SIDE`].
pub fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?}: expected HxW, e.g. 56x46"))?;
    let side = |v: &str, what: &str| match v.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_INPUT_SIDE).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?}: the {what} must be a whole number of pixels from 1 to {MAX_INPUT_SIDE}"
        )),
    };
    Ok((side(h, "height")?, side(w, "width")?))
}

/// The preprocessing of a folder corpus for `opts`; `signatures`: the signature protocol's
/// defaults (64x128, inverted).
pub fn folder_preprocess(opts: &FolderOptions, signatures: bool) -> Result<Preprocess> {
    let (h, w) = match opts.size {
        Some(s) => s,
        None if signatures => (64, 128),
        None => (56, 46),
    };
    let invert = opts.invert || signatures;
    let mut p = ImageModelConfig::new(crate::model::Arch::Deep, h, w, 1).preprocess;
    p.invert = invert;
    p.pad = opts.pad.unwrap_or(if invert { 255 } else { 0 });
    p.standardize = opts.standardize;
    p.mirror_average = opts.mirror_average;
    p.auto_invert = false;
    // Signature scans: paper whitened, ink stretched and cropped to (see `Preprocess::ink`).
    p.ink = signatures;
    if let Some(dir) = &opts.align_faces {
        let cfg = dir.join(crate::model::image::CONFIG_FILE);
        let c: ImageModelConfig = crate::fsutil::read_json(&cfg)
            .map_err(|e| Error::Msg(format!("--align-faces {}: {e}", dir.display())))?;
        let mut fa = c.preprocess.face_align.ok_or_else(|| {
            Error::Msg(format!(
                "{}: not a face-aligning encoder (no preprocess.face_align)",
                cfg.display()
            ))
        })?;
        if h != w {
            return Err(Error::Msg(format!(
                "--align-faces makes square chips: --size must be HxH, got {h}x{w}"
            )));
        }
        fa.model_dir = Some(dir.clone());
        p.face_align = Some(fa);
    }
    Ok(p)
}

/// Which run `train image` makes on a folder of images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderProtocol {
    /// Hold dev classes out for calibration ([`train_folder`]).
    ClassHoldOut,
    /// The ORL folds ([`train_orl`]).
    Orl,
    /// The signature writers ([`crate::eval::signatures::train_signature_corpora`]).
    Signatures,
}

/// Where a folder training run reads and writes, and its protocol's settings.
#[derive(Debug, Clone)]
pub struct FolderRun<'a> {
    /// The image folder.
    pub corpus: &'a str,
    /// The column of `labels.tsv` holding the class.
    pub label_column: &'a str,
    /// How images become network input.
    pub preprocess: Preprocess,
    /// Class hold-out and ORL: classes held out of training for calibration.
    pub dev_classes: usize,
    /// Calibrate at the lowest threshold with at most this false-accept rate (default best F1).
    pub target_far: Option<f64>,
    /// ORL: only these folds (empty: all four).
    pub folds: &'a [usize],
    /// Signatures: how a questioned signature's distances to the references are combined.
    pub aggregate: Aggregate,
    /// The command line, for the training record.
    pub command: &'a str,
    /// Signatures: the corpora and writers trained on and chosen on
    /// ([`crate::eval::signatures::SignatureArgs::sources`]).
    pub signature_sources: Vec<crate::eval::signatures::SignatureSource>,
    /// The encoder directory written (ORL: a folder of `fold-F` encoders).
    pub out: &'a Path,
}

/// The report of [`train_image_folder`]: the run's own report.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum FolderRunReport {
    ClassHoldOut(FolderTrainReport),
    Orl(ProtocolTrainReport<OrlReport>),
    Signatures(crate::eval::signatures::SignatureTrainReport),
}

/// Where `train image` reads and writes, as the user gave it.
#[derive(Debug, Clone)]
pub struct ImageRun<'a> {
    /// `mnist`, a folder of IDX files, or a folder of images (with `protocol`: `mnist` means
    /// the protocol's own corpus).
    pub corpus: &'a str,
    /// An evaluation protocol to train for (image folders).
    pub protocol: Option<crate::corpus::Protocol>,
    /// How image files become network input (image folders).
    pub folder: &'a FolderOptions,
    /// Image folders: classes held out of training for calibration.
    pub dev_classes: usize,
    /// Image folders: calibrate at the lowest threshold with at most this false-accept rate.
    pub target_far: Option<f64>,
    /// Signatures: how a questioned signature's distances to the references are combined.
    pub aggregate: Aggregate,
    /// MNIST-style corpora: training images held out for calibration and model selection.
    pub holdout: usize,
    /// The command line, for the training record.
    pub command: &'a str,
    /// The encoder directory written.
    pub out: &'a Path,
}

/// `train image`: an MNIST-style corpus ([`train_idx`]) or a folder of images, plainly or for
/// a protocol ([`train_image_folder`]); the report as JSON. Model selection needs held-out
/// data, so `keep_best` without it is refused, as is a hold-out of a folder's images.
pub fn train_image(
    run: &ImageRun,
    cfg: &ImageTrainConfig,
    ens: Option<&EnsembleTrainConfig>,
    on: &Observer,
) -> Result<serde_json::Value> {
    use crate::corpus::Protocol;
    cfg.check()?;
    crate::train::image::check_image_out(run.out)?;
    let folder = run.protocol.is_some() || crate::corpus::is_image_folder(run.corpus);
    if cfg.keep_best && !folder && run.holdout == 0 {
        return Err(Error::InvalidArgument("--keep-best selects on held-out data: image folders (dev classes) or --holdout N (MNIST's test set must not choose the model)".into()));
    }
    if run.holdout > 0 && folder {
        return Err(Error::InvalidArgument(
            "--holdout is for MNIST-style corpora; image folders hold out --dev-classes".into(),
        ));
    }
    let json = |v: std::result::Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| Error::Msg(format!("the training report as JSON: {e}")))
    };
    if !folder {
        let (dir, data) = crate::corpus::load_corpus(run.corpus)?;
        let idx = super::IdxRun {
            corpus_name: run.corpus,
            corpus_dir: &dir,
            holdout: run.holdout,
            command: run.command,
            out: run.out,
        };
        return json(serde_json::to_value(super::train_idx(
            data, cfg, ens, &idx, on,
        )?));
    }
    let p = match run.protocol {
        Some(Protocol::Orl) => FolderProtocol::Orl,
        Some(Protocol::Signatures) => FolderProtocol::Signatures,
        Some(Protocol::SignaturesOnline) => return Err(Error::InvalidArgument(
            "--protocol signatures-online trains a sequence twin: use `twindex train sequence --protocol signatures-online`".into(),
        )),
        None => FolderProtocol::ClassHoldOut,
    };
    let corpus = match run.protocol {
        Some(p) => p.corpus_or_default(run.corpus).display().to_string(),
        None => run.corpus.to_string(),
    };
    let fr = FolderRun {
        corpus: &corpus,
        label_column: &run.folder.label_column,
        preprocess: folder_preprocess(run.folder, p == FolderProtocol::Signatures)?,
        dev_classes: run.dev_classes,
        target_far: run.target_far,
        folds: &run.folder.folds,
        aggregate: run.aggregate,
        command: run.command,
        signature_sources: run.folder.signatures.sources(&corpus)?,
        out: run.out,
    };
    json(serde_json::to_value(train_image_folder(
        p, &fr, cfg, ens, on,
    )?))
}

/// `train image` on a folder of images: the run `protocol` names, with `run`'s settings.
pub fn train_image_folder(
    protocol: FolderProtocol,
    run: &FolderRun,
    cfg: &ImageTrainConfig,
    ens: Option<&EnsembleTrainConfig>,
    on: &Observer,
) -> Result<FolderRunReport> {
    let (pre, far) = (&run.preprocess, run.target_far);
    Ok(match protocol {
        FolderProtocol::Orl => FolderRunReport::Orl(train_orl(
            run.corpus,
            run.label_column,
            pre,
            cfg,
            ens,
            run.dev_classes,
            far,
            run.folds,
            run.command,
            run.out,
            on,
        )?),
        FolderProtocol::Signatures => {
            FolderRunReport::Signatures(crate::eval::signatures::train_signature_corpora(
                &run.signature_sources,
                pre,
                cfg,
                ens,
                run.aggregate,
                run.command,
                run.out,
                on,
            )?)
        }
        FolderProtocol::ClassHoldOut => FolderRunReport::ClassHoldOut(train_folder(
            run.corpus,
            run.label_column,
            pre,
            cfg,
            ens,
            run.dev_classes,
            far,
            run.command,
            run.out,
            on,
        )?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::protocol::SignatureReport;

    /// The rows keep the keys `train image --ensemble --json` has always printed: a member's
    /// seed, classes, kept epoch and threshold, the ensemble's `"member": "ensemble"`, and the
    /// score under the run's key.
    #[test]
    fn assembled_rows_serialise_with_the_run_s_score_key() {
        let key = |s: f64| BTreeMap::from([("dev_roc_auc".to_string(), s)]);
        let m = AssembledRow::Member {
            member: 1,
            seed: 9,
            classes: vec!["a".into()],
            selected_epoch: None,
            threshold: 0.5,
            score: key(0.75),
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"member": 1, "seed": 9, "classes": ["a"], "selected_epoch": null,
                               "threshold": 0.5, "dev_roc_auc": 0.75})
        );
        let e = AssembledRow::Ensemble {
            member: "ensemble",
            threshold: 0.25,
            score: key(0.5),
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"member": "ensemble", "threshold": 0.25, "dev_roc_auc": 0.5})
        );
        assert_eq!((m.score(), e.score()), (0.75, 0.5));
    }

    /// A training report is the protocol's report with `model`, the times and (ensembles
    /// only) `members` beside its keys.
    #[test]
    fn protocol_train_report_flattens_the_report() {
        let r = |eer: f64| SignatureReport {
            protocol: "signatures".into(),
            writers: vec![21, 30],
            references: 5,
            aggregate: Aggregate::Min,
            eer,
            roc_auc: 0.9,
            mean_writer_eer: 0.1,
            threshold: 1.5,
            far: 0.2,
            frr: 0.3,
            n_genuine: 4,
            n_forged: 6,
        };
        let mut t = ProtocolTrainReport {
            report: r(0.25),
            members: Vec::new(),
            model: "out".into(),
            wall_seconds: 1.0,
            cpu_seconds: 2.0,
        };
        let mut want = serde_json::to_value(r(0.25)).unwrap();
        want["model"] = "out".into();
        want["wall_seconds"] = 1.0.into();
        want["cpu_seconds"] = 2.0.into();
        assert_eq!(serde_json::to_value(&t).unwrap(), want);
        t.members.push(r(0.5));
        want["members"] = serde_json::to_value(vec![r(0.5)]).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), want);
    }

    /// Folder preprocessing: the protocol's defaults, the user's choices over them, and a
    /// folder that is not a face-aligning encoder refused by name.
    #[test]
    fn folder_preprocess_defaults_and_choices() {
        let faces = folder_preprocess(&FolderOptions::default(), false).unwrap();
        assert_eq!(
            (faces.height, faces.width, faces.invert, faces.pad),
            (56, 46, false, 0)
        );
        let sigs = folder_preprocess(&FolderOptions::default(), true).unwrap();
        assert_eq!(
            (sigs.height, sigs.width, sigs.invert, sigs.pad),
            (64, 128, true, 255)
        );
        let o = FolderOptions {
            size: Some((32, 32)),
            pad: Some(7),
            standardize: true,
            ..Default::default()
        };
        let p = folder_preprocess(&o, true).unwrap();
        assert_eq!((p.height, p.width, p.invert, p.pad), (32, 32, true, 7));
        assert!(p.standardize && !p.auto_invert && p.face_align.is_none());
        let tmp = tempfile::tempdir().unwrap();
        let o = FolderOptions {
            align_faces: Some(tmp.path().to_path_buf()),
            ..Default::default()
        };
        let e = folder_preprocess(&o, false).unwrap_err().to_string();
        assert!(e.starts_with("--align-faces "), "{e}");
        assert_eq!(parse_size("64x128"), Ok((64, 128)));
        for bad in ["0x0", "64", "100000x100000", "-1x5", "axb"] {
            assert!(parse_size(bad)
                .unwrap_err()
                .starts_with(&format!("{bad:?}")));
        }
    }

    /// The writer-split rule: training, dev and test writers are disjoint and cover 1-30.
    #[test]
    fn signature_writer_splits_are_disjoint() {
        let all: Vec<usize> = SIGNATURE_KEEP_BEST_TRAIN_WRITERS
            .chain(SIGNATURE_DEV_WRITERS)
            .chain(SIGNATURE_TEST_WRITERS)
            .collect();
        assert_eq!(all, (1..=30).collect::<Vec<_>>());
        assert_eq!(
            SIGNATURE_TRAIN_WRITERS.collect::<Vec<_>>(),
            SIGNATURE_KEEP_BEST_TRAIN_WRITERS
                .chain(SIGNATURE_DEV_WRITERS)
                .collect::<Vec<_>>()
        );
    }
}
