//! Search benchmark: recall@k against exact ground truth, single-thread throughput (per wall
//! second and per CPU second of the searching thread), latency percentiles, and all-thread
//! throughput, for a list of `ef` values.

use crate::error::{Error, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashSet;
use std::hash::Hash;
use std::time::Instant;

use super::flat::FlatIndex;
use super::vecio::Matrix;
use super::vector_index::VectorIndex;

/// What the benchmark does.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Neighbours asked per query (recall@k). Default 10.
    pub k: usize,
    /// Search breadths to sweep. Default 10, 16, 24, 32, 48, 64, 96, 128, 256.
    pub efs: Vec<usize>,
    /// Also measure throughput with every thread of the rayon pool. Default true.
    pub all_threads: bool,
    /// Untimed queries run before each timed pass to warm caches. Default 200.
    pub warmup: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            k: 10,
            efs: vec![10, 16, 24, 32, 48, 64, 96, 128, 256],
            all_threads: true,
            warmup: 200,
        }
    }
}

/// How long the index took to build and how big it is, measured by the caller (see
/// [`measure`]).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BuildStats {
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub index_bytes: u64,
}

/// One `ef` of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub ef: usize,
    /// Mean recall@k.
    pub recall: f64,
    /// Single-thread queries per wall-clock second.
    pub qps: f64,
    /// Single-thread queries per CPU second of the searching thread.
    pub qps_per_cpu_second: f64,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
    /// Queries per wall-clock second with all pool threads (absent if not measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qps_all_threads: Option<f64>,
}

/// The benchmark report (the `twindex bench --json` object).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub build_seconds: f64,
    pub build_cpu_seconds: f64,
    pub index_bytes: u64,
    pub sweep: Vec<SweepPoint>,
}

fn timespec_seconds(clock: libc::clockid_t) -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// CPU seconds used by the calling thread so far.
pub fn thread_cpu_seconds() -> f64 {
    timespec_seconds(libc::CLOCK_THREAD_CPUTIME_ID)
}

pub use crate::timing::process_cpu_seconds;

/// Run `f`, returning its value, the wall seconds and the process CPU seconds it took.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let c0 = process_cpu_seconds();
    let t0 = Instant::now();
    let v = f();
    (v, t0.elapsed().as_secs_f64(), process_cpu_seconds() - c0)
}

/// Exact `k` nearest slots of each query, by brute force over the index's own vectors, in
/// parallel.
pub fn ground_truth(index: &dyn VectorIndex, queries: &[f32], k: usize) -> Result<Vec<Vec<u64>>> {
    let dim = index.dim();
    let mut data = Vec::with_capacity(index.len() * dim);
    for s in 0..index.len() {
        data.extend_from_slice(
            index
                .vector(s)
                .ok_or_else(|| Error::Msg(format!("slot {s} has no vector")))?,
        );
    }
    let flat = FlatIndex::from_vectors(dim, index.metric(), &data)?;
    Ok(flat
        .search_batch(queries, k)?
        .into_iter()
        .map(|hits| hits.into_iter().map(|h| h.id).collect())
        .collect())
}

/// Ground truth from an `.ivecs` matrix (negative ids are refused).
pub fn ground_truth_from_ivecs(m: &Matrix<i32>) -> Result<Vec<Vec<u64>>> {
    m.iter_rows()
        .enumerate()
        .map(|(i, r)| {
            r.iter()
                .map(|&x| {
                    u64::try_from(x).map_err(|_| {
                        Error::InvalidArgument(format!("ground truth row {i} holds id {x}"))
                    })
                })
                .collect()
        })
        .collect()
}

