//! `twindex eval`: model quality on a labelled corpus, printed, as JSON, and as pictures.

use super::common;
use super::protocol::{self, FolderArgs, Protocol};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use twindex::eval::protocol::Aggregate;
use twindex::eval::{self, PairTile};
use twindex::model::ImageModel;

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
    /// Where to write the pictures (pairs.png, roc.svg).
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
    pub online: super::online::OnlineEvalArgs,
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
        return super::online::run_eval(corpus, a.model.as_deref(), &a.online, a.json);
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
            &twindex::eval::online::parse_writer_range(&a.online.test_writers)?,
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
    let mut model = ImageModel::load(&model_dir)
        .with_context(|| format!("loading encoder {}", model_dir.display()))?;
    if let Some(i) = a.member {
        model = model
            .member(i)
            .with_context(|| format!("--member {i} of {}", model_dir.display()))?;
        eprintln!(
            "member {i} of {} alone ({}, {}-d)",
            model_dir.display(),
            model.config.arch_label(),
            model.config.dim
        );
    }
    let (_, data) = common::load_corpus(&a.corpus)?;
    let sw = twindex::timing::Stopwatch::start();
    let (report, roc, pairs, dist) =
        eval::image::evaluate_image_model(&model, &data, a.pairs_seed)?;
    eprintln!("evaluated {} in {:.1} s", model_dir.display(), sw.wall());
    common::ensure_dir(&a.plots)?;
    let roc_path = a.plots.join("roc.svg");
    let name = format!("{} ({})", model.config.arch_label(), model_dir.display());
    eval::write_roc_svg(&roc_path, &[(&name, &roc, report.roc_auc)])?;
    // The seed's picture: test pairs with their predicted distances (first 24 pairs).
    let t = &data.test;
    // 12 positive/negative pairs spread over the list, so every class shows up.
    let step = (pairs.len() / 12).max(2) & !1;
    let picks: Vec<usize> = (0..24)
        .map(|t| (t / 2) * step + t % 2)
        .filter(|&i| i < pairs.len())
        .collect();
    let tiles: Vec<PairTile> = picks
        .iter()
        .map(|&i| (&pairs[i], dist[i]))
        .map(|(p, d)| PairTile {
            left: t.image(p.a),
            right: t.image(p.b),
            width: t.cols as u32,
            height: t.rows as u32,
            value: d,
            is_same: p.y == 1.0,
        })
        .collect();
    let grid_path = a.plots.join("pairs.png");
    eval::write_pair_grid_png(&grid_path, &tiles, 4)?;
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
        "test pairs ({}): accuracy {:.4} at distance < {:.4} (model threshold), {:.4} at < 0.5",
        r.n_test_pairs, r.pair_accuracy, r.threshold, r.pair_accuracy_at_0_5
    );
    println!(
        "  best accuracy {:.4} at < {:.4}; ROC-AUC {:.4}; AP {:.4}; best F1 {:.4} at < {:.4}",
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
pub fn default_text_model() -> Result<PathBuf> {
    let p = common::repo_root().join("../shared/models/all-MiniLM-L6-v2");
    if !p.join("config.json").exists() {
        anyhow::bail!("no text model given and {} is absent: pass --model DIR (a sentence-transformers folder)", p.display());
    }
    Ok(p)
}

fn run_text(a: &EvalArgs, pairs_path: &std::path::Path) -> Result<()> {
    use twindex::corpus::pairs::read_pairs_tsv;
    let model_dir = match &a.model {
        Some(m) => m.clone(),
        None => default_text_model()?,
    };
    let enc = twindex::model::TextEncoder::load(&model_dir)
        .with_context(|| format!("loading text encoder {}", model_dir.display()))?;
    let pairs = read_pairs_tsv(pairs_path)?;
    if a.retrieval {
        return run_retrieval(a, &enc, &model_dir, pairs_path, &pairs);
    }
    let sw = twindex::timing::Stopwatch::start();
    let scores = eval::text::pair_similarities(&enc, &pairs, a.batch)?;
    let (wall, cpu) = (sw.wall(), sw.cpu());
    let rep = eval::text::text_pair_report(&scores, &pairs)?;
    let (cal, source) = match &a.dev {
        Some(d) => {
            let dev = read_pairs_tsv(d)?;
            let ds = eval::text::pair_similarities(&enc, &dev, a.batch)?;
            let dl: Vec<bool> = dev.iter().map(|p| p.duplicate).collect();
            (eval::calibrate_best_f1(&ds, &dl)?, d.display().to_string())
        }
        None => {
            let l: Vec<bool> = pairs.iter().map(|p| p.duplicate).collect();
            (
                eval::calibrate_best_f1(&scores, &l)?,
                format!("{} (the evaluated pairs)", pairs_path.display()),
            )
        }
    };
    let labels: Vec<bool> = pairs.iter().map(|p| p.duplicate).collect();
    let acc = eval::accuracy_at(&scores, &labels, cal.threshold)?;
    // Each distinct text is encoded once (`pair_similarities`): the cost is per distinct text.
    let n_texts = pairs
        .iter()
        .flat_map(|p| [p.a.as_str(), p.b.as_str()])
        .collect::<std::collections::HashSet<_>>()
        .len();
    let on_test = a.dev.is_none();
    if on_test {
        eprintln!(
            "note: no --dev pairs, so pair_accuracy is measured at a threshold chosen on the evaluated pairs themselves (optimistic); pass --dev for an honest figure"
        );
    }
    let report = serde_json::json!({
        "model": model_dir.display().to_string(),
        "pairs": pairs_path.display().to_string(),
        "n_pairs": rep.n_pairs,
        "n_positive": rep.n_positive,
        "pair_accuracy": acc,
        "threshold": cal.threshold,
        "threshold_source": source,
        "threshold_chosen_on_evaluated_pairs": on_test,
        "distinct_texts": n_texts,
        "roc_auc": rep.roc_auc,
        "average_precision": rep.average_precision,
        "best_f1": rep.best_f1,
        "best_f1_threshold": rep.best_f1_threshold,
        "best_accuracy": rep.best_accuracy,
        "best_accuracy_threshold": rep.best_accuracy_threshold,
        "encode_seconds": wall,
        "encode_cpu_seconds": cpu,
        "cpu_seconds_per_1000_texts": cpu * 1000.0 / n_texts as f64,
    });
    if a.json {
        return common::print_json(&report);
    }
    println!(
        "text encoder {} on {} ({} pairs, {} duplicates), cosine similarity:",
        model_dir.display(),
        pairs_path.display(),
        rep.n_pairs,
        rep.n_positive
    );
    println!(
        "  ROC-AUC {:.4}; AP {:.4}; best F1 {:.4} at >= {:.4}; best accuracy {:.4} at >= {:.4}",
        rep.roc_auc,
        rep.average_precision,
        rep.best_f1,
        rep.best_f1_threshold,
        rep.best_accuracy,
        rep.best_accuracy_threshold
    );
    println!(
        "  accuracy {:.4} at >= {:.4} (best F1 on {source})",
        acc, cal.threshold
    );
    println!("  encoded in {wall:.1} s ({cpu:.1} CPU-s)");
    Ok(())
}

fn run_retrieval(
    a: &EvalArgs,
    enc: &twindex::model::TextEncoder,
    model_dir: &std::path::Path,
    pairs_path: &std::path::Path,
    pairs: &[twindex::corpus::pairs::TextPair],
) -> Result<()> {
    use twindex::index::lexical::{reciprocal_rank_fusion, LexicalIndex};
    let mut distractors = Vec::new();
    for d in &a.distractors {
        distractors.extend(twindex::corpus::pairs::read_pairs_tsv(d)?);
    }
    let set = eval::text::duplicate_retrieval_set(pairs, &distractors);
    eprintln!(
        "{} queries over {} distinct texts",
        set.queries.len(),
        set.corpus.len()
    );
    let texts: Vec<&str> = set.corpus.iter().map(String::as_str).collect();
    let sw = twindex::timing::Stopwatch::start();
    let emb = enc.encode(&texts, a.batch)?;
    eprintln!(
        "encoded {} texts in {:.1} s ({:.1} CPU-s)",
        texts.len(),
        sw.wall(),
        sw.cpu()
    );
    let depth = 100;
    let dense = eval::text::dense_rankings(&emb, enc.dim(), &set.queries, depth);
    let lex = LexicalIndex::build(texts.iter().enumerate().map(|(i, t)| (i as u64, *t)))?;
    let bm25: Vec<Vec<usize>> = set
        .queries
        .iter()
        .map(|&q| {
            lex.search(texts[q], depth + 1).map(|h| {
                h.into_iter()
                    .map(|(i, _)| i as usize)
                    .filter(|&i| i != q)
                    .take(depth)
                    .collect()
            })
        })
        .collect::<twindex::Result<_>>()?;
    let hybrid: Vec<Vec<usize>> = dense
        .iter()
        .zip(&bm25)
        .map(|(d, b)| {
            let l = [
                d.iter().map(|&i| i as u64).collect(),
                b.iter().map(|&i| i as u64).collect(),
            ];
            reciprocal_rank_fusion(&l, 60.0)
                .into_iter()
                .map(|i| i as usize)
                .collect()
        })
        .collect();
    let reports = [
        ("encoder", eval::text::score_rankings(&set, &dense)?),
        ("bm25", eval::text::score_rankings(&set, &bm25)?),
        ("hybrid_rrf", eval::text::score_rankings(&set, &hybrid)?),
    ];
    if a.json {
        let mut v = serde_json::json!({
            "model": model_dir.display().to_string(),
            "pairs": pairs_path.display().to_string(),
            "queries": set.queries.len(),
            "corpus": set.corpus.len(),
        });
        for (name, r) in &reports {
            v[*name] = serde_json::to_value(r)?;
        }
        return common::print_json(&v);
    }
    println!(
        "duplicate retrieval: {} queries, {} indexed texts",
        set.queries.len(),
        set.corpus.len()
    );
    println!(
        "{:<12} {:>9} {:>10} {:>7} {:>8}",
        "system", "recall@1", "recall@10", "MRR@10", "nDCG@10"
    );
    for (name, r) in &reports {
        println!(
            "{:<12} {:>9.4} {:>10.4} {:>7.4} {:>8.4}",
            name, r.recall_at_1, r.recall_at_10, r.mrr_at_10, r.ndcg_at_10
        );
    }
    Ok(())
}
