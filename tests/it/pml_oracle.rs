//! twindex's pair losses, miner, cross-batch memory and proxy-anchor loss against
//! pytorch-metric-learning (PML 2.9.0, torch 1.12.1, float64): `tests/data/pml_oracle.json`,
//! written by `benches/peers/pml_oracle.py` (seed 24; the inputs are in the file). Each loss
//! and each gradient with respect to the embeddings is compared in float64 (1e-9 relative to
//! the gradient's largest entry) and the loss in float32 (1e-5 relative).

use candle_core::{DType, Device, Tensor, Var};
use serde_json::Value;
use twindex::train::mining::multi_similarity_pairs;
use twindex::train::pairs::{cosine_matrix, PairMask};
use twindex::train::{proxy_anchor, CrossBatchMemory, PairLoss};

fn oracle() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pml_oracle.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn tensor(rows: &[Vec<f64>], dtype: DType) -> Tensor {
    let (n, d) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (n, d), &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

fn labels(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// `got` within `rel` of `want`, relative to the largest |entry| of `want` (a gradient has
/// entries near 0 whose relative error means nothing).
fn assert_close(what: &str, got: &[f64], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale,
            "{what}[{k}]: twindex {g} vs PML {w} (scale {scale})"
        );
    }
}

fn check_loss(what: &str, f: &dyn Fn(&Tensor) -> Tensor, emb: &[Vec<f64>], want: &Value) {
    let want_loss = want["loss"].as_f64().unwrap();
    // float64: value and gradient.
    let v = Var::from_tensor(&tensor(emb, DType::F64)).unwrap();
    let l = f(v.as_tensor());
    let got = l.to_scalar::<f64>().unwrap();
    assert_close(&format!("{what} loss (f64)"), &[got], &[want_loss], 1e-9);
    let g = l.backward().unwrap();
    let grad = g
        .get(&v)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_close(
        &format!("{what} grad (f64)"),
        &grad,
        &matrix(&want["grad"]).concat(),
        1e-9,
    );
    // float32, as training runs: the value within 1e-5 relative.
    let l32 = f(&tensor(emb, DType::F32)).to_scalar::<f32>().unwrap() as f64;
    assert!(
        (l32 - want_loss).abs() <= 1e-5 * want_loss.abs(),
        "{what} loss (f32): twindex {l32} vs PML {want_loss}"
    );
    eprintln!("{what}: twindex {got:.12} PML {want_loss:.12}");
}

#[test]
fn pair_losses_match_pml() {
    let o = oracle();
    eprintln!("oracle seed {} (PML {})", o["seed"], o["pml_version"]);
    let y = labels(&o["labels"]);
    let emb = matrix(&o["batches"][0]);
    let mask = PairMask::all_pairs(&y);
    for (key, loss) in [
        ("multi_similarity", PairLoss::MULTI_SIMILARITY),
        ("supcon", PairLoss::SUPCON),
        ("ntxent", PairLoss::NTXENT),
        ("circle", PairLoss::CIRCLE),
        ("lifted", PairLoss::LIFTED),
        ("angular", PairLoss::ANGULAR),
    ] {
        let f = |e: &Tensor| loss.loss(e, e, &mask).unwrap();
        check_loss(key, &f, &emb, &o["losses"][key]);
    }
}

