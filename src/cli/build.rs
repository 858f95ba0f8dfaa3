//! `twindex index build`: a new index from a corpus (with an encoder), texts, raw vectors or
//! embedding parts.

use super::common;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use twindex::corpus::text::TextColumns;
use twindex::index::{Backend, HnswParams, Index, Metric};
use twindex::query::{build_index, BuildSource};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Encoder directory (config.json + model.safetensors). Default: the shipped MNIST encoder.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Image corpus to embed: `mnist` (its 60,000 training images), a folder of IDX files, or a
    /// folder of images (labels from sub-folder names or labels.tsv): each image is enrolled
    /// under its label.
    #[arg(long, conflicts_with = "vectors")]
    pub corpus: Option<String>,
    /// Raw vectors instead of a corpus: `.npy` (float32 2-d), `.fvecs`, or an IDX images file
    /// (each image's pixels as floats 0..255).
    #[arg(long, conflicts_with = "text")]
    pub vectors: Option<PathBuf>,
    /// Texts to index, one a line (blank lines skipped; duplicates kept), or a TSV with a
    /// header when --text-column is given; encoded with the text model `--model` (a
    /// sentence-transformers folder; default ../shared/models/all-MiniLM-L6-v2).
    #[arg(long, conflicts_with = "corpus")]
    pub text: Option<PathBuf>,
    /// Embedding parts (`twindex embed` / `export` Parquet files; a quoted glob is expanded):
    /// the index takes their vectors, encoder and threshold as they are (no encoding). Their
    /// ids, in shard order, must be 0, 1, 2, ...
    #[arg(long, num_args = 1.., conflicts_with_all = ["text", "vectors", "corpus", "model"])]
    pub parts: Vec<String>,
    /// --text as a TSV: the header name of the column holding the text.
    #[arg(long, requires = "text")]
    pub text_column: Option<String>,
    /// --text as a TSV: the column whose value becomes each item's source (e.g. a question id)
    /// instead of the text itself.
    #[arg(long, requires = "text_column")]
    pub id_column: Option<String>,
    /// Output index directory (must not already hold an index).
    #[arg(long)]
    pub out: PathBuf,
    /// Distance for raw vectors (encoders fix their own): l2, cosine or dot.
    #[arg(long, default_value = "l2")]
    pub metric: String,
    /// Search engine: hnsw (twindex's own), hnsw_rs, or flat (exact).
    #[arg(long, default_value = "hnsw")]
    pub backend: String,
    #[command(flatten)]
    pub hnsw: HnswParams,
    /// Column holding the label: of labels.tsv (image folders with a labels.tsv; default
    /// `label`), or of the --text TSV (default: no label).
    #[arg(long)]
    pub label_column: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: BuildArgs) -> Result<()> {
    // Every path first: nothing is encoded for minutes before a bad --out is noticed.
    Index::check_new_dir(&a.out).context("--out")?;
    let backend: Backend = a.backend.parse()?;
    let hnsw = a.hnsw;
    hnsw.validate().context("index build")?;
    let source = if !a.parts.is_empty() {
        let mut paths = Vec::new();
        for p in &a.parts {
            paths.extend(twindex::query::parts::expand_glob(p)?);
        }
        BuildSource::Parts(paths)
    } else if let Some(path) = &a.text {
        let columns = TextColumns {
            text: a.text_column.clone(),
            id: a.id_column.clone(),
            label: a.label_column.clone(),
        };
        BuildSource::Text {
            model: a.model.clone(),
            path: path.clone(),
            columns,
        }
    } else if let Some(path) = &a.vectors {
        let metric = match a.metric.parse::<Metric>() {
            Err(twindex::Error::InvalidArgument(m)) => bail!(m),
            m => m?,
        };
        BuildSource::Vectors {
            path: path.clone(),
            metric,
        }
    } else {
        BuildSource::Images {
            model: a.model.clone(),
            corpus: a.corpus.clone().unwrap_or_else(|| "mnist".into()),
            label_column: a.label_column.clone(),
        }
    };
    let b = build_index(&a.out, &source, backend, hnsw, &common::Bars::default())?;
    eprintln!("{}", b.summary(&a.out));
    if a.json {
        common::print_json(&b.to_json(&a.out))?;
    }
    Ok(())
}
