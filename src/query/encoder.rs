//! The encoder an index carries: an embedded copy of the model in `INDEX_DIR/encoder/`, named
//! in the manifest with the sha256 of its files, so an index directory is self-contained.

use crate::error::{Error, Result};
use crate::index::{EncoderRecord, Metric};
use crate::model::{ImageModel, TextEncoder};
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
) -> Result<EncoderRecord> {
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
pub fn image_record(
    model: &ImageModel,
    path: &str,
    dir: &Path,
    source: &Path,
) -> Result<EncoderRecord> {
    let metric = model.config.metric;
    Ok(EncoderRecord::Image {
        path: path.to_string(),
        sha256: ImageModel::content_hash(dir)?,
        arch: model.config.arch.name().to_string(),
        dim: model.config.dim,
        metric,
        source: source.display().to_string(),
        ensemble_members: model.config.ensemble.as_ref().map(|e| e.members.len()),
    })
}

/// The manifest record for an index of raw vectors (no encoder).
pub fn vectors_record(source: &Path, dim: usize) -> EncoderRecord {
    EncoderRecord::vectors(&source.display().to_string(), dim)
}

/// Load the encoder an index names, checking its files against the recorded sha256.
/// Returns `None` for an index of raw vectors.
pub fn load_index_encoder(index_dir: &Path, record: &EncoderRecord) -> Result<Option<ImageModel>> {
    match record {
        EncoderRecord::Image { path, sha256, .. } => {
            let dir = index_dir.join(path);
            let got = ImageModel::content_hash(&dir)?;
            if &got != sha256 {
                return Err(Error::corrupt(
                    &dir,
                    format!("encoder files have sha256 {got}, but the index was built with {sha256}: the encoder was changed or damaged"),
                ));
            }
            Ok(Some(ImageModel::load(&dir)?))
        }
        EncoderRecord::Vectors { .. } | EncoderRecord::Text { .. } => Ok(None),
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
pub fn text_record(model_dir: &Path, enc: &TextEncoder) -> Result<EncoderRecord> {
    let abs = std::fs::canonicalize(model_dir).map_err(|e| Error::io(model_dir, e))?;
    Ok(EncoderRecord::Text {
        path: abs.display().to_string(),
        sha256: text_model_hash(&abs)?,
        dim: enc.dim(),
        max_seq_length: enc.max_seq_length(),
        metric: Metric::Cosine,
    })
}

/// Load the text encoder a text index names, checking its files against the recorded sha256.
/// Returns `None` for other kinds of index.
pub fn load_text_encoder(index_dir: &Path, record: &EncoderRecord) -> Result<Option<TextEncoder>> {
    if !matches!(record, EncoderRecord::Text { .. }) {
        return Ok(None);
    }
    load_text_encoder_from(index_dir, record, None).map(Some)
}

/// Load a text index's encoder from `model` when given (an index whose model folder moved),
/// else from the recorded path; the files must have the recorded sha256 either way.
pub fn load_text_encoder_from(
    index_dir: &Path,
    record: &EncoderRecord,
    model: Option<&Path>,
) -> Result<TextEncoder> {
    let manifest = index_dir.join("manifest.json");
    let EncoderRecord::Text {
        path, sha256: want, ..
    } = record
    else {
        return Err(Error::corrupt(
            &manifest,
            format!(
                "the encoder is of kind {:?}, not a text model",
                record.kind()
            ),
        ));
    };
    let recorded = std::path::PathBuf::from(path);
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
    let got = text_model_hash(&dir)?;
    if &got != want {
        return Err(Error::corrupt(
            &dir,
            format!("text model files have sha256 {got}, but the index was built with {want}: another or a changed model"),
        ));
    }
    TextEncoder::load(&dir)
}
