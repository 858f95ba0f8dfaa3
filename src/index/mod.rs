//! Vector indexes and the persistent index directory.
//!
//! * [`VectorIndex`]: the trait of every engine; [`FlatIndex`] (exact, the recall oracle),
//!   [`HnswGraph`] (our HNSW, the default) and [`HnswRsIndex`] (hnsw_rs) implement it;
//! * [`quantize`]: SQ8 codes for the graph walk ([`Quantize`]), re-ranked on the full vectors,
//!   which [`rows`] memory-maps;
//! * [`Metric`]: distances and the one distance <-> similarity convention;
//! * [`Index`]: the on-disk index (manifest, vectors, items, tombstones, graph) with atomic
//!   add / delete / compact, search, dedup (its report files: [`dedup_report`]) and the
//!   calibrated threshold;
//! * [`vecio`]: `.fvecs` / `.ivecs` / `.npy`; [`bench`](mod@bench): recall and throughput sweeps.

pub mod bench;
pub mod dedup;
pub mod dedup_report;
pub mod distance;
pub mod engine;
pub mod flat;
pub mod hnsw;
pub mod hnsw_rs_backend;
pub mod items;
pub mod lexical;
pub mod linebuf;
pub mod manifest;
pub mod metric;
pub mod parquet;
pub mod quantize;
pub mod rows;
pub mod store;
pub mod vecio;
pub mod vector_index;
pub mod wal;

pub use bench::{BenchOptions, BenchReport, BuildStats, SweepPoint};
pub use dedup::{Dedup, DupPair};
pub use engine::{
    append_add, Appended, Index, ItemView, NewGeneration, PendingAdd, PendingDelete, Recovery,
};
pub use flat::FlatIndex;
pub use hnsw::{HnswGraph, HnswParams, DEFAULT_RERANK};
pub use hnsw_rs_backend::HnswRsIndex;
pub use manifest::{Backend, Calibration, EncoderRecord, IndexConfig, Manifest, FORMAT_VERSION};
pub use metric::{decision_accuracy, is_duplicate, Metric};
pub use quantize::{Quantize, Sq8};
pub use store::Item;
pub use vecio::Matrix;
pub use vector_index::{Hit, Progress, VectorIndex};
