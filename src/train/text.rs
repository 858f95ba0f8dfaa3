//! Fine-tuning a sentence-transformers text encoder with twin losses (STYLE habit 5): the base
//! folder's weights load into a [`GradBert`] (the same network with a hand-written backward,
//! dropout, mean pooling and L2 norm as sentence-transformers does), the loss is taken on its
//! embeddings with candle's autograd and its gradient handed back to the encoder, and AdamW
//! follows the Hugging Face trainer's recipe (linear warm-up then linear decay, weight decay on
//! every tensor but biases and LayerNorm weights, gradient norm clipped at 1). A caller-supplied
//! dev score (e.g. average precision) is computed after each epoch and the best epoch is kept.

use super::loss;
use super::mining::Miner;
use super::progress::{Observer, Progress, Throughput};
pub use crate::corpus::pairs::duplicate_groups;
use crate::corpus::pairs::TextPair;
use crate::error::{Error, Result};
use crate::model::gradbert::{AdamW, GradBert, Tape};
use crate::model::text::{model_tensor_name, TextEncoder, TextModelParts};
use crate::timing::Stopwatch;
use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

/// Which loss to fine-tune with (sentence-transformers' names and definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TextLoss {
    /// `ContrastiveLoss`: every pair, cosine distance d,
    /// `mean 0.5 * (y d^2 + (1-y) max(0, margin - d)^2)`; margin 0.5.
    Contrastive,
    /// `OnlineContrastiveLoss`: the same terms summed over the batch's hard pairs only.
    OnlineContrastive,
    /// `MultipleNegativesRankingLoss`: duplicate pairs only, in-batch negatives, cross-entropy
    /// over cosine similarity times `scale` (20); batches never hold a text twice.
    Mnrl,
    /// `BatchHardTripletLoss`: questions labelled by duplicate group (connected components of
    /// the duplicate pairs), batches of 2 per group, Euclidean distance, margin 5.
    BatchHard,
    /// The pair losses of pytorch-metric-learning (PML's defaults, [`super::pair_loss`]) on the
    /// same duplicate-group batches as `batch-hard`, every pair of the batch:
    /// multi-similarity.
    MultiSimilarity,
    /// SupCon on duplicate-group batches.
    Supcon,
    /// NT-Xent on duplicate-group batches.
    Ntxent,
    /// Circle loss on duplicate-group batches.
    Circle,
    /// Generalised lifted structure loss on duplicate-group batches.
    Lifted,
    /// The angular loss on duplicate-group batches.
    Angular,
}

impl TextLoss {
    /// The name used on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            TextLoss::Contrastive => "contrastive",
            TextLoss::OnlineContrastive => "online-contrastive",
            TextLoss::Mnrl => "mnrl",
            TextLoss::BatchHard => "batch-hard",
            other => other.pair_loss().map_or("?", |p| p.name()),
        }
    }

    /// The PML pair loss this is, with PML's defaults.
    pub fn pair_loss(self) -> Option<super::PairLoss> {
        use super::PairLoss;
        match self {
            TextLoss::MultiSimilarity => Some(PairLoss::MULTI_SIMILARITY),
            TextLoss::Supcon => Some(PairLoss::SUPCON),
            TextLoss::Ntxent => Some(PairLoss::NTXENT),
            TextLoss::Circle => Some(PairLoss::CIRCLE),
            TextLoss::Lifted => Some(PairLoss::LIFTED),
            TextLoss::Angular => Some(PairLoss::ANGULAR),
            _ => None,
        }
    }

    /// Whether it trains on texts labelled by duplicate group (batch-hard and the pair
    /// losses) rather than on the pairs themselves.
    pub fn on_groups(self) -> bool {
        self == TextLoss::BatchHard || self.pair_loss().is_some()
    }

    /// sentence-transformers' default margin (unused by `mnrl`).
    pub fn default_margin(self) -> f64 {
        match self {
            TextLoss::Contrastive | TextLoss::OnlineContrastive => 0.5,
            TextLoss::Mnrl => 0.0,
            TextLoss::BatchHard => 5.0,
            _ => 0.0,
        }
    }
}

