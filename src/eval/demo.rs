//! `twindex demo` as a library call: the shipped MNIST encoder, an index of the 60,000
//! training digits (built once, reused while the encoder is the same), a few test digits
//! queried, and the headline figures (test-pair accuracy and ROC-AUC, precision@1 of every
//! test digit against the index, HNSW recall@10 against exact search on the flat index).

use super::metrics;
use crate::corpus::resolve;
use crate::error::{Error, Result};
use crate::index::{bench::ground_truth, Index, IndexConfig};
use crate::model::ImageModel;
use crate::query::build::{self, BuildProgress};
use crate::query::{search, QueryHit};
use crate::timing::Stopwatch;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Left in an index directory made by the demo: only such an index is ever rebuilt.
pub const DEMO_MARKER: &str = "demo-index.txt";

/// Seconds the demo spent making its index (absent when it reused one).
#[derive(Debug, Clone, Serialize)]
pub struct DemoBuild {
    pub embed_seconds: f64,
    pub build_seconds: f64,
}

/// One shown test digit and its neighbours.
#[derive(Debug, Clone, Serialize)]
pub struct DemoQuery {
    /// `t10k:N`.
    pub query: String,
    pub label: String,
    pub results: Vec<QueryHit>,
}

/// What the demo measured (the keys of `twindex demo --json`).
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub model: String,
    pub index: String,
    pub items: usize,
    pub built: Option<DemoBuild>,
    pub queries: Vec<DemoQuery>,
    /// Test-pair accuracy at the encoder's threshold (`distance <= threshold` is "same").
    pub test_pair_accuracy: f64,
    pub test_pairs: usize,
    pub roc_auc: f64,
    pub precision_at_1: f64,
    pub hnsw_recall_at_10: f64,
    pub queries_per_second: f64,
    pub seconds: f64,
    /// The encoder's distance threshold.
    #[serde(skip)]
    pub encoder_threshold: f32,
    /// The index's duplicate threshold (a distance), used in `queries`.
    #[serde(skip)]
    pub index_threshold: Option<f32>,
}

impl DemoReport {
    /// The headline figures for a person (after the query tables), on `threads` threads.
    pub fn headline(&self, threads: usize) -> String {
        format!(
            "headline (MNIST test set, {threads} threads):\n  \
             test pairs ({}): accuracy {:.4} at distance <= {:.4}, ROC-AUC {:.4}\n  \
             10,000 test digits vs the 60,000-item index: precision@1 {:.4}, {:.0} queries/s\n  \
             HNSW recall@10 against exact search (1,000 queries): {:.4}\n  \
             total {:.1} s",
            self.test_pairs,
            self.test_pair_accuracy,
            self.encoder_threshold,
            self.roc_auc,
            self.precision_at_1,
            self.queries_per_second,
            self.hnsw_recall_at_10,
            self.seconds
        )
    }
}

