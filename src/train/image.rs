//! The training loop for image encoders (STYLE habit 5): seed pairs + contrastive loss, or
//! P x K batches + triplet loss with online mining; Adam; evaluation each epoch.

use super::loss;
use super::mining::{self, Miner};
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
}

/// How to train an image encoder. Defaults are the seed protocol.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageTrainConfig {
    /// Network. Default `lenet`.
    pub arch: Arch,
    /// Default `contrastive`.
    pub loss: LossKind,
    /// Triplet mining (triplet loss only). Default `batch-hard`.
    pub miner: Miner,
    /// Margin `m`. Default 1.0. Larger: more separation asked for, harder to satisfy.
    pub margin: f32,
    /// Triplet loss on squared distances (FaceNet) instead of plain ones. Default false.
    pub squared: bool,
    /// Passes over the training data. Default 20.
    pub epochs: usize,
    /// Pairs per batch (contrastive) or items per batch (triplet). Default 128.
    pub batch: usize,
    /// Items per class in a P x K batch (triplet loss). Default 8.
    pub k_per_class: usize,
    /// Adam learning rate. Default 1e-3.
    pub lr: f64,
    /// Seeds the weights, the pairs and the batch order. Default 1.
    pub seed: u64,
    /// Random shifts of up to 2 pixels while training. Default false (the seed has none).
    pub augment: bool,
    /// Use only the first N training items (tests, quick runs). Default: all.
    pub max_train: Option<usize>,
    /// Multiply the learning rate by this after each epoch. Default 1.0 (constant).
    pub lr_decay: f64,
}

