//! `twindex train image|text`.

use super::common;
/// The command line for training records (`import` uses it too).
pub use super::protocol::command_line;
use super::protocol::{self, FolderArgs, Protocol};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use twindex::eval::protocol::{
    train_idx, train_image_folder, Aggregate, FolderProtocol, FolderRun, IdxRun,
};
use twindex::model::{Arch, EnsembleBy};
use twindex::train::{
    Augmentation, EnsembleTrainConfig, ImageTrainConfig, LossKind, Miner, Schedule,
};

#[derive(Debug, Subcommand)]
pub enum TrainCmd {
    /// Train an image encoder (twin CNN) on a labelled image corpus.
    Image(ImageArgs),
    /// Fine-tune a sentence-transformers text encoder on labelled pairs.
    Text(super::train_text::TextArgs),
    /// Train the sequence twin (time-delay network) on pen trajectories:
    /// `--protocol signatures-online`.
    Sequence(super::train_sequence::SequenceArgs),
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

pub fn run(cmd: TrainCmd) -> Result<()> {
    twindex::train::keep_freed_memory();
    match cmd {
        TrainCmd::Image(a) => run_image(a),
        TrainCmd::Text(a) => super::train_text::run(a),
        TrainCmd::Sequence(a) => super::train_sequence::run(a),
    }
}

fn run_image(a: ImageArgs) -> Result<()> {
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
    cfg.check()?;
    let ens = EnsembleTrainConfig::for_members(a.ensemble, a.ensemble_by)?;
    twindex::train::image::check_image_out(&a.out)?;
    let folder = a.protocol.is_some() || twindex::corpus::is_image_folder(&a.corpus);
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
        let p = match a.protocol {
            Some(Protocol::Orl) => FolderProtocol::Orl,
            Some(Protocol::Signatures) => FolderProtocol::Signatures,
            Some(Protocol::SignaturesOnline) => anyhow::bail!(
                "--protocol signatures-online trains a sequence twin: use `twindex train sequence --protocol signatures-online`"
            ),
            None => FolderProtocol::ClassHoldOut,
        };
        let run = FolderRun {
            corpus: &corpus,
            label_column: &a.folder.label_column,
            preprocess: protocol::folder_preprocess(&a.folder, a.protocol)?,
            dev_classes: a.dev_classes,
            target_far: a.target_far,
            folds: &a.folder.folds,
            aggregate: a.aggregate,
            command: &command_line(),
            signature_sources: a.folder.signatures.sources(&corpus)?,
            out: &a.out,
        };
        let r = train_image_folder(p, &run, &cfg, ens.as_ref(), &protocol::progress())?;
        if a.json {
            common::print_json(&serde_json::to_value(&r)?)?;
        }
        return Ok(());
    }
    let (dir, data) = common::load_corpus(&a.corpus)?;
    let run = IdxRun {
        corpus_name: &a.corpus,
        corpus_dir: &dir,
        holdout: a.holdout,
        command: &command_line(),
        out: &a.out,
    };
    let report = train_idx(data, &cfg, ens.as_ref(), &run, &protocol::progress())?;
    if a.json {
        common::print_json(&serde_json::to_value(&report)?)?;
    }
    Ok(())
}
