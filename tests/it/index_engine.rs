//! The persistent index: round trips, add / delete / compact, corruption detection, errors,
//! dedup and calibration. Seeds are fixed and printed.

use crate::data::vectors as random_vectors;
use serde_json::json;
use std::path::Path;
use twindex::error::Error;
use twindex::index::{
    Backend, Calibration, EncoderRecord, HnswParams, Index, IndexConfig, Item, Metric,
    FORMAT_VERSION,
};

const DIM: usize = 16;

fn items(first: usize, n: usize) -> Vec<Item> {
    (first..first + n)
        .map(|i| Item {
            label: format!("class-{}", i % 7),
            source: format!("/data/{i}.png"),
            payload: (i % 2 == 0).then(|| json!({ "i": i })),
        })
        .collect()
}

fn config(backend: Backend, metric: Metric) -> IndexConfig {
    IndexConfig {
        metric,
        normalize: false,
        backend,
        hnsw: HnswParams {
            m: 12,
            ef_construction: 100,
            ef_search: 50,
            seed: 3,
            ..Default::default()
        },
    }
}

fn encoder() -> EncoderRecord {
    EncoderRecord::Image {
        path: "models/none".into(),
        sha256: "00".into(),
        arch: "test".into(),
        dim: DIM,
        metric: Metric::L2,
        source: "models/none".into(),
        ensemble_members: None,
    }
}

fn build(dir: &Path, backend: Backend, metric: Metric, n: usize, seed: u64) -> (Index, Vec<f32>) {
    let v = random_vectors(seed, n, DIM);
    let idx = Index::create(
        dir,
        config(backend, metric),
        encoder(),
        DIM,
        &v,
        items(0, n),
        &|_| {},
    )
    .unwrap();
    (idx, v)
}

fn data_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_every_backend() {
    let seed = 11;
    println!("seed {seed}");
    for backend in [Backend::Hnsw, Backend::HnswRs, Backend::Flat] {
        for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("idx");
            let (idx, v) = build(&dir, backend, metric, 800, seed);
            assert_eq!(idx.len(), 800);
            let queries = random_vectors(seed + 1, 20, DIM);
            let before: Vec<_> = queries
                .chunks(DIM)
                .map(|q| idx.search(q, 10, Some(80)).unwrap())
                .collect();
            let again = Index::open(&dir).unwrap();
            assert_eq!(again.manifest(), idx.manifest());
            assert_eq!(again.manifest().format_version, FORMAT_VERSION);
            for (q, b) in queries.chunks(DIM).zip(&before) {
                let a = again.search(q, 10, Some(80)).unwrap();
                if backend == Backend::HnswRs {
                    // Rebuilt on open (parallel insertion order differs): same top hit.
                    assert_eq!(a[0].id, b[0].id, "{backend:?} {metric}");
                } else {
                    assert_eq!(&a, b, "{backend:?} {metric}");
                }
            }
            let g = again.get(17).unwrap();
            assert_eq!(&*g.item, &items(17, 1)[0]);
            if metric == Metric::L2 || metric == Metric::Dot {
                assert_eq!(g.vector, &v[17 * DIM..18 * DIM]);
            }
            let files = data_files(&dir);
            println!("{backend:?} {metric}: {files:?}");
            assert!(files.iter().all(|f| !f.ends_with(".tmp")));
        }
    }
}

