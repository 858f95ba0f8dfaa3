//! The `twindex` binary end to end on small inputs: JSON contract, exit codes, and clear errors
//! for bad input (wrong dimension, corrupt index, empty input, unknown id, truncated IDX).

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use twindex::index::vecio::{write_npy, Matrix};

pub fn twindex(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_twindex"))
        .args(args)
        .env("CI", "1")
        .output()
        .expect("run twindex")
}

pub fn ok_json(args: &[&str]) -> Value {
    let o = twindex(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

pub fn fails_with(args: &[&str], needle: &str) {
    let o = twindex(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} should fail");
    assert!(
        err.contains(needle),
        "{args:?}: stderr {err:?} should name {needle:?}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
}

/// 300 seeded clustered vectors in 16-d.
fn vectors(rows: usize) -> Matrix<f32> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut data = Vec::with_capacity(rows * 16);
    for r in 0..rows {
        for d in 0..16 {
            data.push(((r % 7) * (d % 3)) as f32 + 0.1 * rnd());
        }
    }
    Matrix {
        rows,
        cols: 16,
        data,
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn vector_index_build_query_delete_dedup_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("v.npy");
    write_npy(&npy, &vectors(300)).unwrap();
    let idx = dir.path().join("idx");
    let b = ok_json(&[
        "index",
        "build",
        "--vectors",
        p(&npy),
        "--out",
        p(&idx),
        "--json",
    ]);
    assert_eq!(b["items"], 300);
    assert_eq!(b["dim"], 16);

    // An item queried with itself comes back first at distance 0.
    let q = ok_json(&[
        "query",
        "--index",
        p(&idx),
        "--item",
        "42",
        "--k",
        "5",
        "--threshold",
        "0.5",
        "--json",
    ]);
    let r = q["results"].as_array().unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(r[0]["id"], 42);
    assert_eq!(r[0]["distance"].as_f64().unwrap(), 0.0);
    assert_eq!(r[0]["similarity"].as_f64().unwrap(), 1.0);
    assert_eq!(r[0]["duplicate"], true);
    for h in r {
        for key in ["id", "label", "distance", "similarity", "duplicate"] {
            assert!(h.get(key).is_some(), "result lacks {key}: {h}");
        }
    }

    // Dedup: items of the same cluster (r % 7) are within 0.5 of each other (noise < 0.1 a dim).
    let out = dir.path().join("dups.json");
    let d = ok_json(&[
        "dedup",
        "--index",
        p(&idx),
        "--threshold",
        "0.5",
        "--out",
        p(&out),
        "--json",
    ]);
    assert!(d["pairs"].as_u64().unwrap() > 0);
    assert!(out.exists());

    // Delete, then the id is gone and deleting it again is a clear error.
    assert!(twindex(&["index", "delete", "--index", p(&idx), "42"])
        .status
        .success());
    let q = ok_json(&[
        "query",
        "--index",
        p(&idx),
        "--item",
        "43",
        "--k",
        "300",
        "--json",
    ]);
    assert!(q["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["id"] != 42));
    fails_with(&["index", "delete", "--index", p(&idx), "42"], "42");
    fails_with(&["query", "--index", p(&idx), "--item", "9999"], "9999");

    // Bench with queries of the wrong dimension.
    let q8 = dir.path().join("q8.npy");
    write_npy(
        &q8,
        &Matrix {
            rows: 2,
            cols: 8,
            data: vec![0.0; 16],
        },
    )
    .unwrap();
    assert!(twindex(&["index", "compact", "--index", p(&idx)])
        .status
        .success());
    fails_with(
        &["bench", "--index", p(&idx), "--queries", p(&q8)],
        "dimension",
    );

    // Building over an existing index is refused and leaves it intact.
    fails_with(
        &["index", "build", "--vectors", p(&npy), "--out", p(&idx)],
        "already holds an index",
    );
    assert!(twindex(&["query", "--index", p(&idx), "--item", "1"])
        .status
        .success());

    // An empty input.
    let empty = dir.path().join("empty.npy");
    write_npy(
        &empty,
        &Matrix {
            rows: 0,
            cols: 16,
            data: vec![],
        },
    )
    .unwrap();
    fails_with(
        &[
            "index",
            "build",
            "--vectors",
            p(&empty),
            "--out",
            p(&dir.path().join("e")),
        ],
        "empty.npy",
    );
    assert!(!dir.path().join("e").exists(), "nothing left behind");

    // Corrupt a data file: `index verify` names it (opening reads sizes and headers only).
    let m: Value =
        serde_json::from_slice(&std::fs::read(idx.join("manifest.json")).unwrap()).unwrap();
    let vfile = idx.join(m["files"]["vectors"]["name"].as_str().unwrap());
    let mut bytes = std::fs::read(&vfile).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&vfile, &bytes).unwrap();
    fails_with(
        &["index", "verify", "--index", p(&idx)],
        vfile.file_name().unwrap().to_str().unwrap(),
    );
}

#[test]
fn bad_corpora_and_models_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A corpus folder whose train images file is truncated.
    let c = dir.path().join("c");
    std::fs::create_dir(&c).unwrap();
    let img = twindex::corpus::idx::encode_idx(&[2, 28, 28], &[0u8; 2 * 784]);
    let lab = twindex::corpus::idx::encode_idx(&[2], &[0, 1]);
    std::fs::write(c.join("train-images-idx3-ubyte"), &img[..img.len() - 100]).unwrap();
    std::fs::write(c.join("train-labels-idx1-ubyte"), &lab).unwrap();
    std::fs::write(c.join("t10k-images-idx3-ubyte"), &img).unwrap();
    std::fs::write(c.join("t10k-labels-idx1-ubyte"), &lab).unwrap();
    let out = dir.path().join("m");
    fails_with(
        &[
            "train",
            "image",
            "--corpus",
            p(&c),
            "--epochs",
            "1",
            "--out",
            p(&out),
        ],
        "train-images-idx3-ubyte",
    );
    assert!(!out.exists(), "nothing written on failure");
    // A missing model.
    fails_with(
        &["eval", "--model", p(&dir.path().join("nope"))],
        "config.json",
    );
    fails_with(
        &[
            "index",
            "build",
            "--model",
            p(&dir.path().join("nope")),
            "--out",
            p(&dir.path().join("i")),
        ],
        "config.json",
    );
    assert!(!dir.path().join("i").exists());
}

#[test]
#[cfg_attr(not(has_minilm), ignore = "needs ../shared/models/all-MiniLM-L6-v2")]
fn eval_text_pairs_reports_the_cli_keys() {
    let model = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/models/all-MiniLM-L6-v2"
    ));
    crate::require_input(&model.join("model.safetensors"));
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("p.tsv");
    // The seed's examples: same question in other words, and other questions in the same words.
    std::fs::write(
        &pairs,
        "q1\tq2\tis_duplicate\nHow old are you?\tWhat is your age?\t1\nWhere are you living?\tWhere are you going?\t0\nHow do I learn Rust?\tWhat is the best way to learn Rust?\t1\nHow do I learn Rust?\tHow do I cook rice?\t0\n",
    )
    .unwrap();
    let r = ok_json(&["eval", "--model", p(model), "--pairs", p(&pairs), "--json"]);
    for key in [
        "pair_accuracy",
        "threshold",
        "roc_auc",
        "average_precision",
        "best_f1",
        "best_f1_threshold",
    ] {
        assert!(r.get(key).is_some(), "eval --pairs lacks {key}: {r}");
    }
    // MiniLM ranks both duplicates above both non-duplicates here.
    assert_eq!(r["roc_auc"].as_f64().unwrap(), 1.0, "{r}");

    // Retrieval: the encoder finds "What is your age?" for "How old are you?" (no shared
    // content word); BM25 prefers the questions sharing "are you".
    let r = ok_json(&[
        "eval",
        "--model",
        p(model),
        "--pairs",
        p(&pairs),
        "--retrieval",
        "--json",
    ]);
    assert_eq!(r["queries"], 4, "{r}");
    assert_eq!(r["encoder"]["recall_at_1"].as_f64().unwrap(), 1.0, "{r}");
    assert!(r["bm25"]["recall_at_1"].as_f64().unwrap() < 1.0, "{r}");

    // The hybrid is reciprocal-rank fusion of the two rankings (k = 60): recomputed here from
    // the encoder's cosines and BM25's hits, it gives the figures the CLI reports.
    let want = hybrid_by_hand(model);
    for (key, w) in [("recall_at_1", want.0), ("mrr_at_10", want.1)] {
        let got = r["hybrid_rrf"][key].as_f64().unwrap();
        assert!(
            (got - w).abs() < 1e-12,
            "hybrid_rrf {key}: {got}, by hand {w}: {r}"
        );
    }
}

/// Recall@1 and MRR@10 of the RRF hybrid on the pairs of `eval_text_pairs_reports_the_cli_keys`,
/// computed independently of the CLI: each ranking of the other six texts (the encoder's by
/// cosine, BM25's by its hits: texts without a shared word are absent), fused by
/// score(t) = sum over the rankings holding t of 1 / (60 + rank), rank from 1, ties by corpus
/// position.
fn hybrid_by_hand(model: &Path) -> (f64, f64) {
    // The distinct texts in order of first appearance; the queries are the texts with a
    // duplicate, each relevant item its one partner.
    let texts = [
        "How old are you?",
        "What is your age?",
        "Where are you living?",
        "Where are you going?",
        "How do I learn Rust?",
        "What is the best way to learn Rust?",
        "How do I cook rice?",
    ];
    let queries = [(0usize, 1usize), (1, 0), (4, 5), (5, 4)];
    let enc = twindex::model::TextEncoder::load(model).unwrap();
    let emb = enc.encode(&texts, 32).unwrap();
    let d = enc.dim();
    let cos = |a: usize, b: usize| -> f32 {
        emb[a * d..(a + 1) * d]
            .iter()
            .zip(&emb[b * d..(b + 1) * d])
            .map(|(x, y)| x * y)
            .sum()
    };
    let lex = twindex::index::lexical::LexicalIndex::build(
        texts.iter().enumerate().map(|(i, t)| (i as u64, *t)),
    )
    .unwrap();
    let (mut hits_at_1, mut rr) = (0.0, 0.0);
    for &(q, relevant) in &queries {
        let mut dense: Vec<usize> = (0..texts.len()).filter(|&j| j != q).collect();
        dense.sort_by(|&a, &b| cos(q, b).total_cmp(&cos(q, a)).then(a.cmp(&b)));
        let bm25: Vec<usize> = lex
            .search(texts[q], texts.len())
            .unwrap()
            .into_iter()
            .map(|(i, _)| i as usize)
            .filter(|&i| i != q)
            .collect();
        let mut fused = vec![0f64; texts.len()];
        for ranking in [&dense, &bm25] {
            for (r, &i) in ranking.iter().enumerate() {
                fused[i] += 1.0 / (60.0 + (r + 1) as f64);
            }
        }
        let mut hybrid: Vec<usize> = (0..texts.len()).filter(|&j| fused[j] > 0.0).collect();
        hybrid.sort_by(|&a, &b| fused[b].total_cmp(&fused[a]).then(a.cmp(&b)));
        let rank = hybrid.iter().position(|&i| i == relevant).unwrap() + 1;
        println!("query {q}: dense {dense:?}, bm25 {bm25:?}, hybrid {hybrid:?}");
        hits_at_1 += (rank == 1) as u8 as f64;
        if rank <= 10 {
            rr += 1.0 / rank as f64;
        }
    }
    let n = queries.len() as f64;
    (hits_at_1 / n, rr / n)
}
