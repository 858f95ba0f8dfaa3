//! Quantized HNSW (SQ8 walk, exact re-ranking) and the parallel build against the flat
//! oracle, on synthetic clusters and an MNIST subset; the quantized index through
//! add / delete / checkpoint / log replay / compact, memory-mapped after reopening. Seeds are
//! fixed and printed.

use crate::data::clustered;
use std::path::Path;
use twindex::index::{
    Backend, EncoderRecord, FlatIndex, HnswGraph, HnswParams, Index, IndexConfig, Item, Metric,
    Quantize, VectorIndex,
};

/// recall@k of `engine` against the flat oracle; also checks that every returned distance is
/// the exact one (re-ranking returns full-precision distances) and that results are sorted.
fn recall(
    engine: &dyn VectorIndex,
    oracle: &FlatIndex,
    queries: &[f32],
    k: usize,
    ef: usize,
) -> f64 {
    let dim = engine.dim();
    let mut hit = 0;
    for q in queries.chunks(dim) {
        let truth = oracle.search(q, k, k).unwrap();
        let ids: Vec<u64> = truth.iter().map(|h| h.id).collect();
        let got = engine.search(q, k, ef).unwrap();
        assert_eq!(got.len(), k);
        assert!(got.windows(2).all(|w| w[0].distance <= w[1].distance));
        for h in &got {
            let exact = oracle
                .search_filtered(q, 1, 1, &|s| s == h.id as usize)
                .unwrap()[0];
            assert!(
                (exact.distance - h.distance).abs() <= 1e-4 * (1.0 + exact.distance.abs()),
                "slot {}: distance {} but exactly {}",
                h.id,
                h.distance,
                exact.distance
            );
        }
        hit += got.iter().filter(|h| ids.contains(&h.id)).count();
    }
    hit as f64 / (queries.len() / dim * k) as f64
}

fn params(quantize: Quantize) -> HnswParams {
    HnswParams {
        m: 16,
        ef_construction: 100,
        ef_search: 64,
        seed: 42,
        quantize,
        rerank: 32,
    }
}

fn build_in_pool(
    threads: usize,
    dim: usize,
    metric: Metric,
    p: HnswParams,
    data: &[f32],
) -> HnswGraph {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut g = HnswGraph::new(dim, metric, p).unwrap();
        g.add(data, &|_| {}).unwrap();
        g
    })
}

#[test]
fn sq8_recall_against_flat_for_every_metric() {
    let (seed, n, dim) = (20261215, 4000, 48);
    println!("seed {seed}, {n} x {dim}, 40 overlapping clusters");
    let all = clustered(seed, n + 200, dim, 40, 0.8);
    let (data, queries) = all.split_at(n * dim);
    for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
        let oracle = FlatIndex::from_vectors(dim, metric, data).unwrap();
        // One thread each, so that both graphs are the same on every run (parallel insertion
        // orders vary with the machine's load, and so would the margin checked below).
        let plain = build_in_pool(1, dim, metric, params(Quantize::None), data);
        // Two batches: the second is encoded with the first batch's ranges, then the graph
        // has doubled and is retrained. The walk's breadth is the same as the plain one's.
        let p = HnswParams {
            rerank: 16,
            ..params(Quantize::Sq8)
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let g = pool.install(|| {
            let mut g = HnswGraph::new(dim, metric, p).unwrap();
            g.add(&data[..1500 * dim], &|_| {}).unwrap();
            g.add(&data[1500 * dim..], &|_| {}).unwrap();
            g
        });
        assert!(g.is_quantized() && g.quantizer().is_some());
        let r_plain = recall(&plain, &oracle, queries, 10, 16);
        let r_sq8 = recall(&g, &oracle, queries, 10, 16);
        println!("{metric}: recall@10 at ef 16: none {r_plain:.4}, sq8 (rerank 16) {r_sq8:.4}");
        assert!(r_sq8 >= 0.9, "{metric}: sq8 recall {r_sq8}");
        assert!(
            r_sq8 >= r_plain - 0.02,
            "{metric}: sq8 {r_sq8} vs none {r_plain}"
        );
    }
}

