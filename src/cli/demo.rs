//! `twindex demo`: the main job on the shipped default. Loads the shipped MNIST encoder, builds
//! (or reopens) an HNSW index of the 60,000 training digits under `index/mnist-demo`, queries a
//! few test digits, and prints neighbours, duplicate decisions and headline metrics.

use super::{common, query::print_table};
use anyhow::{Context, Result};
use clap::Args;
use rayon::prelude::*;
use serde_json::json;
use std::path::PathBuf;
use twindex::eval::metrics;
use twindex::index::{FlatIndex, Index, IndexConfig, Item, Metric, VectorIndex};
use twindex::model::ImageModel;
use twindex::query::{encoder, search};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Encoder directory (default: the shipped `corpora/encoders/mnist-cnn`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the demo index lives (rebuilt when missing or built with another encoder).
    #[arg(long, default_value = "index/mnist-demo")]
    pub index: PathBuf,
    /// Test digits to show.
    #[arg(long, default_value_t = 4)]
    pub show: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: DemoArgs) -> Result<()> {
    let total = twindex::timing::Stopwatch::start();
    let model_dir = match &a.model {
        Some(m) => m.clone(),
        None => common::default_model_dir()?,
    };
    let model = ImageModel::load(&model_dir)
        .with_context(|| format!("loading encoder {}", model_dir.display()))?;
    let tr = &model.config.training;
    eprintln!(
        "encoder {}: {} ({}-d), trained with {} loss{} for {} epochs, threshold distance < {:.4}",
        model_dir.display(),
        model.config.arch_label(),
        model.config.dim,
        tr.loss,
        if tr.miner != "none" {
            format!(" ({} mining)", tr.miner)
        } else {
            String::new()
        },
        tr.epochs,
        model.config.threshold
    );
    let (dir, data) = common::load_corpus("mnist")?;
    let hash = ImageModel::content_hash(&model_dir)?;
    let reuse = Index::open(&a.index).ok().filter(|i| {
        i.manifest().encoder.get("sha256").and_then(|v| v.as_str()) == Some(hash.as_str())
            && i.len() == data.train.n
    });
    let (idx, built) = match reuse {
        Some(i) => {
            eprintln!("reusing {} ({} items)", a.index.display(), i.len());
            (i, None)
        }
        None => {
            if a.index.join("manifest.json").exists() {
                // Only an index this command made (it leaves a marker) is ever replaced.
                if !a.index.join(DEMO_MARKER).exists() {
                    anyhow::bail!(
                        "{} holds an index that `twindex demo` did not make: it is left alone; pass another --index",
                        a.index.display()
                    );
                }
                eprintln!(
                    "{} was built with another encoder: rebuilding it",
                    a.index.display()
                );
                remove_demo_index(&a.index)?;
            }
            let sw = twindex::timing::Stopwatch::start();
            let vectors = common::embed_with_bar(&model, &data.train)?;
            let embed_s = sw.wall();
            let src = common::images_file(&dir);
            let items = (0..data.train.n)
                .map(|i| Item {
                    label: common::class_name(&model, data.train.labels[i]),
                    source: format!("{}:{i}", src.display()),
                    payload: None,
                })
                .collect();
            let (mut i, w, c) = super::index::create_index(
                &a.index,
                IndexConfig::default(),
                model.config.dim,
                &vectors,
                items,
                |out| encoder::embed_image_encoder(&model, &model_dir, out),
            )?;
            i.set_calibration(Some(common::model_calibration(&model)))?;
            twindex::fsutil::atomic_write(
                &a.index.join(DEMO_MARKER),
                b"made by `twindex demo`, which may rebuild this index\n",
            )?;
            eprintln!(
                "embedded 60,000 training digits in {embed_s:.1} s; built HNSW index {} in {w:.1} s ({c:.1} CPU-s)",
                a.index.display()
            );
            (i, Some((embed_s, w)))
        }
    };
    let thr = idx.threshold_distance();

    // A few test digits, one per class, with their neighbours.
    let test_emb = model.embed_pixels(&data.test.pixels, data.test.n, 512)?;
    let dim = model.config.dim;
    let mut shown = Vec::new();
    for c in 0..a.show.min(10) {
        let Some(q) = data
            .test
            .labels
            .iter()
            .position(|&l| l as usize == c * 3 % 10)
        else {
            continue;
        };
        let hits = search(&idx, &test_emb[q * dim..(q + 1) * dim], 5, None, None)?;
        if !a.json {
            print_table(
                &mut std::io::stdout().lock(),
                &format!("t10k:{q} (a {})", data.test.labels[q]),
                thr,
                &hits,
            )?;
            println!();
        }
        shown.push(json!({ "query": format!("t10k:{q}"), "label": data.test.labels[q].to_string(), "results": hits }));
    }

    // Headline metrics: every test digit against the index.
    let sw = twindex::timing::Stopwatch::start();
    let found: Vec<Vec<u64>> = (0..data.test.n)
        .into_par_iter()
        .map(|q| {
            idx.search(&test_emb[q * dim..(q + 1) * dim], 10, None)
                .map(|h| h.into_iter().map(|h| h.id).collect())
        })
        .collect::<twindex::Result<_>>()?;
    let search_s = sw.wall();
    let p1 = found
        .iter()
        .enumerate()
        .filter(|(q, f)| {
            f.first().is_some_and(|&id| {
                idx.get(id)
                    .map(|v| v.item.label == data.test.labels[*q].to_string())
                    .unwrap_or(false)
            })
        })
        .count() as f64
        / data.test.n as f64;
    // Recall@10 of HNSW against exact search on 1,000 test digits.
    let mut flat = FlatIndex::new(dim, Metric::L2)?;
    let mut stored = Vec::with_capacity(idx.len() * dim);
    for id in 0..idx.len() as u64 {
        stored.extend_from_slice(idx.get(id)?.vector);
    }
    flat.add(&stored, &|_| {})?;
    let nq = 1000.min(data.test.n);
    let exact: Vec<Vec<u64>> = (0..nq)
        .into_par_iter()
        .map(|q| {
            flat.search(&test_emb[q * dim..(q + 1) * dim], 10, 10)
                .map(|h| h.into_iter().map(|h| h.id).collect())
        })
        .collect::<twindex::Result<_>>()?;
    let recall = metrics::ann_recall(&found[..nq], &exact, 10)?;
    // Test pairs at the encoder's threshold.
    let pairs = twindex::corpus::seed_pairs(&data.test.labels, 2)?;
    let dist = twindex::train::image::pair_distances(&test_emb, dim, &pairs);
    let (scores, labels) = twindex::eval::image::pair_scores(&dist, &pairs);
    let acc = twindex::train::image::pair_accuracy(&dist, &pairs, model.config.threshold);
    let auc = metrics::roc_auc(&scores, &labels)?;
    let report = json!({
        "model": model_dir.display().to_string(),
        "index": a.index.display().to_string(),
        "items": idx.len(),
        "built": built.map(|(e, b)| json!({"embed_seconds": e, "build_seconds": b})),
        "queries": shown,
        "test_pair_accuracy": acc,
        "test_pairs": pairs.len(),
        "roc_auc": auc,
        "precision_at_1": p1,
        "hnsw_recall_at_10": recall,
        "queries_per_second": data.test.n as f64 / search_s,
        "seconds": total.wall(),
    });
    if a.json {
        return common::print_json(&report);
    }
    println!(
        "headline (MNIST test set, {} threads):",
        rayon::current_num_threads()
    );
    println!(
        "  test pairs ({}): accuracy {acc:.4} at distance < {:.4}, ROC-AUC {auc:.4}",
        pairs.len(),
        model.config.threshold
    );
    println!(
        "  10,000 test digits vs the 60,000-item index: precision@1 {p1:.4}, {:.0} queries/s",
        data.test.n as f64 / search_s
    );
    println!("  HNSW recall@10 against exact search (1,000 queries): {recall:.4}");
    println!("  total {:.1} s", total.wall());
    Ok(())
}

/// Left in an index directory made by `twindex demo`: only such an index is ever rebuilt.
const DEMO_MARKER: &str = "demo-index.txt";

/// Remove a demo index: the files twindex writes there, then the directory if empty.
fn remove_demo_index(dir: &std::path::Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = twindex::index::store::is_index_file(&name)
            || ["manifest.json", "write.lock", "build.json", DEMO_MARKER].contains(&name.as_str());
        if name == "encoder" && e.path().is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else if ours {
            std::fs::remove_file(e.path())?;
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}
