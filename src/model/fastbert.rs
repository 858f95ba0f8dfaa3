//! An inference-only BERT forward for sentence embeddings, without padding: the tokens of a
//! batch are packed into one `tokens x hidden` matrix, so the linear layers run as one matrix
//! product over real tokens only and attention runs per sentence (a sentence never sees another
//! one, so no mask is needed). Linear layers use [`super::kernels`] with weights packed once at
//! load; the query, key and value projections are fused into one `3·hidden x hidden` product,
//! bias and GELU are applied in the product's epilogue.
//!
//! The weights are those of candle-transformers' `BertModel` (same names, same safetensors), so
//! a model fine-tuned with candle and saved loads here unchanged. Output: mean pooling over the
//! tokens, then L2 normalisation, as sentence-transformers does.

use std::collections::HashMap;

use candle_core::Tensor;
use candle_transformers::models::bert::{Config, HiddenAct};

use super::bert_linear::{attention, Linear, LinearKernel, LinearPrecision, Scratch};
use crate::error::{Error, Result};

/// Layer norm parameters of one `hidden`-wide normalisation.
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// Query, key and value projections stacked: output columns `[q | k | v]`.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    intermediate: Linear,
    output: Linear,
    out_norm: Norm,
}

/// BERT encoder weights packed for [`FastBert::embed`].
pub struct FastBert {
    hidden: usize,
    heads: usize,
    eps: f32,
    max_positions: usize,
    vocab: usize,
    /// `vocab x hidden`.
    word: Vec<f32>,
    /// Position embedding plus token-type-0 embedding, `max_positions x hidden` (every token
    /// of a single-sentence input has type 0).
    position_type0: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    precision: LinearPrecision,
}

impl std::fmt::Debug for FastBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastBert")
            .field("hidden", &self.hidden)
            .field("layers", &self.layers.len())
            .field("heads", &self.heads)
            .field("precision", &self.precision)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Buffers of the forward pass, kept per thread (a batch's are a few MB; allocating them
    /// afresh each batch cost page faults and zeroing).
    static WORK: std::cell::RefCell<Work> = std::cell::RefCell::new(Work::default());
}

/// Reusable buffers of one forward pass.
#[derive(Default)]
struct Work {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    inter: Vec<f32>,
    scores: Vec<f32>,
    lens: Vec<usize>,
    bf16: Scratch,
}

