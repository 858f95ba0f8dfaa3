//! Image-folder corpora (faces, signatures) for `train image` and `eval`: preprocessing from
//! the command line, dev-class hold-out, the ORL and signature protocols.

use super::common;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;
use std::path::{Path, PathBuf};
use twindex::corpus::folder::{self, FolderItem, ImageFolder};
use twindex::corpus::TrainTest;
use twindex::eval::protocol::{
    self, orl_fold_with_model, raw_embeddings, signature_test_set, signatures_from_embeddings,
    signatures_with_model, split_classes, Aggregate, SIGNATURE_TEST_WRITERS,
    SIGNATURE_TRAIN_WRITERS,
};
use twindex::model::{Arch, ImageModel, ImageModelConfig, Preprocess};
use twindex::train::{
    EnsembleOutcome, EnsembleTrainConfig, ImageTrainConfig, TrainEvent, TrainOutcome,
};

/// The evaluation protocols of image folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// ORL/AT&T faces: 4 subject-disjoint folds, one-shot identification of unseen people.
    Orl,
    /// SVC2004 signatures: train on writers 1-20, calibrate and test on 21-30 (5 references,
    /// genuine vs skilled forgeries).
    Signatures,
    /// SVC2004 online signatures (pen trajectories): `train sequence` and `eval` with
    /// `--test-writers` (default 21-30) and `--scorer twin|dtw|fusion`.
    #[value(name = "signatures-online")]
    SignaturesOnline,
}

/// How image files become network input (image-folder corpora).
#[derive(Debug, Clone, Args)]
pub struct FolderArgs {
    /// Input size HxW for image folders (images are resized keeping their aspect ratio and
    /// padded). Default: 56x46 for ORL-like faces, 64x128 with --protocol signatures.
    #[arg(long)]
    pub size: Option<String>,
    /// Column of labels.tsv holding the class (image folders with a labels.tsv).
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Dark-on-light images (ink on paper): invert so the background is 0.
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
    pub align_faces: Option<PathBuf>,
    /// `--protocol orl`: only these folds (0-3, comma-separated), for quick trials; the
    /// protocol's figures need all four.
    #[arg(long, value_delimiter = ',')]
    pub folds: Vec<usize>,
}

fn parse_size(s: &str) -> Result<(usize, usize)> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .with_context(|| format!("--size {s:?}: expected HxW, e.g. 56x46"))?;
    Ok((
        h.trim()
            .parse()
            .with_context(|| format!("--size {s:?}: bad height"))?,
        w.trim()
            .parse()
            .with_context(|| format!("--size {s:?}: bad width"))?,
    ))
}

/// The preprocessing for a folder corpus.
pub fn folder_preprocess(a: &FolderArgs, protocol: Option<Protocol>) -> Result<Preprocess> {
    let sigs = protocol == Some(Protocol::Signatures);
    let (h, w) = match &a.size {
        Some(s) => parse_size(s)?,
        None if sigs => (64, 128),
        None => (56, 46),
    };
    let invert = a.invert || sigs;
    let mut p = ImageModelConfig::new(Arch::Deep, h, w, 1).preprocess;
    p.invert = invert;
    p.pad = a.pad.unwrap_or(if invert { 255 } else { 0 });
    p.standardize = a.standardize;
    p.mirror_average = a.mirror_average;
    p.auto_invert = false;
    if let Some(dir) = &a.align_faces {
        let cfg = dir.join(twindex::model::image::CONFIG_FILE);
        let c: ImageModelConfig = twindex::fsutil::read_json(&cfg)
            .with_context(|| format!("--align-faces {}", dir.display()))?;
        let mut fa = c.preprocess.face_align.with_context(|| {
            format!(
                "{}: not a face-aligning encoder (no preprocess.face_align)",
                cfg.display()
            )
        })?;
        if h != w {
            bail!("--align-faces makes square chips: --size must be HxH, got {h}x{w}");
        }
        fa.model_dir = Some(dir.clone());
        p.face_align = Some(fa);
    }
    Ok(p)
}

/// Whether `corpus` names a folder of image files (not MNIST or an IDX folder).
pub fn is_image_folder(corpus: &str) -> bool {
    let p = Path::new(corpus);
    if corpus == "mnist" || !p.is_dir() {
        return false;
    }
    let idx = std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("idx"))
        })
        .unwrap_or(false);
    !idx
}

