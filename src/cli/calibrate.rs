//! `twindex calibrate`: choose the duplicate threshold from labelled pairs (best F1, or the
//! threshold reaching a target precision) and store it in the index manifest.

use super::common;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use twindex::eval::{self, calibrate::Target};
use twindex::index::Calibration;
use twindex::query::{Encoder, OpenOptions, Query, Searcher};

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
    /// Text indexes: the text model's folder, when it moved since the index was built.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Pairs of an image or vector index: `a<TAB>b<TAB>label`, a header line skipped.
fn read_plain_pairs(p: &Path) -> Result<Vec<(String, String, bool)>> {
    let text = twindex::corpus::text::read_utf8(p)?;
    let mut out = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
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
        out.push((f[0].to_string(), f[1].to_string(), y));
    }
    Ok(out)
}

/// One side of a pair: `#ID` is a stored item on every kind of index; otherwise a text (text
/// indexes) or an image file / IDX item `FILE:N` (image indexes).
fn side<'a>(s: &'a str, text_index: bool) -> Result<Query<'a>> {
    if let Some(id) = s.trim().strip_prefix('#') {
        let id: u64 = id
            .parse()
            .with_context(|| format!("bad item reference {s:?}: expected #ID"))?;
        return Ok(Query::Id(id));
    }
    Ok(if text_index {
        Query::Text(s)
    } else {
        Query::Image(s)
    })
}

pub fn run(a: CalibrateArgs) -> Result<()> {
    let opts = OpenOptions {
        writable: true,
        model: a.model.clone(),
    };
    let s = Searcher::open(&a.index, &opts)
        .with_context(|| format!("opening index {}", a.index.display()))?;
    let text_index = matches!(s.encoder(), Encoder::Text(_));
    let target = match (a.target_precision, a.target_far) {
        (Some(t), _) => Target::Precision(t),
        (None, Some(f)) => Target::Far(f),
        (None, None) => Target::BestF1,
    };
    let (cal, stored) = if let Some(p) = &a.pairs {
        let owned: Vec<(String, String, bool)> = if text_index {
            // A text index: a pairs TSV with named columns (q1, q2, is_duplicate).
            twindex::corpus::pairs::read_pairs_tsv(p)?
                .into_iter()
                .map(|q| (q.a, q.b, q.duplicate))
                .collect()
        } else {
            read_plain_pairs(p)?
        };
        let mut pairs = Vec::with_capacity(owned.len());
        for (x, y, _) in &owned {
            pairs.push((side(x, text_index)?, side(y, text_index)?));
        }
        let labels: Vec<bool> = owned.iter().map(|t| t.2).collect();
        if labels.is_empty() {
            bail!("{}: no labelled pairs to calibrate on", p.display());
        }
        eval::calibrate::calibrate_searcher(&s, &pairs, &labels, target, &p.display().to_string())?
    } else if let Some(c) = &a.corpus {
        let Encoder::Image(m) = s.encoder() else {
            bail!("--corpus needs an index with an image encoder");
        };
        let (_, data) = common::load_corpus(c)?;
        let emb = twindex::train::image::embed_set(m, &data.train)?;
        let pairs = twindex::corpus::seed_pairs(&data.train.labels, 1)?;
        let dist = twindex::train::image::pair_distances(&emb, m.config.dim, &pairs);
        let (scores, labels) = eval::image::pair_scores(&dist, &pairs);
        let cal = target.calibrate(&scores, &labels)?;
        let stored = Calibration {
            threshold: cal.threshold,
            precision: cal.precision,
            recall: cal.recall,
            f1: cal.f1,
            method: target.describe(),
            extra: json!({ "pairs": format!("seed pairs of {c} (train split)"), "n_pairs": cal.n_pairs, "n_positive": cal.n_positive, "far": cal.far, "frr": cal.frr, "accuracy": cal.accuracy }),
        };
        s.set_calibration(Some(stored.clone()))?;
        (cal, stored)
    } else {
        bail!("give labelled pairs: --pairs TSV or --corpus C");
    };
    let method = stored.method.clone();
    let thr = s.threshold().unwrap_or(f32::NAN);
    s.close()?;
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
