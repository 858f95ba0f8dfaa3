//! `twindex train image|text`.

use super::common;
use super::protocol::{self, FolderArgs, Protocol};
use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use twindex::eval::protocol::Aggregate;
use twindex::model::{Arch, EnsembleBy};
use twindex::train::{
    train_image, Augmentation, EnsembleTrainConfig, ImageTrainConfig, LossKind, Miner, Schedule,
    TrainEvent,
};

#[derive(Debug, Subcommand)]
pub enum TrainCmd {
    /// Train an image encoder (twin CNN) on a labelled image corpus.
    Image(ImageArgs),
    /// Fine-tune a sentence-transformers text encoder on labelled pairs.
    Text(super::train_text::TextArgs),
    /// Train the sequence twin (time-delay network) on pen trajectories:
    /// `--protocol signatures-online`.
    Sequence(super::online::SequenceArgs),
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Corpus: `mnist` (the shipped corpora/mnist), a folder of MNIST-style IDX files, or a
    /// folder of images (PNG, PGM, JPEG) with labels from sub-folder names or a labels.tsv.
    #[arg(long, default_value = "mnist")]
    pub corpus: String,
    /// Train for an evaluation protocol: `orl` (one encoder per fold in OUT/fold-0..3) or
    /// `signatures` (writers 1-20; calibrated on 21-30). Default corpus: the protocol's.
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    #[command(flatten)]
    pub folder: FolderArgs,

