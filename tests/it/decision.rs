//! The one decision rule, `distance <= threshold`, seen from every layer: a pair exactly at the
//! threshold is a duplicate in training/eval figures, the library's query and verify, the CLI's
//! `query` and `verify`, and the server's `/query` and `/verify`; one just below it is not. A
//! negative or non-finite threshold is refused in one line.
//!
//! The vectors are chosen so that the distance is exact in f32: `‖(0,0) - (3,4)‖ = 5`.

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use twindex::corpus::sampler::Pair;
use twindex::index::vecio::{write_npy, Matrix};
use twindex::index::{is_duplicate, Metric};
use twindex::query::{Aggregate, OpenOptions, Query, SearchOptions, Searcher};

/// The distance between the two items, exactly.
const AT: f32 = 5.0;

fn twindex(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_twindex"))
        .args(args)
        .output()
        .expect("run twindex")
}

fn ok(args: &[&str]) -> String {
    let o = twindex(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn npy(path: &Path, row: [f32; 2]) {
    write_npy(
        path,
        &Matrix {
            rows: 1,
            cols: 2,
            data: row.to_vec(),
        },
    )
    .unwrap();
}

/// An l2 index of (0,0) (label "a", id 0) and (3,4) (label "p", id 1).
fn two_item_index(root: &Path) -> std::path::PathBuf {
    let (a, p) = (root.join("a.npy"), root.join("p.npy"));
    npy(&a, [0.0, 0.0]);
    npy(&p, [3.0, 4.0]);
    let dir = root.join("idx");
    let d = dir.to_str().unwrap();
    ok(&[
        "index",
        "build",
        "--vectors",
        a.to_str().unwrap(),
        "--metric",
        "l2",
        "--out",
        d,
    ]);
    ok(&[
        "index",
        "add",
        "--index",
        d,
        "--label",
        "p",
        "--vectors",
        p.to_str().unwrap(),
    ]);
    dir
}

#[test]
fn the_rule_itself_and_threshold_checks() {
    assert!(is_duplicate(AT, AT));
    assert!(!is_duplicate(AT, AT.next_down()));
    assert!(is_duplicate(0.0, 0.0));
    for m in [Metric::L2, Metric::Cosine, Metric::Dot] {
        assert!(m.check_threshold(f32::NAN).is_err());
        assert!(m.check_threshold(f32::INFINITY).is_err());
        assert_eq!(m.check_threshold(0.0).unwrap(), 0.0);
    }
    assert!(Metric::L2.check_threshold(-1.0).is_err());
    assert!(Metric::Cosine.check_threshold(-0.5).is_err());
    // dot distances (1 - a.b) are negative for long vectors: a negative threshold is meaningful
    assert_eq!(Metric::Dot.check_threshold(-0.5).unwrap(), -0.5);
}

#[test]
fn training_and_eval_figures_count_a_pair_at_the_threshold_as_similar() {
    let pairs = [Pair { a: 0, b: 1, y: 1.0 }, Pair { a: 0, b: 2, y: 0.0 }];
    let dist = [AT, 7.0];
    assert_eq!(twindex::train::image::pair_accuracy(&dist, &pairs, AT), 1.0);
    assert_eq!(
        twindex::train::image::pair_accuracy(&dist, &pairs, AT.next_down()),
        0.5
    );
    // the best threshold separates them and decides them by the same rule
    let (acc, t) = twindex::train::image::best_threshold_accuracy(&dist, &pairs);
    assert_eq!(acc, 1.0);
    assert!((AT..7.0).contains(&t), "{t}");
    // adjacent floats: the midpoint rounds onto the larger one, which must stay out
    let up = AT.next_up();
    let (acc, t) = twindex::train::image::best_threshold_accuracy(&[AT, up], &pairs);
    assert_eq!(acc, 1.0, "threshold {t}");
    assert!(is_duplicate(AT, t) && !is_duplicate(up, t), "{t}");
}

#[test]
fn query_verify_cli_and_server_agree_at_the_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = two_item_index(tmp.path());
    let d = dir.to_str().unwrap();

    // the library
    let s = Searcher::open(&dir, &OpenOptions::default()).unwrap();
    let origin = [0.0f32, 0.0];
    for (t, dup) in [(AT, true), (AT.next_down(), false)] {
        let o = SearchOptions {
            k: 2,
            threshold: Some(t),
            ..Default::default()
        };
        let a = s.query(&Query::Vector(&origin), &o).unwrap();
        let far = a.results.iter().find(|h| h.id == 1).expect("item 1 found");
        assert_eq!(far.distance, AT);
        assert_eq!(far.duplicate, dup, "library query at {t}");
        let v = s
            .verify(&Query::Vector(&origin), "p", Some(t), Aggregate::Min)
            .unwrap();
        assert_eq!(v.distance, AT);
        assert_eq!(v.accepted, dup, "library verify at {t}");
    }
    let bad = SearchOptions {
        threshold: Some(-1.0),
        ..Default::default()
    };
    let e = s.query(&Query::Vector(&origin), &bad).unwrap_err();
    assert!(e.to_string().contains("never negative"), "{e}");
    drop(s);

    // the CLI
    let q: Value = serde_json::from_str(&ok(&[
        "query",
        "--index",
        d,
        "--item",
        "0",
        "--k",
        "2",
        "--threshold",
        "5",
        "--json",
    ]))
    .unwrap();
    let hit = q["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == 1)
        .expect("item 1 in the CLI answer")
        .clone();
    assert_eq!(hit["duplicate"], json!(true), "CLI query: {q}");
    for bad in ["-1", "NaN", "inf"] {
        let o = twindex(&["query", "--index", d, "--item", "0", "--threshold", bad]);
        assert!(!o.status.success(), "--threshold {bad} accepted");
        // one line saying why (clap adds its "--help" hint below a parse error)
        let err = String::from_utf8_lossy(&o.stderr);
        let first = err.lines().next().unwrap_or("");
        assert!(first.contains("threshold"), "{err}");
        assert!(
            first.contains("finite") || first.contains("never negative"),
            "{err}"
        );
    }

    // the server
    let srv = crate::serve::Server::start(&["--index", &format!("t={d}")]);
    let a = srv.post_ok(
        "/v1/indexes/t/query",
        &json!({"vector": [0.0, 0.0], "k": 2, "threshold": 5.0}),
    );
    let hit = a["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == 1)
        .expect("item 1 in the server's answer")
        .clone();
    assert_eq!(hit["duplicate"], json!(true), "server query: {a}");
    let v = srv.post_ok(
        "/v1/indexes/t/verify",
        &json!({"vector": [0.0, 0.0], "label": "p", "threshold": 5.0}),
    );
    assert_eq!(v["accepted"], json!(true), "server verify: {v}");
    let v = srv.post_ok(
        "/v1/indexes/t/verify",
        &json!({"vector": [0.0, 0.0], "label": "p", "threshold": AT.next_down()}),
    );
    assert_eq!(v["accepted"], json!(false), "server verify below: {v}");
    srv.stop();
}