#[test]
fn add_delete_compact_persist() {
    let seed = 12;
    println!("seed {seed}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let (mut idx, v) = build(&dir, Backend::Hnsw, Metric::L2, 500, seed);
    // Files of the user's that merely look like ours survive every commit.
    for f in ["vectors.npy", "items.jsonl", "graph.1.hnsw.bak"] {
        std::fs::write(dir.join(f), b"keep me").unwrap();
    }
    let extra = random_vectors(seed + 5, 50, DIM);
    let ids = idx.add(&extra, items(500, 50), &|_| {}).unwrap();
    assert_eq!(ids, (500..550).collect::<Vec<u64>>());
    assert_eq!(idx.len(), 550);
    // Each added item is its own nearest neighbour.
    for (i, q) in extra.chunks(DIM).enumerate() {
        assert_eq!(idx.search(q, 1, None).unwrap()[0].id, 500 + i as u64);
    }
    // Delete: gone from searches and get; errors for unknown or repeated ids.
    let gone = [3u64, 7, 510, 0];
    idx.delete(&gone).unwrap();
    assert_eq!(idx.len(), 546);
    for &id in &gone {
        assert!(matches!(idx.get(id), Err(Error::UnknownId(x)) if x == id));
    }
    assert!(matches!(idx.delete(&[3]), Err(Error::UnknownId(3))));
    assert!(matches!(idx.delete(&[9999]), Err(Error::UnknownId(9999))));
    let twice = idx.delete(&[20, 20]).unwrap_err().to_string();
    assert!(twice.contains("id 20 is named twice"), "{twice}");
    assert!(idx.get(20).is_ok(), "a refused delete must delete nothing");
    let all: Vec<f32> = v.iter().chain(&extra).copied().collect();
    let check = |idx: &Index| {
        for q in all.chunks(DIM) {
            let hits = idx.search(q, 20, Some(100)).unwrap();
            assert_eq!(hits.len(), 20);
            assert!(
                hits.iter().all(|h| !gone.contains(&h.id)),
                "a deleted id came back"
            );
        }
    };
    check(&idx);
    // Items come back whole: read from the mapped file (opened), from memory (added), and
    // filtered on by label.
    let same_items = |idx: &Index, ids: &[u64]| {
        for &id in ids {
            let it = idx.get(id).unwrap().item.into_owned();
            assert_eq!(it, items(id as usize, 1)[0], "item {id}");
        }
    };
    same_items(&idx, &[1, 2, 499, 500, 549]);
    let reopened = Index::open(&dir).unwrap();
    assert_eq!(reopened.len(), 546);
    check(&reopened);
    same_items(&reopened, &[1, 2, 499, 500, 549]);
    let q = &all[2 * DIM..3 * DIM];
    let only = |l: &str| l == "class-2";
    let hits = reopened.search_where(q, 5, Some(100), Some(&only)).unwrap();
    assert_eq!(hits[0].id, 2);
    assert!(hits.iter().all(|h| h.id % 7 == 2), "{hits:?}");
    drop(reopened);
    // Compact: same live ids, same answers for exact-match queries, no tombstones left.
    let before_ids: Vec<u64> = idx.ids().collect();
    idx.compact(&|_| {}).unwrap();
    assert_eq!(idx.ids().collect::<Vec<_>>(), before_ids);
    assert_eq!(idx.manifest().slot_count, 546);
    assert_eq!(idx.manifest().files.tombstones.bytes, 0);
    check(&idx);
    for &id in &[1u64, 200, 549] {
        let q = all[id as usize * DIM..(id as usize + 1) * DIM].to_vec();
        assert_eq!(idx.search(&q, 1, None).unwrap()[0].id, id);
        assert_eq!(idx.get(id).unwrap().vector, &q[..]);
    }
    same_items(&idx, &[1, 2, 499, 500, 549]);
    // New ids continue after compaction; nothing is reused.
    let more = idx
        .add(&random_vectors(seed + 6, 2, DIM), items(0, 2), &|_| {})
        .unwrap();
    assert_eq!(more, vec![550, 551]);
    let reopened = Index::open(&dir).unwrap();
    assert_eq!(reopened.len(), 548);
    check(&reopened);
    same_items(&reopened, &[1, 499, 549]);
    assert_eq!(reopened.get(550).unwrap().item.source, "/data/0.png");
    // Only the current generation's files remain.
    let files = data_files(&dir);
    let gen = reopened.manifest().generation;
    println!("generation {gen}: {files:?}");
    // The six of the generation (vectors, items and their catalogue, tombstones, graph,
    // manifest), its write-ahead log and the writer lock, and the three files of the user.
    assert_eq!(files.len(), 6 + 2 + 3, "{files:?}");
    assert!(files.contains(&format!("wal.{gen}.log")), "{files:?}");
    assert!(files.contains(&"vectors.npy".to_string()));
}

#[test]
fn corruption_is_detected_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let (idx, _) = build(&dir, Backend::Hnsw, Metric::L2, 300, 13);
    let m = idx.manifest().clone();
    drop(idx);
    // Flip one byte of the vectors file.
    let vpath = dir.join(&m.files.vectors.name);
    let good = std::fs::read(&vpath).unwrap();
    let mut bad = good.clone();
    bad[1234] ^= 0x40;
    std::fs::write(&vpath, &bad).unwrap();
    // Opening reads only sizes and headers (it costs the same at any size); `verify` reads
    // every byte and names the file.
    let opened = Index::open(&dir).unwrap();
    match opened.verify() {
        Err(e @ Error::Corrupt { .. }) => {
            let msg = e.to_string();
            println!("{msg}");
            assert!(
                msg.contains(&m.files.vectors.name) && msg.contains("checksum"),
                "{msg}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    std::fs::write(&vpath, &good).unwrap();
    // Truncate the graph file.
    let gname = &m.files.graph.as_ref().unwrap().name;
    let gpath = dir.join(gname);
    let g = std::fs::read(&gpath).unwrap();
    std::fs::write(&gpath, &g[..g.len() / 2]).unwrap();
    let e = Index::open(&dir).unwrap_err();
    println!("{e}");
    assert!(e.to_string().contains(gname.as_str()));
    std::fs::write(&gpath, &g).unwrap();
    // Truncate the manifest.
    let mpath = dir.join("manifest.json");
    let mbytes = std::fs::read(&mpath).unwrap();
    std::fs::write(&mpath, &mbytes[..mbytes.len() / 2]).unwrap();
    let e = Index::open(&dir).unwrap_err();
    println!("{e}");
    assert!(matches!(e, Error::Corrupt { .. }) && e.to_string().contains("manifest.json"));
    std::fs::write(&mpath, b"").unwrap();
    assert!(matches!(Index::open(&dir), Err(Error::Corrupt { .. })));
    // A future format version is refused by name.
    let mut v: serde_json::Value = serde_json::from_slice(&mbytes).unwrap();
    v["format_version"] = json!(FORMAT_VERSION + 1);
    std::fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = Index::open(&dir).unwrap_err();
    assert!(e.to_string().contains("format_version"), "{e}");
    // A manifest whose dimension disagrees with the files.
    let mut v: serde_json::Value = serde_json::from_slice(&mbytes).unwrap();
    v["dim"] = json!(DIM + 1);
    std::fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = Index::open(&dir).unwrap_err();
    println!("{e}");
    assert!(matches!(e, Error::Corrupt { .. }));
    // The encoder record is typed: it reads back as written, and an unknown kind is refused
    // by name (the checksum dropped, so that the record itself is what is judged).
    let mut v: serde_json::Value = serde_json::from_slice(&mbytes).unwrap();
    assert_eq!(
        v["encoder"],
        json!({"arch": "test", "dim": DIM, "kind": "image", "metric": "l2",
               "path": "models/none", "sha256": "00", "source": "models/none"})
    );
    v.as_object_mut().unwrap().remove("checksum");
    v["encoder"] = json!({"kind": "vectors", "dim": DIM, "source": "old.fvecs"});
    std::fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(
        Index::open(&dir).unwrap().manifest().encoder,
        EncoderRecord::vectors("old.fvecs", DIM)
    );
    v["encoder"] = json!({"kind": "crash-test"});
    std::fs::write(&mpath, serde_json::to_vec(&v).unwrap()).unwrap();
    let e = Index::open(&dir).unwrap_err();
    assert!(
        matches!(e, Error::Corrupt { .. })
            && e.to_string().contains("manifest.json")
            && e.to_string()
                .contains(r#"unknown encoder kind Some("crash-test")"#),
        "{e}"
    );
    // A missing data file.
    std::fs::write(&mpath, &mbytes).unwrap();
    std::fs::remove_file(dir.join(&m.files.items.name)).unwrap();
    assert!(matches!(Index::open(&dir), Err(Error::Io { .. })));
    // Not an index at all.
    assert!(Index::open(tmp.path()).is_err());
}

#[test]
fn bad_input_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    // Empty build.
    let e = Index::create(
        &dir,
        IndexConfig::default(),
        encoder(),
        DIM,
        &[],
        vec![],
        &|_| {},
    );
    assert!(matches!(e, Err(Error::Empty(_))), "{e:?}");
    let (mut idx, v) = build(&dir, Backend::Hnsw, Metric::L2, 100, 14);
    // Building over an existing index.
    assert!(Index::create(
        &dir,
        IndexConfig::default(),
        encoder(),
        DIM,
        &v,
        items(0, 100),
        &|_| {}
    )
    .is_err());
    // Wrong query dimension.
    match idx.search(&v[..DIM + 3], 5, None) {
        Err(Error::DimensionMismatch { expected, got, .. }) => {
            assert_eq!((expected, got), (DIM, DIM + 3))
        }
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }
    assert!(matches!(
        idx.search_many(&v[..DIM - 1], 5, None),
        Err(Error::DimensionMismatch { .. })
    ));
    // Wrong added dimension; mismatched item count; non-finite values: nothing changes.
    assert!(matches!(
        idx.add(&v[..2 * (DIM - 1)], items(0, 2), &|_| {}),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(idx.add(&v[..DIM * 3], items(0, 2), &|_| {}).is_err());
    let mut nan = v[..DIM].to_vec();
    nan[0] = f32::INFINITY;
    assert!(idx.add(&nan, items(0, 1), &|_| {}).is_err());
    assert_eq!(Index::open(&dir).unwrap().len(), 100);
    assert_eq!(idx.len(), 100);
    assert!(matches!(idx.get(100), Err(Error::UnknownId(100))));
    // Encoder check.
    idx.ensure_compatible(&encoder(), DIM).unwrap();
    assert!(matches!(
        idx.ensure_compatible(&encoder(), DIM + 1),
        Err(Error::DimensionMismatch { .. })
    ));
    assert!(idx
        .ensure_compatible(&EncoderRecord::vectors("other", DIM), DIM)
        .is_err());
    // Bad parameters are refused before anything is built.
    let cfg = IndexConfig {
        hnsw: HnswParams {
            m: 0,
            ..HnswParams::default()
        },
        ..IndexConfig::default()
    };
    assert!(Index::create(
        &tmp.path().join("x"),
        cfg,
        encoder(),
        DIM,
        &v,
        items(0, 100),
        &|_| {}
    )
    .is_err());
}

#[test]
fn dedup_finds_hand_made_clusters() {
    // 2-d points: {0,1,2} within 0.05 of each other (a chain 0-1-2), {3,4} at 0.02, 5..9 far
    // apart (>= 1 from everything). Threshold 0.06 (L2).
    let pts: [[f32; 2]; 10] = [
        [0.0, 0.0],
        [0.04, 0.0],
        [0.08, 0.0],
        [5.0, 5.0],
        [5.0, 5.02],
        [-3.0, 1.0],
        [2.0, -4.0],
        [9.0, 0.0],
        [0.0, 9.0],
        [-7.0, -7.0],
    ];
    let flat: Vec<f32> = pts.iter().flatten().copied().collect();
    for backend in [Backend::Hnsw, Backend::HnswRs, Backend::Flat] {
        let tmp = tempfile::tempdir().unwrap();
        let mut idx = Index::create(
            &tmp.path().join("d"),
            config(backend, Metric::L2),
            encoder(),
            2,
            &flat,
            items(0, 10),
            &|_| {},
        )
        .unwrap();
        let d = idx.dedup(0.06).unwrap();
        let pairs: Vec<(u64, u64)> = d.pairs.iter().map(|p| (p.a, p.b)).collect();
        // 0-2 is 0.08 apart: not a pair, but in the same cluster through 1.
        assert_eq!(pairs, vec![(0, 1), (1, 2), (3, 4)], "{backend:?}");
        assert!((d.pairs[2].distance - 0.02).abs() < 1e-4);
        assert_eq!(d.clusters, vec![vec![0, 1, 2], vec![3, 4]], "{backend:?}");
        // Deleting 1 splits the chain.
        idx.delete(&[1]).unwrap();
        let d = idx.dedup(0.06).unwrap();
        assert_eq!(d.clusters, vec![vec![3, 4]], "{backend:?}");
        assert!(idx.dedup(f32::NAN).is_err());
    }
}

#[test]
fn calibration_is_stored_in_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let (mut idx, v) = build(&dir, Backend::Hnsw, Metric::Cosine, 200, 15);
    assert!(idx.calibration().is_none());
    let gen = idx.manifest().generation;
    let files = idx.manifest().files.clone();
    let c = Calibration {
        threshold: 0.8,
        precision: 0.97,
        recall: 0.9,
        f1: 0.933,
        method: "best_f1".into(),
        extra: json!({ "pairs": 1000 }),
    };
    idx.set_calibration(Some(c.clone())).unwrap();
    // Only the manifest changed.
    assert_eq!(idx.manifest().files, files);
    assert_eq!(idx.manifest().generation, gen + 1);
    let again = Index::open(&dir).unwrap();
    assert_eq!(again.calibration(), Some(&c));
    // Cosine: similarity 0.8 is distance 0.2; the conversion round-trips.
    let t = again.threshold_distance().unwrap();
    assert!((t - 0.2).abs() < 1e-6);
    assert!((again.metric().similarity(t) - 0.8).abs() < 1e-6);
    // The distance a search reports converts to the similarity computed by hand.
    let (a, b) = (&v[..DIM], &v[DIM..2 * DIM]);
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    let d = Metric::Cosine.distance(a, b);
    assert!((Metric::Cosine.similarity(d) - dot / (na * nb)).abs() < 1e-5);
    idx.set_calibration(None).unwrap();
    assert!(Index::open(&dir).unwrap().calibration().is_none());
    assert!(idx
        .set_calibration(Some(Calibration {
            threshold: f32::NAN,
            ..c
        }))
        .is_err());
}

#[test]
fn metric_conventions() {
    let a = [3.0f32, 4.0];
    let b = [0.0f32, 0.0];
    // l2: Euclidean distance 5 (3-4-5 triangle); similarity 1 - 5.
    assert_eq!(Metric::L2.distance(&a, &b), 5.0);
    assert_eq!(Metric::L2.similarity(5.0), -4.0);
    // dot: 1 - a.c with c = (1, 0): 1 - 3.
    assert_eq!(Metric::Dot.distance(&a, &[1.0, 0.0]), -2.0);
    assert_eq!(Metric::Dot.similarity(-2.0), 3.0);
    // cosine of (3,4) and (4,3): 24/25; zero vectors have distance 1, not NaN.
    assert!((Metric::Cosine.distance(&a, &[4.0, 3.0]) - (1.0 - 24.0 / 25.0)).abs() < 1e-6);
    assert_eq!(Metric::Cosine.distance(&a, &b), 1.0);
    for m in [Metric::L2, Metric::Cosine, Metric::Dot] {
        for s in [-3.0f32, 0.0, 0.25, 1.0] {
            assert_eq!(m.similarity(m.distance_for_similarity(s)), s);
        }
        // Monotone: a larger distance is a smaller similarity.
        assert!(m.similarity(0.1) > m.similarity(0.2));
        assert_eq!(m.name().parse::<Metric>().unwrap(), m);
    }
    assert!("manhattan".parse::<Metric>().is_err());
}

/// Opening maps the graph's node blocks and reads neither the vectors nor the items file, so
/// a damaged level-0 list opens: searches skip links that are not nodes and read no more links
/// than a list holds (no panic, no read outside the graph), and `verify`, which reads every
/// byte, names the graph file and the node.
#[test]
fn opening_maps_the_graph_and_verify_reads_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let (idx, v) = build(&dir, Backend::Hnsw, Metric::L2, 400, 21);
    let m = idx.manifest().clone();
    drop(idx);
    let r = Index::open(&dir).unwrap().verify().unwrap();
    assert_eq!((r.files, r.slots, r.graph_nodes), (5, 400, 400), "{r:?}");
    // Node 7's first link points past the graph, node 8's count exceeds its capacity.
    let gname = m.files.graph.as_ref().unwrap().name.clone();
    let gpath = dir.join(&gname);
    let mut g = std::fs::read(&gpath).unwrap();
    assert_eq!(&g[8..12], &3u32.to_le_bytes(), "format version 3");
    let stride = 4 * u32::from_le_bytes(g[40..44].try_into().unwrap()) as usize;
    let block = |node: usize| (1 << 16) + node * stride;
    g[block(7) + 4..block(7) + 8].copy_from_slice(&(u32::MAX - 5).to_le_bytes());
    g[block(8)..block(8) + 4].copy_from_slice(&1000u32.to_le_bytes());
    std::fs::write(&gpath, &g).unwrap();
    // The manifest agrees with the damaged file, so that only the links are wrong.
    let mpath = dir.join("manifest.json");
    let mut mj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    mj["files"]["graph"]["sha256"] = json!(twindex::index::store::sha256_hex(&g));
    mj.as_object_mut().unwrap().remove("checksum");
    std::fs::write(&mpath, serde_json::to_vec(&mj).unwrap()).unwrap();
    let idx = Index::open(&dir).unwrap();
    for q in v.chunks(DIM).take(60) {
        let hits = idx.search(q, 10, None).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.id < 400), "{hits:?}");
    }
    let e = idx.verify().unwrap_err().to_string();
    println!("{e}");
    assert!(
        e.contains(&gname) && e.contains("node 7 level 0: bad link"),
        "{e}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Indexes written before the graph file held its node blocks (graph format 1, and 2 when
/// quantized) and before the items had a catalogue still open and answer as they did when
/// written (`tests/data/index-format*`, built by the binary of that time: item 5's nearest are
/// 5, 43, 12); a writer's checkpoint writes the current formats, which open mapped, with the
/// same answers.
#[test]
fn indexes_of_the_earlier_formats_open_and_are_converted_by_a_checkpoint() {
    for (name, version) in [("index-format1", 3u32), ("index-format2-sq8", 4)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(name);
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(name),
            &dir,
        );
        let nearest = |idx: &Index| -> Vec<u64> {
            let q = idx.get(5).unwrap().vector.to_vec();
            idx.search(&q, 3, None)
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect()
        };
        let idx = Index::open(&dir).unwrap();
        assert_eq!(nearest(&idx), [5, 43, 12], "{name}");
        idx.verify().unwrap();
        assert!(idx.manifest().files.catalog.is_none());
        drop(idx);
        Index::open_writer(&dir).unwrap().close().unwrap();
        let idx = Index::open(&dir).unwrap();
        let m = idx.manifest();
        let g = std::fs::read(dir.join(&m.files.graph.as_ref().unwrap().name)).unwrap();
        assert_eq!(&g[8..12], &version.to_le_bytes(), "{name}");
        assert!(m.files.catalog.is_some(), "{name}");
        assert_eq!(nearest(&idx), [5, 43, 12], "{name}");
        assert_eq!(idx.get(7).unwrap().item.source, "small.npy#7");
        idx.verify().unwrap();
    }
}

#[test]
fn a_reader_scores_logged_adds_beside_the_graph_and_links_them_before_writing() {
    use twindex::index::{FlatIndex, Quantize, VectorIndex};
    let top10 = |idx: &Index, q: &[f32]| -> Vec<u64> {
        let hits = idx.search(q, 10, None).unwrap();
        hits.iter().map(|h| h.id).collect()
    };
    // One thread, so that a writer's replay and a reader's later linking insert alike.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for quantize in [Quantize::None, Quantize::Sq8] {
            println!("quantize {quantize:?}, seeds 31 / 32");
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("idx");
            let (n, added) = (2000, 24);
            let mut v = random_vectors(31, n + added, DIM);
            let mut cfg = config(Backend::Hnsw, Metric::L2);
            cfg.hnsw.quantize = quantize;
            let mut w = Index::create(
                &dir,
                cfg,
                encoder(),
                DIM,
                &v[..n * DIM],
                items(0, n),
                &|_| {},
            )
            .unwrap();
            // Three logged batches and a delete between them (one of the added, one old).
            for (a, b) in [(0, 10), (10, 11), (11, added)] {
                let rows = &v[(n + a) * DIM..(n + b) * DIM];
                w.add(rows, items(n + a, b - a), &|_| {}).unwrap();
                if a == 0 {
                    w.delete(&[(n + 3) as u64, 17]).unwrap();
                }
            }
            drop(w); // no checkpoint: the adds live in the log
            let live = |id: u64| id != (n + 3) as u64 && id != 17;
            let mut r = Index::open(&dir).unwrap();
            assert_eq!(r.unlinked(), added, "a reader leaves logged adds unlinked");
            assert_eq!(r.len(), n + added - 2);
            let queries = random_vectors(32, 40, DIM);
            let own = v[n * DIM..].to_vec();
            let all_q: Vec<&[f32]> = own.chunks(DIM).chain(queries.chunks(DIM)).collect();
            let before: Vec<Vec<u64>> = all_q.iter().map(|q| top10(&r, q)).collect();
            // The oracle: exact search over every vector, deleted ones filtered out.
            let flat = FlatIndex::from_vectors(DIM, Metric::L2, &v).unwrap();
            for (i, (q, got)) in all_q.iter().zip(&before).enumerate() {
                assert!(
                    got.iter().all(|&id| live(id)),
                    "a deleted id came back: {got:?}"
                );
                let keep = |s: usize| live(s as u64);
                let exact = flat.search_filtered(q, 10, 10, &keep).unwrap();
                let want: Vec<u64> = exact.iter().map(|h| h.id).collect();
                // Unlinked items are scored exactly: every one the oracle ranks in the top 10
                // is there.
                for id in want.iter().filter(|&&id| id >= n as u64) {
                    assert!(
                        got.contains(id),
                        "query {i}: added item {id} missed: {got:?} vs {want:?}"
                    );
                }
                if i < added && live((n + i) as u64) {
                    assert_eq!(got[0], (n + i) as u64, "an added item is its own nearest");
                }
            }
            assert!(r.get((n + 5) as u64).unwrap().vector == &v[(n + 5) * DIM..(n + 6) * DIM]);
            // A write through `&self` with adds unlinked is refused, nothing logged.
            let wal = dir.join(twindex::index::wal::wal_name(r.manifest().generation));
            let log_bytes = || std::fs::metadata(&wal).map(|m| m.len());
            let logged = log_bytes().unwrap();
            let e = r.log_delete(&[1]).unwrap_err().to_string();
            assert!(e.contains("logged adds outside the graph"), "{e}");
            assert_eq!(log_bytes().unwrap(), logged, "a refused delete appended");
            // Linking gives the graph a writer's replay builds.
            r.load_graph().unwrap();
            assert_eq!(r.unlinked(), 0);
            let wr = Index::open_writer(&dir).unwrap();
            assert_eq!(wr.unlinked(), 0, "a writer links logged adds on open");
            for q in &all_q {
                assert_eq!(
                    top10(&r, q),
                    top10(&wr, q),
                    "linked by a reader and replayed by a writer differ"
                );
            }
            drop(wr);
            // A write through `&mut` on a fresh reader links first, then checkpoints whole.
            let mut r = Index::open(&dir).unwrap();
            v.extend(random_vectors(33, 1, DIM));
            r.add(&v[(n + added) * DIM..], items(n + added, 1), &|_| {})
                .unwrap();
            r.close().unwrap();
            let r = Index::open(&dir).unwrap();
            assert_eq!((r.unlinked(), r.recovery().records), (0, 0), "checkpointed");
            r.verify().unwrap();
            for i in [0, 9, 10, 23, 24] {
                let q = &v[(n + i) * DIM..(n + i + 1) * DIM];
                let hits = r.search(q, 1, None).unwrap();
                assert_eq!(hits[0].id, (n + i) as u64, "added item {i} is in the graph");
            }
        }
    });
}