/// Run the demo with the encoder in `model_dir` and the index in `index_dir`, showing `show`
/// test digits (at most 10).
pub fn run_demo(
    model_dir: &Path,
    index_dir: &Path,
    show: usize,
    p: &dyn BuildProgress,
) -> Result<DemoReport> {
    let total = Stopwatch::start();
    let model = ImageModel::load(model_dir)
        .map_err(|e| Error::Msg(format!("loading encoder {}: {e}", model_dir.display())))?;
    let tr = &model.config.training;
    p.note(&format!(
        "encoder {}: {} ({}-d), trained with {} loss{} for {} epochs, threshold distance <= {:.4}",
        crate::corpus::resolve::shown(model_dir).display(),
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
    ));
    let (dir, data) = resolve::load_corpus("mnist")?;
    let hash = ImageModel::content_hash(model_dir)?;
    let existing = Index::open(index_dir).ok();
    let made_here = index_dir.join(DEMO_MARKER).exists();
    if let Some(i) = existing.as_ref().filter(|_| made_here) {
        // Items added or deleted since the demo built it: the user's work now, never rebuilt.
        if i.len() != data.train.n || i.slot_count() != data.train.n {
            return Err(Error::Msg(format!(
                "{} holds {} items ({} slots) where the demo made {}: it was changed since, so it is left alone; pass another --index",
                index_dir.display(),
                i.len(),
                i.slot_count(),
                data.train.n
            )));
        }
    }
    let reuse = existing.filter(|i| i.manifest().encoder.sha256() == Some(hash.as_str()));
    let (idx, built) = match reuse {
        Some(i) => {
            p.note(&format!(
                "reusing {} ({} items)",
                index_dir.display(),
                i.len()
            ));
            (i, None)
        }
        None => {
            if index_dir.join("manifest.json").exists() {
                if !index_dir.join(DEMO_MARKER).exists() {
                    return Err(Error::Msg(format!(
                        "{} holds an index that `twindex demo` did not make: it is left alone; pass another --index",
                        index_dir.display()
                    )));
                }
                p.note(&format!(
                    "{} was built with another encoder: rebuilding it",
                    index_dir.display()
                ));
                remove_demo_index(index_dir)?;
            }
            let sw = Stopwatch::start();
            let vectors = build::embed_images(&model, &data.train, p)?;
            let embed_s = sw.wall();
            let items = build::idx_items(&model, &dir, &data.train);
            let (i, w, c) = build::index_embedded_images(
                index_dir,
                IndexConfig::default(),
                &model,
                model_dir,
                &vectors,
                items,
                p,
            )?;
            crate::fsutil::atomic_write(
                &index_dir.join(DEMO_MARKER),
                b"made by `twindex demo`, which may rebuild this index\n",
            )?;
            p.note(&format!(
                "embedded 60,000 training digits in {embed_s:.1} s; built HNSW index {} in {w:.1} s ({c:.1} CPU-s)",
                index_dir.display()
            ));
            let b = DemoBuild {
                embed_seconds: embed_s,
                build_seconds: w,
            };
            (i, Some(b))
        }
    };

    // A few test digits, one per class, with their neighbours.
    let test_emb = model.embed_pixels(&data.test.pixels, data.test.n, 512)?;
    let dim = model.config.dim;
    let row = |q: usize| &test_emb[q * dim..(q + 1) * dim];
    let mut shown = Vec::new();
    for c in 0..show.min(10) {
        let Some(q) = data
            .test
            .labels
            .iter()
            .position(|&l| l as usize == c * 3 % 10)
        else {
            continue;
        };
        shown.push(DemoQuery {
            query: format!("t10k:{q}"),
            label: data.test.labels[q].to_string(),
            results: search(&idx, row(q), 5, None, None)?,
        });
    }

    // Headline metrics: every test digit against the index.
    let sw = Stopwatch::start();
    let found: Vec<Vec<u64>> = (0..data.test.n)
        .into_par_iter()
        .map(|q| {
            idx.search(row(q), 10, None)
                .map(|h| h.into_iter().map(|h| h.id).collect())
        })
        .collect::<Result<_>>()?;
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
    // Recall@10 of HNSW against exact search (the flat index) on 1,000 test digits.
    let nq = 1000.min(data.test.n);
    let exact = ground_truth(idx.backend(), &test_emb[..nq * dim], 10)?;
    let recall = metrics::ann_recall(&found[..nq], &exact, 10)?;
    // Test pairs at the encoder's threshold.
    let pairs = crate::corpus::seed_pairs(&data.test.labels, 2)?;
    let dist = crate::train::image::pair_distances(&test_emb, dim, &pairs);
    let (scores, labels) = super::image::pair_scores(&dist, &pairs);
    let acc = metrics::decision_accuracy(&dist, &labels, model.config.threshold);
    let auc = metrics::roc_auc(&scores, &labels)?;
    Ok(DemoReport {
        model: model_dir.display().to_string(),
        index: index_dir.display().to_string(),
        items: idx.len(),
        built,
        queries: shown,
        test_pair_accuracy: acc,
        test_pairs: pairs.len(),
        roc_auc: auc,
        precision_at_1: p1,
        hnsw_recall_at_10: recall,
        queries_per_second: data.test.n as f64 / search_s,
        seconds: total.wall(),
        encoder_threshold: model.config.threshold,
        index_threshold: idx.threshold_distance(),
    })
}

/// Remove a demo index: the files twindex writes there, then the directory if empty.
fn remove_demo_index(dir: &Path) -> Result<()> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Error::Msg(format!("reading {}: {e}", dir.display())))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = crate::index::store::is_index_file(&name)
            || ["manifest.json", "write.lock", "build.json", DEMO_MARKER].contains(&name.as_str());
        let path: PathBuf = e.path();
        if name == "encoder" && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        } else if ours {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}
