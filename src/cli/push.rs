//! `twindex index push`: an index, or embedding parts, into a Milvus collection.

use super::common;
use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use twindex::query::milvus::{self, MilvusUri, PushOptions};
use twindex::query::parts;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Push this index directory's live items (with its threshold, M and efConstruction).
    #[arg(long, required_unless_present = "parts", conflicts_with = "parts")]
    pub index: Option<PathBuf>,
    /// Push embedding parts (`twindex embed` or `export` files; a quoted glob such as
    /// 'part-*.parquet' is expanded here). All must share one encoder.
    #[arg(long, num_args = 1..)]
    pub parts: Vec<String>,
    /// Milvus address: milvus://HOST:PORT (or HOST:PORT).
    #[arg(long)]
    pub milvus: String,
    /// The collection: created if missing; if it exists, it must be twindex's, of the same
    /// encoder, and not hold the pushed ids.
    #[arg(long)]
    pub collection: String,
    /// Duplicate threshold (a distance) to record, for parts that carry none (e.g. `embed`
    /// parts of a text model calibrated elsewhere).
    #[arg(long, value_parser = common::parse_threshold)]
    pub threshold: Option<f32>,
    /// Parts only: HNSW links per node of Milvus' index.
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    /// Parts only: HNSW efConstruction of Milvus' index.
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// Shards (DML channels) of a new collection (default: Milvus' own). More spread the inserts
    /// of a cluster over more data nodes.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=64))]
    pub shards: Option<i32>,
    /// Rows per insert call.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn push(a: PushArgs) -> Result<()> {
    let uri = MilvusUri::parse(&a.milvus)?;
    if let Some(c) = &uri.collection {
        if c != &a.collection {
            bail!(
                "--milvus names the collection {c}, --collection {}: give one",
                a.collection
            );
        }
    }
    milvus::check_collection_name(&a.collection)?;
    let input = parts::push_input(a.index.as_deref(), &a.parts, a.m, a.ef_construction)?;
    if let Some(n) = &input.note {
        eprintln!("{n}");
    }
    let (mut meta, source, mut iter) = (input.meta, input.source, input.rows);
    if let Some(t) = a.threshold {
        meta.threshold = Some(t);
    }
    let pb = common::bar(0, "pushing");
    let rep = milvus::push(
        &uri,
        &a.collection,
        &meta,
        &mut iter,
        &PushOptions {
            batch: a.batch as usize,
            shards: a.shards,
        },
        &|n| pb.set_position(n as u64),
    );
    pb.finish_and_clear();
    let rep = rep?;
    if a.json {
        let mut j = serde_json::to_value(&rep)?;
        j["milvus"] = json!(uri.endpoint);
        j["source"] = json!(source);
        j["threshold"] = json!(meta.threshold);
        j["encoder_sha256"] = json!(meta.encoder_sha256());
        return common::print_json(&j);
    }
    println!(
        "pushed {} vectors ({} dims, {}) into {} collection {} at {}: {} rows now; {:.0} vectors/s inserting, {:.0} vectors/s until indexed and loaded ({:.1} s)",
        rep.rows,
        meta.dim,
        meta.metric,
        if rep.created { "the new" } else { "the existing" },
        a.collection,
        uri.endpoint,
        rep.total_rows,
        rep.insert_vectors_per_second,
        rep.vectors_per_second,
        rep.seconds
    );
    if rep.truncated_sources > 0 {
        println!(
            "note: {} source texts were longer than Milvus' {} bytes and were cut",
            rep.truncated_sources,
            milvus::MAX_SOURCE
        );
    }
    if meta.threshold.is_none() {
        println!("note: no threshold recorded: queries will call no neighbour a duplicate (pass --threshold)");
    }
    Ok(())
}
