//! Text encoder: a sentence-transformers BERT (e.g. all-MiniLM-L6-v2) loaded from a local folder,
//! with mean pooling over the attention mask and L2 normalisation, as sentence-transformers does.
//!
//! The folder holds `config.json` (BERT hyper-parameters), `tokenizer.json` (a Hugging Face fast
//! tokenizer), `model.safetensors` (weights, named with or without a `bert.` prefix) and,
//! optionally, `sentence_bert_config.json` (`max_seq_length`) and `1_Pooling/config.json`
//! (only mean pooling is supported).
//!
//! Two forwards ([`TextBackend`]): candle-transformers' `BertModel` on padded batches (the
//! reference, and what training builds on), and on the CPU by default the packed, padding-free
//! [`super::fastbert::FastBert`] in float32 or bfloat16 (`TWINDEX_TEXT_BACKEND`,
//! [`TextEncoder::set_backend`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

use super::fastbert::{FastBert, TextBackend};
use crate::error::{Error, Result};

/// A sentence encoder: text in, unit-norm embeddings out (similarity = dot product = cosine).
pub struct TextEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    max_seq_length: usize,
    pad_id: u32,
    /// Run batches concurrently on rayon's pool (each batch's matmuls are multi-threaded anyway).
    /// Default `true`: on a 2-core CPU, measured 10-15% fewer CPU-seconds than one batch at a time.
    parallel_batches: bool,
    /// The weights as loaded (shared with `model`), to pack for the fast forward.
    tensors: HashMap<String, Tensor>,
    config: Config,
    /// The packed forward, when the backend is [`TextBackend::Fast`].
    fast: Option<FastBert>,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("dim", &self.dim)
            .field("max_seq_length", &self.max_seq_length)
            .field("parallel_batches", &self.parallel_batches)
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

/// `1_Pooling/config.json`: sentence-transformers up to 5 writes `pooling_mode_mean_tokens:
/// true`, version 6 `pooling_mode: "mean"` (or a list of modes).
#[derive(serde::Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode: serde_json::Value,
}

impl PoolingConfig {
    fn is_mean(&self) -> bool {
        let mean = serde_json::Value::from("mean");
        self.pooling_mode_mean_tokens
            || self.pooling_mode == mean
            || self.pooling_mode.as_array() == Some(&vec![mean])
    }
}

fn require(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "required model file is missing",
            ),
        ))
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|cause| Error::Json {
        path: path.to_path_buf(),
        cause,
    })
}

/// Everything in a sentence-transformers folder except the weights: BERT hyper-parameters,
/// the tokenizer (truncating at `max_seq_length`, unpadded) and the weights file's path.
#[derive(Clone)]
pub struct TextModelParts {
    pub dir: PathBuf,
    pub config: Config,
    /// `config.json`'s `attention_probs_dropout_prob` (candle's `Config` does not keep it).
    pub attention_dropout: f64,
    pub tokenizer: Tokenizer,
    pub max_seq_length: usize,
    pub pad_id: u32,
    pub weights_path: PathBuf,
}

impl std::fmt::Debug for TextModelParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextModelParts")
            .field("dir", &self.dir)
            .field("max_seq_length", &self.max_seq_length)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct DropoutConfig {
    #[serde(default)]
    attention_probs_dropout_prob: Option<f64>,
}

