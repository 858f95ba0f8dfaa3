//! `twindex query`: the k nearest items of an image (or a stored item) with the duplicate
//! decision.

use super::{common, index::open};
use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use twindex::query::{encoder, search, QueryHit};

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// Query image: PNG, PGM or JPEG file, or an IDX item as FILE:N.
    #[arg(long, conflicts_with = "item")]
    pub image: Option<String>,
    /// Query text (text indexes).
    #[arg(long, conflicts_with_all = ["image", "item"])]
    pub text: Option<String>,
    /// Query with the stored vector of item ID (the item itself comes back first).
    #[arg(long)]
    pub item: Option<u64>,
    /// Neighbours to return.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Search breadth (default: the index's). Larger: better recall, slower.
    #[arg(long)]
    pub ef: Option<usize>,
    /// Duplicate threshold as a distance (default: the index's calibrated one).
    #[arg(long)]
    pub threshold: Option<f32>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: QueryArgs) -> Result<()> {
    let idx = open(&a.index)?;
    let (what, vector) = if let Some(id) = a.item {
        (format!("item {id}"), idx.get(id)?.vector.to_vec())
    } else if let Some(img) = &a.image {
        let model =
            encoder::load_index_encoder(&a.index, &idx.manifest().encoder)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} is an index of raw vectors: query it with --item ID",
                    a.index.display()
                )
            })?;
        let px = common::load_query_image(&model, img)?;
        (img.clone(), model.embed_pixels(&px, 1, 1)?)
    } else if let Some(t) = &a.text {
        let enc =
            encoder::load_text_encoder(&a.index, &idx.manifest().encoder)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} is not a text index: use --image or --item",
                    a.index.display()
                )
            })?;
        (t.clone(), enc.encode(&[t.as_str()], 1)?)
    } else {
        bail!("give a query: --image FILE, --item ID or --text STR");
    };
    let thr = a.threshold.or_else(|| idx.threshold_distance());
    let hits = search(&idx, &vector, a.k, a.ef, a.threshold)?;
    // Labelled indexes (people, signers, classes) also answer "who is it": the nearest
    // item's label when within the threshold, else "unknown".
    let labelled = hits.iter().any(|h| !h.label.is_empty());
    let identity = labelled.then(|| twindex::query::identify(&hits));
    if a.json {
        let mut j = json!({
            "query": what,
            "threshold": thr,
            "results": hits,
        });
        if let Some(id) = &identity {
            j["identity"] = json!(id);
        }
        return common::print_json(&j);
    }
    print_table(&what, thr, &hits);
    if let Some(id) = identity {
        println!("identity: {id}");
    }
    Ok(())
}

/// A readable table of hits.
pub fn print_table(what: &str, thr: Option<f32>, hits: &[QueryHit]) {
    match thr {
        Some(t) => println!(
            "query {what}: {} neighbours (duplicate if distance <= {t:.4})",
            hits.len()
        ),
        None => println!(
            "query {what}: {} neighbours (no threshold calibrated)",
            hits.len()
        ),
    }
    println!(
        "{:>4}  {:>8}  {:<8}  {:>9}  {:>10}  {:<9}  source",
        "rank", "id", "label", "distance", "similarity", "duplicate"
    );
    for (r, h) in hits.iter().enumerate() {
        println!(
            "{:>4}  {:>8}  {:<8}  {:>9.4}  {:>10.4}  {:<9}  {}",
            r + 1,
            h.id,
            h.label,
            h.distance,
            h.similarity,
            if h.duplicate { "yes" } else { "no" },
            h.source
        );
    }
}
