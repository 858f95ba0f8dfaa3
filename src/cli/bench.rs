//! `twindex bench`: recall@k against exact search, queries per second and latency over an
//! `ef` sweep, plus the index's build time and size.

use super::{common, index::open};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use twindex::index::bench::{self, BenchOptions, BuildStats};
use twindex::query::encoder;

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
    #[arg(long, default_value_t = 10)]
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
    // Resident memory of the process before and after opening: the index's share.
    let rss_before_open = twindex::timing::rss_now();
    let mut idx = open(&a.index)?;
    let rss_after_open = twindex::timing::rss_now();
    if let Some(r) = a.rerank {
        idx.set_search_rerank(r).context("--rerank")?;
    }
    if idx.manifest().item_count != idx.manifest().slot_count {
        bail!(
            "{} has deleted items: run `twindex index compact` before benchmarking",
            a.index.display()
        );
    }
    let (mut rows, dim, mut data) = common::read_vectors_any(&a.queries)?;
    if let Some(model) = encoder::load_index_encoder(&a.index, &idx.manifest().encoder)? {
        // An image index: the queries are images to embed.
        let px: Vec<u8> = data.iter().map(|&v| v as u8).collect();
        if dim != model.config.preprocess.height * model.config.preprocess.width {
            bail!(
                "{}: images of {dim} pixels, the encoder expects {}x{}",
                a.queries.display(),
                model.config.preprocess.height,
                model.config.preprocess.width
            );
        }
        data = model.embed_pixels(&px, rows, 512)?;
    } else if dim != idx.dim() {
        bail!(
            "{}: queries have dimension {dim}, the index {}",
            a.queries.display(),
            idx.dim()
        );
    }
    if let Some(l) = a.limit {
        rows = rows.min(l);
        data.truncate(rows * idx.dim());
    }
    let truth = match &a.gt {
        Some(p) => {
            let m = twindex::index::vecio::read_ivecs(p)?;
            if m.rows < rows || m.cols < a.k {
                bail!(
                    "{}: {} rows of {} neighbours, need {rows} rows of at least {}",
                    p.display(),
                    m.rows,
                    m.cols,
                    a.k
                );
            }
            // The file holds item ids (what `query` prints); the engine answers with slots,
            // which differ from ids once an index has been compacted.
            let ids = bench::ground_truth_from_ivecs(&m)?;
            let mut slots = Vec::with_capacity(ids.len());
            for (row, r) in ids.iter().enumerate() {
                slots.push(
                    r.iter()
                        .map(|&id| {
                            idx.slot_of_id(id).map(|s| s as u64).with_context(|| {
                                format!(
                                    "{}: row {row} names item {id}, which {} does not hold",
                                    p.display(),
                                    a.index.display()
                                )
                            })
                        })
                        .collect::<Result<Vec<u64>>>()?,
                );
            }
            Some(slots)
        }
        None => match &a.write_gt {
            Some(p) => {
                let k = a.k.max(100).min(idx.slot_count());
                let sw = twindex::timing::Stopwatch::start();
                let slots = bench::ground_truth(idx.backend(), &data, k)?;
                let mut m = twindex::index::Matrix {
                    rows: slots.len(),
                    cols: k,
                    data: Vec::with_capacity(slots.len() * k),
                };
                for r in &slots {
                    for &s in r {
                        let id = idx.id_of_slot(s as usize).context("ground truth slot")?;
                        m.data
                            .push(i32::try_from(id).context("item id above i32 for .ivecs")?);
                    }
                }
                twindex::index::vecio::write_ivecs(p, &m)?;
                eprintln!(
                    "wrote the exact {k} nearest of {rows} queries to {} ({:.1} s)",
                    p.display(),
                    sw.wall()
                );
                Some(slots)
            }
            None => None,
        },
    };
    let build: common::BuildRecord = common::read_build_record(&a.index);
    let stats = BuildStats {
        seconds: build.build_seconds,
        cpu_seconds: build.build_cpu_seconds,
        index_bytes: common::dir_bytes(&a.index),
    };
    eprintln!(
        "benchmarking {} ({} items, {}) with {rows} queries, k = {}, ef {:?}, {} threads",
        a.index.display(),
        idx.len(),
        idx.manifest().backend.name(),
        a.k,
        a.ef,
        rayon::current_num_threads()
    );
    let opts = BenchOptions {
        k: a.k,
        efs: a.ef.clone(),
        all_threads: rayon::current_num_threads() > 1,
        ..Default::default()
    };
    let report = bench::run(idx.backend(), &data, truth.as_deref(), &opts, stats)?;
    if let Some(p) = &a.plot {
        let pts: Vec<(f64, f64, usize)> = report
            .sweep
            .iter()
            .map(|s| (s.recall, s.qps, s.ef))
            .collect();
        let name = format!(
            "{} ({}, 1 thread)",
            a.index.display(),
            idx.manifest().backend.name()
        );
        let svg = twindex::eval::plot::recall_qps_svg(
            &format!("recall@{} vs queries/s", a.k),
            &[(&name, &pts)],
        )?;
        twindex::fsutil::atomic_write(p, svg.as_bytes())?;
        eprintln!("wrote {}", p.display());
    }
    let peak = twindex::timing::peak_rss_bytes();
    let rss_after_sweep = twindex::timing::rss_now();
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["peak_rss_bytes"] = peak.into();
        v["rss_before_open"] = serde_json::to_value(rss_before_open)?;
        v["rss_after_open"] = serde_json::to_value(rss_after_open)?;
        v["rss_after_sweep"] = serde_json::to_value(rss_after_sweep)?;
        v["quantize"] = idx.manifest().hnsw.quantize.name().into();
        v["rerank"] = a.rerank.unwrap_or(idx.manifest().hnsw.rerank).into();
        v["queries"] = rows.into();
        v["k"] = a.k.into();
        return common::print_json(&v);
    }
    println!(
        "build {:.1} s ({:.1} CPU-s), {:.1} MB on disk, peak memory of this run {:.1} MB",
        report.build_seconds,
        report.build_cpu_seconds,
        report.index_bytes as f64 / 1e6,
        peak as f64 / 1e6
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
