//! Beyond one machine: `export` round trips, `embed --shard` parts equal to a single run, part
//! sets that mix encoders refused, and the Milvus backend against a real Milvus standalone
//! (PyPI's `milvus` 2.3.5, installed by .ci/run into target/milvus-venv, started in its own
//! network namespace so its ports, which bind every interface, are reachable from this test
//! alone).

use crate::cli::{fails_with, ok_json, twindex};
use crate::serve::{assert_same, questions, Server};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use twindex::index::parquet::{read_part, write_part, PartMeta, PartRows};
use twindex::index::{
    Backend, Calibration, EncoderRecord, HnswParams, Index, IndexConfig, Item, Metric,
};
use twindex::query::parts::read_npy_export;
use twindex::query::{NewItem, OpenOptions, Query, SearchOptions, Searcher};

const MODEL: &str = "../shared/models/all-MiniLM-L6-v2";

fn vectors(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    crate::data::uniform(seed, n, dim, -0.5..0.5)
}

/// A raw-vector index of `n` items of `dim`, labelled `l0..l3`; the last item's label is
/// `last_label` when given.
fn vector_index(dir: &Path, n: usize, dim: usize, seed: u64, last_label: Option<&str>) {
    let items = (0..n)
        .map(|i| Item {
            label: match last_label {
                Some(l) if i == n - 1 => l.to_string(),
                _ => format!("l{}", i % 4),
            },
            source: format!("item {i} \"quoted\"\ttab"),
            payload: None,
        })
        .collect();
    let cfg = IndexConfig {
        metric: Metric::L2,
        normalize: false,
        backend: Backend::Hnsw,
        hnsw: HnswParams {
            m: 8,
            ef_construction: 40,
            ef_search: 32,
            seed: 1,
            ..Default::default()
        },
    };
    Index::create(
        dir,
        cfg,
        EncoderRecord::vectors("test", dim),
        dim,
        &vectors(seed, n, dim),
        items,
        &|_| {},
    )
    .unwrap()
    .close()
    .unwrap();
}

