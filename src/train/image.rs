//! The training loop for image encoders (STYLE habit 5): seed pairs + contrastive loss, or
//! P x K batches + triplet loss with online mining; Adam; evaluation each epoch.

use super::loss;
use super::mining::{self, Miner};
use super::pair_loss::PairLoss;
use super::pairs::{cosine_matrix, PairMask};
use super::xbm::CrossBatchMemory;
use crate::corpus::{seed_pairs, ImageSet, Pair, PkSampler, TrainTest};
use crate::error::{Error, Result};
use crate::model::{Arch, ImageModel, ImageModelConfig, TrainingRecord};
use crate::timing::Stopwatch;
use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Seed pairs, `y*d^2 + (1-y)*max(0, m-d)^2`.
    Contrastive,
    /// P x K batches, `max(0, d(a,p) - d(a,n) + m)` over mined triplets.
    Triplet,
    /// P x K batches, additive angular margin (ArcFace): softmax over `scale * cos` to one
    /// learned proxy per training class, the own class's angle widened by `m` radians. The
    /// proxies are training-only; the encoder is used by distance like the others.
    Arcface,
    /// P x K batches, the angular loss (Wang et al. 2017; PML's, alpha 40 degrees).
    Angular,
    /// P x K batches, the multi-similarity loss (PML's: alpha 2, beta 50, base 0.5).
    MultiSimilarity,
    /// P x K batches, supervised contrastive loss (PML's SupCon, temperature 0.1).
    Supcon,
    /// P x K batches, NT-Xent with labels (PML's, temperature 0.07).
    Ntxent,
    /// P x K batches, proxy-anchor loss to one trained proxy per class (PML's: margin 0.1,
    /// alpha 32). The proxies are training-only, trained at the encoder's learning rate.
    ProxyAnchor,
    /// P x K batches, circle loss (PML's: m 0.4, gamma 80).
    Circle,
    /// P x K batches, generalised lifted structure loss (PML's: neg margin 1, pos margin 0).
    Lifted,
}

impl LossKind {
    /// The pair loss this is, with PML's defaults (`None` for contrastive, triplet, arcface and
    /// proxy-anchor).
    pub fn pair_loss(self) -> Option<PairLoss> {
        match self {
            LossKind::Angular => Some(PairLoss::ANGULAR),
            LossKind::MultiSimilarity => Some(PairLoss::MULTI_SIMILARITY),
            LossKind::Supcon => Some(PairLoss::SUPCON),
            LossKind::Ntxent => Some(PairLoss::NTXENT),
            LossKind::Circle => Some(PairLoss::CIRCLE),
            LossKind::Lifted => Some(PairLoss::LIFTED),
            LossKind::Contrastive
            | LossKind::Triplet
            | LossKind::Arcface
            | LossKind::ProxyAnchor => None,
        }
    }

    /// The miner PML's defaults amount to: batch-hard for triplet loss; for the others `none`
    /// (the pair losses then take every pair of the batch, as PML without a miner). The
    /// `--miner` flag's default is batch-hard whatever the loss.
    pub fn default_miner(self) -> Miner {
        match self {
            LossKind::Triplet => Miner::BatchHard,
            _ => Miner::None,
        }
    }

    /// The name used on the command line and in the training record.
    pub fn name(self) -> &'static str {
        match self {
            LossKind::Contrastive => "contrastive",
            LossKind::Triplet => "triplet",
            LossKind::Arcface => "arcface",
            LossKind::ProxyAnchor => "proxy-anchor",
            other => other.pair_loss().map_or("?", |p| p.name()),
        }
    }
}

/// How the learning rate moves over training (per step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// The base rate throughout (after any warm-up), times `lr_decay` after each epoch.
    #[default]
    Constant,
    /// Half a cosine from the base rate (at the end of the warm-up) down to 0 at the last step.
    Cosine,
}

impl Schedule {
    /// The name used on the command line and in the training record.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Cosine => "cosine",
        }
    }
}

