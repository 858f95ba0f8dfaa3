//! The files `twindex dedup` writes: a `.json` report (pairs and clusters), or a pairs TSV
//! with a `<out>.clusters.tsv` beside it (one cluster a line). A report is never written into
//! the index directory, nor over a file that is not an earlier dedup report (unless asked).

use super::{Dedup, Index};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The header line of the pairs TSV.
const TSV_HEADER: &str = "a\tb\tdistance\tlabel_a\tlabel_b\tsource_a\tsource_b";

/// The paths a report at `out` writes: `out` itself, plus the clusters TSV unless `out` ends in
/// `.json`.
pub fn report_files(out: &Path) -> Vec<PathBuf> {
    let mut v = vec![out.to_path_buf()];
    if !is_json(out) {
        v.push(PathBuf::from(format!("{}.clusters.tsv", out.display())));
    }
    v
}

fn is_json(out: &Path) -> bool {
    out.extension().is_some_and(|e| e == "json")
}

/// Refuse to write a report file `out` of the index `index` over a file unless `overwrite`
/// (an earlier report is replaced anyway), and never into the index directory.
pub fn check_report_path(index: &Path, out: &Path, overwrite: bool) -> Result<()> {
    let abs = |p: &Path| {
        std::fs::canonicalize(
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .ok()
    };
    if let (Some(o), Ok(i)) = (abs(out), std::fs::canonicalize(index)) {
        if o.starts_with(&i) {
            return Err(Error::Msg(format!(
                "--out {}: inside the index directory {}; write the report elsewhere",
                out.display(),
                index.display()
            )));
        }
    }
    if out.is_dir() {
        return Err(Error::Msg(format!(
            "--out {}: is a directory",
            out.display()
        )));
    }
    if out.exists() && !overwrite && !made_by_dedup(out) {
        return Err(Error::Msg(format!(
            "--out {}: already exists and is not a dedup report (twindex does not overwrite files it did not make); choose a new path or pass --overwrite",
            out.display()
        )));
    }
    Ok(())
}

/// Whether `path` holds a report an earlier `dedup` wrote (which a rerun may replace): the
/// pairs TSV (its header), the clusters TSV (lines of ids) or the JSON (its keys).
fn made_by_dedup(path: &Path) -> bool {
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

/// Write the report of `d` (found in `idx`) at `out` (atomically, file by file): JSON when
/// `out` ends in `.json`, else the pairs TSV (labels and sources, tabs and newlines escaped)
/// and the clusters TSV.
pub fn write_report(idx: &Index, d: &Dedup, out: &Path) -> Result<()> {
    if is_json(out) {
        return crate::fsutil::atomic_write_json(out, d);
    }
    // Labels and sources are escaped alike (`\\`, `\t`, `\n`, `\r`), so a tab or newline in
    // either never shifts a column or splits a row.
    let field = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    };
    let label = |id: u64| {
        idx.get(id)
            .map(|v| field(&v.item.label))
            .unwrap_or_default()
    };
    let source = |id: u64| {
        idx.get(id)
            .map(|v| field(&v.item.source))
            .unwrap_or_default()
    };
    crate::fsutil::atomic_write_with(out, |w| {
        writeln!(w, "{TSV_HEADER}")?;
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
    crate::fsutil::atomic_write_with(&report_files(out)[1], |w| {
        for c in &d.clusters {
            let ids: Vec<String> = c.iter().map(u64::to_string).collect();
            writeln!(w, "{}", ids.join("\t"))?;
        }
        Ok(())
    })
}