#[test]
fn parallel_build_has_the_recall_of_the_serial_build() {
    let (seed, n, dim) = (20261216, 6000, 32);
    println!("seed {seed}, {n} x {dim}, 60 clusters");
    let all = clustered(seed, n + 300, dim, 60, 0.3);
    let (data, queries) = all.split_at(n * dim);
    let oracle = FlatIndex::from_vectors(dim, Metric::L2, data).unwrap();
    for q in [Quantize::None, Quantize::Sq8] {
        // Re-ranking 10: the walk's breadth is the ef searched with, as for none.
        let p = HnswParams {
            rerank: 10,
            ..params(q)
        };
        let serial = build_in_pool(1, dim, Metric::L2, p, data);
        let parallel = build_in_pool(4, dim, Metric::L2, p, data);
        let rs = recall(&serial, &oracle, queries, 10, 24);
        let rp = recall(&parallel, &oracle, queries, 10, 24);
        println!(
            "{}: recall@10 at ef 24: 1 thread {rs:.4}, 4 threads {rp:.4}",
            q.name()
        );
        assert!(rs >= 0.95 && rp >= 0.95, "{}: {rs} / {rp}", q.name());
        assert!(
            (rs - rp).abs() <= 0.01,
            "{}: serial {rs} vs parallel {rp}",
            q.name()
        );
    }
}

#[test]
fn sq8_and_parallel_recall_on_mnist_subset() {
    let base = Path::new("corpora/mnist/train-images-idx3-ubyte.gz");
    let test = Path::new("corpora/mnist/t10k-images-idx3-ubyte.gz");
    let (n, nq, dim) = (6000, 300, 784);
    println!("MNIST: first {n} train images as base, first {nq} test images as queries");
    let px = |p: &Path, rows: usize| -> Vec<f32> {
        let a = twindex::corpus::idx::read_images(p).unwrap();
        a.data[..rows * dim].iter().map(|&b| b as f32).collect()
    };
    let data = px(base, n);
    let queries = px(test, nq);
    let oracle = FlatIndex::from_vectors(dim, Metric::L2, &data).unwrap();
    let mut r = Vec::new();
    for (q, threads) in [
        (Quantize::None, 1),
        (Quantize::None, 2),
        (Quantize::Sq8, 1),
        (Quantize::Sq8, 2),
    ] {
        let p = HnswParams {
            rerank: 10,
            ..params(q)
        };
        let g = build_in_pool(threads, dim, Metric::L2, p, &data);
        let rec = recall(&g, &oracle, &queries, 10, 16);
        println!(
            "{} built with {threads} thread(s): recall@10 at ef 16 = {rec:.4}",
            q.name()
        );
        assert!(rec >= 0.95, "{} {threads} threads: {rec}", q.name());
        r.push(rec);
    }
    assert!(
        (r[0] - r[1]).abs() <= 0.01 && (r[2] - r[3]).abs() <= 0.01,
        "{r:?}"
    );
}

#[test]
fn sq8_graph_file_round_trip_and_version_checks() {
    let (seed, n, dim) = (20261217, 800, 20);
    println!("seed {seed}");
    let data = clustered(seed, n, dim, 8, 0.2);
    let mut g = HnswGraph::new(dim, Metric::L2, params(Quantize::Sq8)).unwrap();
    g.add(&data, &|_| {}).unwrap();
    let mut bytes = Vec::new();
    g.write_graph(&mut bytes).unwrap();
    let path = Path::new("graph.test.hnsw");
    let h =
        HnswGraph::read_graph(dim, Metric::L2, params(Quantize::Sq8), &data, &bytes, path).unwrap();
    assert_eq!(h.quantizer(), g.quantizer());
    for q in data.chunks(dim).take(50) {
        assert_eq!(g.search(q, 5, 32).unwrap(), h.search(q, 5, 32).unwrap());
    }
    // A quantized graph is not read as a plain one, nor the reverse, and a cut quantizer is
    // an error.
    let err = HnswGraph::read_graph(dim, Metric::L2, params(Quantize::None), &data, &bytes, path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("graph version 4"), "{err}");
    assert!(HnswGraph::read_graph(
        dim,
        Metric::L2,
        params(Quantize::Sq8),
        &data,
        &bytes[..bytes.len() - 3],
        path
    )
    .is_err());
    let mut plain = HnswGraph::new(dim, Metric::L2, params(Quantize::None)).unwrap();
    plain.add(&data, &|_| {}).unwrap();
    let mut pb = Vec::new();
    plain.write_graph(&mut pb).unwrap();
    assert!(
        HnswGraph::read_graph(dim, Metric::L2, params(Quantize::Sq8), &data, &pb, path).is_err()
    );
}