#[test]
fn multi_similarity_miner_matches_pml() {
    let o = oracle();
    let y = labels(&o["labels"]);
    let emb = matrix(&o["batches"][0]);
    let e = tensor(&emb, DType::F64);
    let sim: Vec<f32> = cosine_matrix(&e, &e)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .map(|&s| s as f32)
        .collect();
    let mined = multi_similarity_pairs(&sim, &PairMask::all_pairs(&y), 0.1);
    let pairs = |m: &[bool]| -> Vec<(u64, u64)> {
        (0..m.len())
            .filter(|&k| m[k])
            .map(|k| ((k / y.len()) as u64, (k % y.len()) as u64))
            .collect()
    };
    let want = |a: &str, b: &str| -> Vec<(u64, u64)> {
        let p = &o["ms_miner_pairs"];
        let mut v: Vec<(u64, u64)> = p[a]
            .as_array()
            .unwrap()
            .iter()
            .zip(p[b].as_array().unwrap())
            .map(|(x, z)| (x.as_u64().unwrap(), z.as_u64().unwrap()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(pairs(&mined.pos), want("a1", "p"), "positive pairs");
    assert_eq!(pairs(&mined.neg), want("a2", "n"), "negative pairs");
    assert!(
        mined.n_pos() < PairMask::all_pairs(&y).n_pos(),
        "the miner drops easy positives"
    );
    // The multi-similarity loss on the mined pairs, the miner run on the current values.
    let f = |e: &Tensor| {
        let s: Vec<f32> = cosine_matrix(e, e)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let m = multi_similarity_pairs(&s, &PairMask::all_pairs(&y), 0.1);
        PairLoss::MULTI_SIMILARITY.loss(e, e, &m).unwrap()
    };
    check_loss(
        "multi_similarity_mined",
        &f,
        &emb,
        &o["losses"]["multi_similarity_mined"],
    );
}

#[test]
fn proxy_anchor_matches_pml() {
    let o = oracle();
    let y = labels(&o["labels"]);
    let emb = matrix(&o["batches"][0]);
    let want = &o["losses"]["proxy_anchor"];
    let proxies = matrix(&o["proxies"]);
    let p = Var::from_tensor(&tensor(&proxies, DType::F64)).unwrap();
    let f = |e: &Tensor| {
        let p = p.as_tensor().to_dtype(e.dtype()).unwrap();
        proxy_anchor(e, &p, &y, 0.1, 32.0).unwrap()
    };
    check_loss("proxy_anchor", &f, &emb, want);
    // The proxies' gradient too: they are trained.
    let e = tensor(&emb, DType::F64);
    let g = proxy_anchor(&e, p.as_tensor(), &y, 0.1, 32.0)
        .unwrap()
        .backward()
        .unwrap();
    let pg = g
        .get(&p)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_close(
        "proxy_anchor proxy grad",
        &pg,
        &matrix(&want["proxy_grad"]).concat(),
        1e-9,
    );
}

/// Three batches through a 20-slot memory (the third wraps the ring), with and without the
/// multi-similarity miner: each step's loss and gradient.
#[test]
fn cross_batch_memory_matches_pml() {
    let o = oracle();
    let y = labels(&o["labels"]);
    let size = o["xbm_size"].as_u64().unwrap() as usize;
    for (key, mined) in [
        ("xbm_multi_similarity", false),
        ("xbm_multi_similarity_mined", true),
    ] {
        let mut xbm = CrossBatchMemory::new(size, 5).unwrap();
        for (step, want) in o[key].as_array().unwrap().iter().enumerate() {
            let emb = matrix(&o["batches"][step]);
            let v = Var::from_tensor(&tensor(&emb, DType::F64)).unwrap();
            let (reference, mut mask) = xbm.step(v.as_tensor(), &y).unwrap();
            if mined {
                let s: Vec<f32> = cosine_matrix(v.as_tensor(), &reference)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
                    .iter()
                    .map(|&s| s as f32)
                    .collect();
                mask = multi_similarity_pairs(&s, &mask, 0.1);
            }
            let l = PairLoss::MULTI_SIMILARITY
                .loss(v.as_tensor(), &reference, &mask)
                .unwrap();
            let got = l.to_scalar::<f64>().unwrap();
            let want_loss = want["loss"].as_f64().unwrap();
            assert_close(
                &format!("{key} step {step} loss"),
                &[got],
                &[want_loss],
                1e-9,
            );
            let g = l.backward().unwrap();
            let grad = g
                .get(&v)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            assert_close(
                &format!("{key} step {step} grad"),
                &grad,
                &matrix(&want["grad"]).concat(),
                1e-9,
            );
            eprintln!(
                "{key} step {step}: twindex {got:.12} PML {want_loss:.12} (memory {})",
                xbm.len()
            );
        }
    }
}

#[test]
fn pair_losses_refuse_bad_shapes() {
    let y = [0u32, 0, 1];
    let mask = PairMask::all_pairs(&y);
    let e = Tensor::zeros((4, 3), DType::F32, &Device::Cpu).unwrap();
    let err = PairLoss::CIRCLE
        .loss(&e, &e, &mask)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("4x3") && err.contains("3x3 pair mask"),
        "{err}"
    );
    let e = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
    let r = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(PairLoss::SUPCON.loss(&e, &r, &mask).is_err());
    let e1 = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    let err = PairLoss::LIFTED
        .loss(&e1, &e1, &mask)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[N, D]"), "{err}");
    let p = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    let err = proxy_anchor(&e, &p, &[0, 1, 2], 0.1, 32.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("labels below C"), "{err}");
    let mut xbm = CrossBatchMemory::new(2, 2).unwrap();
    assert!(
        xbm.enqueue(&e, &y).is_err(),
        "a batch larger than the memory"
    );
}

/// AccuracyCalculator's metrics (queries against references, exact Euclidean kNN, float32 as
/// PML casts them) and NMI / AMI of the deterministic k-means of the queries.
#[test]
fn retrieval_and_clustering_metrics_match_pml() {
    let o = oracle();
    let m = &o["metrics"];
    let flat = |v: &Value| -> Vec<f32> { matrix(v).concat().iter().map(|&x| x as f32).collect() };
    let (q, r) = (flat(&m["query"]), flat(&m["reference"]));
    let (ql, rl) = (labels(&m["query_labels"]), labels(&m["reference_labels"]));
    let dim = matrix(&m["query"])[0].len();
    let (rel, n_rel) = twindex::eval::image::ranked_relevance(&q, &ql, &r, &rl, dim).unwrap();
    use twindex::eval::{map_at_r, mrr_at_k, precision_at_1, r_precision};
    let got = [
        ("precision_at_1", precision_at_1(&rel, &n_rel).unwrap()),
        ("r_precision", r_precision(&rel, &n_rel).unwrap()),
        ("map_at_r", map_at_r(&rel, &n_rel).unwrap()),
        ("mrr", mrr_at_k(&rel, &n_rel, usize::MAX).unwrap()),
    ];
    let clusters = twindex::eval::kmeans_deterministic(&q, dim, 4, 300).unwrap();
    let want_clusters: Vec<usize> = m["cluster_labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(
        clusters, want_clusters,
        "k-means clusters (scikit-learn from the same start)"
    );
    let (nmi, ami) = twindex::eval::cluster_scores(&q, dim, &ql).unwrap();
    for (key, v) in got.into_iter().chain([("nmi", nmi), ("ami", ami)]) {
        let want = m[key].as_f64().unwrap();
        assert!(
            (v - want).abs() <= 1e-5 * want.abs(),
            "{key}: twindex {v} vs PML {want}"
        );
        eprintln!("{key}: twindex {v:.10} PML {want:.10}");
    }
}