/// Recall of approximate search against exact search: the mean over queries of
/// |found_k ∩ truth_k| / min(k, |truth|), where `found_k` and `truth_k` are the first k ids of
/// each list (an id found twice counts once). Every query needs a non-empty truth list.
pub fn ann_recall<T, F, G>(found: &[F], truth: &[G], k: usize) -> Result<f64>
where
    T: Eq + Hash,
    F: AsRef<[T]>,
    G: AsRef<[T]>,
{
    if k == 0 {
        return Err(Error::InvalidArgument("ann_recall: k must be >= 1".into()));
    }
    if found.len() != truth.len() {
        return Err(Error::dim(
            truth.len(),
            found.len(),
            "ann_recall: found (one list per query)",
        ));
    }
    if truth.is_empty() {
        return Err(Error::Empty("ann_recall: no queries".into()));
    }
    let mut sum = 0.0;
    for (q, (f, t)) in found.iter().zip(truth).enumerate() {
        let t = t.as_ref();
        if t.is_empty() {
            return Err(Error::Empty(format!(
                "ann_recall: query {q} has an empty truth list"
            )));
        }
        let truth_k: HashSet<&T> = t.iter().take(k).collect();
        let found_k: HashSet<&T> = f.as_ref().iter().take(k).collect();
        let hit = found_k.intersection(&truth_k).count();
        sum += hit as f64 / k.min(t.len()) as f64;
    }
    Ok(sum / truth.len() as f64)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Benchmark `index` on `queries` (row-major). `truth` holds the exact neighbour slots of each
/// query (at least `k` per row); when `None` it is computed with [`ground_truth`]. The
/// single-thread pass runs on the calling thread; every query's result length is checked
/// inside the timed loop.
pub fn run(
    index: &dyn VectorIndex,
    queries: &[f32],
    truth: Option<&[Vec<u64>]>,
    opts: &BenchOptions,
    build: BuildStats,
) -> Result<BenchReport> {
    let dim = index.dim();
    let nq = super::metric::check_rows(queries, dim, "queries")?;
    if nq == 0 {
        return Err(Error::Empty("no benchmark queries".into()));
    }
    if opts.k == 0 || opts.efs.is_empty() {
        return Err(Error::InvalidArgument(
            "bench needs k >= 1 and at least one ef".into(),
        ));
    }
    let computed;
    let truth = match truth {
        Some(t) => t,
        None => {
            computed = ground_truth(index, queries, opts.k)?;
            &computed[..]
        }
    };
    if truth.len() < nq {
        return Err(Error::Shape(format!(
            "ground truth has {} rows for {nq} queries",
            truth.len()
        )));
    }
    let want = opts.k.min(index.len());
    if let Some(i) = truth.iter().take(nq).position(|t| t.len() < want) {
        return Err(Error::Shape(format!(
            "ground truth row {i} has {} ids, k = {}",
            truth[i].len(),
            opts.k
        )));
    }
    let mut sweep = Vec::with_capacity(opts.efs.len());
    for &ef in &opts.efs {
        for q in queries.chunks_exact(dim).cycle().take(opts.warmup.min(nq)) {
            index.search(q, opts.k, ef)?;
        }
        let mut lat = Vec::with_capacity(nq);
        let mut found: Vec<Vec<u64>> = Vec::with_capacity(nq);
        let mut short = 0usize;
        let c0 = thread_cpu_seconds();
        let t0 = Instant::now();
        for q in queries.chunks_exact(dim) {
            let t = Instant::now();
            let hits = index.search(q, opts.k, ef)?;
            lat.push(t.elapsed().as_secs_f64() * 1e6);
            short += (hits.len() != want) as usize;
            found.push(hits.into_iter().map(|h| h.id).collect());
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = thread_cpu_seconds() - c0;
        if short > 0 {
            return Err(Error::Msg(format!(
                "bench ef={ef}: {short} queries returned fewer than {want} results"
            )));
        }
        let qps_all_threads = if opts.all_threads {
            let t0 = Instant::now();
            let n: usize = queries
                .par_chunks(dim)
                .map(|q| index.search(q, opts.k, ef).map(|h| h.len()))
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .sum();
            if n != want * nq {
                return Err(Error::Msg(format!(
                    "bench ef={ef}: parallel pass returned {n} results, expected {}",
                    want * nq
                )));
            }
            Some(nq as f64 / t0.elapsed().as_secs_f64())
        } else {
            None
        };
        lat.sort_by(f64::total_cmp);
        sweep.push(SweepPoint {
            ef,
            recall: ann_recall(&found, &truth[..nq], opts.k)?,
            qps: nq as f64 / wall,
            qps_per_cpu_second: if cpu > 0.0 { nq as f64 / cpu } else { 0.0 },
            p50_us: percentile(&lat, 50.0),
            p95_us: percentile(&lat, 95.0),
            p99_us: percentile(&lat, 99.0),
            qps_all_threads,
        });
    }
    Ok(BenchReport {
        build_seconds: build.seconds,
        build_cpu_seconds: build.cpu_seconds,
        index_bytes: build.index_bytes,
        sweep,
    })
}
