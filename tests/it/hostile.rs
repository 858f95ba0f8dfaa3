//! Inputs a hostile user tried (issue 25's sweep): each is a clear one-line error or a right
//! answer, never a panic (exit 101) or a hang.

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use twindex::index::vecio::{write_npy, Matrix};

fn twindex(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_twindex"))
        .args(args)
        .output()
        .expect("run twindex")
}

/// The command fails with exit code 1 (not a panic's 101) and says why in one error line (after
/// any progress lines), which contains every one of `words`.
fn refused(args: &[&str], words: &[&str]) {
    let o = twindex(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    let first = err.lines().find(|l| l.contains("error")).unwrap_or("");
    for w in words {
        assert!(first.contains(w), "{args:?}: {first:?} lacks {w:?}");
    }
}

fn vector_index(root: &Path) -> String {
    let npy = root.join("v.npy");
    write_npy(
        &npy,
        &Matrix {
            rows: 3,
            cols: 2,
            data: vec![0.0, 1.0, 1.0, 0.0, 1.0, 1.0],
        },
    )
    .unwrap();
    let dir = root.join("idx");
    let o = twindex(&[
        "index",
        "build",
        "--vectors",
        npy.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir.to_str().unwrap().to_string()
}

#[test]
fn serve_refuses_settings_that_would_refuse_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vector_index(tmp.path());
    refused(
        &["serve", "--index", &format!("t={d}"), "--timeout-ms", "0"],
        &["timeout", "0"],
    );
    refused(
        &[
            "serve",
            "--index",
            &format!("a={d}"),
            "--index",
            &format!("b={d}"),
        ],
        &["already served", "\"a\""],
    );
    let nope = tmp.path().join("nope");
    refused(
        &["serve", "--index", &format!("t={}", nope.display())],
        &["no twindex index there"],
    );
}

#[test]
fn serve_answers_a_body_shorter_than_its_content_length_and_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vector_index(tmp.path());
    let srv = crate::serve::Server::start(&["--index", &format!("t={d}"), "--timeout-ms", "500"]);
    let addr = srv.addr().to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = json!({"vector": [0.0, 1.0]}).to_string();
    // announce 100 bytes more than are sent, then wait
    write!(
        s,
        "POST /v1/indexes/t/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len() + 100
    )
    .unwrap();
    let t = Instant::now();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer); // ends when the server closes the connection
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    srv.stop();
}

/// A folder of uncompressed IDX files (train and t10k) of `n` images of `side x side`.
fn idx_corpus(dir: &Path, n: usize, side: usize) {
    use twindex::corpus::idx::encode_idx;
    std::fs::create_dir_all(dir).unwrap();
    for set in ["train", "t10k"] {
        let px = vec![7u8; n * side * side];
        let images = encode_idx(&[n, side, side], &px);
        std::fs::write(dir.join(format!("{set}-images-idx3-ubyte")), images).unwrap();
        let mut labels = vec![0, 0, 8, 1];
        labels.extend((n as u32).to_be_bytes());
        labels.extend((0..n).map(|i| (i % 10) as u8));
        std::fs::write(dir.join(format!("{set}-labels-idx1-ubyte")), labels).unwrap();
    }
}

#[test]
fn images_of_another_size_than_the_encoder_are_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("small");
    idx_corpus(&corpus, 5, 10);
    let out = tmp.path().join("idx");
    let o = twindex(&[
        "index",
        "build",
        "--corpus",
        corpus.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("another size"), "{err}");
    assert!(
        !out.join("manifest.json").exists(),
        "a half-built index was left"
    );
}

