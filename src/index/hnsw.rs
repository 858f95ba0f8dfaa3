//! twindex's own HNSW graph (Malkov & Yashunin, "Efficient and robust approximate nearest
//! neighbor search using Hierarchical Navigable Small World graphs", 2016), laid out like
//! hnswlib for speed:
//!
//! * each node's level-0 link list and its vector share one 64-byte-aligned block, so a node
//!   costs one contiguous run of cache lines; upper-level links live in a separate arena;
//! * distances use the SIMD kernels of [`super::distance`]; for `l2` they stop early once the
//!   partial sum passes the current ef-th best (exact results, less memory traffic);
//! * the neighbours about to be scored are prefetched (first line of each, then all of the next
//!   one while the current one is scored), and the node blocks sit on transparent huge pages
//!   (a graph opened from disk is mapped from its file instead, see [`HnswGraph::map_graph`],
//!   until [`HnswGraph::copy_into_memory`]);
//! * visited sets are generation-stamped `Vec<u32>`s taken from a pool, so a query allocates
//!   nothing but its result;
//! * neighbours are chosen with the paper's heuristic (algorithm 4, as hnswlib does it);
//!   levels are drawn with `mult = 1/ln(M)`, level 0 keeps `M0 = 2M` links;
//! * with `quantize = sq8` ([`super::quantize`]) a block holds the links and the node's SQ8
//!   codes instead of its f32 vector (about a quarter of the bytes); the walk scores the query
//!   (f32) against codes, neighbour selection while building scores codes against codes, and
//!   the best `rerank` candidates of a search are re-scored on the f32 vectors, kept apart
//!   ([`super::rows::Rows`]: memory-mapped from the vectors file when opened from disk);
//! * a batch is inserted in parallel (rayon) under link-list locks, as hnswlib's per-node
//!   ones but striped (node `i` takes lock `i % LOCK_STRIPES`; an insert holds one at a
//!   time); a node
//!   searches all its levels first and links bottom-up, so no concurrent insertion can reach
//!   it on a level whose lower lists are still empty.
//!
//! Queries take `&self` and read the graph without locks (one short lock takes a scratch space
//! from the pool): insertion needs `&mut self`, so no query runs while the graph changes.

use crate::error::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BinaryHeap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtOrd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::distance::{kernels, prefetch, DistanceKernels};
use super::linebuf::{LineBuf, FILE_ALIGN};
use super::metric::{check_rows, Metric};
use super::quantize::{
    dot_i16_u8_kernel, dot_u8_kernel, dot_u8_u8_kernel, quantize_weights, I16Kernel, Quantize, Sq8,
    U8Kernel, U8U8Kernel, I16_MAX_DIM,
};
use super::rows::Rows;
use super::vector_index::{prepare_query, Hit, Nearest, Progress, Scored, SlotFilter, VectorIndex};

/// HNSW construction and search parameters (also the graph flags of `twindex index build`,
/// whose seed default is 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct HnswParams {
    /// HNSW links per node (layer 0 keeps 2m). Default 16. Larger: better recall at a given ef
    /// (and on high-dimensional data), more memory, slower build.
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    /// HNSW candidate list while building. Default 200. Larger: better graph (higher recall),
    /// slower build.
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// Default search breadth for queries (raised to k when smaller). Default 64. Larger:
    /// better recall, slower queries.
    #[arg(long, default_value_t = 64)]
    pub ef_search: usize,
    /// Seed for the HNSW level draws; node levels depend only on the seed and the slot number.
    /// Library default 42.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What the HNSW walk scores: none (f32 vectors) or sq8 (one byte a dimension, the best
    /// --rerank candidates re-scored on the f32 vectors, which stay on disk, memory-mapped).
    /// sq8: about a quarter of the memory and of the memory traffic per distance; a slightly
    /// worse walk, corrected by re-ranking.
    #[serde(skip_serializing_if = "Quantize::is_none")]
    #[arg(long, default_value = "none")]
    pub quantize: Quantize,
    /// Quantized indexes: candidates re-scored exactly per query (the walk's breadth is raised
    /// to at least this). Default 32. Larger: better recall, slower queries.
    #[serde(skip_serializing_if = "is_default_rerank")]
    #[arg(long, default_value_t = DEFAULT_RERANK)]
    pub rerank: usize,
}

/// Default of [`HnswParams::rerank`].
pub const DEFAULT_RERANK: usize = 32;

fn is_default_rerank(r: &usize) -> bool {
    *r == DEFAULT_RERANK
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            seed: 42,
            quantize: Quantize::None,
            rerank: DEFAULT_RERANK,
        }
    }
}

impl HnswParams {
    /// Reject values the graph cannot work with.
    pub fn validate(&self) -> Result<()> {
        if !(2..=1024).contains(&self.m) {
            return Err(Error::InvalidArgument(format!(
                "hnsw m = {} is out of range 2..=1024",
                self.m
            )));
        }
        if self.ef_construction == 0 || self.ef_construction > 100_000 {
            return Err(Error::InvalidArgument(format!(
                "hnsw ef_construction = {} is out of range 1..=100000",
                self.ef_construction
            )));
        }
        if self.ef_search == 0 {
            return Err(Error::InvalidArgument(
                "hnsw ef_search must be at least 1".into(),
            ));
        }
        if self.rerank == 0 || self.rerank > 100_000 {
            return Err(Error::InvalidArgument(format!(
                "hnsw rerank = {} is out of range 1..=100000",
                self.rerank
            )));
        }
        Ok(())
    }
}

/// One cache line; blocks are whole lines so every f32 vector starts 64-byte aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u32; LINE_WORDS]);
const LINE_WORDS: usize = 16;

/// Highest level a node may get (the chance of reaching it with M = 2 is 2^-30).
const MAX_LEVEL: usize = 30;
const EMPTY: u64 = u64::MAX;
const GRAPH_MAGIC: &[u8; 8] = b"TWXHNSW\0";
/// Version 1: links only. Version 2: links, then the quantizer (quantized graphs). Versions
/// 3 and 4 (what is written now): the node blocks as in memory, page-aligned so that opening
/// maps them; see [`HnswGraph::write_graph`].
const GRAPH_VERSION: u32 = 1;
const GRAPH_VERSION_QUANTIZED: u32 = 2;
const GRAPH_VERSION_BLOCKS: u32 = 3;
const GRAPH_VERSION_QUANTIZED_BLOCKS: u32 = 4;
/// Header bytes of version 1 and 2; versions 3 and 4 add the block stride.
const HEADER_BYTES_V1: usize = 40;
const HEADER_BYTES: usize = 44;
/// The quantizer kind in a version-2 graph file.
const QUANT_SQ8: u32 = 1;

/// Per-search scratch space, pooled so that queries allocate nothing.
#[derive(Default)]
struct Scratch {
    /// The visit marks, one a node: grown without copying as the graph grows (a reader's
    /// next search after an add would otherwise copy megabytes at 1M nodes).
    tags: LineBuf<u32>,
    tag: u32,
    cand: BinaryHeap<Nearest>,
    top: BinaryHeap<Scored>,
    buf: Vec<u32>,
    /// Candidates found for the node being inserted, one list per level.
    layers: Vec<Vec<Scored>>,
    selected: Vec<Scored>,
    prune: Vec<Scored>,
    /// Quantized graphs: the weights of the probe being searched.
    w: ProbeBuf,
}

/// A probe's weights in f32 and rounded to i16.
#[derive(Default)]
struct ProbeBuf {
    w: Vec<f32>,
    w16: Vec<i16>,
}

/// What a search scores stored nodes against: a prepared f32 vector and, for a quantized
/// graph, its weights and constant (see [`super::quantize`]).
#[derive(Clone, Copy)]
struct Probe<'a> {
    v: &'a [f32],
    w: &'a [f32],
    /// `w` rounded to i16 with the scale `ws` (the walk's kernel; see [`super::quantize`]).
    w16: &'a [i16],
    ws: f32,
    c: f32,
    /// Weight of a stored node's term (1 for l2, 0 for cosine and dot).
    tw: f32,
}

impl Scratch {
    fn start(&mut self, n: usize) {
        if self.tags.len() < n {
            self.tags.resize_zeroed(n);
        }
        self.tag = self.tag.wrapping_add(1);
        if self.tag == 0 {
            self.tags.iter_mut().for_each(|t| *t = 0);
            self.tag = 1;
        }
        self.cand.clear();
        self.top.clear();
    }

