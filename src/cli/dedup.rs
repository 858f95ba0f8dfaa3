//! `twindex dedup`: every pair of items within the duplicate threshold, and the clusters they
//! form, written as TSV (pairs) or JSON (pairs + clusters).

use super::{common, index::open};
use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DedupArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// Duplicate threshold as a distance (default: the index's calibrated one).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Output: `.json` (pairs and clusters) or anything else for TSV (pairs, then a
    /// `<out>.clusters.tsv` with one cluster a line).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: DedupArgs) -> Result<()> {
    let idx = open(&a.index)?;
    let Some(thr) = a.threshold.or_else(|| idx.threshold_distance()) else {
        bail!(
            "{} has no calibrated threshold: pass --threshold DISTANCE or run `twindex calibrate`",
            a.index.display()
        );
    };
    let sw = twindex::timing::Stopwatch::start();
    let d = idx.dedup(thr)?;
    let label = |id: u64| {
        idx.get(id)
            .map(|v| v.item.label.clone())
            .unwrap_or_default()
    };
    let is_json = a.out.extension().is_some_and(|e| e == "json");
    if is_json {
        twindex::fsutil::atomic_write_json(&a.out, &d)?;
    } else {
        twindex::fsutil::atomic_write_with(&a.out, |w| {
            writeln!(w, "a\tb\tdistance\tlabel_a\tlabel_b")?;
            for p in &d.pairs {
                writeln!(
                    w,
                    "{}\t{}\t{:.6}\t{}\t{}",
                    p.a,
                    p.b,
                    p.distance,
                    label(p.a),
                    label(p.b)
                )?;
            }
            Ok(())
        })?;
        let cpath = PathBuf::from(format!("{}.clusters.tsv", a.out.display()));
        twindex::fsutil::atomic_write_with(&cpath, |w| {
            for c in &d.clusters {
                let ids: Vec<String> = c.iter().map(u64::to_string).collect();
                writeln!(w, "{}", ids.join("\t"))?;
            }
            Ok(())
        })?;
    }
    let in_clusters: usize = d.clusters.iter().map(Vec::len).sum();
    eprintln!(
        "{} pairs within distance {thr:.4}, {} clusters covering {in_clusters} of {} items ({:.1} s); written to {}",
        d.pairs.len(),
        d.clusters.len(),
        idx.len(),
        sw.wall(),
        a.out.display()
    );
    if a.json {
        common::print_json(&json!({
            "threshold": thr,
            "pairs": d.pairs.len(),
            "clusters": d.clusters.len(),
            "items_in_clusters": in_clusters,
            "out": a.out.display().to_string(),
        }))?;
    }
    Ok(())
}
