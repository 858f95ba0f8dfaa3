//! `twindex calibrate`: choose the duplicate threshold from labelled pairs (best F1, or the
//! threshold reaching a target precision) and store it in the index manifest.

use super::common;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use twindex::eval::calibrate::{calibrate_index, PairSource, Target};
use twindex::query::{OpenOptions, Searcher};

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
    #[arg(long, conflicts_with = "target_far", allow_negative_numbers = true)]
    pub target_precision: Option<f64>,
    /// Choose the threshold whose false-accept rate (share of non-duplicates accepted) stays
    /// within this (else: best F1).
    #[arg(long, allow_negative_numbers = true)]
    pub target_far: Option<f64>,
    /// Text indexes: the text model's folder, when it moved since the index was built.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CalibrateArgs) -> Result<()> {
    let opts = OpenOptions {
        writable: true,
        model: a.model.clone(),
    };
    let s = Searcher::open(&a.index, &opts)
        .with_context(|| format!("opening index {}", a.index.display()))?;
    let target = match (a.target_precision, a.target_far) {
        (Some(t), _) => Target::Precision(t),
        (None, Some(f)) => Target::Far(f),
        (None, None) => Target::BestF1,
    };
    let source = match (&a.pairs, &a.corpus) {
        (Some(p), _) => PairSource::File(p),
        (None, Some(c)) => PairSource::Corpus(c),
        (None, None) => bail!("give labelled pairs: --pairs TSV or --corpus C"),
    };
    let (cal, stored) = calibrate_index(&s, source, target)?;
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