/// How to fine-tune. Defaults follow sentence-transformers' `fit` recipe. Also the flags of
/// `twindex train text` (the first line of each field's comment is its help).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct TextTrainConfig {
    /// Loss (sentence-transformers' definitions): contrastive (cosine distance, margin 0.5),
    /// online-contrastive (hard pairs of the batch only), mnrl (duplicate pairs, in-batch
    /// negatives, scale 20), batch-hard (triplets within duplicate groups, margin 5).
    #[arg(long, value_enum, default_value_t = TextLoss::Mnrl)]
    pub loss: TextLoss,
    /// Passes over the training data. More: better fit, slower, risk of overfitting.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Pairs per step (texts per step for batch-hard: even, >= 4). Larger: more in-batch
    /// negatives (mnrl), fewer steps, more memory.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak AdamW learning rate.
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    /// Share of the steps with a linear warm-up from 0 (then linear decay to 0).
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// AdamW weight decay (not on biases and LayerNorm weights).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Clip the gradient norm to this (0: no clipping; 1.0 is the Hugging Face trainer's).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Margin (default: 0.5 for contrastive and online-contrastive, 5 for batch-hard).
    #[arg(long)]
    pub margin: Option<f64>,
    /// MNRL similarity scale.
    #[arg(long, default_value_t = 20.0)]
    pub scale: f64,
    /// Seed of the batch order and of dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// `--no-dropout`: train without dropout (by default it trains with config.json's, 0.1 for
    /// MiniLM, as sentence-transformers does).
    #[arg(long = "no-dropout", action = clap::ArgAction::SetFalse)]
    pub dropout: bool,
    /// Train on only the first N pairs of --pairs (timing runs, tests). Default: all.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// The pairs a pair loss (multi-similarity, supcon, ntxent, circle, lifted, angular) trains
    /// on: every pair of the batch (none), the multi-similarity miner's, or a triplet miner's
    /// triplets taken as pairs.
    #[arg(long, value_enum, default_value_t = Miner::None)]
    #[serde(default = "no_miner")]
    pub miner: Miner,
    /// A cross-batch memory of this many embeddings for a pair loss (PML's
    /// `CrossBatchMemory`, with every pair or --miner multi-similarity): each batch is compared
    /// with the last SIZE embeddings, not only with itself.
    #[arg(long, value_name = "SIZE")]
    #[serde(default)]
    pub xbm: Option<usize>,
}

fn no_miner() -> Miner {
    Miner::None
}

impl Default for TextTrainConfig {
    fn default() -> Self {
        TextTrainConfig {
            loss: TextLoss::Mnrl,
            epochs: 1,
            batch: 32,
            lr: 2e-5,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            margin: None,
            scale: 20.0,
            seed: 42,
            dropout: true,
            max_train: None,
            miner: Miner::None,
            xbm: None,
        }
    }
}

impl TextTrainConfig {
    /// The margin in use.
    pub fn margin(&self) -> f64 {
        self.margin.unwrap_or(self.loss.default_margin())
    }
}

/// Figures of one epoch.
#[derive(Debug, Clone, Serialize)]
pub struct TextEpochStats {
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub loss: f64,
    pub steps: usize,
    /// Training examples seen: pairs, or texts for batch-hard.
    pub examples: usize,
    /// Texts through the network.
    pub texts: usize,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    /// The dev score after this epoch (e.g. average precision), when a dev scorer was given.
    pub dev_score: Option<f64>,
    pub dev_seconds: f64,
}

/// A step's progress.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct TextStepInfo {
    pub epoch: usize,
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    pub lr: f64,
    /// Examples per wall second so far in this epoch.
    pub examples_per_second: f64,
}

/// What the loop reports as it goes.
#[derive(Debug, Clone)]
pub enum TextTrainEvent {
    Step(TextStepInfo),
    Epoch(TextEpochStats),
}

/// The result of fine-tuning: the weights of the best epoch under the base file's names.
pub struct TextTrainOutcome {
    /// Every tensor of the base `model.safetensors`, trained ones replaced, stored names and
    /// dtypes.
    pub weights: HashMap<String, Tensor>,
    pub history: Vec<TextEpochStats>,
    /// The epoch whose weights are kept (best dev score; the last without a dev scorer).
    pub best_epoch: usize,
    /// Training only (dev evaluation excluded).
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub examples: usize,
    pub steps: usize,
}

/// The Hugging Face linear schedule: step `s` (0-based) of `total` with `warmup` warm-up steps
/// runs at `lr * s / warmup` during warm-up, then `lr * (total - s) / (total - warmup)`.
pub fn linear_warmup_decay(lr: f64, s: usize, warmup: usize, total: usize) -> f64 {
    if s < warmup {
        lr * s as f64 / warmup.max(1) as f64
    } else {
        lr * ((total.saturating_sub(s)) as f64 / total.saturating_sub(warmup).max(1) as f64)
    }
}

