//! Text fine-tuning: the losses against float64 oracles, the trainable BERT against the inference
//! one, a tiny fine-tune that learns and saves a folder that loads back, and bad input.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::path::Path;
use twindex::corpus::pairs::{read_pairs_tsv, TextPair};
use twindex::model::bert::TrainableBert;
use twindex::model::text::{mean_pool_normalize, model_tensor_name, pad_rows};
use twindex::model::{TextBackend, TextEncoder, TextModelParts};
use twindex::train::loss;
use twindex::train::text::{save_text_model, train_text, TextLoss, TextTrainConfig};

pub(crate) const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/models/all-MiniLM-L6-v2"
);
pub(crate) const QQP_TRAIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/corpora/pairs/qqp-10k.train.tsv"
);

/// Inputs from ../shared; a test that calls this is ignored by build.rs where they are absent
/// ([`crate::require_input`]).
fn require(paths: &[&str]) {
    for p in paths {
        crate::require_input(Path::new(p));
    }
}

fn t2(rows: &[[f64; 2]]) -> Tensor {
    let v: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_vec(v, (rows.len(), 2), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f32>().unwrap() as f64
}

fn cos(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] * b[0] + a[1] * b[1])
        / ((a[0] * a[0] + a[1] * a[1]).sqrt() * (b[0] * b[0] + b[1] * b[1]).sqrt())
}

// A hand-made batch of 4 pairs, 2-d, not unit length on purpose.
const A: [[f64; 2]; 4] = [[1.0, 0.0], [0.6, 0.8], [0.0, 2.0], [-1.0, 1.0]];
const B: [[f64; 2]; 4] = [[0.8, 0.6], [1.0, 0.0], [0.3, 1.0], [1.0, 1.0]];
const Y: [f64; 4] = [1.0, 0.0, 1.0, 0.0];

#[test]
fn contrastive_and_online_contrastive_match_f64() {
    let (a, b) = (t2(&A), t2(&B));
    let y = Tensor::from_vec(
        Y.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        4,
        &Device::Cpu,
    )
    .unwrap();
    let m = 0.5;
    // d_i = 1 - cos(a_i, b_i): 0.2, 0.4, 1 - 1/sqrt(1.09), 1 (cos of orthogonal vectors)
    let d: Vec<f64> = (0..4).map(|i| 1.0 - cos(A[i], B[i])).collect();
    // ContrastiveLoss: mean 0.5 * (y d^2 + (1-y) max(0, m - d)^2)
    let want: f64 = (0..4)
        .map(|i| 0.5 * (Y[i] * d[i] * d[i] + (1.0 - Y[i]) * (m - d[i]).max(0.0).powi(2)))
        .sum::<f64>()
        / 4.0;
    let dt = loss::cosine_distance(&a, &b).unwrap();
    let got = scalar(&(loss::contrastive(&dt, &y, m).unwrap() * 0.5).unwrap());
    assert!((got - want).abs() < 1e-6, "contrastive {got} vs {want}");

    // OnlineContrastiveLoss: positives d = [0.2, 0.0421], negatives d = [0.4, 1.0].
    // Hard positives: d > min(neg) = 0.4: none. Hard negatives: d < max(pos) = 0.2: none -> 0.
    let got = scalar(&loss::online_contrastive(&dt, &y, m).unwrap());
    assert!(got.abs() < 1e-7, "online, easy batch: {got}");
    // Swap labels so pairs are hard: positives = {0.4, 1.0}, negatives = {0.2, 0.0421}.
    // Hard positives: d > min(neg) = 0.0421: both. Hard negatives: d < max(pos) = 1.0: both.
    // sum = 0.4^2 + 1^2 + (0.5-0.2)^2 + (0.5-0.0421)^2
    let y2 = Tensor::from_vec(vec![0f32, 1.0, 0.0, 1.0], 4, &Device::Cpu).unwrap();
    let want: f64 = d[1].powi(2) + d[3].powi(2) + (m - d[0]).powi(2) + (m - d[2]).powi(2);
    let got = scalar(&loss::online_contrastive(&dt, &y2, m).unwrap());
    assert!((got - want).abs() < 1e-5, "online {got} vs {want}");
    // Only the hard pairs count: labels y3 make positive 0 (d=0.2) easy (0.2 < min neg 0.4).
    // positives {0.2 (idx0), 1.0 (idx3)}, negatives {0.4 (idx1), 0.0421 (idx2)}.
    // hard pos: d > 0.0421: both; hard neg: d < 1.0: both. Then with margin 0.3 the negative
    // 0.4 is beyond the margin: relu(0.3 - 0.4) = 0.
    let y3 = Tensor::from_vec(vec![1f32, 0.0, 0.0, 1.0], 4, &Device::Cpu).unwrap();
    let want = d[0].powi(2) + d[3].powi(2) + 0.0 + (0.3 - d[2]).powi(2);
    let got = scalar(&loss::online_contrastive(&dt, &y3, 0.3).unwrap());
    assert!(
        (got - want).abs() < 1e-5,
        "online margin 0.3: {got} vs {want}"
    );
}

