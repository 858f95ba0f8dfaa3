//! The on-disk form shared by the image and sequence encoders: a folder holding `config.json`
//! (the model's config, with its training record) and `model.safetensors` (the weights), each
//! written atomically (temp file, fsync, rename), so a crash never leaves half a model.

use crate::error::{Error, Result};
use crate::fsutil;
use candle_nn::VarMap;
use serde::Serialize;
use std::path::Path;

/// The model's config (format, network, preprocessing, threshold, training record).
pub const CONFIG_FILE: &str = "config.json";
/// The weights (safetensors).
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Write the weights of `varmap` into `dir/model.safetensors` (creating `dir`), atomically.
/// `varmap` is `None` for a model loaded for inference only, which cannot be saved.
pub fn save_weights(varmap: Option<&VarMap>, dir: &Path) -> Result<()> {
    let varmap = varmap.ok_or_else(|| Error::Msg("only a trainable model can be saved".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let wpath = dir.join(WEIGHTS_FILE);
    let tmp = fsutil::temp_path(&wpath);
    varmap.save(&tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::corrupt(&wpath, format!("cannot write weights: {e}"))
    })?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &wpath).map_err(|e| Error::io(&wpath, e))
}

/// Write the config into `dir/config.json`, atomically (after the weights, so a config always
/// describes weights that are there).
pub fn save_config<T: Serialize>(config: &T, dir: &Path) -> Result<()> {
    fsutil::atomic_write_json(&dir.join(CONFIG_FILE), config)
}