    /// Mark `n` visited; true if it was not visited before in this search.
    #[inline(always)]
    fn visit(&mut self, n: u32) -> bool {
        let t = &mut self.tags[n as usize];
        if *t == self.tag {
            false
        } else {
            *t = self.tag;
            true
        }
    }
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pack(node: usize, level: usize) -> u64 {
    ((level as u64) << 32) | node as u64
}

fn unpack(e: u64) -> (usize, usize) {
    ((e & 0xffff_ffff) as usize, (e >> 32) as usize)
}

/// splitmix64: the level of a slot depends only on (seed, slot).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Mark every node that reaches `to` (through the reversed links) in `bwd`.
fn mark_reverse(to: usize, start: &[usize], rev: &[u32], bwd: &mut [bool], stack: &mut Vec<usize>) {
    if bwd[to] {
        return;
    }
    bwd[to] = true;
    stack.clear();
    stack.push(to);
    while let Some(n) = stack.pop() {
        for &x in &rev[start[n]..start[n + 1]] {
            if !bwd[x as usize] {
                bwd[x as usize] = true;
                stack.push(x as usize);
            }
        }
    }
}

/// Batches of at most this many rows are inserted on the calling thread.
const SERIAL_INSERTS: usize = 4;

/// Locks of the nodes' link lists (node `i` takes lock `i % LOCK_STRIPES`): enough that
/// inserting threads rarely share one, few enough to cost nothing per node.
const LOCK_STRIPES: usize = 4096;

/// `add` repairs unreachable nodes itself when the batch holds at least 1/this of the graph.
const REPAIR_BATCH_RATIO: usize = 64;

/// The hierarchical navigable small-world graph. See the module documentation.
pub struct HnswGraph {
    metric: Metric,
    dim: usize,
    params: HnswParams,
    m0: usize,
    mult: f64,
    /// Words before the payload in a block: link count + `m0` links (padded to a line when
    /// the payload is an f32 vector).
    header_words: usize,
    /// Words per block (a multiple of [`LINE_WORDS`]).
    stride_words: usize,
    len: usize,
    /// The last `unlinked` nodes are stored but not in the graph (see
    /// [`HnswGraph::append_unlinked`]): searches score them one by one.
    unlinked: usize,
    /// Node blocks, `stride_words / LINE_WORDS` lines each, in one mapping that grows without
    /// copying (see [`LineBuf`]).
    blocks: LineBuf<Line>,
    /// Each node's level, the start of its upper-level lists in `upper` (`level` lists of
    /// `1 + m` words) and those lists: like the blocks, they grow without copying, so no add
    /// stalls on a reallocation. `upper` is read and written through raw pointers only (the
    /// parallel insertion writes it under the nodes' locks).
    levels: LineBuf<u8>,
    upper_off: LineBuf<usize>,
    upper: LineBuf<u32>,
    /// The nodes' link-list locks, striped.
    locks: Box<[Mutex<()>]>,
    /// `EMPTY` or `pack(node, level)` of the entry point.
    entry: AtomicU64,
    global: Mutex<()>,
    pool: Mutex<Vec<Scratch>>,
    kernels: DistanceKernels,
    u8_kernel: U8Kernel,
    u8u8_kernel: U8U8Kernel,
    /// The integer kernel of the walk (dimensions up to `I16_MAX_DIM`; else `u8_kernel`).
    i16_kernel: Option<I16Kernel>,
    /// The trained quantizer of a quantized graph (trained on the first batch added, again
    /// each time the graph has doubled since).
    quant: Option<Sq8>,
    /// Rows the quantizer was last trained on.
    trained_on: usize,
    /// Quantized graphs: the full-precision vectors (the blocks hold the codes).
    exact: Rows,
    /// Read from a graph file of format version 1 or 2 (no blocks): the next checkpoint
    /// should write it anew, so that later opens map it.
    legacy_file: bool,
}

// SAFETY: the shared-mutable data (the blocks' mapping, `upper`) is written only (a) through
// `&mut self`, or (b) during `add`'s parallel insertion, where every read and write of a node's
// link lists happens under that node's lock in `locks` (striped; one held at a time), and
// vectors and levels are written before the parallel phase starts and never during it. Queries (`&self`) read without locks, which is
// sound because (b) runs inside `add(&mut self)`.
unsafe impl Sync for HnswGraph {}

impl std::fmt::Debug for HnswGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswGraph")
            .field("metric", &self.metric)
            .field("dim", &self.dim)
            .field("params", &self.params)
            .field("len", &self.len)
            .field("max_level", &self.max_level())
            .finish()
    }
}

impl HnswGraph {
    /// An empty graph for vectors of dimension `dim`.
    pub fn new(dim: usize, metric: Metric, params: HnswParams) -> Result<Self> {
        params.validate()?;
        if dim == 0 {
            return Err(Error::InvalidArgument(
                "dimension must be at least 1".into(),
            ));
        }
        let m0 = 2 * params.m;
        // The payload: the vector (starting on a cache line, for the f32 kernels' loads), or
        // the term t and the codes, right after the links (fewer lines a node).
        let (header_words, payload_words) = match params.quantize {
            Quantize::None => ((1 + m0).div_ceil(LINE_WORDS) * LINE_WORDS, dim),
            Quantize::Sq8 => (1 + m0, 1 + dim.div_ceil(4)),
        };
        let stride_words = (header_words + payload_words).div_ceil(LINE_WORDS) * LINE_WORDS;
        Ok(HnswGraph {
            metric,
            dim,
            params,
            m0,
            mult: 1.0 / (params.m as f64).ln(),
            header_words,
            stride_words,
            len: 0,
            unlinked: 0,
            blocks: LineBuf::default(),
            levels: LineBuf::default(),
            upper_off: LineBuf::default(),
            upper: LineBuf::default(),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            entry: AtomicU64::new(EMPTY),
            global: Mutex::new(()),
            pool: Mutex::new(Vec::new()),
            kernels: *kernels(),
            u8_kernel: dot_u8_kernel(),
            u8u8_kernel: dot_u8_u8_kernel(),
            i16_kernel: (dim <= I16_MAX_DIM).then(dot_i16_u8_kernel),
            quant: None,
            trained_on: 0,
            exact: Rows::from_vec(dim, Vec::new()),
            legacy_file: false,
        })
    }

    /// Whether this graph was read from a file of format version 1 or 2, which opening cannot
    /// map (a checkpoint writes the current format).
    pub fn read_from_legacy_file(&self) -> bool {
        self.legacy_file
    }

    /// Copy mapped node blocks into memory of their own (see [`LineBuf::copy_into_memory`]).
    pub fn copy_into_memory(&mut self) -> Result<()> {
        self.blocks.copy_into_memory()
    }

    /// Whether the walk scores quantized codes.
    pub fn is_quantized(&self) -> bool {
        self.params.quantize != Quantize::None
    }

    /// The trained quantizer (quantized graphs with at least one node).
    pub fn quantizer(&self) -> Option<&Sq8> {
        self.quant.as_ref()
    }

    /// How many of the full-precision vectors are memory-mapped (quantized graphs opened from
    /// disk) rather than in memory.
    pub fn mapped_rows(&self) -> usize {
        self.exact.mapped_rows()
    }

    /// Change how many candidates a quantized search re-ranks (a search-time setting).
    pub fn set_rerank(&mut self, rerank: usize) -> Result<()> {
        let p = HnswParams {
            rerank,
            ..self.params
        };
        p.validate()?;
        self.params = p;
        Ok(())
    }

    /// The parameters the graph was built with.
    pub fn params(&self) -> &HnswParams {
        &self.params
    }

    /// Highest level in the graph (0 when empty).
    pub fn max_level(&self) -> usize {
        match self.entry.load(AtOrd::Acquire) {
            EMPTY => 0,
            e => unpack(e).1,
        }
    }

    /// Mean number of level-0 links per node.
    pub fn mean_degree(&self) -> f64 {
        if self.len == 0 {
            return 0.0;
        }
        let total: usize = (0..self.len).map(|i| self.list(i, 0).1).sum();
        total as f64 / self.len as f64
    }

