//! Where a [`super::Searcher`]'s vectors live, behind one trait: the local index directory
//! ([`Local`]) or a Milvus collection ([`Remote`]). The searcher embeds and then asks its backend
//! to search, verify, store and count; operations only a local index has (checkpoint, compact,
//! dedup, calibration, labels) go through [`Backend::local`], which a remote backend answers with
//! `None`, so the searcher never guesses which one it holds.

use crate::error::{Error, Result};
use crate::index::{is_duplicate, Index, Item, Metric};
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::milvus::{Remote, RemoteHit};
use super::searcher::{answer, check_threshold, decided, Answer, QueryHit, SearchOptions, Stats};
use super::verify::{self, Aggregate, Verification};

/// A store of vectors a searcher can query and write.
pub(crate) trait Backend: Send + Sync {
    /// The vectors' dimension.
    fn dim(&self) -> usize;
    /// Live items (for Milvus its row count, 0 when it does not answer).
    fn len(&self) -> usize;
    /// The metric.
    fn metric(&self) -> Metric;
    /// The calibrated threshold as a distance.
    fn threshold(&self) -> Option<f32>;
    /// The stored vector of item `id`.
    fn stored_vector(&self, id: u64) -> Result<Vec<f32>>;
    /// The neighbours of each embedded query, decided (one consistent view for all of them).
    fn answers(&self, vs: &[Vec<f32>], o: &SearchOptions) -> Result<Vec<Answer>>;
    /// Accept or reject the claim that `v` is `label` (`name` names the index in errors).
    fn verify(
        &self,
        name: &Path,
        v: &[f32],
        label: &str,
        threshold: Option<f32>,
        aggregate: Aggregate,
    ) -> Result<Verification>;
    /// Store items with their vectors; the caller holds the searcher's writer lock.
    fn add_vectors(&self, vectors: &[f32], items: Vec<Item>) -> Result<Vec<u64>>;
    /// Delete items by id; the caller holds the searcher's writer lock.
    fn delete(&self, ids: &[u64]) -> Result<()>;
    /// Figures about the store (`dir` and `encoder` are the searcher's).
    fn stats(&self, dir: &str, encoder: &str) -> Stats;
    /// The local index, when that is what this is.
    fn local(&self) -> Option<&Local> {
        None
    }
    /// Release the store; a writable local index checkpoints its log first.
    fn close(self: Box<Self>, _writable: bool) -> Result<()> {
        Ok(())
    }
}

/// An index directory on this machine.
pub(crate) struct Local {
    index: RwLock<Index>,
}

impl Local {
    pub(crate) fn new(index: Index) -> Local {
        Local {
            index: RwLock::new(index),
        }
    }

    /// A read view (a consistent snapshot while held).
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The write lock (held only for in-memory steps).
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Write the log into the next generation (readers keep searching meanwhile).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        self.write().repair_graph();
        let g = self.read().write_checkpoint()?;
        self.write().install(g);
        Ok(())
    }

    /// Checkpoint when the log has grown enough.
    fn maybe_checkpoint(&self) -> Result<()> {
        if self.read().wants_checkpoint() {
            self.checkpoint()?;
        }
        Ok(())
    }
}

impl Backend for Local {
    fn dim(&self) -> usize {
        self.read().dim()
    }

    fn len(&self) -> usize {
        self.read().len()
    }

    fn metric(&self) -> Metric {
        self.read().metric()
    }

    fn threshold(&self) -> Option<f32> {
        self.read().threshold_distance()
    }

    fn stored_vector(&self, id: u64) -> Result<Vec<f32>> {
        Ok(self.read().get(id)?.vector.to_vec())
    }

    fn answers(&self, vs: &[Vec<f32>], o: &SearchOptions) -> Result<Vec<Answer>> {
        use rayon::prelude::*;
        let idx = self.read();
        if vs.len() == 1 {
            return Ok(vec![answer(&idx, &vs[0], o)?]);
        }
        vs.par_iter().map(|v| answer(&idx, v, o)).collect()
    }

    fn verify(
        &self,
        _name: &Path,
        v: &[f32],
        label: &str,
        threshold: Option<f32>,
        aggregate: Aggregate,
    ) -> Result<Verification> {
        verify::verify(&self.read(), v, label, threshold, aggregate)
    }

    fn add_vectors(&self, vectors: &[f32], items: Vec<Item>) -> Result<Vec<u64>> {
        let pending = self.read().log_add(vectors, items)?;
        let ids = self.write().apply_add(pending, &|_| {})?;
        self.maybe_checkpoint()?;
        Ok(ids)
    }

    fn delete(&self, ids: &[u64]) -> Result<()> {
        let pending = self.read().log_delete(ids)?;
        self.write().apply_delete(pending);
        self.maybe_checkpoint()
    }

