//! End-to-end evaluation of an image encoder on a labelled train/test corpus: the seed's test
//! pairs (pair accuracy, ROC-AUC, AP, F1) and retrieval of every test image against the train
//! images (precision@1, R-precision, MAP@R, MRR, as pytorch-metric-learning's
//! `AccuracyCalculator`), and k-means of the test embeddings (NMI, AMI).

use super::metrics;
use super::PairTile;
use crate::corpus::{seed_pairs, ImageSet, Pair, TrainTest};
use crate::error::Result;
use crate::index::{FlatIndex, Metric, VectorIndex};
use crate::model::ImageModel;
use rayon::prelude::*;
use serde::Serialize;

/// What `twindex eval --corpus` reports (keys per ../shared/CLI.md).
#[derive(Debug, Clone, Serialize)]
pub struct ImageEvalReport {
    /// Pair accuracy at the model's threshold (`distance <= threshold` means similar).
    pub pair_accuracy: f64,
    /// The model's distance threshold.
    pub threshold: f32,
    /// Pair accuracy at the seed's fixed threshold, distance <= 0.5.
    pub pair_accuracy_at_0_5: f64,
    /// Best pair accuracy over thresholds on these test pairs, and that distance threshold.
    pub best_accuracy: f64,
    pub best_accuracy_threshold: f32,
    pub roc_auc: f64,
    pub average_precision: f64,
    pub best_f1: f64,
    /// Distance threshold of the best F1.
    pub best_f1_threshold: f32,
    /// Train-pair accuracy at the model's threshold (the seed reports it beside test accuracy).
    pub train_pair_accuracy: f64,
    pub n_test_pairs: usize,
    /// Test images queried against an index of all train images: the nearest has the same label.
    pub precision_at_1: f64,
    /// Mean average precision at R (R = number of train images of the query's class).
    pub map_at_r: f64,
    /// Share of the top R neighbours of the query's class (PML's `r_precision`).
    pub r_precision: f64,
    /// Mean reciprocal rank of the nearest train image of the query's class, over the whole
    /// ranking (PML's `mean_reciprocal_rank` with k = all).
    pub mrr: f64,
    /// Normalised mutual information of k-means clusters of the test embeddings (as many as
    /// classes; deterministic, [`super::clustering`]) against their labels.
    pub nmi: f64,
    /// Adjusted mutual information of the same clusters.
    pub ami: f64,
    pub n_queries: usize,
    pub n_indexed: usize,
    /// Seed of the test pairs.
    pub pairs_seed: u64,
}

/// Scores (similarities) and labels of pairs from distances.
pub fn pair_scores(dist: &[f32], pairs: &[Pair]) -> (Vec<f32>, Vec<bool>) {
    let s = dist.iter().map(|&d| Metric::L2.similarity(d)).collect();
    let l = pairs.iter().map(|p| p.y == 1.0).collect();
    (s, l)
}

/// Relevance lists of each query's top-R neighbours among `base` (exact L2 search on the flat
/// index, ties to the lower position), with R the count of base items of the query's label;
/// returns (ranked relevance, R per query). A list without a relevant item goes on (all
/// `false`) to the rank of the query's nearest relevant item, found by a scan of `base`, and
/// ends there with `true`, so that its reciprocal rank is over the whole ranking.
pub fn ranked_relevance(
    queries: &[f32],
    q_labels: &[u32],
    base: &[f32],
    b_labels: &[u32],
    dim: usize,
) -> Result<(Vec<Vec<bool>>, Vec<usize>)> {
    let n_classes = b_labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut count = vec![0usize; n_classes.max(1)];
    for &l in b_labels {
        count[l as usize] += 1;
    }
    let nb = b_labels.len();
    let flat = FlatIndex::from_vectors(dim, Metric::L2, base)?;
    let lists: Vec<(Vec<bool>, usize)> = q_labels
        .par_iter()
        .enumerate()
        .map(|(qi, &ql)| -> Result<(Vec<bool>, usize)> {
            let q = &queries[qi * dim..(qi + 1) * dim];
            let r = count.get(ql as usize).copied().unwrap_or(0).max(1).min(nb);
            let hits = flat.search(q, r, r)?;
            let mut rel: Vec<bool> = hits.iter().map(|h| b_labels[h.id as usize] == ql).collect();
            if !rel.contains(&true) && count.get(ql as usize).is_some_and(|&c| c > 0) {
                rel = first_relevant_rank(q, ql, base, b_labels, dim);
            }
            Ok((rel, r))
        })
        .collect::<Result<_>>()?;
    Ok(lists.into_iter().unzip())
}

/// The relevance list of `q` down to its nearest base item labelled `ql`: `false` for each
/// base item strictly nearer, then `true` (a scan of every base item).
fn first_relevant_rank(
    q: &[f32],
    ql: u32,
    base: &[f32],
    b_labels: &[u32],
    dim: usize,
) -> Vec<bool> {
    let d = |j: usize| -> f32 {
        base[j * dim..(j + 1) * dim]
            .iter()
            .zip(q)
            .map(|(a, b)| (a - b) * (a - b))
            .sum()
    };
    let dist: Vec<f32> = (0..b_labels.len()).map(d).collect();
    let nearest = (0..b_labels.len())
        .filter(|&j| b_labels[j] == ql)
        .map(|j| dist[j])
        .fold(f32::INFINITY, f32::min);
    let before = dist.iter().filter(|&&x| x < nearest).count();
    let mut rel = vec![false; before];
    rel.push(true);
    rel
}