/// Batches of pair indices in which no text occurs twice (sentence-transformers'
/// `NoDuplicatesBatchSampler`): each batch takes, in the shuffled order, the next pairs whose
/// texts (hard negatives included) are not in it yet; skipped pairs stay first in line for the
/// next batch.
pub fn no_duplicate_batches(pairs: &[TextPair], order: &[usize], batch: usize) -> Vec<Vec<usize>> {
    let mut remaining: Vec<usize> = order.to_vec();
    let mut out = Vec::new();
    while !remaining.is_empty() {
        let mut seen: HashSet<&str> = HashSet::new();
        let (mut cur, mut rest) = (
            Vec::with_capacity(batch),
            Vec::with_capacity(remaining.len()),
        );
        for &i in &remaining {
            let p = &pairs[i];
            let mut texts = [&p.a, &p.b].into_iter().chain(&p.negatives);
            if cur.len() < batch && !texts.clone().any(|t| seen.contains(t.as_str())) {
                seen.extend(texts.by_ref().map(String::as_str));
                cur.push(i);
            } else {
                rest.push(i);
            }
        }
        out.push(cur);
        remaining = rest;
    }
    out
}

/// Batches for in-batch triplet mining (sentence-transformers' `GroupByLabelBatchSampler`):
/// groups with at least 2 items, shuffled inside; in rounds over the groups (order reshuffled
/// each round) every group gives 2 items until fewer than 2 groups have items left; the stream
/// is cut into batches of `batch` (even, >= 4), a last shorter one kept when it holds >= 4.
pub fn group_batches(labels: &[u32], batch: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if batch < 4 || batch % 2 == 1 {
        return Err(Error::InvalidArgument(format!(
            "batch-hard needs an even batch of at least 4, got {batch}"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut groups: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, &l) in labels.iter().enumerate() {
        groups.entry(l).or_default().push(i);
    }
    let mut keys: Vec<u32> = groups
        .iter()
        .filter(|(_, v)| v.len() >= 2)
        .map(|(&k, _)| k)
        .collect();
    keys.sort_unstable();
    if keys.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "batch-hard needs at least 2 duplicate groups of 2 or more texts, found {}",
            keys.len()
        )));
    }
    let mut queues: HashMap<u32, VecDeque<usize>> = HashMap::new();
    for &k in &keys {
        let mut v = groups[&k].clone();
        v.shuffle(&mut rng);
        v.truncate(v.len() / 2 * 2);
        queues.insert(k, v.into());
    }
    let (mut out, mut cur) = (Vec::new(), Vec::with_capacity(batch));
    let mut last: Option<u32> = None;
    let mut live = keys;
    while live.len() >= 2 {
        live.shuffle(&mut rng);
        if !cur.is_empty() && Some(live[0]) == last {
            live.swap(0, 1);
        }
        for &k in &live {
            let q = queues.get_mut(&k).expect("queue");
            cur.push(q.pop_front().expect("even queue"));
            cur.push(q.pop_front().expect("even queue"));
            if cur.len() >= batch {
                out.push(std::mem::take(&mut cur));
            }
        }
        last = live.last().copied();
        live.retain(|k| !queues[k].is_empty());
    }
    if cur.len() >= 4 {
        out.push(cur);
    }
    Ok(out)
}

/// The base model as a trainable [`GradBert`].
struct Trainable {
    parts: TextModelParts,
    bert: GradBert,
    /// Stored name of each of the model's tensors (by model name).
    stored: HashMap<String, String>,
    /// All tensors of the base file, stored names.
    base: HashMap<String, Tensor>,
}

impl Trainable {
    fn load(dir: &Path) -> Result<Self> {
        let parts = TextModelParts::read(dir)?;
        let base = parts.read_weights(&Device::Cpu)?;
        let mut tensors = HashMap::new();
        let mut stored = HashMap::new();
        for (name, t) in &base {
            if !t.dtype().is_float() {
                continue;
            }
            let model = model_tensor_name(name).to_string();
            tensors.insert(model.clone(), t.to_dtype(DType::F32)?);
            stored.insert(model, name.clone());
        }
        let bert = GradBert::new(&tensors, &parts.config, parts.attention_dropout)
            .map_err(|e| Error::corrupt(&parts.weights_path, format!("not a BERT model: {e}")))?;
        Ok(Trainable {
            parts,
            bert,
            stored,
            base,
        })
    }

    /// Copies of the current weights under model names.
    fn snapshot(&self) -> Result<HashMap<String, Tensor>> {
        self.bert.tensors(&Device::Cpu)
    }

    /// An inference encoder on a copy of the current weights.
    fn encoder(&self) -> Result<TextEncoder> {
        TextEncoder::from_tensors(&self.parts, self.snapshot()?, &Device::Cpu)
    }

