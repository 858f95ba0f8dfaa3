//! The index manifest: `manifest.json`, the commit point of every write. It names the encoder,
//! the geometry (dimension, metric, normalisation), the engine and its parameters, the counts,
//! the calibrated threshold and every data file with its size and sha256.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::hnsw::HnswParams;
use super::metric::Metric;

/// The manifest layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the manifest inside an index directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Which engine answers searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// twindex's own HNSW graph (the default: fastest, supports incremental add, persisted).
    #[default]
    Hnsw,
    /// The hnsw_rs crate's HNSW; its graph is rebuilt from the vectors when opened.
    HnswRs,
    /// Exact brute-force scan: always right, linear time per query.
    Flat,
}

impl Backend {
    /// The name used in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Hnsw => "hnsw",
            Backend::HnswRs => "hnsw_rs",
            Backend::Flat => "flat",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> crate::error::Result<Self> {
        match s {
            "hnsw" => Ok(Backend::Hnsw),
            "hnsw_rs" | "hnsw-rs" => Ok(Backend::HnswRs),
            "flat" | "exact" => Ok(Backend::Flat),
            other => Err(crate::error::Error::InvalidArgument(format!(
                "unknown index backend {other:?}: expected hnsw, hnsw_rs or flat"
            ))),
        }
    }
}

/// How a new index is laid out. Stored in the manifest; fixed for the index's life.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexConfig {
    /// Distance. Default `l2`.
    pub metric: Metric,
    /// Scale vectors (stored and queried) to unit length. Default false; always on for cosine.
    /// With it, `l2` and `dot` rank like cosine.
    pub normalize: bool,
    /// Search engine. Default our own HNSW.
    pub backend: Backend,
    /// Graph parameters (ignored by the flat backend except `ef_search`).
    pub hnsw: HnswParams,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            metric: Metric::L2,
            normalize: false,
            backend: Backend::Hnsw,
            hnsw: HnswParams::default(),
        }
    }
}

/// A calibrated duplicate threshold (computed by `eval`, applied by `query`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Similarity threshold (see [`Metric`]): a pair with similarity >= `threshold` is a
    /// duplicate. [`super::Index::threshold_distance`] gives the same threshold as a distance.
    pub threshold: f32,
    /// Precision at the threshold on the calibration pairs.
    #[serde(deserialize_with = "nan_if_null")]
    pub precision: f64,
    /// Recall at the threshold on the calibration pairs.
    #[serde(deserialize_with = "nan_if_null")]
    pub recall: f64,
    /// F1 at the threshold on the calibration pairs.
    #[serde(deserialize_with = "nan_if_null")]
    pub f1: f64,
    /// How it was chosen, e.g. `"best_f1"` or `"target_precision=0.99"`.
    pub method: String,
    /// Anything else the calibrator wants to record (pair file, counts...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub extra: Value,
}

/// An unknown figure is NaN in memory and `null` in JSON (JSON has no NaN): read it back.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One data file of the current generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the index directory, e.g. `vectors.7.f32`.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
}

/// The data files of the current generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFiles {
    /// `slot_count × dim` little-endian f32, slot order (as stored: normalised if the index
    /// normalises).
    pub vectors: FileEntry,
    /// JSON lines, one item a slot: `{"id", "label", "source", "payload"?}`.
    pub items: FileEntry,
    /// Sorted little-endian u64 ids of deleted items.
    pub tombstones: FileEntry,
    /// The HNSW links (our own backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<FileEntry>,
}

/// The content of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version; this build reads [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The encoder that produced the vectors, as given by the caller (path, weights sha256,
    /// kind...). Queries must be encoded by the same encoder.
    pub encoder: Value,
    /// Vector dimension.
    pub dim: usize,
    /// Distance.
    pub metric: Metric,
    /// Whether vectors are scaled to unit length (always true for cosine).
    pub normalize: bool,
    /// Search engine.
    pub backend: Backend,
    /// Graph parameters.
    pub hnsw: HnswParams,
    /// Live (not deleted) items.
    pub item_count: usize,
    /// Stored items including deleted ones (rows of the vectors file).
    pub slot_count: usize,
    /// The id the next added item gets.
    pub next_id: u64,
    /// Incremented by every commit; data files carry it in their names.
    pub generation: u64,
    /// The calibrated duplicate threshold, if any.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// The data files of this generation.
    pub files: DataFiles,
    /// sha256 of the rest of the manifest (compact JSON, this field left out), so that an
    /// edited setting (the metric, say) is refused rather than silently misapplied. `None` in
    /// memory; written by every commit; absent in manifests older than the write-ahead log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}
