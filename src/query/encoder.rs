//! The encoder an index carries: an embedded copy of the model in `INDEX_DIR/encoder/`, named
//! in the manifest with the sha256 of its files, so an index directory is self-contained.

use crate::error::{Error, Result};
use crate::model::{ImageModel, TextEncoder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
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
    for f in ImageModel::files(model_dir)? {
        let src = model_dir.join(&f);
        let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
        crate::fsutil::atomic_write(&dst.join(&f), &bytes)?;
    }
    image_record(model, ENCODER_DIR, &dst, model_dir)
}

/// The manifest record of the image encoder `model` whose files are in `dir`, recorded as
/// `path` (relative to an index, or absolute for a part), with the sha256 of those files.
pub fn image_record(model: &ImageModel, path: &str, dir: &Path, source: &Path) -> Result<Value> {
    let mut rec = json!({
        "kind": "image",
        "path": path,
        "sha256": ImageModel::content_hash(dir)?,
        "arch": model.config.arch.name(),
        "dim": model.config.dim,
        "metric": model.config.metric,
        "source": source.display().to_string(),
    });
    if let Some(e) = &model.config.ensemble {
        rec["ensemble_members"] = json!(e.members.len());
    }
    Ok(rec)
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
        Some("vectors") | Some("text") => Ok(None),
        other => Err(Error::corrupt(
            index_dir.join("manifest.json"),
            format!("unknown encoder kind {other:?}: expected \"image\", \"text\" or \"vectors\""),
        )),
    }
}

/// sha256 over a text model folder's config, tokenizer and weights.
pub fn text_model_hash(dir: &Path) -> Result<String> {
    let mut h = Sha256::new();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        let p = dir.join(f);
        let b = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
        h.update(&b);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The manifest record for a text index: the model folder by path (sentence-transformers
/// models are large, so they are referenced, not copied) and the sha256 of its files.
pub fn text_record(model_dir: &Path, enc: &TextEncoder) -> Result<Value> {
    let abs = std::fs::canonicalize(model_dir).map_err(|e| Error::io(model_dir, e))?;
    Ok(json!({
        "kind": "text",
        "path": abs.display().to_string(),
        "sha256": text_model_hash(&abs)?,
        "dim": enc.dim(),
        "max_seq_length": enc.max_seq_length(),
        "metric": "cosine",
    }))
}

/// Load the text encoder a text index names, checking its files against the recorded sha256.
/// Returns `None` for other kinds of index.
pub fn load_text_encoder(index_dir: &Path, record: &Value) -> Result<Option<TextEncoder>> {
    if record.get("kind").and_then(Value::as_str) != Some("text") {
        return Ok(None);
    }
    load_text_encoder_from(index_dir, record, None).map(Some)
}

/// Load a text index's encoder from `model` when given (an index whose model folder moved),
/// else from the recorded path; the files must have the recorded sha256 either way.
pub fn load_text_encoder_from(
    index_dir: &Path,
    record: &Value,
    model: Option<&Path>,
) -> Result<TextEncoder> {
    let manifest = index_dir.join("manifest.json");
    let recorded = record
        .get("path")
        .and_then(Value::as_str)
        .map(std::path::PathBuf::from)
        .ok_or_else(|| Error::corrupt(&manifest, "text encoder record has no path"))?;
    let dir = model
        .map(Path::to_path_buf)
        .unwrap_or_else(|| recorded.clone());
    if !dir.join("config.json").is_file() {
        return Err(Error::corrupt(
            &manifest,
            match model {
                Some(m) => format!("--model {}: no text model there (config.json missing)", m.display()),
                None => format!(
                    "the index points to the text model {}, which is not there (moved or removed?); pass --model DIR to use a copy",
                    recorded.display()
                ),
            },
        ));
    }
    let want = record.get("sha256").and_then(Value::as_str).unwrap_or("");
    let got = text_model_hash(&dir)?;
    if got != want {
        return Err(Error::corrupt(
            &dir,
            format!("text model files have sha256 {got}, but the index was built with {want}: another or a changed model"),
        ));
    }
    TextEncoder::load(&dir)
}