    /// Image folders: classes held out of training to calibrate the threshold on (and to
    /// evaluate each epoch).
    #[arg(long, default_value_t = 5)]
    pub dev_classes: usize,
    /// Image folders: calibrate at the lowest threshold with at most this false-accept rate
    /// (default: best F1).
    #[arg(long)]
    pub target_far: Option<f64>,
    /// Signatures: how a questioned signature's distances to the references are combined.
    #[arg(long, value_enum, default_value_t = Aggregate::Min)]
    pub aggregate: Aggregate,
    /// Network: `lenet` (the seed's), `cnn` (stronger, 64-d normalised), `deep` (3x3
    /// convolutions for larger inputs: faces, signatures) or `resnet` (residual blocks with
    /// batch normalisation, 128-d normalised).
    #[arg(long, value_enum, default_value_t = Arch::Lenet)]
    pub arch: Arch,
    /// Loss: `contrastive` on the seed's pairs, `triplet` on P x K batches, or `arcface`
    /// (additive angular margin to learned class proxies; --margin in radians, e.g. 0.5, and
    /// --scale) on P x K batches.
    #[arg(long, value_enum, default_value_t = LossKind::Contrastive)]
    pub loss: LossKind,
    /// Triplet mining (triplet loss only).
    #[arg(long, value_enum, default_value_t = Miner::BatchHard)]
    pub miner: Miner,
    /// Margin m of the loss.
    #[arg(long, default_value_t = 1.0)]
    pub margin: f32,
    /// Triplet loss on squared distances.
    #[arg(long)]
    pub squared: bool,
    /// Logit scale of the arcface loss.
    #[arg(long, default_value_t = 30.0)]
    pub scale: f32,
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Pairs (contrastive) or items (triplet) per batch.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Items per class in a P x K batch (triplet loss).
    #[arg(long, default_value_t = 8)]
    pub k: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Learning-rate multiplier applied after each epoch (constant schedule only).
    #[arg(long, default_value_t = 1.0)]
    pub lr_decay: f64,
    /// Learning-rate schedule, per step: `constant` (times --lr-decay after each epoch) or
    /// `cosine` (half a cosine from --lr down to 0 at the last step).
    #[arg(long, value_enum, default_value_t = Schedule::Constant)]
    pub schedule: Schedule,
    /// Epochs of linear learning-rate warm-up from 0 to --lr, before the schedule.
    #[arg(long, default_value_t = 0)]
    pub warmup_epochs: usize,
    /// Seed for weights, pairs, batch order and augmentation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Augment training images: random shifts (and scalings, rotations, mirroring as below).
    #[arg(long)]
    pub augment: bool,
    /// Largest shift in pixels (with --augment).
    #[arg(long, default_value_t = 2.0)]
    pub aug_shift: f32,
    /// Largest relative scale change, e.g. 0.1 (with --augment).
    #[arg(long, default_value_t = 0.0)]
    pub aug_scale: f32,
    /// Largest rotation in degrees (with --augment).
    #[arg(long, default_value_t = 0.0)]
    pub aug_rotate: f32,
    /// Mirror images left-right half the time (with --augment; faces, not signatures).
    #[arg(long)]
    pub hflip: bool,
    /// Image folders: keep the weights of the epoch with the best dev ROC-AUC (the held-out
    /// dev classes) rather than the last epoch's.
    #[arg(long)]
    pub keep_best: bool,
    /// MNIST-style corpora: hold N training images out of training (the same share of every
    /// class, a seeded draw). The threshold is then calibrated on their pairs instead of the
    /// training pairs, the per-epoch figures are theirs, and --keep-best may select on them.
    #[arg(long, default_value_t = 0)]
    pub holdout: usize,
    /// Train on only the first N training images.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Train an ensemble of K twins (K >= 1; 1 = a single encoder), saved as one encoder
    /// that embeds by concatenating its members' normalised embeddings. Members train side by
    /// side on up to --threads threads.
    #[arg(long, default_value_t = 1)]
    pub ensemble: usize,
    /// How the ensemble's members differ: `seed` (own seeds), `bagging` (own bootstrap
    /// samples) or `cluster` (a first encoder, then one learner per k-means cluster of its
    /// training classes, K-1 clusters, each started from it). Needs --ensemble K >= 2.
    /// Default seed.
    #[arg(long, value_enum)]
    pub ensemble_by: Option<EnsembleBy>,
    /// Output model directory (config.json + model.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

/// This process's command line, program name as `twindex` (for the training record).
pub fn command_line() -> String {
    std::iter::once("twindex".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(cmd: TrainCmd) -> Result<()> {
    twindex::train::keep_freed_memory();
    match cmd {
        TrainCmd::Image(a) => run_image(a),
        TrainCmd::Text(a) => super::train_text::run(a),
        TrainCmd::Sequence(a) => super::online::run_train(a),
    }
}

fn run_image(a: ImageArgs) -> Result<()> {
    if a.arch == Arch::DlibResnet {
        anyhow::bail!(
            "--arch dlib-resnet is dlib's pretrained face network: `twindex import dlib-face` makes it; it is not trained here (train lenet, cnn, deep or resnet, optionally on aligned faces with --align-faces)"
        );
    }
    let cfg = ImageTrainConfig {
        arch: a.arch,
        loss: a.loss,
        miner: a.miner,
        margin: a.margin,
        squared: a.squared,
        epochs: a.epochs,
        batch: a.batch,
        k_per_class: a.k,
        lr: a.lr,
        seed: a.seed,
        augment: a.augment,
        max_train: a.max_train,
        lr_decay: a.lr_decay,
        schedule: a.schedule,
        warmup_epochs: a.warmup_epochs,
        augmentation: Augmentation {
            shift: a.aug_shift,
            scale: a.aug_scale,
            rotate: a.aug_rotate,
            hflip: a.hflip,
        },
        keep_best: a.keep_best,
        scale: a.scale,
        dev_score: Some(twindex::eval::protocol::all_pairs_roc_auc),
    };
    if a.schedule == Schedule::Cosine && a.lr_decay != 1.0 {
        anyhow::bail!(
            "--schedule cosine sets the learning rate per step down to 0: drop --lr-decay {} (it is for --schedule constant)",
            a.lr_decay
        );
    }
    let ens = ensemble_config(a.ensemble, a.ensemble_by)?;
    check_model_out(&a.out)?;
    let folder = a.protocol.is_some() || protocol::is_image_folder(&a.corpus);
    if a.keep_best && !folder && a.holdout == 0 {
        anyhow::bail!("--keep-best selects on held-out data: image folders (dev classes) or --holdout N (MNIST's test set must not choose the model)");
    }
    if a.holdout > 0 && folder {
        anyhow::bail!("--holdout is for MNIST-style corpora; image folders hold out --dev-classes");
    }
    if folder {
        let corpus = match a.protocol {
            Some(p) if a.corpus == "mnist" => {
                protocol::default_protocol_corpus(p).display().to_string()
            }
            _ => a.corpus.clone(),
        };
        let report = match a.protocol {
            Some(Protocol::Orl) => protocol::train_orl(
                &corpus,
                &a.folder,
                &cfg,
                ens.as_ref(),
                a.dev_classes,
                a.target_far,
                &a.folder.folds,
                &a.out,
            )?,
            Some(Protocol::Signatures) => protocol::train_signatures(
                &corpus,
                &a.folder,
                &cfg,
                ens.as_ref(),
                a.target_far,
                a.aggregate,
                &a.out,
            )?,
            Some(Protocol::SignaturesOnline) => anyhow::bail!(
                "--protocol signatures-online trains a sequence twin: use `twindex train sequence --protocol signatures-online`"
            ),
            None => protocol::train_folder(
                &corpus,
                &a.folder,
                &cfg,
                ens.as_ref(),
                a.dev_classes,
                a.target_far,
                &a.out,
            )?,
        };
        if a.json {
            common::print_json(&report)?;
        }
        return Ok(());
    }
    let (dir, mut data) = common::load_corpus(&a.corpus)?;
    if a.holdout > 0 {
        if a.holdout * 10 > data.train.n * 5 {
            anyhow::bail!(
                "--holdout {} would hold out more than half of the {} training images of {}",
                a.holdout,
                data.train.n,
                dir.display()
            );
        }
        // The test split plays no part in training then: the held-out images stand in for it.
        let (rest, held) = data.train.split_holdout(a.holdout, a.seed);
        data = twindex::corpus::TrainTest {
            train: rest,
            test: held,
        };
    }
    // Image folders evaluate on dev classes held out of the training people; --holdout on
    // training items held out: neither is a test set.
    let eval_set = if a.holdout > 0 || folder {
        "held-out"
    } else {
        "test"
    };
    if let Some(ens) = &ens {
        return run_mnist_ensemble(&a, &cfg, ens, &dir, &data, eval_set);
    }
    eprintln!(
        "training {} with {:?} loss on {} ({} train / {} {eval_set} images), seed {}, {} threads",
        a.arch.name(),
        a.loss,
        dir.display(),
        data.train.n,
        data.test.n,
        a.seed,
        rayon::current_num_threads()
    );
    let mut pb: Option<indicatif::ProgressBar> = None;
    let mut cur_epoch = 0;
    let mut outcome = train_image(&data, &cfg, &a.corpus, &mut |ev| match ev {
        TrainEvent::Step(s) => {
            if s.epoch != cur_epoch {
                cur_epoch = s.epoch;
                pb = Some(common::bar(
                    s.steps as u64,
                    &format!("epoch {}/{}", s.epoch, cfg.epochs),
                ));
            }
            if let Some(p) = &pb {
                p.set_position(s.step as u64);
                if s.step % 20 == 0 {
                    p.set_prefix(format!("loss {:.4}", s.loss));
                }
            }
        }
        TrainEvent::Selected { epoch, score } => {
            eprintln!("kept epoch {epoch} (best {eval_set} score {score:.4})");
        }
        TrainEvent::Epoch(h) => {
            if let Some(p) = pb.take() {
                p.finish_and_clear();
            }
            eprintln!(
                "epoch {:>2}: loss {:.5}  {eval_set} pair accuracy {}{:.4} (best threshold)  {:.0} examples/s ({:.1} s wall, {:.1} s CPU)",
                h.epoch,
                h.loss,
                // A fixed distance means nothing for L2-normalised encoders (their
                // threshold lands near 1.3): only the best-threshold figure then.
                if h.normalized {
                    String::new()
                } else {
                    format!("{:.4} (at d < {:.2}), ", h.test_pair_accuracy, h.pair_threshold)
                },
                h.test_best_accuracy,
                h.examples as f64 / h.wall_seconds,
                h.wall_seconds,
                h.cpu_seconds
            );
        }
    })?;
    // The duplicate threshold: best F1 on the held-out pairs, else on the training pairs
    // (never the test pairs).
    let model = &mut outcome.model;
    model.config.training.command = Some(command_line());
    let cal_set = if a.holdout > 0 {
        &data.test
    } else {
        &data.train
    };
    let emb = twindex::train::image::embed_set(model, cal_set)?;
    let pairs = twindex::corpus::seed_pairs(&cal_set.labels, a.seed)?;
    let dist = twindex::train::image::pair_distances(&emb, model.config.dim, &pairs);
    let (scores, labels) = twindex::eval::image::pair_scores(&dist, &pairs);
    let cal = twindex::eval::calibrate_best_f1(&scores, &labels)?;
    model.config.threshold = twindex::index::Metric::L2.distance_for_similarity(cal.threshold);
    model.config.calibration = Some(serde_json::to_value(&cal)?);
    eprintln!(
        "threshold: distance < {:.4} (best F1 {:.4} on {} {} pairs)",
        model.config.threshold,
        cal.f1,
        pairs.len(),
        if a.holdout > 0 {
            "held-out"
        } else {
            "training"
        }
    );
    outcome.model.save(&a.out)?;
    // The figure of the epoch kept: the selected one with --keep-best, else the last.
    let kept = match outcome.model.config.training.selected_epoch {
        Some(e) => outcome.history.iter().find(|h| h.epoch == e),
        None => outcome.history.last(),
    };
    let last = kept.map(|h| h.test_best_accuracy).unwrap_or(0.0);
    let kept_epoch = kept.map(|h| h.epoch);
    let eps = outcome.examples as f64;
    let report = json!({
        "model": a.out.display().to_string(),
        "arch": a.arch.name(),
        "loss": outcome.model.config.training.loss,
        "miner": outcome.model.config.training.miner,
        "epochs": a.epochs,
        "batch": a.batch,
        "seed": a.seed,
        "threads": rayon::current_num_threads(),
        "train_examples": outcome.examples,
        "wall_seconds": outcome.wall_seconds,
        "cpu_seconds": outcome.cpu_seconds,
        "pairs_per_second": if a.loss == LossKind::Contrastive { Some(eps / outcome.wall_seconds) } else { None },
        "pairs_per_cpu_second": if a.loss == LossKind::Contrastive { Some(eps / outcome.cpu_seconds) } else { None },
        "examples_per_second": eps / outcome.wall_seconds,
        // Pair accuracy at the best threshold for those pairs, of the epoch kept, on the
        // test set (MNIST without --holdout) or on held-out training data (never both keys).
        "test_pair_accuracy": (eval_set == "test").then_some(last),
        "held_out_pair_accuracy": (eval_set != "test").then_some(last),
        "pair_accuracy_epoch": kept_epoch,
        "evaluated_on": eval_set,
        "holdout": a.holdout,
        "selected_epoch": outcome.model.config.training.selected_epoch,
        "threshold": outcome.model.config.threshold,
        "history": outcome.history,
    });
    eprintln!(
        "saved {} ({eval_set} pair accuracy {:.4} at the best threshold, epoch {})",
        a.out.display(),
        last,
        kept_epoch.unwrap_or(0)
    );
    if a.json {
        common::print_json(&report)?;
    }
    Ok(())
}

/// The ensemble settings of `--ensemble K --ensemble-by B`: `None` for a single encoder.
fn ensemble_config(k: usize, by: Option<EnsembleBy>) -> Result<Option<EnsembleTrainConfig>> {
    if k == 0 {
        anyhow::bail!(
            "--ensemble 0: expected the number of members, at least 1 (1 = a single encoder)"
        );
    }
    if k == 1 {
        if let Some(b) = by {
            anyhow::bail!(
                "--ensemble-by {} needs --ensemble K with K >= 2 members",
                b.name()
            );
        }
        return Ok(None);
    }
    Ok(Some(EnsembleTrainConfig {
        members: k,
        by: by.unwrap_or(EnsembleBy::Seed),
        parallel: rayon::current_num_threads().min(k),
    }))
}

/// `train image --ensemble K` on MNIST-style data: members trained, each calibrated (best F1
/// on the seed pairs of the held-out images, else of the training images) and scored on the
/// held-out (or test) pairs, then the ensemble calibrated the same way and saved.
fn run_mnist_ensemble(
    a: &ImageArgs,
    cfg: &ImageTrainConfig,
    ens: &EnsembleTrainConfig,
    dir: &std::path::Path,
    data: &twindex::corpus::TrainTest,
    eval_set: &str,
) -> Result<()> {
    eprintln!(
        "training an ensemble of {} {} twins (by {}) with {:?} loss on {} ({} train / {} {eval_set} images), seed {}, {} member(s) at a time on {} threads",
        ens.members,
        a.arch.name(),
        ens.by.name(),
        a.loss,
        dir.display(),
        data.train.n,
        data.test.n,
        a.seed,
        ens.parallel,
        rayon::current_num_threads()
    );
    let mut mcfg =
        twindex::model::ImageModelConfig::new(a.arch, data.train.rows, data.train.cols, 1);
    mcfg.class_names = (0..data.train.n_classes()).map(|c| c.to_string()).collect();
    let mut outcome = twindex::train::train_ensemble(data, cfg, ens, mcfg, &a.corpus, &|m, ev| {
        protocol::print_member_event(m, &ev, cfg.epochs, eval_set)
    })?;
    let cal_set = if a.holdout > 0 {
        &data.test
    } else {
        &data.train
    };
    let pairs = twindex::corpus::seed_pairs(&cal_set.labels, a.seed)?;
    let test_pairs = twindex::corpus::seed_pairs(&data.test.labels, a.seed.wrapping_add(1))?;
    let calibrate = |m: &twindex::model::ImageModel| -> Result<(f32, serde_json::Value, f64)> {
        let emb = twindex::train::image::embed_set(m, cal_set)?;
        let dist = twindex::train::image::pair_distances(&emb, m.config.dim, &pairs);
        let (scores, labels) = twindex::eval::image::pair_scores(&dist, &pairs);
        let cal = twindex::eval::calibrate_best_f1(&scores, &labels)?;
        let temb = twindex::train::image::embed_set(m, &data.test)?;
        let tdist = twindex::train::image::pair_distances(&temb, m.config.dim, &test_pairs);
        let (acc, _) = twindex::train::image::best_threshold_accuracy(&tdist, &test_pairs);
        Ok((
            twindex::index::Metric::L2.distance_for_similarity(cal.threshold),
            serde_json::to_value(&cal)?,
            acc,
        ))
    };
    let score_key = if eval_set == "test" {
        "test_pair_accuracy"
    } else {
        "held_out_pair_accuracy"
    };
    let names: Vec<String> = (0..data.train.n_classes()).map(|c| c.to_string()).collect();
    let (mut model, members) =
        protocol::assemble(&mut outcome, ens, &names, &calibrate, score_key)?;
    model.config.training = twindex::model::TrainingRecord {
        command: Some(command_line()),
        ..model
            .config
            .ensemble
            .as_ref()
            .map(|e| e.members[0].training.clone())
            .unwrap_or_default()
    };
    model.config.training.seed = a.seed;
    model.config.training.history = Vec::new();
    model.config.training.selected_epoch = None;
    model.save(&a.out)?;
    let ens_acc = members
        .last()
        .and_then(|m| m[score_key].as_f64())
        .unwrap_or(0.0);
    eprintln!(
        "saved {} ({} members, {}-d; {eval_set} pair accuracy {ens_acc:.4} at the best threshold; training {:.1} s wall, {:.1} CPU-s)",
        a.out.display(),
        ens.members,
        model.config.dim,
        outcome.wall_seconds,
        outcome.cpu_seconds
    );
    if a.json {
        common::print_json(&json!({
            "model": a.out.display().to_string(),
            "arch": a.arch.name(),
            "ensemble": ens.members,
            "ensemble_by": ens.by.name(),
            "parallel": ens.parallel,
            "seed": a.seed,
            "threads": rayon::current_num_threads(),
            "dim": model.config.dim,
            "threshold": model.config.threshold,
            "evaluated_on": eval_set,
            "holdout": a.holdout,
            "wall_seconds": outcome.wall_seconds,
            "cpu_seconds": outcome.cpu_seconds,
            "members": members,
        }))?;
    }
    Ok(())
}

/// Refuse an `--out` that twindex did not make: it must be absent, empty, an encoder directory
/// (`config.json` of an image encoder) or a folder of `fold-N` encoder directories (ORL).
fn check_model_out(out: &std::path::Path) -> Result<()> {
    let is_encoder = |d: &std::path::Path| {
        twindex::fsutil::read_json::<twindex::model::ImageModelConfig>(
            &d.join(twindex::model::image::CONFIG_FILE),
        )
        .is_ok_and(|c| c.format == twindex::model::image::IMAGE_FORMAT)
    };
    if !out.exists() || is_encoder(out) {
        return Ok(());
    }
    let entries: Vec<_> = match std::fs::read_dir(out) {
        Ok(rd) => rd.flatten().collect(),
        Err(_) => anyhow::bail!(
            "--out {}: exists and is not a directory twindex made; refusing to write there",
            out.display()
        ),
    };
    let folds = entries
        .iter()
        .all(|e| e.file_name().to_string_lossy().starts_with("fold-") && is_encoder(&e.path()));
    if entries.is_empty() || folds {
        return Ok(());
    }
    anyhow::bail!(
        "--out {}: exists and holds files that are not an encoder twindex made (no image encoder config.json); refusing to write there (choose a new directory)",
        out.display()
    )
}
