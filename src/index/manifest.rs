//! The index manifest: `manifest.json`, the commit point of every write. It names the encoder,
//! the geometry (dimension, metric, normalisation), the engine and its parameters, the counts,
//! the calibrated threshold and every data file with its size and sha256.

use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};
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
        let choices: [(&[&str], _); 3] = [
            (&["hnsw"], Backend::Hnsw),
            (&["hnsw_rs", "hnsw-rs"], Backend::HnswRs),
            (&["flat", "exact"], Backend::Flat),
        ];
        crate::error::parse_choice("unknown index backend", s, &choices)
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
    /// The HNSW graph (our own backend only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<FileEntry>,
    /// The items' catalogue: ids, where each line of the items file starts, labels (binary,
    /// so that opening parses no JSON). Indexes written before it have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<FileEntry>,
}

/// The encoder that produced an index's vectors, as the index manifest, a Parquet part's
/// metadata and a Milvus collection's description record it. Queries must be encoded by the
/// same encoder.
///
/// JSON: an object tagged by `kind` (`"image"`, `"text"` or `"vectors"`), written with its
/// keys in sorted order, as the untyped records of earlier versions were, so that records
/// (and manifest checksums) written by those read back and write out byte for byte. Any other
/// kind, or a record that does not parse, is an error (the reader names the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "kind", rename_all = "lowercase")]
pub enum EncoderRecord {
    /// An image encoder (`model::ImageModel`), its files copied into the index.
    Image {
        /// Folder of the model's files: relative to the index directory (`encoder`) in a
        /// manifest; absolute in a part or a collection description.
        path: String,
        /// sha256 of the model's files, checked when the index is opened.
        sha256: String,
        /// The network's name (`lenet`, `cnn`, ...).
        arch: String,
        /// Embedding dimension.
        dim: usize,
        /// The distance the encoder was trained for.
        metric: Metric,
        /// The model folder the files were copied from.
        source: String,
        /// Number of towers of an ensemble encoder; absent for a single network.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ensemble_members: Option<usize>,
    },
    /// A text encoder (`model::TextEncoder`), referenced by path (sentence-transformers
    /// models are large, so they are not copied).
    Text {
        /// Absolute path of the model folder.
        path: String,
        /// sha256 of its config, tokenizer and weights, checked when the index is opened.
        sha256: String,
        /// Embedding dimension.
        dim: usize,
        /// Tokens per text the encoder reads.
        max_seq_length: usize,
        /// Always cosine.
        metric: Metric,
    },
    /// Raw vectors, no encoder. Both fields are absent from records written by hand or by
    /// library callers that left them out.
    Vectors {
        /// Vector dimension.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dim: Option<usize>,
        /// Where the vectors came from (a file).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
}

impl EncoderRecord {
    /// The record for raw vectors of dimension `dim` read from `source`.
    pub fn vectors(source: &str, dim: usize) -> EncoderRecord {
        EncoderRecord::Vectors {
            dim: Some(dim),
            source: Some(source.to_string()),
        }
    }

    /// `"image"`, `"text"` or `"vectors"`, as in the JSON's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            EncoderRecord::Image { .. } => "image",
            EncoderRecord::Text { .. } => "text",
            EncoderRecord::Vectors { .. } => "vectors",
        }
    }

    /// Where the encoder's files are (`None` for raw vectors).
    pub fn path(&self) -> Option<&str> {
        match self {
            EncoderRecord::Image { path, .. } | EncoderRecord::Text { path, .. } => Some(path),
            EncoderRecord::Vectors { .. } => None,
        }
    }

    /// The sha256 of the encoder's files (`None` for raw vectors).
    pub fn sha256(&self) -> Option<&str> {
        match self {
            EncoderRecord::Image { sha256, .. } | EncoderRecord::Text { sha256, .. } => {
                Some(sha256)
            }
            EncoderRecord::Vectors { .. } => None,
        }
    }

    /// The recorded dimension, if any.
    pub fn dim(&self) -> Option<usize> {
        match self {
            EncoderRecord::Image { dim, .. } | EncoderRecord::Text { dim, .. } => Some(*dim),
            EncoderRecord::Vectors { dim, .. } => *dim,
        }
    }
}

impl Serialize for EncoderRecord {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // Through a JSON value, whose keys are sorted: the layout of the untyped records.
        EncoderRecord::serialize(self, serde_json::value::Serializer)
            .map_err(ser::Error::custom)?
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for EncoderRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v.get("kind").and_then(Value::as_str) {
            Some("image" | "text" | "vectors") => {
                EncoderRecord::deserialize(v).map_err(de::Error::custom)
            }
            other => Err(de::Error::custom(format!(
                "unknown encoder kind {other:?}: expected \"image\", \"text\" or \"vectors\""
            ))),
        }
    }
}

