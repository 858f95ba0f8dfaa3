//! Embedding parts as Parquet: the interchange format of `twindex export`, `twindex embed
//! --shard` and `twindex index push`. The ONLY user of the arrow and parquet crates.
//!
//! Schema: `id int64, label utf8, text utf8, vector fixed_size_list<float32>[dim]`, in row
//! groups of [`ROW_GROUP`] rows, Snappy-compressed. The file's key-value metadata holds the
//! part's [`PartMeta`] as JSON under the key [`META_KEY`] (the encoder's record and sha256, the
//! metric, the calibrated threshold, the shard), so a part carries its encoder wherever it is
//! copied; `write_part` also writes it beside the file as `PATH.json` for tools that never open
//! Parquet.

use super::manifest::EncoderRecord;
use crate::error::{Error, Result};
use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, Int64Builder, StringBuilder};
use arrow_array::{Array, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per Parquet row group (and per record batch written).
pub const ROW_GROUP: usize = 8192;

/// Key of the part's JSON metadata in the Parquet footer.
pub const META_KEY: &str = "twindex";

/// Which slice of a corpus a part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based shard number.
    pub index: usize,
    /// Number of shards the corpus was cut into.
    pub of: usize,
    /// The corpus row of this part's first row.
    pub first_row: usize,
    /// PartRows in the whole corpus.
    pub total_rows: usize,
}

/// What a part (or an export) says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartMeta {
    /// The twindex version that wrote it.
    pub twindex: String,
    /// The encoder record, as in an index manifest (an image encoder's `path` absolute).
    pub encoder: EncoderRecord,
    /// Vector dimension.
    pub dim: usize,
    /// `l2`, `cosine` or `dot`.
    pub metric: super::Metric,
    /// Whether the vectors are unit length.
    pub normalize: bool,
    /// The calibrated duplicate threshold (a distance), when the source index had one.
    pub threshold: Option<f32>,
    /// The full calibration record of the source index, if any.
    #[serde(default)]
    pub calibration: Option<Value>,
    /// HNSW parameters of the source index (`m`, `ef_construction`, `ef_search`), if any.
    #[serde(default)]
    pub hnsw: Option<Value>,
    /// PartRows in this part.
    pub rows: usize,
    /// The shard, for `embed --shard`.
    #[serde(default)]
    pub shard: Option<Shard>,
    /// Where the rows came from (an index directory or a corpus file).
    pub source: String,
}

impl PartMeta {
    /// The encoder's sha256 ("" for raw vectors).
    pub fn encoder_sha256(&self) -> &str {
        self.encoder.sha256().unwrap_or("")
    }
}

/// Rows of a part, column by column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartRows {
    pub ids: Vec<i64>,
    pub labels: Vec<String>,
    pub texts: Vec<String>,
    /// Row-major, `ids.len() * dim` values.
    pub vectors: Vec<f32>,
    pub dim: usize,
}

impl PartRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Row `i`'s vector.
    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    /// Append `other`'s rows (same dimension).
    pub fn extend(&mut self, other: PartRows) {
        self.ids.extend(other.ids);
        self.labels.extend(other.labels);
        self.texts.extend(other.texts);
        self.vectors.extend(other.vectors);
    }

    fn check(&self) -> Result<()> {
        let n = self.ids.len();
        if self.labels.len() != n || self.texts.len() != n || self.vectors.len() != n * self.dim {
            return Err(Error::Shape(format!(
                "part rows: {n} ids, {} labels, {} texts, {} vector values for dimension {}",
                self.labels.len(),
                self.texts.len(),
                self.vectors.len(),
                self.dim
            )));
        }
        if self.dim == 0 {
            return Err(Error::InvalidArgument("part rows: dimension 0".into()));
        }
        Ok(())
    }
}

fn schema(dim: usize) -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("label", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                dim as i32,
            ),
            false,
        ),
    ])
}

fn pq_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(path, format!("Parquet: {e}"))
}

/// The sidecar path of a part: `PATH.json`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// Write `rows` with `meta` to a new `path` (atomically: a temporary file renamed into place)
/// and the sidecar `PATH.json`. Neither may exist: a part never replaces a file.
pub fn write_part(path: &Path, rows: &PartRows, meta: &PartMeta) -> Result<()> {
    rows.check()?;
    for p in [path.to_path_buf(), sidecar_path(path)] {
        if p.exists() {
            return Err(Error::InvalidArgument(format!(
                "{}: already exists; twindex writes parts only to new paths",
                p.display()
            )));
        }
    }
    if meta.dim != rows.dim || meta.rows != rows.len() {
        return Err(Error::InvalidArgument(format!(
            "{}: metadata says {} rows of dimension {}, the rows are {} of {}",
            path.display(),
            meta.rows,
            meta.dim,
            rows.len(),
            rows.dim
        )));
    }
    let meta_json = serde_json::to_string(meta).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        cause: e,
    })?;
    let schema = Arc::new(schema(rows.dim));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .set_key_value_metadata(Some(vec![KeyValue::new(META_KEY.to_string(), meta_json)]))
        .build();
    let mut buf: Vec<u8> = Vec::new();
    {
        let mut writer = ArrowWriter::try_new(&mut buf, schema.clone(), Some(props))
            .map_err(|e| pq_err(path, e))?;
        for start in (0..rows.len().max(1)).step_by(ROW_GROUP) {
            let end = (start + ROW_GROUP).min(rows.len());
            let batch = batch(&schema, rows, start.min(end), end).map_err(|e| pq_err(path, e))?;
            writer.write(&batch).map_err(|e| pq_err(path, e))?;
        }
        writer.close().map_err(|e| pq_err(path, e))?;
    }
    crate::fsutil::atomic_write(path, &buf)?;
    crate::fsutil::atomic_write_json(&sidecar_path(path), meta)
}

