//! Text encoder: all-MiniLM-L6-v2 against sentence-transformers' own embeddings and token ids.

use std::path::Path;

use twindex::index::vecio::read_npy;
use twindex::model::text::TextEncoder;
use twindex::model::{LinearPrecision, TextBackend};
use twindex::timing::Stopwatch;

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/models/all-MiniLM-L6-v2"
);
const REF_TXT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/minilm_ref_100.txt"
);
const REF_NPY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/minilm_ref_100.npy"
);
const REF_TOKENS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/minilm_ref_100_tokens.json"
);
const QQP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/corpora/pairs/qqp-10k.test.tsv"
);

/// Every reference sentence within this cosine of sentence-transformers' embedding.
const MIN_COSINE: f32 = 0.9999;

/// Inputs from ../shared; a test that calls this is ignored by build.rs where they are absent
/// ([`crate::require_input`]).
fn require(paths: &[&str]) {
    for p in paths {
        crate::require_input(Path::new(p));
    }
}

#[test]
#[cfg_attr(
    not(all(has_minilm, has_minilm_reference)),
    ignore = "needs ../shared: models/all-MiniLM-L6-v2 and reference/minilm_ref_100.*"
)]
fn minilm_matches_sentence_transformers() {
    require(&[MODEL, REF_TXT, REF_NPY, REF_TOKENS]);
    let enc = TextEncoder::load(Path::new(MODEL)).unwrap();
    assert_eq!(enc.dim(), 384);
    let text = std::fs::read_to_string(REF_TXT).unwrap();
    let sentences: Vec<&str> = text.lines().collect();
    assert_eq!(sentences.len(), 100);

    // Token ids: the oracle was written by the Python fast tokenizer, max_seq_length 256.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(REF_TOKENS).unwrap()).unwrap();
    let want: Vec<Vec<u32>> = serde_json::from_value(json["input_ids"].clone()).unwrap();
    let got = enc.tokenize(&sentences).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "token ids of sentence {i}: {:?}", sentences[i]);
    }

    // Embeddings: reference computed by sentence-transformers (float32, 100 x 384). Batch 7 so
    // that batches of mixed lengths, a short last batch and the reordering are all exercised.
    let reference = read_npy(Path::new(REF_NPY)).unwrap();
    assert_eq!((reference.rows, reference.cols), (100, 384));
    let emb = enc.encode(&sentences, 7).unwrap();
    assert_eq!(emb.len(), 100 * 384);
    let mut worst = (f32::INFINITY, 0);
    for i in 0..100 {
        let a = &emb[i * 384..(i + 1) * 384];
        let b = reference.row(i);
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((na - 1.0).abs() < 1e-4, "row {i} norm {na}");
        let cos = dot / (na * nb);
        if cos < worst.0 {
            worst = (cos, i);
        }
    }
    println!(
        "min cosine vs sentence-transformers: {:.7} (sentence {})",
        worst.0, worst.1
    );
    assert!(
        worst.0 >= MIN_COSINE,
        "sentence {} has cosine {} < {MIN_COSINE}",
        worst.1,
        worst.0
    );

    // Batch size and batch parallelism change nothing but float rounding.
    let mut enc = enc;
    enc.set_parallel_batches(false);
    let one = enc.encode(&sentences[..10], 1).unwrap();
    for (x, y) in one.iter().zip(&emb[..10 * 384]) {
        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
    }
    assert!(enc.encode(&[], 32).unwrap().is_empty());
    assert!(enc.encode(&sentences, 0).is_err());
}

/// Smallest cosine between rows of two `n x dim` matrices, and its row.
fn min_cosine(a: &[f32], b: &[f32], dim: usize) -> (f32, usize) {
    let mut worst = (f32::INFINITY, 0);
    for (i, (x, y)) in a.chunks_exact(dim).zip(b.chunks_exact(dim)).enumerate() {
        let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        let nx = x.iter().map(|v| v * v).sum::<f32>().sqrt();
        let ny = y.iter().map(|v| v * v).sum::<f32>().sqrt();
        let cos = dot / (nx * ny);
        if cos < worst.0 {
            worst = (cos, i);
        }
    }
    worst
}

