//! Beyond one machine: `twindex export` and `twindex embed --shard I/N` (`index push` into
//! Milvus is in `push.rs`).

use super::common;
use anyhow::Result;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use twindex::corpus::text::TextColumns;
use twindex::query::parts::{self, ExportFormat, ShardSpec};
use twindex::query::BuildSource;

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The index directory to export.
    #[arg(long)]
    pub index: PathBuf,
    /// parquet (one file: id, label, text, vector; metadata in its footer and in PATH.json) or
    /// npy (PATH is the .npy file of the vectors, e.g. vectors.npy; beside it vectors.items.jsonl
    /// holds the items and vectors.twindex.json the metadata).
    #[arg(long, default_value = "parquet")]
    pub format: String,
    /// Where to write (must not exist; for npy, neither may its two sidecar files: twindex
    /// never overwrites a file).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn export(a: ExportArgs) -> Result<()> {
    let format: ExportFormat = a.format.parse()?;
    let sw = twindex::timing::Stopwatch::start();
    let e = parts::export_index(&a.index, &a.out, format)?;
    if a.json {
        let mut j = serde_json::to_value(&e)?;
        j["out"] = json!(a.out.display().to_string());
        j["format"] = json!(a.format);
        j["seconds"] = json!(sw.wall());
        return common::print_json(&j);
    }
    println!(
        "exported {} items ({} dims, {}) of {} to {} in {:.1} s",
        e.rows,
        e.dim,
        e.metric,
        a.index.display(),
        a.out.display(),
        sw.wall()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Encoder: a text model folder (sentence-transformers layout) for --text, an image encoder
    /// for --corpus. Default: ../shared/models/all-MiniLM-L6-v2 for --text.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Texts, one a line (blank lines skipped), or a TSV with --text-column; `.gz`: gzipped.
    #[arg(long, conflicts_with = "corpus")]
    pub text: Option<PathBuf>,
    /// --text as a TSV: the header name of the text column.
    #[arg(long, requires = "text")]
    pub text_column: Option<String>,
    /// --text as a TSV: a column of integer ids (default: the row number, from 0).
    #[arg(long, requires = "text_column")]
    pub id_column: Option<String>,
    /// --text as a TSV: the label column.
    #[arg(long, requires = "text_column")]
    pub label_column: Option<String>,
    /// Image corpus: `mnist`, a folder of IDX files, or a folder of images.
    #[arg(long)]
    pub corpus: Option<String>,
    /// This machine's shard: I/N (0 <= I < N) of the corpus, cut on block boundaries so the
    /// parts concatenated in shard order equal a single run's rows.
    #[arg(long, default_value = "0/1")]
    pub shard: String,
    /// The part to write (Parquet; must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// A duplicate threshold (a distance) to record in the part, e.g. one calibrated on pairs
    /// with this encoder: `index push` and `index build --parts` take it from there. (An image
    /// encoder's own calibrated threshold is recorded without it.)
    #[arg(long, value_parser = common::parse_threshold)]
    pub threshold: Option<f32>,
    #[arg(long)]
    pub json: bool,
}

pub fn embed(a: EmbedArgs) -> Result<()> {
    let shard: ShardSpec = a.shard.parse()?;
    let source = match &a.text {
        Some(path) => BuildSource::Text {
            model: a.model.clone(),
            path: path.clone(),
            columns: TextColumns {
                text: a.text_column.clone(),
                id: a.id_column.clone(),
                label: a.label_column.clone(),
            },
        },
        None => BuildSource::Images {
            model: a.model.clone(),
            corpus: a.corpus.clone().unwrap_or_else(|| "mnist".into()),
            label_column: None,
        },
    };
    let bars = common::Bars::default();
    let r = parts::embed_part(&source, shard, &a.out, a.threshold, &bars)?;
    if a.json {
        return common::print_json(&serde_json::to_value(&r)?);
    }
    println!("{}", r.summary());
    Ok(())
}
