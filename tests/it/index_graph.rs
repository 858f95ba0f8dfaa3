//! The fast paths against their slow oracles: SIMD distances against scalar loops, HNSW
//! (ours and hnsw_rs) recall against the exact flat index. Seeds are fixed and printed.

use crate::data::clustered;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use twindex::error::Error;
use twindex::index::distance::{available_kernels, dot_scalar, l2_squared_scalar};
use twindex::index::{FlatIndex, HnswGraph, HnswParams, HnswRsIndex, Metric, VectorIndex};

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
        let truth: Vec<u64> = oracle
            .search(q, k, k)
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect();
        let got = engine.search(q, k, ef).unwrap();
        assert_eq!(got.len(), k);
        assert!(
            got.windows(2).all(|w| w[0].distance <= w[1].distance),
            "results not sorted"
        );
        hit += got.iter().filter(|h| truth.contains(&h.id)).count();
    }
    hit as f64 / (queries.len() / dim * k) as f64
}

#[test]
fn simd_kernels_match_scalar_loops() {
    let seed = 7;
    println!("seed {seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let kernels = available_kernels();
    println!(
        "kernels: {:?}",
        kernels.iter().map(|k| k.level).collect::<Vec<_>>()
    );
    let mut lens: Vec<usize> = (0..=70).collect();
    lens.extend([
        127, 128, 129, 255, 256, 257, 383, 384, 385, 783, 784, 785, 1000,
    ]);
    for _ in 0..50 {
        lens.push(rng.random_range(0..2000));
    }
    for &n in &lens {
        let a: Vec<f32> = (0..n).map(|_| rng.random_range(-10.0..10.0)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.random_range(-10.0..10.0)).collect();
        // Oracle: plain loops in f64.
        let l2: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum();
        let dp: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let mag: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 * *y as f64).abs())
            .sum();
        for k in &kernels {
            let (g2, gd) = ((k.l2_squared)(&a, &b) as f64, (k.dot)(&a, &b) as f64);
            assert!(
                (g2 - l2).abs() <= 1e-5 * l2 + 1e-4,
                "{} l2 n={n}: {g2} vs {l2}",
                k.level
            );
            assert!(
                (gd - dp).abs() <= 1e-5 * mag + 1e-4,
                "{} dot n={n}: {gd} vs {dp}",
                k.level
            );
            // Bounded: exact (bit for bit) at or below the bound, above the bound otherwise.
            let full = (k.l2_squared)(&a, &b);
            for frac in [0.0f32, 0.1, 0.5, 0.9, 0.999, 1.0, 1.5] {
                let bound = full * frac;
                let got = (k.l2_squared_bounded)(&a, &b, bound);
                if full <= bound {
                    assert_eq!(got, full, "{} bounded n={n} bound={bound}", k.level);
                } else {
                    assert!(
                        got > bound && got <= full * 1.0001 + 1e-3,
                        "{} bounded n={n}: {got} vs bound {bound}, full {full}",
                        k.level
                    );
                }
            }
            assert_eq!((k.l2_squared_bounded)(&a, &b, f32::INFINITY), full);
        }
        assert_eq!(l2_squared_scalar(&a, &b), (kernels[0].l2_squared)(&a, &b));
        assert_eq!(dot_scalar(&a, &b), (kernels[0].dot)(&a, &b));
    }
}

fn params() -> HnswParams {
    HnswParams {
        m: 16,
        ef_construction: 200,
        ef_search: 64,
        seed: 42,
        ..Default::default()
    }
}

#[test]
fn own_hnsw_recall_against_flat() {
    let (seed, n, dim) = (20240601, 5000, 64);
    println!("seed {seed}, {n} x {dim}, 50 clusters");
    // 200 queries from the same clusters (split off the end).
    let all = clustered(seed, n + 200, dim, 50, 0.25);
    let (data, queries) = all.split_at(n * dim);
    for metric in [Metric::L2, Metric::Cosine] {
        let oracle = FlatIndex::from_vectors(dim, metric, data).unwrap();
        let mut g = HnswGraph::new(dim, metric, params()).unwrap();
        // Two batches: the second exercises incremental insertion.
        g.add(&data[..3000 * dim], &|_| {}).unwrap();
        g.add(&data[3000 * dim..], &|_| {}).unwrap();
        assert_eq!(g.len(), n);
        let r = recall(&g, &oracle, queries, 10, 32);
        println!(
            "own hnsw {metric}: recall@10 (ef 32) = {r:.4}, max level {}, mean degree {:.1}",
            g.max_level(),
            g.mean_degree()
        );
        assert!(r >= 0.95, "own hnsw {metric} recall@10 = {r}");
    }
}

