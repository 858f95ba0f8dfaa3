//! The training loop of the sequence twin (pen trajectories), in the shape of the image loop
//! (STYLE habit 5): VarMap, AdamW, `backward_step`, an evaluation each epoch (a caller's
//! closure: the online protocol on hold-out writers), the best epoch's weights kept.
//!
//! Batches: `writers_per_batch` writers, each with `genuine_per_writer` genuine signatures and
//! `forgeries_per_writer` of its skilled forgeries. A writer's genuine signatures share a label;
//! every forgery has a label of its own, so it is never an anchor or a positive, only a
//! negative, and the hardest negatives of a writer's anchors are its own forgeries.

use super::image::LossKind;
use super::loss;
use super::mining::{self, Miner};
use super::xbm::CrossBatchMemory;
use crate::corpus::trajectory::{PenPoint, Trajectory};
use crate::error::{Error, Result};
use crate::model::sequence::{SequenceModel, SequenceModelConfig};
use crate::timing::Stopwatch;
use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One training signature.
#[derive(Debug, Clone)]
pub struct SequenceItem {
    pub trajectory: Trajectory,
    pub writer: usize,
    pub genuine: bool,
}

/// Training settings; each default is the one `twindex train sequence` uses. Also that
/// command's flags (the first line of each field's comment is its help).
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct SequenceTrainConfig {
    /// `triplet` (mined) or `contrastive` (every pair with a genuine member).
    #[arg(long, value_enum, default_value_t = LossKind::Triplet)]
    pub loss: LossKind,
    /// Triplet mining.
    #[arg(long, value_enum, default_value_t = Miner::SemiHard)]
    pub miner: Miner,
    /// Margin of the loss (embeddings have unit length, distances lie in 0..2).
    #[arg(long, default_value_t = 0.2)]
    pub margin: f32,
    /// Triplet loss on squared distances.
    #[arg(long)]
    pub squared: bool,
    /// Passes over the training writers.
    #[arg(long, default_value_t = 40)]
    pub epochs: usize,
    /// Writers per batch (P).
    #[arg(long, default_value_t = 8)]
    pub writers_per_batch: usize,
    /// Genuine signatures per writer in a batch (K).
    #[arg(long, default_value_t = 6)]
    pub genuine_per_writer: usize,
    /// Skilled forgeries per writer in a batch.
    #[arg(long, default_value_t = 4)]
    pub forgeries_per_writer: usize,
    /// Batches per epoch (0: cover the genuine signatures once).
    #[arg(long, default_value_t = 0)]
    pub steps_per_epoch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Seed of the weights, batches and augmentation.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `--no-augment`: no random affine distortion of the training trajectories (by default
    /// each trajectory of each batch gets one).
    #[arg(long = "no-augment", action = clap::ArgAction::SetFalse)]
    pub augment: bool,
    /// Largest rotation, degrees. Default 5.
    #[arg(skip = 5.0)]
    pub aug_rotate: f64,
    /// Largest relative change of width and height. Default 0.1.
    #[arg(skip = 0.1)]
    pub aug_scale: f64,
    /// Largest shear (x += shear * y). Default 0.1.
    #[arg(skip = 0.1)]
    pub aug_shear: f64,
    /// Largest random change of the writing speed (time-warp augmentation; 0: none): 0.3
    /// varies the local speed between 0.7 and 1.3 of the original.
    #[arg(long, default_value_t = 0.3)]
    pub aug_time_warp: f64,
    /// Train on 8 pseudo-writers per writer (mirrored in x, y, written backwards; each
    /// combination a writer of its own, its forgeries mirrored alike). More writers to tell
    /// apart, fewer to over-fit.
    #[arg(long)]
    pub pseudo_writers: bool,
    /// A cross-batch memory of this many embeddings for a pair loss (PML's
    /// `CrossBatchMemory`, with every pair or --miner multi-similarity): each batch is compared
    /// with the last SIZE embeddings, not only with itself.
    #[arg(long, value_name = "SIZE")]
    #[serde(default)]
    pub xbm: Option<usize>,
}

impl Default for SequenceTrainConfig {
    fn default() -> Self {
        SequenceTrainConfig {
            loss: LossKind::Triplet,
            miner: Miner::SemiHard,
            margin: 0.2,
            squared: false,
            epochs: 40,
            writers_per_batch: 8,
            genuine_per_writer: 6,
            forgeries_per_writer: 4,
            steps_per_epoch: 0,
            lr: 1e-3,
            seed: 1,
            augment: true,
            aug_rotate: 5.0,
            aug_scale: 0.1,
            aug_shear: 0.1,
            aug_time_warp: 0.3,
            pseudo_writers: false,
            xbm: None,
        }
    }
}

/// Figures of one epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SequenceEpoch {
    pub epoch: usize,
    pub loss: f64,
    pub steps: usize,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    /// The caller's evaluation (higher is better), e.g. 1 - EER on hold-out writers.
    pub score: f64,
}

