//! A BERT encoder with a hand-written backward pass, for fine-tuning sentence-transformers
//! models at the cost of PyTorch or below.
//!
//! [`super::bert::TrainableBert`] builds the same network from candle's differentiable ops, and
//! most of its training step went to candle's generic machinery rather than arithmetic: every
//! graph node's gradient starts as a zero tensor that the node's contribution is added to, the
//! layer norm, softmax and GELU are each a dozen element-wise nodes, and the optimizer allocates
//! fresh tensors for every update. This module computes the same function and its exact
//! gradient directly:
//!
//! - tokens are packed (no padding): the linear layers run as one `tokens x in` matrix product
//!   per step over real tokens only, and attention runs per sentence (a sentence never sees
//!   another, which is what the padding mask does);
//! - the forward keeps what the backward needs (layer inputs, softmax probabilities, dropout
//!   masks, normalised layer-norm inputs) and the backward walks the layers in reverse, with the
//!   matrix products through the `gemm` crate;
//! - dropout is PyTorch's training mode (inverted dropout after the embeddings, on the attention
//!   probabilities, after each residual projection), seeded per step;
//! - [`AdamW`] updates every tensor in one pass (the Hugging Face trainer's AdamW, as candle's).
//!
//! The tests check the forward and every parameter's gradient against `TrainableBert` through
//! candle's autograd, and the dropout path by finite differences.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{Config, HiddenAct};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::bert_linear::{erf_approx, Linear, LinearKernel, Scratch};
use super::gemm::{rayon_parallelism, sgemm_with};
use crate::error::{Error, Result};

/// Tensors per encoder layer, in this order.
const PER_LAYER: usize = 16;
const QW: usize = 0;
const QB: usize = 1;
const KW: usize = 2;
const KB: usize = 3;
const VW: usize = 4;
const VB: usize = 5;
const AOW: usize = 6;
const AOB: usize = 7;
const LN1G: usize = 8;
const LN1B: usize = 9;
const IW: usize = 10;
const IB: usize = 11;
const OW: usize = 12;
const OB: usize = 13;
const LN2G: usize = 14;
const LN2B: usize = 15;
/// Embedding tensors before the layers.
const WORD: usize = 0;
const POS: usize = 1;
const TYPE: usize = 2;
const EG: usize = 3;
const EB: usize = 4;
const FIRST_LAYER: usize = 5;

/// Suffixes of one layer's tensors (after `encoder.layer.{i}.`), in [`PER_LAYER`] order.
const LAYER_NAMES: [&str; PER_LAYER] = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
];

/// A trainable BERT encoder: every tensor as a flat float32 vector, with its gradient.
pub struct GradBert {
    hidden: usize,
    heads: usize,
    inter: usize,
    layers: usize,
    eps: f32,
    act: HiddenAct,
    hidden_dropout: f32,
    attention_dropout: f32,
    /// Model tensor names (Hugging Face `BertModel`, no `bert.` prefix), shapes, values and
    /// gradients, in a fixed order (embeddings, then [`PER_LAYER`] per layer).
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    values: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    /// Word-embedding rows written by the last backward (only they are non-zero).
    touched_words: Vec<u32>,
}

impl std::fmt::Debug for GradBert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradBert")
            .field("hidden", &self.hidden)
            .field("layers", &self.layers)
            .field("heads", &self.heads)
            .finish_non_exhaustive()
    }
}

/// What the forward keeps for the backward, per layer.
#[derive(Default)]
struct LayerTape {
    /// Layer input, `tokens x hidden`.
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Softmax probabilities before dropout, per sentence and head `len x len`.
    probs: Vec<f32>,
    /// Attention dropout multipliers (0 or 1/(1-p)), same layout; empty without dropout.
    pmask: Vec<f32>,
    ctx: Vec<f32>,
    m1: Vec<f32>,
    xhat1: Vec<f32>,
    rstd1: Vec<f32>,
    /// Attention block output (after its layer norm).
    a: Vec<f32>,
    /// Intermediate pre-activation and activation, `tokens x intermediate`.
    ipre: Vec<f32>,
    iact: Vec<f32>,
    m2: Vec<f32>,
    xhat2: Vec<f32>,
    rstd2: Vec<f32>,
}

/// The forward pass of one batch, kept for [`GradBert::backward`].
pub struct Tape {
    ids: Vec<u32>,
    /// Where each sentence's tokens and attention probabilities are.
    sents: Vec<Sent>,
    emb_xhat: Vec<f32>,
    emb_rstd: Vec<f32>,
    emb_mask: Vec<f32>,
    layers: Vec<LayerTape>,
    /// Mean-pooled sentence vectors before normalisation, `n x hidden`.
    pooled: Vec<f32>,
    /// The output: unit embeddings, `n x hidden`.
    pub embeddings: Vec<f32>,
}

/// Look up a tensor by model name (or its `gamma`/`beta` alias for layer norms) as float32.
fn take(t: &HashMap<String, Tensor>, name: &str, shape: &[usize]) -> Result<(String, Vec<f32>)> {
    let alias = name
        .strip_suffix("LayerNorm.weight")
        .map(|p| format!("{p}LayerNorm.gamma"))
        .or_else(|| {
            name.strip_suffix("LayerNorm.bias")
                .map(|p| format!("{p}LayerNorm.beta"))
        });
    let (key, tensor) = std::iter::once(name.to_string())
        .chain(alias)
        .find_map(|k| t.get(&k).map(|v| (k, v)))
        .ok_or_else(|| Error::Msg(format!("weight {name} is missing")))?;
    if tensor.dims() != shape {
        return Err(Error::Shape(format!(
            "{key}: expected {shape:?}, got {:?}",
            tensor.dims()
        )));
    }
    let v = tensor
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((key, v))
}

/// Dropout multipliers: 0 with probability `p`, else `1/(1-p)`; empty when `p` is 0.
fn dropout_mask(rng: &mut ChaCha8Rng, n: usize, p: f32) -> Vec<f32> {
    if p <= 0.0 {
        return Vec::new();
    }
    let keep = 1.0 / (1.0 - p);
    (0..n)
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect()
}

fn apply_mask(x: &mut [f32], m: &[f32]) {
    if !m.is_empty() {
        x.iter_mut().zip(m).for_each(|(v, k)| *v *= k);
    }
}

