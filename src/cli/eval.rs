//! `twindex eval`: model quality on a labelled corpus, printed, as JSON, and as pictures.

use super::common;
use super::protocol;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use twindex::corpus::Protocol;
use twindex::eval;
use twindex::eval::protocol::{Aggregate, FolderOptions};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Encoder directory. Default: the shipped MNIST encoder.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Labelled image corpus: `mnist` or a folder of IDX files (train + t10k).
    #[arg(long, default_value = "mnist")]
    pub corpus: String,
    /// Labelled text pairs (TSV with q1, q2, is_duplicate columns): evaluate a text encoder
    /// (`--model`: a sentence-transformers folder; default ../shared/models/all-MiniLM-L6-v2).
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Text pairs on which to choose the decision threshold (best F1) for `pair_accuracy`;
    /// without it the threshold is chosen on `--pairs` itself (optimistic).
    #[arg(long)]
    pub dev: Option<PathBuf>,
    /// With --pairs: duplicate retrieval instead of pair classification. Every distinct text of
    /// --pairs and --distractors is indexed; each test text with a duplicate is a query. Reports
    /// recall@1, recall@10, MRR@10, nDCG@10 for the encoder, BM25 and their RRF hybrid.
    #[arg(long, requires = "pairs")]
    pub retrieval: bool,
    /// Pair files whose texts serve as distractors in --retrieval (repeatable).
    #[arg(long)]
    pub distractors: Vec<PathBuf>,
    /// Texts per encoder batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Seed of the test pairs (the seed's pair builder).
    #[arg(long, default_value_t = 2)]
    pub pairs_seed: u64,
    /// Where to write the pictures (pairs.png, roc.svg; files of those names that twindex did
    /// not write are never replaced).
    #[arg(long, default_value = "runs/eval")]
    pub plots: PathBuf,
    /// An image-folder protocol: `orl` (needs --model with fold-0..fold-3 encoders, default the
    /// shipped corpora/encoders/orl-faces) or `signatures`. Corpus: the protocol's by default.
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// With --protocol: score raw pixels (the baseline) instead of an encoder.
    #[arg(long, requires = "protocol")]
    pub raw: bool,
    #[command(flatten)]
    pub folder: FolderOptions,
    /// Signatures: how a questioned signature's distances to the references are combined.
    #[arg(long, value_enum, default_value_t = Aggregate::Min)]
    pub aggregate: Aggregate,
    #[command(flatten)]
    pub online: super::pen_signatures::PenEvalArgs,
    /// Evaluate member I of an ensemble encoder alone (0-based), e.g. to compare it with the
    /// whole ensemble (MNIST-style corpora).
    #[arg(long, value_name = "I", conflicts_with_all = ["protocol", "pairs"])]
    pub member: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: EvalArgs) -> Result<()> {
    if a.protocol == Some(Protocol::SignaturesOnline) {
        let corpus = (a.corpus != "mnist").then_some(a.corpus.as_str());
        return super::pen_signatures::run_eval(corpus, a.model.as_deref(), &a.online, a.json);
    }
    if let Some(p) = &a.pairs {
        return run_text(&a, p);
    }
    if let Some(p) = a.protocol {
        let v = twindex::eval::protocol::evaluate_protocol(
            p,
            &a.corpus,
            a.model.as_deref(),
            a.raw,
            &a.folder,
            a.aggregate,
            &twindex::eval::pen_signatures::parse_writer_range(&a.online.test_writers)?,
            &protocol::progress(),
        )?;
        if a.json {
            common::print_json(&v)?;
        }
        return Ok(());
    }
    let model_dir = match &a.model {
        Some(m) => m.clone(),
        None => common::default_model_dir()?,
    };
    let note = |m: &str| eprintln!("{m}");
    let ev = eval::image::evaluate_encoder(
        &model_dir,
        a.member,
        &a.corpus,
        a.pairs_seed,
        &a.plots,
        &note,
    )?;
    if a.json {
        return common::print_json(&ev.to_json(&model_dir)?);
    }
    println!("{}", ev.summary(&model_dir));
    Ok(())
}

/// The default text model: all-MiniLM-L6-v2 in ../shared.
pub use twindex::corpus::resolve::default_text_model;

fn run_text(a: &EvalArgs, pairs: &Path) -> Result<()> {
    let model = match &a.model {
        Some(m) => m.clone(),
        None => default_text_model()?,
    };
    let retrieval = a.retrieval.then_some(a.distractors.as_slice());
    let note = |m: &str| eprintln!("{m}");
    let r = eval::text::evaluate_text(&model, pairs, a.dev.as_deref(), retrieval, a.batch, &note)?;
    if a.json {
        return common::print_json(&serde_json::to_value(&r)?);
    }
    println!("{r}");
    Ok(())
}
