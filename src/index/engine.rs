//! The persistent index: a directory holding vectors, items, tombstones, the graph and a
//! manifest that names the encoder and the calibrated threshold. Every write commits a new
//! generation atomically (see [`super::store`]); opening checks version, checksums and
//! dimensions.
//!
//! One writer at a time: two processes writing the same directory at once is not supported.

use crate::error::{Error, Result};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::dedup::{clusters, Dedup, DupPair};
use super::flat::FlatIndex;
use super::hnsw::HnswGraph;
use super::hnsw_rs_backend::HnswRsIndex;
use super::manifest::{
    Backend, Calibration, DataFiles, FileEntry, IndexConfig, Manifest, FORMAT_VERSION,
    MANIFEST_FILE,
};
use super::metric::{check_rows, check_vector, normalize, Metric};
use super::store::{self, Item};
use super::vector_index::{Hit, Progress, VectorIndex};

/// Neighbours fetched per item in the first round of [`Index::dedup`] (doubled while all of them
/// are within the threshold).
const DEDUP_FIRST_K: usize = 16;

enum Engine {
    Hnsw(HnswGraph),
    HnswRs(HnswRsIndex),
    Flat(FlatIndex),
}

impl Engine {
    fn new(cfg: &IndexConfig, dim: usize, capacity: usize) -> Result<Self> {
        Ok(match cfg.backend {
            Backend::Hnsw => Engine::Hnsw(HnswGraph::new(dim, cfg.metric, cfg.hnsw)?),
            Backend::HnswRs => {
                Engine::HnswRs(HnswRsIndex::new(dim, cfg.metric, cfg.hnsw, capacity)?)
            }
            Backend::Flat => Engine::Flat(FlatIndex::new(dim, cfg.metric)?),
        })
    }

    fn get(&self) -> &dyn VectorIndex {
        match self {
            Engine::Hnsw(g) => g,
            Engine::HnswRs(g) => g,
            Engine::Flat(f) => f,
        }
    }

    fn get_mut(&mut self) -> &mut dyn VectorIndex {
        match self {
            Engine::Hnsw(g) => g,
            Engine::HnswRs(g) => g,
            Engine::Flat(f) => f,
        }
    }
}

/// Which data files a commit rewrites.
#[derive(Clone, Copy)]
struct Changed {
    vectors: bool,
    items: bool,
    tombstones: bool,
    graph: bool,
}

const ALL: Changed = Changed {
    vectors: true,
    items: true,
    tombstones: true,
    graph: true,
};

/// A stored item with its id and vector, as returned by [`Index::get`].
#[derive(Debug, Clone, Copy)]
pub struct ItemView<'a> {
    pub id: u64,
    pub item: &'a Item,
    /// The stored vector (normalised if the index normalises).
    pub vector: &'a [f32],
}

/// A persistent, searchable collection of items and their vectors. See the module docs.
pub struct Index {
    dir: PathBuf,
    manifest: Manifest,
    engine: Engine,
    items: Vec<Item>,
    ids: Vec<u64>,
    slot_of: HashMap<u64, u32>,
    deleted: Vec<bool>,
    n_deleted: usize,
    /// Set when a write failed half-way: memory and disk may differ, so further writes are
    /// refused until the index is reopened.
    poisoned: bool,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("manifest", &self.manifest)
            .finish()
    }
}