/// The right operand of [`product`].
#[derive(Clone, Copy)]
enum Rhs<'a> {
    /// `W` (`n x k`, PyTorch's layout of a linear layer): the product is `x Wᵀ`.
    Transposed(&'a [f32]),
    /// `B` (`k x n`): the product is `x B`.
    Plain(&'a [f32]),
}

/// `y = x B (+ bias)` for `x` (`m x k`), overwriting `y` (`m x n`). With AVX-512F the operand is
/// packed for [`LinearKernel::Avx512F32`] (twice the width of the `gemm` crate's AVX2 kernel) and the
/// rows are split over rayon's threads; otherwise the `gemm` crate.
#[allow(clippy::too_many_arguments)]
fn product(x: &[f32], m: usize, k: usize, rhs: Rhs, n: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    product_with(
        x,
        m,
        k,
        rhs,
        n,
        bias,
        y,
        LinearKernel::Avx512F32.available(),
    )
}

/// [`product`] with the AVX-512 kernel (`fast`) or the `gemm` crate.
#[allow(clippy::too_many_arguments)]
fn product_with(
    x: &[f32],
    m: usize,
    k: usize,
    rhs: Rhs,
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
    fast: bool,
) {
    let y = &mut y[..m * n];
    let bias_vec = || bias.map_or_else(|| vec![0f32; n], <[f32]>::to_vec);
    let packed = match rhs {
        _ if !fast => None,
        Rhs::Transposed(w) => Some(Linear::with_kernel(
            w,
            bias_vec(),
            n,
            k,
            LinearKernel::Avx512F32,
        )),
        Rhs::Plain(b) => Linear::f32_from_kn(b, k, n, bias_vec()),
    };
    if let Some(lin) = packed {
        let threads = rayon::current_num_threads().max(1);
        let rows = m.div_ceil(threads).max(1);
        y.par_chunks_mut(rows * n)
            .zip(x[..m * k].par_chunks(rows * k))
            .for_each(|(yc, xc)| {
                lin.forward(xc, xc.len() / k, yc, false, &mut Scratch::default());
            });
        return;
    }
    match rhs {
        Rhs::Transposed(w) => sgemm_with(
            m,
            n,
            k,
            y,
            n,
            false,
            (x, k, 1),
            (w, 1, k),
            rayon_parallelism(),
        ),
        Rhs::Plain(b) => sgemm_with(
            m,
            n,
            k,
            y,
            n,
            false,
            (x, k, 1),
            (b, n, 1),
            rayon_parallelism(),
        ),
    }
    if let Some(bias) = bias {
        for row in y.chunks_exact_mut(n) {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
    }
}

/// `y = x Wᵀ + b`: `x` is `m x k`, `w` is `n x k` (PyTorch's layout), `y` is `m x n`.
fn linear_fwd(x: &[f32], m: usize, w: &[f32], b: &[f32], n: usize, k: usize, y: &mut Vec<f32>) {
    y.clear();
    y.resize(m * n, 0.0);
    product(x, m, k, Rhs::Transposed(w), n, Some(b), y);
}

/// Backward of [`linear_fwd`] for `dy` (`m x n`): writes `dw` (`n x k`) and `db` (`n`), and
/// adds `dy W` to `dx` (`m x k`). `tmp` is scratch.
#[allow(clippy::too_many_arguments)]
fn linear_bwd(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    dw: &mut [f32],
    db: &mut [f32],
    dx: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    // dW = dyᵀ x: (n x m) (m x k), with dyᵀ made row-major.
    tmp.clear();
    tmp.resize(m * n, 0.0);
    transpose(dy, m, n, tmp);
    product(tmp, n, m, Rhs::Plain(x), k, None, dw);
    db.fill(0.0);
    for row in dy.chunks_exact(n) {
        db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
    }
    // dx += dy W: (m x n) (n x k).
    tmp.clear();
    tmp.resize(m * k, 0.0);
    product(dy, m, n, Rhs::Plain(w), k, None, tmp);
    dx.iter_mut().zip(tmp.iter()).for_each(|(d, t)| *d += t);
}

/// `out` (`cols x rows`) = `a`ᵀ for `a` (`rows x cols`), in cache-sized blocks.
fn transpose(a: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    out[c * rows + r] = a[r * cols + c];
                }
            }
        }
    }
}

/// After a projection `y` (tokens x hidden): dropout (`mask`), the residual, then layer norm
/// with `(gamma, beta, eps)`, keeping what the backward needs (BERT's `SelfOutput`/`Output`).
fn dropout_add_norm(
    y: &mut [f32],
    mask: &[f32],
    residual: &[f32],
    ln: (&[f32], &[f32], f32),
    xhat: &mut Vec<f32>,
    rstd: &mut Vec<f32>,
) {
    let (g, b, eps) = ln;
    apply_mask(y, mask);
    y.iter_mut().zip(residual).for_each(|(y, r)| *y += r);
    layer_norm_fwd(y, g.len(), g, b, eps, xhat, rstd);
}

simd_fn! {
/// Layer norm of each `h`-wide row of `x` in place; keeps the normalised rows and 1/std.
fn layer_norm_fwd(
    x: &mut [f32],
    h: usize,
    g: &[f32],
    b: &[f32],
    eps: f32,
    xhat: &mut Vec<f32>,
    rstd: &mut Vec<f32>,
) {
    xhat.clear();
    xhat.resize(x.len(), 0.0);
    rstd.clear();
    for (row, xh) in x.chunks_exact_mut(h).zip(xhat.chunks_exact_mut(h)) {
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        let r = 1.0 / (var + eps).sqrt();
        rstd.push(r);
        for (((v, xh), g), b) in row.iter_mut().zip(xh.iter_mut()).zip(g).zip(b) {
            *xh = (*v - mean) * r;
            *v = *xh * g + b;
        }
    }
}
}