/// The outcome: the model with the best epoch's weights.
pub struct SequenceTrainOutcome {
    pub model: SequenceModel,
    pub history: Vec<SequenceEpoch>,
    pub selected_epoch: usize,
    /// The evaluation of the initial (untrained) weights: the floor training must beat.
    pub untrained_score: f64,
    /// Training time only (evaluation excluded).
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
}

/// `traj` moved by a random rotation, scaling and shear.
pub fn distort(traj: &Trajectory, cfg: &SequenceTrainConfig, rng: &mut ChaCha8Rng) -> Trajectory {
    let a = rng
        .random_range(-cfg.aug_rotate..=cfg.aug_rotate)
        .to_radians();
    let sx = 1.0 + rng.random_range(-cfg.aug_scale..=cfg.aug_scale);
    let sy = 1.0 + rng.random_range(-cfg.aug_scale..=cfg.aug_scale);
    let sh = rng.random_range(-cfg.aug_shear..=cfg.aug_shear);
    let (s, c) = a.sin_cos();
    let warped = time_warp(traj, cfg.aug_time_warp, rng);
    Trajectory {
        path: traj.path.clone(),
        points: warped
            .iter()
            .map(|p| {
                let x = (p.x + sh * p.y) * sx;
                let y = p.y * sy;
                PenPoint {
                    x: c * x - s * y,
                    y: s * x + c * y,
                    ..*p
                }
            })
            .collect(),
    }
}

/// Mirror image `v` (0..8) of `traj`: bit 0 flips x, bit 1 flips y, bit 2 reverses the
/// writing order. 0 is `traj` itself.
pub fn mirror(traj: &Trajectory, v: usize) -> Trajectory {
    let mut points = traj.points.clone();
    if v & 4 != 0 {
        points.reverse();
        let (t0, t1) = (points.last().map_or(0.0, |p| p.t), points[0].t);
        for p in &mut points {
            p.t = t0 + t1 - p.t;
        }
    }
    for p in &mut points {
        if v & 1 != 0 {
            p.x = -p.x;
        }
        if v & 2 != 0 {
            p.y = -p.y;
        }
    }
    Trajectory {
        path: traj.path.clone(),
        points,
    }
}

/// The points of `traj` re-sampled along a random monotonic time warp: 4 pieces of random
/// speed in `1 +- w`, the sample count kept; positions interpolated, pen state and time taken
/// from the nearer sample.
fn time_warp(traj: &Trajectory, w: f64, rng: &mut ChaCha8Rng) -> Vec<PenPoint> {
    let n = traj.points.len();
    if w <= 0.0 || n < 3 {
        return traj.points.clone();
    }
    const PIECES: usize = 4;
    let speeds: Vec<f64> = (0..PIECES)
        .map(|_| 1.0 + rng.random_range(-w..=w))
        .collect();
    // Warp g: [0, 1] -> [0, 1], piecewise linear with slopes proportional to `speeds`.
    let total: f64 = speeds.iter().sum();
    let mut knots = vec![0.0];
    for s in &speeds {
        knots.push(knots.last().unwrap() + s / total);
    }
    let g = |u: f64| {
        let p = ((u * PIECES as f64).floor() as usize).min(PIECES - 1);
        let f = u * PIECES as f64 - p as f64;
        knots[p] + f * (knots[p + 1] - knots[p])
    };
    (0..n)
        .map(|i| {
            let u = g(i as f64 / (n - 1) as f64) * (n - 1) as f64;
            let j = (u.floor() as usize).min(n - 2);
            let f = u - j as f64;
            let (a, b) = (&traj.points[j], &traj.points[j + 1]);
            let near = if f < 0.5 { a } else { b };
            PenPoint {
                x: a.x + f * (b.x - a.x),
                y: a.y + f * (b.y - a.y),
                t: traj.points[i].t,
                down: near.down,
            }
        })
        .collect()
}

