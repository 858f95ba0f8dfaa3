//! The exact index: a brute-force scan over contiguous vectors. Slow for large collections but
//! always right, so it is the oracle every approximate engine's recall is measured against.

use crate::error::{Error, Result};
use rayon::prelude::*;
use std::collections::BinaryHeap;

use super::distance::{kernels, DistanceKernels};
use super::metric::{check_rows, Metric};
use super::vector_index::{
    append_rows, prepare_query, Hit, Progress, Scored, SlotFilter, VectorIndex,
};

/// Brute-force exact nearest-neighbour search.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    metric: Metric,
    dim: usize,
    data: Vec<f32>,
    kernels: DistanceKernels,
}

impl FlatIndex {
    /// An empty index of dimension `dim` (at least 1).
    pub fn new(dim: usize, metric: Metric) -> Result<Self> {
        if dim == 0 {
            return Err(Error::InvalidArgument(
                "dimension must be at least 1".into(),
            ));
        }
        Ok(FlatIndex {
            metric,
            dim,
            data: Vec::new(),
            kernels: *kernels(),
        })
    }

    /// An index holding `vectors` (row-major, `dim` floats a row).
    pub fn from_vectors(dim: usize, metric: Metric, vectors: &[f32]) -> Result<Self> {
        let mut f = FlatIndex::new(dim, metric)?;
        f.add(vectors, &|_| {})?;
        Ok(f)
    }

    /// All stored vectors, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The exact `k` nearest neighbours of each row of `queries`, computed in parallel.
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>> {
        check_rows(queries, self.dim, "queries")?;
        queries
            .par_chunks(self.dim)
            .map(|q| self.search(q, k, k))
            .collect()
    }
}

impl VectorIndex for FlatIndex {
    fn name(&self) -> &'static str {
        "flat"
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    fn add(&mut self, vectors: &[f32], progress: &Progress) -> Result<()> {
        let rows = append_rows(&mut self.data, vectors, self.dim, self.metric)?;
        progress(rows);
        Ok(())
    }

    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        _ef: usize,
        keep: &SlotFilter,
    ) -> Result<Vec<Hit>> {
        let q = prepare_query(self.metric, self.dim, query)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut top: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
        for (slot, v) in self.data.chunks_exact(self.dim).enumerate() {
            let key = self.metric.key(&self.kernels, &q, v);
            let s = Scored {
                key,
                slot: slot as u32,
            };
            if top.len() < k {
                if keep(slot) {
                    top.push(s);
                }
            } else if s < *top.peek().expect("heap holds k > 0 items") && keep(slot) {
                top.pop();
                top.push(s);
            }
        }
        Ok(top
            .into_sorted_vec()
            .into_iter()
            .map(|s| Hit {
                id: s.slot as u64,
                distance: self.metric.key_to_distance(s.key),
            })
            .collect())
    }

    fn vector(&self, slot: usize) -> Option<&[f32]> {
        self.data.get(slot * self.dim..(slot + 1) * self.dim)
    }

    fn memory_bytes(&self) -> usize {
        self.data.capacity() * 4
    }
}