simd_fn! {
/// Backward of [`layer_norm_fwd`]: `dy` becomes the input's gradient; writes `dg` and `db`.
fn layer_norm_bwd(
    dy: &mut [f32],
    h: usize,
    g: &[f32],
    xhat: &[f32],
    rstd: &[f32],
    dg: &mut [f32],
    db: &mut [f32],
) {
    dg.fill(0.0);
    db.fill(0.0);
    let inv = 1.0 / h as f32;
    for ((row, xh), &r) in dy.chunks_exact_mut(h).zip(xhat.chunks_exact(h)).zip(rstd) {
        let (mut s1, mut s2) = (0f32, 0f32);
        for (((d, x), gg), (dgi, dbi)) in row
            .iter()
            .zip(xh)
            .zip(g)
            .zip(dg.iter_mut().zip(db.iter_mut()))
        {
            *dgi += d * x;
            *dbi += d;
            let dx = d * gg;
            s1 += dx;
            s2 += dx * x;
        }
        let (m1, m2) = (s1 * inv, s2 * inv);
        for ((d, x), gg) in row.iter_mut().zip(xh).zip(g) {
            *d = r * (*d * gg - m1 - x * m2);
        }
    }
}
}

/// The activation and its derivative.
#[inline(always)]
fn act_fwd(act: HiddenAct, x: f32) -> f32 {
    match act {
        HiddenAct::Gelu => 0.5 * x * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2)),
        HiddenAct::GeluApproximate => {
            let c = (2.0 / std::f32::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        HiddenAct::Relu => x.max(0.0),
    }
}

#[inline(always)]
fn act_grad(act: HiddenAct, x: f32) -> f32 {
    match act {
        HiddenAct::Gelu => {
            let cdf = 0.5 * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * x * x).exp()
                * (0.5 * std::f32::consts::FRAC_2_SQRT_PI)
                * std::f32::consts::FRAC_1_SQRT_2;
            cdf + x * pdf
        }
        HiddenAct::GeluApproximate => {
            let c = (2.0 / std::f32::consts::PI).sqrt();
            let t = (c * (x + 0.044715 * x * x * x)).tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x)
        }
        HiddenAct::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
    }
}

simd_fn! {
    /// `y = act(x)` elementwise.
    fn act_fwd_slice(act: HiddenAct, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        for i in 0..n {
            y[i] = act_fwd(act, x[i]);
        }
    }
}

simd_fn! {
    /// `d *= act'(x)` elementwise.
    fn act_bwd_slice(act: HiddenAct, x: &[f32], d: &mut [f32]) {
        let n = x.len().min(d.len());
        for i in 0..n {
            d[i] *= act_grad(act, x[i]);
        }
    }
}

simd_fn! {
    /// Attention of one sentence (`len` tokens; `q`, `k`, `v` its `len x h` rows): softmax
    /// probabilities per head into `probs` (`heads x len x len`), context into `ctx`
    /// (`len x h`, written). `mask`: attention dropout multipliers, or empty.
    fn attention_sentence_fwd(
        qkv: [&[f32]; 3],
        mask: &[f32],
        h: usize,
        heads: usize,
        len: usize,
        probs: &mut [f32],
        ctx: &mut [f32],
    ) {
        let [q, k, v] = qkv;
        let hd = h / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        ctx.fill(0.0);
        for a in 0..heads {
            let cols = a * hd..(a + 1) * hd;
            for i in 0..len {
                let qi = &q[i * h + cols.start..i * h + cols.end];
                let base = (a * len + i) * len;
                let row = &mut probs[base..base + len];
                let mut mx = f32::NEG_INFINITY;
                for (j, r) in row.iter_mut().enumerate() {
                    *r = dot(qi, &k[j * h + cols.start..j * h + cols.end]) * scale;
                    mx = mx.max(*r);
                }
                let mut sum = 0f32;
                for r in row.iter_mut() {
                    *r = (*r - mx).exp();
                    sum += *r;
                }
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|r| *r *= inv);
                let ci = &mut ctx[i * h + cols.start..i * h + cols.end];
                for (j, &p) in row.iter().enumerate() {
                    let p = if mask.is_empty() { p } else { p * mask[base + j] };
                    let vj = &v[j * h + cols.start..j * h + cols.end];
                    ci.iter_mut().zip(vj).for_each(|(c, v)| *c += p * v);
                }
            }
        }
    }
}

simd_fn! {
    /// Backward of [`attention_sentence_fwd`]: `dctx` (`len x h`) to the gradients of `q`,
    /// `k`, `v` (`len x h` each, written).
    fn attention_sentence_bwd(
        qkv: [&[f32]; 3],
        probs: &[f32],
        mask: &[f32],
        dctx: &[f32],
        h: usize,
        heads: usize,
        len: usize,
        grads: [&mut [f32]; 3],
    ) {
        let [q, k, v] = qkv;
        let [dq, dk, dv] = grads;
        let hd = h / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        dq.fill(0.0);
        dk.fill(0.0);
        dv.fill(0.0);
        let mut dp = vec![0f32; len];
        for a in 0..heads {
            let cols = a * hd..(a + 1) * hd;
            for i in 0..len {
                let base = (a * len + i) * len;
                let p = &probs[base..base + len];
                let dci = &dctx[i * h + cols.start..i * h + cols.end];
                // dPd_ij = dctx_i . v_j; dv_j += Pd_ij dctx_i; dP = dPd * mask.
                for j in 0..len {
                    let m = if mask.is_empty() { 1.0 } else { mask[base + j] };
                    dp[j] = dot(dci, &v[j * h + cols.start..j * h + cols.end]) * m;
                    let pd = p[j] * m;
                    dv[j * h + cols.start..j * h + cols.end]
                        .iter_mut()
                        .zip(dci)
                        .for_each(|(d, c)| *d += pd * c);
                }
                // Softmax backward: dS = P (dP - sum(dP P)), times the scale.
                let sdp: f32 = dp.iter().zip(p).map(|(d, p)| d * p).sum();
                let qi = &q[i * h + cols.start..i * h + cols.end];
                for j in 0..len {
                    let ds = p[j] * (dp[j] - sdp) * scale;
                    let kj = &k[j * h + cols.start..j * h + cols.end];
                    dq[i * h + cols.start..i * h + cols.end]
                        .iter_mut()
                        .zip(kj)
                        .for_each(|(d, kk)| *d += ds * kk);
                    dk[j * h + cols.start..j * h + cols.end]
                        .iter_mut()
                        .zip(qi)
                        .for_each(|(d, qq)| *d += ds * qq);
                }
            }
        }
    }
}

