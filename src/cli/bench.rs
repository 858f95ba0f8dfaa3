//! `twindex bench`: recall@k against exact search, queries per second and latency over an
//! `ef` sweep, plus the index's build time and size.

use super::common;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use twindex::query::bench::{bench_index, IndexBench};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// Query vectors: `.npy`, `.fvecs`, or an IDX images file (raw pixels for a vector index;
    /// embedded with the index's encoder for an image index).
    #[arg(long)]
    pub queries: PathBuf,
    /// Exact neighbours (`.ivecs`, item ids); computed by brute force when absent.
    #[arg(long, conflicts_with = "write_gt")]
    pub gt: Option<PathBuf>,
    /// Compute the exact neighbours by brute force over the index's vectors (the flat
    /// oracle, all threads), write them here (`.ivecs` of item ids, max(k, 100) a query)
    /// and benchmark against them.
    #[arg(long)]
    pub write_gt: Option<PathBuf>,
    /// Quantized indexes: candidates re-scored exactly per query (default: the index's).
    #[arg(long)]
    pub rerank: Option<usize>,
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub k: usize,
    /// Search breadths to sweep, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,16,24,32,48,64,96,128"
    )]
    pub ef: Vec<usize>,
    /// Also draw the recall-vs-QPS chart (SVG) here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Use only the first N queries.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let b = IndexBench {
        index: &a.index,
        queries: &a.queries,
        gt: a.gt.as_deref(),
        write_gt: a.write_gt.as_deref(),
        rerank: a.rerank,
        k: a.k,
        efs: a.ef.clone(),
        limit: a.limit,
    };
    if let Some(p) = &a.plot {
        twindex::fsutil::check_new_file(p, "--plot")?;
    }
    let run = bench_index(&b, &|m| eprintln!("{m}"))?;
    let report = &run.report;
    if let Some(p) = &a.plot {
        let pts: Vec<(f64, f64, usize)> = report
            .sweep
            .iter()
            .map(|s| (s.recall, s.qps, s.ef))
            .collect();
        let name = format!("{} ({}, 1 thread)", a.index.display(), run.backend);
        let svg = twindex::eval::plot::recall_qps_svg(
            &format!("recall@{} vs queries/s", a.k),
            &[(&name, &pts)],
        )?;
        twindex::fsutil::atomic_write(p, svg.as_bytes())?;
        eprintln!("wrote {}", p.display());
    }
    if a.json {
        return common::print_json(&serde_json::to_value(&run)?);
    }
    println!(
        "build {:.1} s ({:.1} CPU-s), {:.1} MB on disk, peak memory of this run {:.1} MB",
        report.build_seconds,
        report.build_cpu_seconds,
        report.index_bytes as f64 / 1e6,
        run.peak_rss_bytes as f64 / 1e6
    );
    println!(
        "{:>5}  {:>8}  {:>9}  {:>12}  {:>8}  {:>8}  {:>8}",
        "ef", "recall", "qps", "qps/CPU-s", "p50 us", "p95 us", "p99 us"
    );
    for p in &report.sweep {
        println!(
            "{:>5}  {:>8.4}  {:>9.0}  {:>12.0}  {:>8.1}  {:>8.1}  {:>8.1}",
            p.ef, p.recall, p.qps, p.qps_per_cpu_second, p.p50_us, p.p95_us, p.p99_us
        );
    }
    Ok(())
}