#[test]
fn hnsw_rs_recall_against_flat() {
    let (seed, n, dim) = (20240602, 5000, 64);
    println!("seed {seed}, {n} x {dim}, 50 clusters");
    // 200 queries from the same clusters (split off the end).
    let all = clustered(seed, n + 200, dim, 50, 0.25);
    let (data, queries) = all.split_at(n * dim);
    let oracle = FlatIndex::from_vectors(dim, Metric::L2, data).unwrap();
    let mut g = HnswRsIndex::new(dim, Metric::L2, params(), n).unwrap();
    g.add(data, &|_| {}).unwrap();
    let r = recall(&g, &oracle, queries, 10, 32);
    println!("hnsw_rs l2: recall@10 (ef 32) = {r:.4}");
    assert!(r >= 0.95, "hnsw_rs recall@10 = {r}");
}

#[test]
fn item_queried_with_itself_is_first_at_distance_zero() {
    let (seed, n, dim) = (99, 600, 24);
    println!("seed {seed}");
    let mut data = clustered(seed, n, dim, 10, 0.3);
    // Unit vectors, so that dot ranks like cosine and self distance 1 - |v|^2 is 0.
    data.chunks_mut(dim)
        .for_each(twindex::index::metric::normalize);
    for metric in [Metric::L2, Metric::Cosine, Metric::Dot] {
        let mut engines: Vec<Box<dyn VectorIndex>> = vec![
            Box::new(FlatIndex::new(dim, metric).unwrap()),
            Box::new(HnswGraph::new(dim, metric, params()).unwrap()),
            Box::new(HnswRsIndex::new(dim, metric, params(), n).unwrap()),
        ];
        for e in engines.iter_mut() {
            e.add(&data, &|_| {}).unwrap();
            let mut first = 0;
            for i in 0..n {
                let hits = e.search(&data[i * dim..(i + 1) * dim], 3, 32).unwrap();
                if hits[0].id == i as u64 {
                    first += 1;
                    assert!(
                        hits[0].distance.abs() < 1e-4,
                        "{} {metric}: self distance {}",
                        e.name(),
                        hits[0].distance
                    );
                }
            }
            println!(
                "{} {metric}: {first}/{n} items find themselves first",
                e.name()
            );
            // Exact search always; a graph may miss an item only if parallel insertion left it
            // unreachable, which should be (nearly) never.
            let need = if e.name() == "flat" {
                n
            } else {
                n * 997 / 1000
            };
            assert!(first >= need, "{} {metric}: only {first}/{n}", e.name());
        }
    }
    // Unnormalised vectors under dot (negative distances): no panic in either graph.
    let raw = clustered(seed, 300, dim, 5, 2.0);
    for mut e in [
        Box::new(HnswGraph::new(dim, Metric::Dot, params()).unwrap()) as Box<dyn VectorIndex>,
        Box::new(HnswRsIndex::new(dim, Metric::Dot, params(), 300).unwrap()),
    ] {
        e.add(&raw, &|_| {}).unwrap();
        let hits = e.search(&raw[..dim], 5, 32).unwrap();
        assert_eq!(hits.len(), 5);
        assert!(hits.windows(2).all(|w| w[0].distance <= w[1].distance));
    }
}

#[test]
fn wrong_dimension_and_bad_values_are_errors() {
    let dim = 8;
    let data = clustered(5, 100, dim, 4, 0.1);
    let mut engines: Vec<Box<dyn VectorIndex>> = vec![
        Box::new(FlatIndex::new(dim, Metric::L2).unwrap()),
        Box::new(HnswGraph::new(dim, Metric::L2, params()).unwrap()),
        Box::new(HnswRsIndex::new(dim, Metric::L2, params(), 100).unwrap()),
    ];
    for e in engines.iter_mut() {
        // An empty engine answers with nothing.
        assert!(e.search(&data[..dim], 5, 10).unwrap().is_empty());
        e.add(&data, &|_| {}).unwrap();
        match e.search(&data[..dim - 1], 5, 10) {
            Err(Error::DimensionMismatch {
                expected: 8,
                got: 7,
                ..
            }) => {}
            other => panic!("{}: expected DimensionMismatch, got {other:?}", e.name()),
        }
        let mut nan = data[..dim].to_vec();
        nan[3] = f32::NAN;
        assert!(matches!(
            e.search(&nan, 5, 10),
            Err(Error::InvalidArgument(_))
        ));
        assert!(e.add(&data[..dim + 1], &|_| {}).is_err());
        assert!(e.add(&nan, &|_| {}).is_err());
        assert_eq!(
            e.len(),
            100,
            "{}: a refused add changed the index",
            e.name()
        );
        assert!(e.search(&data[..dim], 0, 10).unwrap().is_empty());
        // k larger than the collection: everything, sorted.
        assert_eq!(
            e.search(&data[..dim], 500, 10).unwrap().len().min(100),
            e.search(&data[..dim], 500, 500).unwrap().len()
        );
    }
    assert!(HnswGraph::new(0, Metric::L2, params()).is_err());
    assert!(HnswGraph::new(4, Metric::L2, HnswParams { m: 1, ..params() }).is_err());
    assert!(HnswRsIndex::new(4, Metric::L2, HnswParams { m: 300, ..params() }, 10).is_err());
}