#[test]
fn mnrl_and_batch_hard_match_f64() {
    let (a, b) = (t2(&A), t2(&B));
    // MNRL: s_ij = 20 cos(a_i, b_j); loss = mean_i logsumexp_j(s_ij) - s_ii
    let mut want = 0.0;
    for i in 0..4 {
        let s: Vec<f64> = (0..4).map(|j| 20.0 * cos(A[i], B[j])).collect();
        let mx = s.iter().cloned().fold(f64::MIN, f64::max);
        let lse = mx + s.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
        want += (lse - s[i]) / 4.0;
    }
    let got = scalar(&loss::multiple_negatives_ranking(&a, &b, 20.0).unwrap());
    assert!(
        (got - want).abs() < 1e-4 * want.max(1.0),
        "mnrl {got} vs {want}"
    );
    // With hard negatives: anchors A[0..2], candidates B[0..2] (their positives) then B[2..4]
    // (two hard negatives): every anchor against all four.
    let mut want = 0.0;
    for i in 0..2 {
        let s: Vec<f64> = (0..4).map(|j| 20.0 * cos(A[i], B[j])).collect();
        let mx = s.iter().cloned().fold(f64::MIN, f64::max);
        let lse = mx + s.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
        want += (lse - s[i]) / 2.0;
    }
    let got = scalar(&loss::multiple_negatives_ranking(&t2(&A[..2]), &b, 20.0).unwrap());
    assert!(
        (got - want).abs() < 1e-4 * want.max(1.0),
        "mnrl with negatives {got} vs {want}"
    );

    // Batch-hard on a line: labels 0 at x = 0, 1; label 1 at x = 3, 5; label 2 at x = 4, 9.
    let x = [0.0f64, 1.0, 3.0, 5.0, 4.0, 9.0];
    let labels = [0u32, 0, 1, 1, 2, 2];
    let m = 2.0;
    let mut want = 0.0;
    for i in 0..6 {
        let dap = (0..6)
            .filter(|&j| j != i && labels[j] == labels[i])
            .map(|j| (x[i] - x[j]).abs())
            .fold(0.0, f64::max);
        let dan = (0..6)
            .filter(|&j| labels[j] != labels[i])
            .map(|j| (x[i] - x[j]).abs())
            .fold(f64::MAX, f64::min);
        want += (dap - dan + m).max(0.0) / 6.0;
    }
    // per anchor: 0: 1-3+2=0; 1: 1-2+2=1; 3: 2-1+2=3; 5: 2-1+2=3; 4: 5-1+2=6; 9: 5-4+2=3 -> 16/6
    assert!((want - 16.0 / 6.0).abs() < 1e-12);
    let e = Tensor::from_vec(
        x.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        (6, 1),
        &Device::Cpu,
    )
    .unwrap();
    let got = scalar(&loss::batch_hard_triplet(&e, &labels, m).unwrap());
    assert!((got - want).abs() < 1e-3, "batch-hard {got} vs {want}");
    // Bad shapes are errors, not panics.
    assert!(loss::multiple_negatives_ranking(&a, &t2(&B[..3]), 20.0).is_err());
    assert!(loss::batch_hard_triplet(&e, &labels[..5], m).is_err());
}

fn some_pairs(n: usize) -> Vec<TextPair> {
    let mut v = read_pairs_tsv(Path::new(QQP_TRAIN)).unwrap();
    v.truncate(n);
    v
}

