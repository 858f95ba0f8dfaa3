//! A short training run must beat chance by a wide margin; the same seed reproduces it.

use std::path::Path;
use twindex::model::{Arch, ImageModel};
use twindex::train::{train_image, ImageTrainConfig, LossKind, Miner, Schedule};

fn mnist() -> twindex::corpus::TrainTest {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/mnist");
    let mut d = twindex::corpus::load_idx_corpus(&dir).unwrap();
    // A 2,000-image test subset keeps evaluation quick; pairs still cover all 10 classes.
    d.test.n = 2000;
    d.test.pixels.truncate(2000 * 784);
    d.test.labels.truncate(2000);
    d
}

#[test]
fn lenet_contrastive_beats_chance_and_is_reproducible() {
    let data = mnist();
    let cfg = ImageTrainConfig {
        epochs: 2,
        max_train: Some(12000),
        seed: 7,
        ..Default::default()
    };
    println!("seed {}", cfg.seed);
    let a = train_image(&data, &cfg, "mnist", &mut |_| {}).unwrap();
    let acc = a.history.last().unwrap().test_best_accuracy;
    println!(
        "lenet contrastive, 2 epochs on 12k: test pair accuracy at the best threshold {acc:.4}"
    );
    // Chance is 0.5 (balanced pairs).
    assert!(acc > 0.85, "test pair accuracy {acc}");
    assert!(a.history[1].loss < a.history[0].loss);

    // Same seed, same run: identical losses.
    let cfg1 = ImageTrainConfig {
        epochs: 1,
        ..cfg.clone()
    };
    let b = train_image(&data, &cfg1, "mnist", &mut |_| {}).unwrap();
    assert_eq!(a.history[0].loss, b.history[0].loss);

    // Save, reload, same embeddings.
    let dir = tempfile::tempdir().unwrap();
    a.model.save(dir.path()).unwrap();
    let loaded = ImageModel::load(dir.path()).unwrap();
    let x = &data.test.pixels[..5 * 784];
    let e1 = a.model.embed_pixels(x, 5, 5).unwrap();
    let e2 = loaded.embed_pixels(x, 5, 5).unwrap();
    assert_eq!(e1, e2);
}

/// One epoch of the CNN on 3,000 training digits (seed 3) with `loss`: the test pair accuracy at
/// the best threshold must beat chance (0.5) by a wide margin. Returns the outcome.
fn cnn_one_epoch_beats_chance(name: &str, loss: ImageTrainConfig) -> twindex::train::TrainOutcome {
    let cfg = ImageTrainConfig {
        arch: Arch::Cnn,
        epochs: 1,
        max_train: Some(3000),
        seed: 3,
        ..loss
    };
    println!("seed {}", cfg.seed);
    let a = train_image(&mnist(), &cfg, "mnist", &mut |_| {}).unwrap();
    let acc = a.history[0].test_best_accuracy;
    println!("cnn {name}, 1 epoch on 3k: test pair accuracy at the best threshold {acc:.4}");
    assert!(acc > 0.8, "{name}: test pair accuracy {acc}");
    a
}

#[test]
fn cnn_triplet_semi_hard_beats_chance() {
    cnn_one_epoch_beats_chance(
        "triplet semi-hard",
        ImageTrainConfig {
            loss: LossKind::Triplet,
            miner: Miner::SemiHard,
            margin: 0.2,
            ..Default::default()
        },
    );
}

#[test]
fn cnn_arcface_beats_chance() {
    let a = cnn_one_epoch_beats_chance(
        "arcface",
        ImageTrainConfig {
            loss: LossKind::Arcface,
            margin: 0.3,
            scale: 16.0,
            ..Default::default()
        },
    );
    assert!(a.model.config.training.loss.starts_with("arcface"));
}

/// The pair losses train: multi-similarity with its miner and a cross-batch memory of 512,
/// and proxy-anchor with its trained proxies; each beats chance after one epoch, and the
/// training record names loss, memory and miner.
#[test]
fn cnn_pair_and_proxy_losses_beat_chance() {
    let ms = cnn_one_epoch_beats_chance(
        "multi-similarity + ms miner + xbm 512",
        ImageTrainConfig {
            loss: LossKind::MultiSimilarity,
            miner: Miner::MultiSimilarity,
            xbm: Some(512),
            ..Default::default()
        },
    );
    let rec = &ms.model.config.training;
    assert_eq!(rec.loss, "multi-similarity (xbm 512)");
    assert_eq!(rec.miner, "multi-similarity");
    let pa = cnn_one_epoch_beats_chance(
        "proxy-anchor",
        ImageTrainConfig {
            loss: LossKind::ProxyAnchor,
            miner: Miner::None,
            ..Default::default()
        },
    );
    assert_eq!(pa.model.config.training.loss, "proxy-anchor");
}

