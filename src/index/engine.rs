//! The persistent index: a directory holding vectors, items, tombstones, the graph and a
//! manifest that names the encoder and the calibrated threshold. Every write commits a new
//! generation atomically (see [`super::store`]); opening checks version, checksums and
//! dimensions.
//!
//! Writes (add, delete) are acknowledged once their record is fsync'd to the write-ahead log
//! ([`super::wal`]) and applied to the in-memory graph at once; a checkpoint writes the next
//! generation and retires the log; opening replays it. One writer at a time: a writing handle
//! holds the directory's writer lock, and a second writer is refused with a clear message.
//! Readers open a snapshot and are never blocked by a writer.

use crate::error::{Error, Result};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::dedup::{clusters, Dedup, DupPair};
use super::flat::FlatIndex;
use super::hnsw::HnswGraph;
use super::hnsw_rs_backend::HnswRsIndex;
use super::items::Items;
use super::linebuf::LineBuf;
use super::manifest::{
    Backend, Calibration, DataFiles, EncoderRecord, FileEntry, IndexConfig, Manifest,
    FORMAT_VERSION, MANIFEST_FILE,
};
use super::metric::{check_directions, check_rows, check_vector, normalize, Metric};
use super::quantize::Quantize;
use super::rows::Rows;
use super::store::{self, Item};
use super::vector_index::{Hit, Progress, VectorIndex};
use super::wal::{self, WalWriter, WriterLock, LOCK_FILE};

mod verify;
pub use verify::Verified;

/// Neighbours fetched per item in the first round of [`Index::dedup`] (doubled while all of them
/// are within the threshold).
const DEDUP_FIRST_K: usize = 16;
/// [`Index::dedup`] refuses a threshold within which more pairs than this lie: no
/// near-duplicate threshold does that (at distance 100 on a cosine index every pair is within
/// it), and the report would run to gigabytes.
pub const DEDUP_MAX_PAIRS: usize = 2_000_000;

// One engine per open index: the size of the enum does not matter.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Hnsw(HnswGraph),
    HnswRs(HnswRsIndex),
    Flat(FlatIndex),
}

impl Engine {
    fn new(cfg: &IndexConfig, dim: usize, capacity: usize) -> Result<Self> {
        if cfg.hnsw.quantize != Quantize::None && cfg.backend != Backend::Hnsw {
            return Err(Error::InvalidArgument(format!(
                "quantize {} needs the hnsw backend, not {}",
                cfg.hnsw.quantize.name(),
                cfg.backend.name()
            )));
        }
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
#[derive(Debug, Clone)]
pub struct ItemView<'a> {
    pub id: u64,
    /// Read from the mapped items file (owned) or borrowed from memory.
    pub item: Cow<'a, Item>,
    /// The stored vector (normalised if the index normalises).
    pub vector: &'a [f32],
}

/// A live write-ahead log and the writer lock, behind the index's mutex so that a write can be
/// logged through `&self` (readers keep searching meanwhile).
#[derive(Debug, Default)]
struct WalState {
    /// Held from the first write (or from [`Index::open_writer`]) until the handle drops.
    lock: Option<WriterLock>,
    /// The current generation's log, opened on the first append.
    writer: Option<WalWriter>,
    /// Bytes of the current generation's log this handle has read or written (0: none).
    bytes: u64,
    /// Records in the log.
    records: u64,
    /// The id the next logged add starts at (ahead of `manifest.next_id` between a log and
    /// its apply).
    next_id: u64,
}

/// An add that is in the log (durable) and not yet in memory: give it to
/// [`Index::apply_add`].
#[derive(Debug)]
#[must_use = "a logged add must be applied"]
pub struct PendingAdd {
    first_id: u64,
    vectors: Vec<f32>,
    items: Vec<Item>,
}

impl PendingAdd {
    /// The ids the items will have.
    pub fn ids(&self) -> std::ops::Range<u64> {
        self.first_id..self.first_id + self.items.len() as u64
    }
}

/// A delete that is in the log and not yet in memory: give it to [`Index::apply_delete`].
#[derive(Debug)]
#[must_use = "a logged delete must be applied"]
pub struct PendingDelete {
    slots: Vec<usize>,
}

/// A generation written to disk by [`Index::write_checkpoint`] or [`Index::write_compacted`],
/// to be installed by [`Index::install`].
#[must_use = "a written generation must be installed"]
pub struct NewGeneration {
    manifest: Manifest,
    wal_bytes: u64,
    compacted: Option<Compacted>,
}

struct Compacted {
    engine: Engine,
    ids: LineBuf<u64>,
    items: Items,
}

/// When a write checkpoints by itself: once the log exceeds both this many bytes and
/// [`AUTO_CHECKPOINT_FRACTION`] of the data files, so that the checkpoints' cost per write
/// stays constant as the index grows.
pub const AUTO_CHECKPOINT_MIN_BYTES: u64 = 64 << 20;
/// See [`AUTO_CHECKPOINT_MIN_BYTES`].
pub const AUTO_CHECKPOINT_FRACTION: f64 = 0.25;

/// What opening found in the write-ahead log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records replayed.
    pub records: u64,
    /// Bytes of a torn tail dropped (0: the log ended cleanly).
    pub torn_bytes: u64,
}

/// A persistent, searchable collection of items and their vectors. See the module docs.
pub struct Index {
    dir: PathBuf,
    manifest: Manifest,
    engine: Engine,
    items: Items,
    /// Each slot's id, ascending (ids are handed out in order and slots never reordered), so
    /// that a binary search finds an id's slot. Like the tombstones beside it, grown without
    /// copying (see [`LineBuf`]): an add never stalls on a reallocation.
    ids: LineBuf<u64>,
    deleted: LineBuf<bool>,
    n_deleted: usize,
    /// Data files that differ from memory (the log holds the difference).
    dirty: Changed,
    wal: Mutex<WalState>,
    recovery: Recovery,
    /// Set when a write failed half-way: memory and disk may differ, so further writes are
    /// refused until the index is reopened.
    poisoned: AtomicBool,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("manifest", &self.manifest)
            .finish()
    }
}

