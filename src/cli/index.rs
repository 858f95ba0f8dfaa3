//! `twindex index add|delete|compact|checkpoint|stats|verify`; `build`, `push`: own files.

use super::common;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use twindex::index::Index;
use twindex::query::add::{add_to_index, id_ranges, Additions};
use twindex::query::maintain;

#[derive(Debug, Subcommand)]
pub enum IndexCmd {
    /// Build a new index from a corpus (with an encoder) or from raw vectors.
    Build(super::build::BuildArgs),
    /// Add items to an existing index, encoded with its own encoder (no rebuild).
    Add(AddArgs),
    /// Delete items by id (tombstones; `compact` reclaims the space).
    Delete(DeleteArgs),
    /// Rebuild the index without its deleted items.
    Compact(CompactArgs),
    /// Write the write-ahead log into the index's data files and retire it.
    Checkpoint(CompactArgs),
    /// Items, dimension, metric, encoder, threshold, log size.
    Stats(CompactArgs),
    /// Read every file of the index whole (checksums, items, graph links, vectors).
    Verify(CompactArgs),
    /// Put an index, or embedding parts, into a Milvus collection (HNSW, the index's metric,
    /// the encoder and threshold in its description).
    Push(super::push::PushArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// Label given to every added item (e.g. a person's name).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Image files (PNG, PGM, JPEG) or IDX items as FILE:N (image indexes).
    pub items: Vec<String>,
    /// A text to add (text indexes). Repeat for many.
    #[arg(long)]
    pub text: Vec<String>,
    /// Texts to add, one a line (text indexes).
    #[arg(long)]
    pub text_file: Option<PathBuf>,
    /// Raw vectors to add (`.npy` float32 2-d or `.fvecs`) of the index's dimension.
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// Text indexes: the text model's folder, when it moved since the index was built.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[arg(long)]
    pub index: PathBuf,
    #[arg(required = true)]
    pub ids: Vec<u64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    #[arg(long)]
    pub index: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: IndexCmd) -> Result<()> {
    match cmd {
        IndexCmd::Build(a) => super::build::run(a),
        IndexCmd::Push(a) => super::push::push(a),
        IndexCmd::Add(a) => add(a),
        IndexCmd::Delete(a) => {
            let n = maintain::delete(&a.index, &a.ids)?;
            let (k, dir) = (a.ids.len(), a.index.display());
            eprintln!("deleted {k} item(s); {n} remain in {dir}");
            json_if(a.json, &json!({ "deleted": a.ids, "items": n }))
        }
        IndexCmd::Compact(a) => {
            let r = maintain::compact(&a.index, &common::Bars::default())?;
            let (dir, n, k) = (a.index.display(), r.items, r.reclaimed);
            eprintln!("compacted {dir}: {n} items ({k} deleted slots reclaimed)");
            json_if(a.json, &r)
        }
        IndexCmd::Checkpoint(a) => {
            let r = maintain::checkpoint(&a.index)?;
            let (dir, n, b, g) = (a.index.display(), r.records, r.log_bytes, r.generation);
            eprintln!("checkpointed {dir}: {n} logged write(s) ({b} bytes) now in generation {g}");
            json_if(a.json, &r)
        }
        IndexCmd::Verify(a) => {
            let r = maintain::verify(&a.index)?;
            eprintln!("verified {}: {}", a.index.display(), r.summary());
            json_if(a.json, &r)
        }
        IndexCmd::Stats(a) => {
            let s = twindex::query::Searcher::open(&a.index, &Default::default())
                .with_context(|| format!("opening index {}", a.index.display()))?;
            let st = s.stats();
            let labels = s.labels()?.len();
            if a.json {
                let mut j = serde_json::to_value(&st)?;
                j["labels"] = json!(labels);
                return common::print_json(&j);
            }
            println!("{}", st.summary(labels));
            Ok(())
        }
    }
}

/// Open an index with the path in the error.
pub fn open(dir: &Path) -> Result<Index> {
    Index::open(dir).with_context(|| format!("opening index {}", dir.display()))
}

/// Print `r` as JSON when asked.
fn json_if(json: bool, r: &impl serde::Serialize) -> Result<()> {
    if json {
        common::print_json(&serde_json::to_value(r)?)?;
    }
    Ok(())
}

fn add(a: AddArgs) -> Result<()> {
    let lines = match &a.text_file {
        Some(p) => twindex::corpus::text::read_lines(p)?,
        None => Vec::new(),
    };
    let what = Additions::new(
        a.text.iter().chain(&lines).map(String::as_str).collect(),
        a.items.iter().map(String::as_str).collect(),
        a.vectors.as_deref(),
        a.label.clone(),
    )?;
    let r = add_to_index(&a.index, a.model.as_deref(), &what)
        .with_context(|| format!("adding to index {}", a.index.display()))?;
    let (ids, n) = (r.ids, r.items);
    eprintln!(
        "added {} item(s) to {} (ids {}); {} items now",
        ids.len(),
        a.index.display(),
        id_ranges(&ids),
        n
    );
    if a.json {
        common::print_json(&json!({ "ids": ids, "items": n }))?;
    }
    Ok(())
}
