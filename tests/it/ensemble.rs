//! Ensembles of twin encoders: a short 2-member run beats chance; the ensemble saves, loads and
//! embeds identically (and so does each member alone); its dimension and calibrated threshold
//! travel into an index, where `query` and `verify` use them; bad flags are refused.

use super::cli::{fails_with, ok_json};
use std::path::{Path, PathBuf};
use twindex::model::{EnsembleBy, ImageModel, ImageModelConfig};
use twindex::train::image::{best_threshold_accuracy, embed_set, pair_distances};
use twindex::train::{
    train_ensemble, train_image, EnsembleTrainConfig, ImageTrainConfig, LossKind, Miner,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// MNIST with a 2,000-image test subset (evaluation stays quick; all 10 classes appear).
fn mnist() -> twindex::corpus::TrainTest {
    let mut d = twindex::corpus::load_idx_corpus(&root().join("corpora/mnist")).unwrap();
    d.test.n = 2000;
    d.test.pixels.truncate(2000 * 784);
    d.test.labels.truncate(2000);
    d
}

/// One epoch of the CNN, triplet loss with semi-hard mining, on 3,000 training digits.
fn short_cnn() -> ImageTrainConfig {
    ImageTrainConfig {
        arch: twindex::model::Arch::Cnn,
        loss: LossKind::Triplet,
        miner: Miner::SemiHard,
        margin: 0.2,
        epochs: 1,
        max_train: Some(3000),
        seed: 11,
        ..Default::default()
    }
}

#[test]
fn two_member_ensemble_beats_chance_and_saves_loads_embeds_identically() {
    let data = mnist();
    let cfg = short_cnn();
    let ens = EnsembleTrainConfig {
        members: 2,
        by: EnsembleBy::Seed,
        parallel: 2,
    };
    println!(
        "seed {} (members {} and {})",
        cfg.seed,
        cfg.seed,
        cfg.seed + 1
    );
    let mut mcfg = ImageModelConfig::new(cfg.arch, 28, 28, 1);
    mcfg.class_names = (0..10).map(|c| c.to_string()).collect();
    let o = train_ensemble(&data, &cfg, &ens, mcfg, "mnist", &|_, _| {}).unwrap();
    assert_eq!(o.members.len(), 2);
    assert_eq!(o.seeds, vec![11, 12]);

    // Member 0 of a seed ensemble is the single encoder of the same seed, trained in parallel
    // with member 1 or alone.
    let single = train_image(&data, &cfg, "mnist", &mut |_| {}).unwrap();
    assert_eq!(o.members[0].history[0].loss, single.history[0].loss);

    let models: Vec<&ImageModel> = o.members.iter().map(|m| &m.model).collect();
    let model =
        ImageModel::ensemble_of(&models, EnsembleBy::Seed, &[1.0, 1.0], vec![vec![]; 2]).unwrap();
    assert_eq!(model.config.dim, 128);
    assert!(model.config.normalized);

    // Chance is 0.5: the seed's test pairs are balanced.
    let pairs = twindex::corpus::seed_pairs(&data.test.labels, 2).unwrap();
    let emb = embed_set(&model, &data.test).unwrap();
    let (acc, _) = best_threshold_accuracy(&pair_distances(&emb, 128, &pairs), &pairs);
    let member_acc: Vec<f64> = o
        .members
        .iter()
        .map(|m| m.history[0].test_best_accuracy)
        .collect();
    println!(
        "2-member ensemble, 1 epoch on 3k: test pair accuracy {acc:.4} (members {member_acc:?})"
    );
    assert!(acc > 0.8, "ensemble test pair accuracy {acc}");
    for row in emb.chunks(128).take(50) {
        let n: f32 = row.iter().map(|v| v * v).sum();
        assert!((n - 1.0).abs() < 1e-4, "unit embeddings, got norm^2 {n}");
    }

    // One directory: config + one safetensors; it loads and embeds bit for bit the same, and
    // so does each member, alone, against the member that was trained.
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    assert_eq!(
        ImageModel::files(dir.path()).unwrap(),
        vec!["config.json", "model.safetensors"]
    );
    let loaded = ImageModel::load(dir.path()).unwrap();
    assert_eq!(loaded.config.dim, 128);
    assert_eq!(loaded.config.arch_label(), "ensemble of 2 cnn");
    let x = &data.test.pixels[..7 * 784];
    assert_eq!(
        model.embed_pixels(x, 7, 4).unwrap(),
        loaded.embed_pixels(x, 7, 4).unwrap()
    );
    for (i, m) in o.members.iter().enumerate() {
        let alone = loaded.member(i).unwrap();
        assert_eq!(alone.config.dim, 64);
        assert!(alone.config.ensemble.is_none());
        assert_eq!(
            alone.embed_pixels(x, 7, 7).unwrap(),
            m.model.embed_pixels(x, 7, 7).unwrap(),
            "member {i}"
        );
    }
    let e = loaded.member(2).err().unwrap().to_string();
    assert!(e.contains("member 2") && e.contains("2 members"), "{e}");
    let e = loaded
        .member(0)
        .unwrap()
        .member(0)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not an ensemble"), "{e}");

    // A member's weights that do not fit its network: refused, naming the weights file.
    let cfg_path = dir.path().join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    c["ensemble"]["members"][1]["arch"] = "lenet".into();
    c["ensemble"]["members"][1]["dim"] = 10.into();
    c["dim"] = 74.into();
    std::fs::write(&cfg_path, serde_json::to_vec(&c).unwrap()).unwrap();
    let e = ImageModel::load(dir.path()).err().unwrap().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    c["dim"] = 128.into();
    std::fs::write(&cfg_path, serde_json::to_vec(&c).unwrap()).unwrap();
    let e = ImageModel::load(dir.path()).err().unwrap().to_string();
    assert!(e.contains("config.json") && e.contains("(74)"), "{e}");
}

/// 12 ORL people x 10 faces as a folder corpus in `dir`, and 5 of them enrolled with one face
/// each in `enrol`.
fn faces(dir: &Path) -> (PathBuf, PathBuf) {
    let (corpus, enrol) = (dir.join("faces"), dir.join("enrol"));
    for s in 1..=12 {
        let (from, to) = (
            root().join(format!("corpora/orl-faces/s{s}")),
            corpus.join(format!("s{s}")),
        );
        std::fs::create_dir_all(&to).unwrap();
        for i in 1..=10 {
            std::fs::copy(from.join(format!("{i}.pgm")), to.join(format!("{i}.pgm"))).unwrap();
        }
        if s <= 5 {
            std::fs::create_dir_all(enrol.join(format!("s{s}"))).unwrap();
            std::fs::copy(from.join("1.pgm"), enrol.join(format!("s{s}/1.pgm"))).unwrap();
        }
    }
    (corpus, enrol)
}

#[test]
fn ensemble_dimension_and_threshold_travel_into_an_index() {
    let d = tempfile::tempdir().unwrap();
    let (corpus, enrol) = faces(d.path());
    let model = d.path().join("ens");
    let train = ok_json(&[
        "--threads",
        "2",
        "train",
        "image",
        "--corpus",
        p(&corpus),
        "--arch",
        "cnn",
        "--size",
        "56x46",
        "--standardize",
        "--loss",
        "triplet",
        "--miner",
        "semi-hard",
        "--margin",
        "0.2",
        "--batch",
        "32",
        "--k",
        "4",
        "--epochs",
        "2",
        "--dev-classes",
        "4",
        "--seed",
        "5",
        "--ensemble",
        "2",
        "--ensemble-by",
        "bagging",
        "--out",
        p(&model),
        "--json",
    ]);
    // Thresholds and distances are f32 in the library; JSON prints them as such.
    let thr = train["threshold"].as_f64().unwrap() as f32;
    let loaded = ImageModel::load(&model).unwrap();
    let ens = loaded.config.ensemble.as_ref().expect("an ensemble");
    assert_eq!((ens.members.len(), ens.by), (2, EnsembleBy::Bagging));
    assert_eq!(loaded.config.dim, 128);
    assert_eq!(loaded.config.threshold, thr);

    let idx = d.path().join("idx");
    ok_json(&[
        "index",
        "build",
        "--model",
        p(&model),
        "--corpus",
        p(&enrol),
        "--out",
        p(&idx),
        "--backend",
        "flat",
        "--json",
    ]);
    let stats = ok_json(&["index", "stats", "--index", p(&idx), "--json"]);
    println!("index stats {stats}");
    assert_eq!(stats["dim"], 128, "{stats}");
    assert_eq!(stats["threshold"].as_f64().unwrap() as f32, thr, "{stats}");

    // The query's distances are the ensemble's own (the library embedding of the same files),
    // and its decisions are `distance <= threshold`.
    let probe = corpus.join("s3/2.pgm");
    let q = ok_json(&[
        "query",
        "--index",
        p(&idx),
        "--image",
        p(&probe),
        "--k",
        "5",
        "--json",
    ]);
    let pre = &loaded.config.preprocess;
    let px = pre.load_file(&probe).unwrap();
    let e = loaded.embed_pixels(&px, 1, 1).unwrap();
    let results = q["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for r in results {
        let label = r["label"].as_str().unwrap();
        let ref_px = pre
            .load_file(&enrol.join(format!("{label}/1.pgm")))
            .unwrap();
        let er = loaded.embed_pixels(&ref_px, 1, 1).unwrap();
        let dist: f32 = e
            .iter()
            .zip(&er)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        let got = r["distance"].as_f64().unwrap() as f32;
        assert!(
            (got - dist).abs() < 1e-4,
            "{label}: index {got} vs library {dist}"
        );
        assert_eq!(r["duplicate"].as_bool().unwrap(), got <= thr, "{r}");
    }
    let v = ok_json(&[
        "verify",
        "--index",
        p(&idx),
        "--label",
        "s3",
        p(&probe),
        "--json",
    ]);
    assert_eq!(v["threshold"].as_f64().unwrap() as f32, thr, "{v}");
    assert_eq!(
        v["accepted"].as_bool().unwrap(),
        v["distance"].as_f64().unwrap() as f32 <= thr,
        "{v}"
    );
}

#[test]
fn bad_ensemble_flags_are_refused_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("m");
    let base = [
        "train",
        "image",
        "--epochs",
        "1",
        "--max-train",
        "200",
        "--out",
        p(&out),
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    fails_with(
        &with(&["--ensemble", "0"]),
        "--ensemble 0: expected the number of members",
    );
    fails_with(
        &with(&["--ensemble-by", "cluster"]),
        "--ensemble-by cluster needs --ensemble K with K >= 2",
    );
    fails_with(
        &with(&["--ensemble", "2", "--ensemble-by", "kmeans"]),
        "--ensemble-by",
    );
    fails_with(&with(&["--ensemble=-1"]), "--ensemble");
    // Cluster learners need 2 classes each: 10 digits cannot feed 6 of them (K-1 = 6).
    fails_with(
        &with(&["--ensemble", "7", "--ensemble-by", "cluster"]),
        "needs at least 2 training classes per cluster learner: 10 classes for 6 learners",
    );
    assert!(!out.exists(), "nothing written on refusal");
    // A directory twindex did not make is never written into.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    fails_with(&with(&["--ensemble", "2"]), "refusing to write there");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "untouched");
    // --member on an encoder that is not an ensemble.
    fails_with(
        &[
            "eval",
            "--model",
            p(&root().join("corpora/encoders/mnist-lenet")),
            "--member",
            "0",
        ],
        "not an ensemble",
    );
}