fn tensor_vec(t: &HashMap<String, Tensor>, names: &[String], shape: &[usize]) -> Result<Vec<f32>> {
    let Some(tensor) = names.iter().find_map(|n| t.get(n)) else {
        return Err(Error::Msg(format!("weight {} is missing", names[0])));
    };
    if tensor.dims() != shape {
        return Err(Error::Shape(format!(
            "{}: expected {shape:?}, got {:?}",
            names[0],
            tensor.dims()
        )));
    }
    Ok(tensor
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

fn get(t: &HashMap<String, Tensor>, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    tensor_vec(t, &[name.to_string()], shape)
}

fn norm(t: &HashMap<String, Tensor>, prefix: &str, h: usize) -> Result<Norm> {
    let w = [format!("{prefix}.weight"), format!("{prefix}.gamma")];
    let b = [format!("{prefix}.bias"), format!("{prefix}.beta")];
    Ok(Norm {
        gamma: tensor_vec(t, &w, &[h])?,
        beta: tensor_vec(t, &b, &[h])?,
    })
}

fn linear(
    t: &HashMap<String, Tensor>,
    prefix: &str,
    n: usize,
    k: usize,
    p: LinearPrecision,
) -> Result<Linear> {
    let w = get(t, &format!("{prefix}.weight"), &[n, k])?;
    let b = get(t, &format!("{prefix}.bias"), &[n])?;
    Ok(Linear::new(&w, b, n, k, p))
}

impl FastBert {
    /// Pack the weights of a BERT checkpoint (names as candle-transformers' `BertModel`, without
    /// a `bert.` prefix) for `precision`. Refuses configurations this forward does not
    /// implement (an activation other than erf GELU, hidden size not divisible by the heads).
    pub fn new(
        tensors: &HashMap<String, Tensor>,
        cfg: &Config,
        precision: LinearPrecision,
    ) -> Result<Self> {
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        if cfg.hidden_act != HiddenAct::Gelu {
            return Err(Error::InvalidArgument(format!(
                "fast BERT forward implements erf GELU only, not {:?}",
                cfg.hidden_act
            )));
        }
        if cfg.num_attention_heads == 0 || h % cfg.num_attention_heads != 0 {
            return Err(Error::InvalidArgument(format!(
                "hidden size {h} not divisible by {} heads",
                cfg.num_attention_heads
            )));
        }
        let word = get(
            tensors,
            "embeddings.word_embeddings.weight",
            &[cfg.vocab_size, h],
        )?;
        let mut position_type0 = get(
            tensors,
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, h],
        )?;
        let types = get(
            tensors,
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
        )?;
        for row in position_type0.chunks_exact_mut(h) {
            for (v, t) in row.iter_mut().zip(&types[..h]) {
                *v += t;
            }
        }
        let emb_norm = norm(tensors, "embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let mut w = Vec::with_capacity(3 * h * h);
            let mut b = Vec::with_capacity(3 * h);
            for part in ["query", "key", "value"] {
                let name = format!("{p}.attention.self.{part}");
                w.extend(get(tensors, &format!("{name}.weight"), &[h, h])?);
                b.extend(get(tensors, &format!("{name}.bias"), &[h])?);
            }
            layers.push(Layer {
                qkv: Linear::new(&w, b, 3 * h, h, precision),
                attn_out: linear(
                    tensors,
                    &format!("{p}.attention.output.dense"),
                    h,
                    h,
                    precision,
                )?,
                attn_norm: norm(tensors, &format!("{p}.attention.output.LayerNorm"), h)?,
                intermediate: linear(
                    tensors,
                    &format!("{p}.intermediate.dense"),
                    inter,
                    h,
                    precision,
                )?,
                output: linear(tensors, &format!("{p}.output.dense"), h, inter, precision)?,
                out_norm: norm(tensors, &format!("{p}.output.LayerNorm"), h)?,
            });
        }
        let precision = layers
            .first()
            .map_or(precision, |l: &Layer| l.qkv.precision());
        Ok(FastBert {
            hidden: h,
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps as f32,
            max_positions: cfg.max_position_embeddings,
            vocab: cfg.vocab_size,
            word,
            position_type0,
            emb_norm,
            layers,
            precision,
        })
    }

    /// The arithmetic of the linear layers actually used on this CPU.
    pub fn precision(&self) -> LinearPrecision {
        self.precision
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.hidden
    }

    /// Embed a batch of token-id sequences (special tokens included, at most the model's
    /// position count long): row-major `seqs.len() x dim`, each row mean-pooled over its tokens
    /// and of unit L2 norm. One thread; run batches concurrently for more.
    pub fn embed(&self, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        for (i, s) in seqs.iter().enumerate() {
            if s.is_empty() || s.len() > self.max_positions {
                return Err(Error::InvalidArgument(format!(
                    "sequence {i} has {} tokens, expected 1..={}",
                    s.len(),
                    self.max_positions
                )));
            }
            if let Some(&bad) = s.iter().find(|&&t| t as usize >= self.vocab) {
                return Err(Error::InvalidArgument(format!(
                    "sequence {i}: token id {bad} outside the vocabulary of {}",
                    self.vocab
                )));
            }
        }
        let mut out = vec![0f32; seqs.len() * self.hidden];
        WORK.with(|work| {
            let work = &mut work.borrow_mut();
            #[cfg(target_arch = "x86_64")]
            if crate::cpu::has_avx512f() {
                // SAFETY: the CPU has AVX-512F (checked just above).
                unsafe { self.forward_avx512(seqs, &mut out, work) };
                return;
            }
            self.forward(seqs, &mut out, work);
        });
        Ok(out)
    }

    /// [`Self::forward`] compiled for AVX-512, so its inlined loops are vectorised with it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
    unsafe fn forward_avx512(&self, seqs: &[&[u32]], out: &mut [f32], work: &mut Work) {
        self.forward(seqs, out, work)
    }

    #[inline(always)]
    fn forward(&self, seqs: &[&[u32]], out: &mut [f32], w: &mut Work) {
        let h = self.hidden;
        let t: usize = seqs.iter().map(|s| s.len()).sum();
        w.lens.clear();
        w.lens.extend(seqs.iter().map(|s| s.len()));
        let inter = self.layers.first().map_or(0, |l| l.intermediate.n());
        w.x.resize(t * h, 0.0);
        w.qkv.resize(t * 3 * h, 0.0);
        w.ctx.resize(t * h, 0.0);
        w.tmp.resize(t * h, 0.0);
        w.inter.resize(t * inter, 0.0);

        // Embeddings: word + position + type 0, then layer norm.
        let mut row = 0;
        for s in seqs {
            for (pos, &id) in s.iter().enumerate() {
                let dst = &mut w.x[row * h..(row + 1) * h];
                let word = &self.word[id as usize * h..(id as usize + 1) * h];
                let pt = &self.position_type0[pos * h..(pos + 1) * h];
                for ((d, a), b) in dst.iter_mut().zip(word).zip(pt) {
                    *d = a + b;
                }
                layer_norm(dst, &self.emb_norm, self.eps);
                row += 1;
            }
        }

        for layer in &self.layers {
            layer.qkv.forward(&w.x, t, &mut w.qkv, false, &mut w.bf16);
            attention(&w.qkv, &mut w.ctx, &w.lens, h, self.heads, &mut w.scores);
            layer
                .attn_out
                .forward(&w.ctx, t, &mut w.tmp, false, &mut w.bf16);
            add_norm(&mut w.x, &w.tmp, &layer.attn_norm, h, self.eps);
            layer
                .intermediate
                .forward(&w.x, t, &mut w.inter, true, &mut w.bf16);
            layer
                .output
                .forward(&w.inter, t, &mut w.tmp, false, &mut w.bf16);
            add_norm(&mut w.x, &w.tmp, &layer.out_norm, h, self.eps);
        }

        // Mean pooling over each sentence's tokens, then L2 normalisation.
        let mut row = 0;
        for (s, dst) in seqs.iter().zip(out.chunks_exact_mut(h)) {
            dst.fill(0.0);
            for r in row..row + s.len() {
                for (d, v) in dst.iter_mut().zip(&w.x[r * h..(r + 1) * h]) {
                    *d += v;
                }
            }
            row += s.len();
            let inv = 1.0 / s.len() as f32;
            let norm = sum16(dst, |v| v * v).sqrt() * inv;
            let scale = inv / norm.max(1e-12);
            for d in dst.iter_mut() {
                *d *= scale;
            }
        }
    }
}

/// Sum of `f(v)` over `v`, in 16 independent lanes (vectorisable without reassociation).
#[inline(always)]
fn sum16(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += f(*x);
        }
    }
    let mut s: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    s += acc.iter().sum::<f32>();
    s
}