/// Compact JSON, as the record is stored.
impl std::fmt::Display for EncoderRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&s)
    }
}

/// The content of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version; this build reads [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The encoder that produced the vectors. Queries must be encoded by the same encoder.
    pub encoder: EncoderRecord,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The records the untyped writers (`json!` in `query::encoder` and in callers) produced,
    /// each with the typed record it must read as.
    fn old_records() -> Vec<(Value, EncoderRecord)> {
        let sha = "2c52f43bcbbb1b366626c30a90949043047ed275cbd45e4328e8e010fb7be14c";
        vec![
            (
                json!({
                    "kind": "image",
                    "path": "encoder",
                    "sha256": sha,
                    "arch": "cnn",
                    "dim": 64,
                    "metric": "l2",
                    "source": "corpora/encoders/mnist-cnn",
                }),
                EncoderRecord::Image {
                    path: "encoder".into(),
                    sha256: sha.into(),
                    arch: "cnn".into(),
                    dim: 64,
                    metric: Metric::L2,
                    source: "corpora/encoders/mnist-cnn".into(),
                    ensemble_members: None,
                },
            ),
            (
                json!({
                    "kind": "image",
                    "path": "/abs/encoder",
                    "sha256": sha,
                    "arch": "resnet",
                    "dim": 384,
                    "metric": "l2",
                    "source": "/abs/ensemble",
                    "ensemble_members": 3,
                }),
                EncoderRecord::Image {
                    path: "/abs/encoder".into(),
                    sha256: sha.into(),
                    arch: "resnet".into(),
                    dim: 384,
                    metric: Metric::L2,
                    source: "/abs/ensemble".into(),
                    ensemble_members: Some(3),
                },
            ),
            (
                json!({
                    "kind": "text",
                    "path": "/models/all-MiniLM-L6-v2",
                    "sha256": sha,
                    "dim": 384,
                    "max_seq_length": 256,
                    "metric": "cosine",
                }),
                EncoderRecord::Text {
                    path: "/models/all-MiniLM-L6-v2".into(),
                    sha256: sha.into(),
                    dim: 384,
                    max_seq_length: 256,
                    metric: Metric::Cosine,
                },
            ),
            (
                json!({ "kind": "vectors", "dim": 16, "source": "base.fvecs" }),
                EncoderRecord::vectors("base.fvecs", 16),
            ),
            // What library callers and the bench example wrote.
            (
                json!({ "kind": "vectors", "dim": 16 }),
                EncoderRecord::Vectors {
                    dim: Some(16),
                    source: None,
                },
            ),
            (
                json!({ "kind": "vectors" }),
                EncoderRecord::Vectors {
                    dim: None,
                    source: None,
                },
            ),
        ]
    }

    #[test]
    fn old_untyped_records_read_back_and_write_out_byte_for_byte() {
        for (old, want) in old_records() {
            let got: EncoderRecord = serde_json::from_value(old.clone()).unwrap();
            assert_eq!(got, want, "{old}");
            assert_eq!(serde_json::to_value(&got).unwrap(), old);
            // Same bytes, compact and pretty, so manifest checksums (sha256 of the compact
            // manifest) computed by earlier versions still match.
            assert_eq!(got.to_string(), old.to_string());
            assert_eq!(
                serde_json::to_string_pretty(&got).unwrap(),
                serde_json::to_string_pretty(&old).unwrap()
            );
            let from_text: EncoderRecord = serde_json::from_str(&old.to_string()).unwrap();
            assert_eq!(from_text, want);
            assert_eq!(got.kind(), old["kind"].as_str().unwrap());
            assert_eq!(got.sha256(), old["sha256"].as_str());
            assert_eq!(got.path(), old["path"].as_str());
            assert_eq!(got.dim(), old["dim"].as_u64().map(|d| d as usize));
        }
    }

    #[test]
    fn unknown_kinds_and_bad_records_are_errors() {
        let e = serde_json::from_value::<EncoderRecord>(json!({"kind": "crash-test"}))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            r#"unknown encoder kind Some("crash-test"): expected "image", "text" or "vectors""#
        );
        for bad in [json!({}), json!(null), json!(42), json!({"kind": 7})] {
            let e = serde_json::from_value::<EncoderRecord>(bad.clone()).unwrap_err();
            assert!(
                e.to_string().contains("unknown encoder kind None"),
                "{bad}: {e}"
            );
        }
        // A known kind with a field missing or of the wrong type, and a metric we do not know.
        for bad in [
            json!({"kind": "text", "path": "/m", "dim": 384, "max_seq_length": 256, "metric": "cosine"}),
            json!({"kind": "vectors", "dim": "16"}),
            json!({"kind": "image", "path": "encoder", "sha256": "00", "arch": "cnn", "dim": 4,
                   "metric": "hamming", "source": "s"}),
        ] {
            assert!(
                serde_json::from_value::<EncoderRecord>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