    /// Forward `rows` (dropout when `seed` is given): the tape, and its unit embeddings
    /// `[n, dim]` as a candle variable for the loss to differentiate.
    fn embed(&self, rows: &[&[u32]], seed: Option<u64>) -> Result<(Tape, Var)> {
        let tape = self.bert.forward(rows, seed)?;
        let emb = Tensor::from_slice(
            &tape.embeddings,
            (rows.len(), self.bert.dim()),
            &Device::Cpu,
        )?;
        Ok((tape, Var::from_tensor(&emb)?))
    }

    /// The base file's tensors with the trained ones (from `snap`, model names) put in.
    fn weights(&self, snap: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
        let mut out = self.base.clone();
        for (model, t) in snap {
            let stored = &self.stored[model];
            let dtype = self.base[stored].dtype();
            out.insert(stored.clone(), t.to_dtype(dtype)?);
        }
        Ok(out)
    }
}

/// What one step trains on.
enum Batch {
    /// Pair indices.
    Pairs(Vec<usize>),
    /// Indices into the grouped texts.
    Items(Vec<usize>),
}

/// Scores an encoder on held-out data after each epoch; higher is better.
pub type DevScore<'a> = &'a mut dyn FnMut(&TextEncoder) -> Result<f64>;

/// Fine-tune the sentence-transformers model in `base` on `train` pairs.
///
/// `dev_score`, when given, scores an encoder after each epoch (higher is better, e.g. average
/// precision on dev pairs); the best epoch's weights are returned. Without it, the last epoch's.
pub fn train_text(
    base: &Path,
    train: &[TextPair],
    cfg: &TextTrainConfig,
    mut dev_score: Option<DevScore>,
    on_event: &mut dyn FnMut(TextTrainEvent),
) -> Result<TextTrainOutcome> {
    if cfg.epochs == 0 || cfg.batch < 2 {
        return Err(Error::InvalidArgument(format!(
            "epochs must be >= 1 and batch >= 2 (got epochs={}, batch={})",
            cfg.epochs, cfg.batch
        )));
    }
    let bad = |x: f64| !x.is_finite() || x < 0.0;
    if bad(cfg.lr) || cfg.lr == 0.0 || bad(cfg.weight_decay) || bad(cfg.max_grad_norm) {
        return Err(Error::InvalidArgument(format!(
            "lr must be > 0, weight decay and max grad norm >= 0 (got {}, {}, {})",
            cfg.lr, cfg.weight_decay, cfg.max_grad_norm
        )));
    }
    if !(0.0..1.0).contains(&cfg.warmup_ratio) {
        return Err(Error::InvalidArgument(format!(
            "warmup ratio must be in [0, 1), got {}",
            cfg.warmup_ratio
        )));
    }
    if bad(cfg.margin()) || bad(cfg.scale) || cfg.scale == 0.0 {
        return Err(Error::InvalidArgument(format!(
            "margin must be >= 0 and scale > 0 (got {}, {})",
            cfg.margin(),
            cfg.scale
        )));
    }
    let train = &train[..cfg.max_train.unwrap_or(train.len()).min(train.len())];
    let negatives = train.first().map_or(0, |p| p.negatives.len());
    if let Some(p) = train.iter().find(|p| p.negatives.len() != negatives) {
        return Err(Error::InvalidArgument(format!(
            "every training row must have the same number of hard negatives ({negatives} in the first, {} in the row of {:?})",
            p.negatives.len(),
            p.a
        )));
    }
    if negatives > 0 && cfg.loss != TextLoss::Mnrl {
        return Err(Error::InvalidArgument(format!(
            "the training rows hold hard negatives, which only --loss mnrl trains on (got --loss {})",
            cfg.loss.name()
        )));
    }
    if cfg.loss.pair_loss().is_none() && (cfg.miner != Miner::None || cfg.xbm.is_some()) {
        return Err(Error::InvalidArgument(format!(
            "--miner and --xbm choose the pairs of a pair loss (multi-similarity, supcon, ntxent, circle, lifted, angular), not of --loss {}",
            cfg.loss.name()
        )));
    }
    super::image::check_pair_setup(
        cfg.loss.name(),
        cfg.loss.pair_loss().is_some(),
        false,
        cfg.miner,
        cfg.xbm,
        cfg.batch,
    )?;
    let mut model = Trainable::load(base)?;
    let mut memory = match cfg.xbm {
        Some(size) => Some(super::CrossBatchMemory::new(size, model.bert.dim())?),
        None => None,
    };

    // Examples of this loss.
    let pair_pool: Vec<usize> = match cfg.loss {
        TextLoss::Mnrl => (0..train.len()).filter(|&i| train[i].duplicate).collect(),
        _ => (0..train.len()).collect(),
    };
    let (group_texts, group_labels) = if cfg.loss.on_groups() {
        duplicate_groups(train)
    } else {
        (Vec::new(), Vec::new())
    };
    let make_batches = |epoch: usize| -> Result<Vec<Batch>> {
        let seed = cfg.seed.wrapping_add(epoch as u64);
        Ok(match cfg.loss {
            TextLoss::Contrastive | TextLoss::OnlineContrastive => {
                let mut o = pair_pool.clone();
                crate::corpus::sampler::shuffle(&mut o, seed);
                o.chunks(cfg.batch)
                    .map(|c| Batch::Pairs(c.to_vec()))
                    .collect()
            }
            TextLoss::Mnrl => {
                let mut o = pair_pool.clone();
                crate::corpus::sampler::shuffle(&mut o, seed);
                no_duplicate_batches(train, &o, cfg.batch)
                    .into_iter()
                    .map(Batch::Pairs)
                    .collect()
            }
            _ => group_batches(&group_labels, cfg.batch, seed)?
                .into_iter()
                .map(Batch::Items)
                .collect(),
        })
    };
    let epoch_batches: Vec<Vec<Batch>> =
        (1..=cfg.epochs).map(make_batches).collect::<Result<_>>()?;
    let total: usize = epoch_batches.iter().map(Vec::len).sum();
    if total == 0 {
        return Err(Error::Empty(format!(
            "no training batches for the {} loss ({} pairs, {} duplicates)",
            cfg.loss.name(),
            train.len(),
            train.iter().filter(|p| p.duplicate).count()
        )));
    }
    let warmup = (cfg.warmup_ratio * total as f64).ceil() as usize;

    // Token ids of every text once.
    let mut tok: HashMap<&str, Vec<u32>> = HashMap::new();
    {
        let mut texts: Vec<&str> = if cfg.loss.on_groups() {
            group_texts.iter().map(String::as_str).collect()
        } else {
            train
                .iter()
                .flat_map(|p| [&p.a, &p.b].into_iter().chain(&p.negatives))
                .map(String::as_str)
                .collect()
        };
        texts.sort_unstable();
        texts.dedup();
        let enc = model
            .parts
            .tokenizer
            .encode_batch(texts.clone(), true)
            .map_err(|e| Error::Msg(format!("tokenizer: {e}")))?;
        for (t, e) in texts.into_iter().zip(enc) {
            tok.insert(t, e.get_ids().to_vec());
        }
    }

    // AdamW as the Hugging Face trainer: no weight decay on biases and LayerNorm weights.
    let no_decay = |name: &str| name.ends_with("bias") || name.contains("LayerNorm");
    let mut opt = AdamW::new(&model.bert, |name| {
        if no_decay(name) {
            0.0
        } else {
            cfg.weight_decay
        }
    });

    let margin = cfg.margin();
    let mining = super::image::PairMining {
        miner: cfg.miner,
        margin: margin as f32,
        squared: false,
    };
    let mut history = Vec::new();
    let (mut wall, mut cpu, mut examples, mut global) = (0.0, 0.0, 0usize, 0usize);
    let mut best: Option<(f64, usize, HashMap<String, Tensor>)> = None;
    for (e, batches) in epoch_batches.iter().enumerate() {
        let epoch = e + 1;
        let sw = Stopwatch::start();
        let (mut loss_sum, mut n_ex, mut n_texts) = (0.0f64, 0usize, 0usize);
        for (s, b) in batches.iter().enumerate() {
            let dropout_seed = cfg
                .dropout
                .then(|| cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ global as u64);
            let (tape, emb_var) = match b {
                Batch::Pairs(idx) => {
                    let rows: Vec<&[u32]> = idx
                        .iter()
                        .map(|&i| &train[i].a)
                        .chain(idx.iter().map(|&i| &train[i].b))
                        .chain(idx.iter().flat_map(|&i| &train[i].negatives))
                        .map(|t| tok[t.as_str()].as_slice())
                        .collect();
                    model.embed(&rows, dropout_seed)?
                }
                Batch::Items(idx) => {
                    let rows: Vec<&[u32]> = idx
                        .iter()
                        .map(|&i| tok[group_texts[i].as_str()].as_slice())
                        .collect();
                    model.embed(&rows, dropout_seed)?
                }
            };
            let emb = emb_var.as_tensor();
            let l = match b {
                Batch::Pairs(idx) => {
                    let n = idx.len();
                    let (a, p) = (emb.narrow(0, 0, n)?, emb.narrow(0, n, n)?);
                    n_ex += n;
                    n_texts += (2 + negatives) * n;
                    let y = || -> Result<Tensor> {
                        let v: Vec<f32> = idx
                            .iter()
                            .map(|&i| train[i].duplicate as u8 as f32)
                            .collect();
                        Ok(Tensor::from_vec(v, n, a.device())?)
                    };
                    match cfg.loss {
                        TextLoss::Contrastive => {
                            let d = loss::cosine_distance(&a, &p)?;
                            (loss::contrastive(&d, &y()?, margin)? * 0.5)?
                        }
                        TextLoss::OnlineContrastive => {
                            let d = loss::cosine_distance(&a, &p)?;
                            loss::online_contrastive(&d, &y()?, margin)?
                        }
                        _ => {
                            // The positives, then every hard negative of the batch.
                            let c = emb.narrow(0, n, emb.dim(0)? - n)?;
                            loss::multiple_negatives_ranking(&a, &c, cfg.scale)?
                        }
                    }
                }
                Batch::Items(idx) => {
                    let labels: Vec<u32> = idx.iter().map(|&i| group_labels[i]).collect();
                    n_ex += idx.len();
                    n_texts += idx.len();
                    match cfg.loss.pair_loss() {
                        Some(pl) => super::image::pair_loss_step(
                            &pl,
                            emb,
                            &labels,
                            mining,
                            memory.as_mut(),
                            cfg.seed ^ global as u64,
                        )?,
                        None => loss::batch_hard_triplet(emb, &labels, margin)?,
                    }
                }
            };
            // The loss's gradient with respect to the embeddings (none when no term of the
            // batch depends on them: zero), then back through the encoder.
            let d_emb = match l.backward()?.get(&emb_var) {
                Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                None => vec![0f32; emb.elem_count()],
            };
            model.bert.backward(&tape, &d_emb)?;
            if cfg.max_grad_norm > 0.0 {
                // torch.nn.utils.clip_grad_norm_: scale by max / (norm + 1e-6) when below 1.
                let coef = cfg.max_grad_norm / (model.bert.grad_norm() + 1e-6);
                if coef < 1.0 {
                    model.bert.scale_grads(coef as f32);
                }
            }
            let lr = linear_warmup_decay(cfg.lr, global, warmup, total);
            opt.step(&mut model.bert, lr);
            let lv = l.to_scalar::<f32>()? as f64;
            loss_sum += lv;
            global += 1;
            on_event(TextTrainEvent::Step(TextStepInfo {
                epoch,
                step: s + 1,
                steps: batches.len(),
                loss: lv,
                lr,
                examples_per_second: n_ex as f64 / sw.wall().max(1e-9),
            }));
        }
        let (ew, ec) = (sw.wall(), sw.cpu());
        wall += ew;
        cpu += ec;
        examples += n_ex;
        let dsw = Stopwatch::start();
        let dev = match dev_score.as_mut() {
            Some(f) => Some(f(&model.encoder()?)?),
            None => None,
        };
        let stats = TextEpochStats {
            epoch,
            loss: loss_sum / batches.len().max(1) as f64,
            steps: batches.len(),
            examples: n_ex,
            texts: n_texts,
            wall_seconds: ew,
            cpu_seconds: ec,
            dev_score: dev,
            dev_seconds: dsw.wall(),
        };
        let better = match (&best, dev) {
            (None, _) => true,
            (Some((b, _, _)), Some(d)) => d > *b,
            (Some(_), None) => true,
        };
        if better {
            best = Some((dev.unwrap_or(f64::NEG_INFINITY), epoch, model.snapshot()?));
        }
        on_event(TextTrainEvent::Epoch(stats.clone()));
        history.push(stats);
    }
    let (_, best_epoch, snap) = best.expect("at least one epoch");
    Ok(TextTrainOutcome {
        weights: model.weights(&snap)?,
        history,
        best_epoch,
        wall_seconds: wall,
        cpu_seconds: cpu,
        examples,
        steps: global,
    })
}

