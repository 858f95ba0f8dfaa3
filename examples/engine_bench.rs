//! The engine's own figures (issue "the engine as a library"): warm query latency through the
//! `Searcher`, and the latency of one durable add as the index grows.
//!
//! ```text
//! # encode + search + decide, one thread, warm, through the library:
//! cargo run --release --example engine_bench -- query --index DIR --queries FILE [--n 1000]
//! # one durable add (log record fsync'd + graph insert), at several index sizes:
//! cargo run --release --example engine_bench -- adds --dir TMP [--sizes 10000,100000,1000000]
//!     [--dim 384] [--adds 1000]
//! # what one open and one search of an item's neighbours cost a fresh process (run it
//! # several times: one open a process), with the resident memory split into the process's
//! # own (anonymous) pages and the page-cache pages of the index's files it maps:
//! # (--link: link the log's adds into the graph before searching, as a writer's open does,
//! # instead of scoring them one by one beside it, as a reader's open does):
//! cargo run --release --example engine_bench -- open --index DIR [--item 0] [--k 3] [--link]
//! # adds while readers search, in one process (a copy of the index is best: the adds stay in
//! # its log): one thread adds one item at a time (each acknowledged once fsync'd), READERS
//! # threads search seeded random unit vectors meanwhile; every add and every search timed,
//! # after WARMUP searches timed apart (the slowest five of each kind are listed with when
//! # they began):
//! cargo run --release --example engine_bench -- concurrent --index DIR [--adds 10000]
//!     [--readers 2] [--k 10] [--warmup 2000]
//! ```
//!
//! Prints one JSON object. Queries are the file's lines (blank lines skipped). The adds use
//! seeded random unit vectors (cosine), built into a fresh index of each size with M 16 and
//! efConstruction 100, then added one at a time, each acknowledged only once its log record
//! is on disk; every added item must then be found as its own nearest neighbour (checked
//! after the timed loop).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use twindex::index::{Backend, EncoderRecord, HnswParams, Index, IndexConfig, Item, Metric};
use twindex::query::{OpenOptions, Query, SearchOptions, Searcher};

const SEED: u64 = 7;
const WARMUP: usize = 50;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "n": ms.len(),
        "p50_ms": percentile(&ms, 0.50),
        "p90_ms": percentile(&ms, 0.90),
        "p99_ms": percentile(&ms, 0.99),
        "max_ms": ms[ms.len() - 1],
        "mean_ms": ms.iter().sum::<f64>() / ms.len() as f64,
    })
}

/// The five slowest of `(ms, seconds since the start)`: when each began and how long it took.
fn slowest(ms: &[(f64, f64)]) -> serde_json::Value {
    let mut v: Vec<(usize, &(f64, f64))> = ms.iter().enumerate().collect();
    v.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    v.iter()
        .take(5)
        .map(|(i, (m, at))| json!({"n": i, "ms": m, "at_s": at}))
        .collect()
}

