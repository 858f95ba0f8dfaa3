//! `twindex mine-negatives` end to end against an exact oracle written out here: the index's
//! negatives for QQP duplicate pairs are the ones a brute-force ranking of every indexed text
//! gives under the same rules (ranks, known positives by duplicate group, relative margin), the
//! file is written new and never over another, and `train text --loss mnrl` trains on it.

use crate::cli::{ok_json, twindex};
use crate::text_train::{MODEL, QQP_TRAIN};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use twindex::corpus::pairs::read_pairs_tsv;
use twindex::model::TextEncoder;

/// The texts connected to `t` by duplicate pairs (depth-first search over the pairs).
fn group_of<'a>(t: &'a str, edges: &HashMap<&'a str, Vec<&'a str>>) -> HashSet<&'a str> {
    let (mut seen, mut stack) = (HashSet::from([t]), vec![t]);
    while let Some(x) = stack.pop() {
        for &y in edges.get(x).into_iter().flatten() {
            if seen.insert(y) {
                stack.push(y);
            }
        }
    }
    seen
}

#[test]
#[cfg_attr(
    not(all(has_minilm, has_qqp)),
    ignore = "needs ../shared: models/all-MiniLM-L6-v2 and corpora/pairs/qqp-10k.train.tsv"
)]
fn mined_negatives_match_an_exact_ranking_and_train_mnrl() {
    crate::require_input(Path::new(MODEL));
    crate::require_input(Path::new(QQP_TRAIN));
    let dir = tempfile::tempdir().unwrap();
    let d = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    // 300 QQP pairs; the index holds each distinct text once.
    let all = std::fs::read_to_string(QQP_TRAIN).unwrap();
    let head: String = all.lines().take(301).map(|l| format!("{l}\n")).collect();
    std::fs::write(d("p.tsv"), &head).unwrap();
    let pairs = read_pairs_tsv(Path::new(&d("p.tsv"))).unwrap();
    let mut texts: Vec<&str> = Vec::new();
    for p in &pairs {
        for t in [p.a.as_str(), p.b.as_str()] {
            if !texts.contains(&t) {
                texts.push(t);
            }
        }
    }
    std::fs::write(d("t.txt"), texts.join("\n") + "\n").unwrap();
    let (m, t, idx) = (MODEL.to_string(), d("t.txt"), d("idx"));
    ok_json(&[
        "index",
        "build",
        "--text",
        &t,
        "--model",
        &m,
        "--backend",
        "flat",
        "--out",
        &idx,
        "--json",
    ]);
    let (first, last, n_neg, rel) = (2usize, 20usize, 2usize, 0.05f32);
    let mine = |out: &str| {
        twindex(&[
            "mine-negatives",
            "--index",
            &idx,
            "--pairs",
            &d("p.tsv"),
            "--ranks",
            "2..20",
            "--negatives",
            "2",
            "--relative-margin",
            "0.05",
            "--out",
            out,
            "--json",
        ])
    };
    let o = mine(&d("m.tsv"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    println!("{report}");

    // The oracle: cosine similarity of unit embeddings, every indexed text ranked.
    let enc = TextEncoder::load(Path::new(MODEL)).unwrap();
    let emb = enc.encode(&texts, 32).unwrap();
    let dim = enc.dim();
    let at: HashMap<&str, usize> = texts.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    let sim = |a: &str, b: &str| -> f32 {
        let (x, y) = (at[a] * dim, at[b] * dim);
        (0..dim).map(|k| emb[x + k] * emb[y + k]).sum()
    };
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for p in pairs.iter().filter(|p| p.duplicate) {
        edges.entry(&p.a).or_default().push(&p.b);
        edges.entry(&p.b).or_default().push(&p.a);
    }
    let mut want: Vec<(String, String, Vec<String>)> = Vec::new();
    for p in pairs.iter().filter(|p| p.duplicate) {
        let group = group_of(&p.a, &edges);
        let pos = sim(&p.a, &p.b);
        let mut ranked: Vec<&str> = texts.iter().copied().filter(|&c| c != p.a).collect();
        ranked.sort_by(|x, y| sim(&p.a, y).total_cmp(&sim(&p.a, x)));
        let negs: Vec<String> = ranked[first - 1..last]
            .iter()
            .filter(|c| !group.contains(*c) && sim(&p.a, c) <= pos - pos.abs() * rel)
            .take(n_neg)
            .map(|c| c.to_string())
            .collect();
        if negs.len() == n_neg {
            want.push((p.a.clone(), p.b.clone(), negs));
        }
    }
    let got = read_pairs_tsv(Path::new(&d("m.tsv"))).unwrap();
    assert_eq!(got.len(), want.len(), "rows");
    assert_eq!(report["rows"], want.len());
    assert!(
        want.len() > 50,
        "too few rows to mean anything: {}",
        want.len()
    );
    for (g, (a, b, negs)) in got.iter().zip(&want) {
        assert_eq!((&g.a, &g.b), (a, b));
        assert_eq!(g.negatives.len(), negs.len(), "anchor {a:?}");
        for (x, y) in g.negatives.iter().zip(negs) {
            // Equal, or a tie in float rounding between the index and the oracle.
            let close = (sim(a, x) - sim(a, y)).abs() < 1e-5;
            assert!(x == y || close, "anchor {a:?}: got {x:?}, the oracle {y:?}");
        }
    }

    // Never over an existing file: refused, the file untouched.
    let before = std::fs::read(d("m.tsv")).unwrap();
    let o = mine(&d("m.tsv"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(std::fs::read(d("m.tsv")).unwrap(), before);

    // MNRL trains on the rows: 16 rows, each anchor, positive and 2 negatives through the net.
    let (mined, tuned, tuned2) = (d("m.tsv"), d("tuned"), d("tuned2"));
    let train = |loss: &str, out: &str, more: &[&str]| {
        let mut args = vec![
            "train", "text", "--pairs", &mined, "--base", &m, "--loss", loss,
        ];
        args.extend(["--out", out]);
        args.extend(more);
        twindex(&args)
    };
    let o = train(
        "mnrl",
        &tuned,
        &["--batch", "8", "--max-train", "16", "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["history"][0]["texts"], 16 * 4, "{r}");
    assert!(r["history"][0]["loss"].as_f64().unwrap().is_finite());
    // Another loss is refused rather than silently dropping the negatives.
    let o = train("contrastive", &tuned2, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("only --loss mnrl"),
        "{err}"
    );
    assert!(!Path::new(&d("tuned2")).exists());
}