#[test]
fn filtered_search_skips_excluded_slots() {
    let (seed, n, dim) = (31, 2000, 16);
    println!("seed {seed}");
    let data = clustered(seed, n, dim, 20, 0.2);
    let oracle = FlatIndex::from_vectors(dim, Metric::L2, &data).unwrap();
    let mut g = HnswGraph::new(dim, Metric::L2, params()).unwrap();
    g.add(&data, &|_| {}).unwrap();
    let mut rs = HnswRsIndex::new(dim, Metric::L2, params(), n).unwrap();
    rs.add(&data, &|_| {}).unwrap();
    let keep = |s: usize| !s.is_multiple_of(3);
    for e in [&g as &dyn VectorIndex, &rs, &oracle] {
        let mut hit = 0;
        for q in data.chunks(dim).take(100) {
            let truth: Vec<u64> = oracle
                .search_filtered(q, 10, 10, &keep)
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect();
            let got = e.search_filtered(q, 10, 64, &keep).unwrap();
            assert_eq!(got.len(), 10, "{}", e.name());
            assert!(
                got.iter().all(|h| h.id % 3 != 0),
                "{}: excluded slot returned",
                e.name()
            );
            hit += got.iter().filter(|h| truth.contains(&h.id)).count();
        }
        let r = hit as f64 / 1000.0;
        println!("{}: filtered recall@10 = {r:.3}", e.name());
        assert!(r >= 0.95);
    }
    // Everything filtered out: no results, no hang.
    assert!(g
        .search_filtered(&data[..dim], 10, 64, &|_| false)
        .unwrap()
        .is_empty());
}

#[test]
fn graph_serialisation_round_trip_and_damage() {
    let (seed, n, dim) = (77, 1500, 12);
    println!("seed {seed}");
    let data = clustered(seed, n, dim, 10, 0.2);
    let p = params();
    let mut g = HnswGraph::new(dim, Metric::L2, p).unwrap();
    g.add(&data, &|_| {}).unwrap();
    let mut bytes = Vec::new();
    g.write_graph(&mut bytes).unwrap();
    let path = std::path::Path::new("graph.test.hnsw");
    let h = HnswGraph::read_graph(dim, Metric::L2, p, &data, &bytes, path).unwrap();
    for q in data.chunks(dim).take(50) {
        assert_eq!(g.search(q, 10, 40).unwrap(), h.search(q, 10, 40).unwrap());
    }
    // Every truncation is refused with an error naming the file.
    for cut in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
        match HnswGraph::read_graph(dim, Metric::L2, p, &data, &bytes[..cut], path) {
            Err(Error::Corrupt { path: ep, .. }) => assert_eq!(ep, path),
            other => panic!("truncated at {cut}: {other:?}"),
        }
    }
    // Random byte flips never panic (they may still decode into a valid graph).
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for _ in 0..300 {
        let mut b = bytes.clone();
        let i = rng.random_range(0..b.len());
        b[i] ^= 1 << rng.random_range(0..8);
        if let Ok(h) = HnswGraph::read_graph(dim, Metric::L2, p, &data, &b, path) {
            h.search(&data[..dim], 5, 20).unwrap();
        }
    }
    // Mismatched dimension or parameters are refused.
    assert!(HnswGraph::read_graph(
        dim,
        Metric::L2,
        HnswParams { m: 8, ..p },
        &data,
        &bytes,
        path
    )
    .is_err());
    assert!(HnswGraph::read_graph(dim, Metric::L2, p, &data[..dim * 10], &bytes, path).is_err());
}