/// One sentence's share of the attention: its tokens `[off, off + len)` and probabilities.
struct Sent {
    off: usize,
    len: usize,
    att: usize,
}

impl GradBert {
    /// The encoder of `config` with the weights in `tensors` (model names, float tensors).
    pub fn new(
        tensors: &HashMap<String, Tensor>,
        config: &Config,
        attention_dropout: f64,
    ) -> Result<Self> {
        let h = config.hidden_size;
        let heads = config.num_attention_heads;
        if heads == 0 || !h.is_multiple_of(heads) {
            return Err(Error::InvalidArgument(format!(
                "hidden_size {h} is not a multiple of num_attention_heads {heads}"
            )));
        }
        let inter = config.intermediate_size;
        let mut specs: Vec<(String, Vec<usize>)> = vec![
            (
                "embeddings.word_embeddings.weight".into(),
                vec![config.vocab_size, h],
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![config.max_position_embeddings, h],
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                vec![config.type_vocab_size, h],
            ),
            ("embeddings.LayerNorm.weight".into(), vec![h]),
            ("embeddings.LayerNorm.bias".into(), vec![h]),
        ];
        for l in 0..config.num_hidden_layers {
            for (j, suffix) in LAYER_NAMES.iter().enumerate() {
                let shape = match j {
                    QW | KW | VW | AOW => vec![h, h],
                    IW => vec![inter, h],
                    OW => vec![h, inter],
                    IB => vec![inter],
                    _ => vec![h],
                };
                specs.push((format!("encoder.layer.{l}.{suffix}"), shape));
            }
        }
        let mut names = Vec::with_capacity(specs.len());
        let mut shapes = Vec::with_capacity(specs.len());
        let mut values = Vec::with_capacity(specs.len());
        for (name, shape) in specs {
            let (key, v) = take(tensors, &name, &shape)?;
            names.push(key);
            values.push(v);
            shapes.push(shape);
        }
        let grads = values.iter().map(|v| vec![0f32; v.len()]).collect();
        Ok(GradBert {
            hidden: h,
            heads,
            inter,
            layers: config.num_hidden_layers,
            eps: config.layer_norm_eps as f32,
            act: config.hidden_act,
            hidden_dropout: config.hidden_dropout_prob as f32,
            attention_dropout: attention_dropout as f32,
            names,
            shapes,
            values,
            grads,
            touched_words: Vec::new(),
        })
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.hidden
    }

    /// The current weights as tensors under their model names.
    pub fn tensors(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        self.names
            .iter()
            .zip(&self.shapes)
            .zip(&self.values)
            .map(|((n, s), v)| Ok((n.clone(), Tensor::from_slice(v, s.as_slice(), device)?)))
            .collect()
    }

    fn p(&self, l: usize, j: usize) -> &[f32] {
        &self.values[FIRST_LAYER + l * PER_LAYER + j]
    }