/// One line of an ensemble member's training: every epoch of a 20-epoch run or shorter, else
/// every 10th and the last.
pub fn print_member_event(member: usize, ev: &TrainEvent, epochs: usize, eval_set: &str) {
    let who = format!("member {member}");
    match ev {
        TrainEvent::Step(_) => {}
        TrainEvent::Selected { epoch, score } => {
            eprintln!("{who}: kept the weights of epoch {epoch} ({eval_set} score {score:.4})")
        }
        TrainEvent::Epoch(h) => {
            if epochs <= 20 || h.epoch % 10 == 0 || h.epoch == epochs {
                eprintln!(
                    "{who} epoch {:>3}: loss {:.4}  {eval_set} pair accuracy {:.4} (best threshold){}  {:.1} s, {:.1} CPU-s (process)",
                    h.epoch,
                    h.loss,
                    h.test_best_accuracy,
                    h.test_roc_auc
                        .map(|a| format!(", ROC-AUC {a:.4}"))
                        .unwrap_or_default(),
                    h.wall_seconds,
                    h.cpu_seconds
                );
            }
        }
    }
}

/// Calibrates an encoder: its threshold, the calibration record and a held-out score.
pub type Calibrate<'a> = dyn Fn(&ImageModel) -> Result<(f32, serde_json::Value, f64)> + 'a;