fn validate(cfg: &SequenceTrainConfig) -> Result<()> {
    if cfg.epochs == 0
        || cfg.writers_per_batch < 2
        || cfg.genuine_per_writer < 2
        || cfg.lr.is_nan()
        || cfg.lr <= 0.0
        || cfg.margin.is_nan()
        || cfg.margin <= 0.0
        || matches!(cfg.loss, LossKind::Arcface | LossKind::ProxyAnchor)
        || (cfg.loss == LossKind::Contrastive && cfg.miner == crate::train::Miner::MultiSimilarity)
    {
        return Err(Error::InvalidArgument(format!(
            "sequence training needs epochs >= 1, at least 2 writers and 2 genuine signatures per batch, positive lr and margin, and the triplet, contrastive or a pair loss (multi-similarity mining: not with contrastive) (got epochs {}, {} writers x {} genuine, lr {}, margin {}, loss {:?})",
            cfg.epochs, cfg.writers_per_batch, cfg.genuine_per_writer, cfg.lr, cfg.margin, cfg.loss
        )));
    }
    crate::train::image::check_pair_setup(
        cfg.loss.name(),
        cfg.loss.pair_loss().is_some(),
        cfg.loss == LossKind::Triplet,
        cfg.miner,
        cfg.xbm,
        cfg.writers_per_batch * (cfg.genuine_per_writer + cfg.forgeries_per_writer),
    )
}