    /// Where each sentence's tokens and attention probabilities go (after checking them).
    fn sentences(&self, seqs: &[&[u32]]) -> Result<Vec<Sent>> {
        let vocab = self.shapes[WORD][0];
        let max_pos = self.shapes[POS][0];
        let mut sents = Vec::with_capacity(seqs.len());
        let (mut t, mut a) = (0, 0);
        for (i, s) in seqs.iter().enumerate() {
            if s.is_empty() || s.len() > max_pos {
                return Err(Error::InvalidArgument(format!(
                    "sequence {i} has {} tokens, expected 1..={max_pos}",
                    s.len()
                )));
            }
            if let Some(&bad) = s.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::InvalidArgument(format!(
                    "sequence {i}: token id {bad} outside the vocabulary of {vocab}"
                )));
            }
            sents.push(Sent {
                off: t,
                len: s.len(),
                att: a,
            });
            t += s.len();
            a += self.heads * s.len() * s.len();
        }
        Ok(sents)
    }

    /// Forward `seqs` (token ids with special tokens): unit mean-pooled embeddings in
    /// [`Tape::embeddings`]. `seed`: dropout on (training, masks drawn from it) or off.
    pub fn forward(&self, seqs: &[&[u32]], seed: Option<u64>) -> Result<Tape> {
        let sents = self.sentences(seqs)?;
        let h = self.hidden;
        let t: usize = sents.iter().map(|s| s.len).sum();
        let mut rng = ChaCha8Rng::seed_from_u64(seed.unwrap_or(0));
        let (p_hidden, p_att) = match seed {
            Some(_) => (self.hidden_dropout, self.attention_dropout),
            None => (0.0, 0.0),
        };
        let ids: Vec<u32> = seqs.iter().flat_map(|s| s.iter().copied()).collect();

        // Embeddings: word + position + type 0, layer norm, dropout.
        let mut x = vec![0f32; t * h];
        {
            let (word, pos, typ) = (&self.values[WORD], &self.values[POS], &self.values[TYPE]);
            let mut row = 0;
            for s in seqs {
                for (p, &id) in s.iter().enumerate() {
                    let dst = &mut x[row * h..(row + 1) * h];
                    let w = &word[id as usize * h..(id as usize + 1) * h];
                    let pp = &pos[p * h..(p + 1) * h];
                    for (((d, a), b), c) in dst.iter_mut().zip(w).zip(pp).zip(&typ[..h]) {
                        *d = a + b + c;
                    }
                    row += 1;
                }
            }
        }
        let (mut emb_xhat, mut emb_rstd) = (Vec::new(), Vec::new());
        layer_norm_fwd(
            &mut x,
            h,
            &self.values[EG],
            &self.values[EB],
            self.eps,
            &mut emb_xhat,
            &mut emb_rstd,
        );
        let emb_mask = dropout_mask(&mut rng, t * h, p_hidden);
        apply_mask(&mut x, &emb_mask);

        let n_probs = sents
            .last()
            .map_or(0, |s| s.att + self.heads * s.len * s.len);
        let mut layers = Vec::with_capacity(self.layers);
        for l in 0..self.layers {
            let mut lt = LayerTape::default();
            linear_fwd(&x, t, self.p(l, QW), self.p(l, QB), h, h, &mut lt.q);
            linear_fwd(&x, t, self.p(l, KW), self.p(l, KB), h, h, &mut lt.k);
            linear_fwd(&x, t, self.p(l, VW), self.p(l, VB), h, h, &mut lt.v);
            lt.probs = vec![0f32; n_probs];
            lt.pmask = dropout_mask(&mut rng, n_probs, p_att);
            lt.ctx = vec![0f32; t * h];
            self.attention_fwd(&sents, &mut lt);
            let mut a = Vec::new();
            linear_fwd(&lt.ctx, t, self.p(l, AOW), self.p(l, AOB), h, h, &mut a);
            lt.m1 = dropout_mask(&mut rng, t * h, p_hidden);
            let (ln_g, ln_b) = (self.p(l, LN1G), self.p(l, LN1B));
            dropout_add_norm(
                &mut a,
                &lt.m1,
                &x,
                (ln_g, ln_b, self.eps),
                &mut lt.xhat1,
                &mut lt.rstd1,
            );
            linear_fwd(
                &a,
                t,
                self.p(l, IW),
                self.p(l, IB),
                self.inter,
                h,
                &mut lt.ipre,
            );
            let act = self.act;
            lt.iact = vec![0f32; lt.ipre.len()];
            act_fwd_slice(act, &lt.ipre, &mut lt.iact);
            let mut o = Vec::new();
            linear_fwd(
                &lt.iact,
                t,
                self.p(l, OW),
                self.p(l, OB),
                h,
                self.inter,
                &mut o,
            );
            lt.m2 = dropout_mask(&mut rng, t * h, p_hidden);
            let (ln_g, ln_b) = (self.p(l, LN2G), self.p(l, LN2B));
            dropout_add_norm(
                &mut o,
                &lt.m2,
                &a,
                (ln_g, ln_b, self.eps),
                &mut lt.xhat2,
                &mut lt.rstd2,
            );
            lt.x = std::mem::replace(&mut x, o);
            lt.a = a;
            layers.push(lt);
        }

        // Mean pooling, then L2 normalisation (sentence-transformers' Pooling + Normalize).
        let n = sents.len();
        let mut pooled = vec![0f32; n * h];
        let mut embeddings = vec![0f32; n * h];
        for i in 0..n {
            let dst = &mut pooled[i * h..(i + 1) * h];
            let Sent { off, len, .. } = sents[i];
            for r in off..off + len {
                dst.iter_mut()
                    .zip(&x[r * h..(r + 1) * h])
                    .for_each(|(d, v)| *d += v);
            }
            let inv = 1.0 / len as f32;
            dst.iter_mut().for_each(|d| *d *= inv);
            let norm = dst.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            embeddings[i * h..(i + 1) * h]
                .iter_mut()
                .zip(dst.iter())
                .for_each(|(e, p)| *e = p / norm);
        }
        Ok(Tape {
            ids,
            sents,
            emb_xhat,
            emb_rstd,
            emb_mask,
            layers,
            pooled,
            embeddings,
        })
    }

    /// [`linear_bwd`] of layer `l`'s dense layer `w` (`n x k`; its bias is tensor `w + 1`):
    /// its gradients into `g`, `dy W` added to `dx`.
    #[allow(clippy::too_many_arguments)]
    fn dense_bwd(
        &self,
        g: &mut [Vec<f32>],
        l: usize,
        w: usize,
        dy: &[f32],
        x: &[f32],
        n: usize,
        k: usize,
        dx: &mut [f32],
        tmp: &mut Vec<f32>,
    ) {
        let base = FIRST_LAYER + l * PER_LAYER;
        let [dw, db] = pick2(g, base + w, base + w + 1);
        let m = dy.len() / n;
        linear_bwd(dy, x, self.p(l, w), m, n, k, dw, db, dx, tmp);
    }

    /// Scaled dot-product attention of every sentence and head (parallel over sentences).
    fn attention_fwd(&self, sents: &[Sent], lt: &mut LayerTape) {
        let (h, heads) = (self.hidden, self.heads);
        let (q, k, v, pmask) = (&lt.q, &lt.k, &lt.v, &lt.pmask);
        // Each sentence owns a disjoint range of probabilities and of context rows.
        let mut probs_parts = split_by(&mut lt.probs, sents.iter().map(|s| heads * s.len * s.len));
        let mut ctx_parts = split_by(&mut lt.ctx, sents.iter().map(|s| s.len * h));
        sents
            .par_iter()
            .zip(probs_parts.par_iter_mut())
            .zip(ctx_parts.par_iter_mut())
            .for_each(|((s, probs), ctx)| {
                let mask = if pmask.is_empty() {
                    &[][..]
                } else {
                    &pmask[s.att..s.att + heads * s.len * s.len]
                };
                let rows = s.off * h..(s.off + s.len) * h;
                let qkv = [&q[rows.clone()], &k[rows.clone()], &v[rows]];
                attention_sentence_fwd(qkv, mask, h, heads, s.len, probs, ctx);
            });
    }

    /// Backward of attention: `dctx` to `dq`, `dk`, `dv` (each `tokens x hidden`, written).
    fn attention_bwd(
        &self,
        sents: &[Sent],
        lt: &LayerTape,
        dctx: &[f32],
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
    ) {
        let (h, heads) = (self.hidden, self.heads);
        let (q, k, v, probs, pmask) = (&lt.q, &lt.k, &lt.v, &lt.probs, &lt.pmask);
        let rows = |s: &Sent| s.len * h;
        let mut dq_parts = split_by(dq, sents.iter().map(rows));
        let mut dk_parts = split_by(dk, sents.iter().map(rows));
        let mut dv_parts = split_by(dv, sents.iter().map(rows));
        sents
            .par_iter()
            .zip(dq_parts.par_iter_mut())
            .zip(dk_parts.par_iter_mut().zip(dv_parts.par_iter_mut()))
            .for_each(|((s, dq), (dk, dv))| {
                let att = s.att..s.att + heads * s.len * s.len;
                let mask = if pmask.is_empty() {
                    &[][..]
                } else {
                    &pmask[att.clone()]
                };
                let rows = s.off * h..(s.off + s.len) * h;
                let qkv = [&q[rows.clone()], &k[rows.clone()], &v[rows.clone()]];
                let grads = [&mut **dq, &mut **dk, &mut **dv];
                attention_sentence_bwd(qkv, &probs[att], mask, &dctx[rows], h, heads, s.len, grads);
            });
    }

    /// Gradients of every tensor for `d_emb` (`n x hidden`), the loss's gradient with respect
    /// to [`Tape::embeddings`]; readable with [`Self::grads`] until the next backward.
    pub fn backward(&mut self, tape: &Tape, d_emb: &[f32]) -> Result<()> {
        let h = self.hidden;
        let sents = &tape.sents;
        let n = sents.len();
        if d_emb.len() != n * h {
            return Err(Error::Shape(format!(
                "embedding gradient of {} values for {n} x {h} embeddings",
                d_emb.len()
            )));
        }
        let t: usize = sents.iter().map(|s| s.len).sum();

        // Normalisation and mean pooling.
        let mut dx = vec![0f32; t * h];
        for i in 0..n {
            let u = &tape.pooled[i * h..(i + 1) * h];
            let e = &tape.embeddings[i * h..(i + 1) * h];
            let g = &d_emb[i * h..(i + 1) * h];
            let norm = u.iter().map(|v| v * v).sum::<f32>().sqrt();
            let ed: f32 = e.iter().zip(g).map(|(a, b)| a * b).sum();
            let Sent { off, len, .. } = sents[i];
            let inv_len = 1.0 / len as f32;
            let du: Vec<f32> = if norm > 1e-12 {
                g.iter()
                    .zip(e)
                    .map(|(g, e)| (g - e * ed) / norm * inv_len)
                    .collect()
            } else {
                g.iter().map(|g| g / 1e-12 * inv_len).collect()
            };
            for r in off..off + len {
                dx[r * h..(r + 1) * h].copy_from_slice(&du);
            }
        }

        let inter = self.inter;
        let act = self.act;
        let mut dq = vec![0f32; t * h];
        let mut dk = vec![0f32; t * h];
        let mut dv = vec![0f32; t * h];
        let mut dctx = vec![0f32; t * h];
        let mut di = vec![0f32; t * inter];
        let mut tmp = Vec::new();
        for l in (0..self.layers).rev() {
            let lt = &tape.layers[l];
            let base = FIRST_LAYER + l * PER_LAYER;
            let mut g = std::mem::take(&mut self.grads);
            {
                let [dg2, db2] = pick2(&mut g, base + LN2G, base + LN2B);
                layer_norm_bwd(&mut dx, h, self.p(l, LN2G), &lt.xhat2, &lt.rstd2, dg2, db2);
            }
            // dx is now the gradient of r2 = o + a: da = dx, do = dx * m2.
            let mut da = dx.clone();
            let mut dout = dx;
            apply_mask(&mut dout, &lt.m2);
            di.iter_mut().for_each(|v| *v = 0.0);
            self.dense_bwd(&mut g, l, OW, &dout, &lt.iact, h, inter, &mut di, &mut tmp);
            act_bwd_slice(act, &lt.ipre, &mut di);
            self.dense_bwd(&mut g, l, IW, &di, &lt.a, inter, h, &mut da, &mut tmp);
            {
                let [dg1, db1] = pick2(&mut g, base + LN1G, base + LN1B);
                layer_norm_bwd(&mut da, h, self.p(l, LN1G), &lt.xhat1, &lt.rstd1, dg1, db1);
            }
            // da is the gradient of r1 = attn + x: dx_in = da, dattn = da * m1.
            let mut dxin = da.clone();
            let mut dattn = da;
            apply_mask(&mut dattn, &lt.m1);
            dctx.iter_mut().for_each(|v| *v = 0.0);
            self.dense_bwd(&mut g, l, AOW, &dattn, &lt.ctx, h, h, &mut dctx, &mut tmp);
            self.attention_bwd(sents, lt, &dctx, &mut dq, &mut dk, &mut dv);
            for (dy, w) in [(&dq, QW), (&dk, KW), (&dv, VW)] {
                self.dense_bwd(&mut g, l, w, dy, &lt.x, h, h, &mut dxin, &mut tmp);
            }
            self.grads = g;
            dx = dxin;
        }

        // Embeddings: dropout, layer norm, then scatter into the three tables.
        apply_mask(&mut dx, &tape.emb_mask);
        {
            let mut g = std::mem::take(&mut self.grads);
            {
                let [dg, db] = pick2(&mut g, EG, EB);
                layer_norm_bwd(
                    &mut dx,
                    h,
                    &self.values[EG],
                    &tape.emb_xhat,
                    &tape.emb_rstd,
                    dg,
                    db,
                );
            }
            for &w in &self.touched_words {
                g[WORD][w as usize * h..(w as usize + 1) * h].fill(0.0);
            }
            g[POS].fill(0.0);
            g[TYPE].fill(0.0);
            let mut touched = Vec::new();
            let mut row = 0;
            for &Sent { len, .. } in sents {
                for p in 0..len {
                    let id = tape.ids[row] as usize;
                    let d = &dx[row * h..(row + 1) * h];
                    let add = |dst: &mut [f32]| dst.iter_mut().zip(d).for_each(|(a, b)| *a += b);
                    add(&mut g[WORD][id * h..(id + 1) * h]);
                    add(&mut g[POS][p * h..(p + 1) * h]);
                    add(&mut g[TYPE][..h]);
                    touched.push(id as u32);
                    row += 1;
                }
            }
            touched.sort_unstable();
            touched.dedup();
            self.touched_words = touched;
            self.grads = g;
        }
        Ok(())
    }

    /// Global L2 norm of the gradients (float64 sums).
    pub fn grad_norm(&self) -> f64 {
        // Per-tensor sums in parallel, added in tensor order: the same on any thread count.
        let sums: Vec<f64> = self
            .grads
            .par_iter()
            .map(|g| g.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>())
            .collect();
        sums.iter().sum::<f64>().sqrt()
    }

    /// Scale every gradient by `c` (gradient-norm clipping).
    pub fn scale_grads(&mut self, c: f32) {
        self.grads
            .par_iter_mut()
            .for_each(|g| g.iter_mut().for_each(|v| *v *= c));
    }
}

