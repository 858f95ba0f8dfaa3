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

/// Refuse to write over a file unless asked to, and never into the index directory.
fn check_out(index: &std::path::Path, out: &std::path::Path, overwrite: bool) -> Result<()> {
    let abs = |p: &std::path::Path| {
        std::fs::canonicalize(
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new(".")),
        )
        .ok()
    };
    if let (Some(o), Ok(i)) = (abs(out), std::fs::canonicalize(index)) {
        if o.starts_with(&i) {
            bail!(
                "--out {}: inside the index directory {}; write the report elsewhere",
                out.display(),
                index.display()
            );
        }
    }
    if out.is_dir() {
        bail!("--out {}: is a directory", out.display());
    }
    if out.exists() && !overwrite && !made_by_dedup(out) {
        bail!(
            "--out {}: already exists and is not a dedup report (twindex does not overwrite files it did not make); choose a new path or pass --overwrite",
            out.display()
        );
    }
    Ok(())
}

/// Whether `path` holds a report an earlier `dedup` wrote (which a rerun may replace): the
/// pairs TSV (its header), the clusters TSV (lines of ids) or the JSON (its keys).
fn made_by_dedup(path: &std::path::Path) -> bool {
    let Ok(md) = std::fs::metadata(path) else {
        return false;
    };
    if !md.is_file() {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    if text.starts_with("a\tb\tdistance\t") {
        return true;
    }
    if path.to_string_lossy().ends_with(".clusters.tsv") {
        return text
            .lines()
            .all(|l| l.split('\t').all(|x| x.parse::<u64>().is_ok()));
    }
    serde_json::from_str::<serde_json::Value>(&text).is_ok_and(|v| {
        v.get("pairs").is_some()
            && v.get("clusters").is_some()
            && v.get("threshold_distance").is_some()
    })
}

pub fn run(a: DedupArgs) -> Result<()> {
    let is_json = a.out.extension().is_some_and(|e| e == "json");
    let cpath = PathBuf::from(format!("{}.clusters.tsv", a.out.display()));
    check_out(&a.index, &a.out, a.overwrite)?;
    if !is_json {
        check_out(&a.index, &cpath, a.overwrite)?;
    }
    let idx = open(&a.index)?;
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
    let label = |id: u64| {
        idx.get(id)
            .map(|v| v.item.label.clone())
            .unwrap_or_default()
    };
    // The item's text (text indexes) or file, tabs and newlines escaped.
    let source = |id: u64| {
        idx.get(id)
            .map(|v| {
                v.item
                    .source
                    .replace('\\', "\\\\")
                    .replace('\t', "\\t")
                    .replace('\n', "\\n")
            })
            .unwrap_or_default()
    };
    if is_json {
        twindex::fsutil::atomic_write_json(&a.out, &d)?;
    } else {
        twindex::fsutil::atomic_write_with(&a.out, |w| {
            writeln!(w, "a\tb\tdistance\tlabel_a\tlabel_b\tsource_a\tsource_b")?;
            for p in &d.pairs {
                writeln!(
                    w,
                    "{}\t{}\t{:.6}\t{}\t{}\t{}\t{}",
                    p.a,
                    p.b,
                    p.distance,
                    label(p.a),
                    label(p.b),
                    source(p.a),
                    source(p.b)
                )?;
            }
            Ok(())
        })?;
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