#[test]
fn all_zero_vectors_are_refused_where_vectors_are_normalised() {
    use twindex::query::{OpenOptions, Query, SearchOptions, Searcher};
    let tmp = tempfile::tempdir().unwrap();
    let npy = |name: &str, data: Vec<f32>| {
        let p = tmp.path().join(name);
        let rows = data.len() / 2;
        write_npy(
            &p,
            &Matrix {
                rows,
                cols: 2,
                data,
            },
        )
        .unwrap();
        p.to_str().unwrap().to_string()
    };
    let with_zero = npy("z.npy", vec![1.0, 0.0, 0.0, 0.0]);
    let out = tmp.path().join("cos");
    let o = out.to_str().unwrap();
    refused(
        &[
            "index",
            "build",
            "--vectors",
            &with_zero,
            "--metric",
            "cosine",
            "--out",
            o,
        ],
        &["row 1 is all zeros"],
    );
    assert!(!out.exists(), "a refused build left {o}");
    // an l2 index takes it: the origin is a point like any other
    let l2 = tmp.path().join("l2");
    let o2 = twindex(&[
        "index",
        "build",
        "--vectors",
        &with_zero,
        "--out",
        l2.to_str().unwrap(),
    ]);
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    // a cosine index refuses a zero vector added or queried
    let fine = npy("f.npy", vec![1.0, 0.0, 0.0, 1.0]);
    let o3 = twindex(&[
        "index",
        "build",
        "--vectors",
        &fine,
        "--metric",
        "cosine",
        "--out",
        o,
    ]);
    assert!(
        o3.status.success(),
        "{}",
        String::from_utf8_lossy(&o3.stderr)
    );
    let zero = npy("zero.npy", vec![0.0, 0.0]);
    refused(
        &["index", "add", "--index", o, "--vectors", &zero],
        &["all zeros"],
    );
    let s = Searcher::open(&out, &OpenOptions::default()).unwrap();
    assert_eq!(s.len(), 2, "the refused add left an item");
    let e = s
        .query(&Query::Vector(&[0.0, 0.0]), &SearchOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("all zeros"), "{e}");
}

