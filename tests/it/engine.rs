//! The engine as a library and through the CLI: the `Searcher` under concurrent readers and a
//! writer (in one process and across processes), the writer lock, text indexes that grow, many
//! queries in one process, and the inputs a new user got wrong answers for.

use crate::cli::{fails_with, ok_json, twindex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use twindex::index::{Backend, EncoderRecord, HnswParams, Index, IndexConfig, Item, Metric};
use twindex::query::{NewItem, OpenOptions, Query, SearchOptions, Searcher};

const DIM: usize = 12;
const SEED: u64 = 20261201;
const ENV_DIR: &str = "TWINDEX_READER_TEST_DIR";
const READERS: usize = 4;

/// The vector of item `i`: a function of `i` only.
fn vector_of(i: u64) -> Vec<f32> {
    crate::data::vectors(i ^ 0x5eed, 1, DIM)
}

/// Write the vectors of items `ids` (see [`vector_of`]) as a `.npy` file.
fn write_vectors(path: &Path, ids: impl IntoIterator<Item = u64>) {
    let data: Vec<f32> = ids.into_iter().flat_map(vector_of).collect();
    let m = twindex::index::Matrix {
        rows: data.len() / DIM,
        cols: DIM,
        data,
    };
    twindex::index::vecio::write_npy(path, &m).unwrap();
}

fn item(i: u64) -> Item {
    Item {
        label: format!("l{}", i % 5),
        source: format!("s{i}"),
        payload: None,
    }
}

fn build(dir: &Path, n: u64) -> Index {
    let v: Vec<f32> = (0..n).flat_map(vector_of).collect();
    let cfg = IndexConfig {
        metric: Metric::L2,
        normalize: false,
        backend: Backend::Hnsw,
        hnsw: HnswParams {
            m: 12,
            ef_construction: 64,
            ef_search: 48,
            seed: 3,
            ..Default::default()
        },
    };
    Index::create(
        dir,
        cfg,
        EncoderRecord::Vectors {
            dim: Some(DIM),
            source: None,
        },
        DIM,
        &v,
        (0..n).map(item).collect(),
        &|_| {},
    )
    .unwrap()
}

/// One reader's check on a snapshot: a random live item finds itself first, at distance 0,
/// and its stored vector and label are the ones it was added with.
fn check_snapshot(idx: &Index, rng: &mut ChaCha8Rng) -> Result<(), String> {
    let ids: Vec<u64> = idx.ids().collect();
    if ids.is_empty() {
        return Err("no live item".into());
    }
    for _ in 0..8 {
        let id = ids[rng.random_range(0..ids.len())];
        let g = idx.get(id).map_err(|e| e.to_string())?;
        if g.vector != &vector_of(id)[..] || g.item.label != item(id).label {
            return Err(format!("item {id} is not what was added"));
        }
        let hits = idx
            .search(&vector_of(id), 1, Some(64))
            .map_err(|e| e.to_string())?;
        match hits.first() {
            Some(h) if h.id == id && h.distance == 0.0 => {}
            other => return Err(format!("item {id} found {other:?}")),
        }
    }
    Ok(())
}

#[test]
fn searcher_threads_query_while_one_thread_writes() {
    println!("seed {SEED}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    drop(build(&dir, 1000));
    let s = Searcher::open(
        &dir,
        &OpenOptions {
            writable: true,
            model: None,
        },
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let (queries, failures) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut deleted = Vec::new();
    let mut added = Vec::new();
    std::thread::scope(|sc| {
        for r in 0..READERS {
            let (s, stop, queries, failures) = (&s, &stop, &queries, &failures);
            sc.spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(SEED + r as u64);
                while !stop.load(Ordering::Relaxed) {
                    let snap = s.index().unwrap();
                    if let Err(e) = check_snapshot(&snap, &mut rng) {
                        eprintln!("reader {r}: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(snap);
                    // Through the Searcher's own query path as well.
                    let id = rng.random_range(0..1000u64);
                    match s.query(&Query::Vector(&vector_of(id)), &SearchOptions::default()) {
                        Ok(a) if !a.results.is_empty() => {}
                        other => {
                            eprintln!("reader {r}: query: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    queries.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // The writer: adds one by one, deletes, checkpoints and compacts while they read.
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        for i in 1000..1400u64 {
            let ids = s
                .add(&[NewItem {
                    content: Query::Vector(&vector_of(i)),
                    label: item(i).label,
                    source: Some(item(i).source),
                }])
                .unwrap();
            assert_eq!(ids, vec![i]);
            added.push(i);
            if i % 50 == 0 {
                let victim = rng.random_range(0..i);
                if !deleted.contains(&victim) {
                    s.delete(&[victim]).unwrap();
                    deleted.push(victim);
                }
            }
            if i == 1200 {
                s.checkpoint().unwrap();
            }
            if i == 1300 {
                s.compact().unwrap();
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let q = queries.load(Ordering::Relaxed);
    println!(
        "{q} reader rounds during 400 adds, {} deletes, a checkpoint and a compaction",
        deleted.len()
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "failed reads");
    assert!(q > 100, "readers starved: {q} rounds");
    let st = s.stats();
    assert_eq!(st.items, 1400 - deleted.len());
    s.close().unwrap();
    // Reopened: every acknowledged add is there, every delete gone, the log retired.
    let idx = Index::open(&dir).unwrap();
    assert_eq!(idx.len(), 1400 - deleted.len());
    assert_eq!(idx.log_size(), (0, 0));
    for &d in &deleted {
        assert!(idx.get(d).is_err(), "deleted {d} is back");
    }
    check_snapshot(&idx, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    for &a in &added {
        if !deleted.contains(&a) {
            assert_eq!(idx.get(a).unwrap().vector, &vector_of(a)[..]);
        }
    }
}

/// A reader process: opens the index over and over and checks each snapshot until the stop
/// file appears; prints its counts. Does nothing unless run by the test below.
#[test]
#[ignore = "child process of processes_query_while_one_writes"]
fn reader_child() {
    let Some(dir) = std::env::var_os(ENV_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let mut rng = ChaCha8Rng::seed_from_u64(std::process::id() as u64);
    let (mut ok, mut failed) = (0usize, 0usize);
    while !dir.with_extension("stop").exists() {
        match Index::open(&dir)
            .map_err(|e| e.to_string())
            .and_then(|idx| check_snapshot(&idx, &mut rng))
        {
            Ok(()) => ok += 1,
            Err(e) => {
                eprintln!("reader {}: {e}", std::process::id());
                failed += 1;
            }
        }
    }
    println!("reads ok {ok} failed {failed}");
}

#[test]
fn processes_query_while_one_writes_and_a_second_writer_is_refused() {
    println!("seed {SEED}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    drop(build(&dir, 2000));
    let children: Vec<_> = (0..READERS)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "engine::reader_child",
                    "--nocapture",
                    "--ignored",
                    "--test-threads=1",
                ])
                .env(ENV_DIR, &dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut w = Index::open_writer(&dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut deleted = Vec::new();
    let t0 = Instant::now();
    let mut i = 2000u64;
    let mut refused = 0;
    while t0.elapsed() < Duration::from_secs(4) || i < 2300 {
        let ids = w.add(&vector_of(i), vec![item(i)], &|_| {}).unwrap();
        assert_eq!(ids, vec![i]);
        if i.is_multiple_of(40) {
            let v = rng.random_range(0..i);
            if !deleted.contains(&v) {
                w.delete(&[v]).unwrap();
                deleted.push(v);
            }
        }
        if i.is_multiple_of(150) {
            w.compact(&|_| {}).unwrap();
        } else if i.is_multiple_of(75) {
            w.checkpoint().unwrap();
        }
        if i.is_multiple_of(100) {
            // A second writer, in this process and in another (the CLI with --wait 0), is refused at
            // once.
            let e = Index::open_writer(&dir).unwrap_err().to_string();
            assert!(e.contains("another twindex process is writing"), "{e}");
            let npy = tmp.path().join("one.npy");
            write_vectors(&npy, [999_999]);
            let o = twindex(&[
                "--wait",
                "0",
                "index",
                "add",
                "--index",
                dir.to_str().unwrap(),
                "--vectors",
                npy.to_str().unwrap(),
            ]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                !o.status.success() && err.contains("another twindex process is writing"),
                "{err}"
            );
            refused += 2;
        }
        i += 1;
    }
    std::fs::write(dir.with_extension("stop"), b"").unwrap();
    let mut total = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.find("reads ok ").map(|p| &l[p..]))
            .unwrap_or_else(|| panic!("reader printed no counts: {text}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        let (ok, failed): (usize, usize) = (f[2].parse().unwrap(), f[4].parse().unwrap());
        println!("reader: {ok} snapshots checked, {failed} failed");
        assert_eq!(failed, 0, "a reader failed");
        assert!(ok > 0);
        total += ok;
    }
    println!(
        "{total} reader snapshots while {} adds, {} deletes, compactions and checkpoints ran; {refused} second writers refused",
        i - 2000,
        deleted.len()
    );
    drop(w);
    let idx = Index::open(&dir).unwrap();
    assert_eq!(idx.len() as u64, i - deleted.len() as u64, "nothing lost");
}

fn minilm() -> PathBuf {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models/all-MiniLM-L6-v2");
    crate::require_input(&m.join("model.safetensors"));
    m
}

fn lines(v: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&v.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[test]
#[cfg_attr(not(has_minilm), ignore = "needs ../shared/models/all-MiniLM-L6-v2")]
fn a_text_index_grows_answers_many_queries_and_refuses_bad_input() {
    let model = minilm();
    let tmp = tempfile::tempdir().unwrap();
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let texts = tmp.path().join("q.tsv");
    // A TSV with a byte-order mark, ids and labels.
    std::fs::write(
        &texts,
        "\u{feff}qid\tquestion\ttopic\n\
         q1\tHow do I learn to cook rice?\tfood\n\
         q2\tWhat is the capital of France?\tgeo\n\
         q3\tHow can I improve my running speed?\tsport\n\
         q4\tWhich programming language should I learn first?\ttech\n\
         q5\tWhy is the sky blue?\tscience\n",
    )
    .unwrap();
    let idx = tmp.path().join("idx");
    // A non-empty --out is refused before any encoding.
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    fails_with(
        &[
            "index",
            "build",
            "--text",
            &p(&texts),
            "--model",
            &p(&model),
            "--out",
            &p(&busy),
        ],
        "is not empty",
    );
    assert_eq!(
        std::fs::read_to_string(busy.join("notes.txt")).unwrap(),
        "mine"
    );
    let b = ok_json(&[
        "index",
        "build",
        "--text",
        &p(&texts),
        "--text-column",
        "question",
        "--id-column",
        "qid",
        "--label-column",
        "topic",
        "--model",
        &p(&model),
        "--out",
        &p(&idx),
        "--json",
    ]);
    assert_eq!(b["items"], 5);
    assert!(b["build_seconds"].as_f64().unwrap() >= b["graph_seconds"].as_f64().unwrap());
    // Uncalibrated: no duplicate decision, said so, even for an exact match.
    let o = twindex(&[
        "query",
        "--index",
        &p(&idx),
        "--text",
        "Why is the sky blue?",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(out.contains("no threshold calibrated"), "{out}");
    assert!(!out.contains(" yes ") && !out.contains(" no  "), "{out}");
    let j = ok_json(&[
        "query",
        "--index",
        &p(&idx),
        "--text",
        "Why is the sky blue?",
        "--json",
    ]);
    assert_eq!(j["results"][0]["source"], "q5");
    assert_eq!(j["results"][0]["label"], "science");
    assert!(j["threshold"].is_null());
    // Grow it: texts and a file of texts, through its own encoder.
    let add = ok_json(&[
        "index",
        "add",
        "--index",
        &p(&idx),
        "--text",
        "Where can I buy fresh bread?",
        "--label",
        "food",
        "--json",
    ]);
    assert_eq!(add["ids"], json!([5]));
    let more = tmp.path().join("more.txt");
    std::fs::write(&more, "How do volcanoes form?\n\nWhat is a black hole?\n").unwrap();
    let add = ok_json(&[
        "index",
        "add",
        "--index",
        &p(&idx),
        "--text-file",
        &p(&more),
        "--json",
    ]);
    assert_eq!(add["ids"], json!([6, 7]));
    assert_eq!(add["items"], 8);
    // Many queries in one process: one JSON line each, in order.
    let qf = tmp.path().join("queries.txt");
    std::fs::write(
        &qf,
        "where to buy bread\nwhat is a black hole\nhow to cook rice\n",
    )
    .unwrap();
    let o = twindex(&[
        "query",
        "--index",
        &p(&idx),
        "--text-file",
        &p(&qf),
        "--k",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ans = lines(&o);
    assert_eq!(ans.len(), 3);
    let first: Vec<u64> = ans
        .iter()
        .map(|a| a["results"][0]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(first, vec![5, 7, 0]);
    // A label filter.
    let j = ok_json(&[
        "query",
        "--index",
        &p(&idx),
        "--text",
        "bread",
        "--label",
        "geo",
        "--json",
    ]);
    assert!(j["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["label"] == "geo"));
    // Calibrate from pairs (BOM before the header), then decisions appear.
    let pairs = tmp.path().join("pairs.tsv");
    std::fs::write(
        &pairs,
        "\u{feff}q1\tq2\tis_duplicate\n\
         How do I cook rice?\tHow can I cook rice well?\t1\n\
         Why is the sky blue?\tWhat makes the sky blue?\t1\n\
         How do I cook rice?\tWhy is the sky blue?\t0\n\
         What is a black hole?\tHow do volcanoes form?\t0\n",
    )
    .unwrap();
    let c = ok_json(&[
        "calibrate",
        "--index",
        &p(&idx),
        "--pairs",
        &p(&pairs),
        "--json",
    ]);
    assert!(c["threshold"].as_f64().unwrap() > 0.0);
    let j = ok_json(&[
        "query",
        "--index",
        &p(&idx),
        "--text",
        "What makes the sky blue?",
        "--json",
    ]);
    assert_eq!(j["results"][0]["duplicate"], true);
    // `#ID` is an item on every index, not literal text.
    let bad = tmp.path().join("badpairs.tsv");
    std::fs::write(&bad, "q1\tq2\tis_duplicate\n#999999\t#1\t1\n#0\t#1\t0\n").unwrap();
    fails_with(
        &["calibrate", "--index", &p(&idx), "--pairs", &p(&bad)],
        "no item with id 999999",
    );
    // Bad input: clear one-line errors, nothing changed.
    fails_with(&["query", "--index", &p(&idx), "--text", ""], "empty");
    fails_with(&["query", "--index", &p(&idx), "--text", "   "], "empty");
    fails_with(
        &["index", "add", "--index", &p(&idx), "--text", " "],
        "empty",
    );
    fails_with(
        &["query", "--index", &p(&idx), "--image", "x.png"],
        "text index",
    );
    fails_with(
        &[
            "query",
            "--index",
            &p(&idx),
            "--text",
            "a",
            "--threshold",
            "NaN",
        ],
        "not a finite",
    );
    // a negative threshold on a cosine index would call nothing a duplicate, not even an exact
    // self-match: refused in one line (issue 21: one decision rule)
    fails_with(
        &[
            "query",
            "--index",
            &p(&idx),
            "--text",
            "sky",
            "--threshold",
            "-1",
            "--json",
        ],
        "never negative",
    );
    fails_with(
        &["index", "delete", "--index", &p(&idx), "7", "7"],
        "named twice",
    );
    let utf = tmp.path().join("latin1.txt");
    std::fs::write(&utf, b"fine\ncaf\xe9\n").unwrap();
    fails_with(
        &["query", "--index", &p(&idx), "--text-file", &p(&utf)],
        "line 2: not UTF-8",
    );
    // A long query is shortened in the output, control characters escaped.
    let long = format!("{}\u{7}", "word ".repeat(4000));
    let j = ok_json(&["query", "--index", &p(&idx), "--text", &long, "--json"]);
    let echoed = j["query"].as_str().unwrap();
    assert!(
        echoed.chars().count() <= 81 && !echoed.contains('\u{7}'),
        "{echoed}"
    );
    // A moved model: the error says where the index points and how to override.
    let moved = tmp.path().join("model-moved");
    std::fs::create_dir(&moved).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(model.join(f), moved.join(f)).unwrap();
    }
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(idx.join("manifest.json")).unwrap()).unwrap();
    assert!(m["checksum"].is_string());
    // Editing the manifest (the metric) is refused by its checksum.
    let edited = std::fs::read_to_string(idx.join("manifest.json"))
        .unwrap()
        .replace("\"cosine\"", "\"dot\"");
    let copy = tmp.path().join("edited");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(&idx).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
    }
    std::fs::write(copy.join("manifest.json"), edited).unwrap();
    fails_with(
        &["query", "--index", &p(&copy), "--text", "sky"],
        "checksum",
    );
    let j = ok_json(&[
        "query",
        "--index",
        &p(&idx),
        "--text",
        "sky",
        "--model",
        &p(&moved),
        "--json",
    ]);
    assert!(!j["results"].as_array().unwrap().is_empty());
    // The log was checkpointed by calibrate; stats and checkpoint report JSON.
    let st = ok_json(&["index", "stats", "--index", &p(&idx), "--json"]);
    assert_eq!(st["items"], 8);
    assert_eq!(st["encoder"], "text");
    ok_json(&["index", "checkpoint", "--index", &p(&idx), "--json"]);
}

#[test]
fn blank_and_huge_images_and_fifos_are_refused() {
    let enc = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/encoders/mnist-cnn");
    let tmp = tempfile::tempdir().unwrap();
    let p = |x: &Path| x.to_str().unwrap().to_string();
    // A small image index: 30 MNIST training digits as PNG files in class folders.
    let mnist =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/mnist/train-images-idx3-ubyte.gz");
    let a = twindex::corpus::idx::read_images(&mnist).unwrap();
    let labels = twindex::corpus::idx::read_idx(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("corpora/mnist/train-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    let folder = tmp.path().join("digits");
    let mut items = Vec::new();
    for i in 0..30usize {
        let class = folder.join(labels.data[i].to_string());
        std::fs::create_dir_all(&class).unwrap();
        let f = class.join(format!("{i:02}.png"));
        image::GrayImage::from_raw(28, 28, a.data[i * 784..(i + 1) * 784].to_vec())
            .unwrap()
            .save(&f)
            .unwrap();
        items.push(p(&f));
    }
    let idx = tmp.path().join("idx");
    let b = ok_json(&[
        "index",
        "build",
        "--corpus",
        &p(&folder),
        "--model",
        &p(&enc),
        "--out",
        &p(&idx),
        "--json",
    ]);
    assert_eq!(b["items"], 30);
    let blank = tmp.path().join("blank.png");
    image::GrayImage::from_pixel(1, 1, image::Luma([255u8]))
        .save(&blank)
        .unwrap();
    fails_with(
        &["query", "--index", &p(&idx), "--image", &p(&blank)],
        "blank",
    );
    let wide = tmp.path().join("wide.png");
    // A PNG header claiming 20000x20000 pixels is refused before decoding.
    image::GrayImage::from_pixel(20, 20, image::Luma([9u8]))
        .save(&wide)
        .unwrap();
    let mut b = std::fs::read(&wide).unwrap();
    b[16..20].copy_from_slice(&20000u32.to_be_bytes());
    b[20..24].copy_from_slice(&20000u32.to_be_bytes());
    std::fs::write(&wide, &b).unwrap();
    fails_with(
        &["query", "--index", &p(&idx), "--image", &p(&wide)],
        "wide.png",
    );
    let fifo = tmp.path().join("fifo");
    let c = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: a plain mkfifo on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    fails_with(
        &["query", "--index", &p(&idx), "--image", &p(&fifo)],
        "not a regular file",
    );
    fails_with(
        &["query", "--index", &p(&idx), "--text-file", &p(&fifo)],
        "not a regular file",
    );
    // Several images in one process: one JSON line each, each digit finds itself.
    let mut q = vec![
        "query".to_string(),
        "--index".into(),
        p(&idx),
        "--k".into(),
        "1".into(),
        "--json".into(),
    ];
    for it in items.iter().take(3) {
        q.push("--image".into());
        q.push(it.clone());
    }
    let qa: Vec<&str> = q.iter().map(String::as_str).collect();
    let o = twindex(&qa);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ans = lines(&o);
    assert_eq!(ans.len(), 3);
    for (i, a) in ans.iter().enumerate() {
        assert_eq!(a["results"][0]["source"], items[i], "{a}");
        assert!(a["results"][0]["distance"].as_f64().unwrap() < 1e-4, "{a}");
    }
    let o = twindex(&[
        "query",
        "--index",
        &p(&idx),
        "--items",
        "5,6",
        "--k",
        "1",
        "--json",
    ]);
    let ans = lines(&o);
    assert_eq!(ans[1]["results"][0]["id"], 6);
}

/// `bench --gt` reads item ids (what `query` prints), right after a compaction too, when ids
/// and engine slots differ.
#[test]
fn bench_ground_truth_is_item_ids_after_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let n = 400u64;
    let npy = tmp.path().join("v.npy");
    write_vectors(&npy, 0..n);
    let idx = tmp.path().join("idx");
    ok_json(&[
        "index",
        "build",
        "--vectors",
        &p(&npy),
        "--out",
        &p(&idx),
        "--json",
    ]);
    let gone: Vec<u64> = (0..n).filter(|i| i % 7 == 3).collect();
    let gone_s: Vec<String> = gone.iter().map(u64::to_string).collect();
    let mut args = vec!["index", "delete", "--index", idx.to_str().unwrap()];
    args.extend(gone_s.iter().map(String::as_str));
    assert!(twindex(&args).status.success());
    ok_json(&["index", "compact", "--index", &p(&idx), "--json"]);
    // Queries: 30 live items' vectors; truth: their 5 nearest live item ids by brute force.
    let live: Vec<u64> = (0..n).filter(|i| !gone.contains(i)).collect();
    let qs: Vec<u64> = live.iter().copied().step_by(12).take(30).collect();
    let mut truth = Vec::new();
    for &q in &qs {
        let qv = vector_of(q);
        let mut d: Vec<(f32, u64)> = live
            .iter()
            .map(|&i| {
                (
                    vector_of(i)
                        .iter()
                        .zip(&qv)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum(),
                    i,
                )
            })
            .collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0));
        truth.extend(d.iter().take(5).map(|&(_, i)| i as i32));
    }
    let qnpy = tmp.path().join("q.npy");
    write_vectors(&qnpy, qs.iter().copied());
    let gt = tmp.path().join("gt.ivecs");
    twindex::index::vecio::write_ivecs(
        &gt,
        &twindex::index::Matrix {
            rows: qs.len(),
            cols: 5,
            data: truth,
        },
    )
    .unwrap();
    let b = ok_json(&[
        "bench",
        "--index",
        &p(&idx),
        "--queries",
        &p(&qnpy),
        "--gt",
        &p(&gt),
        "--k",
        "5",
        "--ef",
        "200",
        "--json",
    ]);
    let r = b["sweep"][0]["recall"].as_f64().unwrap();
    assert!(
        r >= 0.99,
        "recall {r} against item-id ground truth after compaction"
    );
}

/// The main job on the shipped default: the demo builds its index, reuses it on a second run,
/// reports the headline figures, and leaves an index it did not make alone.
#[test]
fn demo_runs_the_main_job_and_never_replaces_a_foreign_index() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = tmp.path().join("demo");
    let idx_s = idx.to_str().unwrap();
    let d = ok_json(&["demo", "--index", idx_s, "--show", "2", "--json"]);
    assert_eq!(d["items"], 60000);
    assert!(d["built"].is_object(), "first run builds");
    assert!(d["precision_at_1"].as_f64().unwrap() >= 0.99, "{d}");
    assert!(d["test_pair_accuracy"].as_f64().unwrap() >= 0.99, "{d}");
    assert!(d["hnsw_recall_at_10"].as_f64().unwrap() >= 0.95, "{d}");
    assert_eq!(d["queries"].as_array().unwrap().len(), 2);
    let again = ok_json(&["demo", "--index", idx_s, "--show", "1", "--json"]);
    assert!(again["built"].is_null(), "second run reuses the index");
    // Changed since (an item deleted): the user's work now, left alone even for another encoder.
    ok_json(&["index", "delete", "--index", idx_s, "0", "--json"]);
    let before = std::fs::read(idx.join("manifest.json")).unwrap();
    let lenet = "corpora/encoders/mnist-lenet";
    fails_with(
        &["demo", "--index", idx_s, "--model", lenet],
        "changed since",
    );
    assert_eq!(std::fs::read(idx.join("manifest.json")).unwrap(), before);
    // Another index there (made by `index build`, another encoder): refused, untouched.
    let other = tmp.path().join("mine");
    let npy = tmp.path().join("v.npy");
    write_vectors(&npy, 0..20);
    ok_json(&[
        "index",
        "build",
        "--vectors",
        npy.to_str().unwrap(),
        "--out",
        other.to_str().unwrap(),
        "--json",
    ]);
    let before = std::fs::read(other.join("manifest.json")).unwrap();
    fails_with(
        &["demo", "--index", other.to_str().unwrap()],
        "did not make",
    );
    assert_eq!(std::fs::read(other.join("manifest.json")).unwrap(), before);
}

/// `--keep-best` selects on held-out data only: on MNIST without --holdout it would choose the
/// model on the test set, so it is refused before any training.
#[test]
fn keep_best_never_selects_on_the_test_set() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().join("m");
    fails_with(
        &[
            "train",
            "image",
            "--corpus",
            "mnist",
            "--arch",
            "lenet",
            "--loss",
            "contrastive",
            "--epochs",
            "1",
            "--keep-best",
            "--out",
            o.to_str().unwrap(),
        ],
        "--keep-best selects on held-out data",
    );
    assert!(!o.exists(), "nothing written");
}

/// `dedup --out` replaces its own earlier report, never a user's file nor anything in the index.
#[test]
fn dedup_never_overwrites_what_it_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let npy = tmp.path().join("v.npy");
    write_vectors(&npy, (0..50).chain([3])); // the last is an exact duplicate of item 3
    let idx = tmp.path().join("idx");
    ok_json(&[
        "index",
        "build",
        "--vectors",
        &p(&npy),
        "--out",
        &p(&idx),
        "--json",
    ]);
    let report = tmp.path().join("dups.tsv");
    for _ in 0..2 {
        let d = ok_json(&[
            "dedup",
            "--index",
            &p(&idx),
            "--threshold",
            "0.001",
            "--out",
            &p(&report),
            "--json",
        ]);
        assert_eq!(d["pairs"], 1);
    }
    let mine = tmp.path().join("notes.txt");
    std::fs::write(&mine, "my notes").unwrap();
    fails_with(
        &[
            "dedup",
            "--index",
            &p(&idx),
            "--threshold",
            "0.001",
            "--out",
            &p(&mine),
        ],
        "not a dedup report",
    );
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "my notes");
    let manifest = idx.join("manifest.json");
    let before = std::fs::read(&manifest).unwrap();
    fails_with(
        &[
            "dedup",
            "--index",
            &p(&idx),
            "--threshold",
            "0.001",
            "--out",
            &p(&manifest),
            "--overwrite",
        ],
        "inside the index directory",
    );
    assert_eq!(std::fs::read(&manifest).unwrap(), before);
}

/// Writers that wait (issue 25): an `index add` started while another process's add holds the
/// writer lock waits for it (`--wait`) and both land, every acknowledged item present; with
/// `--wait 0` the same add is refused at once and adds nothing. Vectors of seed 20261201.
#[test]
fn a_second_writer_waits_for_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    drop(build(&dir, 100));
    let (big, one) = (tmp.path().join("big.npy"), tmp.path().join("one.npy"));
    write_vectors(&big, 1_000..61_000);
    write_vectors(&one, [999_999]);
    let d = dir.to_str().unwrap();
    let first = Command::new(env!("CARGO_BIN_EXE_twindex"))
        .args([
            "index",
            "add",
            "--index",
            d,
            "--vectors",
            big.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !twindex::index::wal::WriterLock::is_held(&dir) {
        assert!(
            Instant::now() < deadline,
            "the first writer never took the lock"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let one = one.to_str().unwrap();
    let o = twindex(&[
        "--wait",
        "0",
        "index",
        "add",
        "--index",
        d,
        "--vectors",
        one,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("another twindex process is writing"),
        "{err}"
    );
    let second = ok_json(&[
        "--wait",
        "300",
        "index",
        "add",
        "--index",
        d,
        "--vectors",
        one,
        "--json",
    ]);
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(second["items"], json!(100 + 60_000 + 1), "{second}");
    let stats = ok_json(&["index", "stats", "--index", d, "--json"]);
    assert_eq!(stats["items"], json!(60_101));
}

/// Every data file of an index with its size and modification time (the write-ahead log and
/// the lock left out).
fn data_files(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            e.path().is_file() && !n.starts_with("wal.") && n != "write.lock"
        })
        .map(|e| {
            let md = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                md.len(),
                md.modified().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Issue 25's "appends without loading the index": `index add` appends one log record and
/// leaves every data file as it was (nothing read whole, no graph built); readers apply it on
/// open; ids continue across appends and deletes; and once the log is due a checkpoint the
/// next add goes through the opened index, which checkpoints.
#[test]
fn index_add_and_delete_append_to_the_log_without_loading_the_index() {
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let npy = tmp.path().join("base.npy");
    write_vectors(&npy, 0..300);
    ok_json(&[
        "index",
        "build",
        "--vectors",
        &p(&npy),
        "--out",
        &p(&dir),
        "--json",
    ]);
    let before = data_files(&dir);
    let one = tmp.path().join("one.npy");
    write_vectors(&one, [300]);
    let a = ok_json(&[
        "index",
        "add",
        "--index",
        &p(&dir),
        "--vectors",
        &p(&one),
        "--label",
        "new",
        "--json",
    ]);
    assert_eq!(a["ids"], json!([300]), "{a}");
    assert_eq!(a["items"], 301, "{a}");
    assert_eq!(data_files(&dir), before, "an append touched a data file");
    ok_json(&["index", "delete", "--index", &p(&dir), "5", "--json"]);
    let two = tmp.path().join("two.npy");
    write_vectors(&two, [301, 302]);
    let a = ok_json(&[
        "index",
        "add",
        "--index",
        &p(&dir),
        "--vectors",
        &p(&two),
        "--json",
    ]);
    assert_eq!(a["ids"], json!([301, 302]), "{a}");
    assert_eq!(a["items"], 302, "{a}");
    // A reader sees the appended items: item 300 is its own nearest neighbour.
    let q = ok_json(&[
        "query",
        "--index",
        &p(&dir),
        "--item",
        "300",
        "--k",
        "1",
        "--json",
    ]);
    assert_eq!(q["results"][0]["id"], 300, "{q}");
    assert_eq!(q["results"][0]["label"], "new", "{q}");
    let st = ok_json(&["index", "stats", "--index", &p(&dir), "--json"]);
    assert_eq!(st["items"], 302, "{st}");
    // Deletes append without loading too: an id added in the log; refusals append nothing.
    let d = ok_json(&["index", "delete", "--index", &p(&dir), "301", "--json"]);
    assert_eq!(d["items"], 301, "{d}");
    fails_with(&["index", "delete", "--index", &p(&dir), "5"], "5");
    fails_with(&["index", "delete", "--index", &p(&dir), "7", "7"], "twice");
    fails_with(&["index", "delete", "--index", &p(&dir), "999"], "999");
    assert_eq!(data_files(&dir), before, "a delete touched a data file");
    fails_with(&["query", "--index", &p(&dir), "--item", "301"], "301");
    let st = ok_json(&["index", "stats", "--index", &p(&dir), "--json"]);
    assert_eq!(st["items"], 301, "{st}");
    // A wrong dimension is refused and appends nothing.
    let bad = tmp.path().join("bad.npy");
    let m = twindex::index::Matrix {
        rows: 1,
        cols: DIM + 1,
        data: vec![0.5; DIM + 1],
    };
    twindex::index::vecio::write_npy(&bad, &m).unwrap();
    fails_with(
        &["index", "add", "--index", &p(&dir), "--vectors", &p(&bad)],
        "dimension",
    );
    let st = ok_json(&["index", "stats", "--index", &p(&dir), "--json"]);
    assert_eq!(st["items"], 301, "{st}");

    // The checkpoint rule: a log past 64 MiB and a quarter of the data makes the next add open
    // the index (which checkpoints) instead of appending.
    let small = tmp.path().join("small");
    let cfg = IndexConfig {
        metric: Metric::L2,
        normalize: false,
        backend: Backend::Flat,
        hnsw: HnswParams::default(),
    };
    let rec = EncoderRecord::vectors("t", 4);
    Index::create(
        &small,
        cfg,
        rec.clone(),
        4,
        &[1.0; 4],
        vec![item(0)],
        &|_| {},
    )
    .unwrap()
    .close()
    .unwrap();
    let rows = (65usize << 20) / 16 + 1;
    let big: Vec<f32> = (0..rows * 4).map(|i| (i % 97) as f32 + 1.0).collect();
    let items: Vec<Item> = (0..rows as u64).map(item).collect();
    let r = twindex::index::append_add(&small, &rec, &big, items).unwrap();
    assert_eq!(r.map(|r| r.items), Some(rows + 1));
    let r = twindex::index::append_add(&small, &rec, &big[..4], vec![item(1)]).unwrap();
    assert!(r.is_none(), "a log due a checkpoint was appended to");
    let tiny = tmp.path().join("tiny.npy");
    twindex::index::vecio::write_npy(
        &tiny,
        &twindex::index::Matrix {
            rows: 1,
            cols: 4,
            data: vec![1.0, 2.0, 3.0, 4.0],
        },
    )
    .unwrap();
    let a = ok_json(&[
        "index",
        "add",
        "--index",
        &p(&small),
        "--vectors",
        &p(&tiny),
        "--json",
    ]);
    assert_eq!(a["ids"], json!([rows + 1]), "{a}");
    let st = ok_json(&["index", "stats", "--index", &p(&small), "--json"]);
    assert_eq!(st["items"], rows + 2, "{st}");
    assert!(
        st["log_bytes"].as_u64().unwrap() < 1 << 20,
        "the fallback add did not checkpoint: {st}"
    );
}
