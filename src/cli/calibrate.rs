//! `twindex calibrate`: choose the duplicate threshold from labelled pairs (best F1, or the
//! threshold reaching a target precision) and store it in the index manifest.

use super::{common, index::open};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use twindex::eval;
use twindex::index::{Calibration, Index};
use twindex::query::encoder;

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// Labelled pairs, TSV `a<TAB>b<TAB>label` (label 1 = duplicate, 0 = not; a header line is
    /// skipped). `a`/`b` are item ids as `#ID`, image files, or IDX items as FILE:N.
    #[arg(long, conflicts_with = "corpus")]
    pub pairs: Option<PathBuf>,
    /// Instead of a TSV: the seed's pairs over the training split of this labelled corpus.
    #[arg(long)]
    pub corpus: Option<String>,
    /// Choose the lowest threshold whose precision reaches this (else: best F1).
    #[arg(long, conflicts_with = "target_far")]
    pub target_precision: Option<f64>,
    /// Choose the threshold whose false-accept rate (share of non-duplicates accepted) stays
    /// within this (else: best F1).
    #[arg(long)]
    pub target_far: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

/// Embed one side of a pair.
fn side(
    idx: &Index,
    model: Option<&twindex::model::ImageModel>,
    loader: &mut common::ImageLoader,
    s: &str,
) -> Result<Vec<f32>> {
    if let Some(id) = s.strip_prefix('#') {
        let id: u64 = id
            .parse()
            .with_context(|| format!("bad item reference {s:?}: expected #ID"))?;
        return Ok(idx.get(id)?.vector.to_vec());
    }
    let Some(m) = model else {
        bail!("{s:?}: this index has no encoder; refer to items as #ID");
    };
    let px = loader.load(m, s)?;
    Ok(m.embed_pixels(&px, 1, 1)?)
}

pub fn run(a: CalibrateArgs) -> Result<()> {
    let mut idx = open(&a.index)?;
    let model = encoder::load_index_encoder(&a.index, &idx.manifest().encoder)?;
    let text = encoder::load_text_encoder(&a.index, &idx.manifest().encoder)?;
    let metric = idx.metric();
    let (scores, labels, source) = if let (Some(p), Some(enc)) = (&a.pairs, &text) {
        // A text index: a pairs TSV with named columns (q1, q2, is_duplicate).
        let pairs = twindex::corpus::pairs::read_pairs_tsv(p)?;
        let sims = eval::text::pair_similarities(enc, &pairs, 32)?;
        let l = pairs.iter().map(|q| q.duplicate).collect();
        (sims, l, p.display().to_string())
    } else if let Some(p) = &a.pairs {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let (mut s, mut l) = (Vec::new(), Vec::new());
        let mut loader = common::ImageLoader::default();
        for (ln, line) in text.lines().enumerate() {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 3 {
                bail!(
                    "{}:{}: expected 3 tab-separated columns a, b, label",
                    p.display(),
                    ln + 1
                );
            }
            let y = match f[2].trim() {
                "1" => true,
                "0" => false,
                _ if ln == 0 => continue,
                other => bail!(
                    "{}:{}: label {other:?}: expected 0 or 1",
                    p.display(),
                    ln + 1
                ),
            };
            let (va, vb) = (
                side(&idx, model.as_ref(), &mut loader, f[0])?,
                side(&idx, model.as_ref(), &mut loader, f[1])?,
            );
            s.push(metric.similarity(metric.distance(&va, &vb)));
            l.push(y);
        }
        (s, l, p.display().to_string())
    } else if let Some(c) = &a.corpus {
        let Some(m) = &model else {
            bail!("--corpus needs an index with an image encoder");
        };
        let (_, data) = common::load_corpus(c)?;
        let emb = twindex::train::image::embed_set(m, &data.train)?;
        let pairs = twindex::corpus::seed_pairs(&data.train.labels, 1)?;
        let dist = twindex::train::image::pair_distances(&emb, m.config.dim, &pairs);
        let (s, l) = eval::image::pair_scores(&dist, &pairs);
        (s, l, format!("seed pairs of {c} (train split)"))
    } else {
        bail!("give labelled pairs: --pairs TSV or --corpus C");
    };
    if scores.is_empty() {
        bail!("no labelled pairs to calibrate on");
    }
    let (cal, method) = match (a.target_precision, a.target_far) {
        (Some(t), _) => (
            eval::calibrate_target_precision(&scores, &labels, t)?,
            format!("target_precision={t}"),
        ),
        (None, Some(f)) => (
            eval::calibrate_target_far(&scores, &labels, f)?,
            format!("target_far={f}"),
        ),
        (None, None) => (
            eval::calibrate_best_f1(&scores, &labels)?,
            "best_f1".to_string(),
        ),
    };
    let stored = Calibration {
        threshold: cal.threshold,
        precision: cal.precision,
        recall: cal.recall,
        f1: cal.f1,
        method: method.clone(),
        extra: json!({ "pairs": source, "n_pairs": cal.n_pairs, "n_positive": cal.n_positive, "far": cal.far, "frr": cal.frr, "accuracy": cal.accuracy }),
    };
    idx.set_calibration(Some(stored))?;
    let thr = idx.threshold_distance().unwrap_or(f32::NAN);
    eprintln!(
        "{}: {method} threshold distance <= {thr:.4}: precision {:.4}, recall {:.4}, F1 {:.4} on {} pairs",
        a.index.display(),
        cal.precision,
        cal.recall,
        cal.f1,
        cal.n_pairs
    );
    if a.json {
        common::print_json(&json!({
            "threshold": thr,
            "similarity_threshold": cal.threshold,
            "method": method,
            "precision": cal.precision,
            "recall": cal.recall,
            "f1": cal.f1,
            "far": cal.far,
            "frr": cal.frr,
            "n_pairs": cal.n_pairs,
        }))?;
    }
    Ok(())
}
