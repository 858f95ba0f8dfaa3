//! `twindex train text`: fine-tune a sentence-transformers model on labelled pairs.

use super::common;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use twindex::eval;
use twindex::train::{fine_tune_text, TextTrainConfig, TextTrainRun};

#[derive(Debug, Args)]
pub struct TextArgs {
    /// Training pairs: TSV with a header naming q1/question1, q2/question2 and
    /// is_duplicate/label columns, or anchor, positive, negative_1... (`mine-negatives`).
    #[arg(long)]
    pub pairs: PathBuf,
    /// Dev pairs (same format): average precision after each epoch; the best epoch is kept.
    #[arg(long)]
    pub dev: Option<PathBuf>,
    /// Base model: a sentence-transformers folder (config.json, model.safetensors,
    /// tokenizer.json, ...). Default ../shared/models/all-MiniLM-L6-v2.
    #[arg(long)]
    pub base: Option<PathBuf>,
    #[command(flatten)]
    pub cfg: TextTrainConfig,
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
    let run = TextTrainRun {
        base: &base,
        pairs: &a.pairs,
        dev: a.dev.as_deref(),
        out: &a.out,
    };
    let on = super::protocol::progress();
    let report = fine_tune_text(&run, &a.cfg, eval::text::dev_average_precision, &on)?;
    if a.json {
        common::print_json(&serde_json::to_value(&report)?)?;
    }
    Ok(())
}