const DIM: usize = 16;

fn vector_of(i: u64) -> Vec<f32> {
    crate::data::vectors(i ^ 0xabc, 1, DIM)
}

fn item(i: u64) -> Item {
    Item {
        label: String::new(),
        source: format!("s{i}"),
        payload: None,
    }
}

/// Each live item finds itself first at distance 0 (exact re-ranking), its stored vector is
/// the one added, and deleted ones are never returned.
fn check(idx: &Index, live: &[u64], deleted: &[u64]) {
    assert_eq!(idx.len(), live.len());
    for &id in live {
        let v = vector_of(id);
        assert_eq!(idx.get(id).unwrap().vector, &v[..], "item {id}");
        let hits = idx.search(&v, 3, Some(32)).unwrap();
        assert_eq!(hits[0].id, id, "item {id}: {hits:?}");
        assert_eq!(hits[0].distance, 0.0);
        assert!(hits.iter().all(|h| !deleted.contains(&h.id)));
    }
}

#[test]
fn quantized_index_survives_add_delete_checkpoint_replay_and_compact() {
    println!("vectors seeded by item id (seed id ^ 0xabc)");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let cfg = IndexConfig {
        metric: Metric::L2,
        normalize: false,
        backend: Backend::Hnsw,
        hnsw: HnswParams {
            m: 8,
            ef_construction: 48,
            ef_search: 32,
            seed: 5,
            quantize: Quantize::Sq8,
            rerank: 16,
        },
    };
    let n0 = 300u64;
    let v: Vec<f32> = (0..n0).flat_map(vector_of).collect();
    let mut idx = Index::create(
        &dir,
        cfg,
        EncoderRecord::Vectors {
            dim: None,
            source: None,
        },
        DIM,
        &v,
        (0..n0).map(item).collect(),
        &|_| {},
    )
    .unwrap();
    assert_eq!(idx.manifest().hnsw.quantize, Quantize::Sq8);
    let mut live: Vec<u64> = (0..n0).collect();
    let mut deleted = Vec::new();
    check(&idx, &live, &deleted);
    // Adds and deletes in the log only (no checkpoint), then a reopen replays them.
    for i in n0..n0 + 40 {
        idx.add(&vector_of(i), vec![item(i)], &|_| {}).unwrap();
        live.push(i);
    }
    idx.delete(&[3, 7, 310]).unwrap();
    deleted.extend([3, 7, 310]);
    live.retain(|x| !deleted.contains(x));
    drop(idx);
    let idx = Index::open(&dir).unwrap();
    assert_eq!(idx.recovery().records, 41);
    check(&idx, &live, &deleted);
    drop(idx);
    // A checkpoint writes the log into the files; reopened, the vectors are mapped.
    let mut idx = Index::open_writer(&dir).unwrap();
    idx.checkpoint().unwrap();
    drop(idx);
    let mut idx = Index::open_writer(&dir).unwrap();
    assert_eq!(idx.recovery().records, 0);
    check(&idx, &live, &deleted);
    // Adds after a mapped open live in memory behind the mapped rows; then compact.
    for i in n0 + 40..n0 + 60 {
        idx.add(&vector_of(i), vec![item(i)], &|_| {}).unwrap();
        live.push(i);
    }
    idx.compact(&|_| {}).unwrap();
    assert_eq!(idx.slot_count(), live.len());
    check(&idx, &live, &deleted);
    drop(idx);
    let idx = Index::open(&dir).unwrap();
    check(&idx, &live, &deleted);
    // A search-time rerank change is refused on an unquantized index, with its reason.
    let plain_dir = tmp.path().join("plain");
    let mut plain = Index::create(
        &plain_dir,
        IndexConfig::default(),
        EncoderRecord::Vectors {
            dim: None,
            source: None,
        },
        DIM,
        &v,
        (0..n0).map(item).collect(),
        &|_| {},
    )
    .unwrap();
    let err = plain.set_search_rerank(8).unwrap_err().to_string();
    assert!(err.contains("not a quantized hnsw index"), "{err}");
    // Manifests without quantization stay as they were (no new keys), so older manifests,
    // which lack them, keep their checksum and load with the defaults.
    let text = std::fs::read_to_string(plain_dir.join("manifest.json")).unwrap();
    assert!(
        !text.contains("quantize") && !text.contains("rerank"),
        "{text}"
    );
    let q = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    assert!(
        q.contains("\"quantize\": \"sq8\"") || q.contains("\"quantize\":\"sq8\""),
        "{q}"
    );
    // Quantization needs our own HNSW.
    let bad = IndexConfig {
        backend: Backend::Flat,
        ..cfg
    };
    let err = Index::create(
        &tmp.path().join("bad"),
        bad,
        EncoderRecord::Vectors {
            dim: None,
            source: None,
        },
        DIM,
        &v,
        (0..n0).map(item).collect(),
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs the hnsw backend"), "{err}");
    assert!(!tmp.path().join("bad").exists());
}

#[test]
fn cli_builds_a_quantized_index_writes_ground_truth_and_refuses_bad_values() {
    use crate::cli::{fails_with, ok_json};
    let (seed, n, dim) = (20261218, 600, 24);
    println!("seed {seed}");
    let tmp = tempfile::tempdir().unwrap();
    let data = clustered(seed, n + 50, dim, 10, 0.3);
    let write = |name: &str, rows: &[f32]| {
        let p = tmp.path().join(name);
        let m = twindex::index::Matrix {
            rows: rows.len() / dim,
            cols: dim,
            data: rows.to_vec(),
        };
        twindex::index::vecio::write_npy(&p, &m).unwrap();
        p.display().to_string()
    };
    let base = write("base.npy", &data[..n * dim]);
    let queries = write("q.npy", &data[n * dim..]);
    let out = tmp.path().join("idx").display().to_string();
    let gt = tmp.path().join("gt.ivecs").display().to_string();
    ok_json(&[
        "index",
        "build",
        "--vectors",
        &base,
        "--out",
        &out,
        "--quantize",
        "sq8",
        "--rerank",
        "12",
        "--json",
    ]);
    let b = ok_json(&[
        "bench",
        "--index",
        &out,
        "--queries",
        &queries,
        "--write-gt",
        &gt,
        "--k",
        "10",
        "--ef",
        "32",
        "--json",
    ]);
    assert_eq!(b["quantize"], "sq8");
    assert_eq!(b["rerank"], 12);
    let st = ok_json(&["index", "stats", "--index", &out, "--json"]);
    assert_eq!(
        (st["quantize"].as_str(), st["rerank"].as_u64()),
        (Some("sq8"), Some(12)),
        "{st}"
    );
    let recall = b["sweep"][0]["recall"].as_f64().unwrap();
    println!("sq8 via the CLI: recall@10 at ef 32 = {recall:.4}");
    assert!(recall >= 0.95, "{recall}");
    // The ground truth written is the flat oracle's, by item id.
    let m = twindex::index::vecio::read_ivecs(Path::new(&gt)).unwrap();
    assert_eq!((m.rows, m.cols), (50, 100));
    let oracle = FlatIndex::from_vectors(dim, Metric::L2, &data[..n * dim]).unwrap();
    for (i, q) in data[n * dim..].chunks(dim).enumerate() {
        let want: Vec<i32> = oracle
            .search(q, 10, 10)
            .unwrap()
            .iter()
            .map(|h| h.id as i32)
            .collect();
        assert_eq!(&m.row(i)[..10], &want[..], "query {i}");
    }
    let bad = tmp.path().join("bad").display().to_string();
    fails_with(
        &[
            "index",
            "build",
            "--vectors",
            &base,
            "--out",
            &bad,
            "--quantize",
            "sq4",
        ],
        "--quantize",
    );
    fails_with(
        &[
            "index",
            "build",
            "--vectors",
            &base,
            "--out",
            &bad,
            "--quantize",
            "sq8",
            "--rerank",
            "0",
        ],
        "rerank",
    );
    fails_with(
        &[
            "index",
            "build",
            "--vectors",
            &base,
            "--out",
            &bad,
            "--quantize",
            "sq8",
            "--backend",
            "flat",
        ],
        "needs the hnsw backend",
    );
    assert!(!Path::new(&bad).exists());
}
