//! Vector file formats and the benchmark report.

use twindex::error::Error;
use twindex::index::bench::{self, BenchOptions, BuildStats};
use twindex::index::vecio::{
    read_fvecs, read_ivecs, read_npy, read_vectors, write_fvecs, write_ivecs, write_npy,
};
use twindex::index::{HnswGraph, HnswParams, Matrix, Metric, VectorIndex};

fn random_matrix(seed: u64, rows: usize, cols: usize) -> Matrix<f32> {
    crate::data::matrix(seed, rows, cols, -5.0..5.0)
}

fn format_msg(e: Error) -> String {
    match e {
        Error::Format { .. } => e.to_string(),
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn fvecs_ivecs_round_trip_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("a.fvecs");
    let m = random_matrix(1, 13, 7);
    write_fvecs(&p, &m).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 13 * (4 + 4 * 7));
    assert_eq!(read_fvecs(&p).unwrap(), m);
    assert_eq!(read_vectors(&p).unwrap(), m);
    let ip = tmp.path().join("gt.ivecs");
    let im = Matrix {
        rows: 3,
        cols: 2,
        data: vec![1, 2, 3, 4, 5, -6],
    };
    write_ivecs(&ip, &im).unwrap();
    assert_eq!(read_ivecs(&ip).unwrap(), im);
    assert!(
        bench::ground_truth_from_ivecs(&im).is_err(),
        "negative id accepted"
    );
    // Truncated in the middle of row 5: the error names the file and the offset.
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..5 * 32 + 10]).unwrap();
    let msg = format_msg(read_fvecs(&p).unwrap_err());
    println!("{msg}");
    assert!(
        msg.contains("a.fvecs") && msg.contains("at byte 164") && msg.contains("row 5"),
        "{msg}"
    );
    // A row of another dimension.
    let mut b = bytes.clone();
    b[64..68].copy_from_slice(&6i32.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    let msg = format_msg(read_fvecs(&p).unwrap_err());
    assert!(
        msg.contains("at byte 64") && msg.contains("dimension 6"),
        "{msg}"
    );
    // A non-positive dimension.
    b[0..4].copy_from_slice(&(-1i32).to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    assert!(format_msg(read_fvecs(&p).unwrap_err()).contains("at byte 0"));
    // Empty file: no rows.
    std::fs::write(&p, b"").unwrap();
    assert_eq!(read_fvecs(&p).unwrap().rows, 0);
    // Missing file: an I/O error naming it.
    assert!(matches!(
        read_fvecs(&tmp.path().join("nope.fvecs")),
        Err(Error::Io { .. })
    ));
    assert!(read_vectors(&tmp.path().join("x.csv")).is_err());
}

#[test]
fn npy_round_trip_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("v.npy");
    let m = random_matrix(2, 5, 384);
    write_npy(&p, &m).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "data not 64-byte aligned");
    assert_eq!(read_npy(&p).unwrap(), m);
    assert_eq!(read_vectors(&p).unwrap(), m);
    let with_header = |h: &str, body: &[u8]| {
        let mut h = h.to_string();
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(body);
        std::fs::write(&p, b).unwrap();
        read_npy(&p)
    };
    let body = vec![0u8; 24];
    assert_eq!(
        with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            &body
        )
        .unwrap()
        .cols,
        3
    );
    let bad = [
        (
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
            "'<f4'",
        ),
        (
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
            "little-endian",
        ),
        (
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
            "Fortran",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
            "expected 2",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }",
            "needs 32",
        ),
    ];
    for (h, want) in bad {
        let msg = format_msg(with_header(h, &body).unwrap_err());
        println!("{msg}");
        assert!(
            msg.contains(want) && msg.contains("v.npy") && msg.contains("at byte"),
            "{msg}"
        );
    }
    std::fs::write(&p, b"PK\x03\x04 not numpy").unwrap();
    assert!(format_msg(read_npy(&p).unwrap_err()).contains("magic"));
}

#[test]
#[cfg_attr(
    not(has_minilm_reference),
    ignore = "needs ../shared/reference/minilm_ref_100.npy"
)]
fn the_shipped_reference_npy_reads_if_present() {
    let p = std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/minilm_ref_100.npy"
    ));
    crate::require_input(p);
    let m = read_npy(p).unwrap();
    assert_eq!((m.rows, m.cols), (100, 384));
    // The reference embeddings are L2-normalised.
    for r in m.iter_rows() {
        let n: f32 = r.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-3);
    }
}

#[test]
fn bench_report_has_the_contract_keys_and_sane_numbers() {
    let (seed, n, dim) = (4, 3000, 32);
    println!("seed {seed}");
    let data = random_matrix(seed, n, dim).data;
    let queries = random_matrix(seed + 1, 100, dim).data;
    let mut g = HnswGraph::new(dim, Metric::L2, HnswParams::default()).unwrap();
    let (r, secs, cpu) = bench::measure(|| g.add(&data, &|_| {}));
    r.unwrap();
    let build = BuildStats {
        seconds: secs,
        cpu_seconds: cpu,
        index_bytes: g.memory_bytes() as u64,
    };
    let opts = BenchOptions {
        k: 10,
        efs: vec![10, 200],
        all_threads: true,
        warmup: 10,
    };
    let rep = bench::run(&g, &queries, None, &opts, build).unwrap();
    let v = serde_json::to_value(&rep).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|s| s.as_str()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["build_cpu_seconds", "build_seconds", "index_bytes", "sweep"]
    );
    for p in v["sweep"].as_array().unwrap() {
        for k in [
            "ef",
            "recall",
            "qps",
            "qps_per_cpu_second",
            "p50_us",
            "p95_us",
            "p99_us",
        ] {
            assert!(p.get(k).is_some(), "sweep point lacks {k}");
        }
    }
    println!("{}", serde_json::to_string_pretty(&v).unwrap());
    let (lo, hi) = (&rep.sweep[0], &rep.sweep[1]);
    assert!(
        hi.recall >= lo.recall && hi.recall >= 0.95,
        "{} {}",
        lo.recall,
        hi.recall
    );
    assert!(lo.qps > 0.0 && lo.qps_per_cpu_second > 0.0);
    assert!(lo.p50_us <= lo.p95_us && lo.p95_us <= lo.p99_us);
    assert!(build.seconds > 0.0 && build.cpu_seconds > 0.0);
    // Exact truth given explicitly gives the same recall as truth computed inside.
    let truth = bench::ground_truth(&g, &queries, 10).unwrap();
    let rep2 = bench::run(
        &g,
        &queries,
        Some(&truth),
        &BenchOptions {
            all_threads: false,
            ..opts.clone()
        },
        build,
    )
    .unwrap();
    assert_eq!(rep2.sweep[1].recall, hi.recall);
    assert!(rep2.sweep[0].qps_all_threads.is_none());
    // recall@k by hand: 2 of 3 found in query 0, 3 of 3 in query 1 -> 5/6.
    let r = bench::ann_recall(
        &[vec![1u64, 2, 9], vec![4, 5, 6]],
        &[vec![1u64, 2, 3], vec![6, 5, 4]],
        3,
    )
    .unwrap();
    assert!((r - 5.0 / 6.0).abs() < 1e-12);
    assert!(bench::run(&g, &queries[..dim - 1], None, &opts, build).is_err());
}
