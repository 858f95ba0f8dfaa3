//! Training ensembles of image encoders: K twins on different triplets (their own seeds, their
//! own bootstrap samples, or one learner per cluster of similar classes), trained side by side
//! on up to `parallel` threads. The caller calibrates the members and assembles them with
//! [`ImageModel::ensemble_of`] (calibration lives in `eval`, which training does not import).

use super::image::{train_image_from, ImageTrainConfig, TrainEvent, TrainOutcome};
use crate::corpus::{ImageSet, TrainTest};
use crate::error::{Error, Result};
use crate::model::{EnsembleBy, ImageModel, ImageModelConfig};
use crate::timing::Stopwatch;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// How to train an ensemble (beside the [`ImageTrainConfig`] every member is trained with).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnsembleTrainConfig {
    /// Number of members K (>= 1). Default 3. Larger: steadier embeddings, K times the
    /// training and embedding cost and K times the dimension.
    pub members: usize,
    /// How the members differ. Default `seed`.
    pub by: EnsembleBy,
    /// Members trained at the same time, each on its own thread (their tensor operations share
    /// the process's thread pool). Default 1. More: faster on idle cores, more memory; the
    /// result does not depend on it.
    pub parallel: usize,
}

impl EnsembleTrainConfig {
    /// The ensemble settings of `--ensemble K --ensemble-by B`: `None` for a single encoder
    /// (K = 1), else K members differing by `by` (default seed), as many trained at a time as
    /// the thread pool has threads (at most K). K = 0, and `by` with K = 1, are refused.
    pub fn for_members(k: usize, by: Option<EnsembleBy>) -> Result<Option<Self>> {
        if k == 0 {
            return Err(Error::Msg(
                "--ensemble 0: expected the number of members, at least 1 (1 = a single encoder)"
                    .into(),
            ));
        }
        if k == 1 {
            if let Some(b) = by {
                return Err(Error::Msg(format!(
                    "--ensemble-by {} needs --ensemble K with K >= 2 members",
                    b.name()
                )));
            }
            return Ok(None);
        }
        Ok(Some(EnsembleTrainConfig {
            members: k,
            by: by.unwrap_or(EnsembleBy::Seed),
            parallel: rayon::current_num_threads().min(k),
        }))
    }
}

impl Default for EnsembleTrainConfig {
    fn default() -> Self {
        EnsembleTrainConfig {
            members: 3,
            by: EnsembleBy::Seed,
            parallel: 1,
        }
    }
}

/// What training an ensemble produced: the members (not yet calibrated, not yet assembled).
pub struct EnsembleOutcome {
    /// The trained members, in order.
    pub members: Vec<TrainOutcome>,
    /// The seed each member was trained with.
    pub seeds: Vec<u64>,
    /// The training classes (label ids) each member saw: all of them except for the `cluster`
    /// learners (members 1..K).
    pub classes: Vec<Vec<u32>>,
    /// Wall time of the whole run.
    pub wall_seconds: f64,
    /// Process CPU time of the whole run: every member's training and per-epoch dev
    /// evaluation, the first encoder and the clustering (members trained in parallel overlap,
    /// so their own `cpu_seconds` are not summed).
    pub cpu_seconds: f64,
}

/// Member `i`'s seed: the base seed plus `i`, so member 0 of a `seed` or `cluster` ensemble
/// is the single encoder that `--seed` alone would train.
pub fn member_seed(base: u64, i: usize) -> u64 {
    base.wrapping_add(i as u64)
}

/// A bootstrap sample of `set`: each class's images drawn with replacement, as many as the
/// class has (so every class keeps its size and about 63% of its distinct images).
pub fn bootstrap(set: &ImageSet, seed: u64) -> ImageSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xBA66_1E5E);
    let mut idx = Vec::with_capacity(set.n);
    for members in crate::corpus::sampler::class_indices(&set.labels) {
        for _ in 0..members.len() {
            idx.push(members[rng.random_range(0..members.len())]);
        }
    }
    set.subset(&idx)
}