/// The learning rate at `progress` epochs into training (fractional: 2.5 is half-way through
/// the third epoch) of `epochs`, with base rate `lr` and `warmup` epochs of linear warm-up from
/// 0: `lr * progress / warmup` during the warm-up, then `lr` (constant) or
/// `lr * (1 + cos(pi * (progress - warmup) / (epochs - warmup))) / 2` (cosine; 0 at the end).
/// `lr_decay` is applied by the training loop, not here.
pub fn scheduled_lr(
    schedule: Schedule,
    lr: f64,
    warmup: usize,
    epochs: usize,
    progress: f64,
) -> f64 {
    let w = warmup as f64;
    if progress < w {
        return lr * progress / w;
    }
    match schedule {
        Schedule::Constant => lr,
        Schedule::Cosine => {
            let span = (epochs as f64 - w).max(f64::MIN_POSITIVE);
            let t = ((progress - w) / span).clamp(0.0, 1.0);
            lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

/// Scores a dev set's embeddings over all its pairs, `(embeddings, dim, labels)`, greater is
/// better (e.g. `eval::protocol::all_pairs_roc_auc`); given by the caller, so that training
/// does not depend on evaluation.
pub type DevScore = fn(&[f32], usize, &[u32]) -> Result<f64>;

/// How to train an image encoder. Defaults are the seed protocol. Also the flags of
/// `twindex train image` (the first line of each field's comment is its help).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct ImageTrainConfig {
    /// Network: `lenet` (the seed's), `cnn` (stronger, 64-d normalised), `deep` (3x3
    /// convolutions for larger inputs: faces, signatures) or `resnet` (residual blocks with
    /// batch normalisation, 128-d normalised).
    #[arg(long, value_enum, default_value_t = Arch::Lenet)]
    pub arch: Arch,
    /// Loss: `contrastive` on the seed's pairs, `triplet` on P x K batches, `arcface`
    /// (additive angular margin to learned class proxies; --margin in radians, e.g. 0.5, and
    /// --scale), or on P x K batches with PML's defaults (docs/losses.md): angular,
    /// multi-similarity, supcon, ntxent, proxy-anchor, circle, lifted.
    #[arg(long, value_enum, default_value_t = LossKind::Contrastive)]
    pub loss: LossKind,
    /// Mining: triplets for triplet loss; for the pair losses `none` (every pair of the
    /// batch, PML's no-miner), `multi-similarity`, or a triplet miner's triplets taken as
    /// pairs. Ignored by contrastive, arcface and proxy-anchor.
    #[arg(long, value_enum, default_value_t = Miner::BatchHard)]
    pub miner: Miner,
    /// Margin m of the loss. Larger: more separation asked for, harder to satisfy.
    #[arg(long, default_value_t = 1.0)]
    pub margin: f32,
    /// Triplet loss on squared distances (FaceNet) instead of plain ones.
    #[arg(long)]
    pub squared: bool,
    /// Triplet loss: the mean over the mined triplets with a positive loss only
    /// (pytorch-metric-learning's `TripletMarginLoss` default), not over all of them.
    #[arg(long)]
    #[serde(default)]
    pub avg_non_zero: bool,
    /// Passes over the training data.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Pairs per batch (contrastive) or items per batch (triplet).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Items per class in a P x K batch (triplet loss).
    #[arg(long = "k", default_value_t = 8)]
    pub k_per_class: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed for weights, pairs, batch order and augmentation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Augment training images: random shifts (and scalings, rotations, mirroring as below).
    /// The seed has none.
    #[arg(long)]
    pub augment: bool,
    /// Train on only the first N training images (tests, quick runs). Default: all.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Learning-rate multiplier applied after each epoch (constant schedule only).
    #[arg(long, default_value_t = 1.0)]
    pub lr_decay: f64,
    /// Learning-rate schedule, per step: `constant` (times --lr-decay after each epoch) or
    /// `cosine` (half a cosine from --lr down to 0 at the last step: no step-size tuning of a
    /// decay, but the last epochs barely move the weights).
    #[serde(default)]
    #[arg(long, value_enum, default_value_t = Schedule::Constant)]
    pub schedule: Schedule,
    /// Epochs of linear learning-rate warm-up from 0 to --lr, before the schedule. Larger:
    /// gentler first steps of fresh weights, fewer steps at the full rate.
    #[serde(default)]
    #[arg(long, default_value_t = 0)]
    pub warmup_epochs: usize,
    /// What `augment` does: random shifts, scalings, rotations, mirror images.
    #[command(flatten)]
    pub augmentation: Augmentation,
    /// Logit scale of the arcface loss.
    #[serde(default = "default_scale")]
    #[arg(long, default_value_t = 30.0)]
    pub scale: f32,
    /// Image folders: keep the weights of the epoch with the best dev ROC-AUC (the held-out
    /// dev classes) rather than the last epoch's. Model selection on a held-out dev split:
    /// never with the test set as `data.test`.
    #[arg(long)]
    pub keep_best: bool,
    /// How each epoch scores `data.test` when it holds at most 2,000 images (reported as
    /// `test_roc_auc`, and what `keep_best` selects on). Default none: accuracy at the best
    /// threshold.
    #[serde(skip)]
    #[arg(skip)]
    pub dev_score: Option<DevScore>,
    /// A cross-batch memory of this many embeddings (pair losses only): each batch is compared
    /// with the last SIZE training embeddings instead of only itself. Default none. Larger:
    /// more pairs per step and more stale embeddings among them. At least the batch size.
    #[serde(default)]
    #[arg(long, value_name = "SIZE")]
    pub xbm: Option<usize>,
}

fn default_scale() -> f32 {
    30.0
}

/// Random geometric changes of training images (only with `augment`). Each image of a batch
/// gets its own draw; the background shows through where the image moved away.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, clap::Args)]
pub struct Augmentation {
    /// Largest shift in pixels along each axis (with --augment).
    #[arg(id = "aug_shift", long = "aug-shift", default_value_t = 2.0)]
    pub shift: f32,
    /// Largest relative scale change, e.g. 0.1: 0.9x to 1.1x (with --augment).
    #[arg(id = "aug_scale", long = "aug-scale", default_value_t = 0.0)]
    pub scale: f32,
    /// Largest rotation in degrees (with --augment).
    #[arg(id = "aug_rotate", long = "aug-rotate", default_value_t = 0.0)]
    pub rotate: f32,
    /// Mirror images left-right half the time (with --augment; faces, never text or
    /// signatures).
    #[arg(long)]
    pub hflip: bool,
}

impl Default for Augmentation {
    fn default() -> Self {
        Augmentation {
            shift: 2.0,
            scale: 0.0,
            rotate: 0.0,
            hflip: false,
        }
    }
}

impl ImageTrainConfig {
    /// Refuse a recipe that cannot be trained as asked, in one line naming the flag: dlib's
    /// pretrained network (imported, never trained here), or a cosine schedule with a per-epoch
    /// decay on top of it.
    pub fn check(&self) -> Result<()> {
        if self.arch == Arch::DlibResnet {
            return Err(Error::InvalidArgument(
                "--arch dlib-resnet is dlib's pretrained face network: `twindex import dlib-face` makes it; it is not trained here (train lenet, cnn, deep or resnet, optionally on aligned faces with --align-faces)".into(),
            ));
        }
        if self.schedule == Schedule::Cosine && self.lr_decay != 1.0 {
            return Err(Error::InvalidArgument(format!(
                "--schedule cosine sets the learning rate per step down to 0: drop --lr-decay {} (it is for --schedule constant)",
                self.lr_decay
            )));
        }
        self.check_loss()
    }

    /// The loss, miner and memory go together ([`check_pair_setup`]).
    pub fn check_loss(&self) -> Result<()> {
        check_pair_setup(
            self.loss.name(),
            self.loss.pair_loss().is_some(),
            self.loss == LossKind::Triplet,
            self.miner,
            self.xbm,
            self.batch,
        )
    }
}

impl Default for ImageTrainConfig {
    fn default() -> Self {
        ImageTrainConfig {
            arch: Arch::Lenet,
            loss: LossKind::Contrastive,
            miner: Miner::BatchHard,
            margin: 1.0,
            squared: false,
            avg_non_zero: false,
            epochs: 20,
            batch: 128,
            k_per_class: 8,
            lr: 1e-3,
            seed: 1,
            augment: false,
            max_train: None,
            lr_decay: 1.0,
            schedule: Schedule::Constant,
            warmup_epochs: 0,
            augmentation: Augmentation::default(),
            keep_best: false,
            scale: default_scale(),
            dev_score: None,
            xbm: None,
        }
    }
}

/// Figures of one epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub loss: f64,
    /// Training pairs (contrastive) or triplet-batch items seen.
    pub examples: usize,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    /// Test pair accuracy at the model's distance threshold while training
    /// ([`EpochStats::pair_threshold`]), on the seed's test pairs.
    pub test_pair_accuracy: f64,
    /// The distance threshold of `test_pair_accuracy`.
    #[serde(default)]
    pub pair_threshold: f32,
    /// Whether the encoder's embeddings are L2-normalised (a fixed threshold then means little).
    #[serde(default)]
    pub normalized: bool,
    /// Test pair accuracy at the best distance threshold for these test pairs (an upper bound
    /// that is fair to compare across losses whose distance scales differ).
    pub test_best_accuracy: f64,
    /// ROC-AUC over every pair of test images (small test sets only: up to 2,000 images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_roc_auc: Option<f64>,
}

/// What the training loop reports as it goes.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// A batch was trained on.
    Step(StepInfo),
    /// An epoch ended and was evaluated.
    Epoch(EpochStats),
    /// With `keep_best`: the epoch whose weights were kept, and its dev score.
    Selected { epoch: usize, score: f64 },
}