#[test]
#[cfg_attr(
    not(all(has_minilm, has_qqp)),
    ignore = "needs ../shared: models/all-MiniLM-L6-v2 and corpora/pairs/qqp-10k.train.tsv"
)]
fn trainable_bert_matches_inference_bert() {
    require(&[MODEL, QQP_TRAIN]);
    let parts = TextModelParts::read(Path::new(MODEL)).unwrap();
    let dev = Device::Cpu;
    let tensors: HashMap<String, Tensor> = parts
        .read_weights(&dev)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (model_tensor_name(&k).to_string(), v))
        .collect();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
    let bert = TrainableBert::new(vb, &parts.config, parts.attention_dropout).unwrap();
    let mut enc = TextEncoder::load(Path::new(MODEL)).unwrap();
    // Against candle's BertModel itself (the default encode path may be bf16).
    enc.set_backend(TextBackend::Candle).unwrap();
    let pairs = some_pairs(3);
    let texts: Vec<&str> = pairs
        .iter()
        .flat_map(|p| [p.a.as_str(), p.b.as_str()])
        .collect();
    let ids = enc.tokenize(&texts).unwrap();
    let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let (i, m, len) = pad_rows(&rows, parts.pad_id);
    let i = Tensor::from_vec(i, (rows.len(), len), &dev).unwrap();
    let m = Tensor::from_vec(m, (rows.len(), len), &dev).unwrap();
    let h = bert.forward(&i, &m, None).unwrap();
    let got = mean_pool_normalize(&h, &m)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want = enc.encode(&texts, 64).unwrap();
    for (r, g) in got.iter().enumerate() {
        let c: f32 = g
            .iter()
            .zip(&want[r * 384..(r + 1) * 384])
            .map(|(x, y)| x * y)
            .sum();
        assert!(c > 0.99999, "text {r}: cosine {c}");
    }
}

#[test]
#[cfg_attr(
    not(all(has_minilm, has_qqp)),
    ignore = "needs ../shared: models/all-MiniLM-L6-v2 and corpora/pairs/qqp-10k.train.tsv"
)]
fn tiny_fine_tune_learns_saves_and_reloads() {
    require(&[MODEL, QQP_TRAIN]);
    let pairs = some_pairs(8);
    let cfg = TextTrainConfig {
        loss: TextLoss::Contrastive,
        epochs: 2,
        batch: 4,
        lr: 1e-4,
        warmup_ratio: 0.0,
        dropout: false,
        seed: 3,
        ..Default::default()
    };
    // A fake dev score, worse after epoch 2: the first epoch's weights must be kept.
    let mut scores = vec![0.7, 0.6].into_iter();
    let mut dev = |_: &TextEncoder| -> twindex::Result<f64> { Ok(scores.next().unwrap()) };
    let out = train_text(Path::new(MODEL), &pairs, &cfg, Some(&mut dev), &mut |_| {}).unwrap();
    let h = &out.history;
    println!("losses {} -> {}", h[0].loss, h[1].loss);
    assert!(
        h[1].loss < h[0].loss,
        "loss did not decrease: {} -> {}",
        h[0].loss,
        h[1].loss
    );
    assert_eq!(out.best_epoch, 1);
    assert_eq!(out.steps, 4);

    // The saved folder has the base's tensor names and loads back, encoding identically.
    let parts = TextModelParts::read(Path::new(MODEL)).unwrap();
    let base = parts.read_weights(&Device::Cpu).unwrap();
    let mut want_names: Vec<&String> = base.keys().collect();
    let mut got_names: Vec<&String> = out.weights.keys().collect();
    want_names.sort();
    got_names.sort();
    assert_eq!(got_names, want_names);
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("tuned");
    let record = serde_json::json!({ "test": true });
    save_text_model(Path::new(MODEL), &out.weights, &record, &model_dir).unwrap();
    // Saving again over it replaces it (rename aside, then in).
    save_text_model(Path::new(MODEL), &out.weights, &record, &model_dir).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modules.json",
    ] {
        assert!(model_dir.join(f).is_file(), "{f} missing");
    }
    assert!(model_dir.join("1_Pooling/config.json").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary folders left behind");
    let texts: Vec<&str> = pairs.iter().take(4).map(|p| p.a.as_str()).collect();
    let loaded = TextEncoder::load(&model_dir)
        .unwrap()
        .encode(&texts, 8)
        .unwrap();
    let direct = TextEncoder::from_tensors(&parts, out.weights.clone(), &Device::Cpu)
        .unwrap()
        .encode(&texts, 8)
        .unwrap();
    assert_eq!(loaded, direct);
    let before = TextEncoder::load(Path::new(MODEL))
        .unwrap()
        .encode(&texts, 8)
        .unwrap();
    assert_ne!(loaded, before, "weights did not change");
}

/// The first 12 duplicate pairs of QQP's training split.
fn twelve_duplicates() -> Vec<TextPair> {
    require(&[MODEL, QQP_TRAIN]);
    let mut pairs = read_pairs_tsv(Path::new(QQP_TRAIN)).unwrap();
    pairs.retain(|p| p.duplicate);
    pairs.truncate(12);
    pairs
}

