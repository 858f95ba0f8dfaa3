//! `twindex train sequence --protocol signatures-online`: train the sequence twin on pen
//! trajectories. Parse, call the library, print.

use super::common;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;
use twindex::eval::pen_signatures::{self, PenTrainRun};
use twindex::model::pen::PenPreprocess;
use twindex::model::sequence::{SequenceModelConfig, SequenceNetConfig};
use twindex::train::sequence::SequenceTrainConfig;

/// `twindex train sequence` flags.
#[derive(Debug, Args)]
pub struct SequenceArgs {
    /// The protocol: `signatures-online` (SVC2004 Task 1 trajectories).
    #[arg(long, value_enum)]
    pub protocol: twindex::corpus::Protocol,
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
    #[command(flatten)]
    pub input: PenPreprocess,
    #[command(flatten)]
    pub net: SequenceNetConfig,
    #[command(flatten)]
    pub cfg: SequenceTrainConfig,
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
    if a.protocol != twindex::corpus::Protocol::SignaturesOnline {
        bail!("train sequence: --protocol must be signatures-online");
    }
    let run = PenTrainRun {
        corpus: &a
            .corpus
            .clone()
            .unwrap_or_else(|| twindex::corpus::Protocol::SignaturesOnline.default_corpus()),
        train_writers: &a.train_writers,
        holdout_writers: &a.holdout_writers,
        references: a.references,
        dtw: a.dtw.scorer(),
        command: &super::protocol::command_line(),
        out: &a.out,
    };
    let on = super::protocol::progress();
    let r =
        pen_signatures::train_online(&run, &a.cfg, SequenceModelConfig::new(a.input, a.net), &on)?;
    if a.json {
        common::print_json(&serde_json::to_value(&r)?)?;
    }
    Ok(())
}