/// Loss, miner and memory that do not go together are refused in one line naming the flag.
#[test]
fn pair_loss_options_are_checked() {
    let bad = |cfg: ImageTrainConfig| cfg.check().unwrap_err().to_string();
    let e = bad(ImageTrainConfig {
        loss: LossKind::Contrastive,
        miner: Miner::MultiSimilarity,
        ..Default::default()
    });
    assert!(
        e.contains("--miner multi-similarity") && e.contains("contrastive"),
        "{e}"
    );
    let e = bad(ImageTrainConfig {
        loss: LossKind::Triplet,
        xbm: Some(1024),
        ..Default::default()
    });
    assert!(e.contains("--xbm") && e.contains("triplet"), "{e}");
    let e = bad(ImageTrainConfig {
        loss: LossKind::Circle,
        miner: Miner::None,
        xbm: Some(64),
        batch: 128,
        ..Default::default()
    });
    assert!(e.contains("--xbm 64") && e.contains("--batch 128"), "{e}");
    let e = bad(ImageTrainConfig {
        loss: LossKind::Supcon,
        miner: Miner::BatchHard,
        xbm: Some(1024),
        ..Default::default()
    });
    assert!(e.contains("batch-hard"), "{e}");
}

/// The residual network, one epoch on 2,000 digits with the cosine schedule: it beats chance;
/// training moved its batch-norm running statistics, which are saved with the weights and used
/// at inference (a reload embeds identically, and an image's embedding does not depend on its
/// batch); the schedule is in the training record.
#[test]
fn resnet_trains_saves_loads_and_embeds_identically() {
    let data = mnist();
    let cfg = ImageTrainConfig {
        arch: Arch::Resnet,
        loss: LossKind::Triplet,
        miner: Miner::SemiHard,
        margin: 0.2,
        epochs: 1,
        max_train: Some(2000),
        seed: 5,
        schedule: Schedule::Cosine,
        ..Default::default()
    };
    println!("seed {}", cfg.seed);
    let a = train_image(&data, &cfg, "mnist", &mut |_| {}).unwrap();
    let acc = a.history[0].test_best_accuracy;
    println!("resnet triplet, 1 epoch on 2k: test pair accuracy at the best threshold {acc:.4}");
    assert!(acc > 0.7, "test pair accuracy {acc}");
    let bn = a.model.encoder.as_resnet().unwrap().batch_norms();
    let (rm, rv) = bn[0].running_stats();
    let moved = (
        rm.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        (rv - 1.0)
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
    );
    assert!(
        moved.0 > 1e-4 && moved.1 > 1e-4,
        "running statistics moved: {moved:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    a.model.save(dir.path()).unwrap();
    let loaded = ImageModel::load(dir.path()).unwrap();
    assert_eq!(loaded.config.training.schedule, "cosine");
    let (lm, _) = loaded.encoder.as_resnet().unwrap().batch_norms()[0].running_stats();
    assert_eq!(lm.to_vec1::<f32>().unwrap(), rm.to_vec1::<f32>().unwrap());
    let x = &data.test.pixels[..6 * 784];
    let e1 = a.model.embed_pixels(x, 6, 6).unwrap();
    let e2 = loaded.embed_pixels(x, 6, 6).unwrap();
    assert_eq!(e1, e2);
    // One image at a time: the same embeddings (running statistics, not the batch's).
    let e3 = loaded.embed_pixels(x, 6, 1).unwrap();
    let diff = e1
        .iter()
        .zip(&e3)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-5, "batch of 6 vs one at a time: {diff}");
}

#[test]
fn loading_a_missing_or_corrupt_model_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = ImageModel::load(dir.path()).err().unwrap().to_string();
    assert!(e.contains("config.json"), "{e}");
    let cfg = twindex::model::ImageModelConfig::new(Arch::Lenet, 28, 28, 1);
    twindex::fsutil::atomic_write_json(&dir.path().join("config.json"), &cfg).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    let e = ImageModel::load(dir.path()).err().unwrap().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
}

/// Schedule flags that cannot work are refused in one line, before anything is written.
#[test]
fn bad_schedule_flags_are_refused_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("m");
    let out_s = out.to_str().unwrap();
    let base = ["train", "image", "--max-train", "200", "--out", out_s];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    super::cli::fails_with(
        &with(&["--schedule", "cosine", "--lr-decay", "0.9"]),
        "--schedule cosine sets the learning rate per step down to 0: drop --lr-decay 0.9",
    );
    super::cli::fails_with(
        &with(&["--epochs", "2", "--warmup-epochs", "2"]),
        "the warm-up must end before training does (got 2 warm-up epochs of 2)",
    );
    super::cli::fails_with(&with(&["--schedule", "linear"]), "--schedule");
    assert!(!out.exists(), "nothing written on refusal");
}
