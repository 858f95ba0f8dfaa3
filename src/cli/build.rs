//! `twindex index build`: a new index from a corpus (with an encoder), texts, raw vectors or
//! embedding parts.

use super::common;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use twindex::corpus::text::TextColumns;
use twindex::index::{Backend, HnswParams, Index, Metric, Quantize};
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
    /// HNSW links per node. Larger: better recall, more memory, slower build.
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    /// HNSW candidate list while building. Larger: better graph, slower build.
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// Default search breadth for queries. Larger: better recall, slower queries.
    #[arg(long, default_value_t = 64)]
    pub ef_search: usize,
    /// Seed for the HNSW level draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What the HNSW walk scores: none (f32 vectors) or sq8 (one byte a dimension, the best
    /// --rerank candidates re-scored on the f32 vectors, which stay on disk, memory-mapped).
    #[arg(long, default_value = "none")]
    pub quantize: String,
    /// Quantized indexes: candidates re-scored exactly per query. Larger: better recall,
    /// slower queries.
    #[arg(long, default_value_t = twindex::index::DEFAULT_RERANK)]
    pub rerank: usize,
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
    let hnsw = HnswParams {
        m: a.m,
        ef_construction: a.ef_construction,
        ef_search: a.ef_search,
        seed: a.seed,
        quantize: a
            .quantize
            .parse::<Quantize>()
            .map_err(|e| anyhow::anyhow!("--quantize: {e}"))?,
        rerank: a.rerank,
    };
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
    let (idx, r) = (&b.index, &b.record);
    eprintln!(
        "built {} ({} items, dim {}, {}) in {:.1} s ({:.1} CPU-s), {:.1} MB on disk",
        a.out.display(),
        idx.len(),
        idx.dim(),
        idx.manifest().backend.name(),
        r.build_seconds,
        r.build_cpu_seconds,
        b.bytes as f64 / 1e6
    );
    if a.json {
        common::print_json(&json!({
            "index": a.out.display().to_string(),
            "items": idx.len(),
            "dim": idx.dim(),
            "metric": idx.metric().name(),
            "backend": idx.manifest().backend.name(),
            "build_seconds": r.build_seconds,
            "build_cpu_seconds": r.build_cpu_seconds,
            "graph_seconds": r.graph_seconds,
            "graph_cpu_seconds": r.graph_cpu_seconds,
            "index_bytes": b.bytes,
        }))?;
    }
    Ok(())
}