/// k-means (k-means++ seeding, Lloyd iterations) of `n` points of dimension `dim`: the cluster
/// of each point. Every cluster is then given at least `min_size` points (when `n` allows) by
/// moving to it the points nearest its centre from clusters that can spare them.
pub fn kmeans(points: &[f32], dim: usize, k: usize, min_size: usize, seed: u64) -> Vec<usize> {
    let n = points.len().checked_div(dim).unwrap_or(0);
    if n == 0 || k == 0 {
        return vec![0; n];
    }
    let k = k.min(n);
    let p = |i: usize| &points[i * dim..(i + 1) * dim];
    let d2 =
        |a: &[f32], b: &[f32]| -> f32 { a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum() };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6B3E_A115);
    let mut centres: Vec<Vec<f32>> = vec![p(rng.random_range(0..n)).to_vec()];
    while centres.len() < k {
        let w: Vec<f32> = (0..n)
            .map(|i| centres.iter().map(|c| d2(p(i), c)).fold(f32::MAX, f32::min))
            .collect();
        let total: f32 = w.iter().sum();
        let pick = if total > 0.0 {
            let mut t = rng.random_range(0.0..total);
            w.iter()
                .position(|&x| {
                    t -= x;
                    t < 0.0
                })
                .unwrap_or(n - 1)
        } else {
            rng.random_range(0..n)
        };
        centres.push(p(pick).to_vec());
    }
    let mut assign = vec![0usize; n];
    for _ in 0..100 {
        let mut changed = false;
        for (i, a) in assign.iter_mut().enumerate() {
            let best = (0..k)
                .min_by(|&x, &y| d2(p(i), &centres[x]).total_cmp(&d2(p(i), &centres[y])))
                .unwrap_or(0);
            if best != *a {
                *a = best;
                changed = true;
            }
        }
        for (c, centre) in centres.iter_mut().enumerate() {
            let mine: Vec<usize> = (0..n).filter(|&i| assign[i] == c).collect();
            if mine.is_empty() {
                continue;
            }
            centre.iter_mut().for_each(|v| *v = 0.0);
            for &i in &mine {
                centre.iter_mut().zip(p(i)).for_each(|(v, x)| *v += x);
            }
            centre.iter_mut().for_each(|v| *v /= mine.len() as f32);
        }
        if !changed {
            break;
        }
    }
    if min_size * k <= n {
        loop {
            let sizes: Vec<usize> = (0..k)
                .map(|c| assign.iter().filter(|&&a| a == c).count())
                .collect();
            let Some(small) = (0..k).find(|&c| sizes[c] < min_size) else {
                break;
            };
            // The point nearest the small cluster's centre among clusters above the minimum.
            let Some(i) = (0..n)
                .filter(|&i| sizes[assign[i]] > min_size)
                .min_by(|&x, &y| d2(p(x), &centres[small]).total_cmp(&d2(p(y), &centres[small])))
            else {
                break;
            };
            assign[i] = small;
        }
    }
    assign
}