    /// The level-`level` link list of `node`: the count, then the links.
    #[inline(always)]
    fn links(&self, node: usize, level: usize) -> *mut u32 {
        if level == 0 {
            self.block(node)
        } else {
            let off = self.upper_off[node] + (level - 1) * (1 + self.params.m);
            debug_assert!(off + 1 + self.params.m <= self.upper.len());
            // SAFETY: the list lies inside `upper` (its node's level covers `level`).
            unsafe { self.upper.as_ptr().add(off) }
        }
    }

    /// `node`'s link list at `level` and its count, clamped to the list's capacity: the
    /// level-0 lists of a mapped graph are not read on open (see [`HnswGraph::map_graph`]), so
    /// every reader clamps the count and skips links that are not nodes (`>= len`).
    #[inline(always)]
    fn list(&self, node: usize, level: usize) -> (*mut u32, usize) {
        let p = self.links(node, level);
        let cap = if level == 0 { self.m0 } else { self.params.m };
        // SAFETY: the count word heads every list.
        (p, (unsafe { *p } as usize).min(cap))
    }

    #[inline(always)]
    fn block(&self, node: usize) -> *mut u32 {
        let lines = self.stride_words / LINE_WORDS;
        debug_assert!((node + 1) * lines <= self.blocks.len());
        // SAFETY: every node below `len` has its whole block in the buffer (`grow`), and nodes
        // come from `len`-checked ids and links validated when read or written by `add`.
        unsafe { self.blocks.as_ptr().add(node * lines) as *mut u32 }
    }

    #[inline(always)]
    fn vec_ptr(&self, node: usize) -> *const f32 {
        // SAFETY: the vector lies inside node's block (header_words + dim <= stride_words).
        unsafe { self.block(node).add(self.header_words) as *const f32 }
    }

    /// Unquantized graphs: node's vector, in its block.
    #[inline(always)]
    fn vec_of(&self, node: usize) -> &[f32] {
        // SAFETY: the dim floats after the header are node's vector, written before the node
        // became reachable and never changed afterwards.
        unsafe { std::slice::from_raw_parts(self.vec_ptr(node), self.dim) }
    }

    /// Quantized graphs: node's term t and codes, in its block.
    #[inline(always)]
    fn code_of(&self, node: usize) -> (f32, &[u8]) {
        let p = self.vec_ptr(node);
        // SAFETY: a quantized block's payload is t (one f32) then dim code bytes, written
        // before the node became reachable (and rewritten only through `&mut self`).
        unsafe {
            (
                *p,
                std::slice::from_raw_parts(p.add(1) as *const u8, self.dim),
            )
        }
    }

    /// Node's full-precision vector (prepared).
    #[inline(always)]
    fn exact(&self, node: usize) -> &[f32] {
        if self.is_quantized() {
            self.exact.row(node)
        } else {
            self.vec_of(node)
        }
    }

    /// Bytes of a node's payload that a distance reads.
    #[inline(always)]
    fn payload_bytes(&self) -> usize {
        if self.is_quantized() {
            4 + self.dim
        } else {
            4 * self.dim
        }
    }

    #[inline(always)]
    fn key(&self, a: &[f32], b: &[f32]) -> f32 {
        self.metric.key(&self.kernels, a, b)
    }

    /// The probe of a prepared vector `v`; `w` holds its weights when the graph is quantized.
    #[inline(always)]
    fn probe<'a>(&self, v: &'a [f32], b: &'a mut ProbeBuf) -> Probe<'a> {
        match &self.quant {
            Some(sq) => {
                let c = sq.probe(v, &mut b.w);
                let ws = if self.i16_kernel.is_some() {
                    quantize_weights(&b.w, &mut b.w16)
                } else {
                    0.0
                };
                Probe {
                    v,
                    w: &b.w,
                    w16: &b.w16,
                    ws,
                    c,
                    tw: sq.term_weight(),
                }
            }
            None => Probe {
                v,
                w: &[],
                w16: &[],
                ws: 0.0,
                c: 0.0,
                tw: 0.0,
            },
        }
    }

    /// The ordering key of `node` to the probe (on the codes for a quantized graph).
    #[inline(always)]
    fn dist(&self, p: &Probe, node: usize) -> f32 {
        if self.is_quantized() {
            let (t, codes) = self.code_of(node);
            let s = match self.i16_kernel {
                Some(k) => p.ws * k(p.w16, codes) as f32,
                None => (self.u8_kernel)(p.w, codes),
            };
            p.c + p.tw * t + s
        } else {
            self.key(p.v, self.vec_of(node))
        }
    }

    /// The ordering key between two stored nodes (code to code for a quantized graph); for
    /// unquantized `l2` some value > `bound` when the key is above it.
    #[inline(always)]
    fn dist_nodes(&self, a: usize, b: usize, bound: f32) -> f32 {
        match &self.quant {
            Some(sq) => {
                let (ta, ca) = self.code_of(a);
                let (tb, cb) = self.code_of(b);
                sq.symmetric(self.u8u8_kernel, ta, ca, tb, cb)
            }
            None => match self.metric {
                Metric::L2 => {
                    (self.kernels.l2_squared_bounded)(self.vec_of(a), self.vec_of(b), bound)
                }
                _ => self.key(self.vec_of(a), self.vec_of(b)),
            },
        }
    }

    /// [`Self::dist`] when it is <= `bound`, otherwise some value > `bound` (for unquantized
    /// `l2` the kernel stops early once its growing partial sum passes the bound).
    #[inline(always)]
    fn dist_bounded(&self, p: &Probe, node: usize, bound: f32) -> f32 {
        match self.metric {
            Metric::L2 if !self.is_quantized() => {
                (self.kernels.l2_squared_bounded)(p.v, self.vec_of(node), bound)
            }
            _ => self.dist(p, node),
        }
    }

