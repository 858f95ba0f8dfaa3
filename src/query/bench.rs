//! What `twindex bench` needs around [`crate::index::bench`]: the queries (raw vectors, or
//! images embedded with the index's own encoder), the exact neighbours (read from `.ivecs`
//! item ids, or computed on the flat index and written), and the build's figures.

use crate::error::{Error, Result};
use crate::index::bench::{
    ground_truth, ground_truth_from_ivecs, BenchOptions, BenchReport, BuildStats,
};
use crate::index::{vecio, Index, Matrix};
use crate::query::build::{dir_bytes, read_vectors, BuildRecord};
use crate::query::encoder::load_index_encoder;
use crate::timing::Rss;
use serde::Serialize;
use std::path::Path;

/// The query vectors in `path` for the index `idx` in `dir`, at most `limit` of them: raw
/// vectors of the index's dimension, or (an image index) images of the encoder's size, which
/// are embedded. Returns `(rows, row-major vectors)`.
pub fn load_queries(
    dir: &Path,
    idx: &Index,
    path: &Path,
    limit: Option<usize>,
) -> Result<(usize, Vec<f32>)> {
    let (mut rows, dim, mut data) = read_vectors(path)?;
    if let Some(model) = load_index_encoder(dir, &idx.manifest().encoder)? {
        let pre = &model.config.preprocess;
        let px: Vec<u8> = data.iter().map(|&v| v as u8).collect();
        if dim != pre.height * pre.width {
            return Err(Error::Msg(format!(
                "{}: images of {dim} pixels, the encoder expects {}x{}",
                path.display(),
                pre.height,
                pre.width
            )));
        }
        data = model.embed_pixels(&px, rows, 512)?;
    } else if dim != idx.dim() {
        return Err(Error::Msg(format!(
            "{}: queries have dimension {dim}, the index {}",
            path.display(),
            idx.dim()
        )));
    }
    if let Some(l) = limit {
        rows = rows.min(l);
        data.truncate(rows * idx.dim());
    }
    Ok((rows, data))
}

/// Exact neighbours from an `.ivecs` file of item ids (what `query` prints), as the slots the
/// engine answers with (they differ from ids once an index has been compacted). It must hold
/// at least `rows` rows of `k` neighbours; `dir` names the index in errors.
pub fn truth_from_ivecs(
    dir: &Path,
    idx: &Index,
    path: &Path,
    rows: usize,
    k: usize,
) -> Result<Vec<Vec<u64>>> {
    let m = vecio::read_ivecs(path)?;
    if m.rows < rows || m.cols < k {
        return Err(Error::Msg(format!(
            "{}: {} rows of {} neighbours, need {rows} rows of at least {k}",
            path.display(),
            m.rows,
            m.cols
        )));
    }
    ground_truth_from_ivecs(&m)?
        .iter()
        .enumerate()
        .map(|(row, r)| {
            r.iter()
                .map(|&id| {
                    idx.slot_of_id(id).map(|s| s as u64).ok_or_else(|| {
                        Error::Msg(format!(
                            "{}: row {row} names item {id}, which {} does not hold",
                            path.display(),
                            dir.display()
                        ))
                    })
                })
                .collect::<Result<Vec<u64>>>()
        })
        .collect()
}

/// The exact `k` nearest slots of each query (the flat index over the index's vectors, all
/// threads), also written to `path` as `.ivecs` of item ids.
pub fn write_truth(idx: &Index, queries: &[f32], k: usize, path: &Path) -> Result<Vec<Vec<u64>>> {
    let slots = ground_truth(idx.backend(), queries, k)?;
    let mut m = Matrix {
        rows: slots.len(),
        cols: k,
        data: Vec::with_capacity(slots.len() * k),
    };
    for r in &slots {
        for &s in r {
            let id = idx
                .id_of_slot(s as usize)
                .ok_or_else(|| Error::Msg("ground truth slot".into()))?;
            m.data.push(
                i32::try_from(id)
                    .map_err(|e| Error::Msg(format!("item id above i32 for .ivecs: {e}")))?,
            );
        }
    }
    vecio::write_ivecs(path, &m)?;
    Ok(slots)
}

/// The build figures of the index in `dir`: its `build.json` (zeros when absent) and size.
pub fn build_stats(dir: &Path) -> BuildStats {
    let build = BuildRecord::read(dir);
    BuildStats {
        seconds: build.build_seconds,
        cpu_seconds: build.build_cpu_seconds,
        index_bytes: dir_bytes(dir),
    }
}