/// Layer norm of one row in place.
#[inline(always)]
fn layer_norm(x: &mut [f32], n: &Norm, eps: f32) {
    let inv_n = 1.0 / x.len() as f32;
    let mean = sum16(x, |v| v) * inv_n;
    let var = sum16(x, |v| (v - mean) * (v - mean)) * inv_n;
    let rstd = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in x.iter_mut().zip(&n.gamma).zip(&n.beta) {
        *v = (*v - mean) * rstd * g + b;
    }
}

/// `x = layer_norm(x + y)`, row by row (`h` wide).
#[inline(always)]
fn add_norm(x: &mut [f32], y: &[f32], n: &Norm, h: usize, eps: f32) {
    for (xr, yr) in x.chunks_exact_mut(h).zip(y.chunks_exact(h)) {
        for (a, b) in xr.iter_mut().zip(yr) {
            *a += b;
        }
        layer_norm(xr, n, eps);
    }
}

/// Which forward [`super::TextEncoder::encode`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextBackend {
    /// candle-transformers' `BertModel` on padded batches: the reference implementation, and
    /// the one to train with.
    Candle,
    /// [`FastBert`] (packed tokens, no padding) with linear layers in the given precision.
    Fast(LinearPrecision),
}

impl TextBackend {
    /// The environment variable that overrides the default backend.
    pub const ENV: &'static str = "TWINDEX_TEXT_BACKEND";

    /// From `TWINDEX_TEXT_BACKEND` (`candle`, `f32` or `bf16`) when set, else the default:
    /// bfloat16 where the CPU has AMX (all-MiniLM-L6-v2: min cosine 0.99998 to the float32
    /// reference on the 100 reference sentences, qqp-10k.test AP 0.78604 vs 0.78611, at a
    /// third of the float32 CPU time), float32 elsewhere (AVX512-BF16 without AMX measured
    /// slower than float32 on Sapphire Rapids).
    pub fn from_env() -> Result<Self> {
        match std::env::var(Self::ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse().map_err(|_| {
                Error::InvalidArgument(format!("{}={v:?}: expected candle, f32 or bf16", Self::ENV))
            }),
            _ => Ok(TextBackend::Fast(
                if LinearKernel::best(LinearPrecision::Bf16) == LinearKernel::Amx {
                    LinearPrecision::Bf16
                } else {
                    LinearPrecision::F32
                },
            )),
        }
    }
}

impl std::str::FromStr for TextBackend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "candle" => Ok(TextBackend::Candle),
            other => other.parse().map(TextBackend::Fast).map_err(|_| {
                Error::InvalidArgument(format!("text backend {s:?}: expected candle, f32 or bf16"))
            }),
        }
    }
}
