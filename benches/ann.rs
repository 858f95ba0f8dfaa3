//! MNIST-784 ANN benchmark: our HNSW graph and hnsw_rs, built with M = 16 and
//! ef_construction = 200 on the 60,000 training digits (float pixels 0..255, L2), queried with
//! the 10,000 test digits against the exact neighbours in the reference ivecs.
//!
//! Needs `[[bench]] name = "ann" harness = false` in Cargo.toml. Run:
//! `cargo bench --bench ann` (env: `ANN_QUERIES` to use fewer queries, `ANN_ENGINES` =
//! `hnsw,hnsw_rs`, `ANN_EFS` = `10,16,24,...`, `ANN_BUILD_THREADS`). Prints one JSON report
//! per engine (the `twindex bench --json` shape). Correctness is asserted inside the timed loop
//! (every query returns k results) and recall is checked against the exact neighbours.

use std::io::Read;
use std::path::Path;
use twindex::index::bench::{self, BenchOptions, BuildStats};
use twindex::index::vecio::read_ivecs;
use twindex::index::{HnswGraph, HnswParams, HnswRsIndex, Metric, VectorIndex};

const MNIST_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/corpora/mnist");
const GT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/reference/mnist784_gt_k100.ivecs"
);
const DIM: usize = 784;
const M: usize = 16;
const EF_CONSTRUCTION: usize = 200;
const SEED: u64 = 42;
const K: usize = 10;
const EFS: &[usize] = &[10, 12, 16, 20, 24, 32, 48, 64, 96, 128];

/// IDX3 images (optionally gzipped) as f32 pixels 0..255.
fn read_idx_images(path: &Path) -> Vec<f32> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    };
    let be = |o: usize| {
        u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
    };
    assert_eq!(be(0), 0x803, "{}: not an IDX3 image file", path.display());
    let (n, r, c) = (be(4), be(8), be(12));
    assert_eq!(r * c, DIM);
    assert_eq!(bytes.len(), 16 + n * DIM);
    bytes[16..].iter().map(|&b| b as f32).collect()
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let dir = Path::new(MNIST_DIR);
    let train = read_idx_images(&dir.join("train-images-idx3-ubyte.gz"));
    let test = read_idx_images(&dir.join("t10k-images-idx3-ubyte.gz"));
    let nq = env_or("ANN_QUERIES", 10_000usize).min(test.len() / DIM);
    let queries = &test[..nq * DIM];
    let truth = bench::ground_truth_from_ivecs(&read_ivecs(Path::new(GT)).unwrap()).unwrap();
    let efs: Vec<usize> = std::env::var("ANN_EFS")
        .map(|s| s.split(',').map(|x| x.trim().parse().unwrap()).collect())
        .unwrap_or_else(|_| EFS.to_vec());
    let engines = std::env::var("ANN_ENGINES").unwrap_or_else(|_| "hnsw,hnsw_rs".into());
    let threads = env_or("ANN_BUILD_THREADS", 0usize);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let params = HnswParams {
        m: M,
        ef_construction: EF_CONSTRUCTION,
        ef_search: 64,
        seed: SEED,
        ..Default::default()
    };
    eprintln!(
        "mnist: {} base, {nq} queries, k = {K}, M = {M}, ef_construction = {EF_CONSTRUCTION}, simd {}, build threads {}",
        train.len() / DIM,
        twindex::index::distance::kernels().level,
        pool.current_num_threads()
    );
    for name in engines.split(',') {
        let mut engine: Box<dyn VectorIndex> = match name {
            "hnsw" => Box::new(HnswGraph::new(DIM, Metric::L2, params).unwrap()),
            "hnsw_rs" => {
                Box::new(HnswRsIndex::new(DIM, Metric::L2, params, train.len() / DIM).unwrap())
            }
            other => panic!("unknown engine {other}"),
        };
        let (r, secs, cpu) = bench::measure(|| pool.install(|| engine.add(&train, &|_| {})));
        r.unwrap();
        let build = BuildStats {
            seconds: secs,
            cpu_seconds: cpu,
            index_bytes: engine.memory_bytes() as u64,
        };
        let opts = BenchOptions {
            k: K,
            efs: efs.clone(),
            all_threads: false,
            warmup: 500,
        };
        let rep = bench::run(engine.as_ref(), queries, Some(&truth), &opts, build).unwrap();
        assert!(
            rep.sweep.last().unwrap().recall > 0.9,
            "{name}: recall too low, something is broken"
        );
        println!(
            "{{\"engine\": \"{name}\", \"report\": {}}}",
            serde_json::to_string(&rep).unwrap()
        );
        for p in &rep.sweep {
            eprintln!(
                "{name:8} ef {:4}  recall {:.4}  qps {:8.0}  qps/cpu-s {:8.0}  p50 {:6.0}us  p99 {:6.0}us",
                p.ef, p.recall, p.qps, p.qps_per_cpu_second, p.p50_us, p.p99_us
            );
        }
        eprintln!(
            "{name:8} build {secs:.1}s wall, {cpu:.1}s cpu, {} MB",
            build.index_bytes >> 20
        );
    }
}