#[test]
fn export_round_trips_parquet_and_npy_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    vector_index(&dir, 700, 9, 5, None);
    // delete a few, so ids are not simply row numbers
    let s = Searcher::open(
        &dir,
        &OpenOptions {
            writable: true,
            model: None,
        },
    )
    .unwrap();
    s.delete(&[0, 13, 699]).unwrap();
    s.set_calibration(Some(Calibration {
        threshold: -0.25,
        precision: 0.9,
        recall: 0.8,
        f1: 0.85,
        method: "test".into(),
        extra: Value::Null,
    }))
    .unwrap();
    s.close().unwrap();
    let idx = Index::open(&dir).unwrap();
    let want_ids: Vec<i64> = idx.ids().map(|i| i as i64).collect();
    assert_eq!(want_ids.len(), 697);

    let pq = tmp.path().join("out.parquet");
    let j = ok_json(&[
        "export",
        "--index",
        dir.to_str().unwrap(),
        "--format",
        "parquet",
        "--out",
        pq.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(j["rows"], 697);
    let (meta, rows) = read_part(&pq).unwrap();
    assert_eq!(rows.ids, want_ids);
    for (n, &id) in want_ids.iter().enumerate() {
        let v = idx.get(id as u64).unwrap();
        assert_eq!(rows.vector(n), v.vector, "vector of item {id}");
        assert_eq!(rows.labels[n], v.item.label);
        assert_eq!(rows.texts[n], v.item.source);
    }
    assert_eq!(meta.threshold, idx.threshold_distance());
    assert_eq!(meta.metric, twindex::index::Metric::L2);
    assert_eq!(meta.hnsw.as_ref().unwrap()["m"], 8);

    // npy: PATH is the .npy file itself, its items and metadata beside it.
    let npy = tmp.path().join("vectors.npy");
    let export_npy = |out: &Path| {
        vec![
            "export".to_string(),
            "--index".into(),
            dir.to_str().unwrap().into(),
            "--format".into(),
            "npy".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let args = export_npy(&npy);
    ok_json(
        &args
            .iter()
            .map(String::as_str)
            .chain(["--json"])
            .collect::<Vec<_>>(),
    );
    assert!(npy.is_file(), "the .npy export is a file, not a folder");
    for side in ["vectors.items.jsonl", "vectors.twindex.json"] {
        assert!(tmp.path().join(side).is_file(), "{side} beside the .npy");
    }
    let m = twindex::index::vecio::read_npy(&npy).unwrap();
    assert_eq!((m.rows, m.cols), (697, 9));
    let (meta2, rows2) = read_npy_export(&npy).unwrap();
    assert_eq!(rows2, rows);
    assert_eq!(meta2, meta);
    // A sidecar that exists (here a user's file) is never overwritten, and nothing is written.
    let other = tmp.path().join("other.npy");
    std::fs::write(tmp.path().join("other.items.jsonl"), "mine\n").unwrap();
    let args = export_npy(&other);
    fails_with(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "other.items.jsonl: already exists",
    );
    assert!(!other.exists());
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("other.items.jsonl")).unwrap(),
        "mine\n"
    );
    // A path that is not a .npy file is refused.
    let args = export_npy(&tmp.path().join("out-npy"));
    fails_with(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "give a path ending in .npy",
    );
    assert!(!tmp.path().join("out-npy").exists());

    // Never over an existing path, and bad formats are named.
    let before = std::fs::read(&pq).unwrap();
    fails_with(
        &[
            "export",
            "--index",
            dir.to_str().unwrap(),
            "--out",
            pq.to_str().unwrap(),
        ],
        "already exists",
    );
    assert_eq!(std::fs::read(&pq).unwrap(), before);
    fails_with(
        &[
            "export",
            "--index",
            dir.to_str().unwrap(),
            "--format",
            "csv",
            "--out",
            "x",
        ],
        "--format \"csv\": expected parquet or npy",
    );
}

#[test]
#[cfg_attr(
    not(all(has_minilm, has_qqp)),
    ignore = "needs ../shared: models/all-MiniLM-L6-v2 and corpora/pairs/qqp-10k.tsv"
)]
fn embed_shards_concatenate_to_the_single_run_and_parts_of_two_encoders_are_refused() {
    crate::require_input(Path::new(MODEL));
    crate::require_input(Path::new(crate::serve::QQP));
    let tmp = tempfile::tempdir().unwrap();
    // 2,100 texts: three blocks of 1,024, so three shards get one block each.
    let (texts, _) = questions(2100, 0);
    let tsv = tmp.path().join("texts.tsv");
    let mut body = String::from("text\tkind\n");
    for (i, t) in texts.iter().enumerate() {
        body.push_str(&format!(
            "{t}\t{}\n",
            if i % 2 == 0 { "even" } else { "odd" }
        ));
    }
    std::fs::write(&tsv, body).unwrap();
    let single = tmp.path().join("all.parquet");
    let embed = |shard: &str, out: &Path| {
        ok_json(&[
            "embed",
            "--model",
            MODEL,
            "--text",
            tsv.to_str().unwrap(),
            "--text-column",
            "text",
            "--label-column",
            "kind",
            "--shard",
            shard,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ])
    };
    embed("0/1", &single);
    let mut joined = PartRows {
        dim: 384,
        ..Default::default()
    };
    for i in 0..3 {
        let p = tmp.path().join(format!("part-{i}.parquet"));
        let j = embed(&format!("{i}/3"), &p);
        assert_eq!(j["first_row"], i * 1024);
        let (m, r) = read_part(&p).unwrap();
        assert_eq!(m.shard.unwrap().total_rows, 2100);
        joined.extend(r);
    }
    let (meta, all) = read_part(&single).unwrap();
    assert_eq!(all.len(), 2100);
    assert_eq!(all.labels[1], "odd");
    assert_eq!(
        joined, all,
        "shards concatenated differ from the single run"
    );
    assert!(meta.encoder_sha256().len() == 64);

    // A part of another encoder cannot join them, nor can a second copy of a shard.
    let other = tmp.path().join("part-9.parquet");
    let mut m2: PartMeta = meta.clone();
    let EncoderRecord::Text { sha256, .. } = &mut m2.encoder else {
        panic!("a text part has a text encoder record: {}", m2.encoder)
    };
    *sha256 = "0".repeat(64);
    m2.rows = 2;
    m2.shard = None;
    let r2 = PartRows {
        ids: vec![0, 1],
        labels: vec!["a".into(), "b".into()],
        texts: vec!["x".into(), "y".into()],
        vectors: vec![0.5; 768],
        dim: 384,
    };
    write_part(&other, &r2, &m2).unwrap();
    let glob = tmp.path().join("part-*.parquet");
    fails_with(
        &[
            "index",
            "push",
            "--parts",
            glob.to_str().unwrap(),
            "--milvus",
            "milvus://127.0.0.1:1",
            "--collection",
            "c",
        ],
        "parts of different encoders cannot be mixed",
    );
    let p0 = tmp.path().join("part-0.parquet");
    fails_with(
        &[
            "index",
            "push",
            "--parts",
            p0.to_str().unwrap(),
            p0.to_str().unwrap(),
            "--milvus",
            "milvus://127.0.0.1:1",
            "--collection",
            "c",
        ],
        "are both shard 0/3",
    );
    fails_with(
        &[
            "embed",
            "--model",
            MODEL,
            "--text",
            tsv.to_str().unwrap(),
            "--text-column",
            "text",
            "--shard",
            "3/3",
            "--out",
            "never.parquet",
        ],
        "--shard \"3/3\"",
    );
    fails_with(
        &[
            "embed",
            "--model",
            MODEL,
            "--text",
            tsv.to_str().unwrap(),
            "--text-column",
            "text",
            "--out",
            single.to_str().unwrap(),
        ],
        "already exists",
    );
}