/// Two distinct elements of `v` mutably, as slices.
fn pick2(v: &mut [Vec<f32>], a: usize, b: usize) -> [&mut [f32]; 2] {
    let [x, y] = v.get_disjoint_mut([a, b]).expect("distinct tensor indices");
    [x.as_mut_slice(), y.as_mut_slice()]
}

/// Split `v` into consecutive parts of the given sizes.
fn split_by(v: &mut [f32], sizes: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut out = Vec::new();
    let mut rest = v;
    for s in sizes {
        let (a, b) = rest.split_at_mut(s);
        out.push(a);
        rest = b;
    }
    out
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    s += acc.iter().sum::<f32>();
    s
}

/// AdamW as PyTorch's (and candle's `AdamW`): decoupled weight decay `w -= lr * wd * w`, then
/// `w -= lr * m̂ / (sqrt(v̂) + eps)`; betas 0.9 and 0.999, eps 1e-8. One pass per tensor.
pub struct AdamW {
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Weight decay per tensor.
    decay: Vec<f32>,
    t: i32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl AdamW {
    /// State for `model`; `decay(name)` gives each tensor's weight decay.
    pub fn new(model: &GradBert, decay: impl Fn(&str) -> f64) -> Self {
        AdamW {
            m: model.values.iter().map(|v| vec![0f32; v.len()]).collect(),
            v: model.values.iter().map(|v| vec![0f32; v.len()]).collect(),
            decay: model.names.iter().map(|n| decay(n) as f32).collect(),
            t: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// One update of every tensor of `model` with its current gradients at rate `lr`.
    pub fn step(&mut self, model: &mut GradBert, lr: f64) {
        self.t += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let scale_m = 1.0 / (1.0 - b1.powi(self.t));
        let scale_v = 1.0 / (1.0 - b2.powi(self.t));
        let lr = lr as f32;
        model
            .values
            .par_iter_mut()
            .zip(model.grads.par_iter())
            .zip(self.m.par_iter_mut().zip(self.v.par_iter_mut()))
            .zip(self.decay.par_iter())
            .for_each(|(((w, g), (m, v)), &wd)| {
                let c = AdamConsts {
                    b1,
                    b2,
                    eps,
                    scale_m,
                    scale_v,
                    lr,
                    keep: 1.0 - lr * wd,
                };
                adamw_update(w, g, m, v, c);
            });
    }
}

/// The constants of one AdamW update of one tensor.
#[derive(Clone, Copy)]
struct AdamConsts {
    b1: f32,
    b2: f32,
    eps: f32,
    scale_m: f32,
    scale_v: f32,
    lr: f32,
    /// `1 - lr * weight_decay`.
    keep: f32,
}

simd_fn! {
    fn adamw_update(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: AdamConsts) {
        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m = *m * c.b1 + g * (1.0 - c.b1);
            *v = *v * c.b2 + g * g * (1.0 - c.b2);
            let step = (*m * c.scale_m) / ((*v * c.scale_v).sqrt() + c.eps);
            *w = *w * c.keep - step * c.lr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::bert::TrainableBert;
    use crate::model::text::mean_pool_normalize;
    use candle_core::Var;
    use candle_nn::{VarBuilder, VarMap};

    fn config(act: HiddenAct) -> Config {
        serde_json::from_value(serde_json::json!({
            "vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 4, "intermediate_size": 24, "hidden_act": match act {
                HiddenAct::Gelu => "gelu", HiddenAct::GeluApproximate => "geluapproximate",
                HiddenAct::Relu => "relu" },
            "hidden_dropout_prob": 0.1, "max_position_embeddings": 12, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
            "position_embedding_type": "absolute", "use_cache": true, "classifier_dropout": null,
            "model_type": "bert"
        }))
        .unwrap()
    }

    fn xorshift(seed: u64) -> impl FnMut() -> f32 {
        let mut r = crate::testutil::XorShift::new(seed);
        move || r.next_f32()
    }

    /// Random weights (layer-norm gains near 1) under the model names.
    fn weights(cfg: &Config, seed: u64) -> HashMap<String, Tensor> {
        let model = GradBert::new(&zero_weights(cfg), cfg, 0.1).unwrap();
        let mut r = xorshift(seed);
        model
            .names
            .iter()
            .zip(&model.shapes)
            .map(|(n, s)| {
                let len: usize = s.iter().product();
                let ln_gain = n.ends_with("LayerNorm.weight");
                let v: Vec<f32> = (0..len)
                    .map(|_| if ln_gain { 1.0 + 0.2 * r() } else { 0.5 * r() })
                    .collect();
                (
                    n.clone(),
                    Tensor::from_vec(v, s.as_slice(), &Device::Cpu).unwrap(),
                )
            })
            .collect()
    }

    fn zero_weights(cfg: &Config) -> HashMap<String, Tensor> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        TrainableBert::new(vb, cfg, 0.1).unwrap();
        let data = varmap.data().lock().unwrap();
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().zeros_like().unwrap()))
            .collect()
    }