fn batch(
    schema: &Arc<Schema>,
    rows: &PartRows,
    start: usize,
    end: usize,
) -> std::result::Result<RecordBatch, String> {
    let mut ids = Int64Builder::with_capacity(end - start);
    let mut labels = StringBuilder::new();
    let mut texts = StringBuilder::new();
    let mut vecs = FixedSizeListBuilder::with_capacity(
        Float32Builder::with_capacity((end - start) * rows.dim),
        rows.dim as i32,
        end - start,
    )
    .with_field(Arc::new(Field::new("item", DataType::Float32, false)));
    for i in start..end {
        ids.append_value(rows.ids[i]);
        labels.append_value(&rows.labels[i]);
        texts.append_value(&rows.texts[i]);
        vecs.values().append_slice(rows.vector(i));
        vecs.append(true);
    }
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(ids.finish()),
            Arc::new(labels.finish()),
            Arc::new(texts.finish()),
            Arc::new(vecs.finish()),
        ],
    )
    .map_err(|e| e.to_string())
}

/// The metadata of the part at `path` (from its Parquet footer; no rows are read).
pub fn read_meta(path: &Path) -> Result<PartMeta> {
    let file = crate::fsutil::open_regular(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq_err(path, e))?;
    meta_of(
        path,
        builder.metadata().file_metadata().key_value_metadata(),
    )
}

fn meta_of(path: &Path, kv: Option<&Vec<KeyValue>>) -> Result<PartMeta> {
    let raw = kv
        .and_then(|kv| kv.iter().find(|k| k.key == META_KEY))
        .and_then(|k| k.value.as_deref())
        .ok_or_else(|| {
            Error::format(
                path,
                format!("no {META_KEY:?} metadata: not a part written by twindex export or embed"),
            )
        })?;
    serde_json::from_str(raw).map_err(|e| Error::format(path, format!("{META_KEY} metadata: {e}")))
}

