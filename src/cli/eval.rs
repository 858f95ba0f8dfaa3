//! `twindex eval`: model quality on a labelled corpus, printed, as JSON, and as pictures.

use super::common;
use super::protocol::{self, FolderArgs, Protocol};
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use twindex::corpus::pairs::read_pairs_tsv;
use twindex::eval;
use twindex::eval::protocol::Aggregate;

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
    pub folder: FolderArgs,
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
        let corpus = if a.corpus == "mnist" {
            protocol::default_protocol_corpus(p).display().to_string()
        } else {
            a.corpus.clone()
        };
        let model = match (&a.model, a.raw) {
            (_, true) => None,
            (Some(m), false) => Some(m.clone()),
            (None, false) => Some(protocol::default_protocol_model(p).context(
                "no shipped encoder for this protocol: pass --model DIR (made by `twindex train image --protocol ...`) or --raw",
            )?),
        };
        if a.model.is_none() {
            if let Some(m) = &model {
                eprintln!("encoder: {}", m.display());
            }
        }
        let sw = twindex::timing::Stopwatch::start();
        let mut v = protocol::eval_protocol(
            p,
            &corpus,
            model.as_deref(),
            a.raw,
            &a.folder,
            a.aggregate,
            &twindex::eval::pen_signatures::parse_writer_range(&a.online.test_writers)?,
        )?;
        v["seconds"] = serde_json::json!(sw.wall());
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
    let (report, model, roc_path, grid_path) = (ev.report, ev.model, ev.roc_svg, ev.pairs_png);
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["model"] = model_dir.display().to_string().into();
        v["roc_svg"] = roc_path.display().to_string().into();
        v["pairs_png"] = grid_path.display().to_string().into();
        return common::print_json(&v);
    }
    let r = &report;
    println!(
        "model {} ({}, {}-d)",
        model_dir.display(),
        model.config.arch_label(),
        model.config.dim
    );
    println!(
        "test pairs ({}): accuracy {:.4} at distance <= {:.4} (model threshold), {:.4} at <= 0.5",
        r.n_test_pairs, r.pair_accuracy, r.threshold, r.pair_accuracy_at_0_5
    );
    println!(
        "  best accuracy {:.4} at <= {:.4}; ROC-AUC {:.4}; AP {:.4}; best F1 {:.4} at <= {:.4}",
        r.best_accuracy,
        r.best_accuracy_threshold,
        r.roc_auc,
        r.average_precision,
        r.best_f1,
        r.best_f1_threshold
    );
    println!(
        "train pairs: accuracy {:.4} at the model threshold",
        r.train_pair_accuracy
    );
    println!(
        "retrieval ({} test queries vs {} train images): precision@1 {:.4}, MAP@R {:.4}",
        r.n_queries, r.n_indexed, r.precision_at_1, r.map_at_r
    );
    println!("pictures: {} {}", grid_path.display(), roc_path.display());
    Ok(())
}

/// The default text model: all-MiniLM-L6-v2 in ../shared.
pub use twindex::corpus::resolve::default_text_model;

fn run_text(a: &EvalArgs, pairs_path: &Path) -> Result<()> {
    let model_dir = match &a.model {
        Some(m) => m.clone(),
        None => default_text_model()?,
    };
    let enc = twindex::model::TextEncoder::load(&model_dir)
        .with_context(|| format!("loading text encoder {}", model_dir.display()))?;
    let pairs = read_pairs_tsv(pairs_path)?;
    if a.retrieval {
        let mut distractors = Vec::new();
        for d in &a.distractors {
            distractors.extend(read_pairs_tsv(d)?);
        }
        let note = |m: &str| eprintln!("{m}");
        let c = eval::text::compare_retrieval(
            &enc,
            &model_dir,
            pairs_path,
            &pairs,
            &distractors,
            a.batch,
            &note,
        )?;
        if a.json {
            return common::print_json(&serde_json::to_value(&c)?);
        }
        println!(
            "duplicate retrieval: {} queries, {} indexed texts",
            c.queries, c.corpus
        );
        println!(
            "{:<12} {:>9} {:>10} {:>7} {:>8}",
            "system", "recall@1", "recall@10", "MRR@10", "nDCG@10"
        );
        for (name, r) in [
            ("encoder", &c.encoder),
            ("bm25", &c.bm25),
            ("hybrid_rrf", &c.hybrid_rrf),
        ] {
            println!(
                "{:<12} {:>9.4} {:>10.4} {:>7.4} {:>8.4}",
                name, r.recall_at_1, r.recall_at_10, r.mrr_at_10, r.ndcg_at_10
            );
        }
        return Ok(());
    }
    let r = eval::text::evaluate_text_pairs(
        &enc,
        &model_dir,
        pairs_path,
        &pairs,
        a.dev.as_deref(),
        a.batch,
    )?;
    if r.threshold_chosen_on_evaluated_pairs {
        eprintln!(
            "note: no --dev pairs, so pair_accuracy is measured at a threshold chosen on the evaluated pairs themselves (optimistic); pass --dev for an honest figure"
        );
    }
    if a.json {
        return common::print_json(&serde_json::to_value(&r)?);
    }
    println!(
        "text encoder {} on {} ({} pairs, {} duplicates), cosine similarity:",
        r.model, r.pairs, r.n_pairs, r.n_positive
    );
    println!(
        "  ROC-AUC {:.4}; AP {:.4}; best F1 {:.4} at >= {:.4}; best accuracy {:.4} at >= {:.4}",
        r.roc_auc,
        r.average_precision,
        r.best_f1,
        r.best_f1_threshold,
        r.best_accuracy,
        r.best_accuracy_threshold
    );
    println!(
        "  accuracy {:.4} at >= {:.4} (best F1 on {})",
        r.pair_accuracy, r.threshold, r.threshold_source
    );
    println!(
        "  encoded in {:.1} s ({:.1} CPU-s)",
        r.encode_seconds, r.encode_cpu_seconds
    );
    Ok(())
}
