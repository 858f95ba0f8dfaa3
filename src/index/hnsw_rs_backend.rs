//! The hnsw_rs engine behind our [`VectorIndex`] trait. This is the only file that names
//! hnsw_rs; its lifetimes, its `process::exit` on bad parameters (we validate first) and its
//! distance conventions stay in here.
//!
//! Known traits of hnsw_rs 0.3.5 handled here:
//! * distances must be non-negative and never NaN (it asserts and panics otherwise), so the
//!   graph sees a monotone, non-negative transform of our ordering key (see `to_engine`);
//!   monotone transforms leave every comparison, hence the graph, unchanged;
//! * its filtered search can return fewer than `k` kept items, so we widen `ef` and retry;
//! * it has no delete (the persistent index keeps tombstones) and its own dump format borrows
//!   its loader, so this backend rebuilds its graph from the stored vectors when reopened.

use crate::error::{Error, Result};
use hnsw_rs::prelude::{Distance, FilterT, Hnsw};

use super::distance::{kernels, DistanceKernels};
use super::flat::FlatIndex;
use super::hnsw::HnswParams;
use super::metric::Metric;
use super::vector_index::{prepare_query, Hit, Progress, SlotFilter, VectorIndex};

/// Layers hnsw_rs may use (its own maximum).
const MAX_LAYERS: usize = 16;
/// Rows handed to one `parallel_insert_slice` call, between progress reports.
const INSERT_CHUNK: usize = 2048;

/// Our ordering key as a non-negative, NaN-free engine distance, preserving order.
fn to_engine(metric: Metric, key: f32) -> f32 {
    if key.is_nan() {
        return f32::MAX;
    }
    match metric {
        // Squared L2 is never negative; 1 − cos is negative only by rounding.
        Metric::L2 | Metric::Cosine => key.max(0.0),
        // 1 − a·b takes any sign: x ↦ 1 + x above 0, 1 / (1 − x) below, continuous and
        // strictly increasing, into (0, ∞).
        Metric::Dot => {
            if key >= 0.0 {
                1.0 + key
            } else {
                1.0 / (1.0 - key)
            }
        }
    }
}

/// The inverse of [`to_engine`].
fn from_engine(metric: Metric, d: f32) -> f32 {
    match metric {
        Metric::L2 | Metric::Cosine => d,
        Metric::Dot => {
            if d >= 1.0 {
                d - 1.0
            } else {
                1.0 - 1.0 / d
            }
        }
    }
}

#[derive(Clone, Copy)]
struct EngineDist {
    metric: Metric,
    kernels: DistanceKernels,
}

impl Distance<f32> for EngineDist {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        to_engine(self.metric, self.metric.key(&self.kernels, a, b))
    }
}

/// An HNSW index built by hnsw_rs, with a contiguous copy of the vectors (a flat index: the
/// stored rows, prepared for the metric).
pub struct HnswRsIndex {
    params: HnswParams,
    rows: FlatIndex,
    graph: Hnsw<'static, f32, EngineDist>,
}

impl std::fmt::Debug for HnswRsIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswRsIndex")
            .field("metric", &self.metric())
            .field("dim", &self.dim())
            .field("params", &self.params)
            .field("len", &self.len())
            .finish()
    }
}

impl HnswRsIndex {
    /// An empty index; `capacity` is a hint for how many vectors will be added.
    pub fn new(dim: usize, metric: Metric, params: HnswParams, capacity: usize) -> Result<Self> {
        params.validate()?;
        if params.m > 256 {
            return Err(Error::InvalidArgument(format!(
                "the hnsw_rs engine allows m <= 256, got {}",
                params.m
            )));
        }
        let rows = FlatIndex::new(dim, metric)?;
        let dist = EngineDist {
            metric,
            kernels: *kernels(),
        };
        let graph = Hnsw::new(
            params.m,
            capacity.max(1),
            MAX_LAYERS,
            params.ef_construction,
            dist,
        );
        Ok(HnswRsIndex {
            params,
            rows,
            graph,
        })
    }

    /// The parameters the graph was built with.
    pub fn params(&self) -> &HnswParams {
        &self.params
    }
}

impl VectorIndex for HnswRsIndex {
    fn name(&self) -> &'static str {
        "hnsw_rs"
    }

    fn metric(&self) -> Metric {
        self.rows.metric()
    }

    fn dim(&self) -> usize {
        self.rows.dim()
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn add(&mut self, vectors: &[f32], progress: &Progress) -> Result<()> {
        let first = self.len();
        self.rows.add(vectors, &|_| {})?;
        let dim = self.dim();
        let rows_data: Vec<(&[f32], usize)> = self.rows.data()[first * dim..]
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| (v, first + i))
            .collect();
        let mut done = 0;
        for chunk in rows_data.chunks(INSERT_CHUNK) {
            self.graph.parallel_insert_slice(&chunk.to_vec());
            done += chunk.len();
            progress(done);
        }
        Ok(())
    }

    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &SlotFilter,
    ) -> Result<Vec<Hit>> {
        let (metric, dim) = (self.metric(), self.dim());
        let q = prepare_query(metric, dim, query)?;
        let n = self.len();
        if k == 0 || n == 0 {
            return Ok(Vec::new());
        }
        let filter = |id: &usize| keep(*id);
        let mut ef = ef.max(k);
        loop {
            let found = self
                .graph
                .search_filter(&q, k, ef, Some(&filter as &dyn FilterT));
            let hits: Vec<Hit> = found
                .into_iter()
                .filter(|nb| keep(nb.d_id))
                .take(k)
                .map(|nb| Hit {
                    id: nb.d_id as u64,
                    distance: metric.key_to_distance(from_engine(metric, nb.distance)),
                })
                .collect();
            // hnsw_rs may come back short when many slots are filtered out: widen and retry.
            if hits.len() >= k || ef >= n {
                return Ok(hits);
            }
            ef = (ef * 2).min(n);
        }
    }

    fn vector(&self, slot: usize) -> Option<&[f32]> {
        self.rows.vector(slot)
    }

    fn memory_bytes(&self) -> usize {
        // Our copy, hnsw_rs's copy, and about 2·m links of 8 bytes per point plus bookkeeping.
        let n = self.len();
        2 * self.rows.memory_bytes() + n * (2 * self.params.m * 16 + 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_transform_is_monotone_and_invertible() {
        let xs = [
            -1e6f32, -3.0, -1.0, -0.5, -1e-6, 0.0, 1e-6, 0.5, 1.0, 2.0, 1e6,
        ];
        for m in [Metric::Dot] {
            let ys: Vec<f32> = xs.iter().map(|&x| to_engine(m, x)).collect();
            assert!(ys.iter().all(|&y| y >= 0.0));
            assert!(ys.windows(2).all(|w| w[0] < w[1]), "{ys:?}");
            for (&x, &y) in xs.iter().zip(&ys) {
                let back = from_engine(m, y);
                assert!(
                    (back - x).abs() <= 1e-3 * x.abs().max(1.0),
                    "{x} -> {y} -> {back}"
                );
            }
        }
        assert_eq!(to_engine(Metric::Cosine, -1e-7), 0.0);
        assert_eq!(to_engine(Metric::L2, f32::NAN), f32::MAX);
    }
}