/// Train a sequence twin described by `mcfg` on `items`; after each epoch `evaluate` scores
/// the model (higher is better) and the best epoch's weights are kept.
pub fn train_sequence(
    items: &[SequenceItem],
    cfg: &SequenceTrainConfig,
    mcfg: SequenceModelConfig,
    on_epoch: &mut dyn FnMut(&SequenceEpoch),
    evaluate: &mut dyn FnMut(&SequenceModel, usize) -> Result<f64>,
) -> Result<SequenceTrainOutcome> {
    validate(cfg)?;
    let mut writers: Vec<usize> = items.iter().map(|i| i.writer).collect();
    writers.sort_unstable();
    writers.dedup();
    let genuine_of = |w: usize, g: bool| -> Vec<usize> {
        (0..items.len())
            .filter(|&i| items[i].writer == w && items[i].genuine == g)
            .collect()
    };
    let by_writer: Vec<(Vec<usize>, Vec<usize>)> = writers
        .iter()
        .map(|&w| (genuine_of(w, true), genuine_of(w, false)))
        .collect();
    let usable = by_writer.iter().filter(|(g, _)| g.len() >= 2).count();
    if usable < 2 {
        return Err(Error::InvalidArgument(format!(
            "sequence training needs at least 2 writers with 2 genuine signatures, got {usable}"
        )));
    }
    let p = cfg.writers_per_batch.min(usable);
    let n_genuine: usize = by_writer.iter().map(|(g, _)| g.len()).sum();
    let steps = if cfg.steps_per_epoch > 0 {
        cfg.steps_per_epoch
    } else {
        n_genuine.div_ceil(p * cfg.genuine_per_writer).max(1)
    };
    let mut model = SequenceModel::new_trainable(mcfg, cfg.seed)?;
    let varmap = model.varmap.clone().expect("trainable");
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5E0_7E11);
    let pre = model.config.preprocess.clone();
    let mut history = Vec::new();
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    let untrained_score = evaluate(&model, 0)?;
    let (mut wall, mut cpu) = (0.0, 0.0);
    let mining = crate::train::image::PairMining {
        miner: cfg.miner,
        margin: cfg.margin,
        squared: cfg.squared,
    };
    // One cross-batch memory per ensemble member, made at the first step.
    let mut memories: Vec<CrossBatchMemory> = Vec::new();
    for epoch in 1..=cfg.epochs {
        let sw = Stopwatch::start();
        let mut loss_sum = 0.0;
        for _ in 0..steps {
            // P writers with at least 2 genuine signatures, K genuine and F forgeries each.
            // (writer, variant) pairs: with pseudo-writers, each of the 8 mirror images of
            // a writer (x, y flipped, time reversed) is a writer of its own.
            let variants = if cfg.pseudo_writers { 8 } else { 1 };
            let mut order: Vec<(usize, usize)> = (0..by_writer.len())
                .filter(|&w| by_writer[w].0.len() >= 2)
                .flat_map(|w| (0..variants).map(move |v| (w, v)))
                .collect();
            crate::corpus::sampler::shuffle(&mut order, rng.random());
            let (mut idx, mut labels) = (Vec::new(), Vec::new());
            for &(w, v) in &order[..p] {
                let (g, f) = &by_writer[w];
                let mut g = g.clone();
                crate::corpus::sampler::shuffle(&mut g, rng.random());
                for &i in g.iter().take(cfg.genuine_per_writer) {
                    idx.push((i, v));
                    labels.push((w * variants + v) as u32);
                }
                let mut f = f.clone();
                crate::corpus::sampler::shuffle(&mut f, rng.random());
                for &i in f.iter().take(cfg.forgeries_per_writer) {
                    idx.push((i, v));
                    labels.push(1_000_000 + (i * variants + v) as u32);
                }
            }
            let mut seqs = Vec::with_capacity(idx.len());
            for &(i, v) in &idx {
                let mirrored = mirror(&items[i].trajectory, v);
                let t = &mirrored;
                let f = if cfg.augment {
                    pre.apply(&distort(t, cfg, &mut rng))?
                } else {
                    pre.apply(t)?
                };
                seqs.push(f);
            }
            let refs: Vec<&[f32]> = seqs.iter().map(Vec::as_slice).collect();
            let members = model.encoder.forward_members(&model.input_tensor(&refs)?)?;
            let mut total: Option<Tensor> = None;
            if let Some(size) = cfg.xbm.filter(|_| memories.is_empty()) {
                for e in &members {
                    memories.push(CrossBatchMemory::new(size, e.dim(1)?)?);
                }
            }
            for (mi, e) in members.iter().enumerate() {
                let l = match cfg.loss {
                    LossKind::Triplet => {
                        let n = idx.len();
                        let flat = e.flatten_all()?.to_vec1::<f32>()?;
                        let dm = mining::distance_matrix(&flat, n, e.dim(1)?, cfg.squared);
                        let trip = mining::mine_triplets(
                            &dm,
                            &labels,
                            cfg.miner,
                            cfg.margin,
                            rng.random(),
                        );
                        if trip.is_empty() {
                            continue;
                        }
                        loss::triplet_mined(e, &trip, cfg.margin as f64, cfg.squared, false)?
                    }
                    l if l.pair_loss().is_some() => {
                        let pl = l.pair_loss().expect("a pair loss");
                        crate::train::image::pair_loss_step(
                            &pl,
                            e,
                            &labels,
                            mining,
                            memories.get_mut(mi),
                            rng.random(),
                        )?
                    }
                    _ => {
                        let (mut a, mut b, mut y) = (Vec::new(), Vec::new(), Vec::new());
                        for i in 0..idx.len() {
                            for j in i + 1..idx.len() {
                                if labels[i] < 1_000_000 || labels[j] < 1_000_000 {
                                    a.push(i as u32);
                                    b.push(j as u32);
                                    y.push(f32::from(u8::from(labels[i] == labels[j])));
                                }
                            }
                        }
                        let n = a.len();
                        let ta = e.index_select(&Tensor::from_vec(a, n, &Device::Cpu)?, 0)?;
                        let tb = e.index_select(&Tensor::from_vec(b, n, &Device::Cpu)?, 0)?;
                        let d = loss::euclidean_distance(&ta, &tb)?;
                        loss::contrastive(
                            &d,
                            &Tensor::from_vec(y, n, &Device::Cpu)?,
                            cfg.margin as f64,
                        )?
                    }
                };
                total = Some(match total {
                    None => l,
                    Some(t) => (t + l)?,
                });
            }
            let Some(l) = total else { continue };
            opt.backward_step(&l)?;
            loss_sum += l.to_scalar::<f32>()? as f64 / members.len() as f64;
        }
        let (ew, ec) = (sw.wall(), sw.cpu());
        wall += ew;
        cpu += ec;
        let score = evaluate(&model, epoch)?;
        if best.as_ref().is_none_or(|b| score > b.0) {
            let snap = varmap
                .all_vars()
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<Vec<_>>>()?;
            best = Some((score, epoch, snap));
        }
        let ep = SequenceEpoch {
            epoch,
            loss: loss_sum / steps as f64,
            steps,
            wall_seconds: ew,
            cpu_seconds: ec,
            score,
        };
        on_epoch(&ep);
        history.push(ep);
    }
    let (_, selected_epoch, snap) = best.expect("at least one epoch");
    for (v, t) in varmap.all_vars().iter().zip(&snap) {
        v.set(t)?;
    }
    model.config.training = serde_json::json!({
        "config": cfg,
        "selected_epoch": selected_epoch,
        "untrained_score": untrained_score,
        "history": history,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
    });
    Ok(SequenceTrainOutcome {
        model,
        history,
        selected_epoch,
        untrained_score,
        wall_seconds: wall,
        cpu_seconds: cpu,
    })
}
