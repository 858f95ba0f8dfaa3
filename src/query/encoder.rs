//! The encoder an index carries: an embedded copy of the model in `INDEX_DIR/encoder/`, named
//! in the manifest with the sha256 of its files, so an index directory is self-contained.

use crate::error::{Error, Result};
use crate::model::image::{CONFIG_FILE, WEIGHTS_FILE};
use crate::model::ImageModel;
use serde_json::{json, Value};
use std::path::Path;

/// Sub-directory of an index holding its encoder.
pub const ENCODER_DIR: &str = "encoder";

/// Copy the model in `model_dir` into `index_dir/encoder/` (each file atomically) and return
/// the manifest's `encoder` record.
pub fn embed_image_encoder(
    model: &ImageModel,
    model_dir: &Path,
    index_dir: &Path,
) -> Result<Value> {
    let dst = index_dir.join(ENCODER_DIR);
    std::fs::create_dir_all(&dst).map_err(|e| Error::io(&dst, e))?;
    for f in [WEIGHTS_FILE, CONFIG_FILE] {
        let src = model_dir.join(f);
        let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
        crate::fsutil::atomic_write(&dst.join(f), &bytes)?;
    }
    let sha = ImageModel::content_hash(&dst)?;
    Ok(json!({
        "kind": "image",
        "path": ENCODER_DIR,
        "sha256": sha,
        "arch": model.config.arch.name(),
        "dim": model.config.dim,
        "metric": model.config.metric,
        "source": model_dir.display().to_string(),
    }))
}

/// The manifest record for an index of raw vectors (no encoder).
pub fn vectors_record(source: &Path, dim: usize) -> Value {
    json!({ "kind": "vectors", "dim": dim, "source": source.display().to_string() })
}

/// Load the encoder an index names, checking its files against the recorded sha256.
/// Returns `None` for an index of raw vectors.
pub fn load_index_encoder(index_dir: &Path, record: &Value) -> Result<Option<ImageModel>> {
    match record.get("kind").and_then(Value::as_str) {
        Some("image") => {
            let rel = record
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or(ENCODER_DIR);
            let dir = index_dir.join(rel);
            let want = record.get("sha256").and_then(Value::as_str).unwrap_or("");
            let got = ImageModel::content_hash(&dir)?;
            if got != want {
                return Err(Error::corrupt(
                    &dir,
                    format!("encoder files have sha256 {got}, but the index was built with {want}: the encoder was changed or damaged"),
                ));
            }
            Ok(Some(ImageModel::load(&dir)?))
        }
        Some("vectors") => Ok(None),
        other => Err(Error::corrupt(
            index_dir.join("manifest.json"),
            format!("unknown encoder kind {other:?}: expected \"image\" or \"vectors\""),
        )),
    }
}