impl Index {
    /// Build a new index in `dir` (created if missing; refused if it already holds an index)
    /// from `vectors` (row-major, `dim` floats a row) and one item per row. `encoder` is
    /// recorded as is. The graph is built in parallel on the current rayon pool; `progress`
    /// receives the number of rows inserted.
    pub fn create(
        dir: &Path,
        config: IndexConfig,
        encoder: Value,
        dim: usize,
        vectors: &[f32],
        items: Vec<Item>,
        progress: &Progress,
    ) -> Result<Index> {
        config.hnsw.validate()?;
        if dim == 0 {
            return Err(Error::InvalidArgument(
                "dimension must be at least 1".into(),
            ));
        }
        if vectors.is_empty() && items.is_empty() {
            return Err(Error::Empty("no vectors to index".into()));
        }
        let rows = check_batch(vectors, dim, items.len(), "index vectors")?;
        if dir.join(MANIFEST_FILE).exists() {
            return Err(Error::InvalidArgument(format!(
                "{} already holds an index; open it, or remove it first",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let normalize = config.normalize || config.metric.normalizes();
        let prepared = prepare_rows(vectors, dim, normalize);
        let mut engine = Engine::new(&config, dim, rows)?;
        engine.get_mut().add(&prepared, progress)?;
        drop(prepared);
        // Placeholders: the first commit writes every file.
        let empty = FileEntry {
            name: String::new(),
            bytes: 0,
            sha256: String::new(),
        };
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            encoder,
            dim,
            metric: config.metric,
            normalize,
            backend: config.backend,
            hnsw: config.hnsw,
            item_count: rows,
            slot_count: rows,
            next_id: rows as u64,
            generation: 0,
            calibration: None,
            files: DataFiles {
                vectors: empty.clone(),
                items: empty.clone(),
                tombstones: empty,
                graph: None,
            },
        };
        let mut index = Index {
            dir: dir.to_path_buf(),
            manifest,
            engine,
            items,
            ids: (0..rows as u64).collect(),
            slot_of: (0..rows as u32).map(|s| (s as u64, s)).collect(),
            deleted: vec![false; rows],
            n_deleted: 0,
            poisoned: false,
        };
        index.commit(ALL)?;
        Ok(index)
    }

    /// Open the index in `dir`, checking the format version, every file's size and sha256, and
    /// that the files agree with the manifest's dimension and counts.
    pub fn open(dir: &Path) -> Result<Index> {
        let m = store::read_manifest(dir)?;
        let files = &m.files;
        let vpath = dir.join(&files.vectors.name);
        let vectors = store::parse_vectors(
            &store::read_data_file(dir, &files.vectors)?,
            m.slot_count,
            m.dim,
            &vpath,
        )?;
        let ipath = dir.join(&files.items.name);
        let (ids, items) = store::parse_items(&store::read_data_file(dir, &files.items)?, &ipath)?;
        if ids.len() != m.slot_count {
            return Err(Error::corrupt(
                &ipath,
                format!("{} items, the manifest says {}", ids.len(), m.slot_count),
            ));
        }
        let mut slot_of = HashMap::with_capacity(ids.len());
        for (slot, &id) in ids.iter().enumerate() {
            if id >= m.next_id || slot_of.insert(id, slot as u32).is_some() {
                return Err(Error::corrupt(
                    &ipath,
                    format!(
                        "line {}: id {id} is duplicated or not below next_id {}",
                        slot + 1,
                        m.next_id
                    ),
                ));
            }
        }
        let tpath = dir.join(&files.tombstones.name);
        let tomb = store::parse_ids(&store::read_data_file(dir, &files.tombstones)?, &tpath)?;
        let mut deleted = vec![false; ids.len()];
        for &id in &tomb {
            match slot_of.get(&id) {
                Some(&s) if !deleted[s as usize] => deleted[s as usize] = true,
                _ => {
                    return Err(Error::corrupt(
                        &tpath,
                        format!("tombstone for unknown or repeated id {id}"),
                    ))
                }
            }
        }
        if ids.len() - tomb.len() != m.item_count {
            return Err(Error::corrupt(
                dir.join(MANIFEST_FILE),
                format!(
                    "item_count {} but {} items minus {} tombstones",
                    m.item_count,
                    ids.len(),
                    tomb.len()
                ),
            ));
        }
        let cfg = IndexConfig {
            metric: m.metric,
            normalize: m.normalize,
            backend: m.backend,
            hnsw: m.hnsw,
        };
        let engine = match m.backend {
            Backend::Hnsw => {
                let entry = files.graph.as_ref().ok_or_else(|| {
                    Error::corrupt(dir.join(MANIFEST_FILE), "hnsw index without a graph file")
                })?;
                let bytes = store::read_data_file(dir, entry)?;
                Engine::Hnsw(HnswGraph::read_graph(
                    m.dim,
                    m.metric,
                    m.hnsw,
                    &vectors,
                    &bytes,
                    &dir.join(&entry.name),
                )?)
            }
            _ => {
                let mut e = Engine::new(&cfg, m.dim, ids.len())?;
                e.get_mut().add(&vectors, &|_| {})?;
                e
            }
        };
        Ok(Index {
            dir: dir.to_path_buf(),
            n_deleted: tomb.len(),
            manifest: m,
            engine,
            items,
            ids,
            slot_of,
            deleted,
            poisoned: false,
        })
    }

    /// Refuse (with a clear error) an index built by another encoder or of another dimension.
    pub fn ensure_compatible(&self, encoder: &Value, dim: usize) -> Result<()> {
        if dim != self.manifest.dim {
            return Err(Error::dim(
                self.manifest.dim,
                dim,
                "encoder output vs index",
            ));
        }
        if encoder != &self.manifest.encoder {
            return Err(Error::corrupt(
                self.dir.join(MANIFEST_FILE),
                format!(
                    "index was built with encoder {}, not {}",
                    self.manifest.encoder, encoder
                ),
            ));
        }
        Ok(())
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest as last committed.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.manifest.dim
    }

    /// Distance.
    pub fn metric(&self) -> Metric {
        self.manifest.metric
    }

    /// Number of live (not deleted) items.
    pub fn len(&self) -> usize {
        self.ids.len() - self.n_deleted
    }

    /// Whether no live item is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The engine, addressed by slot (slot = item id for an index never compacted). Deleted
    /// items are still in it.
    pub fn backend(&self) -> &dyn VectorIndex {
        self.engine.get()
    }

    /// Ids of the live items, in slot order.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.ids
            .iter()
            .zip(&self.deleted)
            .filter(|(_, &d)| !d)
            .map(|(&id, _)| id)
    }

    /// The live item `id`, with its vector.
    pub fn get(&self, id: u64) -> Result<ItemView<'_>> {
        let slot = self.live_slot(id)?;
        let vector = self.engine.get().vector(slot).ok_or(Error::UnknownId(id))?;
        Ok(ItemView {
            id,
            item: &self.items[slot],
            vector,
        })
    }

    fn live_slot(&self, id: u64) -> Result<usize> {
        match self.slot_of.get(&id) {
            Some(&s) if !self.deleted[s as usize] => Ok(s as usize),
            _ => Err(Error::UnknownId(id)),
        }
    }

    /// The `k` nearest live items to `query`, nearest first. `ef` defaults to the manifest's
    /// `ef_search`. The query must have the index's dimension.
    pub fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Result<Vec<Hit>> {
        check_vector(query, self.dim(), "query")?;
        let ef = ef.unwrap_or(self.manifest.hnsw.ef_search).max(1);
        let q;
        let query = if self.manifest.normalize && !self.metric().normalizes() {
            q = {
                let mut v = query.to_vec();
                normalize(&mut v);
                v
            };
            &q[..]
        } else {
            query
        };
        let e = self.engine.get();
        let hits = if self.n_deleted == 0 {
            e.search(query, k, ef)?
        } else {
            e.search_filtered(query, k, ef, &|s| !self.deleted[s])?
        };
        Ok(hits
            .into_iter()
            .map(|h| Hit {
                id: self.ids[h.id as usize],
                distance: h.distance,
            })
            .collect())
    }

    /// [`Index::search`] for each row of `queries`, in parallel.
    pub fn search_many(
        &self,
        queries: &[f32],
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<Vec<Hit>>> {
        check_rows(queries, self.dim(), "queries").map_err(|e| match e {
            Error::Shape(_) if !queries.is_empty() && queries.len() < self.dim() => {
                Error::dim(self.dim(), queries.len(), "queries")
            }
            e => e,
        })?;
        queries
            .par_chunks(self.dim())
            .map(|q| self.search(q, k, ef))
            .collect()
    }

    /// Add items with their vectors (row-major); returns their new ids. Inserted into the graph
    /// incrementally and committed atomically.
    pub fn add(
        &mut self,
        vectors: &[f32],
        items: Vec<Item>,
        progress: &Progress,
    ) -> Result<Vec<u64>> {
        self.check_writable()?;
        let rows = check_batch(vectors, self.dim(), items.len(), "added vectors")?;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let prepared = prepare_rows(vectors, self.dim(), self.manifest.normalize);
        self.poisoned = true;
        self.engine.get_mut().add(&prepared, progress)?;
        let first = self.manifest.next_id;
        let new_ids: Vec<u64> = (first..first + rows as u64).collect();
        for (i, &id) in new_ids.iter().enumerate() {
            self.slot_of.insert(id, (self.ids.len() + i) as u32);
        }
        self.ids.extend_from_slice(&new_ids);
        self.items.extend(items);
        self.deleted.resize(self.ids.len(), false);
        self.manifest.next_id += rows as u64;
        self.commit(Changed {
            tombstones: false,
            ..ALL
        })?;
        self.poisoned = false;
        Ok(new_ids)
    }

    /// Delete items. Every id must be live (an unknown, already deleted or repeated id gives
    /// [`Error::UnknownId`] and deletes nothing). Deleted items stay in the graph as tombstones,
    /// skipped by searches, until [`Index::compact`].
    pub fn delete(&mut self, ids: &[u64]) -> Result<()> {
        self.check_writable()?;
        let mut seen = HashSet::with_capacity(ids.len());
        let mut slots = Vec::with_capacity(ids.len());
        for &id in ids {
            let slot = self.live_slot(id)?;
            if !seen.insert(id) {
                return Err(Error::UnknownId(id));
            }
            slots.push(slot);
        }
        if slots.is_empty() {
            return Ok(());
        }
        for &s in &slots {
            self.deleted[s] = true;
        }
        self.n_deleted += slots.len();
        self.poisoned = true;
        self.commit(Changed {
            vectors: false,
            items: false,
            tombstones: true,
            graph: false,
        })?;
        self.poisoned = false;
        Ok(())
    }

    /// Rebuild without the deleted items (ids are kept). A no-op when nothing is deleted.
    pub fn compact(&mut self, progress: &Progress) -> Result<()> {
        self.check_writable()?;
        if self.n_deleted == 0 {
            return Ok(());
        }
        let dim = self.dim();
        let live: Vec<usize> = (0..self.ids.len()).filter(|&s| !self.deleted[s]).collect();
        let old = self.engine.get();
        let mut vectors = Vec::with_capacity(live.len() * dim);
        for &s in &live {
            vectors.extend_from_slice(
                old.vector(s)
                    .ok_or_else(|| Error::Msg(format!("compact: slot {s} has no vector")))?,
            );
        }
        let cfg = self.config();
        let mut engine = Engine::new(&cfg, dim, live.len())?;
        engine.get_mut().add(&vectors, progress)?;
        drop(vectors);
        self.poisoned = true;
        self.engine = engine;
        self.ids = live.iter().map(|&s| self.ids[s]).collect();
        let mut items = std::mem::take(&mut self.items);
        self.items = live
            .iter()
            .map(|&s| std::mem::take(&mut items[s]))
            .collect();
        self.slot_of = self
            .ids
            .iter()
            .enumerate()
            .map(|(s, &id)| (id, s as u32))
            .collect();
        self.deleted = vec![false; self.ids.len()];
        self.n_deleted = 0;
        self.commit(ALL)?;
        self.poisoned = false;
        Ok(())
    }

    /// The calibrated duplicate threshold, if one was set.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.manifest.calibration.as_ref()
    }

    /// The calibrated threshold as a distance: pairs at distance <= this are duplicates.
    pub fn threshold_distance(&self) -> Option<f32> {
        self.calibration()
            .map(|c| self.metric().distance_for_similarity(c.threshold))
    }

    /// Store (or clear) the calibration in the manifest, atomically.
    pub fn set_calibration(&mut self, calibration: Option<Calibration>) -> Result<()> {
        self.check_writable()?;
        if let Some(c) = &calibration {
            if !c.threshold.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "calibration threshold {} is not finite",
                    c.threshold
                )));
            }
        }
        let old = std::mem::replace(&mut self.manifest.calibration, calibration);
        let nothing = Changed {
            vectors: false,
            items: false,
            tombstones: false,
            graph: false,
        };
        if let Err(e) = self.commit(nothing) {
            self.manifest.calibration = old;
            return Err(e);
        }
        Ok(())
    }

    /// All pairs of live items at distance <= `threshold_distance`, found through the index
    /// (approximate for HNSW backends), and their clusters.
    pub fn dedup(&self, threshold_distance: f32) -> Result<Dedup> {
        if !threshold_distance.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "dedup threshold {threshold_distance} is not finite"
            )));
        }
        let e = self.engine.get();
        let live = self.len();
        let ef = self.manifest.hnsw.ef_search;
        let keep = |s: usize| !self.deleted[s];
        let per_slot: Result<Vec<Vec<DupPair>>> = (0..self.ids.len())
            .into_par_iter()
            .filter(|&s| !self.deleted[s])
            .map(|s| {
                let v = e.vector(s).ok_or(Error::UnknownId(self.ids[s]))?;
                let mut k = DEDUP_FIRST_K.min(live);
                loop {
                    let hits = e.search_filtered(v, k, ef.max(k), &keep)?;
                    let all_within = hits.len() == k
                        && hits
                            .last()
                            .is_some_and(|h| h.distance <= threshold_distance);
                    if !all_within || k >= live {
                        let me = self.ids[s];
                        return Ok(hits
                            .into_iter()
                            .filter(|h| h.distance <= threshold_distance && h.id as usize != s)
                            .map(|h| {
                                let other = self.ids[h.id as usize];
                                DupPair {
                                    a: me.min(other),
                                    b: me.max(other),
                                    distance: h.distance,
                                }
                            })
                            .collect());
                    }
                    k = (k * 2).min(live);
                }
            })
            .collect();
        let mut pairs: Vec<DupPair> = per_slot?.into_iter().flatten().collect();
        pairs.sort_by(|x, y| {
            (x.a, x.b)
                .cmp(&(y.a, y.b))
                .then(x.distance.total_cmp(&y.distance))
        });
        pairs.dedup_by(|x, y| x.a == y.a && x.b == y.b);
        let clusters = clusters(&pairs);
        Ok(Dedup {
            threshold_distance,
            pairs,
            clusters,
        })
    }

    fn config(&self) -> IndexConfig {
        IndexConfig {
            metric: self.manifest.metric,
            normalize: self.manifest.normalize,
            backend: self.manifest.backend,
            hnsw: self.manifest.hnsw,
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Msg(format!(
                "{}: an earlier write failed, so this handle may differ from the disk; reopen the index",
                self.dir.display()
            )));
        }
        Ok(())
    }

    /// Write the changed data files under the next generation's names, then the manifest (the
    /// commit point), then remove files of older generations.
    fn commit(&mut self, changed: Changed) -> Result<()> {
        let gen = self.manifest.generation + 1;
        let dir = self.dir.clone();
        let mut files = self.manifest.files.clone();
        let e = self.engine.get();
        if changed.vectors {
            files.vectors = store::write_data_file(&dir, &format!("vectors.{gen}.f32"), |w| {
                store::write_vectors(w, (0..e.len()).filter_map(|s| e.vector(s)))
            })?;
        }
        if changed.items {
            files.items = store::write_data_file(&dir, &format!("items.{gen}.jsonl"), |w| {
                store::write_items(w, self.ids.iter().copied().zip(self.items.iter()))
            })?;
        }
        if changed.tombstones {
            let mut tomb: Vec<u64> = self
                .ids
                .iter()
                .zip(&self.deleted)
                .filter(|(_, &d)| d)
                .map(|(&id, _)| id)
                .collect();
            tomb.sort_unstable();
            files.tombstones =
                store::write_data_file(&dir, &format!("tombstones.{gen}.u64"), |w| {
                    store::write_ids(w, &tomb)
                })?;
        }
        if changed.graph {
            files.graph = match &self.engine {
                Engine::Hnsw(g) => Some(store::write_data_file(
                    &dir,
                    &format!("graph.{gen}.hnsw"),
                    |w| g.write_graph(w),
                )?),
                _ => None,
            };
        }
        let mut m = self.manifest.clone();
        m.generation = gen;
        m.files = files;
        m.slot_count = self.ids.len();
        m.item_count = self.len();
        store::write_manifest(&dir, &m)?;
        self.manifest = m;
        store::remove_unreferenced(&dir, &self.manifest);
        Ok(())
    }
}

/// Check a batch of `n_items` rows of `dim`; returns the row count.
fn check_batch(vectors: &[f32], dim: usize, n_items: usize, ctx: &str) -> Result<usize> {
    if vectors.len() != n_items * dim {
        if n_items > 0 && vectors.len().is_multiple_of(n_items) {
            return Err(Error::dim(dim, vectors.len() / n_items, ctx));
        }
        return Err(Error::Shape(format!(
            "{ctx}: {} floats for {n_items} items of dimension {dim}",
            vectors.len()
        )));
    }
    check_rows(vectors, dim, ctx)
}

fn prepare_rows(vectors: &[f32], dim: usize, normalize_rows: bool) -> Vec<f32> {
    let mut v = vectors.to_vec();
    if normalize_rows {
        v.chunks_mut(dim).for_each(normalize);
    }
    v
}