    fn take_scratch(&self) -> Scratch {
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    fn put_scratch(&self, s: Scratch) {
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(s);
    }

    fn random_level(&self, slot: usize) -> usize {
        let h = mix(self.params.seed ^ mix(slot as u64));
        // u in (0, 1]
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        ((-u.ln() * self.mult) as usize).min(MAX_LEVEL)
    }

    /// Greedy descent from `cur` through levels `from` down to `to + 1` (ef = 1).
    fn greedy<const BUILD: bool>(
        &self,
        q: &Probe,
        mut cur: Scored,
        from: usize,
        to: usize,
    ) -> Scored {
        let mut level = from;
        while level > to {
            loop {
                let mut changed = false;
                let _g = BUILD.then(|| self.lock_node(cur.slot as usize));
                let (p, cnt) = self.list(cur.slot as usize, level);
                for j in 0..cnt {
                    // SAFETY: j < the clamped count, inside the list; links that are not
                    // nodes are skipped; in BUILD mode the node lock is held.
                    let n = unsafe { *p.add(1 + j) };
                    if n as usize >= self.len {
                        continue;
                    }
                    let key = self.dist_bounded(q, n as usize, cur.key);
                    if key < cur.key {
                        cur = Scored { key, slot: n };
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
            level -= 1;
        }
        cur
    }

    /// Best-first search of one level from `entry`; leaves up to `ef` nearest kept nodes in
    /// `s.top`.
    fn search_layer<const BUILD: bool, F: Fn(usize) -> bool + ?Sized>(
        &self,
        q: &Probe,
        entry: Scored,
        level: usize,
        ef: usize,
        s: &mut Scratch,
        keep: &F,
    ) {
        s.start(self.len);
        s.visit(entry.slot);
        s.cand.push(Nearest(entry));
        if keep(entry.slot as usize) {
            s.top.push(entry);
        }
        while let Some(Nearest(c)) = s.cand.pop() {
            if s.top.len() >= ef && s.top.peek().is_some_and(|w| c.key > w.key) {
                break;
            }
            s.buf.clear();
            {
                let _g = BUILD.then(|| self.lock_node(c.slot as usize));
                let (p, cnt) = self.list(c.slot as usize, level);
                for j in 0..cnt {
                    // SAFETY: as in `greedy`.
                    let n = unsafe { *p.add(1 + j) };
                    if (n as usize) < self.len && s.visit(n) {
                        prefetch(self.vec_ptr(n as usize));
                        s.buf.push(n);
                    }
                }
            }
            for (i, &n) in s.buf.iter().enumerate() {
                // While this vector is scored, fetch all of the next one (the hardware
                // prefetcher alone stalls on the first lines of each new vector).
                if let Some(&next) = s.buf.get(i + 1) {
                    let p = self.vec_ptr(next as usize) as *const u8;
                    for off in (64..self.payload_bytes()).step_by(64) {
                        prefetch(p.wrapping_add(off));
                    }
                }
                let bound = match s.top.peek() {
                    Some(w) if s.top.len() >= ef => w.key,
                    _ => f32::INFINITY,
                };
                let key = self.dist_bounded(q, n as usize, bound);
                if s.top.len() < ef || key < bound {
                    let sc = Scored { key, slot: n };
                    s.cand.push(Nearest(sc));
                    if keep(n as usize) {
                        s.top.push(sc);
                        if s.top.len() > ef {
                            s.top.pop();
                        }
                    }
                }
            }
        }
    }

    /// The neighbour-selection heuristic: walk `cands` (sorted nearest first, keys relative to
    /// the base node) and keep a candidate only if it is nearer to the base than to every
    /// candidate already kept; at most `m`.
    fn select(&self, cands: &[Scored], m: usize, out: &mut Vec<Scored>) {
        out.clear();
        if cands.len() <= m {
            out.extend_from_slice(cands);
            return;
        }
        for c in cands {
            if out.len() >= m {
                break;
            }
            if out
                .iter()
                .all(|s| self.dist_nodes(c.slot as usize, s.slot as usize, c.key) >= c.key)
            {
                out.push(*c);
            }
        }
    }

    /// Link `q` at `level` to its selected neighbours and them back to it, pruning full lists.
    fn connect(&self, q: usize, level: usize, s: &mut Scratch) {
        let cap = if level == 0 { self.m0 } else { self.params.m };
        let mut selected = std::mem::take(&mut s.selected);
        self.select(&s.layers[level], self.params.m, &mut selected);
        {
            let _g = self.lock_node(q);
            let p = self.links(q, level);
            // SAFETY: q's lock is held; selected.len() <= m <= cap.
            unsafe {
                *p = selected.len() as u32;
                for (j, n) in selected.iter().enumerate() {
                    *p.add(1 + j) = n.slot;
                }
            }
        }
        for n in &selected {
            let ni = n.slot as usize;
            let _g = self.lock_node(ni);
            let (p, cnt) = self.list(ni, level);
            // SAFETY: n's lock is held; counts stay <= cap; links that are not nodes dropped.
            unsafe {
                if cnt < cap {
                    *p.add(1 + cnt) = q as u32;
                    *p = (cnt + 1) as u32;
                } else {
                    s.prune.clear();
                    s.prune.push(Scored {
                        key: self.dist_nodes(ni, q, f32::INFINITY),
                        slot: q as u32,
                    });
                    for j in 0..cnt {
                        let x = *p.add(1 + j);
                        if x as usize >= self.len {
                            continue;
                        }
                        s.prune.push(Scored {
                            key: self.dist_nodes(ni, x as usize, f32::INFINITY),
                            slot: x,
                        });
                    }
                    s.prune.sort_unstable();
                    let mut kept = Vec::with_capacity(cap);
                    self.select(&s.prune, cap, &mut kept);
                    *p = kept.len() as u32;
                    for (j, k) in kept.iter().enumerate() {
                        *p.add(1 + j) = k.slot;
                    }
                }
            }
        }
        s.selected = selected;
    }

    /// Insert node `q`, whose vector, level and (empty) link lists already exist.
    fn insert(&self, q: usize, s: &mut Scratch) {
        let level = self.levels[q] as usize;
        let qv = self.exact(q);
        let mut global = None;
        let mut ep = self.entry.load(AtOrd::Acquire);
        if ep == EMPTY || level > unpack(ep).1 {
            global = Some(lock(&self.global));
            ep = self.entry.load(AtOrd::Acquire);
            if ep == EMPTY {
                self.entry.store(pack(q, level), AtOrd::Release);
                return;
            }
            if level <= unpack(ep).1 {
                global = None;
            }
        }
        let (ep_node, ep_level) = unpack(ep);
        let mut w = std::mem::take(&mut s.w);
        let probe = self.probe(qv, &mut w);
        let start = Scored {
            key: self.dist(&probe, ep_node),
            slot: ep_node as u32,
        };
        let mut cur = self.greedy::<true>(&probe, start, ep_level, level);
        // Search every level top-down first, then link bottom-up: q becomes reachable on a
        // level only when its lists on all lower levels are set, so a concurrent insertion
        // that reaches q never descends into an empty list (which would leave that node with
        // a single link and likely unreachable).
        let top = level.min(ep_level);
        if s.layers.len() <= top {
            s.layers.resize_with(top + 1, Vec::new);
        }
        for lev in (0..=top).rev() {
            self.search_layer::<true, _>(&probe, cur, lev, self.params.ef_construction, s, &|_| {
                true
            });
            let found = &mut s.layers[lev];
            found.clear();
            found.extend(s.top.drain().filter(|c| c.slot as usize != q));
            found.sort_unstable();
            if let Some(first) = found.first() {
                cur = *first;
            }
        }
        s.w = w;
        for lev in 0..=top {
            self.connect(q, lev, s);
        }
        if global.is_some() && level > unpack(self.entry.load(AtOrd::Acquire)).1 {
            self.entry.store(pack(q, level), AtOrd::Release);
        }
    }

    /// Make level 0 strongly connected through the entry point: every node reachable from it
    /// and able to reach it, so that a search started anywhere can find any node. Pruning can
    /// take a node's last in-link away or cut a group of near-duplicates off. An unreached node
    /// gets an in-link from its nearest reachable node; a node that cannot get back gets an
    /// out-link to its nearest node that can. A full list gives up its most redundant link (the
    /// one whose target has the most other in-links). Returns how many links were made.
    /// O(nodes x links) a round plus a search per node fixed.
    pub fn repair_unreachable(&mut self) -> usize {
        self.link_pending();
        let ep = self.entry.load(AtOrd::Acquire);
        if ep == EMPTY || self.len < 2 {
            return 0;
        }
        let entry = unpack(ep).0;
        let n = self.len;
        let mut fixed = 0;
        let mut stack = Vec::new();
        for _round in 0..8 {
            let indeg = self.in_degrees();
            let mut fwd = vec![false; n];
            self.mark_reachable(entry, &mut fwd, &mut stack);
            let mut changed = false;
            for o in 0..n {
                if fwd[o] {
                    continue;
                }
                if let Some(c) = self.nearest_where(o, |c| fwd[c]) {
                    self.put_link(c, o, &indeg);
                    fixed += 1;
                    changed = true;
                    self.mark_reachable(o, &mut fwd, &mut stack);
                }
            }
            let indeg = self.in_degrees();
            let (start, rev) = self.reverse_links();
            let mut bwd = vec![false; n];
            mark_reverse(entry, &start, &rev, &mut bwd, &mut stack);
            for u in 0..n {
                if bwd[u] {
                    continue;
                }
                // Near nodes may all be cut off with u (a group of near-duplicates): look
                // wider, and fall back on the entry point itself.
                let t = self
                    .nearest_where(u, |t| bwd[t] && t != u)
                    .or_else(|| self.nearest_wide(u, |t| bwd[t] && t != u))
                    .or((u != entry).then_some(entry));
                if let Some(t) = t {
                    self.put_link(u, t, &indeg);
                    fixed += 1;
                    changed = true;
                    mark_reverse(u, &start, &rev, &mut bwd, &mut stack);
                }
            }
            if !changed {
                break;
            }
        }
        fixed
    }

    /// In-degree of every node at level 0.
    fn in_degrees(&self) -> Vec<u32> {
        let mut indeg = vec![0u32; self.len];
        for i in 0..self.len {
            let (p, cnt) = self.list(i, 0);
            for j in 0..cnt {
                // SAFETY: no concurrent writer (called from `&mut self`); j < the count.
                if let Some(d) = indeg.get_mut(unsafe { *p.add(1 + j) } as usize) {
                    *d += 1;
                }
            }
        }
        indeg
    }

    /// Level-0 links reversed, as offsets `start` into `rev` (CSR).
    fn reverse_links(&self) -> (Vec<usize>, Vec<u32>) {
        let indeg = self.in_degrees();
        let mut start = Vec::with_capacity(self.len + 1);
        start.push(0);
        for d in &indeg {
            start.push(start.last().expect("non-empty") + *d as usize);
        }
        let mut fill = start.clone();
        let mut rev = vec![0u32; start[self.len]];
        for i in 0..self.len {
            let (p, cnt) = self.list(i, 0);
            for j in 0..cnt {
                // SAFETY: as in `in_degrees`.
                let t = unsafe { *p.add(1 + j) } as usize;
                if t >= self.len {
                    continue;
                }
                rev[fill[t]] = i as u32;
                fill[t] += 1;
            }
        }
        (start, rev)
    }

    /// The nearest node to node `o` (by a search, so among nodes reachable from the entry)
    /// for which `ok` holds.
    fn nearest_where(&self, o: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let ov = self.exact(o).to_vec();
        let ef = self.params.ef_construction.max(32);
        self.knn(&ov, ef, ef, &|s: usize| s != o && ok(s))
            .first()
            .map(|c| c.slot as usize)
    }

    /// [`Self::nearest_where`] with a breadth of 16 x `ef_construction` (at least 512).
    fn nearest_wide(&self, o: usize, ok: impl Fn(usize) -> bool) -> Option<usize> {
        let ov = self.exact(o).to_vec();
        let ef = (16 * self.params.ef_construction).max(512);
        self.knn(&ov, ef, ef, &|s: usize| s != o && ok(s))
            .first()
            .map(|c| c.slot as usize)
    }

    /// Add the level-0 link `from -> to`, in a free slot or instead of `from`'s most redundant
    /// link (the target with the most in-links).
    fn put_link(&mut self, from: usize, to: usize, indeg: &[u32]) {
        let (p, cnt) = self.list(from, 0);
        // SAFETY: `&mut self`; j < the clamped count; a link that is not a node has no
        // in-degree and is the first replaced.
        unsafe {
            if (0..cnt).any(|j| *p.add(1 + j) as usize == to) {
                return;
            }
            if cnt < self.m0 {
                *p.add(1 + cnt) = to as u32;
                *p = (cnt + 1) as u32;
            } else {
                let j = (0..cnt)
                    .max_by_key(|&j| indeg.get(*p.add(1 + j) as usize).unwrap_or(&u32::MAX))
                    .expect("a full list is not empty");
                *p.add(1 + j) = to as u32;
            }
        }
    }

    /// Mark what `from` reaches at level 0.
    fn mark_reachable(&self, from: usize, reach: &mut [bool], stack: &mut Vec<usize>) {
        if reach[from] {
            return;
        }
        reach[from] = true;
        stack.clear();
        stack.push(from);
        while let Some(n) = stack.pop() {
            let (p, cnt) = self.list(n, 0);
            for j in 0..cnt {
                // SAFETY: called with no concurrent writer (from `&mut self` methods).
                let x = unsafe { *p.add(1 + j) } as usize;
                if x < self.len && !reach[x] {
                    reach[x] = true;
                    stack.push(x);
                }
            }
        }
    }

    /// The `k` nearest kept slots to a prepared query, nearest first, as ordering keys.
    fn knn<F: Fn(usize) -> bool + ?Sized>(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        keep: &F,
    ) -> Vec<Scored> {
        let ep = self.entry.load(AtOrd::Acquire);
        if ep == EMPTY || k == 0 {
            return Vec::new();
        }
        let (ep_node, ep_level) = unpack(ep);
        let mut s = self.take_scratch();
        let mut w = std::mem::take(&mut s.w);
        let probe = self.probe(q, &mut w);
        let start = Scored {
            key: self.dist(&probe, ep_node),
            slot: ep_node as u32,
        };
        let cur = self.greedy::<false>(&probe, start, ep_level, 0);
        let quantized = self.is_quantized();
        let breadth = if quantized {
            ef.max(k).max(self.params.rerank)
        } else {
            ef.max(k)
        };
        self.search_layer::<false, F>(&probe, cur, 0, breadth, &mut s, keep);
        s.w = w;
        let mut out: Vec<Scored> = s.top.drain().collect();
        self.put_scratch(s);
        out.sort_unstable();
        if quantized {
            // Re-rank the walk's best candidates on the full-precision vectors.
            out.truncate(self.params.rerank.max(k));
            // The first line of every row at once (their page walks overlap), then all of the
            // next row while one is scored.
            for c in &out {
                prefetch(self.exact.row_ptr(c.slot as usize));
            }
            for i in 0..out.len() {
                if let Some(next) = out.get(i + 1) {
                    let p = self.exact.row_ptr(next.slot as usize) as *const u8;
                    for off in (0..self.dim * 4).step_by(64) {
                        prefetch(p.wrapping_add(off));
                    }
                }
                out[i].key = self.key(q, self.exact.row(out[i].slot as usize));
            }
            out.sort_unstable();
        }
        if self.unlinked > 0 {
            // Nodes not linked yet: scored one by one, on full precision like the re-ranked.
            let tail = (self.len - self.unlinked..self.len).filter(|&n| keep(n));
            out.extend(tail.map(|n| Scored {
                key: self.key(q, self.exact(n)),
                slot: n as u32,
            }));
            out.sort_unstable();
        }
        out.truncate(k);
        out
    }

    /// Serialise the graph to `w` (format version 3, or 4 when quantized): a header padded to
    /// [`FILE_ALIGN`] bytes, the node blocks byte for byte as in memory (each node's level-0
    /// links and its vector, or its codes) padded with zeros to [`FILE_ALIGN`], then the
    /// levels, the upper-level lists and (version 4) the quantizer. Opening an index maps the
    /// blocks ([`HnswGraph::map_graph`]) instead of reading them; [`HnswGraph::read_graph`]
    /// reads any version from bytes.
    pub fn write_graph(&self, w: &mut dyn Write) -> std::io::Result<()> {
        if self.unlinked > 0 {
            return Err(std::io::Error::other(format!(
                "{} nodes are not linked into the graph yet (link_pending first)",
                self.unlinked
            )));
        }
        let mut head = Vec::with_capacity(FILE_ALIGN);
        head.extend_from_slice(GRAPH_MAGIC);
        let version = if self.is_quantized() {
            GRAPH_VERSION_QUANTIZED_BLOCKS
        } else {
            GRAPH_VERSION_BLOCKS
        };
        for v in [
            version,
            self.dim as u32,
            self.params.m as u32,
            self.m0 as u32,
        ] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        head.extend_from_slice(&(self.len as u64).to_le_bytes());
        head.extend_from_slice(&self.entry.load(AtOrd::Acquire).to_le_bytes());
        head.extend_from_slice(&(self.stride_words as u32).to_le_bytes());
        head.resize(FILE_ALIGN, 0);
        w.write_all(&head)?;
        let words = self.len * self.stride_words;
        // SAFETY: the blocks of the first `len` nodes are initialised words (zeroed, then
        // written); no writer runs while `&self` is shared outside `add`.
        let blocks =
            unsafe { std::slice::from_raw_parts(self.blocks.as_ptr() as *const u32, words) };
        if cfg!(target_endian = "little") {
            // SAFETY: the same words viewed as their (little-endian) bytes.
            let b = unsafe { std::slice::from_raw_parts(blocks.as_ptr() as *const u8, 4 * words) };
            w.write_all(b)?;
        } else {
            for c in blocks.chunks(1 << 14) {
                let b: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.write_all(&b)?;
            }
        }
        w.write_all(&vec![0u8; blocks_end(words) - FILE_ALIGN - 4 * words])?;
        w.write_all(&self.levels)?;
        for node in 0..self.len {
            let lv = self.levels[node] as usize;
            let off = self.upper_off[node];
            for word in &self.upper[off..off + lv * (1 + self.params.m)] {
                w.write_all(&word.to_le_bytes())?;
            }
        }
        if self.is_quantized() {
            match &self.quant {
                None => w.write_all(&0u32.to_le_bytes())?,
                Some(sq) => {
                    w.write_all(&QUANT_SQ8.to_le_bytes())?;
                    w.write_all(&(self.trained_on as u64).to_le_bytes())?;
                    let mut buf = Vec::with_capacity(8 * self.dim);
                    for x in sq.min().iter().chain(sq.scale()) {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                    w.write_all(&buf)?;
                }
            }
        }
        Ok(())
    }

    /// Rebuild a graph from the bytes of a graph file (any format version) and the stored
    /// `vectors` (already prepared, as written). Every count and link is checked, so a damaged
    /// file gives an error naming `path` and the byte offset, never a panic.
    pub fn read_graph(
        dim: usize,
        metric: Metric,
        params: HnswParams,
        vectors: &[f32],
        bytes: &[u8],
        path: &Path,
    ) -> Result<Self> {
        check_rows(vectors, dim, "stored vectors")?;
        let rows = Rows::from_vec(dim, vectors.to_vec());
        Self::read_graph_rows(dim, metric, params, rows, bytes, path)
    }

    /// [`HnswGraph::read_graph`] taking the vectors as [`Rows`] (a quantized graph keeps them,
    /// memory-mapped or not; a version-1 file's vectors are copied into the blocks).
    pub fn read_graph_rows(
        dim: usize,
        metric: Metric,
        params: HnswParams,
        vectors: Rows,
        bytes: &[u8],
        path: &Path,
    ) -> Result<Self> {
        let mut g = HnswGraph::new(dim, metric, params)?;
        let n = vectors.len();
        let h = g.header(bytes, n, path)?;
        let mut r = Reader {
            bytes,
            off: 0,
            base: 0,
        };
        if h.blocks {
            let words = n * g.stride_words;
            let end = blocks_end(words);
            let body = bytes
                .get(FILE_ALIGN..FILE_ALIGN + 4 * words)
                .filter(|_| bytes.len() >= end)
                .ok_or_else(|| too_short(path, bytes.len(), n))?;
            g.blocks.grow_zeroed(n * (g.stride_words / LINE_WORDS))?;
            let dst = g.blocks.as_ptr() as *mut u32;
            for (i, b) in body.chunks_exact(4).enumerate() {
                // SAFETY: `g` is not shared yet; its buffer holds n blocks of stride words.
                unsafe { *dst.add(i) = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) };
            }
            r.off = end;
            g.read_tail(&mut r, &h, path)?;
            g.check_level0()
                .map_err(|(node, msg)| bad(path, FILE_ALIGN + 4 * node * g.stride_words, msg))?;
            if g.is_quantized() {
                g.exact = vectors;
            }
        } else {
            g.legacy_file = true;
            r.off = HEADER_BYTES_V1;
            let levels = r.take(n).ok_or_else(|| too_short(path, bytes.len(), n))?;
            check_levels(levels, h.entry, path, HEADER_BYTES_V1)?;
            g.grow(n, levels)?;
            if !g.is_quantized() {
                for i in 0..n {
                    let p = g.vec_ptr(i) as *mut f32;
                    // SAFETY: `g` is not shared yet; slot i's block holds dim floats.
                    unsafe { std::ptr::copy_nonoverlapping(vectors.row(i).as_ptr(), p, dim) };
                }
            }
            for node in 0..n {
                g.read_list(&mut r, node, 0, path)?;
            }
            g.read_upper(&mut r, path)?;
            g.read_quantizer(&mut r, path)?;
            if g.is_quantized() {
                g.exact = vectors;
                g.encode_range(0, n);
                g.exact.release();
            }
        }
        if r.off != bytes.len() {
            return Err(bad(
                path,
                r.off,
                format!("{} trailing bytes", bytes.len() - r.off),
            ));
        }
        g.entry.store(h.entry, AtOrd::Release);
        Ok(g)
    }

    /// Open the graph file at `path` (`file_bytes` long, as the manifest says) of an index of
    /// `n` slots without reading its node blocks: they are mapped copy-on-write
    /// ([`LineBuf::map_file`]) and faulted in as searches touch them, so opening costs the
    /// header, the levels and the upper lists (about 5% of the graph), whatever the index's
    /// size. Those are checked as [`HnswGraph::read_graph`] checks them; the level-0 lists in
    /// the blocks are not read, so searches skip any link that is not a node and count no
    /// more links than a list holds (a damaged list cannot lead a search astray in memory),
    /// and [`HnswGraph::check_level0`] finds them (`twindex index verify`). Files of format
    /// version 1 or 2 (no blocks) are read whole with [`HnswGraph::read_graph_rows`].
    /// `vectors` is called for the stored vectors when the graph needs them (quantized graphs
    /// re-rank on them; version-1 files hold no vectors).
    pub fn map_graph(
        dim: usize,
        metric: Metric,
        params: HnswParams,
        n: usize,
        path: &Path,
        file_bytes: u64,
        vectors: &dyn Fn() -> Result<Rows>,
    ) -> Result<Self> {
        use std::io::Read;
        let mut g = HnswGraph::new(dim, metric, params)?;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut head = vec![0u8; HEADER_BYTES.min(file_bytes as usize)];
        f.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
        let h = g.header(&head, n, path)?;
        let words = n * g.stride_words;
        let end = blocks_end(words);
        if !h.blocks || !cfg!(all(target_os = "linux", target_endian = "little")) {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            return Self::read_graph_rows(dim, metric, params, vectors()?, &bytes, path);
        }
        if file_bytes < end as u64 {
            return Err(too_short(path, file_bytes as usize, n));
        }
        let mut tail = vec![0u8; file_bytes as usize - end];
        {
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(end as u64))
                .and_then(|_| f.read_exact(&mut tail))
                .map_err(|e| Error::io(path, e))?;
        }
        #[cfg(target_os = "linux")]
        {
            g.blocks = LineBuf::map_file(
                &f,
                FILE_ALIGN as u64,
                n * (g.stride_words / LINE_WORDS),
                path,
            )?;
        }
        // Offsets in messages count from the file's start.
        let mut r = Reader {
            bytes: &tail,
            off: 0,
            base: end,
        };
        g.read_tail(&mut r, &h, path)?;
        if r.off != tail.len() {
            return Err(bad(
                path,
                r.at(),
                format!("{} trailing bytes", tail.len() - r.off),
            ));
        }
        if g.is_quantized() {
            g.exact = vectors()?;
            if g.exact.len() != n {
                return Err(Error::corrupt(
                    path,
                    format!("graph has {n} nodes, the vectors file {}", g.exact.len()),
                ));
            }
        }
        g.entry.store(h.entry, AtOrd::Release);
        Ok(g)
    }

    /// Parse and check a graph file's header against this (empty) graph's parameters and the
    /// `n` slots of its index.
    fn header(&self, bytes: &[u8], n: usize, path: &Path) -> Result<GraphHeader> {
        let mut r = Reader {
            bytes,
            off: 0,
            base: 0,
        };
        let magic = r
            .take(8)
            .ok_or_else(|| bad(path, 0, "file too short for a graph header".into()))?;
        if magic != GRAPH_MAGIC {
            return Err(bad(path, 0, "not a twindex HNSW graph (bad magic)".into()));
        }
        let short = || too_short(path, bytes.len(), n);
        let version = r.u32().ok_or_else(short)?;
        let gdim = r.u32().ok_or_else(short)? as usize;
        let gm = r.u32().ok_or_else(short)? as usize;
        let gm0 = r.u32().ok_or_else(short)? as usize;
        let gn = r.u64().ok_or_else(short)?;
        let entry = r.u64().ok_or_else(short)?;
        let (legacy, blocks) = if self.is_quantized() {
            (GRAPH_VERSION_QUANTIZED, GRAPH_VERSION_QUANTIZED_BLOCKS)
        } else {
            (GRAPH_VERSION, GRAPH_VERSION_BLOCKS)
        };
        if version != legacy && version != blocks {
            return Err(bad(
                path,
                8,
                format!(
                    "graph version {version}, expected {blocks} (or {legacy}) for quantize = {}",
                    self.params.quantize.name()
                ),
            ));
        }
        if gdim != self.dim {
            return Err(Error::corrupt(
                path,
                format!(
                    "graph dimension {gdim} does not match the index dimension {}",
                    self.dim
                ),
            ));
        }
        if gm != self.params.m || gm0 != self.m0 {
            return Err(bad(
                path,
                16,
                format!(
                    "graph has m = {gm}, m0 = {gm0}; manifest says m = {}",
                    self.params.m
                ),
            ));
        }
        if gn != n as u64 {
            return Err(bad(
                path,
                24,
                format!("graph has {gn} nodes, the index {n} slots"),
            ));
        }
        if version == blocks {
            let stride = r.u32().ok_or_else(short)? as usize;
            if stride != self.stride_words {
                return Err(bad(
                    path,
                    HEADER_BYTES_V1,
                    format!(
                        "blocks of {stride} words, expected {} for this dimension",
                        self.stride_words
                    ),
                ));
            }
        }
        Ok(GraphHeader {
            blocks: version == blocks,
            entry,
        })
    }

    /// Read the levels, the upper-level lists and the quantizer (what follows the blocks in a
    /// version 3 or 4 file), checking each, and size the graph for them.
    fn read_tail(&mut self, r: &mut Reader, h: &GraphHeader, path: &Path) -> Result<()> {
        let n = self.blocks.len() / (self.stride_words / LINE_WORDS);
        let at = r.at();
        let levels = r.take(n).ok_or_else(|| too_short(path, r.end(), n))?;
        check_levels(levels, h.entry, path, at)?;
        self.push_levels(levels);
        self.len = n;
        self.read_upper(r, path)?;
        self.read_quantizer(r, path)
    }

    /// Read `node`'s link list at `level` (the count, then as many words as the level's
    /// capacity) and check it: the count within the capacity, every link a node of that level.
    fn read_list(&self, r: &mut Reader, node: usize, level: usize, path: &Path) -> Result<()> {
        let cap = if level == 0 { self.m0 } else { self.params.m };
        let off = r.at();
        let n = self.levels.len();
        let b = r
            .take(4 * (1 + cap))
            .ok_or_else(|| too_short(path, r.end(), n))?;
        let p = self.links(node, level);
        for (j, w) in b.chunks_exact(4).enumerate() {
            // SAFETY: j <= cap is inside node's list at this level; the graph is not shared
            // while it is read.
            unsafe { *p.add(j) = u32::from_le_bytes([w[0], w[1], w[2], w[3]]) };
        }
        // SAFETY: the list just written, 1 + cap words.
        let words = unsafe { std::slice::from_raw_parts(p as *const u32, 1 + cap) };
        check_list(words, cap, level, &self.levels)
            .map_err(|msg| bad(path, off, format!("node {node} level {level}: {msg}")))
    }

    /// Read every node's upper-level lists into the arena (levels already pushed).
    fn read_upper(&mut self, r: &mut Reader, path: &Path) -> Result<()> {
        for node in 0..self.levels.len() {
            for level in 1..=self.levels[node] as usize {
                self.read_list(r, node, level, path)?;
            }
        }
        Ok(())
    }

    /// Read the quantizer of a quantized graph (nothing for a plain one).
    fn read_quantizer(&mut self, r: &mut Reader, path: &Path) -> Result<()> {
        if !self.is_quantized() {
            return Ok(());
        }
        let n = self.levels.len();
        let off = r.at();
        let end = r.end();
        let short = || too_short(path, end, n);
        match r.u32().ok_or_else(short)? {
            0 if n == 0 => {}
            QUANT_SQ8 => {
                let trained_on = r.u64().ok_or_else(short)? as usize;
                let mut f = |count: usize| -> Result<Vec<f32>> {
                    let b = r.take(4 * count).ok_or_else(short)?;
                    Ok(b.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect())
                };
                let min = f(self.dim)?;
                let scale = f(self.dim)?;
                let sq = Sq8::from_parts(self.metric, min, scale)
                    .map_err(|e| bad(path, off, format!("quantizer: {e}")))?;
                self.quant = Some(sq);
                self.trained_on = trained_on;
            }
            k => {
                return Err(bad(
                    path,
                    off,
                    format!("quantizer kind {k} is not sq8 ({QUANT_SQ8}), or missing for a graph of {n} nodes"),
                ))
            }
        }
        Ok(())
    }

    /// Check every node's level-0 list (count within capacity, links to nodes): what
    /// [`HnswGraph::map_graph`] leaves unread. The error names the first bad node.
    pub fn check_level0(&self) -> std::result::Result<(), (usize, String)> {
        let mut words = vec![0u32; 1 + self.m0];
        for node in 0..self.len {
            let p = self.links(node, 0);
            for (j, w) in words.iter_mut().enumerate() {
                // SAFETY: j <= m0 is inside node's block; no writer runs during `&self`.
                *w = unsafe { *p.add(j) };
            }
            check_list(&words, self.m0, 0, &self.levels)
                .map_err(|msg| (node, format!("node {node} level 0: {msg}")))?;
        }
        Ok(())
    }

    /// Write the codes of slots `from..to` from their full-precision vectors.
    fn encode_range(&mut self, from: usize, to: usize) {
        let Some(sq) = &self.quant else { return };
        for i in from..to {
            let p = self.vec_ptr(i) as *mut f32;
            // SAFETY: `&mut self`; slot i's payload holds t and dim code bytes, and does not
            // overlap the vectors in `exact`.
            unsafe {
                let codes = std::slice::from_raw_parts_mut(p.add(1) as *mut u8, self.dim);
                *p = sq.encode(self.exact.row(i), codes);
            }
        }
    }

    /// Train the quantizer on every stored vector and re-encode them all.
    fn retrain(&mut self) -> Result<()> {
        let n = self.exact.len();
        let sq = Sq8::train_rows(self.metric, self.dim, (0..n).map(|i| self.exact.row(i)))?;
        self.quant = Some(sq);
        self.trained_on = n;
        self.encode_range(0, n);
        self.exact.release();
        Ok(())
    }

    /// Append `vectors` as new nodes: their blocks, vectors or codes (a quantized graph
    /// retrains its quantizer when it has doubled since the last training) and levels, random
    /// when `levelled`, else 0 (an unlinked node has no upper lists). Links nothing.
    fn store(&mut self, vectors: &[f32], levelled: bool) -> Result<()> {
        let rows = check_rows(vectors, self.dim, "vectors")?;
        if self.len + rows >= u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "an index holds fewer than {} vectors",
                u32::MAX
            )));
        }
        let first = self.len;
        let levels: Vec<u8> = (first..first + rows)
            .map(|i| {
                if levelled {
                    self.random_level(i) as u8
                } else {
                    0
                }
            })
            .collect();
        self.grow(rows, &levels)?;
        if self.is_quantized() {
            if rows > 0 {
                let mut v = vectors.to_vec();
                if self.metric.normalizes() {
                    v.chunks_mut(self.dim).for_each(|r| self.metric.prepare(r));
                }
                self.exact.extend(&v);
                drop(v);
                // Retrain when the graph has doubled since the last training (amortised
                // O(dim) a row): an index begun with a few items gets ranges of its data.
                if self.quant.is_none() || self.len >= 2 * self.trained_on {
                    self.retrain()?;
                } else {
                    self.encode_range(first, first + rows);
                }
            }
        } else {
            self.copy_vectors(first, vectors);
            if self.metric.normalizes() {
                for i in first..first + rows {
                    let p = self.vec_ptr(i) as *mut f32;
                    // SAFETY: `&mut self`; the slice is slot i's vector.
                    self.metric
                        .prepare(unsafe { std::slice::from_raw_parts_mut(p, self.dim) });
                }
            }
        }
        Ok(())
    }

    /// Link the stored nodes `first..len` (each with its level and empty lists) into the graph.
    fn link(&mut self, first: usize, progress: &Progress) {
        let rows = self.len - first;
        let this = &*self;
        let done = AtomicUsize::new(0);
        let tick = |_: ()| {
            let d = done.fetch_add(1, AtOrd::Relaxed) + 1;
            if d.is_multiple_of(512) || d == rows {
                progress(d);
            }
        };
        // The first node is inserted alone so that the parallel phase starts from an entry point;
        // a small batch (an enrolment, a logged add) wholly on this thread: handing a few
        // inserts to the pool costs more in wake-ups than it saves.
        let mut s = this.take_scratch();
        let seq = if rows <= SERIAL_INSERTS {
            rows
        } else if this.entry.load(AtOrd::Acquire) == EMPTY {
            1
        } else {
            0
        };
        for q in first..first + seq {
            this.insert(q, &mut s);
            tick(());
        }
        this.put_scratch(s);
        (first + seq..first + rows).into_par_iter().for_each_init(
            || ScratchGuard {
                graph: this,
                s: Some(this.take_scratch()),
            },
            |g, q| {
                if let Some(s) = g.s.as_mut() {
                    this.insert(q, s);
                }
                tick(());
            },
        );
        // Pruning can take a node's last in-link away, leaving it unreachable by any search.
        // A whole scan is cheap next to a big batch; single adds to a big graph leave it to
        // the next checkpoint or open (see `repair_unreachable`).
        self.unlinked = 0;
        if rows.saturating_mul(REPAIR_BATCH_RATIO) >= self.len {
            self.repair_unreachable();
        }
    }

    /// Store `vectors` as nodes that no link reaches yet: searches score them one by one beside
    /// the walk, until [`HnswGraph::link_pending`] (or any add) links them. For a process that
    /// opens an index, replays a few logged adds and searches a few times: inserting them would
    /// walk (and fault in) much of a mapped graph. An empty graph links them at once.
    pub fn append_unlinked(&mut self, vectors: &[f32]) -> Result<()> {
        if self.entry.load(AtOrd::Acquire) == EMPTY {
            return self.add(vectors, &|_| {});
        }
        self.store(vectors, false)?;
        self.unlinked += vectors.len() / self.dim;
        Ok(())
    }

    /// Nodes stored by [`HnswGraph::append_unlinked`] and not linked yet.
    pub fn unlinked(&self) -> usize {
        self.unlinked
    }

    /// Link the nodes that [`HnswGraph::append_unlinked`] stored, as an add of them would have.
    pub fn link_pending(&mut self) {
        if self.unlinked == 0 {
            return;
        }
        let first = self.len - self.unlinked;
        // Unlinked nodes are the last ones and own no upper lists: give them their levels.
        self.levels.truncate(first);
        self.upper_off.truncate(first);
        let levels: Vec<u8> = (first..self.len)
            .map(|i| self.random_level(i) as u8)
            .collect();
        self.push_levels(&levels);
        self.link(first, &|_| {});
    }

    /// Append `n_new` nodes with the given levels (links empty, vectors zero). The blocks'
    /// mapping grows in place or is moved by the kernel, never copied (see [`LineBuf`]).
    fn grow(&mut self, n_new: usize, levels: &[u8]) -> Result<()> {
        let lines = self.stride_words / LINE_WORDS;
        let new_len = self.len + n_new;
        self.blocks.grow_zeroed(new_len * lines)?;
        self.push_levels(levels);
        self.len = new_len;
        Ok(())
    }

    /// Room for the upper-level lists (empty) and the level of nodes with `levels`.
    fn push_levels(&mut self, levels: &[u8]) {
        let mut off = self.upper.len();
        let offs: Vec<usize> = levels
            .iter()
            .map(|&lv| {
                let o = off;
                off += lv as usize * (1 + self.params.m);
                o
            })
            .collect();
        self.upper_off.extend_from_slice(&offs);
        self.upper.resize_zeroed(off);
        self.levels.extend_from_slice(levels);
    }

    /// The link-list lock of `node`.
    #[inline(always)]
    fn lock_node(&self, node: usize) -> MutexGuard<'_, ()> {
        lock(&self.locks[node % LOCK_STRIPES])
    }

    /// Write `vectors` (prepared) into the blocks of slots `first..`.
    fn copy_vectors(&mut self, first: usize, vectors: &[f32]) {
        for (i, v) in vectors.chunks_exact(self.dim).enumerate() {
            let p = self.vec_ptr(first + i) as *mut f32;
            // SAFETY: `&mut self`; the block of slot first + i exists and holds dim floats.
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p, self.dim) };
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    off: usize,
    /// Where `bytes` starts in the file (for messages).
    base: usize,
}