/// Train the members of an ensemble of encoders described by `mcfg` (preprocessing, input
/// size, class names; `mcfg.arch` is replaced by `cfg.arch`) on `data.train`, each evaluated
/// (and, with `cfg.keep_best`, selected) on `data.test` every epoch as a single encoder is.
/// `on_event(member, event)` reports progress. With `cluster`, member 0 is the first encoder
/// (all the data, the base seed), trained before the others, and members 1..K are the learners
/// of K-1 clusters of its training classes.
pub fn train_ensemble(
    data: &TrainTest,
    cfg: &ImageTrainConfig,
    ens: &EnsembleTrainConfig,
    mut mcfg: ImageModelConfig,
    corpus_name: &str,
    on_event: &(dyn Fn(usize, TrainEvent) + Sync),
) -> Result<EnsembleOutcome> {
    if ens.members == 0 {
        return Err(Error::InvalidArgument(
            "an ensemble needs at least 1 member (got 0)".into(),
        ));
    }
    let sw = Stopwatch::start();
    mcfg.arch = cfg.arch;
    mcfg.dim = cfg.arch.dim();
    mcfg.normalized = cfg.arch.normalized();
    let all: Vec<u32> = {
        let mut v = data.train.labels.clone();
        v.sort_unstable();
        v.dedup();
        v
    };
    // The first encoder and the clusters of its training classes (`cluster` only).
    let (first, groups) = if ens.by == EnsembleBy::Cluster && ens.members > 1 {
        let learners = ens.members - 1;
        if all.len() < 2 * learners {
            return Err(Error::InvalidArgument(format!(
                "--ensemble-by cluster needs at least 2 training classes per cluster learner: {} classes for {learners} learners (K-1)",
                all.len(),
            )));
        }
        let model = ImageModel::new_trainable(mcfg.clone(), cfg.seed)?;
        let first = train_image_from(data, cfg, model, corpus_name, &mut |ev| on_event(0, ev))?;
        let emb = super::image::embed_set(&first.model, &data.train)?;
        let dim = first.model.config.dim;
        // Each class's mean embedding: classes, not images, are clustered, so that a learner
        // sees whole classes and its batches hold the negatives nearest each other.
        let mut centres = vec![0f32; all.len() * dim];
        let mut counts = vec![0usize; all.len()];
        for (i, l) in data.train.labels.iter().enumerate() {
            let c = all.binary_search(l).expect("label listed");
            counts[c] += 1;
            for (v, x) in centres[c * dim..(c + 1) * dim]
                .iter_mut()
                .zip(&emb[i * dim..(i + 1) * dim])
            {
                *v += x;
            }
        }
        for (c, n) in counts.iter().enumerate() {
            centres[c * dim..(c + 1) * dim]
                .iter_mut()
                .for_each(|v| *v /= *n as f32);
        }
        let assign = kmeans(&centres, dim, learners, 2, cfg.seed);
        let groups: Vec<Vec<u32>> = std::iter::once(all.clone())
            .chain((0..learners).map(|g| {
                all.iter()
                    .zip(&assign)
                    .filter(|(_, &a)| a == g)
                    .map(|(&l, _)| l)
                    .collect()
            }))
            .collect();
        (Some(first), groups)
    } else {
        (None, vec![all.clone(); ens.members])
    };
    let seeds: Vec<u64> = (0..ens.members).map(|i| member_seed(cfg.seed, i)).collect();
    let train_member = |i: usize| -> Result<TrainOutcome> {
        let mut c = cfg.clone();
        c.seed = seeds[i];
        let train = match ens.by {
            EnsembleBy::Seed => data.train.clone(),
            EnsembleBy::Bagging => bootstrap(&data.train, seeds[i]),
            EnsembleBy::Cluster => {
                let idx: Vec<usize> = (0..data.train.n)
                    .filter(|&j| groups[i].binary_search(&data.train.labels[j]).is_ok())
                    .collect();
                data.train.subset(&idx)
            }
        };
        let d = TrainTest {
            train,
            test: data.test.clone(),
        };
        let model = match &first {
            Some(f) => {
                let m = ImageModel::new_trainable(f.model.config.clone(), seeds[i])?;
                copy_weights(&f.model, &m)?;
                m
            }
            None => ImageModel::new_trainable(mcfg.clone(), seeds[i])?,
        };
        train_image_from(&d, &c, model, corpus_name, &mut |ev| on_event(i, ev))
    };
    let results: Mutex<Vec<Option<Result<TrainOutcome>>>> =
        Mutex::new((0..ens.members).map(|_| None).collect());
    // With `cluster`, member 0 (the first encoder) is trained already.
    let start = usize::from(first.is_some());
    let next = AtomicUsize::new(start);
    let workers = ens.parallel.clamp(1, (ens.members - start).max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= ens.members {
                    break;
                }
                let r = train_member(i);
                let failed = r.is_err();
                results.lock().expect("results")[i] = Some(r);
                if failed {
                    // Let the other workers stop after their current member.
                    next.store(ens.members, Ordering::SeqCst);
                }
            });
        }
    });
    let mut members = Vec::with_capacity(ens.members);
    members.extend(first);
    for (i, r) in results
        .into_inner()
        .expect("results")
        .into_iter()
        .enumerate()
    {
        match r {
            Some(Ok(o)) => members.push(o),
            Some(Err(e)) => return Err(e),
            None if i < start => {}
            None => {
                return Err(Error::Msg(format!(
                    "ensemble member {i} was not trained (another member failed)"
                )))
            }
        }
    }
    Ok(EnsembleOutcome {
        members,
        seeds,
        classes: groups,
        wall_seconds: sw.wall(),
        cpu_seconds: sw.cpu(),
    })
}