impl TextModelParts {
    /// Read and check `config.json`, `tokenizer.json`, `sentence_bert_config.json` and
    /// `1_Pooling/config.json` of `dir`; `model.safetensors` must exist (it is read later).
    pub fn read(dir: &Path) -> Result<Self> {
        let config_path = require(dir, "config.json")?;
        let tokenizer_path = require(dir, "tokenizer.json")?;
        let weights_path = require(dir, "model.safetensors")?;

        let config: Config = read_json(&config_path)?;
        let attention_dropout = read_json::<DropoutConfig>(&config_path)?
            .attention_probs_dropout_prob
            .unwrap_or(config.hidden_dropout_prob);

        let st_path = dir.join("sentence_bert_config.json");
        let max_seq_length = if st_path.is_file() {
            read_json::<SentenceBertConfig>(&st_path)?.max_seq_length
        } else {
            None
        }
        .unwrap_or(config.max_position_embeddings);
        if max_seq_length < 2 || max_seq_length > config.max_position_embeddings {
            return Err(Error::format(
                st_path,
                format!(
                    "max_seq_length {max_seq_length} outside 2..={} (max_position_embeddings)",
                    config.max_position_embeddings
                ),
            ));
        }

        let pooling_path = dir.join("1_Pooling").join("config.json");
        if pooling_path.is_file() && !read_json::<PoolingConfig>(&pooling_path)?.is_mean() {
            return Err(Error::format(
                pooling_path,
                "only mean pooling (pooling_mode_mean_tokens: true, or pooling_mode: \"mean\") is supported",
            ));
        }

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::format(&tokenizer_path, e.to_string()))?;
        // tokenizer.json may carry its own truncation (128) and fixed padding: we truncate at
        // max_seq_length, as sentence-transformers does, and pad per batch ourselves.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| Error::format(&tokenizer_path, e.to_string()))?;
        tokenizer.with_padding(None);
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        Ok(TextModelParts {
            dir: dir.to_path_buf(),
            config,
            attention_dropout,
            tokenizer,
            max_seq_length,
            pad_id,
            weights_path,
        })
    }

    /// The tensors of `model.safetensors` under their stored names (with or without `bert.`).
    pub fn read_weights(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        let path = &self.weights_path;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        candle_core::safetensors::load_buffer(&bytes, device)
            .map_err(|e| Error::corrupt(path, e.to_string()))
    }
}

/// The name `BertModel` uses for a stored tensor name: weights exported from `BertModel` have
/// bare names, from `BertFor*` a `bert.` prefix.
pub fn model_tensor_name(stored: &str) -> &str {
    stored.strip_prefix("bert.").unwrap_or(stored)
}

/// Mean over real tokens (`mask` `[n, len]`, 1 for a token) of `hidden` `[n, len, dim]`, then
/// L2-normalised: `[n, dim]`, as sentence-transformers' Pooling + Normalize. Differentiable.
pub fn mean_pool_normalize(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, len, 1)
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (n, dim)
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?; // (n, 1)
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norm)
}

/// Pad token rows to the longest: ids and attention mask, both `n * len`, and `len`.
pub fn pad_rows(rows: &[&[u32]], pad_id: u32) -> (Vec<u32>, Vec<u32>, usize) {
    let n = rows.len();
    let len = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![pad_id; n * len];
    let mut mask = vec![0u32; n * len];
    for (b, row) in rows.iter().enumerate() {
        ids[b * len..b * len + row.len()].copy_from_slice(row);
        mask[b * len..b * len + row.len()].fill(1);
    }
    (ids, mask, len)
}