/// A benchmark of an index directory (what `twindex bench` runs).
#[derive(Debug, Clone)]
pub struct IndexBench<'a> {
    /// The index directory (it must hold no deleted items).
    pub index: &'a Path,
    /// The query file (see [`load_queries`]).
    pub queries: &'a Path,
    /// Exact neighbours as `.ivecs` item ids; without it and `write_gt`, none.
    pub gt: Option<&'a Path>,
    /// Compute the exact neighbours (max(k, 100) a query) and write them here.
    pub write_gt: Option<&'a Path>,
    /// Quantized indexes: candidates re-scored per query (default: the index's).
    pub rerank: Option<usize>,
    pub k: usize,
    /// Search breadths to sweep.
    pub efs: Vec<usize>,
    /// Use only the first N queries.
    pub limit: Option<usize>,
}

/// What a benchmark measured (the keys of `twindex bench --json`).
#[derive(Debug, Clone, Serialize)]
pub struct IndexBenchRun {
    #[serde(flatten)]
    pub report: BenchReport,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: u64,
    /// Resident memory before and after opening the index (its share), and after the sweep.
    pub rss_before_open: Rss,
    pub rss_after_open: Rss,
    pub rss_after_sweep: Rss,
    pub quantize: String,
    pub rerank: usize,
    /// Queries run.
    pub queries: usize,
    pub k: usize,
    /// The engine's name (`hnsw`, ...), for printing.
    #[serde(skip)]
    pub backend: String,
}

/// Run the benchmark `b`: queries, exact neighbours, the sweep; `note` hears what is done.
pub fn bench_index(b: &IndexBench, note: &dyn Fn(&str)) -> Result<IndexBenchRun> {
    let rss_before_open = crate::timing::rss_now();
    let mut idx = Index::open(b.index)
        .map_err(|e| Error::Msg(format!("opening index {}: {e}", b.index.display())))?;
    // Resident as in a server: no search takes a page fault, and the memory figure counts it.
    idx.load_graph()?;
    let rss_after_open = crate::timing::rss_now();
    if let Some(r) = b.rerank {
        idx.set_search_rerank(r)
            .map_err(|e| Error::Msg(format!("--rerank: {e}")))?;
    }
    if idx.manifest().item_count != idx.manifest().slot_count {
        return Err(Error::Msg(format!(
            "{} has deleted items: run `twindex index compact` before benchmarking",
            b.index.display()
        )));
    }
    if let Some(p) = b.write_gt {
        crate::fsutil::check_new_file(p, "--write-gt")?;
    }
    let (rows, data) = load_queries(b.index, &idx, b.queries, b.limit)?;
    let truth = match (b.gt, b.write_gt) {
        (Some(p), _) => Some(truth_from_ivecs(b.index, &idx, p, rows, b.k)?),
        (None, Some(p)) => {
            let k = b.k.max(100).min(idx.slot_count());
            let sw = crate::timing::Stopwatch::start();
            let slots = write_truth(&idx, &data, k, p)?;
            note(&format!(
                "wrote the exact {k} nearest of {rows} queries to {} ({:.1} s)",
                p.display(),
                sw.wall()
            ));
            Some(slots)
        }
        (None, None) => None,
    };
    let backend = idx.manifest().backend.name().to_string();
    note(&format!(
        "benchmarking {} ({} items, {backend}) with {rows} queries, k = {}, ef {:?}, {} threads",
        b.index.display(),
        idx.len(),
        b.k,
        b.efs,
        rayon::current_num_threads()
    ));
    let opts = BenchOptions {
        k: b.k,
        efs: b.efs.clone(),
        all_threads: rayon::current_num_threads() > 1,
        ..Default::default()
    };
    let stats = build_stats(b.index);
    let report = crate::index::bench::run(idx.backend(), &data, truth.as_deref(), &opts, stats)?;
    Ok(IndexBenchRun {
        report,
        peak_rss_bytes: crate::timing::peak_rss_bytes(),
        rss_before_open,
        rss_after_open,
        rss_after_sweep: crate::timing::rss_now(),
        quantize: idx.manifest().hnsw.quantize.name().into(),
        rerank: b.rerank.unwrap_or(idx.manifest().hnsw.rerank),
        queries: rows,
        k: b.k,
        backend,
    })
}