/// Set `to`'s trainable weights to `from`'s (same network), by name.
fn copy_weights(from: &ImageModel, to: &ImageModel) -> Result<()> {
    let (Some(a), Some(b)) = (&from.varmap, &to.varmap) else {
        return Err(Error::InvalidArgument(
            "copying weights needs two trainable models".into(),
        ));
    };
    let src = a.data().lock().expect("varmap");
    for (name, var) in b.data().lock().expect("varmap").iter() {
        let s = src.get(name).ok_or_else(|| {
            Error::Shape(format!("weight {name} is missing from the first encoder"))
        })?;
        var.set(&s.as_tensor().copy()?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--ensemble K --ensemble-by B`: 1 is a single encoder, 0 and a `by` without members are
    /// refused in one line, the default `by` is seed, at most K members at a time.
    #[test]
    fn ensemble_settings_from_the_member_count() {
        assert!(EnsembleTrainConfig::for_members(1, None).unwrap().is_none());
        let e = EnsembleTrainConfig::for_members(0, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--ensemble 0: expected the number of members"),
            "{e}"
        );
        let e = EnsembleTrainConfig::for_members(1, Some(EnsembleBy::Bagging))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--ensemble-by bagging needs --ensemble K with K >= 2 members"
        );
        let c = EnsembleTrainConfig::for_members(3, None).unwrap().unwrap();
        assert_eq!((c.members, c.by), (3, EnsembleBy::Seed));
        assert!(c.parallel >= 1 && c.parallel <= 3);
    }

    /// Three well separated blobs of 4 points each are found as they were drawn.
    #[test]
    fn kmeans_finds_separated_blobs() {
        let mut pts = Vec::new();
        for c in 0..3 {
            for j in 0..4 {
                pts.extend([c as f32 * 10.0 + j as f32 * 0.1, -(c as f32) * 5.0]);
            }
        }
        let a = kmeans(&pts, 2, 3, 2, 1);
        for c in 0..3 {
            let g = &a[c * 4..(c + 1) * 4];
            assert!(g.iter().all(|&x| x == g[0]), "blob {c} split: {a:?}");
        }
        let mut firsts = vec![a[0], a[4], a[8]];
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts.len(), 3, "three clusters: {a:?}");
    }

    /// A blob of one point next to a big one: the minimum size moves the big blob's point
    /// nearest the small cluster's centre into it.
    #[test]
    fn kmeans_gives_every_cluster_its_minimum() {
        let pts = [0.0f32, 0.1, 0.2, 0.3, 0.4, 9.0];
        let a = kmeans(&pts, 1, 2, 2, 3);
        let lone = a[5];
        assert_eq!(a.iter().filter(|&&x| x == lone).count(), 2, "{a:?}");
        assert_eq!(a[4], lone, "the nearest point (0.4) joins it: {a:?}");
    }

    /// Oracle: a bootstrap sample keeps every class's size and draws only from that class.
    #[test]
    fn bootstrap_keeps_class_sizes() {
        let set = ImageSet {
            n: 7,
            rows: 1,
            cols: 1,
            pixels: (0..7).collect(),
            labels: vec![0, 0, 0, 1, 1, 1, 1],
        };
        let b = bootstrap(&set, 5);
        assert_eq!(b.n, 7);
        assert_eq!(b.labels.iter().filter(|&&l| l == 0).count(), 3);
        for i in 0..b.n {
            let src = b.pixels[i] as usize;
            assert_eq!(set.labels[src], b.labels[i], "drawn from its own class");
        }
        assert_ne!(bootstrap(&set, 6).pixels, b.pixels, "the seed matters");
    }
}