/// What a graph file's header says beyond what it is checked against.
struct GraphHeader {
    /// Format version 3 or 4: the node blocks as in memory.
    blocks: bool,
    entry: u64,
}

/// Where the node blocks of `words` words end in a version 3 or 4 file (padded).
fn blocks_end(words: usize) -> usize {
    FILE_ALIGN + (4 * words).div_ceil(FILE_ALIGN) * FILE_ALIGN
}

fn bad(path: &Path, off: usize, msg: String) -> Error {
    Error::corrupt(path, format!("at byte {off}: {msg}"))
}

fn too_short(path: &Path, len: usize, n: usize) -> Error {
    bad(path, len, format!("file ends early (graph of {n} nodes)"))
}

/// Check the levels (read at byte `at`) and the entry point against them.
fn check_levels(levels: &[u8], entry: u64, path: &Path, at: usize) -> Result<()> {
    let n = levels.len();
    if let Some(i) = levels.iter().position(|&l| l as usize > MAX_LEVEL) {
        return Err(bad(
            path,
            at + i,
            format!("node {i} has level {} > {MAX_LEVEL}", levels[i]),
        ));
    }
    if n > 0 {
        if entry == EMPTY {
            return Err(bad(path, 32, "graph with nodes has no entry point".into()));
        }
        let (en, el) = unpack(entry);
        if en >= n || levels[en] as usize != el {
            return Err(bad(
                path,
                32,
                format!("entry point {en} at level {el} is not a node of that level"),
            ));
        }
    } else if entry != EMPTY {
        return Err(bad(path, 32, "empty graph with an entry point".into()));
    }
    Ok(())
}

