//! `twindex train text`: fine-tune a sentence-transformers model on labelled pairs.

use super::common;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use twindex::eval;
use twindex::train::{fine_tune_text, TextLoss, TextTrainConfig, TextTrainRun};

#[derive(Debug, Args)]
pub struct TextArgs {
    /// Training pairs: TSV with a header naming q1/question1, q2/question2 and
    /// is_duplicate/label columns.
    #[arg(long)]
    pub pairs: PathBuf,
    /// Dev pairs (same format): average precision after each epoch; the best epoch is kept.
    #[arg(long)]
    pub dev: Option<PathBuf>,
    /// Base model: a sentence-transformers folder (config.json, model.safetensors,
    /// tokenizer.json, ...). Default ../shared/models/all-MiniLM-L6-v2.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Loss (sentence-transformers' definitions): contrastive (cosine distance, margin 0.5),
    /// online-contrastive (hard pairs of the batch only), mnrl (duplicate pairs, in-batch
    /// negatives, scale 20), batch-hard (triplets within duplicate groups, margin 5).
    #[arg(long, value_enum, default_value_t = TextLoss::Mnrl)]
    pub loss: TextLoss,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Pairs per step (texts per step for batch-hard: even, >= 4).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak AdamW learning rate.
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    /// Share of the steps with a linear warm-up from 0 (then linear decay to 0).
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// AdamW weight decay (not on biases and LayerNorm weights).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Clip the gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Margin (default: 0.5 for contrastive and online-contrastive, 5 for batch-hard).
    #[arg(long)]
    pub margin: Option<f64>,
    /// MNRL similarity scale.
    #[arg(long, default_value_t = 20.0)]
    pub scale: f64,
    /// Seed of the batch order and of dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Train without dropout (sentence-transformers trains with config.json's, 0.1).
    #[arg(long)]
    pub no_dropout: bool,
    /// Train on only the first N pairs of --pairs (timing runs).
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Output folder (sentence-transformers layout; replaced atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: TextArgs) -> Result<()> {
    let base = match &a.base {
        Some(b) => b.clone(),
        None => super::eval::default_text_model()?,
    };
    let cfg = TextTrainConfig {
        loss: a.loss,
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        warmup_ratio: a.warmup_ratio,
        weight_decay: a.weight_decay,
        max_grad_norm: a.max_grad_norm,
        margin: a.margin,
        scale: a.scale,
        seed: a.seed,
        dropout: !a.no_dropout,
        max_train: a.max_train,
    };
    let run = TextTrainRun {
        base: &base,
        pairs: &a.pairs,
        dev: a.dev.as_deref(),
        out: &a.out,
    };
    let dev_ap = |enc: &twindex::model::TextEncoder,
                  dev: &[twindex::corpus::pairs::TextPair]|
     -> twindex::Result<f64> {
        let s = eval::text::pair_similarities(enc, dev, 32)?;
        Ok(eval::text::text_pair_report(&s, dev)?.average_precision)
    };
    let on = super::protocol::progress();
    let report = fine_tune_text(&run, &cfg, dev_ap, &on)?;
    if a.json {
        common::print_json(&serde_json::to_value(&report)?)?;
    }
    Ok(())
}