    fn stats(&self, dir: &str, encoder: &str) -> Stats {
        let idx = self.read();
        let (log_bytes, log_records) = idx.log_size();
        let quantize = idx.manifest().hnsw.quantize;
        Stats {
            dir: dir.to_string(),
            items: idx.len(),
            slots: idx.slot_count(),
            dim: idx.dim(),
            metric: idx.metric(),
            backend: idx.manifest().backend.name().to_string(),
            quantize: quantize.name().to_string(),
            rerank: (!quantize.is_none()).then_some(idx.manifest().hnsw.rerank),
            encoder: encoder.to_string(),
            threshold: idx.threshold_distance(),
            generation: idx.manifest().generation,
            log_bytes,
            log_records,
            memory_bytes: idx.backend().memory_bytes(),
        }
    }

    fn local(&self) -> Option<&Local> {
        Some(self)
    }

    fn close(self: Box<Self>, writable: bool) -> Result<()> {
        let idx = self.index.into_inner().unwrap_or_else(|p| p.into_inner());
        if writable {
            idx.close()?;
        }
        Ok(())
    }
}

impl Backend for Remote {
    fn dim(&self) -> usize {
        self.meta().dim
    }

    fn len(&self) -> usize {
        self.count().unwrap_or(0)
    }

    fn metric(&self) -> Metric {
        Remote::metric(self)
    }

    fn threshold(&self) -> Option<f32> {
        self.meta().threshold
    }

    fn stored_vector(&self, id: u64) -> Result<Vec<f32>> {
        self.get(&[id])?
            .pop()
            .map(|(_, _, v)| v)
            .ok_or(Error::UnknownId(id))
    }

    /// Search Milvus for all vectors in one call and decide as a local index does.
    fn answers(&self, vs: &[Vec<f32>], o: &SearchOptions) -> Result<Vec<Answer>> {
        let metric = Remote::metric(self);
        check_threshold(o, metric)?;
        for v in vs {
            if v.len() != self.meta().dim {
                return Err(Error::dim(self.meta().dim, v.len(), "query vector"));
            }
        }
        let k = if o.k == 0 { 10 } else { o.k };
        let thr = o.threshold.or(self.meta().threshold);
        let hits = self.search_many(vs, k, o.ef, o.label.as_deref())?;
        Ok(hits
            .into_iter()
            .map(|hs| {
                let results: Vec<QueryHit> = hs
                    .into_iter()
                    .map(|h: RemoteHit| QueryHit {
                        id: h.id,
                        label: h.label,
                        source: h.source,
                        distance: h.distance,
                        similarity: metric.similarity(h.distance),
                        duplicate: thr.is_some_and(|t| is_duplicate(h.distance, t)),
                    })
                    .collect();
                decided(results, thr)
            })
            .collect())
    }

    fn verify(
        &self,
        name: &Path,
        v: &[f32],
        label: &str,
        threshold: Option<f32>,
        aggregate: Aggregate,
    ) -> Result<Verification> {
        let threshold = threshold.or(self.meta().threshold).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: no calibrated threshold; pass one",
                name.display()
            ))
        })?;
        let metric = Remote::metric(self);
        metric.check_threshold(threshold)?;
        if v.len() != self.meta().dim {
            return Err(Error::dim(self.meta().dim, v.len(), "query vector"));
        }
        let refs = self.references(label)?;
        let refs: Vec<(u64, &[f32])> = refs.iter().map(|(id, _, v)| (*id, v.as_slice())).collect();
        verify::check_references(aggregate, label, refs.len())?;
        verify::verify_among(v, &refs, metric, label, threshold, aggregate).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: nobody is enrolled as {label:?}",
                name.display()
            ))
        })
    }

    fn add_vectors(&self, vectors: &[f32], items: Vec<Item>) -> Result<Vec<u64>> {
        let dim = self.meta().dim;
        if vectors.len() != items.len() * dim {
            return Err(Error::dim(
                dim,
                vectors.len() / items.len().max(1),
                "vectors added",
            ));
        }
        let mut vectors = vectors.to_vec();
        if self.meta().normalize {
            for row in vectors.chunks_mut(dim) {
                crate::index::metric::normalize(row);
            }
        }
        let first = self.next_id()?;
        let ids: Vec<u64> = (first..first + items.len() as u64).collect();
        let (labels, texts) = items.into_iter().map(|i| (i.label, i.source)).unzip();
        self.insert(&crate::index::parquet::PartRows {
            ids: ids.iter().map(|&i| i as i64).collect(),
            labels,
            texts,
            vectors,
            dim,
        })?;
        Ok(ids)
    }

    fn delete(&self, ids: &[u64]) -> Result<()> {
        Remote::delete(self, ids)
    }

    fn stats(&self, dir: &str, encoder: &str) -> Stats {
        let items = self.count().unwrap_or(0);
        Stats {
            dir: dir.to_string(),
            items,
            slots: items,
            dim: self.meta().dim,
            metric: Remote::metric(self),
            backend: "milvus".into(),
            quantize: "none".into(),
            rerank: None,
            encoder: encoder.to_string(),
            threshold: self.meta().threshold,
            generation: 0,
            log_bytes: 0,
            log_records: 0,
            memory_bytes: 0,
        }
    }
}