/// Files of a sentence-transformers folder copied from the base into a fine-tuned model.
const COPIED: [&str; 10] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
    "2_Normalize/config.json",
];

/// The training record written beside the weights.
pub const TRAINING_FILE: &str = "twindex_training.json";

/// Refuse an output folder twindex did not make: `out` must be absent, an empty directory, or a
/// fine-tuned model of an earlier run (it holds [`TRAINING_FILE`]); only then may
/// [`save_text_model`] replace it.
pub fn check_text_out(out: &Path) -> Result<()> {
    let empty_dir = || std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_none());
    if !out.exists() || out.join(TRAINING_FILE).is_file() || empty_dir() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "--out {}: exists and is not a model twindex fine-tuned (no {TRAINING_FILE}); refusing to replace it (choose a new folder)",
        out.display()
    )))
}

/// Write a fine-tuned model to `out` in the sentence-transformers layout: `weights` as
/// `model.safetensors`, the base folder's config, tokenizer and module files, and `record` as
/// [`TRAINING_FILE`]. Atomic: everything is written and fsynced in a sibling temporary folder
/// that is then renamed to `out` (an existing `out`, which [`check_text_out`] must accept, is
/// moved aside first and removed after).
pub fn save_text_model(
    base: &Path,
    weights: &HashMap<String, Tensor>,
    record: &serde_json::Value,
    out: &Path,
) -> Result<()> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("bad output folder {}", out.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    check_text_out(out)?;
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    let res = (|| -> Result<()> {
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        for f in COPIED {
            let src = base.join(f);
            if !src.is_file() {
                continue;
            }
            let dst = tmp.join(f);
            if let Some(d) = dst.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            }
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            crate::fsutil::atomic_write(&dst, &bytes)?;
        }
        let w = tmp.join("model.safetensors");
        candle_core::safetensors::save(weights, &w)
            .map_err(|e| Error::corrupt(&w, format!("cannot write weights: {e}")))?;
        std::fs::File::open(&w)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&w, e))?;
        crate::fsutil::atomic_write_json(&tmp.join(TRAINING_FILE), record)?;
        crate::fsutil::sync_dir(&tmp)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.{}.old", std::process::id()));
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &old).map_err(|e| Error::io(out, e))?;
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::io(out, e));
    }
    crate::fsutil::sync_dir(&parent)?;
    if had_old {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// What `train text` fine-tunes and where it writes.
#[derive(Debug, Clone, Copy)]
pub struct TextTrainRun<'a> {
    /// The sentence-transformers folder fine-tuned.
    pub base: &'a Path,
    /// Training pairs (TSV).
    pub pairs: &'a Path,
    /// Dev pairs (TSV): scored after each epoch, the best epoch kept.
    pub dev: Option<&'a Path>,
    /// The output folder (replaced atomically; see [`check_text_out`]).
    pub out: &'a Path,
}