/// A step's progress, for a progress bar.
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct StepInfo {
    pub epoch: usize,
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
}

/// The result of a training run.
pub struct TrainOutcome {
    pub model: ImageModel,
    pub history: Vec<EpochStats>,
    /// Training time only (evaluation excluded).
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    /// Training examples processed over all epochs (pairs for contrastive, items for triplet).
    pub examples: usize,
}

/// Draw image `i` of `set` moved by a random affine map (`aug`), resampled bilinearly, with
/// `background` where the map leaves the image; 0..255 pixels into `out`.
fn warp_image(
    set: &ImageSet,
    i: usize,
    aug: &Augmentation,
    background: u8,
    rng: &mut ChaCha8Rng,
    out: &mut [u8],
) {
    let (h, w) = (set.rows, set.cols);
    let img = set.image(i);
    if aug.scale == 0.0 && aug.rotate == 0.0 && !aug.hflip {
        // Whole-pixel shifts only (the MNIST recipe): a plain copy.
        let si = aug.shift.round() as i32;
        let (dy, dx) = (rng.random_range(-si..=si), rng.random_range(-si..=si));
        let (hi, wi) = (h as i32, w as i32);
        for y in 0..hi {
            for x in 0..wi {
                let (sy, sx) = (y - dy, x - dx);
                out[(y * wi + x) as usize] = if sy >= 0 && sy < hi && sx >= 0 && sx < wi {
                    img[(sy * wi + sx) as usize]
                } else {
                    background
                };
            }
        }
        return;
    }
    let mut r = |a: f32| {
        if a > 0.0 {
            rng.random_range(-a..=a)
        } else {
            0.0
        }
    };
    let (dy, dx) = (r(aug.shift), r(aug.shift));
    let s = 1.0 + r(aug.scale);
    let th = r(aug.rotate).to_radians();
    let flip = aug.hflip && rng.random_bool(0.5);
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let (cos, sin) = (th.cos() / s, th.sin() / s);
    for y in 0..h {
        for x in 0..w {
            // Output pixel -> source pixel (inverse map about the centre).
            let (oy, ox) = (y as f32 - cy - dy, x as f32 - cx - dx);
            let ox = if flip { -ox } else { ox };
            let sy = cos * oy - sin * ox + cy;
            let sx = sin * oy + cos * ox + cx;
            let v = {
                let (y0, x0) = (sy.floor(), sx.floor());
                let (fy, fx) = (sy - y0, sx - x0);
                let px = |yy: f32, xx: f32| -> f32 {
                    if yy >= 0.0 && yy < h as f32 && xx >= 0.0 && xx < w as f32 {
                        img[yy as usize * w + xx as usize] as f32
                    } else {
                        background as f32
                    }
                };
                let top = px(y0, x0) * (1.0 - fx) + px(y0, x0 + 1.0) * fx;
                let bot = px(y0 + 1.0, x0) * (1.0 - fx) + px(y0 + 1.0, x0 + 1.0) * fx;
                top * (1.0 - fy) + bot * fy
            };
            out[y * w + x] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Build an NHWC batch tensor from item indices, preprocessed as `model` says (augmented
/// when `rng` is given).
fn batch_tensor(
    model: &ImageModel,
    set: &ImageSet,
    idx: &[usize],
    aug: &Augmentation,
    rng: Option<&mut ChaCha8Rng>,
) -> Result<Tensor> {
    let pre = &model.config.preprocess;
    let per = set.rows * set.cols;
    let mut v = vec![0f32; idx.len() * per];
    match rng {
        Some(rng) => {
            let mut buf = vec![0u8; per];
            for (k, &i) in idx.iter().enumerate() {
                warp_image(set, i, aug, pre.pad, rng, &mut buf);
                pre.apply(&buf, &mut v[k * per..(k + 1) * per]);
            }
        }
        None => {
            for (k, &i) in idx.iter().enumerate() {
                pre.apply(set.image(i), &mut v[k * per..(k + 1) * per]);
            }
        }
    }
    Ok(Tensor::from_vec(
        v,
        (idx.len(), set.rows, set.cols, 1),
        &Device::Cpu,
    )?)
}

/// Embed every image of `set` with `model`, 512 at a time: `n * dim` floats.
pub fn embed_set(model: &ImageModel, set: &ImageSet) -> Result<Vec<f32>> {
    model.embed_pixels(&set.pixels, set.n, 512)
}

/// Refuse an `--out` that twindex did not make: it must be absent, empty, an encoder directory
/// (`config.json` of an image encoder) or a folder of `fold-N` encoder directories (ORL).
pub fn check_image_out(out: &std::path::Path) -> Result<()> {
    let is_encoder = |d: &std::path::Path| {
        crate::fsutil::read_json::<crate::model::ImageModelConfig>(
            &d.join(crate::model::image::CONFIG_FILE),
        )
        .is_ok_and(|c| c.format == crate::model::image::IMAGE_FORMAT)
    };
    if !out.exists() || is_encoder(out) {
        return Ok(());
    }
    let entries: Vec<_> = match std::fs::read_dir(out) {
        Ok(rd) => rd.flatten().collect(),
        Err(_) => {
            return Err(Error::Msg(format!(
                "--out {}: exists and is not a directory twindex made; refusing to write there",
                out.display()
            )))
        }
    };
    let folds = entries
        .iter()
        .all(|e| e.file_name().to_string_lossy().starts_with("fold-") && is_encoder(&e.path()));
    if entries.is_empty() || folds {
        return Ok(());
    }
    Err(Error::Msg(format!(
        "--out {}: exists and holds files that are not an encoder twindex made (no image encoder config.json); refusing to write there (choose a new directory)",
        out.display()
    )))
}

/// The loss, miner and memory go together (every trainer's rule): `--miner multi-similarity`
/// with triplet loss or a pair loss, `--xbm` with a pair loss and every pair or the
/// multi-similarity miner, holding at least one `batch`. `loss` names the loss in errors.
pub fn check_pair_setup(
    loss: &str,
    pair: bool,
    triplet: bool,
    miner: Miner,
    xbm: Option<usize>,
    batch: usize,
) -> Result<()> {
    if miner == Miner::MultiSimilarity && !pair && !triplet {
        return Err(Error::InvalidArgument(format!(
            "--miner multi-similarity mines pairs for triplet loss or a pair loss (angular, multi-similarity, supcon, ntxent, circle, lifted), not --loss {loss}"
        )));
    }
    if let Some(size) = xbm {
        if !pair {
            return Err(Error::InvalidArgument(format!(
                "--xbm is a memory of embeddings for a pair loss (angular, multi-similarity, supcon, ntxent, circle, lifted), not --loss {loss}"
            )));
        }
        if !matches!(miner, Miner::None | Miner::MultiSimilarity) {
            return Err(Error::InvalidArgument(format!(
                "--xbm takes every pair or --miner multi-similarity, not the triplet miner {}",
                miner.name()
            )));
        }
        if size < batch {
            return Err(Error::InvalidArgument(format!(
                "--xbm {size}: the memory must hold at least one batch (--batch {batch})"
            )));
        }
    }
    Ok(())
}

/// How a pair loss's pairs are chosen: the miner, and the margin and distance form a triplet
/// miner uses.
#[derive(Debug, Clone, Copy)]
pub struct PairMining {
    pub miner: Miner,
    pub margin: f32,
    pub squared: bool,
}

/// One batch's pair loss: the batch against itself or the cross-batch memory (which takes the
/// batch first), over every pair, the multi-similarity miner's pairs or a triplet miner's
/// triplets as pairs.
pub fn pair_loss_step(
    loss: &PairLoss,
    e: &Tensor,
    labels: &[u32],
    mining: PairMining,
    memory: Option<&mut CrossBatchMemory>,
    seed: u64,
) -> Result<Tensor> {
    let (reference, mask) = match memory {
        Some(m) => m.step(e, labels)?,
        None => (e.clone(), PairMask::all_pairs(labels)),
    };
    let mask = match mining.miner {
        Miner::None => mask,
        Miner::MultiSimilarity => {
            let sim = cosine_matrix(e, &reference)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            mining::multi_similarity_pairs(&sim, &mask, mining::MS_EPSILON)
        }
        triplet_miner => {
            let (n, dim) = e.dims2()?;
            let ev = e.flatten_all()?.to_vec1::<f32>()?;
            let dist = mining::distance_matrix(&ev, n, dim, mining.squared);
            let trips = mining::mine_triplets(&dist, labels, triplet_miner, mining.margin, seed);
            PairMask::from_triplets(labels, &trips)?
        }
    };
    Ok(loss.loss(e, &reference, &mask)?)
}

/// Euclidean distances of `pairs` given embeddings of the whole set.
pub fn pair_distances(emb: &[f32], dim: usize, pairs: &[Pair]) -> Vec<f32> {
    pairs
        .iter()
        .map(|p| {
            emb[p.a * dim..(p.a + 1) * dim]
                .iter()
                .zip(&emb[p.b * dim..(p.b + 1) * dim])
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt()
        })
        .collect()
}

/// The best accuracy over all thresholds of "similar iff distance <= t" (the crate's one rule,
/// [`crate::metric::is_duplicate`]), and that `t`: the midpoint between the last distance taken
/// and the next one (kept strictly below the next one where f32 rounds the midpoint up to it).
pub fn best_threshold_accuracy(dist: &[f32], pairs: &[Pair]) -> (f64, f32) {
    let mut v: Vec<(f32, bool)> = dist
        .iter()
        .zip(pairs)
        .map(|(&d, p)| (d, p.y == 1.0))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_neg = v.iter().filter(|x| !x.1).count();
    // threshold below everything: all predicted dissimilar
    let (mut correct, mut best, mut best_t) = (
        n_neg,
        n_neg,
        v.first().map_or(0.0, |x| {
            let t = x.0 - 1e-6;
            if t < x.0 {
                t
            } else {
                x.0.next_down()
            }
        }),
    );
    for i in 0..v.len() {
        correct = if v[i].1 { correct + 1 } else { correct - 1 };
        let distinct = i + 1 == v.len() || v[i + 1].0 > v[i].0;
        if distinct && correct > best {
            best = correct;
            best_t = if i + 1 < v.len() {
                let m = 0.5 * (v[i].0 + v[i + 1].0);
                if m < v[i + 1].0 {
                    m
                } else {
                    v[i].0
                }
            } else {
                v[i].0 + 1e-6
            };
        }
    }
    (best as f64 / v.len().max(1) as f64, best_t)
}

/// Share of pairs classified right with "similar iff distance <= threshold"
/// ([`crate::metric::is_duplicate`]).
pub fn pair_accuracy(dist: &[f32], pairs: &[Pair], threshold: f32) -> f64 {
    let same: Vec<bool> = pairs.iter().map(|p| p.y == 1.0).collect();
    crate::metric::decision_accuracy(dist, &same, threshold)
}

fn take(set: &ImageSet, n: usize) -> ImageSet {
    let n = n.min(set.n);
    let per = set.rows * set.cols;
    ImageSet {
        n,
        rows: set.rows,
        cols: set.cols,
        pixels: set.pixels[..n * per].to_vec(),
        labels: set.labels[..n].to_vec(),
    }
}

/// Train an image encoder on `data.train`, evaluating on `data.test` each epoch (MNIST-style
/// IDX data: the default preprocessing, class names "0".."9").
pub fn train_image(
    data: &TrainTest,
    cfg: &ImageTrainConfig,
    corpus_name: &str,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome> {
    let mut mcfg = ImageModelConfig::new(cfg.arch, data.train.rows, data.train.cols, 1);
    mcfg.class_names = (0..data.train.n_classes()).map(|c| c.to_string()).collect();
    train_image_with(data, cfg, mcfg, corpus_name, on_event)
}

/// [`train_image`] for an encoder described by `mcfg` (its preprocessing, input size and class
/// names; `mcfg.arch` is replaced by `cfg.arch`). `data`'s images must be at that input size,
/// as 0..255 pixels before the preprocessing (which is applied to every batch).
pub fn train_image_with(
    data: &TrainTest,
    cfg: &ImageTrainConfig,
    mut mcfg: ImageModelConfig,
    corpus_name: &str,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome> {
    mcfg.arch = cfg.arch;
    mcfg.dim = cfg.arch.dim();
    mcfg.normalized = cfg.arch.normalized();
    let model = ImageModel::new_trainable(mcfg, cfg.seed)?;
    train_image_from(data, cfg, model, corpus_name, on_event)
}

/// [`train_image_with`] from the weights `model` has now (a trainable model: fresh, or a copy
/// of another encoder to fine-tune, as the `cluster` ensembles do); `cfg.arch` is ignored.
pub fn train_image_from(
    data: &TrainTest,
    cfg: &ImageTrainConfig,
    mut model: ImageModel,
    corpus_name: &str,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome> {
    if cfg.epochs == 0 || cfg.batch < 2 {
        return Err(Error::InvalidArgument(format!(
            "epochs must be >= 1 and batch >= 2 (got epochs={}, batch={})",
            cfg.epochs, cfg.batch
        )));
    }
    if cfg.lr.is_nan() || cfg.lr <= 0.0 || cfg.margin.is_nan() || cfg.margin <= 0.0 {
        return Err(Error::InvalidArgument(format!(
            "learning rate and margin must be positive (got lr={}, margin={})",
            cfg.lr, cfg.margin
        )));
    }
    if cfg.schedule == Schedule::Cosine && cfg.lr_decay != 1.0 {
        return Err(Error::InvalidArgument(format!(
            "the cosine schedule sets the learning rate itself: drop the per-epoch decay (got lr_decay={})",
            cfg.lr_decay
        )));
    }
    if cfg.lr_decay.is_nan() || cfg.lr_decay <= 0.0 {
        return Err(Error::InvalidArgument(format!(
            "the learning-rate decay must be positive (got {})",
            cfg.lr_decay
        )));
    }
    if cfg.warmup_epochs > 0 && cfg.warmup_epochs >= cfg.epochs {
        return Err(Error::InvalidArgument(format!(
            "the warm-up must end before training does (got {} warm-up epochs of {})",
            cfg.warmup_epochs, cfg.epochs
        )));
    }
    cfg.check_loss()?;
    let train = match cfg.max_train {
        Some(n) => take(&data.train, n),
        None => data.train.clone(),
    };
    let test = &data.test;
    let mcfg = &model.config;
    if (train.rows, train.cols) != (mcfg.preprocess.height, mcfg.preprocess.width)
        || (test.rows, test.cols) != (train.rows, train.cols)
    {
        return Err(Error::Shape(format!(
            "training images are {}x{} and test images {}x{}, the encoder takes {}x{}",
            train.rows,
            train.cols,
            test.rows,
            test.cols,
            mcfg.preprocess.height,
            mcfg.preprocess.width
        )));
    }
    let varmap = model
        .varmap
        .clone()
        .ok_or_else(|| Error::InvalidArgument("only a trainable model can be trained".into()))?;
    // ArcFace: one proxy per training class, trained with the encoder, not part of it.
    let proxies = match cfg.loss {
        LossKind::Arcface => {
            if cfg.scale.is_nan() || cfg.scale <= 0.0 {
                return Err(Error::InvalidArgument(format!(
                    "the angular-margin scale must be positive (got {})",
                    cfg.scale
                )));
            }
            let n_classes = train
                .labels
                .iter()
                .copied()
                .max()
                .map_or(0, |m| m as usize + 1);
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x05EE_DA4C);
            let init: Vec<f32> = (0..n_classes * model.config.dim)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            Some(candle_core::Var::from_vec(
                init,
                (n_classes, model.config.dim),
                &Device::Cpu,
            )?)
        }
        _ => None,
    };
    // Proxy anchor: one proxy per training class, drawn as PML draws them.
    let anchors = match cfg.loss {
        LossKind::ProxyAnchor => {
            let n_classes = train
                .labels
                .iter()
                .copied()
                .max()
                .map_or(0, |m| m as usize + 1);
            Some(super::proxy_anchor::init_proxies(
                n_classes,
                model.config.dim,
                cfg.seed ^ 0x9A0C,
                &Device::Cpu,
            )?)
        }
        _ => None,
    };
    let mut memory = match cfg.xbm {
        Some(size) => Some(CrossBatchMemory::new(size, model.config.dim)?),
        None => None,
    };
    let mut train_vars = varmap.all_vars();
    train_vars.extend(proxies.iter().cloned());
    train_vars.extend(anchors.iter().cloned());
    let mut opt = AdamW::new(
        train_vars,
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            eps: 1e-7,
            ..Default::default()
        },
    )?;
    let test_pairs = seed_pairs(&test.labels, cfg.seed.wrapping_add(1))?;
    let train_pairs = match cfg.loss {
        LossKind::Contrastive => seed_pairs(&train.labels, cfg.seed)?,
        _ => Vec::new(),
    };
    let sampler = match cfg.loss {
        LossKind::Contrastive => None,
        _ => {
            let n_classes = crate::corpus::sampler::class_indices(&train.labels)
                .iter()
                .filter(|c| c.len() >= 2)
                .count();
            let p = (cfg.batch / cfg.k_per_class.max(2)).clamp(2, n_classes.max(2));
            let k = (cfg.batch / p).max(2);
            Some(PkSampler::new(&train.labels, p, k)?)
        }
    };
    let mut aug_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xA5A5);
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    let (mut wall, mut cpu, mut examples) = (0.0, 0.0, 0usize);
    let dim = model.config.dim;
    // The constant schedule's rate, times `lr_decay` after each epoch.
    let mut base_lr = cfg.lr;
    for epoch in 1..=cfg.epochs {
        let sw = Stopwatch::start();
        let (mut loss_sum, mut n_steps, mut n_ex) = (0.0f64, 0usize, 0usize);
        // The rate of step `s` of `steps` in this epoch.
        let lr_at = |s: usize, steps: usize| {
            let at = (epoch - 1) as f64 + s as f64 / steps as f64;
            scheduled_lr(cfg.schedule, base_lr, cfg.warmup_epochs, cfg.epochs, at)
        };
        match cfg.loss {
            LossKind::Contrastive => {
                let mut pairs = train_pairs.clone();
                crate::corpus::sampler::shuffle(&mut pairs, cfg.seed.wrapping_add(epoch as u64));
                let steps = pairs.len().div_ceil(cfg.batch);
                for (s, chunk) in pairs.chunks(cfg.batch).enumerate() {
                    opt.set_learning_rate(lr_at(s, steps));
                    let idx: Vec<usize> = chunk
                        .iter()
                        .map(|p| p.a)
                        .chain(chunk.iter().map(|p| p.b))
                        .collect();
                    let x = batch_tensor(
                        &model,
                        &train,
                        &idx,
                        &cfg.augmentation,
                        cfg.augment.then_some(&mut aug_rng),
                    )?;
                    let e = model.forward_t(&x, true)?;
                    let b = chunk.len();
                    let d = loss::euclidean_distance(&e.narrow(0, 0, b)?, &e.narrow(0, b, b)?)?;
                    let y = Tensor::from_vec(
                        chunk.iter().map(|p| p.y).collect::<Vec<_>>(),
                        b,
                        &Device::Cpu,
                    )?;
                    let l = loss::contrastive(&d, &y, cfg.margin as f64)?;
                    opt.backward_step(&l)?;
                    let lv = l.to_scalar::<f32>()? as f64;
                    loss_sum += lv;
                    n_steps += 1;
                    n_ex += b;
                    on_event(TrainEvent::Step(StepInfo {
                        epoch,
                        step: s + 1,
                        steps,
                        loss: lv,
                    }));
                }
            }
            _ => {
                let sampler = sampler.as_ref().expect("P x K sampler");
                let batches = sampler.epoch(cfg.seed.wrapping_add(epoch as u64));
                let steps = batches.len();
                for (s, idx) in batches.iter().enumerate() {
                    opt.set_learning_rate(lr_at(s, steps));
                    let x = batch_tensor(
                        &model,
                        &train,
                        idx,
                        &cfg.augmentation,
                        cfg.augment.then_some(&mut aug_rng),
                    )?;
                    let e = model.forward_t(&x, true)?;
                    let labels: Vec<u32> = idx.iter().map(|&i| train.labels[i]).collect();
                    let batch_loss = match (&proxies, &anchors, cfg.loss.pair_loss()) {
                        (Some(p), _, _) => Some(loss::additive_angular_margin(
                            &e,
                            p.as_tensor(),
                            &labels,
                            cfg.margin as f64,
                            cfg.scale as f64,
                        )?),
                        (None, Some(p), _) => Some(super::proxy_anchor::proxy_anchor(
                            &e,
                            p.as_tensor(),
                            &labels,
                            0.1,
                            32.0,
                        )?),
                        (None, None, Some(pl)) => Some(pair_loss_step(
                            &pl,
                            &e,
                            &labels,
                            PairMining {
                                miner: cfg.miner,
                                margin: cfg.margin,
                                squared: cfg.squared,
                            },
                            memory.as_mut(),
                            cfg.seed ^ (epoch * 100_003 + s) as u64,
                        )?),
                        (None, None, None) => None,
                    };
                    if let Some(l) = batch_loss {
                        opt.backward_step(&l)?;
                        let lv = l.to_scalar::<f32>()? as f64;
                        loss_sum += lv;
                        n_ex += idx.len();
                        n_steps += 1;
                        on_event(TrainEvent::Step(StepInfo {
                            epoch,
                            step: s + 1,
                            steps,
                            loss: lv,
                        }));
                        continue;
                    }
                    let ev = e.flatten_all()?.to_vec1::<f32>()?;
                    let dist = mining::distance_matrix(&ev, idx.len(), dim, cfg.squared);
                    let trips = mining::mine_triplets(
                        &dist,
                        &labels,
                        cfg.miner,
                        cfg.margin,
                        cfg.seed ^ (epoch * 100_003 + s) as u64,
                    );
                    n_ex += idx.len();
                    n_steps += 1;
                    if trips.is_empty() {
                        on_event(TrainEvent::Step(StepInfo {
                            epoch,
                            step: s + 1,
                            steps,
                            loss: 0.0,
                        }));
                        continue;
                    }
                    let l = loss::triplet_mined(
                        &e,
                        &trips,
                        cfg.margin as f64,
                        cfg.squared,
                        cfg.avg_non_zero,
                    )?;
                    opt.backward_step(&l)?;
                    let lv = l.to_scalar::<f32>()? as f64;
                    loss_sum += lv;
                    on_event(TrainEvent::Step(StepInfo {
                        epoch,
                        step: s + 1,
                        steps,
                        loss: lv,
                    }));
                }
            }
        }
        let (ew, ec) = (sw.wall(), sw.cpu());
        wall += ew;
        cpu += ec;
        examples += n_ex;
        base_lr *= cfg.lr_decay;
        let emb = embed_set(&model, test)?;
        let dist = pair_distances(&emb, dim, &test_pairs);
        let acc = pair_accuracy(&dist, &test_pairs, model.config.threshold);
        let (best_acc, _) = best_threshold_accuracy(&dist, &test_pairs);
        let auc = match cfg.dev_score {
            Some(f) if test.n <= 2000 => Some(f(&emb, dim, &test.labels)?),
            _ => None,
        };
        let score = auc.unwrap_or(best_acc);
        if cfg.keep_best && best.as_ref().is_none_or(|b| score > b.0) {
            let snap = varmap
                .all_vars()
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<Vec<_>>>()?;
            best = Some((score, epoch, snap));
        }
        let stats = EpochStats {
            epoch,
            loss: loss_sum / n_steps.max(1) as f64,
            examples: n_ex,
            wall_seconds: ew,
            cpu_seconds: ec,
            test_pair_accuracy: acc,
            pair_threshold: model.config.threshold,
            normalized: model.config.normalized,
            test_best_accuracy: best_acc,
            test_roc_auc: auc,
        };
        on_event(TrainEvent::Epoch(stats.clone()));
        history.push(stats);
    }
    let mut chosen_epoch = cfg.epochs;
    if let Some((score, epoch, snap)) = best {
        for (v, t) in varmap.all_vars().iter().zip(&snap) {
            v.set(t)?;
        }
        chosen_epoch = epoch;
        on_event(TrainEvent::Selected { epoch, score });
    }
    model.config.training = TrainingRecord {
        corpus: corpus_name.to_string(),
        loss: match (cfg.loss, cfg.xbm) {
            (LossKind::Arcface, _) => format!("arcface (scale {})", cfg.scale),
            (l, Some(size)) => format!("{} (xbm {size})", l.name()),
            (l, None) => l.name().into(),
        },
        miner: if cfg.loss == LossKind::Triplet || cfg.loss.pair_loss().is_some() {
            cfg.miner.name().into()
        } else {
            "none".into()
        },
        margin: cfg.margin,
        epochs: cfg.epochs,
        selected_epoch: cfg.keep_best.then_some(chosen_epoch),
        batch: cfg.batch,
        lr: cfg.lr,
        lr_decay: cfg.lr_decay,
        schedule: cfg.schedule.name().into(),
        warmup_epochs: cfg.warmup_epochs,
        seed: cfg.seed,
        squared: cfg.squared,
        command: None,
        history: history
            .iter()
            .map(|h| serde_json::to_value(h).unwrap_or_default())
            .collect(),
    };
    Ok(TrainOutcome {
        model,
        history,
        wall_seconds: wall,
        cpu_seconds: cpu,
        examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--out` is written only where twindex made it (or nothing is): absent, empty, an image
    /// encoder, or a folder of `fold-N` encoders; a user's folder is refused untouched.
    #[test]
    fn check_image_out_refuses_foreign_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("enc");
        check_image_out(&out).unwrap();
        std::fs::create_dir(&out).unwrap();
        check_image_out(&out).unwrap();
        let enc = out.join("fold-0");
        std::fs::create_dir(&enc).unwrap();
        let cfg = ImageModelConfig::new(Arch::Lenet, 28, 28, 1);
        crate::fsutil::atomic_write_json(&enc.join(crate::model::image::CONFIG_FILE), &cfg)
            .unwrap();
        check_image_out(&enc).unwrap();
        check_image_out(&out).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let e = check_image_out(&out).unwrap_err().to_string();
        assert!(e.contains("refusing to write there"), "{e}");
        assert!(out.join("notes.txt").exists());
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = check_image_out(&file).unwrap_err().to_string();
        assert!(e.contains("is not a directory twindex made"), "{e}");
    }

    /// Oracle, by hand: base 0.01, 10 epochs, 2 of warm-up. Warm-up: 0.01 * p / 2, so 0.0025
    /// at p = 0.5 and 0.01 at its end (p = 2). Cosine over the 8 epochs left: at p = 6
    /// (half-way) 0.01 * (1 + cos(pi/2)) / 2 = 0.005; at p = 4, 0.01 * (1 + cos(pi/4)) / 2 =
    /// 0.01 * (1 + 0.70710678) / 2 = 0.0085355339; at p = 10 (the end) 0.01 * (1 + cos pi) / 2
    /// = 0. The constant schedule stays at 0.01 after the same warm-up.
    #[test]
    fn cosine_schedule_hits_its_landmarks() {
        let lr = |s, p| scheduled_lr(s, 0.01, 2, 10, p);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(lr(Schedule::Cosine, 0.0), 0.0));
        assert!(close(lr(Schedule::Cosine, 0.5), 0.0025));
        assert!(close(lr(Schedule::Cosine, 2.0), 0.01), "warm-up end");
        assert!(
            close(lr(Schedule::Cosine, 4.0), 0.0085355339059327),
            "quarter"
        );
        assert!(close(lr(Schedule::Cosine, 6.0), 0.005), "mid-way");
        assert!(close(lr(Schedule::Cosine, 10.0), 0.0), "end");
        assert!(close(lr(Schedule::Constant, 0.5), 0.0025));
        assert!(close(lr(Schedule::Constant, 9.75), 0.01));
        // No warm-up: the cosine starts at the base rate.
        assert!(close(scheduled_lr(Schedule::Cosine, 0.01, 0, 4, 0.0), 0.01));
        assert!(close(
            scheduled_lr(Schedule::Cosine, 0.01, 0, 4, 2.0),
            0.005
        ));
    }

    /// Oracle: try every candidate threshold (each distance, and just past the largest).
    #[test]
    fn best_threshold_accuracy_matches_brute_force() {
        let mut s = 12345u64;
        for round in 0..20 {
            let n = 5 + round * 3;
            let (mut dist, mut pairs) = (Vec::new(), Vec::new());
            for i in 0..n {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let y = (s >> 33).is_multiple_of(2);
                // Ties on purpose: distances on a coarse grid.
                let d = ((s >> 40) % 8) as f32 * 0.25 + if y { 0.0 } else { 0.5 };
                dist.push(d);
                pairs.push(Pair {
                    a: i,
                    b: i,
                    y: if y { 1.0 } else { 0.0 },
                });
            }
            let (acc, t) = best_threshold_accuracy(&dist, &pairs);
            let mut cands: Vec<f32> = dist.clone();
            cands.push(f32::MAX);
            let brute = cands
                .iter()
                .map(|&t| pair_accuracy(&dist, &pairs, t))
                .fold(0.0, f64::max);
            assert!(
                (acc - brute).abs() < 1e-12,
                "round {round}: {acc} vs {brute}"
            );
            assert!(
                (pair_accuracy(&dist, &pairs, t) - acc).abs() < 1e-12,
                "threshold {t} reproduces it"
            );
        }
    }
}
