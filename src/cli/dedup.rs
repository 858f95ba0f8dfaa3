//! `twindex dedup`: every pair of items within the duplicate threshold, and the clusters they
//! form, written as TSV (pairs) or JSON (pairs + clusters).

use super::{common, index::open};
use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use twindex::index::dedup_report::{check_report_path, report_files, write_report};

#[derive(Debug, Args)]
pub struct DedupArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// Duplicate threshold as a distance (default: the index's calibrated one).
    #[arg(long, allow_negative_numbers = true, value_parser = common::parse_threshold)]
    pub threshold: Option<f32>,
    /// Output: `.json` (pairs and clusters) or anything else for TSV (pairs, then a
    /// `<out>.clusters.tsv` with one cluster a line).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out (and its .clusters.tsv) even when they are not reports of an earlier dedup
    /// (a dedup report is replaced anyway; a file inside the index never is).
    #[arg(long)]
    pub overwrite: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: DedupArgs) -> Result<()> {
    for f in report_files(&a.out) {
        check_report_path(&a.index, &f, a.overwrite)?;
    }
    let mut idx = open(&a.index)?;
    idx.link_pending(); // every item is searched: logged adds into the graph first
    let Some(thr) = a.threshold.or_else(|| idx.threshold_distance()) else {
        bail!(
            "{} has no calibrated threshold: pass --threshold DISTANCE or run `twindex calibrate`",
            a.index.display()
        );
    };
    let sw = twindex::timing::Stopwatch::start();
    let pb = common::bar(idx.len() as u64, "dedup");
    let d = idx.dedup_with_progress(thr, &|n| pb.set_position(n as u64))?;
    pb.finish_and_clear();
    write_report(&idx, &d, &a.out)?;
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