/// Read a part: its metadata and rows, checked against the schema and each other.
pub fn read_part(path: &Path) -> Result<(PartMeta, PartRows)> {
    let file = crate::fsutil::open_regular(path)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| pq_err(path, e))?;
    let meta = meta_of(
        path,
        builder.metadata().file_metadata().key_value_metadata(),
    )?;
    let want = schema(meta.dim);
    let got = builder.schema();
    for f in want.fields() {
        match got.field_with_name(f.name()) {
            Ok(g) if g.data_type() == f.data_type() => {}
            Ok(g) => {
                return Err(Error::format(
                    path,
                    format!(
                        "column {:?} is {}, expected {} (dimension {} from the metadata)",
                        f.name(),
                        g.data_type(),
                        f.data_type(),
                        meta.dim
                    ),
                ))
            }
            Err(_) => {
                return Err(Error::format(
                    path,
                    format!(
                        "no column {:?} (expected id, label, text, vector)",
                        f.name()
                    ),
                ))
            }
        }
    }
    let reader = builder
        .with_batch_size(ROW_GROUP)
        .build()
        .map_err(|e| pq_err(path, e))?;
    let mut rows = PartRows {
        dim: meta.dim,
        ..Default::default()
    };
    for b in reader {
        let b = b.map_err(|e| pq_err(path, e))?;
        let col = |name: &str| b.column_by_name(name).expect("schema checked");
        let ids = col("id").as_any().downcast_ref::<Int64Array>();
        let labels = col("label").as_any().downcast_ref::<StringArray>();
        let texts = col("text").as_any().downcast_ref::<StringArray>();
        let vecs = col("vector").as_any().downcast_ref::<FixedSizeListArray>();
        let (Some(ids), Some(labels), Some(texts), Some(vecs)) = (ids, labels, texts, vecs) else {
            return Err(Error::format(path, "columns of unexpected arrow types"));
        };
        if ids.null_count() + labels.null_count() + texts.null_count() + vecs.null_count() > 0 {
            return Err(Error::format(
                path,
                "null values (every column must be filled)",
            ));
        }
        let values = vecs
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| Error::format(path, "vector values are not float32"))?;
        rows.ids.extend(ids.values().iter().copied());
        rows.labels
            .extend(labels.iter().map(|s| s.unwrap_or("").to_string()));
        rows.texts
            .extend(texts.iter().map(|s| s.unwrap_or("").to_string()));
        let off = vecs.offset() * meta.dim;
        rows.vectors
            .extend_from_slice(&values.values()[off..off + vecs.len() * meta.dim]);
    }
    if rows.len() != meta.rows {
        return Err(Error::format(
            path,
            format!(
                "holds {} rows, its metadata says {} (truncated or edited?)",
                rows.len(),
                meta.rows
            ),
        ));
    }
    Ok((meta, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(n: usize, dim: usize) -> (PartRows, PartMeta) {
        let rows = PartRows {
            ids: (0..n as i64).map(|i| i * 3 + 1).collect(),
            labels: (0..n).map(|i| format!("l{}", i % 4)).collect(),
            texts: (0..n).map(|i| format!("text é {i}\ttab")).collect(),
            vectors: (0..n * dim).map(|i| (i as f32 * 0.37).sin()).collect(),
            dim,
        };
        let meta = PartMeta {
            twindex: "test".into(),
            encoder: EncoderRecord::Text {
                path: "/models/minilm".into(),
                sha256: "abc".into(),
                dim,
                max_seq_length: 128,
                metric: crate::index::Metric::Cosine,
            },
            dim,
            metric: crate::index::Metric::Cosine,
            normalize: true,
            threshold: Some(0.25),
            calibration: None,
            hnsw: Some(json!({"m": 16})),
            rows: n,
            shard: Some(Shard {
                index: 1,
                of: 4,
                first_row: 10,
                total_rows: 40,
            }),
            source: "unit".into(),
        };
        (rows, meta)
    }

    #[test]
    fn round_trip_is_exact_across_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0usize, 1, ROW_GROUP + 5] {
            let p = dir.path().join(format!("p{n}.parquet"));
            let (rows, meta) = sample(n, 7);
            write_part(&p, &rows, &meta).unwrap();
            let (m2, r2) = read_part(&p).unwrap();
            assert_eq!(m2, meta);
            assert_eq!(r2, rows, "rows differ for n={n}");
            assert_eq!(read_meta(&p).unwrap(), meta);
            let side: PartMeta =
                serde_json::from_slice(&std::fs::read(sidecar_path(&p)).unwrap()).unwrap();
            assert_eq!(side, meta);
        }
    }

    #[test]
    fn old_untyped_part_metadata_reads_back_and_unknown_kinds_are_named() {
        // Metadata as the untyped version wrote it (encoder record built with `json!`).
        let old = json!({
            "twindex": "0.1.0",
            "encoder": {
                "arch": "cnn", "dim": 64, "kind": "image", "metric": "l2",
                "path": "/abs/idx/encoder", "sha256": "2c52", "source": "corpora/encoders/mnist-cnn"
            },
            "dim": 64,
            "metric": "l2",
            "normalize": false,
            "threshold": 1.25,
            "calibration": null,
            "hnsw": {"m": 16, "ef_construction": 200, "ef_search": 64},
            "rows": 3,
            "shard": null,
            "source": "/abs/idx"
        });
        let p = Path::new("/parts/p.parquet");
        let kv = |v: &Value| vec![KeyValue::new(META_KEY.to_string(), v.to_string())];
        let m = meta_of(p, Some(&kv(&old))).unwrap();
        assert_eq!(m.encoder.kind(), "image");
        assert_eq!(m.encoder_sha256(), "2c52");
        assert_eq!(m.encoder.path(), Some("/abs/idx/encoder"));
        assert_eq!(serde_json::to_value(&m).unwrap(), old);
        let mut bad = old.clone();
        bad["encoder"] = json!({"kind": "sound", "dim": 64});
        let e = meta_of(p, Some(&kv(&bad))).unwrap_err().to_string();
        assert!(
            e.contains("/parts/p.parquet")
                && e.contains(
                    r#"unknown encoder kind Some("sound"): expected "image", "text" or "vectors""#
                ),
            "{e}"
        );
    }

    #[test]
    fn foreign_and_damaged_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        std::fs::write(&p, b"not parquet at all").unwrap();
        let e = read_part(&p).unwrap_err().to_string();
        assert!(e.contains("x.parquet") && e.contains("Parquet"), "{e}");
        let (rows, mut meta) = sample(3, 4);
        // A file that is there (ours or not) is never replaced, nor a sidecar name in use.
        let e = write_part(&p, &rows, &meta).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"not parquet at all");
        let q = dir.path().join("y.parquet");
        std::fs::write(sidecar_path(&q), b"{}").unwrap();
        let e = write_part(&q, &rows, &meta).unwrap_err().to_string();
        assert!(e.contains("y.parquet.json: already exists"), "{e}");
        assert!(!q.exists());
        meta.rows = 5;
        let e = write_part(&dir.path().join("z.parquet"), &rows, &meta)
            .unwrap_err()
            .to_string();
        assert!(e.contains("metadata says 5 rows"), "{e}");
    }
}