    fn seqs() -> Vec<Vec<u32>> {
        vec![
            vec![1, 5, 9, 2],
            vec![1, 7, 3, 3, 8, 11, 2],
            vec![1, 2],
            vec![1, 39, 20, 17, 4, 2],
        ]
    }

    /// candle autograd through `TrainableBert` (no dropout): embeddings and the gradients of
    /// `sum(emb * r)` for every variable, by name.
    fn oracle(
        cfg: &Config,
        w: &HashMap<String, Tensor>,
        rows: &[Vec<u32>],
        r: &[f32],
    ) -> (Vec<f32>, HashMap<String, Vec<f32>>) {
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().unwrap();
            for (k, t) in w {
                data.insert(k.clone(), Var::from_tensor(t).unwrap());
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let bert = TrainableBert::new(vb, cfg, 0.1).unwrap();
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let (ids, mask, len) = crate::model::text::pad_rows(&refs, 0);
        let ids = Tensor::from_vec(ids, (rows.len(), len), &Device::Cpu).unwrap();
        let mask = Tensor::from_vec(mask, (rows.len(), len), &Device::Cpu).unwrap();
        let hidden = bert.forward(&ids, &mask, None).unwrap();
        let emb = mean_pool_normalize(&hidden, &mask).unwrap();
        let rt = Tensor::from_slice(r, emb.shape(), &Device::Cpu).unwrap();
        let loss = (&emb * &rt).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let g = data
            .iter()
            .map(|(k, v)| {
                let g = grads
                    .get(v)
                    .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                    .unwrap_or_else(|| vec![0.0; v.elem_count()]);
                (k.clone(), g)
            })
            .collect();
        (emb.flatten_all().unwrap().to_vec1().unwrap(), g)
    }

    #[test]
    fn forward_and_gradients_match_candle_autograd() {
        for act in [HiddenAct::Gelu, HiddenAct::GeluApproximate, HiddenAct::Relu] {
            let cfg = config(act);
            let w = weights(&cfg, 7);
            let rows = seqs();
            let mut r = xorshift(3);
            let rv: Vec<f32> = (0..rows.len() * 16).map(|_| r()).collect();
            let (emb_ref, grads_ref) = oracle(&cfg, &w, &rows, &rv);
            let mut model = GradBert::new(&w, &cfg, 0.1).unwrap();
            let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
            let tape = model.forward(&refs, None).unwrap();
            let worst = tape
                .embeddings
                .iter()
                .zip(&emb_ref)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 2e-5, "{act:?}: embeddings differ by {worst}");
            model.backward(&tape, &rv).unwrap();
            for (name, g) in model.names.iter().zip(&model.grads) {
                let want = &grads_ref[name];
                let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                let err = g
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    err <= 2e-3 * scale,
                    "{act:?} {name}: gradient off by {err} (largest {scale})"
                );
            }
        }
    }

    /// With dropout on (fixed masks from the seed), the gradient's directional derivative
    /// equals the loss's central difference.
    #[test]
    fn dropout_gradient_matches_finite_differences() {
        let cfg = config(HiddenAct::Gelu);
        let w = weights(&cfg, 11);
        let rows = seqs();
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let mut r = xorshift(5);
        let rv: Vec<f32> = (0..rows.len() * 16).map(|_| r()).collect();
        let loss = |m: &GradBert| -> f64 {
            let t = m.forward(&refs, Some(99)).unwrap();
            t.embeddings
                .iter()
                .zip(&rv)
                .map(|(a, b)| (a * b) as f64)
                .sum()
        };
        let mut model = GradBert::new(&w, &cfg, 0.1).unwrap();
        let tape = model.forward(&refs, Some(99)).unwrap();
        assert!(tape.layers[0].pmask.contains(&0.0), "dropout drew no zero");
        model.backward(&tape, &rv).unwrap();
        let mut d = xorshift(17);
        let dir: Vec<Vec<f32>> = model
            .values
            .iter()
            .map(|v| v.iter().map(|_| d()).collect())
            .collect();
        let analytic: f64 = model
            .grads
            .iter()
            .zip(&dir)
            .flat_map(|(g, d)| g.iter().zip(d).map(|(a, b)| (a * b) as f64))
            .sum();
        let eps = 1e-3f32;
        let shifted = |sign: f32| {
            let mut m = GradBert::new(&w, &cfg, 0.1).unwrap();
            for (v, d) in m.values.iter_mut().zip(&dir) {
                v.iter_mut().zip(d).for_each(|(v, d)| *v += sign * eps * d);
            }
            loss(&m)
        };
        let numeric = (shifted(1.0) - shifted(-1.0)) / (2.0 * eps as f64);
        assert!(
            (numeric - analytic).abs() <= 2e-2 * analytic.abs().max(1.0),
            "directional derivative: analytic {analytic}, numeric {numeric}"
        );
    }

    /// A product path (`fast`: the AVX-512 packing, else the `gemm` crate) against a float64
    /// loop, with shapes that leave partial panels and row blocks.
    fn product_matches_reference(fast: bool) {
        let (m, k, n) = (37, 70, 131);
        let mut r = xorshift(29);
        let x: Vec<f32> = (0..m * k).map(|_| r()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| r()).collect();
        let bias: Vec<f32> = (0..n).map(|_| r()).collect();
        let mut wt = vec![0f32; k * n];
        transpose(&w, n, k, &mut wt);
        let want: Vec<f64> = (0..m * n)
            .map(|e| {
                let (i, j) = (e / n, e % n);
                bias[j] as f64
                    + (0..k)
                        .map(|t| x[i * k + t] as f64 * w[j * k + t] as f64)
                        .sum::<f64>()
            })
            .collect();
        for rhs in [Rhs::Transposed(&w), Rhs::Plain(&wt)] {
            let mut y = vec![0f32; m * n];
            product_with(&x, m, k, rhs, n, Some(&bias), &mut y, fast);
            let err = y
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0f64, f64::max);
            assert!(err < 1e-4, "fast={fast}: product off by {err}");
        }
    }

    #[test]
    fn gemm_products_match_reference() {
        product_matches_reference(false);
    }

    #[test]
    #[cfg_attr(not(cpu_avx512f), ignore = "needs AVX-512F")]
    fn avx512_products_match_reference() {
        assert!(
            LinearKernel::Avx512F32.available(),
            "build.rs saw AVX-512F, this CPU has none"
        );
        product_matches_reference(true);
    }

    #[test]
    fn adamw_matches_candle() {
        use candle_nn::{Optimizer, ParamsAdamW};
        let cfg = config(HiddenAct::Gelu);
        let w = weights(&cfg, 13);
        let mut model = GradBert::new(&w, &cfg, 0.1).unwrap();
        let name = "encoder.layer.1.intermediate.dense.weight";
        let i = model.names.iter().position(|n| n == name).unwrap();
        let var = Var::from_tensor(&w[name]).unwrap();
        let mut opt = candle_nn::AdamW::new(
            vec![var.clone()],
            ParamsAdamW {
                lr: 1e-3,
                weight_decay: 0.01,
                ..Default::default()
            },
        )
        .unwrap();
        let mut ours = AdamW::new(&model, |_| 0.01);
        let mut r = xorshift(23);
        for _ in 0..3 {
            let g: Vec<f32> = (0..model.values[i].len()).map(|_| r()).collect();
            model.grads[i] = g.clone();
            ours.step(&mut model, 1e-3);
            // d/dvar of sum(var * g) is g.
            let gt = Tensor::from_vec(g, var.shape(), &Device::Cpu).unwrap();
            let store = (var.as_tensor() * &gt)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            opt.step(&store).unwrap();
        }
        let want = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let err = model.values[i]
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-6, "AdamW differs from candle's by {err}");
    }
}