/// Check one link list (`words[0]` links in `words[1..]`, capacity `cap`) at `level`.
fn check_list(
    words: &[u32],
    cap: usize,
    level: usize,
    levels: &[u8],
) -> std::result::Result<(), String> {
    let cnt = words[0] as usize;
    if cnt > cap {
        return Err(format!("{cnt} links > capacity {cap}"));
    }
    match words[1..=cnt]
        .iter()
        .find(|&&x| x as usize >= levels.len() || (levels[x as usize] as usize) < level)
    {
        Some(x) => Err(format!("bad link {x}")),
        None => Ok(()),
    }
}

impl<'a> Reader<'a> {
    /// The position in the file.
    fn at(&self) -> usize {
        self.base + self.off
    }
    /// The end of the bytes in the file.
    fn end(&self) -> usize {
        self.base + self.bytes.len()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.off..self.off.checked_add(n)?)?;
        self.off += n;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
}

impl VectorIndex for HnswGraph {
    fn name(&self) -> &'static str {
        "hnsw"
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.len
    }

    fn add(&mut self, vectors: &[f32], progress: &Progress) -> Result<()> {
        self.link_pending();
        let first = self.len;
        self.store(vectors, true)?;
        self.link(first, progress);
        Ok(())
    }

    fn search(&self, query: &[f32], k: usize, ef: usize) -> Result<Vec<Hit>> {
        let q = prepare_query(self.metric, self.dim, query)?;
        Ok(self
            .knn(&q, k, ef, &|_: usize| true)
            .into_iter()
            .map(|s| Hit {
                id: s.slot as u64,
                distance: self.metric.key_to_distance(s.key),
            })
            .collect())
    }

    fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: &SlotFilter,
    ) -> Result<Vec<Hit>> {
        let q = prepare_query(self.metric, self.dim, query)?;
        Ok(self
            .knn(&q, k, ef, keep)
            .into_iter()
            .map(|s| Hit {
                id: s.slot as u64,
                distance: self.metric.key_to_distance(s.key),
            })
            .collect())
    }

    fn vector(&self, slot: usize) -> Option<&[f32]> {
        (slot < self.len).then(|| self.exact(slot))
    }

    fn memory_bytes(&self) -> usize {
        self.blocks.capacity() * std::mem::size_of::<Line>()
            + self.upper.capacity() * 4
            + self.upper_off.capacity() * 8
            + self.levels.capacity()
            + LOCK_STRIPES * std::mem::size_of::<Mutex<()>>()
            + self.exact.memory_bytes()
            + self.quant.as_ref().map_or(0, |q| 8 * q.dim())
    }
}

/// Returns a rayon task's scratch space to the pool when the task ends.
struct ScratchGuard<'a> {
    graph: &'a HnswGraph,
    s: Option<Scratch>,
}

impl Drop for ScratchGuard<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.s.take() {
            self.graph.put_scratch(s);
        }
    }
}
