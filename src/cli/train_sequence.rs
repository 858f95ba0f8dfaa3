//! `twindex train sequence --protocol signatures-online`: train the sequence twin on pen
//! trajectories. Parse, call the library, print.

use super::common;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use twindex::eval::pen_signatures::{self, PenTrainRun};
use twindex::model::pen::{PenFeature, PenPreprocess, Resample, ALL_FEATURES};
use twindex::model::sequence::{SequenceModelConfig, SequenceNetConfig};
use twindex::train::sequence::SequenceTrainConfig;
use twindex::train::{LossKind, Miner};

/// `twindex train sequence` flags.
#[derive(Debug, Args)]
pub struct SequenceArgs {
    /// The protocol: `signatures-online` (SVC2004 Task 1 trajectories).
    #[arg(long, value_enum)]
    pub protocol: super::protocol::Protocol,
    /// Folder of U{u}S{s}.TXT files (default ../shared/corpora/signatures-svc2004-online).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Writers trained on.
    #[arg(long, default_value = "1-15")]
    pub train_writers: String,
    /// Writers held out of training: the epoch, aggregates, thresholds and fusion weights are
    /// chosen on them.
    #[arg(long, default_value = "16-20")]
    pub holdout_writers: String,
    /// Genuine samples 1..=N of each writer are the references.
    #[arg(long, default_value_t = 5)]
    pub references: usize,
    /// Twin input features (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = ALL_FEATURES.to_vec())]
    pub features: Vec<PenFeature>,
    /// Twin input: resample uniformly in time or along the path.
    #[arg(long, value_enum, default_value_t = Resample::Time)]
    pub resample: Resample,
    /// Twin input: resampled points (a multiple of --segments).
    #[arg(long, default_value_t = 120)]
    pub points: usize,
    /// Width of each time-delay layer (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = SequenceNetConfig::default().widths)]
    pub widths: Vec<usize>,
    /// Dilation of each time-delay layer (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = SequenceNetConfig::default().dilations)]
    pub dilations: Vec<usize>,
    /// Context points per time-delay layer (odd).
    #[arg(long, default_value_t = 5)]
    pub kernel: usize,
    /// Spans of the signature pooled separately.
    #[arg(long, default_value_t = 4)]
    pub segments: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Towers trained side by side from different initial weights, embeddings concatenated.
    #[arg(long, default_value_t = 1)]
    pub members: usize,
    /// Pool only the mean of each span (not mean and standard deviation).
    #[arg(long)]
    pub no_std_pooling: bool,
    /// Train on 8 pseudo-writers per writer (mirrored in x, y, written backwards).
    #[arg(long)]
    pub pseudo_writers: bool,
    /// Largest random change of the writing speed (time-warp augmentation; 0: none).
    #[arg(long, default_value_t = 0.3)]
    pub aug_time_warp: f64,
    /// `triplet` (mined) or `contrastive` (every pair with a genuine member).
    #[arg(long, value_enum, default_value_t = LossKind::Triplet)]
    pub loss: LossKind,
    #[arg(long, value_enum, default_value_t = Miner::SemiHard)]
    pub miner: Miner,
    #[arg(long, default_value_t = 0.2)]
    pub margin: f32,
    #[arg(long)]
    pub squared: bool,
    #[arg(long, default_value_t = 40)]
    pub epochs: usize,
    /// Writers per batch.
    #[arg(long, default_value_t = 8)]
    pub writers_per_batch: usize,
    /// Genuine signatures per writer in a batch.
    #[arg(long, default_value_t = 6)]
    pub genuine_per_writer: usize,
    /// Skilled forgeries per writer in a batch.
    #[arg(long, default_value_t = 4)]
    pub forgeries_per_writer: usize,
    /// Batches per epoch (0: cover the genuine signatures once).
    #[arg(long, default_value_t = 0)]
    pub steps_per_epoch: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No random affine distortion of the training trajectories.
    #[arg(long)]
    pub no_augment: bool,
    #[command(flatten)]
    pub dtw: super::pen_signatures::DtwArgs,
    /// Output encoder directory (config.json + model.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// `twindex train sequence --protocol signatures-online`.
pub fn run(a: SequenceArgs) -> Result<()> {
    if a.protocol != super::protocol::Protocol::SignaturesOnline {
        bail!("train sequence: --protocol must be signatures-online");
    }
    let pre = PenPreprocess {
        points: a.points,
        features: a.features.clone(),
        standardize: true,
        resample: a.resample,
    };
    let net = SequenceNetConfig {
        widths: a.widths.clone(),
        dilations: a.dilations.clone(),
        kernel: a.kernel,
        segments: a.segments,
        dim: a.dim,
        std_pooling: !a.no_std_pooling,
        members: a.members,
    };
    let cfg = SequenceTrainConfig {
        loss: a.loss,
        miner: a.miner,
        margin: a.margin,
        squared: a.squared,
        epochs: a.epochs,
        writers_per_batch: a.writers_per_batch,
        genuine_per_writer: a.genuine_per_writer,
        forgeries_per_writer: a.forgeries_per_writer,
        steps_per_epoch: a.steps_per_epoch,
        lr: a.lr,
        seed: a.seed,
        augment: !a.no_augment,
        aug_time_warp: a.aug_time_warp,
        pseudo_writers: a.pseudo_writers,
        ..Default::default()
    };
    let run = PenTrainRun {
        corpus: &a
            .corpus
            .clone()
            .unwrap_or_else(super::pen_signatures::default_corpus),
        train_writers: &a.train_writers,
        holdout_writers: &a.holdout_writers,
        references: a.references,
        dtw: a.dtw.scorer(),
        command: &super::protocol::command_line(),
        out: &a.out,
    };
    let on = super::protocol::progress();
    let r = pen_signatures::train_online(&run, &cfg, SequenceModelConfig::new(pre, net), &on)?;
    if a.json {
        common::print_json(&serde_json::to_value(&r)?)?;
    }
    Ok(())
}