/// Multi-similarity on duplicate-group batches of 8, 2 epochs, lr 1e-4, no warm-up or dropout,
/// seed 3.
fn multi_similarity_config() -> TextTrainConfig {
    TextTrainConfig {
        loss: TextLoss::MultiSimilarity,
        epochs: 2,
        batch: 8,
        lr: 1e-4,
        warmup_ratio: 0.0,
        dropout: false,
        seed: 3,
        ..Default::default()
    }
}

/// The PML pair losses fine-tune the text encoder on duplicate-group batches: multi-similarity,
/// 3 epochs on 12 duplicate pairs (seed 3), lowers its loss.
#[test]
#[cfg_attr(
    not(all(has_minilm, has_qqp)),
    ignore = "needs ../shared: models/all-MiniLM-L6-v2 and corpora/pairs/qqp-10k.train.tsv"
)]
fn multi_similarity_fine_tune_lowers_its_loss() {
    let pairs = twelve_duplicates();
    let cfg = TextTrainConfig {
        epochs: 3,
        ..multi_similarity_config()
    };
    println!("seed {}", cfg.seed);
    let out = train_text(Path::new(MODEL), &pairs, &cfg, None, &mut |_| {}).unwrap();
    let h = &out.history;
    println!("multi-similarity losses {} -> {}", h[0].loss, h[2].loss);
    assert!(h[0].loss > 0.0);
    assert!(
        h[2].loss < h[0].loss,
        "loss did not decrease: {} -> {}",
        h[0].loss,
        h[2].loss
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = vec![TextPair {
        a: "a".into(),
        b: "b".into(),
        duplicate: true,
        negatives: Vec::new(),
    }];
    let cfg = TextTrainConfig::default();
    let err = train_text(dir.path(), &pairs, &cfg, None, &mut |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");

    let tsv = dir.path().join("p.tsv");
    std::fs::write(&tsv, "q1\tq2\tis_duplicate\nx\ty\t2\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_twindex");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let missing = dir.path().join("nope");
    let e = run(&[
        "train",
        "text",
        "--pairs",
        tsv.to_str().unwrap(),
        "--base",
        missing.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert!(e.contains("nope/config.json"), "{e}");
    assert!(!Path::new(out).exists(), "no output on failure");

    // A folder twindex did not make is never replaced: refused before any work, untouched.
    let user = dir.path().join("mine");
    std::fs::create_dir(&user).unwrap();
    std::fs::write(user.join("notes.txt"), "keep me").unwrap();
    let e = run(&[
        "train",
        "text",
        "--pairs",
        tsv.to_str().unwrap(),
        "--base",
        missing.to_str().unwrap(),
        "--out",
        user.to_str().unwrap(),
    ]);
    assert!(e.contains("mine") && e.contains("refusing"), "{e}");
    assert_eq!(
        std::fs::read_to_string(user.join("notes.txt")).unwrap(),
        "keep me"
    );
    let e = twindex::train::text::save_text_model(
        dir.path(),
        &Default::default(),
        &serde_json::json!({}),
        &user,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("refusing"), "{e}");
    assert_eq!(
        std::fs::read_to_string(user.join("notes.txt")).unwrap(),
        "keep me"
    );
    assert!(twindex::train::text::check_text_out(&dir.path().join("fresh")).is_ok());
}

/// The refusals of `bad_input_is_a_clear_error` that need a real base model.
#[test]
#[cfg_attr(not(has_minilm), ignore = "needs ../shared/models/all-MiniLM-L6-v2")]
fn bad_input_with_a_real_base_model_is_a_clear_error() {
    require(&[MODEL]);
    let dir = tempfile::tempdir().unwrap();
    let tsv = dir.path().join("p.tsv");
    std::fs::write(&tsv, "q1\tq2\tis_duplicate\nx\ty\t2\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_twindex");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let e = run(&[
        "train",
        "text",
        "--pairs",
        tsv.to_str().unwrap(),
        "--base",
        MODEL,
        "--out",
        out,
    ]);
    assert!(e.contains("p.tsv") && e.contains("line 2"), "{e}");
    let e = run(&[
        "train",
        "text",
        "--pairs",
        "/nonexistent.tsv",
        "--base",
        MODEL,
        "--out",
        out,
    ]);
    assert!(e.contains("/nonexistent.tsv"), "{e}");
    assert!(!Path::new(out).exists(), "no output on failure");

    // MNRL on pairs without a duplicate has nothing to train on.
    let cfg = TextTrainConfig::default();
    let none = vec![TextPair {
        a: "a".into(),
        b: "b".into(),
        duplicate: false,
        negatives: Vec::new(),
    }];
    let err = train_text(Path::new(MODEL), &none, &cfg, None, &mut |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no training batches"), "{err}");
}

/// sentence-transformers loads a fine-tuned folder and embeds as twindex does. Needs a folder
/// (`TWINDEX_FT_MODEL`, default runs/qqp-ft-mnrl, written by benches/peers/compare_finetune.sh)
/// and a Python with sentence-transformers (`ST_PYTHON`, default /work/scratch/stvenv/bin/python):
///
///     cargo test --release --test it -- --ignored st_loads_fine_tuned_model
#[test]
#[ignore]
fn st_loads_fine_tuned_model() {
    let model = std::env::var("TWINDEX_FT_MODEL")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/runs/qqp-ft-mnrl").into());
    let py =
        std::env::var("ST_PYTHON").unwrap_or_else(|_| "/work/scratch/stvenv/bin/python".into());
    let reference = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/minilm_ref_100.txt"
    );
    require(&[&model, &py, reference]);
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("st.npy");
    let script = "import sys, numpy as np\nfrom sentence_transformers import SentenceTransformer\n\
        m = SentenceTransformer(sys.argv[1], device='cpu')\n\
        t = open(sys.argv[2], encoding='utf-8').read().splitlines()\n\
        np.save(sys.argv[3], m.encode(t, batch_size=32, normalize_embeddings=True).astype(np.float32))\n";
    let o = std::process::Command::new(&py)
        .env("HF_HUB_OFFLINE", "1")
        .args(["-c", script, &model, reference, npy.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = twindex::index::vecio::read_npy(&npy).unwrap();
    let text = std::fs::read_to_string(reference).unwrap();
    let sentences: Vec<&str> = text.lines().collect();
    let enc = TextEncoder::load(Path::new(&model)).unwrap();
    let ours = enc.encode(&sentences, 16).unwrap();
    let d = enc.dim();
    let worst = (0..sentences.len())
        .map(|i| {
            ours[i * d..(i + 1) * d]
                .iter()
                .zip(st.row(i))
                .map(|(a, b)| a * b)
                .sum::<f32>()
        })
        .fold(f32::INFINITY, f32::min);
    println!(
        "{model}: worst cosine twindex vs sentence-transformers over {} sentences: {worst}",
        sentences.len()
    );
    assert!(worst >= 0.9999, "worst cosine {worst}");
}

/// `--miner` and `--xbm` on a pair loss of `train text`: a cross-batch memory of 32 embeddings
/// changes the training (other losses than every pair of the batch alone), the
/// multi-similarity miner keeps it finite; misuse is refused before any training.
#[test]
#[cfg_attr(
    not(all(has_minilm, has_qqp)),
    ignore = "needs ../shared: models/all-MiniLM-L6-v2 and corpora/pairs/qqp-10k.train.tsv"
)]
fn text_pair_loss_takes_a_miner_and_a_cross_batch_memory() {
    let pairs = twelve_duplicates();
    let base = multi_similarity_config();
    let with_memory = TextTrainConfig {
        xbm: Some(32),
        ..base.clone()
    };
    let with_miner = TextTrainConfig {
        miner: twindex::train::Miner::MultiSimilarity,
        ..base.clone()
    };
    println!("seed {}", base.seed);
    let run = |cfg| train_text(Path::new(MODEL), &pairs, cfg, None, &mut |_| {}).unwrap();
    let (p, m, n) = (
        run(&base).history,
        run(&with_memory).history,
        run(&with_miner).history,
    );
    println!(
        "losses: every pair {} {}, with xbm {} {}, multi-similarity miner {} {}",
        p[0].loss, p[1].loss, m[0].loss, m[1].loss, n[0].loss, n[1].loss
    );
    assert!(m.iter().all(|h| h.loss.is_finite() && h.loss > 0.0));
    assert_ne!(p[1].loss, m[1].loss, "the memory changed nothing");
    // The miner keeps only hard pairs; on these easy duplicates it may keep none (loss 0).
    assert!(n.iter().all(|h| h.loss.is_finite() && h.loss >= 0.0));
    for (cfg, want) in [
        (
            TextTrainConfig {
                xbm: Some(64),
                ..Default::default()
            },
            "not of --loss mnrl",
        ),
        (
            TextTrainConfig {
                xbm: Some(4),
                ..base.clone()
            },
            "must hold at least one batch",
        ),
        (
            TextTrainConfig {
                xbm: Some(64),
                miner: twindex::train::Miner::SemiHard,
                ..base.clone()
            },
            "every pair or --miner multi-similarity",
        ),
    ] {
        let e = train_text(Path::new(MODEL), &pairs, &cfg, None, &mut |_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(want), "{e}");
    }
}