/// Scores an encoder on dev pairs; higher is better (e.g. average precision).
pub type DevPairScore = fn(&TextEncoder, &[TextPair]) -> Result<f64>;

/// The training record of a fine-tuned text model, written as [`TRAINING_FILE`] (and the
/// report of `train text --json`).
#[derive(Debug, Clone, Serialize)]
pub struct TextTrainReport {
    pub model: String,
    pub base: String,
    pub pairs: String,
    pub dev: Option<String>,
    pub config: TextTrainConfig,
    /// The margin used (the loss's default when the config has none).
    pub margin: f64,
    pub train_pairs: usize,
    /// Hard negatives a training row (a mined-negatives file's; 0 for labelled pairs).
    pub hard_negatives: usize,
    pub steps: usize,
    /// Training only (dev evaluation excluded); pair rates for pair losses (not batch-hard).
    #[serde(flatten)]
    pub throughput: Throughput,
    /// Training and dev evaluation.
    pub total_wall_seconds: f64,
    pub best_epoch: usize,
    pub dev_average_precision: Option<f64>,
    pub history: Vec<TextEpochStats>,
}

/// The progress of fine-tuning: a bar per epoch (a line every 25 steps where no bar shows), a
/// line per epoch.
fn text_progress(ev: TextTrainEvent, epochs: usize, on: &Observer) {
    match ev {
        TextTrainEvent::Step(s) => {
            if s.step % 25 == 0 || s.step == s.steps {
                on(Progress::Quiet(format!(
                    "epoch {} step {}/{}: loss {:.4} lr {:.2e} {:.2} examples/s",
                    s.epoch, s.step, s.steps, s.loss, s.lr, s.examples_per_second
                )));
            }
            on(Progress::Bar {
                label: format!("epoch {}/{epochs}", s.epoch),
                len: s.steps as u64,
                pos: s.step as u64,
                prefix: Some(format!(
                    "loss {:.4} lr {:.2e} {:.1} ex/s",
                    s.loss, s.lr, s.examples_per_second
                )),
            });
        }
        TextTrainEvent::Epoch(h) => {
            let dev = h
                .dev_score
                .map(|d| format!("  dev AP {d:.4} ({:.0} s)", h.dev_seconds))
                .unwrap_or_default();
            on(Progress::Line(format!(
                "epoch {:>2}: loss {:.5}  {} steps  {:.2} examples/s ({:.0} s wall, {:.0} s CPU){dev}",
                h.epoch,
                h.loss,
                h.steps,
                h.examples as f64 / h.wall_seconds,
                h.wall_seconds,
                h.cpu_seconds
            )));
        }
    }
}