fn query(args: &[String]) -> Result<serde_json::Value, String> {
    let dir = PathBuf::from(arg(args, "--index").ok_or("--index DIR is required")?);
    let qfile = PathBuf::from(arg(args, "--queries").ok_or("--queries FILE is required")?);
    let n: usize = arg(args, "--n")
        .map_or(Ok(1000), |s| s.parse())
        .map_err(|e| format!("--n: {e}"))?;
    let texts: Vec<String> = std::fs::read_to_string(&qfile)
        .map_err(|e| format!("{}: {e}", qfile.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .take(n + WARMUP)
        .collect();
    if texts.len() < n + WARMUP {
        return Err(format!(
            "{} holds fewer than {} queries",
            qfile.display(),
            n + WARMUP
        ));
    }
    let t0 = Instant::now();
    let s = Searcher::open(&dir, &OpenOptions::default()).map_err(|e| e.to_string())?;
    let open_s = t0.elapsed().as_secs_f64();
    let opts = SearchOptions {
        k: 10,
        ..SearchOptions::default()
    };
    let mut ms = Vec::with_capacity(n);
    let mut tokens = 0usize;
    let mut dups = 0usize;
    for (i, t) in texts.iter().enumerate() {
        let t1 = Instant::now();
        let a = s.query(&Query::Text(t), &opts).map_err(|e| e.to_string())?;
        let dt = t1.elapsed().as_secs_f64() * 1e3;
        // Correctness inside the loop: ten neighbours, sorted, each decided at the threshold.
        assert_eq!(a.results.len(), 10);
        assert!(a.results.windows(2).all(|w| w[0].distance <= w[1].distance));
        if i >= WARMUP {
            ms.push(dt);
            tokens += t.split_whitespace().count();
            dups += a.results.iter().filter(|h| h.duplicate).count().min(1);
        }
    }
    let st = s.stats();
    Ok(json!({
        "what": "warm library query: encode + search (k 10) + decide, one thread",
        "index": dir.display().to_string(),
        "items": st.items,
        "threshold": st.threshold,
        "open_seconds": open_s,
        "queries": n,
        "mean_words_per_query": tokens as f64 / n as f64,
        "queries_with_a_duplicate": dups,
        "latency": summary(ms),
    }))
}

fn unit(rng: &mut ChaCha8Rng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn adds(args: &[String]) -> Result<serde_json::Value, String> {
    let dir = PathBuf::from(arg(args, "--dir").ok_or("--dir DIR (scratch space) is required")?);
    let sizes: Vec<usize> = arg(args, "--sizes")
        .unwrap_or_else(|| "10000,100000,1000000".into())
        .split(',')
        .map(|s| s.parse().map_err(|e| format!("--sizes {s}: {e}")))
        .collect::<Result<_, _>>()?;
    let dim: usize = arg(args, "--dim")
        .map_or(Ok(384), |s| s.parse())
        .map_err(|e| format!("--dim: {e}"))?;
    let n_adds: usize = arg(args, "--adds")
        .map_or(Ok(1000), |s| s.parse())
        .map_err(|e| format!("--adds: {e}"))?;
    let mut out = Vec::new();
    for &size in &sizes {
        let path = dir.join(format!("adds-{size}"));
        if path.exists() {
            return Err(format!("{} exists: give an empty --dir", path.display()));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ size as u64);
        let mut base = Vec::with_capacity(size * dim);
        for _ in 0..size {
            base.extend(unit(&mut rng, dim));
        }
        let cfg = IndexConfig {
            metric: Metric::Cosine,
            normalize: true,
            backend: Backend::Hnsw,
            hnsw: HnswParams {
                m: 16,
                ef_construction: 100,
                ef_search: 64,
                seed: 1,
                ..Default::default()
            },
        };
        let items: Vec<Item> = (0..size)
            .map(|i| Item {
                label: String::new(),
                source: format!("v{i}"),
                payload: None,
            })
            .collect();
        let t0 = Instant::now();
        let idx = Index::create(
            &path,
            cfg,
            EncoderRecord::Vectors {
                dim: Some(dim),
                source: None,
            },
            dim,
            &base,
            items,
            &|_| {},
        )
        .map_err(|e| e.to_string())?;
        let build_s = t0.elapsed().as_secs_f64();
        drop(base);
        drop(idx);
        let t0 = Instant::now();
        let mut idx = Index::open_writer(&path).map_err(|e| e.to_string())?;
        let open_s = t0.elapsed().as_secs_f64();
        let mut ms = Vec::with_capacity(n_adds);
        let mut added = Vec::with_capacity(n_adds);
        for i in 0..n_adds {
            let v = unit(&mut rng, dim);
            let item = Item {
                label: String::new(),
                source: format!("add{i}"),
                payload: None,
            };
            let t1 = Instant::now();
            let ids = idx
                .add(&v, vec![item], &|_| {})
                .map_err(|e| e.to_string())?;
            ms.push(t1.elapsed().as_secs_f64() * 1e3);
            added.push((ids[0], v));
        }
        let found = added
            .iter()
            .filter(|(id, v)| {
                idx.search(v, 1, None)
                    .map(|h| h[0].id == *id)
                    .unwrap_or(false)
            })
            .count();
        let (log_bytes, log_records) = idx.log_size();
        eprintln!("size {size}: built in {build_s:.1} s, reopened in {open_s:.1} s, {n_adds} adds");
        out.push(json!({
            "items": size,
            "build_seconds": build_s,
            "open_seconds": open_s,
            "add": summary(ms),
            "added_found_as_own_nearest": found,
            "log_bytes": log_bytes,
            "log_records": log_records,
        }));
        drop(idx);
        std::fs::remove_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(json!({
        "what": "one durable add (fsync'd log record + graph insert), random unit vectors, cosine",
        "dim": dim,
        "sizes": out,
    }))
}

fn open(args: &[String]) -> Result<serde_json::Value, String> {
    let dir = PathBuf::from(arg(args, "--index").ok_or("--index DIR is required")?);
    let item: u64 =
        arg(args, "--item").map_or(Ok(0), |s| s.parse().map_err(|e| format!("--item: {e}")))?;
    let k: usize =
        arg(args, "--k").map_or(Ok(3), |s| s.parse().map_err(|e| format!("--k: {e}")))?;
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let before = twindex::timing::rss_now();
    let t = Instant::now();
    let mut idx = Index::open(&dir).map_err(|e| e.to_string())?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let opened = twindex::timing::rss_now();
    let unlinked = idx.unlinked();
    let t = Instant::now();
    if args.iter().any(|a| a == "--link") {
        idx.link_pending();
    }
    let link_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let q = idx.get(item).map_err(|e| e.to_string())?.vector.to_vec();
    let hits = idx.search(&q, k, None).map_err(|e| e.to_string())?;
    let search_ms = t.elapsed().as_secs_f64() * 1e3;
    let after = twindex::timing::rss_now();
    Ok(json!({
        "index": dir.display().to_string(),
        "items": idx.len(),
        "open_ms": open_ms,
        "logged_adds_unlinked_at_open": unlinked,
        "link_ms": link_ms,
        "search_ms": search_ms,
        "neighbours": hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        "rss_mb": {"start": mb(before.total), "opened": mb(opened.total), "after_search": mb(after.total)},
        "anon_mb": {"start": mb(before.anon), "opened": mb(opened.anon), "after_search": mb(after.anon)},
    }))
}

fn concurrent(args: &[String]) -> Result<serde_json::Value, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = PathBuf::from(arg(args, "--index").ok_or("--index DIR is required")?);
    let num = |name: &str, default: usize| -> Result<usize, String> {
        arg(args, name).map_or(Ok(default), |s| {
            s.parse().map_err(|e| format!("{name}: {e}"))
        })
    };
    let (n_adds, readers, k, n_warmup) = (
        num("--adds", 10_000)?,
        num("--readers", 2)?,
        num("--k", 10)?,
        num("--warmup", 2_000)?,
    );
    let t0 = Instant::now();
    let opts = OpenOptions {
        writable: true,
        ..OpenOptions::default()
    };
    let s = Searcher::open(&dir, &opts).map_err(|e| e.to_string())?;
    s.load_graph().map_err(|e| e.to_string())?;
    let open_s = t0.elapsed().as_secs_f64();
    let (items_before, dim) = (s.len(), s.dim());
    let done = AtomicBool::new(false);
    let sopts = SearchOptions {
        k,
        ..SearchOptions::default()
    };
    // Seeded by the index's size, so that a second run on the same index adds new vectors
    // (the same ones again would tie with their twins as own nearest neighbours).
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ items_before as u64);
    let adds: Vec<Vec<f32>> = (0..n_adds).map(|_| unit(&mut rng, dim)).collect();
    eprintln!(
        "opened {} items in {open_s:.1} s; {n_adds} adds, {readers} readers",
        items_before
    );
    // Warm-up: the first searches after opening are slow on a virtual machine whose host
    // has let the graph's pages go cold (tens of ms each); they are timed apart.
    let warm_ms: Vec<f64> = (0..n_warmup)
        .map(|_| {
            let q = unit(&mut rng, dim);
            let t = Instant::now();
            s.search_vector(&q, &sopts).expect("search");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let (add_ms, query_ms, ids) = std::thread::scope(|sc| {
        let workers: Vec<_> = (0..readers)
            .map(|r| {
                let (s, done, sopts) = (&s, &done, &sopts);
                sc.spawn(move || {
                    let mut rng = ChaCha8Rng::seed_from_u64(SEED + 1 + r as u64);
                    let mut ms = Vec::new();
                    while !done.load(Ordering::Acquire) {
                        let q = unit(&mut rng, dim);
                        let t = Instant::now();
                        let a = s.search_vector(&q, sopts).expect("search");
                        let at = t.duration_since(t0).as_secs_f64();
                        ms.push((t.elapsed().as_secs_f64() * 1e3, at));
                        assert_eq!(a.results.len(), k);
                    }
                    ms
                })
            })
            .collect();
        let mut ms = Vec::with_capacity(n_adds);
        let mut ids = Vec::with_capacity(n_adds);
        for (i, v) in adds.iter().enumerate() {
            let item = Item {
                label: String::new(),
                source: format!("concurrent-add{i}"),
                payload: None,
            };
            let t = Instant::now();
            let id = s.add_vectors(v, vec![item]).expect("add");
            ms.push((
                t.elapsed().as_secs_f64() * 1e3,
                t.duration_since(t0).as_secs_f64(),
            ));
            ids.push(id[0]);
        }
        done.store(true, Ordering::Release);
        let q: Vec<(f64, f64)> = workers
            .into_iter()
            .flat_map(|w| w.join().expect("reader"))
            .collect();
        (ms, q, ids)
    });
    let found = ids
        .iter()
        .zip(&adds)
        .filter(|(&id, v)| {
            s.search_vector(
                v,
                &SearchOptions {
                    k: 1,
                    ..SearchOptions::default()
                },
            )
            .is_ok_and(|a| a.results.first().is_some_and(|h| h.id == id))
        })
        .count();
    let n_queries = query_ms.len();
    Ok(json!({
        "what": "one-item durable adds (fsync'd) on one thread while reader threads search (k 10), one process",
        "index": dir.display().to_string(),
        "items_before": items_before,
        "items_after": s.len(),
        "open_and_load_seconds": open_s,
        "readers": readers,
        "add": summary(add_ms.iter().map(|m| m.0).collect()),
        "query": summary(query_ms.iter().map(|m| m.0).collect()),
        "warmup_searches": n_warmup,
        "warmup_first_ms": warm_ms.iter().take(5).collect::<Vec<_>>(),
        "warmup": (n_warmup > 0).then(|| summary(warm_ms)),
        "slowest_adds": slowest(&add_ms),
        "slowest_queries": slowest(&query_ms),
        "queries": n_queries,
        "added_found_as_own_nearest": found,
        "log_size": s.index().map(|i| i.log_size()).map_err(|e| e.to_string())?,
    }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("query") => query(&args),
        Some("adds") => adds(&args),
        Some("open") => open(&args),
        Some("concurrent") => concurrent(&args),
        _ => Err(
            "usage: engine_bench query --index DIR --queries FILE | adds --dir DIR | \
                  open --index DIR | concurrent --index DIR"
                .into(),
        ),
    };
    match res {
        Ok(j) => {
            println!("{}", serde_json::to_string_pretty(&j).expect("json"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("engine_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