impl TextEncoder {
    /// Load a sentence-transformers model folder on the CPU.
    ///
    /// Errors name the missing or corrupt file: `config.json`, `tokenizer.json`,
    /// `model.safetensors`, `sentence_bert_config.json` or `1_Pooling/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_on(dir, &Device::Cpu)
    }

    /// Load a sentence-transformers model folder onto `device`.
    pub fn load_on(dir: &Path, device: &Device) -> Result<Self> {
        let parts = TextModelParts::read(dir)?;
        let tensors = parts.read_weights(device)?;
        Self::from_tensors(&parts, tensors, device)
    }

    /// An encoder from the folder's `parts` and weights (stored names, `bert.` prefix or not),
    /// e.g. a snapshot of weights being fine-tuned.
    pub fn from_tensors(
        parts: &TextModelParts,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, v)| (model_tensor_name(&k).to_string(), v))
            .collect();
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let model = BertModel::load(vb, &parts.config).map_err(|e| {
            Error::corrupt(&parts.weights_path, format!("not a BERT checkpoint: {e}"))
        })?;

        let mut enc = TextEncoder {
            model,
            tokenizer: parts.tokenizer.clone(),
            device: device.clone(),
            dim: parts.config.hidden_size,
            max_seq_length: parts.max_seq_length,
            pad_id: parts.pad_id,
            parallel_batches: true,
            tensors,
            config: parts.config.clone(),
            fast: None,
        };
        if device.is_cpu() {
            // The default falls back to candle for checkpoints the fast forward does not
            // implement (another activation, say); a backend asked for by name must work.
            let asked = std::env::var(TextBackend::ENV).is_ok_and(|v| !v.trim().is_empty());
            if let Err(e) = enc.set_backend(TextBackend::from_env()?) {
                if asked {
                    return Err(Error::corrupt(&parts.weights_path, e.to_string()));
                }
            }
        }
        Ok(enc)
    }

    /// Choose the forward of [`Self::encode`] (default: [`TextBackend::from_env`]). The fast
    /// backends are CPU-only; switching packs the weights again (about a second).
    pub fn set_backend(&mut self, backend: TextBackend) -> Result<()> {
        self.fast = match backend {
            TextBackend::Candle => None,
            TextBackend::Fast(p) => {
                if !self.device.is_cpu() {
                    return Err(Error::InvalidArgument(
                        "the fast text backend runs on the CPU only".into(),
                    ));
                }
                Some(FastBert::new(&self.tensors, &self.config, p)?)
            }
        };
        Ok(())
    }

    /// The forward [`Self::encode`] runs (with the precision actually used on this CPU).
    pub fn backend(&self) -> TextBackend {
        match &self.fast {
            Some(f) => TextBackend::Fast(f.precision()),
            None => TextBackend::Candle,
        }
    }

    /// Embedding dimension (384 for MiniLM-L6).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Longest token sequence (special tokens included); longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Run batches concurrently on rayon's pool (default on). candle's matmuls already use rayon,
    /// but the rest of a layer (softmax, layer norm, GELU, copies) does not: on 2 cores, with
    /// batch 32, concurrent batches took 10-15% fewer CPU-seconds.
    pub fn set_parallel_batches(&mut self, on: bool) {
        self.parallel_batches = on;
    }

    /// Token ids of each text, with special tokens, truncated at `max_seq_length`, unpadded.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Msg(format!("tokenizer: {e}")))?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Embed `texts`: row-major `texts.len() x dim`, each row of unit L2 norm.
    ///
    /// Texts are sorted by token length and cut into batches of at most `batch`, so each batch
    /// pads only to its own longest text; rows come back in the order of `texts`.
    pub fn encode(&self, texts: &[&str], batch: usize) -> Result<Vec<f32>> {
        if batch == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        let ids = self.tokenize(texts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let chunks: Vec<&[usize]> = order.chunks(batch).collect();
        let run = |chunk: &&[usize]| -> Result<Vec<f32>> {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            match &self.fast {
                Some(fast) => fast.embed(&rows),
                None => self.encode_ids(&rows),
            }
        };
        let outputs: Vec<Vec<f32>> = if self.parallel_batches {
            chunks.par_iter().map(run).collect::<Result<_>>()?
        } else {
            chunks.iter().map(run).collect::<Result<_>>()?
        };
        let mut out = vec![0f32; texts.len() * self.dim];
        for (chunk, emb) in chunks.iter().zip(&outputs) {
            for (r, &i) in chunk.iter().enumerate() {
                out[i * self.dim..(i + 1) * self.dim]
                    .copy_from_slice(&emb[r * self.dim..(r + 1) * self.dim]);
            }
        }
        Ok(out)
    }

    /// One padded batch through BERT, mean-pooled over real tokens and L2-normalised.
    fn encode_ids(&self, rows: &[&[u32]]) -> Result<Vec<f32>> {
        let n = rows.len();
        let (ids, mask, len) = pad_rows(rows, self.pad_id);
        let ids = Tensor::from_vec(ids, (n, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // (n, len, dim)
        let unit = mean_pool_normalize(&hidden, &mask)?;
        Ok(unit.flatten_all()?.to_vec1::<f32>()?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pooling_configs_of_sentence_transformers_5_and_6_read_as_mean() {
        let p = |s: &str| {
            serde_json::from_str::<super::PoolingConfig>(s)
                .unwrap()
                .is_mean()
        };
        assert!(p(
            r#"{"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true}"#
        ));
        assert!(p(
            r#"{"embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": true}"#
        ));
        assert!(p(r#"{"pooling_mode": ["mean"]}"#));
        assert!(!p(r#"{"pooling_mode": "cls"}"#));
        assert!(!p(
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#
        ));
    }
}
