//! A BERT encoder differentiable through candle's autograd: the reference that
//! [`super::gradbert::GradBert`] (which `train text` runs, at a fraction of the CPU) is tested
//! against, and a BERT for anyone composing their own candle training graph.
//!
//! Inference uses candle-transformers' `BertModel` ([`super::text::TextEncoder`]), but that
//! model cannot be trained: its layer norm is a fused custom op without a backward pass
//! (`BackwardNotSupported { op: "layer-norm" }`) and its dropout is a no-op. This module is the
//! same network, with the same tensor names (Hugging Face `BertModel`, no `bert.` prefix), built
//! only from differentiable ops (`layer_norm_slow`, generic softmax) and with seeded dropout as
//! in PyTorch's training mode (inverted dropout after the embeddings, on the attention
//! probabilities and after each residual projection). With dropout off it computes what
//! `BertModel` computes; a test checks it.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::sync::Mutex;

/// Differentiable layer norm over the last dimension with weight and bias.
#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Norm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Norm {
            weight: vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?,
            bias: vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?,
            eps: eps as f32,
        })
    }
}

impl Module for Norm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps)
    }
}

/// Inverted dropout with a seeded generator; `None` (evaluation) leaves `x` as it is.
fn dropout(x: &Tensor, p: f64, rng: Option<&Mutex<ChaCha8Rng>>) -> candle_core::Result<Tensor> {
    let Some(rng) = rng else {
        return Ok(x.clone());
    };
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 / (1.0 - p) as f32;
    let n = x.elem_count();
    let mut mask = Vec::with_capacity(n);
    {
        let mut rng = rng.lock().expect("dropout rng");
        let p = p as f32;
        for _ in 0..n {
            mask.push(if rng.random::<f32>() < p { 0.0 } else { keep });
        }
    }
    x * Tensor::from_vec(mask, x.shape(), x.device())?
}

/// A dense layer applied to `[n, len, in]` as one `[n * len, in]` matrix product:
/// candle's `Linear` broadcasts its weight to `[n, in, out]` for a 3-d input, so its backward
/// computes `n` weight gradients and then sums them.
#[derive(Debug, Clone)]
struct Dense(Linear);

impl Dense {
    fn new(i: usize, o: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Dense(candle_nn::linear(i, o, vb)?))
    }
}

impl Module for Dense {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let (last, lead) = dims.split_last().expect("a dense input has a dimension");
        let rows: usize = lead.iter().product();
        let w = self.0.weight();
        let y = x.reshape((rows, *last))?.matmul(&w.t()?)?;
        let y = match self.0.bias() {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = lead.to_vec();
        out.push(w.dim(0)?);
        y.reshape(out)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    intermediate: Dense,
    output: Dense,
    out_norm: Norm,
}

/// The BERT encoder stack with sentence-transformers' tensor names, differentiable through
/// candle's autograd. **The oracle** of [`super::gradbert::GradBert`]'s hand-written backward
/// (its gradients are compared with this one's in `gradbert`'s tests and `tests/it/text_train.rs`);
/// twindex itself trains with `GradBert` and embeds with `FastBert` / candle's `BertModel`.
#[derive(Debug, Clone)]
pub struct TrainableBert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    act: HiddenAct,
    hidden_dropout: f64,
    attention_dropout: f64,
}

impl TrainableBert {
    /// Build from `vb` (names as Hugging Face `BertModel`: `embeddings.word_embeddings.weight`,
    /// `encoder.layer.0.attention.self.query.weight`, ...). `attention_dropout` is
    /// `config.json`'s `attention_probs_dropout_prob`.
    pub fn new(vb: VarBuilder, cfg: &Config, attention_dropout: f64) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        if cfg.num_attention_heads == 0 || !h.is_multiple_of(cfg.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                cfg.num_attention_heads
            );
        }
        let e = vb.pp("embeddings");
        let word = candle_nn::embedding(cfg.vocab_size, h, e.pp("word_embeddings"))?;
        let position =
            candle_nn::embedding(cfg.max_position_embeddings, h, e.pp("position_embeddings"))?;
        let token_type =
            candle_nn::embedding(cfg.type_vocab_size, h, e.pp("token_type_embeddings"))?;
        let emb_norm = Norm::new(h, cfg.layer_norm_eps, e.pp("LayerNorm"))?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                query: Dense::new(h, h, a.pp("self.query"))?,
                key: Dense::new(h, h, a.pp("self.key"))?,
                value: Dense::new(h, h, a.pp("self.value"))?,
                attn_out: Dense::new(h, h, a.pp("output.dense"))?,
                attn_norm: Norm::new(h, cfg.layer_norm_eps, a.pp("output.LayerNorm"))?,
                intermediate: Dense::new(h, cfg.intermediate_size, l.pp("intermediate.dense"))?,
                output: Dense::new(cfg.intermediate_size, h, l.pp("output.dense"))?,
                out_norm: Norm::new(h, cfg.layer_norm_eps, l.pp("output.LayerNorm"))?,
            });
        }
        Ok(TrainableBert {
            word,
            position,
            token_type,
            emb_norm,
            layers,
            heads: cfg.num_attention_heads,
            act: cfg.hidden_act,
            hidden_dropout: cfg.hidden_dropout_prob,
            attention_dropout,
        })
    }

    /// Hidden states `[n, len, hidden]` of token ids `[n, len]` (u32) with attention `mask`
    /// `[n, len]` (1 for a token, 0 for padding). `rng`: dropout on (training) or `None`.
    pub fn forward(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        rng: Option<&Mutex<ChaCha8Rng>>,
    ) -> candle_core::Result<Tensor> {
        let (n, len) = ids.dims2()?;
        let dev = ids.device();
        let pos = Tensor::arange(0u32, len as u32, dev)?;
        let types = ids.zeros_like()?;
        let x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.forward(&pos)?)?
            .add(&self.token_type.forward(&types)?)?;
        let mut x = dropout(&self.emb_norm.forward(&x)?, self.hidden_dropout, rng)?;
        // (1 - mask) * most-negative, as candle-transformers and Hugging Face: [n, 1, 1, len].
        let bias = (mask.to_dtype(DType::F32)?.affine(-1.0, 1.0)? * f32::MIN as f64)?
            .reshape((n, 1, 1, len))?;
        let hidden = x.dim(2)?;
        let hd = hidden / self.heads;
        let scale = 1.0 / (hd as f64).sqrt();
        for l in &self.layers {
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((n, len, self.heads, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = split(l.query.forward(&x)?)?;
            let k = split(l.key.forward(&x)?)?;
            let v = split(l.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let probs = dropout(&probs, self.attention_dropout, rng)?;
            let ctx = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((n, len, hidden))?;
            let a = dropout(&l.attn_out.forward(&ctx)?, self.hidden_dropout, rng)?;
            let a = l.attn_norm.forward(&(a + &x)?)?;
            let i = l.intermediate.forward(&a)?;
            let i = match self.act {
                HiddenAct::Gelu => i.gelu_erf()?,
                HiddenAct::GeluApproximate => i.gelu()?,
                HiddenAct::Relu => i.relu()?,
            };
            let o = dropout(&l.output.forward(&i)?, self.hidden_dropout, rng)?;
            x = l.out_norm.forward(&(o + &a)?)?;
        }
        Ok(x)
    }
}