const CLEAN: Changed = Changed {
    vectors: false,
    items: false,
    tombstones: false,
    graph: false,
};

impl Changed {
    fn or(self, o: Changed) -> Changed {
        Changed {
            vectors: self.vectors || o.vectors,
            items: self.items || o.items,
            tombstones: self.tombstones || o.tombstones,
            graph: self.graph || o.graph,
        }
    }
}

impl Index {
    /// Build a new index in `dir` (created if missing; refused if it already holds an index
    /// or, when it exists, holds anything at all) from `vectors` (row-major, `dim` floats a
    /// row) and one item per row. `encoder` is recorded as is. The graph is built in parallel
    /// on the current rayon pool; `progress` receives the number of rows inserted. On failure
    /// nothing is left behind: a directory this call created is removed, files it wrote in an
    /// existing (empty) directory are removed.
    pub fn create(
        dir: &Path,
        config: IndexConfig,
        encoder: EncoderRecord,
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
        if config.normalize || config.metric.normalizes() {
            check_directions(vectors, dim, "index vectors")?;
        }
        check_new_dir(dir)?;
        let existed = dir.exists();
        let res = (|| {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            let lock = WriterLock::acquire(dir)?;
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
                    catalog: None,
                },
                checksum: None,
            };
            let mut index = Index {
                dir: dir.to_path_buf(),
                manifest,
                engine,
                items: Items::from_vec(items)?,
                ids: (0..rows as u64).collect(),
                deleted: LineBuf::zeroed(rows),
                n_deleted: 0,
                dirty: ALL,
                wal: Mutex::new(WalState {
                    lock: Some(lock),
                    next_id: rows as u64,
                    ..WalState::default()
                }),
                recovery: Recovery::default(),
                poisoned: AtomicBool::new(false),
            };
            index.checkpoint()?;
            Ok(index)
        })();
        if res.is_err() {
            remove_created(dir, existed);
        }
        res
    }

    /// Open the index in `dir` for reading: the files of the manifest's generation (checking
    /// the format version, every file's size, the headers, and that the files agree with the
    /// manifest's dimension and counts; [`Index::verify`] reads the rest) and the write-ahead
    /// log replayed over them. Logged adds stay outside an HNSW graph, scored one by one by
    /// every search, until a write or [`Index::load_graph`] links them. The handle is a
    /// snapshot: later writes by other handles are not seen. Writing through it takes the
    /// writer lock then, and is refused if the index changed on disk since this open.
    ///
    /// A torn record at the end of the log (a crash mid-append, never acknowledged) is dropped
    /// and reported on stderr, unless another process holds the writer lock (then it is an
    /// append in progress).
    pub fn open(dir: &Path) -> Result<Index> {
        // A concurrent checkpoint may remove the files of the generation just read: read again.
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::open_once(dir, false) {
                Err(e) if tries < 20 && Self::generation_moved(dir, &e) => continue,
                r => return r,
            }
        }
    }

    /// Open for writing: take the writer lock first (failing at once with a clear message if
    /// another handle holds it), then open; a torn log tail is cut off.
    pub fn open_writer(dir: &Path) -> Result<Index> {
        let lock = WriterLock::acquire(dir)?;
        let idx = Self::open_once(dir, true)?;
        {
            let mut w = idx.wal_state();
            w.lock = Some(lock);
        }
        Ok(idx)
    }

    /// Whether `e` is a file missing because a writer moved to a newer generation meanwhile.
    fn generation_moved(dir: &Path, e: &Error) -> bool {
        matches!(e, Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound)
            && dir.join(MANIFEST_FILE).exists()
    }

    fn open_once(dir: &Path, writer: bool) -> Result<Index> {
        let m = store::read_manifest(dir)?;
        let files = &m.files;
        let vpath = store::sized_data_file(dir, &files.vectors)?;
        // The stored vectors, read when needed: a quantized graph keeps the file mapped
        // (re-ranking reads it); a graph file of format 3 or 4 holds them in its blocks
        // already; flat indexes and older graph files read them.
        let quantized = m.backend == Backend::Hnsw && m.hnsw.quantize != Quantize::None;
        let read_vectors = || {
            store::parse_vectors(
                &store::read_data_file(dir, &files.vectors)?,
                m.slot_count,
                m.dim,
                &vpath,
            )
        };
        let vectors = || -> Result<Rows> {
            if quantized {
                Rows::map_vectors(dir, &files.vectors, m.slot_count, m.dim)
            } else {
                Ok(Rows::from_vec(m.dim, read_vectors()?))
            }
        };
        // The catalogue (no JSON parsed), or the items file itself for indexes without one
        // (the next checkpoint writes one).
        let (ipath, (ids, items)) = match &files.catalog {
            Some(c) => (
                dir.join(&c.name),
                Items::open_catalog(dir, &files.items, c)?,
            ),
            None => (dir.join(&files.items.name), Items::map(dir, &files.items)?),
        };
        if ids.len() != m.slot_count {
            return Err(Error::corrupt(
                &ipath,
                format!("{} items, the manifest says {}", ids.len(), m.slot_count),
            ));
        }
        let prev = std::iter::once(None).chain(ids.iter().map(Some));
        if let Some((slot, (&id, _))) = ids
            .iter()
            .zip(prev)
            .enumerate()
            .find(|(_, (&id, prev))| id >= m.next_id || prev.is_some_and(|&p| p >= id))
        {
            return Err(Error::corrupt(
                &ipath,
                format!(
                    "item {}: id {id} is not above the one before or not below next_id {}",
                    slot + 1,
                    m.next_id
                ),
            ));
        }
        let tpath = dir.join(&files.tombstones.name);
        let tomb = store::parse_ids(&store::read_data_file(dir, &files.tombstones)?, &tpath)?;
        let mut deleted: LineBuf<bool> = LineBuf::zeroed(ids.len());
        for &id in &tomb {
            match ids.binary_search(&id) {
                Ok(s) if !deleted[s] => deleted[s] = true,
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
                let gpath = store::sized_data_file(dir, entry)?;
                Engine::Hnsw(HnswGraph::map_graph(
                    m.dim,
                    m.metric,
                    m.hnsw,
                    m.slot_count,
                    &gpath,
                    entry.bytes,
                    &vectors,
                )?)
            }
            _ => {
                let mut e = Engine::new(&cfg, m.dim, ids.len())?;
                e.get_mut().add(&read_vectors()?, &|_| {})?;
                e
            }
        };
        let replay = wal::read(dir, m.generation)?;
        let next_id = m.next_id;
        // A graph file of an older format is written anew by the next checkpoint.
        let legacy = matches!(&engine, Engine::Hnsw(g) if g.read_from_legacy_file());
        let no_catalog = files.catalog.is_none();
        let mut idx = Index {
            dir: dir.to_path_buf(),
            n_deleted: tomb.len(),
            manifest: m,
            engine,
            items,
            ids,
            deleted,
            dirty: Changed {
                graph: legacy,
                items: no_catalog,
                ..CLEAN
            },
            wal: Mutex::new(WalState {
                next_id,
                ..WalState::default()
            }),
            recovery: Recovery {
                records: replay.records.len() as u64,
                torn_bytes: replay.torn_bytes,
            },
            poisoned: AtomicBool::new(false),
        };
        idx.replay(replay.records, writer)?;
        {
            let w = idx.wal.get_mut().expect("fresh mutex");
            w.bytes = replay.valid_bytes;
            w.records = idx.recovery.records;
            w.next_id = idx.manifest.next_id;
        }
        if replay.torn_bytes > 0 && (writer || !WriterLock::is_held(dir)) {
            warn_torn(
                &dir.join(wal::wal_name(idx.manifest.generation)),
                replay.torn_bytes,
            );
        }
        Ok(idx)
    }

    /// Apply logged records to memory, consecutive adds in one batch. A reader (`link`
    /// false) leaves the added nodes outside the HNSW graph, scored one by one by searches
    /// ([`HnswGraph::append_unlinked`]), until a write or [`Index::load_graph`] links them:
    /// a command that searches a few times and exits then never walks the mapped graph to
    /// insert them.
    fn replay(&mut self, records: Vec<wal::Record>, link: bool) -> Result<()> {
        let path = self.dir.join(wal::wal_name(self.manifest.generation));
        let mut batch: Option<PendingAdd> = None;
        for r in records {
            match r {
                wal::Record::Add {
                    first_id,
                    dim,
                    vectors,
                    items,
                } => {
                    let want = batch
                        .as_ref()
                        .map_or(self.manifest.next_id, |b| b.ids().end);
                    check_logged_add(&path, (first_id, dim), (want, self.dim()))?;
                    match &mut batch {
                        Some(b) => {
                            b.vectors.extend(vectors);
                            b.items.extend(items);
                        }
                        None => {
                            batch = Some(PendingAdd {
                                first_id,
                                vectors,
                                items,
                            })
                        }
                    }
                }
                wal::Record::Delete { ids } => {
                    if let Some(b) = batch.take() {
                        self.apply_add_mem(b, &|_| {}, link)?;
                    }
                    let slots = self.live_slots(&ids).map_err(|e| {
                        Error::corrupt(&path, format!("a logged delete does not apply: {e}"))
                    })?;
                    self.apply_delete_mem(&slots);
                }
            }
        }
        if let Some(b) = batch {
            self.apply_add_mem(b, &|_| {}, link)?;
        }
        Ok(())
    }

    /// Whether an index can be created in `dir`: it must not exist, or be an empty directory.
    /// Check before long work (encoding) so that a bad `--out` fails at once.
    pub fn check_new_dir(dir: &Path) -> Result<()> {
        check_new_dir(dir)
    }

    /// What opening replayed from the write-ahead log.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// Refuse (with a clear error) an index built by another encoder or of another dimension.
    pub fn ensure_compatible(&self, encoder: &EncoderRecord, dim: usize) -> Result<()> {
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

    /// The manifest as last checkpointed (counts and `next_id` may lag behind the log; see
    /// [`Index::len`]).
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

    /// Stored items including deleted ones not yet compacted away.
    pub fn slot_count(&self) -> usize {
        self.ids.len()
    }

    /// The write-ahead log's size in bytes and records (0, 0 when empty or absent).
    pub fn log_size(&self) -> (u64, u64) {
        let w = self.wal_state();
        (w.bytes, w.records)
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

    /// Copy the mapped graph into memory of its own (huge pages), for a long-running process
    /// (a server, a benchmark): opening maps the graph unread, which suits a command that runs
    /// a few searches and exits, but searches of a mapped graph measured about 10% slower
    /// (page faults on 4 KiB pages).
    ///
    /// Logged adds that opening for reading left outside the graph are linked into it here
    /// (a long-running process searches many times).
    pub fn load_graph(&mut self) -> Result<()> {
        match &mut self.engine {
            Engine::Hnsw(g) => {
                g.copy_into_memory()?;
                g.link_pending();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Link into the graph the logged adds that opening for reading left outside it (see
    /// [`Index::open`]); every write through `&mut self` does this first.
    pub fn link_pending(&mut self) {
        if let Engine::Hnsw(g) = &mut self.engine {
            g.link_pending();
        }
    }

    /// Logged adds that opening for reading left outside the graph and searches score one by
    /// one (0 once linked, and always for a writer).
    pub fn unlinked(&self) -> usize {
        match &self.engine {
            Engine::Hnsw(g) => g.unlinked(),
            _ => 0,
        }
    }

    /// The slot (engine address) of the live item `id`.
    pub fn slot_of_id(&self, id: u64) -> Option<usize> {
        self.live_slot(id).ok()
    }

    /// The distinct non-empty labels of the live items, sorted (a scan of every item).
    pub fn labels(&self) -> Vec<String> {
        let mut labels: Vec<&str> = self
            .ids
            .iter()
            .enumerate()
            .filter(|&(s, _)| !self.deleted[s])
            .map(|(s, _)| self.items.label(s))
            .filter(|l| !l.is_empty())
            .collect();
        labels.sort_unstable();
        labels.dedup();
        labels.into_iter().map(String::from).collect()
    }

    /// The item id stored in `slot` (live or deleted), as the engine addresses it.
    pub fn id_of_slot(&self, slot: usize) -> Option<u64> {
        self.ids.get(slot).copied()
    }

    /// The live item `id`, with its vector.
    pub fn get(&self, id: u64) -> Result<ItemView<'_>> {
        let slot = self.live_slot(id)?;
        let vector = self.engine.get().vector(slot).ok_or(Error::UnknownId(id))?;
        Ok(ItemView {
            id,
            item: self.items.get(slot)?,
            vector,
        })
    }

    fn live_slot(&self, id: u64) -> Result<usize> {
        match self.ids.binary_search(&id) {
            Ok(s) if !self.deleted[s] => Ok(s),
            _ => Err(Error::UnknownId(id)),
        }
    }

    /// The slots of `ids`, each live and named once.
    fn live_slots(&self, ids: &[u64]) -> Result<Vec<usize>> {
        check_delete(ids, |id| self.live_slot(id))
    }

    /// The `k` nearest live items to `query`, nearest first. `ef` defaults to the manifest's
    /// `ef_search`. The query must have the index's dimension.
    pub fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Result<Vec<Hit>> {
        self.search_where(query, k, ef, None)
    }

    /// As [`Index::search`], keeping only items for which `keep` (given the item's label) is
    /// true.
    pub fn search_where(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        keep: Option<&(dyn Fn(&str) -> bool + Sync)>,
    ) -> Result<Vec<Hit>> {
        check_vector(query, self.dim(), "query")?;
        if self.manifest.normalize {
            check_directions(query, self.dim(), "query")?;
        }
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
        let hits = match keep {
            None if self.n_deleted == 0 => e.search(query, k, ef)?,
            None => e.search_filtered(query, k, ef, &|s| !self.deleted[s])?,
            Some(f) => e.search_filtered(query, k, ef, &|s| {
                !self.deleted[s] && f(self.items.label(s))
            })?,
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

    /// Add items with their vectors (row-major); returns their new ids. The add is in the
    /// write-ahead log (fsync'd) when this returns, and in the graph; the log is
    /// checkpointed when it has grown past [`AUTO_CHECKPOINT_MIN_BYTES`] and
    /// [`AUTO_CHECKPOINT_FRACTION`] of the data.
    pub fn add(
        &mut self,
        vectors: &[f32],
        items: Vec<Item>,
        progress: &Progress,
    ) -> Result<Vec<u64>> {
        self.link_pending();
        let p = self.log_add(vectors, items)?;
        let ids = self.apply_add(p, progress)?;
        if self.wants_checkpoint() {
            self.checkpoint()?;
        }
        Ok(ids)
    }

    /// The first half of [`Index::add`] through a shared reference: check the batch, write it
    /// to the log and fsync. Readers may search meanwhile. One writer at a time: each logged
    /// add must be applied (in order) before the next write.
    pub fn log_add(&self, vectors: &[f32], items: Vec<Item>) -> Result<PendingAdd> {
        self.check_writable()?;
        let rows = check_batch(vectors, self.dim(), items.len(), "added vectors")?;
        if self.manifest.normalize {
            check_directions(vectors, self.dim(), "added vectors")?;
        }
        let prepared = prepare_rows(vectors, self.dim(), self.manifest.normalize);
        let mut w = self.writer()?;
        let first_id = w.next_id;
        if rows == 0 {
            return Ok(PendingAdd {
                first_id,
                vectors: prepared,
                items,
            });
        }
        let rec = wal::Record::Add {
            first_id,
            dim: self.dim(),
            vectors: prepared,
            items,
        };
        self.append(&mut w, &rec.encode())?;
        w.next_id += rows as u64;
        let wal::Record::Add { vectors, items, .. } = rec else {
            unreachable!("built as an add")
        };
        Ok(PendingAdd {
            first_id,
            vectors,
            items,
        })
    }

    /// The second half of [`Index::add`]: insert a logged add into memory.
    pub fn apply_add(&mut self, p: PendingAdd, progress: &Progress) -> Result<Vec<u64>> {
        if p.first_id != self.manifest.next_id {
            return Err(Error::Msg(format!(
                "an add logged for ids from {} applied where the next id is {}",
                p.first_id, self.manifest.next_id
            )));
        }
        // A failure here leaves the log ahead of memory: refuse writes until reopened (which
        // replays the log).
        self.poisoned.store(true, Ordering::SeqCst);
        let ids = self.apply_add_mem(p, progress, true)?;
        self.poisoned.store(false, Ordering::SeqCst);
        Ok(ids)
    }

    fn apply_add_mem(
        &mut self,
        p: PendingAdd,
        progress: &Progress,
        link: bool,
    ) -> Result<Vec<u64>> {
        let rows = p.items.len();
        if rows == 0 {
            return Ok(Vec::new());
        }
        match &mut self.engine {
            Engine::Hnsw(g) if !link => g.append_unlinked(&p.vectors)?,
            e => e.get_mut().add(&p.vectors, progress)?,
        }
        let new_ids: Vec<u64> = p.ids().collect();
        self.ids.extend_from_slice(&new_ids);
        self.items.extend(p.items)?;
        self.deleted.resize_zeroed(self.ids.len());
        self.manifest.next_id += rows as u64;
        self.dirty = self.dirty.or(Changed {
            tombstones: false,
            ..ALL
        });
        Ok(new_ids)
    }

    /// Delete items. Every id must be live (an unknown, already deleted or repeated id is an
    /// error and deletes nothing). Deleted items stay in the graph as tombstones, skipped by
    /// searches, until [`Index::compact`]. Durable (logged) when this returns.
    pub fn delete(&mut self, ids: &[u64]) -> Result<()> {
        self.link_pending();
        let p = self.log_delete(ids)?;
        self.apply_delete(p);
        if self.wants_checkpoint() {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// The first half of [`Index::delete`] through a shared reference (see [`Index::log_add`]).
    pub fn log_delete(&self, ids: &[u64]) -> Result<PendingDelete> {
        self.check_writable()?;
        let slots = self.live_slots(ids)?;
        if slots.is_empty() {
            return Ok(PendingDelete { slots });
        }
        let mut w = self.writer()?;
        self.append(&mut w, &wal::Record::Delete { ids: ids.to_vec() }.encode())?;
        Ok(PendingDelete { slots })
    }

    /// The second half of [`Index::delete`].
    pub fn apply_delete(&mut self, p: PendingDelete) {
        self.apply_delete_mem(&p.slots);
    }

    fn apply_delete_mem(&mut self, slots: &[usize]) {
        if slots.is_empty() {
            return;
        }
        for &s in slots {
            self.deleted[s] = true;
        }
        self.n_deleted += slots.len();
        self.dirty.tombstones = true;
    }

    /// Rebuild without the deleted items (ids are kept) and checkpoint. A plain checkpoint
    /// when nothing is deleted.
    pub fn compact(&mut self, progress: &Progress) -> Result<()> {
        self.link_pending();
        let g = self.write_compacted(progress)?;
        self.install(g);
        Ok(())
    }

    /// The slow half of [`Index::compact`] through a shared reference: build the new graph
    /// and write it as the next generation (the commit point). Install it with
    /// [`Index::install`] before the next write.
    pub fn write_compacted(&self, progress: &Progress) -> Result<NewGeneration> {
        self.check_writable()?;
        if self.n_deleted == 0 {
            return self.write_checkpoint();
        }
        let w = self.writer()?;
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
        let mut engine = Engine::new(&self.config(), dim, live.len())?;
        engine.get_mut().add(&vectors, progress)?;
        drop(vectors);
        let ids: LineBuf<u64> = live.iter().map(|&s| self.ids[s]).collect();
        let items = self.items.select(&live)?;
        let deleted = vec![false; ids.len()];
        let manifest = self.write_generation(&engine, &ids, &items, &deleted, ALL)?;
        Ok(NewGeneration {
            manifest,
            wal_bytes: w.bytes,
            compacted: Some(Compacted { engine, ids, items }),
        })
    }

    /// Quantized HNSW indexes: re-score this many candidates per search from now on (a
    /// search-time setting of this handle; the manifest keeps the built value).
    pub fn set_search_rerank(&mut self, rerank: usize) -> Result<()> {
        match &mut self.engine {
            Engine::Hnsw(g) if g.is_quantized() => g.set_rerank(rerank),
            _ => Err(Error::InvalidArgument(format!(
                "rerank {rerank}: {} is not a quantized hnsw index",
                self.dir.display()
            ))),
        }
    }

    /// Link graph nodes that no search could reach (see [`HnswGraph::repair_unreachable`]);
    /// done before every checkpoint. Returns how many were linked.
    pub fn repair_graph(&mut self) -> usize {
        let n = match &mut self.engine {
            Engine::Hnsw(g) => g.repair_unreachable(),
            _ => 0,
        };
        if n > 0 {
            self.dirty.graph = true;
        }
        n
    }

    /// Write the log's content into the next generation's data files and retire the log.
    /// Also done on [`Index::close`] and, past a size, by the writes themselves.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.link_pending();
        self.repair_graph();
        let g = self.write_checkpoint()?;
        self.install(g);
        Ok(())
    }

    /// The slow half of [`Index::checkpoint`] through a shared reference: write the next
    /// generation (data files that the log changed, then the manifest: the commit point).
    /// Install it with [`Index::install`] before the next write.
    pub fn write_checkpoint(&self) -> Result<NewGeneration> {
        self.check_writable()?;
        let w = self.writer()?;
        let manifest = self.write_generation(
            &self.engine,
            &self.ids,
            &self.items,
            &self.deleted,
            self.dirty,
        )?;
        Ok(NewGeneration {
            manifest,
            wal_bytes: w.bytes,
            compacted: None,
        })
    }

    /// Make a generation written by [`Index::write_checkpoint`] or [`Index::write_compacted`]
    /// current in memory, and remove the files of older generations and the retired log.
    pub fn install(&mut self, g: NewGeneration) {
        {
            let w = self.wal.get_mut().unwrap_or_else(|p| p.into_inner());
            if w.bytes != g.wal_bytes {
                // A write slipped in between: its record is in the old log, which the new
                // generation does not replay. Keep the old log; the disk is still right.
                self.poisoned.store(true, Ordering::SeqCst);
                return;
            }
            w.writer = None;
            w.bytes = 0;
            w.records = 0;
        }
        if let Some(c) = g.compacted {
            self.engine = c.engine;
            self.ids = c.ids;
            self.items = c.items;
            self.deleted = LineBuf::zeroed(self.ids.len());
            self.n_deleted = 0;
        }
        let items_written = self.manifest.files.items.name != g.manifest.files.items.name;
        self.manifest = g.manifest;
        self.dirty = CLEAN;
        if items_written {
            // Map the file just written, so that the items added since opening leave memory.
            // Should that fail, the ones in memory are just as right.
            let m = &self.manifest.files;
            let _ = self.items.remap(&self.dir, &m.items, m.catalog.as_ref());
        }
        store::remove_unreferenced(&self.dir, &self.manifest);
    }

    /// Checkpoint if the log holds anything, then release the writer lock.
    pub fn close(mut self) -> Result<()> {
        let held = self.wal_state().lock.is_some();
        if held && (self.log_size().1 > 0 || !self.dirty_is_clean()) {
            self.checkpoint()?;
        }
        Ok(())
    }

    fn dirty_is_clean(&self) -> bool {
        !(self.dirty.vectors || self.dirty.items || self.dirty.tombstones || self.dirty.graph)
    }

    /// Whether the log has grown enough to checkpoint by itself.
    pub fn wants_checkpoint(&self) -> bool {
        log_due_checkpoint(self.log_size().0, &self.manifest)
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

    /// Store (or clear) the calibration in the manifest (a checkpoint).
    pub fn set_calibration(&mut self, calibration: Option<Calibration>) -> Result<()> {
        if let Some(c) = &calibration {
            if !c.threshold.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "calibration threshold {} is not finite",
                    c.threshold
                )));
            }
        }
        self.link_pending();
        self.check_writable()?;
        let old = std::mem::replace(&mut self.manifest.calibration, calibration);
        if let Err(e) = self.checkpoint() {
            self.manifest.calibration = old;
            return Err(e);
        }
        Ok(())
    }

    /// All pairs of live items at distance <= `threshold_distance`, found through the index
    /// (approximate for HNSW backends), and their clusters.
    pub fn dedup(&self, threshold_distance: f32) -> Result<Dedup> {
        self.dedup_with_progress(threshold_distance, &|_| {})
    }

    /// [`Index::dedup`], reporting the number of items done to `progress`.
    pub fn dedup_with_progress(
        &self,
        threshold_distance: f32,
        progress: &Progress,
    ) -> Result<Dedup> {
        self.metric().check_threshold(threshold_distance)?;
        let e = self.engine.get();
        let live = self.len();
        let ef = self.manifest.hnsw.ef_search;
        let keep = |s: usize| !self.deleted[s];
        let done = std::sync::atomic::AtomicUsize::new(0);
        // Each pair is found from both its ends.
        let found = std::sync::atomic::AtomicUsize::new(0);
        let too_many = || {
            Error::InvalidArgument(format!(
                "more than {DEDUP_MAX_PAIRS} pairs lie within distance {threshold_distance}: that is no near-duplicate threshold (the report would run to gigabytes); lower --threshold"
            ))
        };
        let per_slot: Result<Vec<Vec<DupPair>>> = (0..self.ids.len())
            .into_par_iter()
            .filter(|&s| !self.deleted[s])
            .map(|s| {
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if d.is_multiple_of(256) || d == live {
                    progress(d);
                }
                let v = e.vector(s).ok_or(Error::UnknownId(self.ids[s]))?;
                let mut k = DEDUP_FIRST_K.min(live);
                loop {
                    let hits = e.search_filtered(v, k, ef.max(k), &keep)?;
                    let all_within = hits.len() == k
                        && hits
                            .last()
                            .is_some_and(|h| super::is_duplicate(h.distance, threshold_distance));
                    if k > 2 * DEDUP_MAX_PAIRS {
                        return Err(too_many());
                    }
                    if !all_within || k >= live {
                        let me = self.ids[s];
                        let within = hits
                            .iter()
                            .filter(|h| super::is_duplicate(h.distance, threshold_distance))
                            .count();
                        if found.fetch_add(within, Ordering::Relaxed) + within > 2 * DEDUP_MAX_PAIRS
                        {
                            return Err(too_many());
                        }
                        return Ok(hits
                            .into_iter()
                            .filter(|h| {
                                super::is_duplicate(h.distance, threshold_distance)
                                    && h.id as usize != s
                            })
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
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Msg(format!(
                "{}: an earlier write failed, so this handle may differ from the disk; reopen the index",
                self.dir.display()
            )));
        }
        let unlinked = self.unlinked();
        if unlinked > 0 {
            return Err(Error::Msg(format!(
                "{}: opened for reading with {unlinked} logged adds outside the graph; link them first (Index::link_pending) or open it with Index::open_writer",
                self.dir.display(),
            )));
        }
        Ok(())
    }

    fn wal_state(&self) -> MutexGuard<'_, WalState> {
        self.wal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log state with the writer lock held: taken now if this handle does not hold it yet,
    /// in which case the index on disk must still be the one this handle opened.
    fn writer(&self) -> Result<MutexGuard<'_, WalState>> {
        let mut w = self.wal_state();
        if w.lock.is_none() {
            let lock = WriterLock::acquire(&self.dir)?;
            let stale = || {
                Error::Busy(format!(
                    "{}: the index changed on disk since this handle opened it (another process wrote to it); reopen it and try again",
                    self.dir.display()
                ))
            };
            let m = store::read_manifest(&self.dir)?;
            if m.generation != self.manifest.generation {
                return Err(stale());
            }
            // A torn tail past what this handle read is fine (the writer cuts it off).
            let r = wal::read(&self.dir, m.generation)?;
            if r.valid_bytes != w.bytes && !(w.bytes == 0 && r.records.is_empty()) {
                return Err(stale());
            }
            w.lock = Some(lock);
        }
        Ok(w)
    }

    /// Append a record to the current generation's log (opening it first).
    fn append(&self, w: &mut WalState, payload: &[u8]) -> Result<()> {
        if w.writer.is_none() {
            w.writer = Some(WalWriter::open(
                &self.dir,
                self.manifest.generation,
                w.bytes,
            )?);
        }
        let writer = w.writer.as_mut().expect("opened above");
        if let Err(e) = writer.append(payload) {
            if matches!(e, Error::Msg(_)) {
                // The log could not be cut back: it may hold a partial record.
                self.poisoned.store(true, Ordering::SeqCst);
            }
            return Err(e);
        }
        w.bytes = writer.len();
        w.records += 1;
        Ok(())
    }

    /// Write the data files of `changed` (the others are kept from the current generation)
    /// under the next generation's names, then the manifest (the commit point).
    fn write_generation(
        &self,
        engine: &Engine,
        ids: &[u64],
        items: &Items,
        deleted: &[bool],
        changed: Changed,
    ) -> Result<Manifest> {
        let gen = self.manifest.generation + 1;
        let res = self.write_generation_files(engine, ids, items, deleted, changed, gen);
        let committed = || store::read_manifest(&self.dir).map_or(true, |m| m.generation == gen);
        if res.is_err() && !committed() {
            // A full disk or a failed write: nothing of the unfinished generation stays.
            for kind in [
                "vectors.{g}.f32",
                "items.{g}.jsonl",
                "items.{g}.idx",
                "tombstones.{g}.u64",
                "graph.{g}.hnsw",
            ] {
                let _ = std::fs::remove_file(self.dir.join(kind.replace("{g}", &gen.to_string())));
            }
        }
        res
    }

    fn write_generation_files(
        &self,
        engine: &Engine,
        ids: &[u64],
        items: &Items,
        deleted: &[bool],
        changed: Changed,
        gen: u64,
    ) -> Result<Manifest> {
        let dir = &self.dir;
        let mut files = self.manifest.files.clone();
        let e = engine.get();
        if changed.vectors {
            files.vectors = store::write_data_file(dir, &format!("vectors.{gen}.f32"), |w| {
                store::write_vectors(w, (0..e.len()).filter_map(|s| e.vector(s)))
            })?;
        }
        if changed.items {
            files.items = store::write_data_file(dir, &format!("items.{gen}.jsonl"), |w| {
                items.write(w, ids)
            })?;
            let jsonl = dir.join(&files.items.name);
            files.catalog = Some(store::write_data_file(
                dir,
                &format!("items.{gen}.idx"),
                |w| items.write_catalog(w, ids, &jsonl),
            )?);
        }
        if changed.tombstones {
            let mut tomb: Vec<u64> = ids
                .iter()
                .zip(deleted)
                .filter(|(_, &d)| d)
                .map(|(&id, _)| id)
                .collect();
            tomb.sort_unstable();
            files.tombstones =
                store::write_data_file(dir, &format!("tombstones.{gen}.u64"), |w| {
                    store::write_ids(w, &tomb)
                })?;
        }
        if changed.graph {
            files.graph = match engine {
                Engine::Hnsw(g) => Some(store::write_data_file(
                    dir,
                    &format!("graph.{gen}.hnsw"),
                    |w| g.write_graph(w),
                )?),
                _ => None,
            };
        }
        let mut m = self.manifest.clone();
        m.generation = gen;
        m.files = files;
        m.slot_count = ids.len();
        m.item_count = ids.len() - deleted.iter().filter(|&&d| d).count();
        store::write_manifest(dir, &m)?;
        Ok(m)
    }
}

/// Refuse to create an index in `dir` if it holds an index or anything else.
fn check_new_dir(dir: &Path) -> Result<()> {
    if dir.join(MANIFEST_FILE).exists() {
        return Err(Error::InvalidArgument(format!(
            "{} already holds an index; open it, or remove it first",
            dir.display()
        )));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{} exists and is not a directory",
            dir.display()
        )));
    }
    // The encoder the caller copied in just before, and our lock, are ours.
    let foreign = std::fs::read_dir(dir).ok().and_then(|rd| {
        rd.map(|e| e.map(|e| e.file_name())).find(|n| {
            !matches!(
                n.as_ref().ok().and_then(|n| n.to_str()),
                Some("encoder" | LOCK_FILE)
            )
        })
    });
    if foreign.is_some() {
        return Err(Error::InvalidArgument(format!(
            "{} is not empty: an index is built into a new or empty directory (twindex never mixes its files with others)",
            dir.display()
        )));
    }
    Ok(())
}

/// Remove what a failed [`Index::create`] wrote: the whole directory when it did not exist
/// before, else only index files (data files, manifest, lock, temporaries).
fn remove_created(dir: &Path, existed: bool) {
    if !existed {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if store::is_index_file(&name) || name == MANIFEST_FILE || name == LOCK_FILE {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// What [`append_add`] wrote.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The new items' ids.
    pub ids: Vec<u64>,
    /// Live items in the index now (checkpointed ones, plus logged adds, minus logged deletes).
    pub items: usize,
}

/// Add items to the index in `dir` without loading it: take the writer lock, read the manifest
/// and the write-ahead log (the log's records only: no data file is read or hashed, no graph
/// is built), check the batch as [`Index::log_add`] does, append one record and fsync. Readers
/// and the next writer apply it when they open the index. The encoder that made `vectors` is
/// checked against the manifest's (`encoder`: it must not have changed since the caller read
/// it). Returns `Ok(None)`, writing nothing, when the log has grown enough to want a checkpoint
/// ([`Index::wants_checkpoint`]'s rule): the caller then adds through an opened index, which
/// checkpoints, so the log stays short.
pub fn append_add(
    dir: &Path,
    encoder: &EncoderRecord,
    vectors: &[f32],
    items: Vec<Item>,
) -> Result<Option<Appended>> {
    let _lock = WriterLock::acquire(dir)?;
    let m = store::read_manifest(dir)?;
    if &m.encoder != encoder {
        return Err(Error::Msg(format!(
            "{}: the index's encoder changed while the items were being embedded; add them again",
            dir.display()
        )));
    }
    let Some(log) = Log::read(dir, &m)? else {
        return Ok(None);
    };
    let rows = check_batch(vectors, m.dim, items.len(), "added vectors")?;
    if m.normalize {
        check_directions(vectors, m.dim, "added vectors")?;
    }
    log.report_torn();
    let next_id = log.next_id;
    if rows > 0 {
        log.append(wal::Record::Add {
            first_id: next_id,
            dim: m.dim,
            vectors: prepare_rows(vectors, m.dim, m.normalize),
            items,
        })?;
    }
    let live = (m.item_count + log.added()).saturating_sub(log.deleted.len());
    Ok(Some(Appended {
        ids: (next_id..next_id + rows as u64).collect(),
        items: live + rows,
    }))
}

/// The write-ahead log as an appender without the loaded index sees it: its records checked
/// and summed up, ready to take one more.
struct Log {
    dir: PathBuf,
    generation: u64,
    valid_bytes: u64,
    torn_bytes: u64,
    /// The id the next add gets.
    next_id: u64,
    /// The ids each logged add took.
    added: Vec<std::ops::Range<u64>>,
    /// The ids logged deletes named.
    deleted: Vec<u64>,
}

impl Log {
    /// Read the log of the index whose manifest is `m` (the writer lock held); `None` when it
    /// is due a checkpoint (then the caller writes through an opened index, which checkpoints).
    fn read(dir: &Path, m: &Manifest) -> Result<Option<Log>> {
        let replay = wal::read(dir, m.generation)?;
        if log_due_checkpoint(replay.valid_bytes, m) {
            return Ok(None);
        }
        let path = dir.join(wal::wal_name(m.generation));
        let mut log = Log {
            dir: dir.to_path_buf(),
            generation: m.generation,
            valid_bytes: replay.valid_bytes,
            torn_bytes: replay.torn_bytes,
            next_id: m.next_id,
            added: Vec::new(),
            deleted: Vec::new(),
        };
        for r in &replay.records {
            match r {
                wal::Record::Add {
                    first_id,
                    dim,
                    items,
                    ..
                } => {
                    check_logged_add(&path, (*first_id, *dim), (log.next_id, m.dim))?;
                    let end = log.next_id + items.len() as u64;
                    log.added.push(log.next_id..end);
                    log.next_id = end;
                }
                wal::Record::Delete { ids } => log.deleted.extend(ids),
            }
        }
        Ok(Some(log))
    }

    /// Items the logged adds hold.
    fn added(&self) -> usize {
        self.added.iter().map(|r| (r.end - r.start) as usize).sum()
    }

    /// Say on stderr that a torn tail will be cut off, if there is one (once the new
    /// record's checks passed).
    fn report_torn(&self) {
        if self.torn_bytes > 0 {
            let path = self.dir.join(wal::wal_name(self.generation));
            warn_torn(&path, self.torn_bytes);
        }
    }

    /// Append `rec` after the valid records and fsync.
    fn append(&self, rec: wal::Record) -> Result<()> {
        let mut w = wal::WalWriter::open(&self.dir, self.generation, self.valid_bytes)?;
        w.append(&rec.encode())
    }
}

/// Check that each of `ids` is live (`slot` finds it, or says why not) and named once.
fn check_delete<T>(ids: &[u64], slot: impl Fn(u64) -> Result<T>) -> Result<Vec<T>> {
    let mut seen = HashSet::with_capacity(ids.len());
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        out.push(slot(id)?);
        if !seen.insert(id) {
            return Err(Error::InvalidArgument(format!(
                "id {id} is named twice in one delete"
            )));
        }
    }
    Ok(out)
}

/// Delete items from the index in `dir` without loading it: take the writer lock, read the
/// manifest, the items' catalogue (ids, mapped), the tombstones and the log's records, check
/// that each id is live and named once (the errors [`Index::delete`] gives), append one delete
/// record and fsync. Returns the live items left, or `Ok(None)`, writing nothing, when the log
/// wants a checkpoint or the index has no catalogue (written before it had one): the caller
/// then deletes through an opened index.
pub fn append_delete(dir: &Path, ids: &[u64]) -> Result<Option<usize>> {
    let _lock = WriterLock::acquire(dir)?;
    let m = store::read_manifest(dir)?;
    let Some(cat) = &m.files.catalog else {
        return Ok(None);
    };
    let Some(log) = Log::read(dir, &m)? else {
        return Ok(None);
    };
    let (stored, _) = Items::open_catalog(dir, &m.files.items, cat)?;
    let tpath = dir.join(&m.files.tombstones.name);
    let tomb = store::parse_ids(&store::read_data_file(dir, &m.files.tombstones)?, &tpath)?;
    let gone: HashSet<u64> = tomb.iter().chain(&log.deleted).copied().collect();
    check_delete(ids, |id| {
        let exists = stored.binary_search(&id).is_ok() || log.added.iter().any(|r| r.contains(&id));
        match exists && !gone.contains(&id) {
            true => Ok(()),
            false => Err(Error::UnknownId(id)),
        }
    })?;
    log.report_torn();
    if !ids.is_empty() {
        log.append(wal::Record::Delete { ids: ids.to_vec() })?;
    }
    let live = (stored.len() + log.added()).saturating_sub(gone.len() + ids.len());
    Ok(Some(live))
}

/// Whether a log of `log_bytes` over the data files `m` names is due a checkpoint: past
/// [`AUTO_CHECKPOINT_MIN_BYTES`] and [`AUTO_CHECKPOINT_FRACTION`] of the data.
fn log_due_checkpoint(log_bytes: u64, m: &Manifest) -> bool {
    let f = &m.files;
    let data = f.vectors.bytes
        + f.items.bytes
        + f.tombstones.bytes
        + f.graph.as_ref().map_or(0, |g| g.bytes);
    log_bytes > AUTO_CHECKPOINT_MIN_BYTES
        && log_bytes as f64 > AUTO_CHECKPOINT_FRACTION * data as f64
}

/// A logged add of ids from `got.0` at dimension `got.1` must continue the ids at `want.0` in
/// an index of dimension `want.1`; else the log at `path` is corrupt.
fn check_logged_add(path: &Path, got: (u64, usize), want: (u64, usize)) -> Result<()> {
    if got != want {
        return Err(Error::corrupt(
            path,
            format!(
                "an add of ids from {} (dimension {}) where the index expects id {} (dimension {})",
                got.0, got.1, want.0, want.1
            ),
        ));
    }
    Ok(())
}

/// Say on stderr that a torn tail of `bytes` was dropped from the log at `path`.
fn warn_torn(path: &Path, bytes: u64) {
    eprintln!(
        "twindex: {}: dropped a torn record ({bytes} bytes) at the end of the write-ahead log: a write cut short by a crash, never acknowledged",
        path.display()
    );
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