/// Fine-tune `run.base` on the pairs of `run.pairs` (scored each epoch on `run.dev` with
/// `dev_score`, the best epoch kept) and save it to `run.out` with its training record. The
/// output folder, the base folder and the TSVs are checked before any training.
pub fn fine_tune_text(
    run: &TextTrainRun,
    cfg: &TextTrainConfig,
    dev_score: DevPairScore,
    on: &Observer,
) -> Result<TextTrainReport> {
    check_text_out(run.out)?;
    TextModelParts::read(run.base)
        .map_err(|e| Error::Msg(format!("base model {}: {e}", run.base.display())))?;
    let train = crate::corpus::pairs::read_pairs_tsv(run.pairs)?;
    let dev = run
        .dev
        .map(crate::corpus::pairs::read_pairs_tsv)
        .transpose()?;
    let n_train = cfg.max_train.unwrap_or(train.len()).min(train.len());
    let hard_negatives = train.first().map_or(0, |p| p.negatives.len());
    on(Progress::Line(format!(
        "fine-tuning {} with {} on {} ({} pairs, {} duplicates, {} hard negatives each), {} epoch(s), batch {}, lr {}, seed {}, {} threads",
        run.base.display(),
        cfg.loss.name(),
        run.pairs.display(),
        n_train,
        train[..n_train].iter().filter(|p| p.duplicate).count(),
        hard_negatives,
        cfg.epochs,
        cfg.batch,
        cfg.lr,
        cfg.seed,
        rayon::current_num_threads()
    )));
    let mut score =
        |enc: &TextEncoder| -> Result<f64> { dev_score(enc, dev.as_deref().expect("dev pairs")) };
    let sw = Stopwatch::start();
    let outcome = train_text(
        run.base,
        &train,
        cfg,
        if dev.is_some() {
            Some(&mut score)
        } else {
            None
        },
        &mut |ev| text_progress(ev, cfg.epochs, on),
    )?;
    let total_wall = sw.wall();
    let pair_loss = !cfg.loss.on_groups();
    let report = TextTrainReport {
        model: run.out.display().to_string(),
        base: run.base.display().to_string(),
        pairs: run.pairs.display().to_string(),
        dev: run.dev.map(|d| d.display().to_string()),
        config: cfg.clone(),
        margin: cfg.margin(),
        train_pairs: n_train,
        hard_negatives,
        steps: outcome.steps,
        throughput: Throughput::new(
            outcome.examples,
            outcome.wall_seconds,
            outcome.cpu_seconds,
            pair_loss,
        ),
        total_wall_seconds: total_wall,
        best_epoch: outcome.best_epoch,
        dev_average_precision: outcome
            .history
            .get(outcome.best_epoch - 1)
            .and_then(|h| h.dev_score),
        history: outcome.history,
    };
    // A plain struct of numbers and strings always serialises.
    let record = serde_json::to_value(&report).expect("a training record serialises");
    save_text_model(run.base, &outcome.weights, &record, run.out)?;
    on(Progress::Line(format!(
        "saved {} (epoch {}; training record in {TRAINING_FILE})",
        run.out.display(),
        report.best_epoch
    )));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(a: &str, b: &str, d: bool) -> TextPair {
        TextPair {
            a: a.into(),
            b: b.into(),
            duplicate: d,
            negatives: Vec::new(),
        }
    }

    #[test]
    fn schedule_matches_hugging_face_linear() {
        // total 10, warmup 2: lambdas 0, .5, then (10-s)/8.
        let got: Vec<f64> = (0..10)
            .map(|s| linear_warmup_decay(1.0, s, 2, 10))
            .collect();
        let want = [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
    }

    #[test]
    fn groups_and_samplers() {
        let pairs = [
            tp("a", "b", true),
            tp("b", "c", true),
            tp("d", "e", true),
            tp("a", "d", false),
            tp("f", "g", false),
        ];
        let (texts, labels) = duplicate_groups(&pairs);
        assert_eq!(texts, ["a", "b", "c", "d", "e", "f", "g"]);
        // {a,b,c} {d,e} {f} {g}
        assert_eq!(labels, [0, 0, 0, 1, 1, 2, 3]);
        // batch 4: a-b-c trimmed to 2, d-e: one batch of 4 holding 2 of each group.
        let b = group_batches(&labels, 4, 1).unwrap();
        assert_eq!(b.len(), 1);
        let mut l: Vec<u32> = b[0].iter().map(|&i| labels[i]).collect();
        l.sort_unstable();
        assert_eq!(l, [0, 0, 1, 1]);
        assert!(group_batches(&labels, 5, 1).is_err());

        // No text twice in a batch: "a" in pairs 0 and 3, "b" in 0 and 1, "d" in 2 and 3.
        let nd = no_duplicate_batches(&pairs, &[0, 1, 2, 3, 4], 3);
        assert_eq!(nd, vec![vec![0, 2, 4], vec![1, 3]]);
    }
}