/// With k and ef at the graph's size every node comes back: none lost its last in-link to
/// pruning (tight clusters, near-duplicates and a small M make that likely), in one batch, in
/// many small batches (the repair is left to the checkpoint then), and after the repair.
#[test]
fn every_node_stays_reachable() {
    let (seed, n, dim) = (20261201, 4000, 8);
    println!("seed {seed}, {n} x {dim}, 20 tight clusters, M 4");
    let data = clustered(seed, n, dim, 20, 0.01);
    let p = HnswParams {
        m: 4,
        ef_construction: 16,
        ef_search: 16,
        seed: 3,
        ..Default::default()
    };
    let mut g = HnswGraph::new(dim, Metric::L2, p).unwrap();
    g.add(&data, &|_| {}).unwrap();
    assert_eq!(
        g.repair_unreachable(),
        0,
        "add left work for a second repair"
    );
    let hits = g.search(&data[..dim], n, n).unwrap();
    assert_eq!(hits.len(), n, "nodes unreachable after one batch");
    // Many single adds (no repair by `add`), then the repair a checkpoint runs.
    let mut g = HnswGraph::new(dim, Metric::L2, p).unwrap();
    g.add(&data[..1000 * dim], &|_| {}).unwrap();
    for row in data[1000 * dim..].chunks(dim) {
        g.add(row, &|_| {}).unwrap();
    }
    let before = g.search(&data[..dim], n, n).unwrap().len();
    let fixed = g.repair_unreachable();
    let after = g.search(&data[..dim], n, n).unwrap().len();
    println!("single adds: {before} of {n} reachable, {fixed} linked by the repair, then {after}");
    assert_eq!(after, n);
    // With the default parameters, every node finds itself at distance 0 at the default ef.
    let data = clustered(seed + 1, n, 32, 20, 0.05);
    let mut g = HnswGraph::new(32, Metric::L2, params()).unwrap();
    g.add(&data[..2000 * 32], &|_| {}).unwrap();
    for row in data[2000 * 32..].chunks(32) {
        g.add(row, &|_| {}).unwrap();
    }
    g.repair_unreachable();
    let missed = (0..n)
        .filter(|&i| {
            let h = g.search(&data[i * 32..(i + 1) * 32], 1, 64).unwrap();
            h[0].distance != 0.0
        })
        .count();
    assert_eq!(missed, 0, "{missed} nodes do not find themselves");
}

/// The graph's node storage grows without copying (one mapping, moved by the kernel): added in
/// batches of 1, 7, 4,000, 88, 4,096, 300 and 5,000 nodes, every stored vector reads back as
/// added, the graph round-trips through its file, and recall against the flat index holds.
#[test]
fn node_storage_keeps_every_vector_across_growth() {
    let (seed, dim) = (20261207, 16);
    println!("seed {seed}");
    let batches = [1usize, 7, 4000, 88, 4096, 300, 5000];
    let n: usize = batches.iter().sum();
    let data = clustered(seed, n, dim, 40, 0.3);
    let mut g = HnswGraph::new(dim, Metric::L2, params()).unwrap();
    let mut oracle = FlatIndex::new(dim, Metric::L2).unwrap();
    let mut at = 0;
    for b in batches {
        g.add(&data[at * dim..(at + b) * dim], &|_| {}).unwrap();
        at += b;
    }
    oracle.add(&data, &|_| {}).unwrap();
    assert_eq!(g.len(), n);
    for i in 0..n {
        assert_eq!(
            g.vector(i).unwrap(),
            &data[i * dim..(i + 1) * dim],
            "node {i}'s vector"
        );
    }
    let mut file = Vec::new();
    g.write_graph(&mut file).unwrap();
    let back = HnswGraph::read_graph(
        dim,
        Metric::L2,
        params(),
        &data,
        &file,
        std::path::Path::new("g"),
    )
    .unwrap();
    for i in (0..n).step_by(97) {
        let q = &data[i * dim..(i + 1) * dim];
        assert_eq!(
            g.search(q, 5, 32).unwrap(),
            back.search(q, 5, 32).unwrap(),
            "node {i}: the graph read back answers otherwise"
        );
    }
    let queries = clustered(seed + 1, 200, dim, 40, 0.3);
    let r = recall(&g, &oracle, &queries, 10, 48);
    println!(
        "{n} nodes added in {} batches: recall@10 (ef 48) = {r:.4}",
        batches.len()
    );
    assert!(r >= 0.95, "recall@10 = {r}");
}