#[test]
fn a_normalised_aggregate_with_one_reference_is_refused() {
    use twindex::query::{Aggregate, OpenOptions, Query, Searcher};
    let tmp = tempfile::tempdir().unwrap();
    let d = vector_index(tmp.path());
    let one = tmp.path().join("one.npy");
    write_npy(
        &one,
        &Matrix {
            rows: 1,
            cols: 2,
            data: vec![2.0, 2.0],
        },
    )
    .unwrap();
    let o = twindex(&[
        "index",
        "add",
        "--index",
        &d,
        "--label",
        "ann",
        "--vectors",
        one.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = Searcher::open(Path::new(&d), &OpenOptions::default()).unwrap();
    let q = Query::Vector(&[2.0, 2.0]);
    let e = s
        .verify(&q, "ann", Some(0.5), Aggregate::MinNorm)
        .unwrap_err();
    assert!(e.to_string().contains("needs at least 2 references"), "{e}");
    // plain min with one reference is fine
    assert!(
        s.verify(&q, "ann", Some(0.5), Aggregate::Min)
            .unwrap()
            .accepted
    );
}

#[test]
fn dedup_tsv_escapes_tabs_and_newlines_in_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vector_index(tmp.path());
    let two = tmp.path().join("two.npy");
    write_npy(
        &two,
        &Matrix {
            rows: 2,
            cols: 2,
            data: vec![5.0, 5.0, 5.0, 5.0],
        },
    )
    .unwrap();
    let o = twindex(&[
        "index",
        "add",
        "--index",
        &d,
        "--label",
        "tab\there\nnewline",
        "--vectors",
        two.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = tmp.path().join("dups.tsv");
    let o = twindex(&[
        "dedup",
        "--index",
        &d,
        "--threshold",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "header + the one identical pair: {text:?}");
    assert!(lines.iter().all(|l| l.split('\t').count() == 7), "{text:?}");
    assert!(lines[1].contains("tab\\there\\nnewline"), "{text:?}");
}

#[test]
fn an_orl_fold_that_does_not_exist_and_an_absurd_dlib_padding_are_refused() {
    let orl = concat!(env!("CARGO_MANIFEST_DIR"), "/corpora/orl-faces");
    refused(
        &[
            "eval",
            "--protocol",
            "orl",
            "--raw",
            "--corpus",
            orl,
            "--folds",
            "7",
            "--json",
        ],
        &["--folds 7", "0 to 3"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("face");
    for bad in ["-5", "1e30", "NaN"] {
        refused(
            &[
                "import",
                "dlib-face",
                "--models",
                tmp.path().to_str().unwrap(),
                &format!("--padding={bad}"),
                "--out",
                out.to_str().unwrap(),
            ],
            &["--padding"],
        );
    }
    assert!(!out.exists(), "a refused import left {}", out.display());
}

#[test]
fn eval_never_replaces_pictures_it_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let plots = tmp.path().join("mine");
    std::fs::create_dir_all(&plots).unwrap();
    std::fs::write(plots.join("roc.svg"), b"my own drawing").unwrap();
    refused(
        &[
            "eval",
            "--corpus",
            "mnist",
            "--plots",
            plots.to_str().unwrap(),
            "--json",
        ],
        &["roc.svg", "not written by `twindex eval`"],
    );
    assert_eq!(
        std::fs::read(plots.join("roc.svg")).unwrap(),
        b"my own drawing"
    );
    assert!(!plots.join("pairs.png").exists());
}

/// Negative numbers reach the flag's own check (they got clap's "unexpected argument"), files
/// named by `bench --write-gt` / `--plot` are never replaced, and a cosine index finds an exact
/// duplicate at `--threshold 0` (an item was at 1.19e-7 from itself).
#[test]
fn negative_numbers_named_bench_files_kept_and_cosine_self_match_at_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let d = vector_index(tmp.path());
    for (args, flag) in [
        (
            vec!["query", "--index", &d, "--item", "0", "--k", "-1"],
            "--k",
        ),
        (
            vec!["query", "--index", &d, "--item", "0", "--ef", "-5"],
            "--ef",
        ),
    ] {
        let o = twindex(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("invalid value '-") && err.contains(flag),
            "{err}"
        );
    }
    refused(
        &[
            "calibrate",
            "--index",
            &d,
            "--corpus",
            "mnist",
            "--target-far",
            "-0.1",
        ],
        &["--target-far", "[0, 1]"],
    );
    let q = tmp.path().join("q.npy");
    std::fs::copy(tmp.path().join("v.npy"), &q).unwrap();
    for flag in ["--write-gt", "--plot"] {
        let mine = tmp.path().join(format!("mine{flag}"));
        std::fs::write(&mine, b"a user's file").unwrap();
        let m = mine.to_str().unwrap();
        refused(
            &[
                "bench",
                "--index",
                &d,
                "--queries",
                q.to_str().unwrap(),
                flag,
                m,
            ],
            &[flag, "already exists"],
        );
        assert_eq!(std::fs::read(&mine).unwrap(), b"a user's file");
    }
    let npy = tmp.path().join("c.npy");
    let row: Vec<f32> = (0..384)
        .map(|i| ((i * 7919) % 101) as f32 / 37.0 - 1.3)
        .collect();
    let data: Vec<f32> = (0..50).flat_map(|_| row.clone()).collect();
    write_npy(
        &npy,
        &Matrix {
            rows: 50,
            cols: 384,
            data,
        },
    )
    .unwrap();
    let c = tmp.path().join("cos");
    let (n, cd) = (npy.to_str().unwrap(), c.to_str().unwrap());
    let o = twindex(&[
        "index",
        "build",
        "--vectors",
        n,
        "--metric",
        "cosine",
        "--out",
        cd,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = twindex(&[
        "query",
        "--index",
        cd,
        "--item",
        "3",
        "--k",
        "1",
        "--threshold",
        "0",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["results"][0]["distance"], json!(0.0), "{v}");
    assert_eq!(v["results"][0]["duplicate"], json!(true), "{v}");
}

/// One `index add` is one all-or-nothing write (issue 25: a failure, or kill -9, part-way
/// through 2,000 items left the first 1,024 committed, and a retry duplicated them): 1,100 IDX
/// images and a missing file after them add nothing. Pixels from a seeded XorShift (seed 25).
#[test]
fn an_add_that_fails_part_way_adds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut state = 25u64;
    let mut pixels = |n: usize| -> Vec<u8> {
        (0..n * 784)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect()
    };
    let c = tmp.path().join("c");
    std::fs::create_dir(&c).unwrap();
    let enc = twindex::corpus::idx::encode_idx;
    let labels = enc(&[10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for split in ["train", "t10k"] {
        std::fs::write(
            c.join(format!("{split}-images-idx3-ubyte")),
            enc(&[10, 28, 28], &pixels(10)),
        )
        .unwrap();
        std::fs::write(c.join(format!("{split}-labels-idx1-ubyte")), &labels).unwrap();
    }
    let idx = tmp.path().join("idx");
    let d = idx.to_str().unwrap();
    let o = twindex(&[
        "index",
        "build",
        "--corpus",
        c.to_str().unwrap(),
        "--out",
        d,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let more = tmp.path().join("more-images-idx3-ubyte");
    std::fs::write(&more, enc(&[1100, 28, 28], &pixels(1100))).unwrap();
    let mut args: Vec<String> = ["index", "add", "--index", d].map(String::from).to_vec();
    args.extend((0..1100).map(|i| format!("{}:{i}", more.display())));
    args.push(tmp.path().join("missing.png").display().to_string());
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&a, &["missing.png"]);
    let o = twindex(&["index", "stats", "--index", d, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["items"],
        json!(10),
        "nothing of the failed add is in the index: {v}"
    );
}

/// A sentence-transformers folder where an image encoder is expected is named a text model
/// (it said "config.json: invalid JSON: missing field `format`" of a valid file).
#[test]
#[cfg_attr(not(has_minilm), ignore = "needs ../shared/models/all-MiniLM-L6-v2")]
fn a_text_model_given_as_an_image_encoder_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let minilm = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/models/all-MiniLM-L6-v2"
    );
    let out = tmp.path().join("i");
    refused(
        &[
            "index",
            "build",
            "--model",
            minilm,
            "--corpus",
            "mnist",
            "--out",
            out.to_str().unwrap(),
        ],
        &["a text model (sentence-transformers folder)"],
    );
    refused(
        &["eval", "--model", minilm, "--corpus", "mnist"],
        &["a text model"],
    );
    assert!(!out.exists());
}

/// `--dtw-tempo-weight NaN` (or a negative weight) is refused where it is parsed, naming the
/// flag; it used to surface as "scores[0] is NaN" deep in the evaluation.
#[test]
fn a_nan_or_negative_dtw_weight_is_refused_at_the_flag() {
    for v in ["NaN", "-1", "inf"] {
        let o = twindex(&[
            "eval",
            "--protocol",
            "signatures-online",
            "--dtw-tempo-weight",
            v,
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{v}: {err}");
        assert!(
            err.contains("--dtw-tempo-weight") && err.contains("expected a finite weight"),
            "{v}: {err}"
        );
    }
}

/// A dedup threshold within which every pair lies (here 2,100 items, 2.2 M pairs at distance
/// 100 on a cosine index) is refused in one line before anything is written, not written out
/// without bound.
#[test]
fn a_dedup_threshold_that_takes_in_everything_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let npy = tmp.path().join("v.npy");
    let n = 2100;
    let data: Vec<f32> = (0..n * 2)
        .map(|i| 1.0 + ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    write_npy(
        &npy,
        &Matrix {
            rows: n,
            cols: 2,
            data,
        },
    )
    .unwrap();
    let dir = tmp.path().join("idx");
    let (npy, dir) = (npy.to_str().unwrap(), dir.to_str().unwrap());
    let o = twindex(&[
        "index",
        "build",
        "--vectors",
        npy,
        "--metric",
        "cosine",
        "--out",
        dir,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = tmp.path().join("all.tsv");
    refused(
        &[
            "dedup",
            "--index",
            dir,
            "--threshold",
            "100",
            "--out",
            out.to_str().unwrap(),
        ],
        &["more than 2000000 pairs", "lower --threshold"],
    );
    assert!(!out.exists(), "nothing written");
}
