//! `twindex query`: the k nearest items of queries (texts, images, stored items, vectors) with
//! the duplicate decision, through one [`Searcher`].

use super::common;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use twindex::query::{OpenOptions, Query, SearchOptions, Searcher};

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The index directory.
    #[arg(long, required_unless_present = "milvus", conflicts_with = "milvus")]
    pub index: Option<PathBuf>,
    /// Search a Milvus collection made by `twindex index push` instead:
    /// milvus://HOST:PORT (with --collection) or milvus://HOST:PORT/COLLECTION. Queries are
    /// embedded here with the encoder the collection records; the decision uses its threshold.
    #[arg(long)]
    pub milvus: Option<String>,
    /// The Milvus collection (when --milvus does not name it).
    #[arg(long, requires = "milvus")]
    pub collection: Option<String>,
    /// Query image: PNG, PGM or JPEG file, or an IDX item as FILE:N. Repeat for many.
    #[arg(long)]
    pub image: Vec<String>,
    /// Query text (text indexes). Repeat for many.
    #[arg(long)]
    pub text: Vec<String>,
    /// Query texts, one a line (blank lines skipped), all in one process: one answer each.
    #[arg(long)]
    pub text_file: Option<PathBuf>,
    /// Query with the stored vector of item ID (the item itself comes back first).
    #[arg(long)]
    pub item: Option<u64>,
    /// Query with the stored vectors of these items (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    pub items: Vec<u64>,
    /// Neighbours to return.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub k: u64,
    /// Search breadth (default: the index's). Larger: better recall, slower.
    #[arg(long, allow_negative_numbers = true)]
    pub ef: Option<usize>,
    /// Duplicate threshold as a distance (default: the index's calibrated one).
    #[arg(long, allow_negative_numbers = true, value_parser = common::parse_threshold)]
    pub threshold: Option<f32>,
    /// Only neighbours with this label.
    #[arg(long)]
    pub label: Option<String>,
    /// Text indexes: the text model's folder, when it moved since the index was built.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// JSON: one object for one query; one JSON line per query for several.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: QueryArgs) -> Result<()> {
    let texts = match &a.text_file {
        Some(p) => twindex::corpus::text::read_lines(p)?,
        None => Vec::new(),
    };
    let mut queries: Vec<Query> = Vec::new();
    queries.extend(a.text.iter().map(|t| Query::Text(t)));
    queries.extend(texts.iter().map(|t| Query::Text(t)));
    queries.extend(a.image.iter().map(|i| Query::Image(i)));
    queries.extend(a.item.iter().chain(&a.items).map(|&id| Query::Id(id)));
    if queries.is_empty() {
        bail!("give a query: --text STR, --text-file F, --image FILE, --item ID or --items ID,...");
    }
    let oo = OpenOptions {
        writable: false,
        model: a.model.clone(),
    };
    let s = open_searcher(&a, &oo)?;
    let opts = SearchOptions {
        k: a.k as usize,
        ef: a.ef,
        threshold: a.threshold,
        label: a.label.clone(),
    };
    let many = queries.len() > 1 || a.text_file.is_some();
    let mut out = std::io::stdout().lock();
    // In chunks, so a long file streams its answers and memory stays bounded.
    for chunk in queries.chunks(256) {
        for (q, r) in chunk.iter().zip(s.replies(chunk, &opts)?) {
            let what = q.describe();
            print_reply(&mut out, a.json, many, &r.to_json(&what), &r.table(&what))?;
        }
    }
    Ok(())
}

/// One reply: its JSON (pretty for one query, a line each when `many`) or its table.
fn print_reply(
    out: &mut impl Write,
    json: bool,
    many: bool,
    j: &serde_json::Value,
    table: &str,
) -> Result<()> {
    if json && !many {
        writeln!(out, "{}", serde_json::to_string_pretty(j)?)?;
    } else if json {
        serde_json::to_writer(&mut *out, j)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{table}")?;
        if many {
            writeln!(out)?;
        }
    }
    Ok(())
}

/// A searcher over an index directory or, with `milvus`, a Milvus collection.
fn open_searcher(a: &QueryArgs, oo: &OpenOptions) -> Result<Searcher> {
    match (&a.index, &a.milvus) {
        (_, Some(uri)) => {
            let u = twindex::query::milvus::MilvusUri::parse(uri)?;
            let c = u.collection_or(a.collection.as_deref())?;
            Ok(Searcher::open_milvus(&u, &c, oo)?)
        }
        (Some(dir), None) => {
            Searcher::open(dir, oo).with_context(|| format!("opening index {}", dir.display()))
        }
        (None, None) => bail!("give --index DIR or --milvus URI"),
    }
}