/// What [`evaluate_image_model`] returns: the report, the ROC curve points `(fpr, tpr)`, the
/// test pairs and their distances.
pub type ImageEval = (ImageEvalReport, Vec<(f64, f64)>, Vec<Pair>, Vec<f32>);

/// Evaluate `model` on `data` (test pairs built with `pairs_seed`, as in training).
pub fn evaluate_image_model(
    model: &ImageModel,
    data: &TrainTest,
    pairs_seed: u64,
) -> Result<ImageEval> {
    let dim = model.config.dim;
    let test_emb = model.embed_pixels(&data.test.pixels, data.test.n, 512)?;
    let train_emb = model.embed_pixels(&data.train.pixels, data.train.n, 512)?;
    let pairs = seed_pairs(&data.test.labels, pairs_seed)?;
    let dist = crate::train::image::pair_distances(&test_emb, dim, &pairs);
    let (scores, labels) = pair_scores(&dist, &pairs);
    let thr = model.config.threshold;
    // Decided on the distances themselves, by the one rule (`distance <= t`).
    let acc_at = |t: f32| crate::train::image::pair_accuracy(&dist, &pairs, t);
    let rep = metrics::pair_report(&scores, &labels)?;
    let (best_acc, best_acc_s) = metrics::best_accuracy(&scores, &labels)?;
    let train_pairs = seed_pairs(&data.train.labels, pairs_seed)?;
    let tdist = crate::train::image::pair_distances(&train_emb, dim, &train_pairs);
    let train_acc = crate::train::image::pair_accuracy(&tdist, &train_pairs, thr);
    let (rel, r) = ranked_relevance(
        &test_emb,
        &data.test.labels,
        &train_emb,
        &data.train.labels,
        dim,
    )?;
    let (nmi, ami) = super::clustering::cluster_scores(&test_emb, dim, &data.test.labels)?;
    let roc: Vec<(f64, f64)> = metrics::roc_curve(&scores, &labels)?
        .into_iter()
        .map(|(f, t, _)| (f, t))
        .collect();
    let report = ImageEvalReport {
        pair_accuracy: acc_at(thr),
        threshold: thr,
        pair_accuracy_at_0_5: acc_at(0.5),
        best_accuracy: best_acc,
        best_accuracy_threshold: Metric::L2.distance_for_similarity(best_acc_s),
        roc_auc: rep.roc_auc,
        average_precision: rep.average_precision,
        best_f1: rep.best_f1,
        best_f1_threshold: Metric::L2.distance_for_similarity(rep.best_f1_threshold),
        train_pair_accuracy: train_acc,
        n_test_pairs: pairs.len(),
        precision_at_1: metrics::precision_at_1(&rel, &r)?,
        map_at_r: metrics::map_at_r(&rel, &r)?,
        r_precision: metrics::r_precision(&rel, &r)?,
        mrr: metrics::mrr_at_k(&rel, &r, usize::MAX)?,
        nmi,
        ami,
        n_queries: data.test.n,
        n_indexed: data.train.n,
        pairs_seed,
    };
    Ok((report, roc, pairs, dist))
}

/// The picture of the seed's test pairs: 12 positive/negative pairs spread over the list (so
/// every class shows up), each with its distance.
pub fn pair_tiles<'a>(set: &'a ImageSet, pairs: &[Pair], dist: &[f32]) -> Vec<PairTile<'a>> {
    let step = (pairs.len() / 12).max(2) & !1;
    (0..24)
        .map(|t| (t / 2) * step + t % 2)
        .filter(|&i| i < pairs.len())
        .map(|i| PairTile {
            left: set.image(pairs[i].a),
            right: set.image(pairs[i].b),
            width: set.cols as u32,
            height: set.rows as u32,
            value: dist[i],
            is_same: pairs[i].y == 1.0,
        })
        .collect()
}

/// Write the pictures of an evaluation into `dir` (created if missing): `roc.svg` (the ROC
/// curve, named `name`) and `pairs.png` (the seed's test pairs of `test` with their
/// distances). Returns their paths.
/// The file `eval` leaves in a pictures folder it wrote into: its `roc.svg` and `pairs.png`
/// may be replaced by the next run; another file of those names is never overwritten.
const PICTURES_MARK: &str = ".twindex-eval";

/// Check that writing `roc.svg` and `pairs.png` into `dir` replaces nothing twindex did not
/// write: either they are absent, or `dir` holds the mark an earlier `eval` left.
pub fn check_pictures_dir(dir: &std::path::Path) -> Result<()> {
    if dir.join(PICTURES_MARK).exists() {
        return Ok(());
    }
    for name in ["roc.svg", "pairs.png"] {
        let p = dir.join(name);
        if p.exists() {
            return Err(crate::error::Error::InvalidArgument(format!(
                "{}: already exists and was not written by `twindex eval`; choose another \
                 --plots folder (or remove the file)",
                p.display()
            )));
        }
    }
    Ok(())
}