/// Every backend against sentence-transformers' float32 embeddings (the default backend is
/// checked in `minilm_matches_sentence_transformers`): the candle reference, the packed
/// float32 forward and the bfloat16 one (on CPUs without bfloat16 support, float32 again).
#[test]
#[cfg_attr(
    not(all(has_minilm, has_minilm_reference)),
    ignore = "needs ../shared: models/all-MiniLM-L6-v2 and reference/minilm_ref_100.*"
)]
fn every_backend_matches_sentence_transformers() {
    require(&[MODEL, REF_TXT, REF_NPY]);
    let mut enc = TextEncoder::load(Path::new(MODEL)).unwrap();
    let text = std::fs::read_to_string(REF_TXT).unwrap();
    let sentences: Vec<&str> = text.lines().collect();
    let reference = read_npy(Path::new(REF_NPY)).unwrap();
    for (backend, floor) in [
        (TextBackend::Candle, MIN_COSINE),
        (TextBackend::Fast(LinearPrecision::F32), MIN_COSINE),
        (TextBackend::Fast(LinearPrecision::Bf16), 0.9995),
    ] {
        enc.set_backend(backend).unwrap();
        let emb = enc.encode(&sentences, 32).unwrap();
        let (cos, i) = min_cosine(&emb, &reference.data, 384);
        println!(
            "{backend:?} (runs {:?}): min cosine {cos:.7} (sentence {i})",
            enc.backend()
        );
        assert!(
            cos >= floor,
            "{backend:?}: sentence {i} cosine {cos} < {floor}"
        );
    }
}

#[test]
#[cfg_attr(not(has_minilm), ignore = "needs ../shared/models/all-MiniLM-L6-v2")]
fn missing_tokenizer_is_named() {
    require(&[MODEL]);
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::os::unix::fs::symlink(Path::new(MODEL).join(f), dir.path().join(f)).unwrap();
    }
    let err = TextEncoder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");

    // A corrupt tokenizer.json is named too.
    std::fs::write(dir.path().join("tokenizer.json"), b"{not json").unwrap();
    let err = TextEncoder::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

/// CPU-seconds per 1,000 questions (the first 2,000 of qqp-10k.test.tsv, q1 then q2 of each row),
/// batch 32. Thread count from the environment, e.g.
/// `RAYON_NUM_THREADS=1 CANDLE_NUM_THREADS=1 cargo test --release --test it text::encode_speed
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn encode_speed() {
    const N: usize = 2000;
    const BATCH: usize = 32;
    require(&[MODEL, QQP]);
    let tsv = std::fs::read_to_string(QQP).unwrap();
    let questions: Vec<&str> = tsv
        .lines()
        .skip(1)
        .flat_map(|l| l.split('\t').take(2))
        .take(N)
        .collect();
    assert_eq!(questions.len(), N);
    let mut enc = TextEncoder::load(Path::new(MODEL)).unwrap();
    enc.encode(&questions[..64], BATCH).unwrap(); // warm-up
    let threads = rayon::current_num_threads();
    // Alternated, so neither setting always runs first on a warming machine.
    for parallel in [false, true, false, true] {
        enc.set_parallel_batches(parallel);
        let sw = Stopwatch::start();
        let emb = enc.encode(&questions, BATCH).unwrap();
        let (cpu, wall) = (sw.cpu(), sw.wall());
        assert_eq!(emb.len(), N * enc.dim());
        println!(
            "threads {threads} parallel_batches {parallel}: {:.2} CPU-s / 1k questions, \
             {:.2} wall-s / 1k",
            cpu * 1000.0 / N as f64,
            wall * 1000.0 / N as f64
        );
    }
}