// ---------------------------------------------------------------------------------------------
// Milvus

/// Where .ci/run installs the Milvus standalone server (PyPI `milvus` 2.3.5).
fn milvus_server_bin() -> PathBuf {
    match std::env::var_os("TWINDEX_MILVUS_VENV") {
        Some(v) => PathBuf::from(v).join("bin/milvus-server"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/milvus-venv/bin/milvus-server"),
    }
}

/// Run `f` on a thread in a new network namespace with its loopback up (root only): every
/// process it starts, Milvus included, and every socket it opens live there.
fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        let st = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip link set lo up failed");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A Milvus standalone started for one test; stopped (its whole process group) on drop.
struct Milvus {
    child: Child,
    data: tempfile::TempDir,
}

impl Milvus {
    fn start(bin: &Path) -> Milvus {
        let data = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(data.path().join("server.log")).unwrap();
        let child = Command::new(bin)
            .args(["--data", data.path().join("milvus").to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start milvus-server");
        let mut m = Milvus { child, data };
        let t = Instant::now();
        loop {
            if healthy() && port_open(19530) {
                break;
            }
            if let Some(st) = m.child.try_wait().unwrap() {
                panic!("milvus-server exited with {st}: {}", m.log_tail());
            }
            assert!(
                t.elapsed() < Duration::from_secs(240),
                "Milvus not healthy after 240 s: {}",
                m.log_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        println!(
            "Milvus standalone healthy after {:.1} s",
            t.elapsed().as_secs_f64()
        );
        m
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default();
        s.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Milvus {
    fn drop(&mut self) {
        let pg = self.child.id() as i32;
        unsafe { libc::kill(-pg, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        unsafe { libc::kill(-pg, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn healthy() -> bool {
    let Ok(mut s) = TcpStream::connect("127.0.0.1:9091") else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.") && out.contains(" 200 ") && out.trim_end().ends_with("OK")
}

/// The Milvus server (the tests that call this are ignored by build.rs's `has_milvus` where it is
/// not installed or this is not root: they need a network namespace).
fn milvus_server() -> PathBuf {
    let bin = milvus_server_bin();
    crate::require_input(&bin);
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the Milvus tests need root (a network namespace)"
    );
    bin
}

const URI: &str = "milvus://127.0.0.1:19530";

fn query_json_lines(args: &[&str]) -> Vec<Value> {
    let o = twindex(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
#[cfg_attr(
    not(all(has_milvus, has_minilm, has_qqp)),
    ignore = "needs root, the Milvus server (bash benches/peers/milvus_setup.sh target/milvus-venv) and ../shared's MiniLM and QQP"
)]
fn milvus_backend_answers_like_the_local_index_and_refuses_bad_pushes() {
    let bin = milvus_server();
    crate::require_input(Path::new(MODEL));
    crate::require_input(Path::new(crate::serve::QQP));
    let manifest = env!("CARGO_MANIFEST_DIR").to_string();
    in_netns(move || {
        std::env::set_current_dir(&manifest).unwrap();
        let milvus = Milvus::start(&bin);
        let tmp = tempfile::tempdir().unwrap();
        let t = |p: &str| tmp.path().join(p);

        // A calibrated text index of 300 questions, labelled by parity.
        let (texts, queries) = questions(300, 40);
        let mut body = String::from("text\tkind\n");
        for (i, q) in texts.iter().enumerate() {
            body.push_str(&format!(
                "{q}\t{}\n",
                if i % 2 == 0 { "even" } else { "odd" }
            ));
        }
        std::fs::write(t("texts.tsv"), body).unwrap();
        std::fs::write(t("queries.txt"), queries.join("\n")).unwrap();
        let idx = t("qqp");
        ok_json(&[
            "index",
            "build",
            "--model",
            MODEL,
            "--text",
            t("texts.tsv").to_str().unwrap(),
            "--text-column",
            "text",
            "--label-column",
            "kind",
            "--out",
            idx.to_str().unwrap(),
            "--json",
        ]);
        let s = Searcher::open(
            &idx,
            &OpenOptions {
                writable: true,
                model: None,
            },
        )
        .unwrap();
        s.set_calibration(Some(Calibration {
            threshold: 0.72,
            precision: f64::NAN,
            recall: f64::NAN,
            f1: f64::NAN,
            method: "test".into(),
            extra: Value::Null,
        }))
        .unwrap();
        s.close().unwrap();

        // Milvus not running / no such collection: one clear line each, non-zero exit.
        fails_with(
            &[
                "query",
                "--milvus",
                "milvus://127.0.0.1:1/qqp",
                "--text",
                "x",
            ],
            "cannot reach Milvus at http://127.0.0.1:1",
        );
        fails_with(
            &["query", "--milvus", &format!("{URI}/nosuch"), "--text", "x"],
            "has no collection \"nosuch\"",
        );

        // Push the index; its threshold, M and efConstruction travel with it.
        let j = ok_json(&[
            "index",
            "push",
            "--index",
            idx.to_str().unwrap(),
            "--milvus",
            URI,
            "--collection",
            "qqp",
            "--batch",
            "128",
            "--json",
        ]);
        assert_eq!(j["rows"], 300, "{j}");
        assert_eq!(j["total_rows"], 300, "{j}");
        assert_eq!(j["created"], true);
        let want_thr = 1.0 - 0.72f32;
        assert!((j["threshold"].as_f64().unwrap() - want_thr as f64).abs() < 1e-6);

        // The same queries through Milvus and through the local index: same neighbours, same
        // distances, same decisions; with a label filter too.
        let qfile = t("queries.txt");
        let qqp_uri = format!("{URI}/qqp");
        for extra in [&[][..], &["--label", "odd"][..]] {
            let mut local_args = vec![
                "query",
                "--index",
                idx.to_str().unwrap(),
                "--text-file",
                qfile.to_str().unwrap(),
                "--k",
                "5",
                "--json",
            ];
            local_args.extend_from_slice(extra);
            let mut remote_args = local_args.clone();
            remote_args[1] = "--milvus";
            remote_args[2] = &qqp_uri;
            let local = query_json_lines(&local_args);
            let remote = query_json_lines(&remote_args);
            assert_eq!(local.len(), 40);
            assert_eq!(remote.len(), 40);
            for (l, r) in local.iter().zip(&remote) {
                assert_eq!(l["threshold"], r["threshold"]);
                assert_eq!(l["identity"], r["identity"], "{l} vs {r}");
                let (lr, rr) = (
                    l["results"].as_array().unwrap(),
                    r["results"].as_array().unwrap(),
                );
                assert_eq!(lr.len(), rr.len());
                for (a, b) in lr.iter().zip(rr) {
                    assert_eq!(a["id"], b["id"], "{l} vs {r}");
                    assert_eq!(a["label"], b["label"]);
                    assert_eq!(a["source"], b["source"]);
                    assert_eq!(a["duplicate"], b["duplicate"]);
                    let (da, db) = (
                        a["distance"].as_f64().unwrap(),
                        b["distance"].as_f64().unwrap(),
                    );
                    assert!((da - db).abs() < 1e-4, "{da} vs {db}");
                    if !extra.is_empty() {
                        assert_eq!(b["label"], "odd");
                    }
                }
            }
        }

        // Another encoder's vectors (a raw-vector index) are refused, and nothing is added.
        let vec8 = t("vec8");
        vector_index(&vec8, 200, 8, 3, None);
        fails_with(
            &[
                "index",
                "push",
                "--index",
                vec8.to_str().unwrap(),
                "--milvus",
                URI,
                "--collection",
                "qqp",
            ],
            "holds vectors of another encoder",
        );
        let s = Searcher::open_milvus(
            &twindex::query::milvus::MilvusUri::parse(URI).unwrap(),
            "qqp",
            &OpenOptions {
                writable: true,
                model: None,
            },
        )
        .unwrap();
        assert_eq!(s.len(), 300);

        // A wrong dimension: vectors of 16 into a collection of 8.
        ok_json(&[
            "index",
            "push",
            "--index",
            vec8.to_str().unwrap(),
            "--milvus",
            URI,
            "--collection",
            "vec8",
            "--json",
        ]);
        let vec16 = t("vec16");
        vector_index(&vec16, 50, 16, 4, None);
        fails_with(
            &[
                "index",
                "push",
                "--index",
                vec16.to_str().unwrap(),
                "--milvus",
                URI,
                "--collection",
                "vec8",
            ],
            "dimension",
        );
        // Pushing the same items twice is refused (ids already there).
        fails_with(
            &[
                "index",
                "push",
                "--index",
                vec8.to_str().unwrap(),
                "--milvus",
                URI,
                "--collection",
                "vec8",
            ],
            "already holds",
        );
        // Raw vectors come back as the local index's (l2: Milvus' squared distance converted).
        let local = ok_json(&[
            "query",
            "--index",
            vec8.to_str().unwrap(),
            "--item",
            "17",
            "--k",
            "5",
            "--json",
        ]);
        let remote = ok_json(&[
            "query",
            "--milvus",
            &format!("{URI}/vec8"),
            "--item",
            "17",
            "--k",
            "5",
            "--json",
        ]);
        for (a, b) in local["results"]
            .as_array()
            .unwrap()
            .iter()
            .zip(remote["results"].as_array().unwrap())
        {
            assert_eq!(a["id"], b["id"], "{local} vs {remote}");
            assert!(
                (a["distance"].as_f64().unwrap() - b["distance"].as_f64().unwrap()).abs() < 1e-4
            );
        }

        // A push that fails half way into a collection it created leaves nothing behind.
        let bad = t("bad");
        vector_index(&bad, 120, 8, 6, Some(&"x".repeat(2000)));
        let o = twindex(&[
            "index",
            "push",
            "--index",
            bad.to_str().unwrap(),
            "--milvus",
            URI,
            "--collection",
            "half",
            "--batch",
            "50",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.contains("label of 2000 bytes") && err.contains("nothing is left behind"),
            "{err}"
        );
        fails_with(
            &["query", "--milvus", &format!("{URI}/half"), "--item", "0"],
            "has no collection \"half\"",
        );

        // Enrol and delete through a writable Searcher over Milvus.
        let ids = s
            .add(&[NewItem {
                content: Query::Text("How do I run a vector database on a laptop?"),
                label: "new".into(),
                source: None,
            }])
            .unwrap();
        assert_eq!(ids, vec![300]);
        let a = s
            .query(
                &Query::Text("How do I run a vector database on a laptop?"),
                &SearchOptions {
                    k: 3,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(a.results[0].id, 300, "{a:?}");
        assert!(a.results[0].distance < 1e-4 && a.results[0].duplicate);
        assert_eq!(a.identity.as_deref(), Some("new"));
        let v = s
            .verify(
                &Query::Text("How can I run a vector database on my laptop?"),
                "new",
                None,
                twindex::query::Aggregate::Min,
            )
            .unwrap();
        assert!(v.accepted && v.references == 1, "{v:?}");
        s.delete(&[300]).unwrap();
        let a = s
            .query(
                &Query::Text("How do I run a vector database on a laptop?"),
                &SearchOptions::default(),
            )
            .unwrap();
        assert!(a.results.iter().all(|h| h.id != 300));
        assert!(s.delete(&[300]).is_err(), "deleting a missing id");

        // Served over HTTP: the server's answers are the library's over the same collection.
        let server = Server::start(&["--index", &format!("q={URI}/qqp"), "--read-only"]);
        for q in queries.iter().take(5) {
            let lib = s
                .query(
                    &Query::Text(q),
                    &SearchOptions {
                        k: 5,
                        ..Default::default()
                    },
                )
                .unwrap();
            let got = server.post_ok("/v1/indexes/q/query", &json!({"text": q, "k": 5}));
            assert_same(&got, &lib, q);
        }
        server.stop();
        drop(milvus);
    });
}

#[test]
fn image_parts_build_a_local_index_that_answers_like_index_build() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, faces) = ("corpora/encoders/orl-faces/fold-0", "corpora/orl-faces");
    let part = tmp.path().join("orl.parquet");
    let j = ok_json(&[
        "embed",
        "--corpus",
        faces,
        "--model",
        model,
        "--shard",
        "0/1",
        "--out",
        part.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(j["rows"], 400);
    let from_parts = tmp.path().join("from-parts");
    ok_json(&[
        "index",
        "build",
        "--parts",
        part.to_str().unwrap(),
        "--out",
        from_parts.to_str().unwrap(),
        "--json",
    ]);
    let direct = tmp.path().join("direct");
    ok_json(&[
        "index",
        "build",
        "--corpus",
        faces,
        "--model",
        model,
        "--out",
        direct.to_str().unwrap(),
        "--json",
    ]);
    for img in ["corpora/orl-faces/s7/3.pgm", "corpora/orl-faces/s33/10.pgm"] {
        let a = ok_json(&[
            "query",
            "--index",
            from_parts.to_str().unwrap(),
            "--image",
            img,
            "--k",
            "5",
            "--json",
        ]);
        let b = ok_json(&[
            "query",
            "--index",
            direct.to_str().unwrap(),
            "--image",
            img,
            "--k",
            "5",
            "--json",
        ]);
        assert_eq!(a["threshold"], b["threshold"], "{a} vs {b}");
        assert_eq!(a["identity"], b["identity"]);
        for (x, y) in a["results"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["results"].as_array().unwrap())
        {
            assert_eq!(x["source"], y["source"], "{a} vs {b}");
            assert_eq!(x["label"], y["label"]);
            assert!(
                (x["distance"].as_f64().unwrap() - y["distance"].as_f64().unwrap()).abs() < 1e-5
            );
        }
    }
    // The index copied the encoder: it still answers after the part is gone.
    std::fs::remove_file(&part).unwrap();
    ok_json(&[
        "query",
        "--index",
        from_parts.to_str().unwrap(),
        "--image",
        "corpora/orl-faces/s1/1.pgm",
        "--json",
    ]);
}