/// Calibrate each member of a trained ensemble with `calibrate` (which returns a threshold,
/// its calibration record and a held-out score, stored under `score_key`), assemble them with
/// equal weights, and calibrate the ensemble the same way. Returns the ensemble and one JSON
/// row per member, then one for the ensemble (`"member": "ensemble"`).
pub fn assemble(
    outcome: &mut EnsembleOutcome,
    ens: &EnsembleTrainConfig,
    class_names: &[String],
    calibrate: &Calibrate,
    score_key: &str,
) -> Result<(ImageModel, Vec<serde_json::Value>)> {
    let mut rows = Vec::new();
    for (i, o) in outcome.members.iter_mut().enumerate() {
        let m = &mut o.model;
        let (thr, cal, score) = calibrate(m)?;
        m.config.threshold = thr;
        m.config.calibration = Some(cal);
        let classes: Vec<String> = if ens.by == twindex::model::EnsembleBy::Cluster && i > 0 {
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
        eprintln!(
            "member {i} (seed {}{}): {score_key} {score:.4}, threshold {thr:.4}",
            outcome.seeds[i],
            if classes.is_empty() {
                String::new()
            } else {
                format!(", classes {}", classes.join(","))
            }
        );
        rows.push(json!({
            "member": i,
            "seed": outcome.seeds[i],
            "classes": classes,
            "selected_epoch": m.config.training.selected_epoch,
            "threshold": thr,
            score_key: score,
        }));
    }
    let models: Vec<&ImageModel> = outcome.members.iter().map(|o| &o.model).collect();
    let classes: Vec<Vec<String>> = rows
        .iter()
        .map(|r| serde_json::from_value(r["classes"].clone()).unwrap_or_default())
        .collect();
    let weights = vec![1.0f32; models.len()];
    let mut model = ImageModel::ensemble_of(&models, ens.by, &weights, classes)?;
    let (thr, cal, score) = calibrate(&model)?;
    model.config.threshold = thr;
    model.config.calibration = Some(cal);
    eprintln!(
        "ensemble of {} ({}-d): {score_key} {score:.4}, threshold {thr:.4}",
        models.len(),
        model.config.dim
    );
    rows.push(json!({ "member": "ensemble", "threshold": thr, score_key: score }));
    Ok((model, rows))
}

/// Train on `train` items, evaluating on `dev` each epoch; calibrate the threshold on the dev
/// items' pairs; returns the trained model (not saved). With `ens`, an ensemble: the members
/// trained as `ens` says, each calibrated and scored on the dev items, then assembled (the
/// outcome's history is then empty, its times the whole ensemble's).
#[allow(clippy::too_many_arguments)]
pub fn train_split(
    train_items: &[FolderItem],
    dev_items: &[FolderItem],
    pre: &Preprocess,
    cfg: &ImageTrainConfig,
    ens: Option<&EnsembleTrainConfig>,
    corpus_name: &str,
    target_far: Option<f64>,
    progress: &str,
) -> Result<TrainOutcome> {
    let train_classes = folder::classes_of(train_items);
    let dev_classes = folder::classes_of(dev_items);
    let data = TrainTest {
        train: twindex::model::image::load_set(train_items, &train_classes, pre)?,
        test: twindex::model::image::load_set(dev_items, &dev_classes, pre)?,
    };
    let mut mcfg = ImageModelConfig::new(cfg.arch, pre.height, pre.width, 1);
    mcfg.preprocess = pre.clone();
    mcfg.class_names = train_classes.clone();
    if let Some(ens) = ens {
        eprintln!(
            "{progress}: training an ensemble of {} {} twins (by {}) on {} images of {} classes, dev {} images of {} classes, input {}x{}, seed {}, {} member(s) at a time on {} threads",
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
        );
        let mut outcome =
            twindex::train::train_ensemble(&data, cfg, ens, mcfg, corpus_name, &|m, ev| {
                print_member_event(m, &ev, cfg.epochs, "dev")
            })?;
        let calibrate = |m: &ImageModel| -> Result<(f32, serde_json::Value, f64)> {
            let emb = m.embed_pixels(&data.test.pixels, data.test.n, 256)?;
            let (thr, cal) =
                protocol::calibrate_pairs(&emb, m.config.dim, &data.test.labels, target_far)?;
            let auc = protocol::all_pairs_roc_auc(&emb, m.config.dim, &data.test.labels)?;
            Ok((thr, serde_json::to_value(&cal)?, auc))
        };
        let (mut model, _) =
            assemble(&mut outcome, ens, &train_classes, &calibrate, "dev_roc_auc")?;
        model.config.training = twindex::model::TrainingRecord {
            seed: cfg.seed,
            ..outcome.members[0].model.config.training.clone()
        };
        model.config.training.history = Vec::new();
        model.config.training.selected_epoch = None;
        eprintln!(
            "{progress}: ensemble trained in {:.1} s wall, {:.1} CPU-s",
            outcome.wall_seconds, outcome.cpu_seconds
        );
        return Ok(TrainOutcome {
            model,
            history: Vec::new(),
            wall_seconds: outcome.wall_seconds,
            cpu_seconds: outcome.cpu_seconds,
            examples: outcome.members.iter().map(|o| o.examples).sum(),
        });
    }
    eprintln!(
        "{progress}: training {} on {} images of {} classes, dev {} images of {} classes, input {}x{}, seed {}",
        cfg.arch.name(),
        data.train.n,
        train_classes.len(),
        data.test.n,
        dev_classes.len(),
        pre.height,
        pre.width,
        cfg.seed
    );
    let mut pb: Option<indicatif::ProgressBar> = None;
    let mut outcome = twindex::train::train_image_with(&data, cfg, mcfg, corpus_name, &mut |ev| {
        match ev {
            TrainEvent::Step(s) => {
                if pb.is_none() {
                    pb = Some(common::bar((s.steps * cfg.epochs) as u64, progress));
                }
                if let Some(p) = &pb {
                    p.inc(1);
                    p.set_prefix(format!("epoch {} loss {:.4}", s.epoch, s.loss));
                }
            }
            TrainEvent::Selected { epoch, score } => {
                eprintln!("{progress}: kept the weights of epoch {epoch} (dev ROC-AUC {score:.4})")
            }
            TrainEvent::Epoch(h) => {
                if h.epoch % 10 == 0 || h.epoch == cfg.epochs {
                    if let Some(p) = &pb {
                        p.suspend(|| {
                            eprintln!(
                                "{progress} epoch {:>3}: loss {:.4}  dev pair accuracy {:.4} (best threshold), ROC-AUC {:.4}  {:.0} images/s",
                                h.epoch,
                                h.loss,
                                h.test_best_accuracy,
                                h.test_roc_auc.unwrap_or(f64::NAN),
                                h.examples as f64 / h.wall_seconds
                            )
                        });
                    }
                }
            }
        }
    })?;
    if let Some(p) = pb.take() {
        p.finish_and_clear();
    }
    let model = &mut outcome.model;
    let emb = model.embed_pixels(&data.test.pixels, data.test.n, 256)?;
    let (thr, cal) =
        protocol::calibrate_pairs(&emb, model.config.dim, &data.test.labels, target_far)?;
    model.config.threshold = thr;
    model.config.calibration = Some(serde_json::to_value(&cal)?);
    eprintln!(
        "{progress}: threshold distance < {thr:.4} ({:?} on {} dev pairs: F1 {:.4}, FAR {:.4}, FRR {:.4})",
        cal.method, cal.n_pairs, cal.f1, cal.far, cal.frr
    );
    Ok(outcome)
}

/// `twindex train image --corpus FOLDER` without a protocol: hold out `dev_classes` classes
/// for calibration, train on the rest, save to `out`.
pub fn train_folder(
    corpus: &str,
    fa: &FolderArgs,
    cfg: &ImageTrainConfig,
    ens: Option<&EnsembleTrainConfig>,
    dev_classes: usize,
    target_far: Option<f64>,
    out: &Path,
) -> Result<serde_json::Value> {
    let pre = folder_preprocess(fa, None)?;
    let f = ImageFolder::scan(Path::new(corpus), &fa.label_column)?;
    let (tr, dv) = split_classes(&f.classes, dev_classes, cfg.seed)?;
    let mut o = train_split(
        &f.with_labels(&tr),
        &f.with_labels(&dv),
        &pre,
        cfg,
        ens,
        corpus,
        target_far,
        "train",
    )?;
    o.model.config.training.command = Some(super::train::command_line());
    o.model.save(out)?;
    eprintln!("saved {}", out.display());
    Ok(json!({
        "model": out.display().to_string(),
        "train_classes": tr,
        "dev_classes": dv,
        "threshold": o.model.config.threshold,
        "wall_seconds": o.wall_seconds,
        "cpu_seconds": o.cpu_seconds,
        "history": o.history,
    }))
}

/// `twindex train image --protocol orl`: one model per fold in `out/fold-F` (F = 0..3), each
/// trained on the fold's training subjects less `dev_classes` held out for calibration; then
/// the protocol evaluation.
#[allow(clippy::too_many_arguments)]
pub fn train_orl(
    corpus: &str,
    fa: &FolderArgs,
    cfg: &ImageTrainConfig,
    ens: Option<&EnsembleTrainConfig>,
    dev_classes: usize,
    target_far: Option<f64>,
    only_folds: &[usize],
    out: &Path,
) -> Result<serde_json::Value> {
    let pre = folder_preprocess(fa, Some(Protocol::Orl))?;
    let f = ImageFolder::scan(Path::new(corpus), &fa.label_column)?;
    let mut folds = protocol::orl_folds(&f)?;
    if !only_folds.is_empty() {
        folds.retain(|x| only_folds.contains(&x.fold));
    }
    let mut reports = Vec::new();
    let mut member_reports: Vec<Vec<protocol::OrlFoldReport>> = Vec::new();
    let (mut wall, mut cpu) = (0.0, 0.0);
    for fold in &folds {
        let (tr, dv) = split_classes(&fold.train_subjects, dev_classes, cfg.seed)?;
        let mut o = train_split(
            &f.with_labels(&tr),
            &f.with_labels(&dv),
            &pre,
            cfg,
            ens,
            corpus,
            target_far,
            &format!("fold {}", fold.fold),
        )?;
        wall += o.wall_seconds;
        cpu += o.cpu_seconds;
        let dir = out.join(format!("fold-{}", fold.fold));
        o.model.config.training.command = Some(super::train::command_line());
        o.model.save(&dir)?;
        let r = orl_fold_with_model(&f, fold, &o.model)?;
        eprintln!(
            "fold {}: identification {:.4}, verification ROC-AUC {:.4}, open-set false accept {:.4}; saved {}",
            fold.fold,
            r.identification_accuracy,
            r.verification_roc_auc,
            r.open_set_false_accept,
            dir.display()
        );
        // An ensemble's members, each alone on the same unseen people (reported beside the
        // ensemble; nothing is chosen on them).
        if let Some(e) = &o.model.config.ensemble {
            for i in 0..e.members.len() {
                let rm = orl_fold_with_model(&f, fold, &o.model.member(i)?)?;
                eprintln!(
                    "fold {} member {i}: identification {:.4}, verification ROC-AUC {:.4}",
                    fold.fold, rm.identification_accuracy, rm.verification_roc_auc
                );
                if member_reports.len() <= i {
                    member_reports.resize_with(i + 1, Vec::new);
                }
                member_reports[i].push(rm);
            }
        }
        reports.push(r);
    }
    let report = protocol::orl_report(reports);
    let members: Vec<protocol::OrlReport> = member_reports
        .into_iter()
        .map(protocol::orl_report)
        .collect();
    for (i, m) in members.iter().enumerate() {
        eprintln!(
            "member {i} alone: identification accuracy {:.4}, verification ROC-AUC {:.4}, EER {:.4}",
            m.identification_accuracy, m.verification_roc_auc, m.verification_eer
        );
    }
    print_orl(&report);
    let mut v = serde_json::to_value(&report)?;
    if !members.is_empty() {
        v["members"] = serde_json::to_value(&members)?;
    }
    v["model"] = json!(out.display().to_string());
    v["wall_seconds"] = json!(wall);
    v["cpu_seconds"] = json!(cpu);
    Ok(v)
}

fn print_orl(r: &protocol::OrlReport) {
    eprintln!(
        "ORL protocol (4 folds x 10 enrolment images): identification accuracy {:.4}, verification ROC-AUC {:.4}, EER {:.4}, at the calibrated thresholds FAR {:.4} FRR {:.4}, open-set: stranger accepted {:.4}, enrolled accepted correctly {:.4}",
        r.identification_accuracy,
        r.verification_roc_auc,
        r.verification_eer,
        r.far,
        r.frr,
        r.open_set_false_accept,
        r.open_set_correct_accept
    );
}

/// `twindex train image --protocol signatures`: train on writers 1-20 (each writer's genuine
/// signatures one class, their skilled forgeries another), calibrate on writers 21-30. With
/// `--keep-best` the epoch is chosen on writers 17-20, held out of training (train on 1-16):
/// never on the test writers 21-30, whose per-epoch figures are otherwise only reported.
pub fn train_signatures(
    corpus: &str,
    fa: &FolderArgs,
    cfg: &ImageTrainConfig,
    ens: Option<&EnsembleTrainConfig>,
    target_far: Option<f64>,
    agg: Aggregate,
    out: &Path,
) -> Result<serde_json::Value> {
    let pre = folder_preprocess(fa, Some(Protocol::Signatures))?;
    let sigs = protocol::read_signatures(Path::new(corpus))?;
    let pick = |r: &std::ops::RangeInclusive<usize>| -> Vec<FolderItem> {
        sigs.iter()
            .filter(|s| r.contains(&s.writer))
            .map(|s| s.item.clone())
            .collect()
    };
    let (tr, dv) = if cfg.keep_best {
        eprintln!("--keep-best: training on writers 1-16, the epoch chosen on writers 17-20 (held out; never on the test writers 21-30)");
        (pick(&(1..=16)), pick(&(17..=20)))
    } else {
        (
            pick(&SIGNATURE_TRAIN_WRITERS),
            pick(&SIGNATURE_TEST_WRITERS),
        )
    };
    if tr.is_empty() || dv.is_empty() {
        bail!("{corpus}: the signature protocol needs writers 1-20 and 21-30 in labels.tsv");
    }
    let mut o = train_split(&tr, &dv, &pre, cfg, ens, corpus, target_far, "signatures")?;
    // The decision compares a questioned signature with a writer's references: calibrate
    // exactly that on writers 21-30 (the protocol's calibration writers).
    let test: Vec<usize> = SIGNATURE_TEST_WRITERS.collect();
    let (report, cal) = signatures_with_model(&sigs, &o.model, agg, None, target_far, &test)?;
    o.model.config.threshold = report.threshold;
    o.model.config.calibration = Some(cal);
    o.model.config.training.command = Some(super::train::command_line());
    o.model.save(out)?;
    // An ensemble's members, each alone on the same writers (reported, never chosen on).
    let mut members = Vec::new();
    if let Some(e) = &o.model.config.ensemble {
        for i in 0..e.members.len() {
            let (rm, _) =
                signatures_with_model(&sigs, &o.model.member(i)?, agg, None, target_far, &test)?;
            eprintln!(
                "member {i} alone: EER {:.4}, ROC-AUC {:.4}, mean per-writer EER {:.4}",
                rm.eer, rm.roc_auc, rm.mean_writer_eer
            );
            members.push(rm);
        }
    }
    print_signatures(&report);
    let mut v = serde_json::to_value(&report)?;
    if !members.is_empty() {
        v["members"] = serde_json::to_value(&members)?;
    }
    v["model"] = json!(out.display().to_string());
    v["wall_seconds"] = json!(o.wall_seconds);
    v["cpu_seconds"] = json!(o.cpu_seconds);
    Ok(v)
}

fn print_signatures(r: &protocol::SignatureReport) {
    eprintln!(
        "signatures (writers {}-{}, {} references, {:?} distance): EER {:.4}, ROC-AUC {:.4}, mean per-writer EER {:.4}; threshold {:.4}: FAR {:.4}, FRR {:.4} ({} genuine, {} forged questioned)",
        r.writers.first().unwrap_or(&0),
        r.writers.last().unwrap_or(&0),
        r.references,
        r.aggregate,
        r.eer,
        r.roc_auc,
        r.mean_writer_eer,
        r.threshold,
        r.far,
        r.frr,
        r.n_genuine,
        r.n_forged
    );
}

/// `twindex eval --protocol P`: with `model` (a trained encoder; for ORL a folder of
/// `fold-0..fold-3` encoders) or, with `raw`, raw pixels at `fa`'s size as the baseline.
pub fn eval_protocol(
    p: Protocol,
    corpus: &str,
    model: Option<&Path>,
    raw: bool,
    fa: &FolderArgs,
    agg: Aggregate,
    test_writers: &[usize],
) -> Result<serde_json::Value> {
    match p {
        Protocol::SignaturesOnline => {
            bail!("--protocol signatures-online is evaluated by the online scorers, not an image encoder")
        }
        Protocol::Orl => {
            let f = ImageFolder::scan(Path::new(corpus), &fa.label_column)?;
            let mut folds = protocol::orl_folds(&f)?;
            if !fa.folds.is_empty() {
                folds.retain(|x| fa.folds.contains(&x.fold));
            }
            // An encoder directory (not a folder of fold-F encoders): the same encoder for
            // every fold, so the faces are embedded once.
            let single = match model {
                Some(base) if !raw && base.join(twindex::model::image::CONFIG_FILE).exists() => {
                    let mut m = ImageModel::load(base)
                        .with_context(|| format!("loading encoder {}", base.display()))?;
                    m.config.preprocess.mirror_average |= fa.mirror_average;
                    let set = twindex::model::image::load_set(
                        &f.items,
                        &f.classes,
                        &m.config.preprocess,
                    )?;
                    let emb = m.embed_pixels(&set.pixels, set.n, 64)?;
                    Some((m, emb))
                }
                _ => None,
            };
            let mut reps = Vec::new();
            for fold in &folds {
                let r = if raw {
                    let pre = folder_preprocess(fa, Some(p))?;
                    let items = f.with_labels(&fold.unseen_subjects);
                    let set = twindex::model::image::load_set(&items, &fold.unseen_subjects, &pre)?;
                    let emb = raw_embeddings(&set, &pre);
                    // Raw pixels have no calibrated threshold: use the fold's training
                    // subjects' pairs (best F1), as an encoder's would be.
                    let tr = f.with_labels(&fold.train_subjects);
                    let tset = twindex::model::image::load_set(&tr, &fold.train_subjects, &pre)?;
                    let temb = raw_embeddings(&tset, &pre);
                    let (thr, _) =
                        protocol::calibrate_pairs(&temb, set.rows * set.cols, &tset.labels, None)?;
                    protocol::orl_fold_report(
                        fold.fold,
                        &emb,
                        set.rows * set.cols,
                        fold.unseen_subjects.len(),
                        10,
                        thr,
                    )?
                } else {
                    let base = model.context("--protocol orl needs --model DIR (or --raw)")?;
                    if let Some((m, all_emb)) = &single {
                        // One encoder for every fold (a pretrained one that saw none of these
                        // people): its threshold is calibrated, per fold, on the pairs of the
                        // fold's training subjects (best F1), never on the unseen ones. All
                        // faces were embedded once; each fold takes its rows.
                        let dim = m.config.dim;
                        let rows = |subjects: &[String]| -> (Vec<f32>, Vec<u32>) {
                            let mut e = Vec::new();
                            let mut l = Vec::new();
                            for (i, it) in f.items.iter().enumerate() {
                                if let Some(c) = subjects.iter().position(|s| s == &it.label) {
                                    e.extend_from_slice(&all_emb[i * dim..(i + 1) * dim]);
                                    l.push(c as u32);
                                }
                            }
                            (e, l)
                        };
                        let (temb, tlab) = rows(&fold.train_subjects);
                        let (thr, _) = protocol::calibrate_pairs(&temb, dim, &tlab, None)?;
                        let (uemb, _) = rows(&fold.unseen_subjects);
                        protocol::orl_fold_report(
                            fold.fold,
                            &uemb,
                            dim,
                            fold.unseen_subjects.len(),
                            10,
                            thr,
                        )?
                    } else {
                        let dir = base.join(format!("fold-{}", fold.fold));
                        let mut m = ImageModel::load(&dir).with_context(|| {
                            format!("loading the fold-{} encoder {}", fold.fold, dir.display())
                        })?;
                        m.config.preprocess.mirror_average |= fa.mirror_average;
                        orl_fold_with_model(&f, fold, &m)?
                    }
                };
                reps.push(r);
            }
            let report = protocol::orl_report(reps);
            print_orl(&report);
            let mut v = serde_json::to_value(&report)?;
            v["model"] = json!(if raw {
                "raw pixels".to_string()
            } else {
                model.map(|m| m.display().to_string()).unwrap_or_default()
            });
            Ok(v)
        }
        Protocol::Signatures => {
            let sigs = protocol::read_signatures(Path::new(corpus))?;
            let mut source = "calibrated on the tested writers (best F1)";
            let (report, _) = if raw {
                let pre = folder_preprocess(fa, Some(p))?;
                let (test, set) = signature_test_set(&sigs, &pre, test_writers)?;
                let emb = raw_embeddings(&set, &pre);
                signatures_from_embeddings(&test, &emb, set.rows * set.cols, agg, None, None)?
            } else {
                let dir = model.context("--protocol signatures needs --model DIR (or --raw)")?;
                let m = ImageModel::load(dir)
                    .with_context(|| format!("loading encoder {}", dir.display()))?;
                // The encoder's threshold holds for the aggregate it was calibrated with; for
                // another, calibrate on these writers (the calibration writers).
                let cal_agg = m
                    .config
                    .calibration
                    .as_ref()
                    .and_then(|c| c.get("aggregate"))
                    .and_then(|a| serde_json::from_value::<Aggregate>(a.clone()).ok())
                    .unwrap_or(Aggregate::Min);
                let thr = (cal_agg == agg).then_some(m.config.threshold);
                if thr.is_some() {
                    source = "the encoder's stored threshold";
                } else {
                    eprintln!(
                        "note: the encoder's threshold was calibrated for --aggregate {cal_agg:?}; for {agg:?} the threshold is calibrated on the tested writers themselves (EER and ROC-AUC do not depend on it; FAR/FRR at it are optimistic)"
                    );
                }
                signatures_with_model(&sigs, &m, agg, thr, None, test_writers)?
            };
            print_signatures(&report);
            let mut v = serde_json::to_value(&report)?;
            v["threshold_source"] = json!(source);
            v["model"] = json!(if raw {
                "raw pixels".to_string()
            } else {
                model.map(|m| m.display().to_string()).unwrap_or_default()
            });
            Ok(v)
        }
    }
}

/// The shipped encoder for a protocol, if present.
/// For ORL that is dlib's pretrained face descriptor where it has been imported into
/// `corpora/encoders/dlib-face` (`twindex import dlib-face --out corpora/encoders/dlib-face`),
/// else the shipped fold encoders trained here.
pub fn default_protocol_model(p: Protocol) -> Option<PathBuf> {
    let dlib = common::repo_root().join("corpora/encoders/dlib-face");
    if p == Protocol::Orl && dlib.join(twindex::model::image::CONFIG_FILE).exists() {
        return Some(dlib);
    }
    let d = common::repo_root().join(match p {
        Protocol::Orl => "corpora/encoders/orl-faces",
        Protocol::Signatures => "corpora/encoders/signatures",
        Protocol::SignaturesOnline => "corpora/encoders/signatures-online",
    });
    d.exists().then_some(d)
}

/// The corpus a protocol reads by default.
pub fn default_protocol_corpus(p: Protocol) -> PathBuf {
    let root = common::repo_root();
    match p {
        Protocol::Orl => {
            let local = root.join("corpora/orl-faces");
            if local.exists() {
                local
            } else {
                root.join("../shared/corpora/orl-faces")
            }
        }
        Protocol::Signatures => root.join("../shared/corpora/signatures-svc2004"),
        Protocol::SignaturesOnline => super::online::default_corpus(),
    }
}