impl Default for ImageTrainConfig {
    fn default() -> Self {
        ImageTrainConfig {
            arch: Arch::Lenet,
            loss: LossKind::Contrastive,
            miner: Miner::BatchHard,
            margin: 1.0,
            squared: false,
            epochs: 20,
            batch: 128,
            k_per_class: 8,
            lr: 1e-3,
            seed: 1,
            augment: false,
            max_train: None,
            lr_decay: 1.0,
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
    /// Test pair accuracy at the default distance threshold (0.5), on the seed's test pairs.
    pub test_pair_accuracy: f64,
    /// Test pair accuracy at the best distance threshold for these test pairs (an upper bound
    /// that is fair to compare across losses whose distance scales differ).
    pub test_best_accuracy: f64,
}

/// What the training loop reports as it goes.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// A batch was trained on.
    Step(StepInfo),
    /// An epoch ended and was evaluated.
    Epoch(EpochStats),
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

/// Fill `out` with image `i` of `set` scaled to `[0,1]`, optionally shifted by (dy, dx).
fn put_image(set: &ImageSet, i: usize, shift: (i32, i32), out: &mut [f32]) {
    let (h, w) = (set.rows as i32, set.cols as i32);
    let img = set.image(i);
    if shift == (0, 0) {
        for (o, &p) in out.iter_mut().zip(img) {
            *o = p as f32 / 255.0;
        }
        return;
    }
    for y in 0..h {
        for x in 0..w {
            let (sy, sx) = (y - shift.0, x - shift.1);
            out[(y * w + x) as usize] = if sy >= 0 && sy < h && sx >= 0 && sx < w {
                img[(sy * w + sx) as usize] as f32 / 255.0
            } else {
                0.0
            };
        }
    }
}

/// Build an NHWC batch tensor from item indices.
fn batch_tensor(set: &ImageSet, idx: &[usize], rng: Option<&mut ChaCha8Rng>) -> Result<Tensor> {
    let per = set.rows * set.cols;
    let mut v = vec![0f32; idx.len() * per];
    match rng {
        Some(rng) => {
            for (k, &i) in idx.iter().enumerate() {
                let s = (rng.random_range(-2..=2), rng.random_range(-2..=2));
                put_image(set, i, s, &mut v[k * per..(k + 1) * per]);
            }
        }
        None => {
            for (k, &i) in idx.iter().enumerate() {
                put_image(set, i, (0, 0), &mut v[k * per..(k + 1) * per]);
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

/// The best accuracy over all thresholds of "similar iff distance < t", and that `t` (the
/// midpoint between consecutive sorted distances).
pub fn best_threshold_accuracy(dist: &[f32], pairs: &[Pair]) -> (f64, f32) {
    let mut v: Vec<(f32, bool)> = dist
        .iter()
        .zip(pairs)
        .map(|(&d, p)| (d, p.y == 1.0))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_neg = v.iter().filter(|x| !x.1).count();
    // threshold below everything: all predicted dissimilar
    let (mut correct, mut best, mut best_t) = (n_neg, n_neg, v.first().map_or(0.0, |x| x.0 - 1e-6));
    for i in 0..v.len() {
        correct = if v[i].1 { correct + 1 } else { correct - 1 };
        let distinct = i + 1 == v.len() || v[i + 1].0 > v[i].0;
        if distinct && correct > best {
            best = correct;
            best_t = if i + 1 < v.len() {
                0.5 * (v[i].0 + v[i + 1].0)
            } else {
                v[i].0 + 1e-6
            };
        }
    }
    (best as f64 / v.len().max(1) as f64, best_t)
}

/// Share of pairs classified right with "similar iff distance < threshold".
pub fn pair_accuracy(dist: &[f32], pairs: &[Pair], threshold: f32) -> f64 {
    let ok = dist
        .iter()
        .zip(pairs)
        .filter(|(&d, p)| (d < threshold) == (p.y == 1.0))
        .count();
    ok as f64 / pairs.len().max(1) as f64
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

/// Train an image encoder on `data.train`, evaluating on `data.test` each epoch.
pub fn train_image(
    data: &TrainTest,
    cfg: &ImageTrainConfig,
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
    let train = match cfg.max_train {
        Some(n) => take(&data.train, n),
        None => data.train.clone(),
    };
    let test = &data.test;
    let mut mcfg = ImageModelConfig::new(cfg.arch, train.rows, train.cols, 1);
    mcfg.class_names = (0..train.n_classes()).map(|c| c.to_string()).collect();
    let mut model = ImageModel::new_trainable(mcfg, cfg.seed)?;
    let varmap = model.varmap.clone().expect("trainable");
    let mut opt = AdamW::new(
        varmap.all_vars(),
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
        LossKind::Triplet => Vec::new(),
    };
    let sampler = match cfg.loss {
        LossKind::Triplet => {
            let n_classes = crate::corpus::sampler::class_indices(&train.labels)
                .iter()
                .filter(|c| c.len() >= 2)
                .count();
            let p = (cfg.batch / cfg.k_per_class.max(2)).clamp(2, n_classes.max(2));
            let k = (cfg.batch / p).max(2);
            Some(PkSampler::new(&train.labels, p, k)?)
        }
        LossKind::Contrastive => None,
    };
    let mut aug_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xA5A5);
    let mut history = Vec::new();
    let (mut wall, mut cpu, mut examples) = (0.0, 0.0, 0usize);
    let dim = model.config.dim;
    for epoch in 1..=cfg.epochs {
        let sw = Stopwatch::start();
        let (mut loss_sum, mut n_steps, mut n_ex) = (0.0f64, 0usize, 0usize);
        match cfg.loss {
            LossKind::Contrastive => {
                let mut pairs = train_pairs.clone();
                crate::corpus::sampler::shuffle(&mut pairs, cfg.seed.wrapping_add(epoch as u64));
                let steps = pairs.len().div_ceil(cfg.batch);
                for (s, chunk) in pairs.chunks(cfg.batch).enumerate() {
                    let idx: Vec<usize> = chunk
                        .iter()
                        .map(|p| p.a)
                        .chain(chunk.iter().map(|p| p.b))
                        .collect();
                    let x = batch_tensor(&train, &idx, cfg.augment.then_some(&mut aug_rng))?;
                    let e = model.forward(&x)?;
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
            LossKind::Triplet => {
                let sampler = sampler.as_ref().expect("triplet sampler");
                let batches = sampler.epoch(cfg.seed.wrapping_add(epoch as u64));
                let steps = batches.len();
                for (s, idx) in batches.iter().enumerate() {
                    let x = batch_tensor(&train, idx, cfg.augment.then_some(&mut aug_rng))?;
                    let e = model.forward(&x)?;
                    let ev = e.flatten_all()?.to_vec1::<f32>()?;
                    let labels: Vec<u32> = idx.iter().map(|&i| train.labels[i]).collect();
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
                    let l = loss::triplet_mined(&e, &trips, cfg.margin as f64, cfg.squared)?;
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
        opt.set_learning_rate(opt.learning_rate() * cfg.lr_decay);
        let emb = embed_set(&model, test)?;
        let dist = pair_distances(&emb, dim, &test_pairs);
        let acc = pair_accuracy(&dist, &test_pairs, model.config.threshold);
        let (best_acc, _) = best_threshold_accuracy(&dist, &test_pairs);
        let stats = EpochStats {
            epoch,
            loss: loss_sum / n_steps.max(1) as f64,
            examples: n_ex,
            wall_seconds: ew,
            cpu_seconds: ec,
            test_pair_accuracy: acc,
            test_best_accuracy: best_acc,
        };
        on_event(TrainEvent::Epoch(stats.clone()));
        history.push(stats);
    }
    model.config.training = TrainingRecord {
        corpus: corpus_name.to_string(),
        loss: match cfg.loss {
            LossKind::Contrastive => "contrastive".into(),
            LossKind::Triplet => "triplet".into(),
        },
        miner: if cfg.loss == LossKind::Triplet {
            cfg.miner.name().into()
        } else {
            "none".into()
        },
        margin: cfg.margin,
        epochs: cfg.epochs,
        batch: cfg.batch,
        lr: cfg.lr,
        seed: cfg.seed,
        squared: cfg.squared,
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