pub fn write_pictures(
    dir: &std::path::Path,
    name: &str,
    report: &ImageEvalReport,
    roc: &[(f64, f64)],
    test: &ImageSet,
    pairs: &[Pair],
    dist: &[f32],
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    check_pictures_dir(dir)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| crate::error::Error::Msg(format!("creating {}: {e}", dir.display())))?;
    crate::fsutil::atomic_write(
        &dir.join(PICTURES_MARK),
        b"roc.svg and pairs.png here were written by twindex eval (the next eval may replace them)\n",
    )?;
    let roc_path = dir.join("roc.svg");
    super::write_roc_svg(&roc_path, &[(name, roc, report.roc_auc)])?;
    let grid_path = dir.join("pairs.png");
    super::write_pair_grid_png(&grid_path, &pair_tiles(test, pairs, dist), 4)?;
    Ok((roc_path, grid_path))
}

/// An evaluation of an encoder directory with its pictures (what `twindex eval --corpus`
/// prints): the report, the encoder evaluated, and the paths of `roc.svg` and `pairs.png`.
pub struct EncoderEval {
    pub report: ImageEvalReport,
    pub model: ImageModel,
    pub roc_svg: std::path::PathBuf,
    pub pairs_png: std::path::PathBuf,
}

impl EncoderEval {
    /// The report of `eval --json`: the figures, the encoder's path and the pictures'.
    pub fn to_json(&self, model_dir: &std::path::Path) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(&self.report)
            .map_err(|e| crate::error::Error::Msg(format!("the report as JSON: {e}")))?;
        v["model"] = model_dir.display().to_string().into();
        v["roc_svg"] = self.roc_svg.display().to_string().into();
        v["pairs_png"] = self.pairs_png.display().to_string().into();
        Ok(v)
    }

    /// The report for a person, five lines.
    pub fn summary(&self, model_dir: &std::path::Path) -> String {
        let (r, c) = (&self.report, &self.model.config);
        format!(
            "model {} ({}, {}-d)\n\
             test pairs ({}): accuracy {:.4} at distance <= {:.4} (model threshold), {:.4} at <= 0.5\n\
             \x20 best accuracy {:.4} at <= {:.4}; ROC-AUC {:.4}; AP {:.4}; best F1 {:.4} at <= {:.4}\n\
             train pairs: accuracy {:.4} at the model threshold\n\
             retrieval ({} test queries vs {} train images): precision@1 {:.4}, MAP@R {:.4}\n\
             pictures: {} {}",
            model_dir.display(),
            c.arch_label(),
            c.dim,
            r.n_test_pairs,
            r.pair_accuracy,
            r.threshold,
            r.pair_accuracy_at_0_5,
            r.best_accuracy,
            r.best_accuracy_threshold,
            r.roc_auc,
            r.average_precision,
            r.best_f1,
            r.best_f1_threshold,
            r.train_pair_accuracy,
            r.n_queries,
            r.n_indexed,
            r.precision_at_1,
            r.map_at_r,
            self.pairs_png.display(),
            self.roc_svg.display()
        )
    }
}

/// Evaluate the encoder in `model_dir` (or its ensemble member `member` alone) on the corpus
/// named `corpus` with test pairs of `pairs_seed`, writing the pictures into `plots`; `note`
/// hears what is being done.
pub fn evaluate_encoder(
    model_dir: &std::path::Path,
    member: Option<usize>,
    corpus: &str,
    pairs_seed: u64,
    plots: &std::path::Path,
    note: &dyn Fn(&str),
) -> Result<EncoderEval> {
    use crate::error::Error;
    check_pictures_dir(plots)?;
    let mut model = ImageModel::load(model_dir)
        .map_err(|e| Error::Msg(format!("loading encoder {}: {e}", model_dir.display())))?;
    if let Some(i) = member {
        model = model
            .member(i)
            .map_err(|e| Error::Msg(format!("--member {i} of {}: {e}", model_dir.display())))?;
        note(&format!(
            "member {i} of {} alone ({}, {}-d)",
            model_dir.display(),
            model.config.arch_label(),
            model.config.dim
        ));
    }
    let (_, data) = crate::corpus::load_corpus(corpus)?;
    let sw = crate::timing::Stopwatch::start();
    let (report, roc, pairs, dist) = evaluate_image_model(&model, &data, pairs_seed)?;
    note(&format!(
        "evaluated {} in {:.1} s",
        model_dir.display(),
        sw.wall()
    ));
    let name = format!("{} ({})", model.config.arch_label(), model_dir.display());
    let (roc_svg, pairs_png) =
        write_pictures(plots, &name, &report, &roc, &data.test, &pairs, &dist)?;
    Ok(EncoderEval {
        report,
        model,
        roc_svg,
        pairs_png,
    })
}
