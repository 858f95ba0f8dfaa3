//! `twindex train image|text`.

use super::common;
use super::protocol;
/// The command line for training records (`import` uses it too).
pub use super::protocol::command_line;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use twindex::corpus::Protocol;
use twindex::eval::protocol::{train_image, Aggregate, FolderOptions, ImageRun};
use twindex::model::EnsembleBy;
use twindex::train::{EnsembleTrainConfig, ImageTrainConfig};

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
    pub folder: FolderOptions,

    /// Image folders: classes held out of training to calibrate the threshold on (and to
    /// evaluate each epoch).
    #[arg(long, default_value_t = 5)]
    pub dev_classes: usize,
    /// Image folders: calibrate at the lowest threshold with at most this false-accept rate
    /// (default: best F1).
    #[arg(long, allow_negative_numbers = true)]
    pub target_far: Option<f64>,
    /// Signatures: how a questioned signature's distances to the references are combined.
    #[arg(long, value_enum, default_value_t = Aggregate::Min)]
    pub aggregate: Aggregate,
    #[command(flatten)]
    pub cfg: ImageTrainConfig,
    /// MNIST-style corpora: hold N training images out of training (the same share of every
    /// class, a seeded draw). The threshold is then calibrated on their pairs instead of the
    /// training pairs, the per-epoch figures are theirs, and --keep-best may select on them.
    #[arg(long, default_value_t = 0)]
    pub holdout: usize,
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
        dev_score: Some(twindex::eval::protocol::all_pairs_roc_auc),
        ..a.cfg.clone()
    };
    let ens = EnsembleTrainConfig::for_members(a.ensemble, a.ensemble_by)?;
    let run = ImageRun {
        corpus: &a.corpus,
        protocol: a.protocol,
        folder: &a.folder,
        dev_classes: a.dev_classes,
        target_far: a.target_far,
        aggregate: a.aggregate,
        holdout: a.holdout,
        command: &command_line(),
        out: &a.out,
    };
    let r = train_image(&run, &cfg, ens.as_ref(), &protocol::progress())?;
    if a.json {
        common::print_json(&r)?;
    }
    Ok(())
}
